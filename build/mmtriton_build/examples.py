"""Test-set samples as the raw bytes a client sends (PNG, UTF-8 text, WAV).

Used by the integration tests, the benchmark and the web page's example gallery.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Example:
    """One test sample in wire form, with its true label."""

    label: str
    image: bytes | None
    text: str | None
    audio: bytes | None
    index: int


def encode_png(gray: np.ndarray) -> bytes:
    """A uint8 grayscale array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(gray, np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def load_examples(root: Path, n: int | None = None, split: str = "test") -> list[Example]:
    """The first n samples of a built split as raw bytes."""
    with (root / "data" / "splits.pkl").open("rb") as f:
        samples = pickle.load(f)[split]
    labels = (root / "model" / "labels.txt").read_text().split()
    images = np.load(root / "data" / "images.npy")
    out = []
    for i, s in enumerate(samples[:n] if n else samples):
        image = None
        if s.image_index is not None:
            image = encode_png(images[s.image_index])
        elif s.image_path is not None:
            image = Path(s.image_path).read_bytes()
        audio = Path(s.audio_path).read_bytes() if s.audio_path else None
        out.append(Example(labels[s.label], image, s.text or None, audio, i))
    return out
