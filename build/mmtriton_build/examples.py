"""Test-set samples as the raw bytes a client sends (PNG, UTF-8 text, WAV).

Used by the integration tests and the harnesses, and written out by `mmtriton export` as the
web page's example gallery: plain PNG/WAV files and a JSON index (the page reads no pickles
and imports no build code).
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


def pick_gallery(examples: list[Example], n: int) -> list[Example]:
    """Up to `n` examples with all three modalities, one per label first, then filled up: the
    page shows the first k of them, so any k up to the label count has distinct labels."""
    complete = [e for e in examples if e.image and e.text and e.audio]
    chosen, labels = [], set()
    for e in complete:
        if e.label not in labels:
            chosen.append(e)
            labels.add(e.label)
    taken = {e.index for e in chosen}
    chosen += [e for e in complete if e.index not in taken]
    return chosen[:n]


def write_gallery(root: Path, dest: Path, n: int = 16) -> int:
    """Write the gallery (files and index) for the test split of the build at `root`.

    Returns how many examples were written.
    """
    import json

    from mmtriton.paths import GALLERY_INDEX

    chosen = pick_gallery(load_examples(root, max(64, 8 * n)), n)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in chosen:
        stem = f"example-{e.index}-digit-{e.label}"
        (dest / f"{stem}.png").write_bytes(e.image)
        (dest / f"{stem}.wav").write_bytes(e.audio)
        rows.append(
            {"label": e.label, "text": e.text, "image": f"{stem}.png", "audio": f"{stem}.wav"}
        )
    (dest / GALLERY_INDEX).write_text(json.dumps({"examples": rows}, indent=2) + "\n")
    return len(rows)
