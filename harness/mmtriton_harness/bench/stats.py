"""Pure helpers: percentiles, latency summaries and deltas of Triton's statistics API."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Per-request phases Triton's statistics API reports for each model (cumulative ns).
PHASES: tuple[str, ...] = ("queue", "compute_input", "compute_infer", "compute_output")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean in milliseconds (zeros when nothing completed)."""
    if not latencies_s:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    ms = [1000 * x for x in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
    }


def _int(value) -> int:
    # MessageToJson writes 64-bit integers as strings and leaves zero-valued fields out.
    return int(value or 0)


def parse_statistics(stats: dict) -> dict[str, dict]:
    """`get_inference_statistics(as_json=True)` -> {model: flat cumulative counters}."""
    out: dict[str, dict] = {}
    for model in stats.get("model_stats", []):
        inference = model.get("inference_stats", {})
        entry = {
            "inference_count": _int(model.get("inference_count")),
            "execution_count": _int(model.get("execution_count")),
            "success_count": _int(inference.get("success", {}).get("count")),
            "fail_count": _int(inference.get("fail", {}).get("count")),
        }
        for phase in PHASES:
            entry[f"{phase}_count"] = _int(inference.get(phase, {}).get("count"))
            entry[f"{phase}_ns"] = _int(inference.get(phase, {}).get("ns"))
        entry["batches"] = {
            _int(b.get("batch_size")): _int(b.get("compute_infer", {}).get("count"))
            for b in model.get("batch_stats", [])
        }
        out[model["name"]] = entry
    return out


def stats_delta(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per model, what happened between two `parse_statistics` snapshots.

    For each phase: the mean milliseconds a request spent in it; plus requests (successes and
    failures), successes, executions and the mean batch size (inferences per execution).
    Models without new requests are left out.
    """
    out: dict[str, dict] = {}
    for name, a in after.items():
        b = before.get(name, {})

        def d(key: str, a=a, b=b) -> int:
            return a.get(key, 0) - b.get(key, 0)

        requests = d("success_count") + d("fail_count")
        if requests <= 0:
            continue
        executions = d("execution_count")
        entry = {
            "requests": requests,
            "successes": d("success_count"),
            "executions": executions,
            "avg_batch": round(d("inference_count") / executions, 2) if executions else 0.0,
        }
        for phase in PHASES:
            count = d(f"{phase}_count")
            entry[f"{phase}_ms"] = round(d(f"{phase}_ns") / count / 1e6, 3) if count else 0.0
        out[name] = entry
    return out
