"""The placeholder rule of absent modalities (mmtriton.spec) and the CPU encoders' use of it:
ONNX Runtime runs only on real rows, and no real input is ever taken for a placeholder."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from mmtriton import layout, spec
from mmtriton.backend.onnx_encoder import encode_present_rows, trim_padding
from mmtriton.preprocess.pipeline import Preprocessor
from mmtriton_build.examples import encode_png

DTYPES = {t.name: t.numpy_dtype for m in spec.ENCODERS.values() for t in m.outputs}


def _wav(samples: np.ndarray, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    return Preprocessor()


def _fed(pre: Preprocessor, images, texts, audios) -> dict[str, np.ndarray]:
    tensors = pre.preprocess_batch(images, texts, audios)
    spec.fill_placeholders(tensors, tensors[spec.PRESENT.name])
    return tensors


def test_every_encoder_input_has_a_placeholder() -> None:
    names = {t.name for m in spec.ENCODERS.values() for t in m.inputs}
    assert names == set(spec.PLACEHOLDER_VALUES)


def test_absent_rows_become_placeholders_and_present_rows_stay_real(pre) -> None:
    tone = (8000 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 16_000)).astype(np.int16)
    gray = np.full((28, 28), 127, np.uint8)
    tensors = _fed(
        pre,
        [encode_png(gray), None, None],
        [None, "seven", "  "],  # "  " is present: it cleans to nothing but stays a text
        [None, None, _wav(tone)],
    )
    for modality, encoder in spec.ENCODERS.items():
        present = tensors[spec.PRESENT.name][:, spec.MODALITIES.index(modality)] > 0.5
        assert (spec.placeholder_rows(encoder, tensors) == ~present).all(), modality


@pytest.mark.parametrize("level", [0, 127, 255])
def test_uniform_images_are_never_placeholders(pre, level) -> None:
    tensors = _fed(pre, [encode_png(np.full((28, 28), level, np.uint8))], None, None)
    assert not spec.placeholder_rows(spec.IMAGE_ENCODER, tensors).any()


def test_silent_audio_is_never_a_placeholder(pre) -> None:
    # Silence standardises to an all-zero log-mel: a real row, unlike the placeholder.
    pre_untrimmed = Preprocessor(trim_silence=False)
    tensors = _fed(pre_untrimmed, None, None, [_wav(np.zeros(16_000))])
    assert tensors[spec.PRESENT.name][0, 2] == 1.0
    assert not spec.placeholder_rows(spec.AUDIO_ENCODER, tensors).any()


def test_encode_present_rows_runs_the_session_on_real_rows_only() -> None:
    feed = {spec.IMAGE_PIXELS.name: np.random.default_rng(0).random((4, 3, 2, 2), np.float32)}
    feed[spec.IMAGE_PIXELS.name][[1, 3]] = spec.PLACEHOLDER_VALUES[spec.IMAGE_PIXELS.name]
    seen = []

    def run(f):
        seen.append(len(f[spec.IMAGE_PIXELS.name]))
        return {spec.IMAGE_EMBEDDING.name: np.ones((len(f[spec.IMAGE_PIXELS.name]), 1280))}

    outputs, encoded = encode_present_rows(run, spec.IMAGE_ENCODER, feed, DTYPES)
    assert seen == [2] and encoded == 2
    emb = outputs[spec.IMAGE_EMBEDDING.name]
    assert emb.shape == (4, 1280) and emb.dtype == np.float32
    assert (emb[[0, 2]] == 1).all() and (emb[[1, 3]] == 0).all()


def test_an_all_placeholder_batch_never_calls_the_session() -> None:
    feed = {t.name: np.zeros((3, *t.fixed_dims), t.numpy_dtype) for t in spec.TEXT_ENCODER.inputs}

    def run(_feed):
        raise AssertionError("the session must not run on placeholders")

    outputs, encoded = encode_present_rows(run, spec.TEXT_ENCODER, feed, DTYPES)
    assert encoded == 0
    assert not outputs[spec.TEXT_EMBEDDING.name].any()


def test_text_runs_only_up_to_the_longest_real_text_with_the_same_embeddings(pre) -> None:
    """The real text encoder on real tokenisations: trimmed to the batch's longest text (with an
    absent row in the batch), the embeddings equal those of the fully padded run."""
    from mmtriton.backend.onnx_encoder import make_session
    from tests.conftest import require_repository

    session = make_session(str(layout.onnx_path(require_repository(), "text_encoder")), 1)
    texts = ["seven", "is it a one or a seven", "?", "the digit written here is 3", None]
    image = encode_png(np.full((28, 28), 255, np.uint8))
    tensors = _fed(pre, [None, None, None, None, image], texts, None)
    feed = {t.name: tensors[t.name] for t in spec.TEXT_ENCODER.inputs}
    lengths = feed[spec.TEXT_ATTENTION_MASK.name].sum(axis=1)
    assert lengths.max() < spec.TEXT_MAX_TOKENS and lengths[-1] == 0  # padded; last absent
    seen = []

    def run(f):
        seen.append(f[spec.TEXT_INPUT_IDS.name].shape)
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, f), strict=True))

    outputs, encoded = encode_present_rows(run, spec.TEXT_ENCODER, feed, DTYPES)
    assert encoded == 4 and seen == [(4, int(lengths.max()))]
    full = session.run(None, {k: v[:4] for k, v in feed.items()})[0]
    np.testing.assert_allclose(outputs[spec.TEXT_EMBEDDING.name][:4], full, atol=1e-6, rtol=0)
    assert not outputs[spec.TEXT_EMBEDDING.name][4].any()
    # Nothing to trim: a feed already at its real length comes back as it is.
    whole = {k: v[:, : int(lengths.max())] for k, v in feed.items()}
    assert trim_padding(spec.TEXT_ENCODER, whole) is whole
    assert trim_padding(spec.IMAGE_ENCODER, {"x": np.zeros(1)}) == {"x": np.zeros(1)}
