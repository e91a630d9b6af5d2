"""The batch entry point of serving's first step: raw request elements -> encoder tensors.

``Preprocessor.preprocess_batch`` validates every sample cheaply first (sizes, headers,
UTF-8, limits, at least one modality), so a bad sample fails the batch before any decoding
work, with an InvalidInput naming the sample. It then emits every tensor of
``spec.PREPROCESS``'s outputs for every sample, with placeholders where a modality is absent
and the PRESENT mask saying which rows are real.

``Preprocessor.preprocess_requests`` does the same for several client requests at once (a
server batch): each request gets its own tensors or its own refusal, while the VAD, the costly
part, runs the clips of all of them together.

Absent means None or empty bytes, for all three modalities: an empty text (b"") is absent,
not an empty sentence. A text that is present but cleans to nothing (b"  ") stays present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmtriton import spec
from mmtriton.preprocess.audio import (
    VoiceActivityTrimmer,
    features_batch,
    open_audio,
    read_audio,
    resample,
)
from mmtriton.preprocess.errors import InvalidInput
from mmtriton.preprocess.image import image_to_gray, normalize_digit, open_image, to_pixels
from mmtriton.preprocess.text import TextTokenizer, decode_text

Element = bytes | bytearray | memoryview | None

# What preprocess_batch returns: the outputs of spec.PREPROCESS that depend on the samples
# (the Triton model adds PIPELINE_START itself).
BATCH_OUTPUTS: tuple[spec.TensorSpec, ...] = (
    spec.IMAGE_PIXELS,
    spec.TEXT_INPUT_IDS,
    spec.TEXT_ATTENTION_MASK,
    spec.AUDIO_MEL,
    spec.PRESENT,
)


def element_bytes(modality: str, value: Any) -> bytes | None:
    """One request element as bytes, or None when absent (None or empty).

    Triton hands BYTES elements over as bytes (or 0-d arrays of them); text may come as str.
    Anything else is the caller's malformed tensor, refused naming the input.
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InvalidInput(
            modality,
            "bad_tensor",
            f"{spec.RAW_INPUTS[modality].name} must be BYTES, got {type(value).__name__}",
        )
    return value or None


def _column(values: Sequence[Any] | None, n: int, modality: str) -> list[bytes | None]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"{modality}: {len(values)} elements for a batch of {n}")
    return [element_bytes(modality, v) for v in values]


Columns = tuple[Sequence[Element] | None, Sequence[Element | str] | None, Sequence[Element] | None]
Outcome = dict[str, np.ndarray] | Exception | None  # None only while being filled in


@dataclass
class _Decoded:
    """One request after validation and decoding, before its clips' features."""

    present: np.ndarray
    pixels: np.ndarray
    texts: list[str]
    audio_rows: list[int]  # the samples that carry audio, in order
    clips: list[np.ndarray]  # their 16 kHz samples


def _close(handles: list[Any]) -> None:
    for handle in handles:
        if handle is not None:
            handle.close()


class Preprocessor:
    """Owns the tokenizer and the VAD trimmer (created once) and preprocesses batches."""

    def __init__(
        self,
        tokenizer_path: str | Path | None = None,
        vad_model: str | Path | bytes | None = None,
        *,
        trim_silence: bool = True,
    ):
        self.tokenizer = TextTokenizer(tokenizer_path)
        self.trimmer = VoiceActivityTrimmer(vad_model) if trim_silence else None
        self.text_tokens = self.tokenizer.max_tokens

    def preprocess_batch(
        self,
        images: Sequence[Element] | None,
        texts: Sequence[Element | str] | None,
        audios: Sequence[Element] | None,
    ) -> dict[str, np.ndarray]:
        """N raw samples -> {spec name: array} for each tensor of ``BATCH_OUTPUTS``.

        Each column is a list of N elements (or None when the input was not sent at all).
        Raises InvalidInput (with ``index`` set) for the first bad sample found.
        """
        decoded = self._decode(images, texts, audios)
        return self._finish(decoded, self._features(decoded.clips))

    def preprocess_requests(self, requests: Sequence[Columns]) -> list[Outcome]:
        """``preprocess_batch`` of each request, with the VAD's model calls shared by all.

        ``requests`` are (images, texts, audios) column triples, one per client request. Each
        result is exactly what ``preprocess_batch`` returns for that request alone, or the
        exception it raises (InvalidInput for a bad sample, with its index in that request):
        a bad request fails alone. Silero runs one call per window position for every clip
        of every request, so a server batch of single-clip requests costs what one batch of
        clips costs (about half of running them one at a time).
        """
        results: list[Outcome] = []
        decoded: list[_Decoded] = []
        for columns in requests:
            try:
                decoded.append(self._decode(*columns))
                results.append(None)
            except Exception as exc:  # the request's own failure, returned in its place
                results.append(exc)
        clips = [clip for d in decoded for clip in d.clips]
        features = iter(self._features(clips))
        ok = iter(decoded)
        for k, result in enumerate(results):
            if result is None:
                d = next(ok)
                results[k] = self._finish(d, [next(features) for _ in d.clips])
        return results

    def _features(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        return features_batch(clips, self.trimmer) if clips else []

    def _decode(
        self,
        images: Sequence[Element] | None,
        texts: Sequence[Element | str] | None,
        audios: Sequence[Element] | None,
    ) -> _Decoded:
        """Validate and decode every sample (in order: the first bad one is the one named);
        the audio stops at 16 kHz samples, which the caller turns into features."""
        n = max((len(c) for c in (images, texts, audios) if c is not None), default=0)
        image_col = _column(images, n, "image")
        text_col = _column(texts, n, "text")
        audio_col = _column(audios, n, "audio")

        present = np.zeros((n, len(spec.MODALITIES)), dtype=spec.PRESENT.numpy_dtype)
        columns = {"image": image_col, "text": text_col, "audio": audio_col}
        for m, modality in enumerate(spec.MODALITIES):
            present[:, m] = [value is not None for value in columns[modality]]

        image_handles: list[Any] = [None] * n
        audio_handles: list[Any] = [None] * n
        decoded_texts: list[str] = [""] * n
        try:
            # Pass 1, cheap: presence, sizes, headers, UTF-8, limits.
            for i in range(n):
                try:
                    if not present[i].any():
                        raise InvalidInput(
                            "request", "no_input", "no image, text or audio given (all empty)"
                        )
                    if image_col[i] is not None:
                        image_handles[i] = open_image(image_col[i])
                    if text_col[i] is not None:
                        decoded_texts[i] = decode_text(text_col[i])
                    if audio_col[i] is not None:
                        audio_handles[i] = open_audio(audio_col[i])
                except InvalidInput as exc:
                    raise exc.at(i) from None

            # Pass 2: decode (decoding is where a sample can still be refused).
            size = spec.IMAGE_SIZE
            pixels = np.zeros((n, 3, size, size), dtype=spec.IMAGE_PIXELS.numpy_dtype)
            audio_rows: list[int] = []
            clips: list[np.ndarray] = []
            for i in range(n):
                try:
                    if image_handles[i] is not None:
                        handle, image_handles[i] = image_handles[i], None
                        pixels[i] = to_pixels(normalize_digit(image_to_gray(handle)))
                    if audio_handles[i] is not None:
                        handle, audio_handles[i] = audio_handles[i], None
                        samples, rate = read_audio(handle)
                        audio_rows.append(i)
                        clips.append(resample(samples, rate))
                except InvalidInput as exc:
                    raise exc.at(i) from None
        finally:
            _close(image_handles)
            _close(audio_handles)
        return _Decoded(present, pixels, decoded_texts, audio_rows, clips)

    def _finish(self, decoded: _Decoded, features: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The output tensors of a decoded request, given the features of its clips."""
        n = decoded.present.shape[0]
        mel = np.zeros((n, *spec.AUDIO_MEL.dims), dtype=spec.AUDIO_MEL.numpy_dtype)
        if features:
            mel[decoded.audio_rows] = np.stack(features)
        # Absent texts get the tokenisation of "" ([CLS] [SEP]): a well-formed sequence that
        # keeps mean pooling finite; PRESENT tells fusion to ignore it.
        input_ids, attention_mask = self.tokenizer.encode(decoded.texts)
        return {
            spec.IMAGE_PIXELS.name: decoded.pixels,
            spec.TEXT_INPUT_IDS.name: input_ids.astype(spec.TEXT_INPUT_IDS.numpy_dtype),
            spec.TEXT_ATTENTION_MASK.name: attention_mask.astype(
                spec.TEXT_ATTENTION_MASK.numpy_dtype
            ),
            spec.AUDIO_MEL.name: mel,
            spec.PRESENT.name: decoded.present,
        }
