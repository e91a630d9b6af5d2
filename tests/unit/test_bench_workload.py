"""The bench's workload: clips re-recorded at other rates, channels and lengths, and the
stated realistic mix of modality subsets (harness/mmtriton_harness/bench/workload.py)."""

from __future__ import annotations

import io
import itertools
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from mmtriton import spec
from mmtriton.preprocess.audio import decode_audio
from mmtriton_client.client import Sample
from mmtriton_harness.bench.workload import (
    AUDIO_VARIANTS,
    MIX,
    PREPROCESS_VARIANT,
    mix_sequence,
    realistic_mix,
    rerecord,
)


def _tone_wav(seconds: float = 0.6, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    sf.write(out, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return out.getvalue()


@pytest.mark.parametrize("variant", AUDIO_VARIANTS, ids=lambda v: v.name)
def test_rerecorded_clip_has_the_variants_rate_channels_and_length(variant) -> None:
    wav = rerecord(_tone_wav(0.6), variant)
    info = sf.info(io.BytesIO(wav))
    assert (info.samplerate, info.channels) == (variant.rate, variant.channels)
    expected_s = variant.seconds if variant.seconds is not None else 0.6
    assert info.duration == pytest.approx(expected_s, abs=2 / variant.rate)
    samples, rate = decode_audio(wav)  # what serving reads: still the same tone, louder than pad
    assert rate == variant.rate and np.abs(samples).max() > 0.3


def test_the_workload_is_not_only_16_khz_mono() -> None:
    kinds = {(v.rate, v.channels) for v in AUDIO_VARIANTS}
    assert (16_000, 1) in kinds and len(kinds) >= 4
    assert any(c > 1 for _r, c in kinds) and any(v.seconds for v in AUDIO_VARIANTS)
    assert (PREPROCESS_VARIANT.rate, PREPROCESS_VARIANT.channels) == (22_050, 2)
    assert PREPROCESS_VARIANT.seconds == 1.7


def test_padding_centres_the_clip() -> None:
    variant = PREPROCESS_VARIANT
    samples, rate = sf.read(io.BytesIO(rerecord(_tone_wav(0.5), variant)), always_2d=True)
    loud = np.flatnonzero(np.abs(samples[:, 0]) > 0.1)
    middle = (loud[0] + loud[-1]) / 2 / rate
    assert middle == pytest.approx(variant.seconds / 2, abs=0.01)


def test_mix_sequence_has_the_stated_shares_interleaved() -> None:
    order = mix_sequence(MIX, 20)
    counts = Counter(order)
    assert {s: counts[s] / 20 for s in counts} == MIX
    # Interleaved: no subset fills more than two requests in a row.
    assert max(len(list(g)) for _k, g in itertools.groupby(order)) <= 2
    with pytest.raises(ValueError):
        mix_sequence({("text",): 0.5}, 20)
    with pytest.raises(ValueError):
        mix_sequence({("text",): 0.33, ("audio",): 0.67}, 20)


def test_realistic_mix_covers_whole_rounds_of_the_mix() -> None:
    full = [Sample(image=b"i", text="t", audio=b"a")] * 64
    mixed = realistic_mix(full)
    assert len(mixed) % 20 == 0 and len(mixed) >= 64
    counts = Counter(tuple(s.modalities()) for s in mixed)
    assert {s: n / len(mixed) for s, n in counts.items()} == MIX
    assert set(counts) <= set(spec.SUBSETS)
