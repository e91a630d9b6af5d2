"""Offline training data: real MNIST images, synthetic spoken digits and typed phrases."""

from .dataset import (
    Sample,
    build_splits,
    degradation_rng,
    degrade_audio,
    degrade_image,
    make_degraded_test,
)
from .jsonl import DatasetError, load_jsonl, split_samples
from .mnist import load_mnist
from .speech import Clip, MissingToolError, Voice, list_voices, load_clips, synthesize
from .text import DIGIT_WORDS, make_phrase, make_uninformative_phrase

__all__ = [
    "DIGIT_WORDS",
    "Clip",
    "DatasetError",
    "MissingToolError",
    "Sample",
    "Voice",
    "build_splits",
    "degradation_rng",
    "degrade_audio",
    "degrade_image",
    "list_voices",
    "load_clips",
    "load_jsonl",
    "load_mnist",
    "make_degraded_test",
    "make_phrase",
    "make_uninformative_phrase",
    "split_samples",
    "synthesize",
]
