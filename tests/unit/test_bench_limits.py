"""The true limit's arithmetic (harness/mmtriton_harness/bench/limits.py): limits from stage
costs, mix weighting, medians and spreads of paired repeats, the sizing rule."""

from __future__ import annotations

import pytest

from mmtriton import spec
from mmtriton_harness.bench import limits
from mmtriton_harness.bench.command import summarise
from mmtriton_harness.bench.stages import STAGES
from mmtriton_harness.bench.workload import MIX

# Round numbers, so each expected figure can be checked by hand.
STAGE_MS = {
    "preprocess.image": 1.0,
    "preprocess.text": 0.5,
    "preprocess.audio": 8.0,
    "encoder.image": 2.0,
    "encoder.text": 3.0,
    "encoder.audio": 0.5,
    "fusion": 1.0,
}


def test_the_stage_names_are_the_ones_stages_measures() -> None:
    every = {s for sub in spec.SUBSETS for s in limits.subset_stages(sub)}
    assert every == set(STAGES) == set(STAGE_MS)


def test_a_subset_needs_its_own_preprocessing_and_encoders_and_fusion_only() -> None:
    assert limits.subset_stages(("text",)) == ["preprocess.text", "encoder.text", "fusion"]
    assert limits.subset_stages(("audio", "image")) == [
        "preprocess.image", "preprocess.audio", "encoder.image", "encoder.audio", "fusion",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        limits.subset_stages(())
    with pytest.raises(ValueError):
        limits.subset_stages(("video",))


def test_limit_is_cores_over_the_sum_of_the_stage_costs() -> None:
    assert limits.cost_ms(STAGE_MS, ("text",)) == pytest.approx(4.5)
    assert limits.cost_ms(STAGE_MS, spec.MODALITIES) == pytest.approx(16.0)
    # 2 cores, 16 ms per request: 2 * 1000 / 16 = 125 requests per second.
    assert limits.subset_limit_rps(STAGE_MS, spec.MODALITIES, 2) == pytest.approx(125.0)
    assert limits.subset_limit_rps(STAGE_MS, ("text",), 1) == pytest.approx(1000 / 4.5)
    # Twice the cores, twice the limit; a costlier stage lowers only the subsets that need it.
    assert limits.subset_limit_rps(STAGE_MS, ("text",), 4) == pytest.approx(
        2 * limits.subset_limit_rps(STAGE_MS, ("text",), 2)
    )
    dearer = {**STAGE_MS, "encoder.audio": 10.0}
    assert limits.subset_limit_rps(dearer, ("text",), 2) == limits.subset_limit_rps(
        STAGE_MS, ("text",), 2
    )
    assert limits.subset_limit_rps(dearer, ("audio",), 2) < limits.subset_limit_rps(
        STAGE_MS, ("audio",), 2
    )
    with pytest.raises(ValueError):
        limits.limit_rps(0.0, 2)


def test_a_mix_costs_the_weighted_mean_so_its_limit_is_not_the_mean_of_the_limits() -> None:
    # 40 % all three (16 ms), 20 % text (4.5), 20 % image+text (7.5), 20 % audio (9.5).
    expected_ms = 0.4 * 16.0 + 0.2 * 4.5 + 0.2 * 7.5 + 0.2 * 9.5
    assert limits.mix_cost_ms(STAGE_MS, MIX) == pytest.approx(expected_ms)
    assert limits.mix_limit_rps(STAGE_MS, MIX, 2) == pytest.approx(2000 / expected_ms)
    mean_of_limits = sum(w * limits.subset_limit_rps(STAGE_MS, s, 2) for s, w in MIX.items())
    assert limits.mix_limit_rps(STAGE_MS, MIX, 2) < mean_of_limits
    # A one-subset mix is that subset.
    only = {("text",): 1.0}
    assert limits.mix_limit_rps(STAGE_MS, only, 2) == limits.subset_limit_rps(
        STAGE_MS, ("text",), 2
    )
    with pytest.raises(ValueError):
        limits.mix_cost_ms(STAGE_MS, {("text",): 0.5, ("audio",): 0.4})


def test_median_and_min_max_spread() -> None:
    m = limits.median_spread([0.9, 0.7, 0.8])
    assert (m["median"], m["min"], m["max"], m["n"], m["kind"]) == (0.8, 0.7, 0.9, 3, "min-max")
    assert limits.median_spread([1.0, 3.0])["median"] == 2.0
    with pytest.raises(ValueError):
        limits.median_spread([])


def test_ratios_pair_each_served_window_with_its_own_limit() -> None:
    # The machine slowed between rounds: the limit and the served rate fell together, so each
    # pair says 0.8; a mean of the limits would blur that.
    assert limits.paired_ratios([80.0, 40.0], [100.0, 50.0]) == [0.8, 0.8]
    with pytest.raises(ValueError):
        limits.paired_ratios([1.0], [1.0, 2.0])


def test_sizing_rule() -> None:
    assert limits.requests_per_core_second(20.0) == pytest.approx(50.0)
    # 500 req/s at 20 CPU ms each is 10 cores of work; kept 70 % busy, 14.3 cores.
    assert limits.cores_for(500, 20.0, utilisation=1.0) == pytest.approx(10.0)
    assert limits.cores_for(500, 20.0) == pytest.approx(10.0 / 0.7)
    with pytest.raises(ValueError):
        limits.cores_for(1, 1.0, utilisation=0.0)


def _round(scale: float, served_all: float, served_text: float) -> dict:
    served = {
        spec.subset_name(s): {
            "rps": served_all if len(s) == 3 else served_text, "cpu_ms_per_request": 20.0,
            "p50_ms": 10.0, "p99_ms": 30.0, "errors": 0,
        }
        for s in spec.SUBSETS
    }  # fmt: skip
    served["mixed"] = {**served["text"], "rps": 100.0}
    return {
        "stages": {k: v * scale for k, v in STAGE_MS.items()},
        "preprocess_cpu_ms": 5.0 * scale,
        "preprocess_cpu_ms_before": 10.0,
        "served": served,
    }


def test_summary_reports_the_median_of_paired_ratios_and_their_spread() -> None:
    # Limits (all three, 2 cores): 125, 62.5, 125 req/s; served 100, 60, 75: ratios 0.8, 0.96, 0.6.
    rounds = [_round(1.0, 100.0, 300.0), _round(2.0, 60.0, 150.0), _round(1.0, 75.0, 300.0)]
    out = summarise(rounds, 2, MIX)
    head = out["subsets"]["image+text+audio"]
    assert head["limit_rps"] == 125.0 and head["served_rps"] == 75.0
    assert out["served_over_limit"] == head["served_over_limit"] == pytest.approx(0.8)
    assert (out["spread"]["min"], out["spread"]["max"]) == (0.6, 0.96)
    assert out["limit_rps"] == 125.0
    assert out["subsets"]["text"]["cpu_ms_per_request"] == 20.0
    assert out["subsets"]["text"]["requests_per_core_s"] == 50.0
    assert out["subsets"]["text"]["limit_cpu_ms_per_request"] == pytest.approx(4.5)
    mix_limits = [limits.mix_limit_rps(r["stages"], MIX, 2) for r in rounds]
    assert out["mixed"]["limit_rps"] == pytest.approx(sorted(mix_limits)[1], abs=0.01)
    assert out["preprocess_cpu_ms"] == 5.0
    before = out["preprocess_before"]
    assert before["paired"] and before["preprocess_cpu_ms_before"] == 10.0
    assert before["over_before"] == 0.5 and before["over_before_spread"] == [0.5, 1.0]
