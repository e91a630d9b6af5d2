"""Preprocessing shared by training and serving: raw bytes in, encoder tensors out.

Serving (the first step of the Triton ensemble) calls ``Preprocessor.preprocess_batch``;
the build calls the same functions on its own data (``pixels_from_array`` for MNIST arrays,
``TextTokenizer.encode`` for phrases, ``features_from_samples`` for synthesised speech), so
training and serving see identical tensors. Tensor names, shapes and limits come from
``mmtriton.spec``. Runtime dependencies: numpy, Pillow, soundfile, scipy, onnxruntime,
tokenizers; never torch or transformers.

Bad client input raises ``InvalidInput`` (``modality``, ``reason`` from ``REASONS``, a message
naming the limit, ``index`` of the sample in a batch).
"""

from mmtriton.preprocess.audio import (
    VoiceActivityTrimmer,
    decode_audio,
    features_batch,
    features_from_samples,
    fix_length,
    log_mel,
    mel_filterbank,
    preprocess_audio,
    resample,
)
from mmtriton.preprocess.errors import REASONS, InvalidInput
from mmtriton.preprocess.image import (
    decode_image,
    normalize_digit,
    pixels_from_array,
    preprocess_image,
    to_pixels,
)
from mmtriton.preprocess.pipeline import Preprocessor
from mmtriton.preprocess.text import TextTokenizer, clean_text, decode_text

__all__ = [
    "REASONS",
    "InvalidInput",
    "Preprocessor",
    "TextTokenizer",
    "VoiceActivityTrimmer",
    "clean_text",
    "decode_audio",
    "decode_image",
    "decode_text",
    "features_batch",
    "features_from_samples",
    "fix_length",
    "log_mel",
    "mel_filterbank",
    "normalize_digit",
    "pixels_from_array",
    "preprocess_audio",
    "preprocess_image",
    "resample",
    "to_pixels",
]
