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


def _clip_mels(samples, trimmer, seed: int, split: str, noisy: bool):
    """Log-mels of each distinct clip in `samples` (optionally noise-augmented) and labels."""
    from ..features import audio_mel, sample_rng

    clips = {}
    for s in samples:
        if s.audio_path is not None:
            clips.setdefault(str(s.audio_path), s)
    mels, labels = [], []
    for i, s in enumerate(clips.values()):
        mels.append(audio_mel(s, trimmer, None))
        labels.append(s.label)
        if noisy:
            mels.append(audio_mel(s, trimmer, sample_rng(seed, f"{split}-aug", i)))
            labels.append(s.label)
    if not mels:
        return np.zeros((0, *spec.AUDIO_MEL.dims), np.float32), np.zeros(0, np.int64)
    return np.stack(mels).astype(np.float32), np.array(labels, np.int64)


def run(config: BuildConfig, paths: BuildPaths) -> None:
    """Train and save the audio encoder (an untrained one when the data has no audio)."""
    from mmtriton.preprocess.audio import VoiceActivityTrimmer

    from ..encoders import AudioEncoder
    from ..train import train_audio_encoder

    splits = load_splits(paths)
    paths.model.mkdir(parents=True, exist_ok=True)
    if not any(s.audio_path for s in splits["train"]):
        print("  no audio in the training data: the audio encoder stays untrained")
        torch.manual_seed(config.seed)
        torch.save(AudioEncoder().state_dict(), paths.audio_encoder)
        return
    trimmer = VoiceActivityTrimmer()
    start = time.perf_counter()
    mels, labels = _clip_mels(splits["train"], trimmer, config.seed, "train", noisy=True)
    val_mels, val_labels = _clip_mels(splits["val"], trimmer, config.seed, "val", noisy=False)
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
