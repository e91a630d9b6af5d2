"""The requests the benchmark sends: real test-set samples as a client would send them.

The build's clips are all 16 kHz mono and short, which hides what audio really costs
(decoding, resampling, a longer VAD pass): the workload re-records them at other sample rates,
channel counts and lengths (``AUDIO_VARIANTS``), the way real clients send audio.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmtriton import spec
from mmtriton_build.examples import load_examples
from mmtriton_client.client import Sample

# Every non-empty subset of the modalities, for the mixed-traffic run.
SUBSETS = spec.SUBSETS

# The stated realistic mix (issue 16): share of requests per modality subset.
MIX: dict[tuple[str, ...], float] = {
    ("image", "text", "audio"): 0.4,
    ("text",): 0.2,
    ("image", "text"): 0.2,
    ("audio",): 0.2,
}


@dataclass(frozen=True)
class AudioVariant:
    """How a clip is re-recorded: sample rate, channels, length after padding (None: as is)."""

    name: str
    rate: int
    channels: int
    seconds: float | None = None


AUDIO_VARIANTS: tuple[AudioVariant, ...] = (
    AudioVariant("16 kHz mono (as built)", 16_000, 1),
    AudioVariant("8 kHz mono", 8_000, 1),
    AudioVariant("22.05 kHz stereo 1.7 s", 22_050, 2, 1.7),
    AudioVariant("44.1 kHz mono 1.2 s", 44_100, 1, 1.2),
    AudioVariant("48 kHz stereo 2.5 s", 48_000, 2, 2.5),
)
# The clip the preprocessing cost (`preprocess_cpu_ms`) is quoted for.
PREPROCESS_VARIANT = AUDIO_VARIANTS[2]


def rerecord(wav: bytes, variant: AudioVariant, seed: int = 0) -> bytes:
    """The clip resampled (scipy's polyphase filter), padded with faint noise on both sides to
    ``variant.seconds``, and written as 16-bit WAV with ``variant.channels`` channels (the
    second channel a little quieter and one sample late, as two microphones would hear it)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    samples, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != variant.rate:
        ratio = Fraction(variant.rate, rate)
        mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
    if variant.seconds is not None:
        total = max(round(variant.seconds * variant.rate), len(mono))
        rng = np.random.default_rng(seed)
        padded = (rng.standard_normal(total) * 1e-3).astype(np.float32)
        start = (total - len(mono)) // 2
        padded[start : start + len(mono)] += mono
        mono = padded
    channels = [mono]
    if variant.channels > 1:
        late = np.concatenate([[0.0], mono[:-1]]).astype(np.float32)
        channels += [0.8 * late] * (variant.channels - 1)
    data = np.clip(np.stack(channels, axis=1), -1.0, 1.0)
    out = io.BytesIO()
    sf.write(out, data, variant.rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def full_samples(root: Path, n: int = 64, varied_audio: bool = True) -> list[Sample]:
    """Test samples that carry all three modalities (PNG, text, WAV).

    With ``varied_audio`` sample i's clip is re-recorded as ``AUDIO_VARIANTS[i % 5]``.
    """
    samples = [
        Sample(image=e.image, text=e.text, audio=e.audio)
        for e in load_examples(root, 4 * n)
        if e.image and e.text and e.audio
    ][:n]
    if not samples:
        raise SystemExit(f"error: no test sample under {root} carries image, text and audio")
    if varied_audio:
        samples = [
            Sample(
                image=s.image,
                text=s.text,
                audio=rerecord(s.audio, AUDIO_VARIANTS[i % len(AUDIO_VARIANTS)], seed=i),
            )
            for i, s in enumerate(samples)
        ]
    return samples


def restrict(sample: Sample, subset: tuple[str, ...]) -> Sample:
    """The sample with only the modalities of `subset` kept."""
    return Sample(
        image=sample.image if "image" in subset else None,
        text=sample.text if "text" in subset else None,
        audio=sample.audio if "audio" in subset else None,
    )


def subset_samples(samples: list[Sample], subset: tuple[str, ...]) -> list[Sample]:
    """Every sample restricted to one modality subset."""
    return [restrict(s, subset) for s in samples]


def mixed_samples(samples: list[Sample]) -> list[Sample]:
    """The same samples, each restricted to one modality subset in turn (all seven subsets)."""
    return [restrict(s, SUBSETS[i % len(SUBSETS)]) for i, s in enumerate(samples)]


def mix_sequence(mix: dict[tuple[str, ...], float], length: int = 20) -> list[tuple[str, ...]]:
    """A repeating order of subsets whose shares are exactly `mix` over each `length`
    requests, interleaved (smooth weighted round robin) rather than in blocks."""
    if abs(sum(mix.values()) - 1.0) > 1e-9 or any(w < 0 for w in mix.values()):
        raise ValueError(f"mix shares must be >= 0 and sum to 1, got {mix}")
    counts = {s: round(w * length) for s, w in mix.items()}
    if any(abs(counts[s] - w * length) > 1e-6 for s, w in mix.items()):
        raise ValueError(f"mix {mix} cannot be written exactly in {length} requests")
    # Smooth weighted round robin: each step picks the subset furthest behind its share.
    credit = dict.fromkeys(counts, 0)
    out = []
    for _ in range(length):
        for s in counts:
            credit[s] += counts[s]
        pick = max(credit, key=lambda s: credit[s])
        credit[pick] -= length
        out.append(pick)
    return out


def realistic_mix(samples: list[Sample], mix: dict[tuple[str, ...], float] = MIX) -> list[Sample]:
    """The samples restricted to subsets in the proportions of `mix` (default: ``MIX``), as
    many whole rounds of the mix as cover every sample once (load cycles through the list)."""
    order = mix_sequence(mix)
    n = len(order) * -(-len(samples) // len(order))
    return [restrict(samples[i % len(samples)], order[i % len(order)]) for i in range(n)]


def columns(samples: list[Sample]) -> tuple[list, list, list]:
    """Per-modality columns for `Preprocessor.preprocess_batch` (None where absent)."""
    return (
        [s.image for s in samples],
        [s.text.encode() if s.text else None for s in samples],
        [s.audio for s in samples],
    )
