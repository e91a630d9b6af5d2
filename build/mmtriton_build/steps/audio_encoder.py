"""Step `audio_encoder`: train the log-mel CNN on the training clips (unseen voices validate)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mmtriton import spec

from ..artifacts import BuildPaths
from ..config import BuildConfig
from ..loaders import load_splits


def outputs(paths: BuildPaths) -> list[Path]:
    """What this step writes."""
    return [paths.audio_encoder]


def _clip_mels(samples, seed: int, split: str, copies: int):
    """Log-mels of each distinct clip in `samples` plus `copies` augmented versions of each
    (noise at any SNR, rooms, phone lines, codecs, levels, rates: features.augmented_audio)."""
    from ..features import preprocess_many, sample_rng

    clips = {}
    for s in samples:
        if s.audio_path is not None:
            clips.setdefault(str(s.audio_path), s)
    jobs, labels = [], []
    for i, s in enumerate(clips.values()):
        jobs.append((s, None, False))
        labels.append(s.label)
        for k in range(copies):
            rng = sample_rng(seed, f"{split}-aug{k}" if k else f"{split}-aug", i)
            jobs.append((s, rng, True))
            labels.append(s.label)
    if not jobs:
        return np.zeros((0, *spec.AUDIO_MEL.dims), np.float32), np.zeros(0, np.int64)
    mels = preprocess_many("audio", jobs, np.zeros((0, 28, 28), np.uint8), (), f"{split} clips")
    return np.stack(mels).astype(np.float32), np.array(labels, np.int64)


def run(config: BuildConfig, paths: BuildPaths) -> None:
    """Train and save the audio encoder (an untrained one when the data has no audio)."""
    from ..encoders import AudioEncoder
    from ..train import train_audio_encoder

    splits = load_splits(paths)
    paths.model.mkdir(parents=True, exist_ok=True)
    if not any(s.audio_path for s in splits["train"]):
        print("  no audio in the training data: the audio encoder stays untrained")
        torch.manual_seed(config.seed)
        torch.save(AudioEncoder().state_dict(), paths.audio_encoder)
        return
    start = time.perf_counter()
    copies = config.encoders.audio_noisy_copies
    mels, labels = _clip_mels(splits["train"], config.seed, "train", copies)
    # Validation: clean and once augmented, so the kept epoch is the one that generalises.
    val_mels, val_labels = _clip_mels(splits["val"], config.seed, "val", 1)
    if len(val_mels) == 0:  # tiny user datasets: validate on the training clips
        val_mels, val_labels = mels, labels
    print(f"  {len(mels)} training log-mels in {time.perf_counter() - start:.1f} s")
    encoder, acc = train_audio_encoder(
        mels,
        labels,
        val_mels,
        val_labels,
        epochs=config.encoders.audio_epochs,
        seed=config.seed,
        num_classes=len(paths.labels.read_text().split()),
    )
    print(f"  audio CNN: validation accuracy {acc:.3f} (unseen voices)")
    torch.save(encoder.state_dict(), paths.audio_encoder)
