"""Pair image, text and audio by label into train/val/test samples, and degrade them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .speech import SPLITS, Clip
from .text import make_phrase, make_uninformative_phrase

DEFAULT_SIZES: Mapping[str, int] = {"train": 7000, "val": 1000, "test": 2000}
_MODALITY_STREAM = {"image": 0, "text": 1, "audio": 2}


@dataclass(frozen=True)
class Sample:
    """One example; any modality may be absent (``None``).

    ``image_index`` is a row of the MNIST array; ``image_path`` a file (user datasets).
    ``degrade_seed`` set means: degrade image and audio with ``degradation_rng`` before use;
    ``severity`` (0..1) then sets how hard (``None``: the degraded test set's sigma 0.6, 0 dB).
    ``label`` -1 marks an input without a digit (its target is "not sure").
    """

    label: int
    image_index: int | None = None
    text: str | None = None
    audio_path: Path | None = None
    image_path: Path | None = None
    degrade_seed: int | None = None
    severity: float | None = None


def build_splits(
    images_labels: tuple[np.ndarray, np.ndarray],
    clips: Sequence[Clip],
    seed: int,
    *,
    text_informative_share: float = 0.7,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
) -> dict[str, list[Sample]]:
    """Build "train", "val" and "test" samples holding all three modalities.

    MNIST rows are shuffled with ``seed`` and cut into ``sizes``; each image gets a clip
    of the same label from the same split (so from that split's voices only; clips are
    reused evenly when there are fewer clips than images; ``None`` when a split has none)
    and a text that names the digit with probability ``text_informative_share``, else an
    uninformative phrase. Same inputs and seed, same samples.
    """
    _, labels = images_labels
    if sum(sizes.get(s, 0) for s in SPLITS) > len(labels):
        raise ValueError(f"sizes {dict(sizes)} exceed the {len(labels)} images available")
    order = np.random.default_rng([seed, 0]).permutation(len(labels))
    out: dict[str, list[Sample]] = {}
    start = 0
    for split_no, split in enumerate(SPLITS):
        rows = order[start : start + sizes.get(split, 0)]
        start += len(rows)
        rng = np.random.default_rng([seed, 1, split_no])
        audio = _assign_clips(labels[rows], [c for c in clips if c.split == split], rng)
        samples = []
        for row, clip in zip(rows, audio, strict=True):
            label = int(labels[row])
            informative = rng.random() < text_informative_share
            text = make_phrase(label, rng) if informative else make_uninformative_phrase(rng)
            samples.append(Sample(label=label, image_index=int(row), text=text, audio_path=clip))
        out[split] = samples
    return out


def _assign_clips(
    labels: np.ndarray, clips: Sequence[Clip], rng: np.random.Generator
) -> list[Path | None]:
    """One clip path per label; each label's clips are dealt in reshuffled rounds."""
    by_label: dict[int, list[Path]] = {}
    for c in sorted(clips, key=lambda c: str(c.path)):  # independent of the input order
        by_label.setdefault(c.label, []).append(c.path)
    dealt: dict[int, list[Path]] = {}
    out: list[Path | None] = []
    for label in labels.tolist():
        pool = by_label.get(label)
        if not pool:
            out.append(None)
            continue
        if not dealt.get(label):
            dealt[label] = [pool[i] for i in rng.permutation(len(pool))]
        out.append(dealt[label].pop())
    return out


def degradation_rng(sample: Sample, modality: str) -> np.random.Generator:
    """The random stream for degrading one modality of a degraded sample.

    One stream per modality, so degrading the image never shifts the audio noise.
    """
    if sample.degrade_seed is None:
        raise ValueError("sample has no degrade_seed; it is not from make_degraded_test")
    return np.random.default_rng([sample.degrade_seed, _MODALITY_STREAM[modality]])


def degrade_image(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float = 0.6, occlude: bool = True
) -> np.ndarray:
    """Occlude a chunk of the digit, then add Gaussian noise (``sigma`` on [0, 1] pixels).

    Takes and returns uint8 [28, 28] (white on black). The occluder is a black rectangle
    of 40-60 % of the digit's bounding box in each direction, placed inside that box.
    """
    x = image.astype(np.float32) / 255.0
    if occlude:
        ys, xs = np.nonzero(image > 64)
        if len(ys) == 0:  # blank image: occlude somewhere in the frame
            ys, xs = np.array([0, image.shape[0] - 1]), np.array([0, image.shape[1] - 1])
        top, left = int(ys.min()), int(xs.min())
        box_h, box_w = int(ys.max()) - top + 1, int(xs.max()) - left + 1
        h = max(1, round(box_h * rng.uniform(0.4, 0.6)))
        w = max(1, round(box_w * rng.uniform(0.4, 0.6)))
        y0 = top + int(rng.integers(0, box_h - h + 1))
        x0 = left + int(rng.integers(0, box_w - w + 1))
        x[y0 : y0 + h, x0 : x0 + w] = 0.0
    x = np.clip(x + rng.normal(0.0, sigma, size=x.shape), 0.0, 1.0)
    return np.rint(x * 255).astype(np.uint8)


def degrade_audio(
    samples: np.ndarray, rng: np.random.Generator, snr_db: float = 0.0, noise: str = "random"
) -> np.ndarray:
    """Mix white or pink noise into float32 audio at ``snr_db`` relative to its mean power.

    Signal power is the mean square over the whole clip. ``noise`` is "white", "pink" or
    "random" (either, 50/50). The result is not clipped: peak-normalise before writing PCM.
    """
    x = np.asarray(samples, dtype=np.float32)
    if noise == "random":
        noise = "pink" if rng.random() < 0.5 else "white"
    n = rng.standard_normal(x.shape[-1])
    if noise == "pink":
        # Shape white noise to a 1/f power spectrum (amplitude 1/sqrt(f)); drop DC.
        spectrum = np.fft.rfft(n)
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = np.inf
        n = np.fft.irfft(spectrum / np.sqrt(freqs), n=len(n))
    elif noise != "white":
        raise ValueError(f"noise must be 'white', 'pink' or 'random', not {noise!r}")
    signal_power = float(np.mean(x.astype(np.float64) ** 2))
    noise_power = float(np.mean(n**2))
    if signal_power == 0.0 or noise_power == 0.0:
        return x.copy()
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (x + scale * n).astype(np.float32)


def make_degraded_test(test_samples: Sequence[Sample], seed: int) -> list[Sample]:
    """The hard test set: every sample gets a ``degrade_seed`` and exactly half (rounded
    down) of those with text get an uninformative phrase instead.

    Image and audio are degraded later, by whoever decodes them, with
    ``degrade_image(img, degradation_rng(s, "image"))`` and
    ``degrade_audio(wav, degradation_rng(s, "audio"))``.
    """
    with_text = [i for i, s in enumerate(test_samples) if s.text is not None]
    rng = np.random.default_rng([seed, 2])
    blanked = set(rng.permutation(with_text)[: len(with_text) // 2].tolist())
    seeds = np.random.SeedSequence([seed, 3]).generate_state(len(test_samples), dtype=np.uint32)
    out = []
    for i, s in enumerate(test_samples):
        text = s.text
        if i in blanked:
            text = make_uninformative_phrase(np.random.default_rng([seed, 4, i]))
        out.append(replace(s, text=text, degrade_seed=int(seeds[i])))
    return out
