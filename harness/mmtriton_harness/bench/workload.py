"""The requests the benchmark sends: real test-set samples as a client would send them."""

from __future__ import annotations

from pathlib import Path

from mmtriton import spec
from mmtriton_build.examples import load_examples
from mmtriton_client.client import Sample

# Every non-empty subset of the modalities, for the mixed-traffic run.
SUBSETS = spec.SUBSETS


def full_samples(root: Path, n: int = 64) -> list[Sample]:
    """Test samples that carry all three modalities (PNG, text, WAV)."""
    samples = [
        Sample(image=e.image, text=e.text, audio=e.audio)
        for e in load_examples(root, 4 * n)
        if e.image and e.text and e.audio
    ][:n]
    if not samples:
        raise SystemExit(f"error: no test sample under {root} carries image, text and audio")
    return samples


def mixed_samples(samples: list[Sample]) -> list[Sample]:
    """The same samples, each restricted to one modality subset in turn (all seven subsets)."""
    out = []
    for i, s in enumerate(samples):
        subset = SUBSETS[i % len(SUBSETS)]
        out.append(
            Sample(
                image=s.image if "image" in subset else None,
                text=s.text if "text" in subset else None,
                audio=s.audio if "audio" in subset else None,
            )
        )
    return out


def columns(samples: list[Sample]) -> tuple[list, list, list]:
    """Per-modality columns for `Preprocessor.preprocess_batch` (None where absent)."""
    return (
        [s.image for s in samples],
        [s.text.encode() if s.text else None for s in samples],
        [s.audio for s in samples],
    )
