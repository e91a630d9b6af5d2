"""Loading what the build produced: splits, the trained audio encoder, the feature extractor.

Shared by the build steps, the export (parity) and the GPU check, so they load the same way.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch

from .artifacts import BuildPaths
from .config import BuildConfig


def load_splits(paths: BuildPaths) -> dict:
    """{split name: [Sample, ...]} as the data step wrote them."""
    with paths.splits.open("rb") as f:
        return pickle.load(f)


def load_audio_encoder(paths: BuildPaths):
    """The trained audio encoder, in eval mode."""
    from .encoders import AudioEncoder

    encoder = AudioEncoder()
    encoder.load_state_dict(torch.load(paths.audio_encoder, weights_only=True))
    return encoder.eval()


def load_encoders(config: BuildConfig, paths: BuildPaths) -> dict:
    """All three encoders: the pretrained ones from the config and the trained audio CNN."""
    from .encoders import load_pretrained_encoders

    encoders = load_pretrained_encoders(config.encoders)
    encoders["audio"] = load_audio_encoder(paths)
    return encoders


def make_extractor(paths: BuildPaths, encoders: dict):
    """A FeatureExtractor over the built data, with the serving preprocessing state."""
    from mmtriton.preprocess.audio import VoiceActivityTrimmer
    from mmtriton.preprocess.text import TextTokenizer

    from .features import FeatureExtractor

    return FeatureExtractor(
        encoders["image"],
        encoders["text"],
        encoders["audio"],
        mnist=np.load(paths.images),
        tokenizer=TextTokenizer(),
        trimmer=VoiceActivityTrimmer(),
    )
