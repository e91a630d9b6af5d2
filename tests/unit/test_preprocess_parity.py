"""The faster preprocessing computes what the old one did: same tensors, same refusals.

``preprocess_reference`` is the implementation before the speed-ups, kept verbatim. Both run
on real inputs: the build's spoken digits re-recorded at 8 to 48 kHz, mono to 3 channels,
silent, noisy, 50 ms to 29 s long, in WAV / FLAC; MNIST digits and drawn photos as PNG / JPEG
/ WebP in grey, RGB, RGBA, palette and 16-bit, 28 px to 2,000 px; texts with unicode. Every
output tensor (PRESENT included) must match within 1e-5 and every bad input must be refused
with the same reason, sample index and message.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw
from scipy.signal import resample_poly

from mmtriton import spec
from mmtriton.preprocess import InvalidInput, Preprocessor
from mmtriton.preprocess import audio as new_audio
from mmtriton.preprocess import image as new_image
from tests.unit.preprocess_reference import audio as ref_audio
from tests.unit.preprocess_reference import image as ref_image
from tests.unit.preprocess_reference.pipeline import Preprocessor as ReferencePreprocessor

TOLERANCE = 1e-5  # the bound: max abs difference, every output tensor
# Speech probabilities are internal: the batched VAD graph (vad_graph.py) adds its GEMMs in
# another order than Silero's convolutions, and the LSTM carries the rounding along a clip
# (measured: at most 3.3e-5 over the 311,410 windows of all 5,960 build clips, clean and with
# noise added; the trimmed range was the same for every one). What they decide, the trimmed
# range, must be the same; the tensors then match within TOLERANCE.
PROBABILITY_TOLERANCE = 1e-4
SR = spec.AUDIO_SAMPLE_RATE
RATES = (8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 44_101)


# ----------------------------------------------------------------------------- inputs


def wav(samples: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def voices(built_artifacts: Path) -> list[np.ndarray]:
    """24 of the build's spoken test digits (16 kHz mono), different voices and digits."""
    files = sorted((built_artifacts / "data" / "speech" / "test").glob("*/*.wav"))
    if not files:
        pytest.fail(f"no speech clips under {built_artifacts}/data/speech/test; run the build")
    picked = files[:: max(1, len(files) // 24)][:24]
    return [sf.read(f, dtype="float32")[0] for f in picked]


def recorded(voice: np.ndarray, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """The 16 kHz clip placed at random in ``seconds`` of quiet room noise, at ``rate``."""
    n = max(voice.size, round(seconds * SR))
    out = rng.normal(0, 1e-3, n).astype(np.float32)
    at = int(rng.integers(0, n - voice.size + 1))
    out[at : at + voice.size] += voice
    if rate != SR:
        out = resample_poly(out, rate, SR).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def audio_corpus(voices) -> list[bytes]:
    """Encoded clips at every rate, channel count and length the issue names, and odd ones."""
    rng = np.random.default_rng(16)
    clips = []
    for k, voice in enumerate(voices):
        rate = RATES[k % len(RATES)]
        seconds = (0.6, 1.7, 2.5, 4.0)[k % 4]
        mono = recorded(voice, rate, seconds, rng)
        channels = k % 3 + 1  # mono, stereo (the right a quieter copy), three channels
        if channels > 1:
            gains = np.array([1.0, 0.8, 0.5][:channels], np.float32)
            mono = mono[:, None] * gains + rng.normal(0, 1e-3, (mono.size, channels))
        fmt, subtype = (("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None))[k // 3 % 3]
        clips.append(wav(np.asarray(mono, np.float32), rate, fmt, subtype))
    loud = voices[0] * np.float32(3.0)  # clipped when stored as PCM
    clips += [
        wav(np.zeros(SR, np.float32), SR),  # digital silence
        wav(np.zeros((22_050, 2), np.float32), 22_050),  # stereo silence
        wav(rng.normal(0, 0.3, 48_000 * 2).astype(np.float32), 48_000),  # noise, no speech
        wav(np.sin(2 * np.pi * 800 * np.arange(SR) / SR).astype(np.float32) * 0.5, SR),  # tone
        wav(voices[1][: SR // 20], SR),  # 50 ms
        wav(voices[2][:300], 8_000),  # shorter than one VAD window at 16 kHz
        wav(loud, SR, "WAV", "PCM_16"),
        wav(recorded(voices[3], 44_100, 29.0, rng), 44_100, "FLAC"),  # near the 30 s limit
        wav(recorded(voices[4], 4_000, 1.5, rng), 4_000),  # the lowest accepted rate
        wav(recorded(voices[5], 96_000, 1.0, rng), 96_000, "WAV", "PCM_24"),
    ]
    nan = np.stack([recorded(voices[6], 22_050, 1.2, rng)] * 2, axis=1)
    nan[::97, 0] = np.nan
    nan[5::89, 1] = np.inf
    clips.append(wav(nan, 22_050, "WAV", "FLOAT"))
    return clips


def drawn_digit(size: tuple[int, int], ink: int, paper: int, seed: int) -> Image.Image:
    """A "7" drawn somewhere on a ``size`` canvas (a photo or scan of a digit)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("L", size, paper)
    draw = ImageDraw.Draw(img)
    s = rng.uniform(0.3, 0.8) * min(w, h)
    x0, y0 = rng.uniform(0, w - 0.75 * s), rng.uniform(0, h - s)
    width = max(1, round(0.12 * s))
    draw.line([(x0, y0), (x0 + 0.75 * s, y0), (x0 + 0.25 * s, y0 + s)], fill=ink, width=width)
    return img


@pytest.fixture(scope="module")
def image_corpus(built_artifacts: Path) -> list[bytes]:
    """MNIST digits and drawn photos in the formats and modes clients send, many sizes."""
    mnist = np.load(built_artifacts / "data" / "mnist" / "mnist.npz")["images"]
    rng = np.random.default_rng(7)
    images = []
    for k in range(24):
        digit = Image.fromarray(mnist[k * 97])
        size = (28, 28, 56, 100, 300, 777)[k % 6]
        if size != 28:
            digit = digit.resize((size, size), Image.BILINEAR)
        fmt = ("PNG", "JPEG", "WEBP", "PNG")[k % 4]
        if k % 5 == 0:
            digit = Image.merge("RGB", (digit, digit, digit.point(lambda v: v // 2)))
        images.append(encode(digit, fmt))
    for k, size in enumerate(((320, 240), (640, 480), (1200, 900), (2000, 1500), (64, 200))):
        photo = np.asarray(drawn_digit(size, 30, 220, k), np.float32)
        photo += rng.normal(0, 8, photo.shape) + np.linspace(-15, 15, size[0])
        gray = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
        images.append(encode(gray, "JPEG", quality=70))
        images.append(encode(gray.convert("RGB"), "PNG"))
    ink = drawn_digit((160, 120), 255, 0, 9)
    rgba = Image.merge("RGBA", (*Image.new("RGB", ink.size, 0).split(), ink))
    light = drawn_digit((150, 150), 20, 235, 10)
    images += [
        encode(rgba, "PNG"),  # transparent drawing
        encode(rgba, "WEBP", lossless=True),
        encode(light.convert("P"), "GIF"),
        encode(light.convert("1"), "BMP"),
        encode(light, "TIFF"),
        encode(Image.fromarray(np.asarray(light, np.uint16) * 257), "PNG"),  # 16-bit
        encode(Image.new("L", (64, 64), 255), "PNG"),  # blank
        encode(Image.new("RGB", (5, 3), (0, 0, 0)), "PNG"),  # tiny and blank
    ]
    return images


TEXTS = [
    "seven",
    "The number SEVEN!",
    "  a\tb\nc  ",
    "Café déjà vu naïve",
    "一二三 四",
    "ＦＵＬＬ ７ ﬁve ①",
    "zero\x00\x07one\u200b",
    "emoji 😀 7",
    "this is a very long sentence that will certainly be truncated at sixteen tokens in all",
    " ",
    "x" * spec.LIMITS.max_text_chars,
]


@pytest.fixture(scope="module")
def new() -> Preprocessor:
    return Preprocessor()


@pytest.fixture(scope="module")
def reference() -> ReferencePreprocessor:
    return ReferencePreprocessor()


# ----------------------------------------------------------------------------- comparison


def assert_same_tensors(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype and have.shape == want.shape, name
        if want.size:
            diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
            assert diff <= TOLERANCE, (name, diff)


def outcome(run: Callable[[], object]) -> tuple[str, object]:
    """("ok", result) or ("refused", (modality, reason, index, message))."""
    try:
        return "ok", run()
    except InvalidInput as exc:  # libsndfile names the BytesIO object: its address varies
        message = re.sub(r" at 0x[0-9a-f]+", " at 0x?", str(exc))
        return "refused", (exc.modality, exc.reason, exc.index, message)
    except ValueError as exc:  # a malformed call (columns of different lengths)
        return "error", (type(exc).__name__, str(exc))


def assert_same_outcome(new, reference, *columns) -> None:
    got = outcome(lambda: new.preprocess_batch(*columns))
    expected = outcome(lambda: reference.preprocess_batch(*columns))
    assert got[0] == expected[0], (got, expected)
    if got[0] == "ok":
        assert_same_tensors(got[1], expected[1])
    else:
        assert got[1] == expected[1]


# ----------------------------------------------------------------------------- tests


def test_audio_batches_match_the_reference(new, reference, audio_corpus) -> None:
    """Clips of different lengths share the VAD's model calls; each row is still its own."""
    for start in range(0, len(audio_corpus), 16):
        batch = audio_corpus[start : start + 16]
        assert_same_outcome(new, reference, None, None, batch)
    # Longest-first reordering and rows finishing at different windows, in one batch.
    assert_same_outcome(new, reference, None, None, audio_corpus[::-1][:16])


def test_audio_functions_match_the_reference_one_clip_at_a_time(audio_corpus) -> None:
    trimmer_new, trimmer_ref = new_audio.VoiceActivityTrimmer(), ref_audio.VoiceActivityTrimmer()
    for data in audio_corpus:
        samples, rate = new_audio.decode_audio(data)
        ref_samples, ref_rate = ref_audio.decode_audio(data)
        assert rate == ref_rate and np.array_equal(samples, ref_samples)
        x = new_audio.resample(samples, rate)
        assert np.array_equal(x, ref_audio.resample(ref_samples, rate))
        probs = trimmer_new.speech_probabilities(x)
        ref_probs = trimmer_ref.speech_probabilities(x)
        assert probs.shape == ref_probs.shape
        assert float(np.abs(probs - ref_probs).max()) <= PROBABILITY_TOLERANCE
        assert trimmer_new.speech_bounds(x) == trimmer_ref.speech_bounds(x)
        kept = trimmer_new.trim(x)
        assert np.array_equal(kept, trimmer_ref.trim(x))
        mel = new_audio.log_mel(kept)
        assert float(np.abs(mel - ref_audio.log_mel(kept)).max()) <= TOLERANCE
        feats = new_audio.features_from_samples(samples, rate, trimmer_new)
        ref_feats = ref_audio.features_from_samples(ref_samples, rate, trimmer_ref)
        assert float(np.abs(feats - ref_feats).max()) <= TOLERANCE


def test_resampling_matches_the_reference_at_every_rate(voices) -> None:
    for rate in (*RATES, 4_000, 12_000, 32_000, 88_200, 96_000, 192_000, 384_000, 37_913):
        x = recorded(voices[0], 16_000, 0.7, np.random.default_rng(rate))
        at_rate = resample_poly(x, rate, SR).astype(np.float32) if rate != SR else x
        assert np.array_equal(new_audio.resample(at_rate, rate), ref_audio.resample(at_rate, rate))


def test_images_match_the_reference(new, reference, image_corpus) -> None:
    for start in range(0, len(image_corpus), 16):
        assert_same_outcome(new, reference, image_corpus[start : start + 16], None, None)
    for data in image_corpus:
        assert np.array_equal(new_image.decode_image(data), ref_image.decode_image(data))
        gray = ref_image.decode_image(data)
        assert np.array_equal(new_image.normalize_digit(gray), ref_image.normalize_digit(gray))


def test_texts_and_mixed_requests_match_the_reference(
    new, reference, audio_corpus, image_corpus
) -> None:
    texts = [t.encode() for t in TEXTS]
    assert_same_outcome(new, reference, None, texts, None)
    assert_same_outcome(new, reference, None, TEXTS, None)  # str elements, as Triton may give
    # Every modality subset in one batch, absent ones as None and as b"".
    n = 14
    images = [image_corpus[i] if i % 2 else (None if i % 4 else b"") for i in range(n)]
    txts = [texts[i % len(texts)] if i % 3 else None for i in range(n)]
    audios = [audio_corpus[i] if i % 4 < 2 else b"" for i in range(n)]
    images[0], txts[0], audios[0] = image_corpus[0], None, None  # keep every row non-empty
    for i in range(n):
        if images[i] in (None, b"") and txts[i] is None and audios[i] == b"":
            txts[i] = b"seven"
    assert_same_outcome(new, reference, images, txts, audios)
    assert_same_outcome(new, reference, [], [], [])


def test_refusals_match_the_reference(new, reference, audio_corpus, image_corpus) -> None:
    """The same bad inputs are refused with the same reason, sample and message."""
    good_audio, good_image = audio_corpus[0], image_corpus[0]
    jpeg = next(d for d in image_corpus if d[:2] == b"\xff\xd8")
    limit = spec.LIMITS
    bad_audio = [
        b"not audio at all",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        wav(np.zeros(0, np.float32), SR),
        wav(np.zeros(int((limit.max_audio_seconds + 1) * 8000), np.int16), 8000),
        wav(np.zeros(500, np.float32), 1000),
        b"RIFF" + b"\0" * limit.max_audio_bytes,
        good_audio[: len(good_audio) // 3],  # truncated: the header promises more
    ]
    bad_images = [
        b"not an image",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 10,
        jpeg[: len(jpeg) // 2],
        jpeg[:300],
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        b"\x89PNG" + b"\0" * limit.max_image_bytes,
    ]
    bad_texts = [b"seven \xff\xfe", b"\xc3", b"a" * (limit.max_text_chars + 1), b"a" * 10_000]
    for bad in bad_audio:
        assert_same_outcome(new, reference, None, None, [good_audio, bad, good_audio])
        assert_same_outcome(new, reference, [good_image, None], [b"x", None], [None, bad])
    for bad in bad_images:
        assert_same_outcome(new, reference, [good_image, bad], None, [good_audio, good_audio])
    for bad in bad_texts:
        assert_same_outcome(new, reference, None, [b"ok", b"ok", bad], None)
    # Where two samples are bad, the first one is named; decoding errors come sample by
    # sample (an image at 1 before an audio at 2, an audio at 0 before an image at 1).
    truncated_image, truncated_audio = jpeg[: len(jpeg) // 2], good_audio[: len(good_audio) // 3]
    assert_same_outcome(
        new, reference, [good_image, truncated_image, None], None, [None, None, truncated_audio]
    )
    assert_same_outcome(
        new, reference, [None, truncated_image], None, [truncated_audio, good_audio]
    )
    assert_same_outcome(new, reference, [good_image, b""], [None, b""], [None, None])  # no input
    assert_same_outcome(new, reference, [good_image], [b"a", b"b"], None)  # ragged columns
    assert_same_outcome(new, reference, [good_image, 3], None, None)  # not BYTES


def test_requests_batched_together_match_each_request_alone(
    new, reference, audio_corpus, image_corpus
) -> None:
    """A server batch of requests shares the VAD's calls; each request keeps its own result,
    and a bad request fails alone with the refusal it gets by itself."""
    truncated = audio_corpus[0][: len(audio_corpus[0]) // 3]
    requests = [
        (None, None, [audio_corpus[k]]) for k in range(0, len(audio_corpus), 3)
    ]  # single-clip requests, as clients send them
    requests[2] = (None, None, [b"not audio at all"])  # refused on its header
    requests[5] = ([image_corpus[1]], [b"seven"], [truncated])  # refused while decoding
    requests += [
        (image_corpus[:3], [b"a", b"b", b"c"], audio_corpus[4:7]),  # a batched request
        ([image_corpus[2]], [b"\xff"], [audio_corpus[8]]),  # bad text
        (None, [b"only text"], None),
        ([b""], [None], [b""]),  # no input at all
    ]
    results = new.preprocess_requests(requests)
    assert len(results) == len(requests)
    for columns, result in zip(requests, results, strict=True):
        expected = outcome(lambda columns=columns: reference.preprocess_batch(*columns))
        if isinstance(result, Exception):
            assert expected[0] == "refused", (result, expected)
            assert outcome(lambda result=result: _raise(result)) == expected
        else:
            assert expected[0] == "ok", expected
            assert_same_tensors(result, expected[1])
    assert new.preprocess_requests([]) == []


def _raise(exc: Exception) -> None:
    raise exc
