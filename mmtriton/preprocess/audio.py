"""Audio preprocessing: encoded bytes -> 16 kHz mono -> speech trimmed -> log-mel [1, M, F].

``decode_audio`` (soundfile: WAV, FLAC, OGG/Vorbis, ...; limits checked on the header before any
sample is read), ``resample`` (polyphase, to ``spec.AUDIO_SAMPLE_RATE``),
``VoiceActivityTrimmer`` (Silero VAD as one batched ONNX graph, ``vad_graph``; no torch) and
``log_mel`` (fixed ``spec.AUDIO_CLIP_SECONDS`` window, loudness-normalised). Training calls
``features_from_samples`` on the waveforms it synthesises; serving calls ``preprocess_audio``
on request bytes; both take the same path. Serving's batches go through ``features_batch``,
which runs the VAD of all clips in one call; every clip's result is bit for bit the one it
gets alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from mmtriton import spec
from mmtriton.preprocess.errors import InvalidInput
from mmtriton.preprocess.vad_graph import CONTEXT, SPAN, WINDOW, batched_vad_bytes

MIN_SAMPLE_RATE = 4_000  # below this there is no speech band left to hear a digit in
MAX_SAMPLE_RATE = 384_000
_MAX_RESAMPLE_FACTOR = 1_000  # up/down beyond this (odd rates) use a close rational ratio

N_FFT = 400  # 25 ms at 16 kHz
_LOG_FLOOR = 1e-6
_NORM_EPS = 1e-5
_RMS_FLOOR = 1e-6  # loudness normalisation does not amplify below this level


# --------------------------------------------------------------------------- decoding


def _audio_error(reason: str, detail: str) -> InvalidInput:
    return InvalidInput("audio", reason, detail)


def open_audio(data: bytes) -> sf.SoundFile:
    """Open ``data`` and check its header: size, sample rate, emptiness, duration.

    Cheap: reads no sample. Raises InvalidInput (audio_decode, audio_empty, audio_too_large,
    audio_too_long, audio_sample_rate). The caller closes the returned file.
    """
    size = len(data)
    if size == 0:
        raise _audio_error("audio_empty", "audio is empty (0 bytes)")
    if size > spec.LIMITS.max_audio_bytes:
        raise _audio_error(
            "audio_too_large",
            f"audio is {size} bytes; the limit is {spec.LIMITS.max_audio_bytes} bytes",
        )
    try:
        handle = sf.SoundFile(io.BytesIO(bytes(data)))
    except Exception as exc:  # libsndfile refuses: unknown format, corrupt header, ...
        raise _audio_error(
            "audio_decode",
            f"audio could not be read ({type(exc).__name__}: {exc}); "
            "accepted formats: WAV, FLAC, OGG/Vorbis (whatever libsndfile reads)",
        ) from None
    try:
        rate, frames, channels = handle.samplerate, handle.frames, handle.channels
        if channels < 1:
            raise _audio_error("audio_decode", f"audio has {channels} channels")
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise _audio_error(
                "audio_sample_rate",
                f"audio sample rate is {rate} Hz; "
                f"accepted rates are {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
            )
        if frames <= 0:
            raise _audio_error("audio_empty", "audio has no samples (0 frames)")
        seconds = frames / rate
        limit = spec.LIMITS.max_audio_seconds
        if seconds > limit:
            raise _audio_error(
                "audio_too_long", f"audio is {seconds:.2f} s long; the limit is {limit:g} s"
            )
    except BaseException:
        handle.close()
        raise
    return handle


def read_audio(handle: sf.SoundFile) -> tuple[np.ndarray, int]:
    """Read an opened file's samples: mono float32 (mean of the channels), its sample rate."""
    try:
        with handle:
            rate = handle.samplerate
            if handle.subtype == "PCM_16":
                # libsndfile's float read of 16-bit PCM is int / 32768, exact in float32; reading
                # the ints and scaling here gives the same floats at a third of the cost.
                ints = handle.read(dtype="int16", always_2d=True)
                samples = ints.astype(np.float32)
                samples *= np.float32(1.0 / 32768.0)
            else:
                samples = handle.read(dtype="float32", always_2d=True)
    except Exception as exc:
        raise _audio_error(
            "audio_decode", f"audio samples could not be decoded ({type(exc).__name__}: {exc})"
        ) from None
    if samples.shape[0] == 0:
        raise _audio_error("audio_empty", "audio has no samples (0 frames)")
    mono = _channel_mean(samples)
    if not np.isfinite(mono).all():  # the check is 10x cheaper than the copy nan_to_num makes
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def _channel_mean(samples: np.ndarray) -> np.ndarray:
    """``samples.mean(axis=1)``, bit for bit, without numpy's slow length-2 row reductions.

    Stereo is (left + right) / 2 in float32, which is exactly what numpy's reduction computes
    for two channels; other channel counts keep numpy's own (pairwise) order.
    """
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    if channels == 2:
        both = samples[:, 0] + samples[:, 1]
        both /= np.float32(2.0)
        return both
    return samples.mean(axis=1)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded audio bytes -> (mono float32 samples, sample rate). Limits enforced first."""
    return read_audio(open_audio(data))


def resample(samples: np.ndarray, sr: int) -> np.ndarray:
    """Resample to ``spec.AUDIO_SAMPLE_RATE`` with a polyphase filter (duration kept)."""
    x = np.asarray(samples, dtype=np.float32)
    target = spec.AUDIO_SAMPLE_RATE
    if sr == target:
        return x
    up, down = _resample_factors(int(sr))
    out = resample_poly(x, up, down, window=_resample_filter(up, down))
    return np.ascontiguousarray(out, dtype=np.float32)


@lru_cache(maxsize=32)
def _resample_factors(sr: int) -> tuple[int, int]:
    """(up, down) for ``sr`` -> AUDIO_SAMPLE_RATE, reduced by the gcd, capped for odd rates."""
    ratio = Fraction(spec.AUDIO_SAMPLE_RATE, sr)
    if max(ratio.numerator, ratio.denominator) > _MAX_RESAMPLE_FACTOR:
        ratio = ratio.limit_denominator(_MAX_RESAMPLE_FACTOR)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=32)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR that ``resample_poly(x, up, down)`` designs for float32 ``x`` by
    default (Kaiser window, beta 5, half-length 10 x max(up, down)), designed once per pair.

    Designing it costs more than filtering a short clip (8,821 taps for 22.05 kHz); passed as
    ``window`` it is used as is (resample_poly copies it before scaling), so the output is
    bit for bit the default's.
    """
    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps = taps.astype(np.float32)
    taps.flags.writeable = False
    return taps


# --------------------------------------------------------------------------- voice activity


class VoiceActivityTrimmer:
    """Trims leading and trailing non-speech with Silero VAD (one ONNX Runtime session, one
    thread, created once).

    Silero's windows: 512 samples at 16 kHz, each prefixed with the previous window's last 64
    samples (zeros for the first), the recurrent state carried across a clip's windows, the
    last window zero-padded. Speech is every window whose probability reaches ``threshold``;
    ``lead_pad_ms`` is kept before it (the model needs voicing to fire, so it is late on soft
    onsets such as the "s" of "seven") and ``pad_ms`` after. With no speech detected the clip
    is trimmed by energy instead (frames within ``energy_db`` of the loudest); a silent clip
    is returned whole.

    `model` is the batched graph of ``vad_graph`` (a file, such as the model repository's
    ``layout.VAD_FILE``, or its bytes); None builds it from the installed silero-vad package
    (the build's extras). Every window of every clip given together goes through one call;
    each clip starts from a fresh state, so results do not depend on the batch.
    """

    WINDOW = WINDOW
    CONTEXT = CONTEXT
    # One call's intermediate tensors take ~18.5 KB per window: 2,048 windows (65 s of audio)
    # keep a call near 40 MB; a Triton batch of 32 clips of 30 s would otherwise take 560 MB.
    MAX_WINDOWS_PER_CALL = 2048

    def __init__(
        self,
        model: str | Path | bytes | None = None,
        threshold: float = 0.5,
        pad_ms: float = 50.0,
        lead_pad_ms: float = 100.0,
        energy_db: float = 35.0,
    ):
        import onnxruntime as ort

        if spec.AUDIO_SAMPLE_RATE != 16_000:
            raise ValueError("the Silero VAD trimmer is written for 16 kHz windows")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if model is None:
            model = batched_vad_bytes()
        self._session = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.threshold = threshold
        self.pad = round(pad_ms * spec.AUDIO_SAMPLE_RATE / 1000)
        self.lead_pad = round(lead_pad_ms * spec.AUDIO_SAMPLE_RATE / 1000)
        self.energy_db = energy_db

    def speech_probabilities(self, samples_16k: np.ndarray) -> np.ndarray:
        """One speech probability per 512-sample window (the last one zero-padded)."""
        return self.speech_probabilities_batch([samples_16k])[0]

    def speech_probabilities_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``speech_probabilities`` of each clip: all their windows in one call, or in calls
        of at most ``MAX_WINDOWS_PER_CALL`` windows (whole clips each) for long batches."""
        xs = [np.asarray(c, dtype=np.float32).ravel() for c in clips]
        counts = [math.ceil(x.size / self.WINDOW) for x in xs]
        out: list[np.ndarray] = []
        start, windows = 0, 0
        for i, n in enumerate(counts):
            if i > start and windows + n > self.MAX_WINDOWS_PER_CALL:
                out += self._probabilities(xs[start:i], counts[start:i])
                start, windows = i, 0
            windows += n
        return out + self._probabilities(xs[start:], counts[start:])

    def _probabilities(self, xs: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
        """One call for `xs`. The windows go clip after clip into one [N, 576] array (each clip
        padded alone to whole windows, so a long clip beside short ones costs only its own
        length); ``slots`` maps window position t of clip b to its row (N, a zero row, past
        its end)."""
        longest = max(counts, default=0)
        if longest == 0:
            return [np.empty(0, dtype=np.float32) for _ in xs]
        windows = np.zeros((sum(counts), SPAN), dtype=np.float32)
        slots = np.full((longest, len(xs)), windows.shape[0], dtype=np.int64)
        row = 0
        for b, (x, n) in enumerate(zip(xs, counts, strict=True)):
            if n == 0:
                continue
            padded = np.zeros(self.CONTEXT + n * self.WINDOW, dtype=np.float32)
            padded[self.CONTEXT : self.CONTEXT + x.size] = x
            view = np.lib.stride_tricks.sliding_window_view(padded, SPAN)[:: self.WINDOW]
            windows[row : row + n] = view[:n]
            slots[:n, b] = np.arange(row, row + n)
            row += n
        feed = {
            "windows": windows,
            "slots": slots.ravel(),
            "lengths": np.asarray(counts, dtype=np.int32),
        }
        probs = self._session.run(None, feed)[0]  # [T, B]
        return [np.ascontiguousarray(probs[:n, b]) for b, n in enumerate(counts)]

    def speech_bounds(self, samples_16k: np.ndarray) -> tuple[int, int]:
        """[start, end) sample range to keep."""
        x = np.asarray(samples_16k, dtype=np.float32).ravel()
        return self._bounds(x, self.speech_probabilities(x))

    def _bounds(self, x: np.ndarray, probs: np.ndarray) -> tuple[int, int]:
        n = int(x.size)
        speech = np.flatnonzero(probs >= self.threshold)
        if speech.size:
            start, end = int(speech[0]) * self.WINDOW, (int(speech[-1]) + 1) * self.WINDOW
        else:
            start, end = self._energy_bounds(x)
        return max(0, start - self.lead_pad), min(n, end + self.pad)

    def _energy_bounds(self, samples_16k: np.ndarray) -> tuple[int, int]:
        x = np.asarray(samples_16k, dtype=np.float32).ravel()
        hop = spec.AUDIO_HOP
        n_frames = x.size // hop
        if n_frames == 0:
            return 0, x.size
        power = np.square(x[: n_frames * hop].reshape(n_frames, hop), dtype=np.float64).mean(1)
        peak = float(power.max())
        if peak <= _RMS_FLOOR**2:
            return 0, x.size
        loud = np.flatnonzero(power >= peak * 10.0 ** (-self.energy_db / 10.0))
        return int(loud[0]) * hop, (int(loud[-1]) + 1) * hop

    def trim(self, samples_16k: np.ndarray) -> np.ndarray:
        """The clip without its leading and trailing non-speech (plus padding)."""
        return self.trim_batch([samples_16k])[0]

    def trim_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``trim`` of each clip, with one model call per window position for all of them."""
        xs = [np.asarray(c, dtype=np.float32).ravel() for c in clips]
        probs = self.speech_probabilities_batch(xs)
        out = []
        for x, p in zip(xs, probs, strict=True):
            if x.size == 0:
                out.append(x)
                continue
            start, end = self._bounds(x, p)
            out.append(x[start:end])
        return out

    __call__ = trim


# --------------------------------------------------------------------------- features


@lru_cache(maxsize=4)
def mel_filterbank(
    n_mels: int = spec.AUDIO_N_MELS, n_fft: int = N_FFT, sr: int = spec.AUDIO_SAMPLE_RATE
) -> np.ndarray:
    """Slaney-style mel filterbank (librosa's default: slaney mel scale, area-normalised),
    0 Hz to Nyquist, float32 [n_mels, n_fft // 2 + 1]. Read-only, built once."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        return np.where(
            f >= min_log_hz,
            min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
            f / f_sp,
        )

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        return np.where(
            m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m
        )

    fft_freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic
    window.flags.writeable = False
    return window


def fix_length(samples_16k: np.ndarray) -> np.ndarray:
    """Crop or zero-pad to ``spec.AUDIO_CLIP_SECONDS``, centred on the clip's energy centroid.

    Centring on energy rather than on the clip's middle keeps the word at the same place when
    the trimmed clip's ends move by a VAD window or two (quiet tails carry little energy).
    A clip shorter than the window stays whole; a silent clip is centred geometrically.
    """
    x = np.asarray(samples_16k, dtype=np.float32).ravel()
    n = round(spec.AUDIO_CLIP_SECONDS * spec.AUDIO_SAMPLE_RATE)
    energy = np.square(x, dtype=np.float64)
    total = float(energy.sum())
    centroid = float(energy @ np.arange(x.size)) / total if total > 0.0 else (x.size - 1) / 2
    # x[start] goes to out[0]; start < 0 means leading zeros.
    start = math.floor(centroid - (n - 1) / 2 + 0.5)
    start = min(max(start, 0), x.size - n) if x.size >= n else min(max(start, x.size - n), 0)
    if x.size >= n:
        return x[start : start + n]
    out = np.zeros(n, dtype=np.float32)
    out[-start : -start + x.size] = x
    return out


def log_mel(samples_16k: np.ndarray) -> np.ndarray:
    """16 kHz samples -> float32 [1, AUDIO_N_MELS, AUDIO_FRAMES] normalised log-mel.

    The clip is fixed to AUDIO_CLIP_SECONDS (``fix_length``: crop / zero-pad around its energy
    centroid) and scaled to unit RMS (so the log floor sits at the same relative level whatever
    the recording gain); STFT with n_fft=400, hop AUDIO_HOP, periodic Hann window, centred
    frames (zero padding); power spectrum; slaney mel filterbank; log(mel + 1e-6); then per-clip
    mean/std normalisation.
    """
    x = fix_length(samples_16k)
    half = N_FFT // 2
    # The float64 copy is made inside its zero padding (no separate pad copy); the values and
    # every operation on them are the same as scaling a copy and padding it afterwards.
    padded = np.zeros(x.size + 2 * half, dtype=np.float64)
    body = padded[half:-half]
    body[:] = x
    rms = math.sqrt(float(np.mean(np.square(body))))
    if rms > _RMS_FLOOR:
        body /= rms
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[:: spec.AUDIO_HOP]
    frames = frames[: spec.AUDIO_FRAMES]
    spectrum = np.fft.rfft(frames * _hann(N_FFT), axis=1)
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    power = power.astype(np.float32)  # [F, n_fft/2 + 1]
    mel = mel_filterbank() @ power.T  # [M, F]
    logmel = np.log(mel + _LOG_FLOOR)
    logmel = (logmel - logmel.mean()) / (logmel.std() + _NORM_EPS)
    out = logmel.astype(np.float32)[None]
    if out.shape != spec.AUDIO_MEL.dims:
        raise AssertionError(f"log-mel shape {out.shape} != {spec.AUDIO_MEL.dims}")
    return out


def features_from_samples(
    samples: np.ndarray, sr: int, trimmer: VoiceActivityTrimmer | None
) -> np.ndarray:
    """Waveform at any rate -> AUDIO_MEL [1, M, F]: resample, trim (unless None), log-mel."""
    return features_batch([resample(samples, sr)], trimmer)[0]


def features_batch(
    clips_16k: Sequence[np.ndarray], trimmer: VoiceActivityTrimmer | None
) -> list[np.ndarray]:
    """16 kHz waveforms -> AUDIO_MEL [1, M, F] each: trimmed together (unless None), log-mel.

    Each result equals ``features_from_samples`` of that clip alone; the batch only shares
    the VAD's model calls.
    """
    clips = trimmer.trim_batch(clips_16k) if trimmer is not None else list(clips_16k)
    return [log_mel(x) for x in clips]


def preprocess_audio(data: bytes, trimmer: VoiceActivityTrimmer | None) -> np.ndarray:
    """Encoded audio bytes -> the AUDIO_MEL tensor of one sample [1, M, F]."""
    samples, sr = decode_audio(data)
    return features_from_samples(samples, sr, trimmer)
