"""The arithmetic of the true limit, of mixes, of repeats and of sizing (pure functions).

A request of modality subset S needs, per sample: preprocessing of each modality in S, the
encoder of each modality in S, and fusion. With the CPU milliseconds of those stages measured
one thread at a time (stages.py), ``cores`` cores can at best answer

    limit_rps(S) = cores * 1000 / cost_ms(S),  cost_ms(S) = sum of the stages' CPU ms

requests per second, whatever the scheduling: the served pipeline (gRPC, the ensemble
scheduler, Python-backend IPC, the client on the same cores) can only approach it, and
served / limit is its efficiency. A mix of subsets costs the mix-weighted mean of their costs,
so its limit is cores over that mean (a harmonic mean of the subsets' limits, not their mean).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence

from mmtriton import spec


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def subset_stages(subset: Sequence[str]) -> list[str]:
    """The stages a request of `subset` needs (names as in stages.STAGES)."""
    unknown = set(subset) - set(spec.MODALITIES)
    if unknown or not subset:
        raise ValueError(f"a subset is a non-empty set of {spec.MODALITIES}, got {subset}")
    present = [m for m in spec.MODALITIES if m in subset]
    return [*(f"preprocess.{m}" for m in present), *(f"encoder.{m}" for m in present), "fusion"]


def cost_ms(stage_ms: Mapping[str, float], subset: Sequence[str]) -> float:
    """CPU ms one request of `subset` needs at least: the sum of its stages' CPU ms."""
    return sum(stage_ms[s] for s in subset_stages(subset))


def limit_rps(cost: float, cores: int) -> float:
    """Requests per second `cores` cores sustain when each request costs `cost` CPU ms."""
    if cost <= 0 or cores <= 0:
        raise ValueError(f"cost ({cost} ms) and cores ({cores}) must be positive")
    return cores * 1000.0 / cost


def subset_limit_rps(stage_ms: Mapping[str, float], subset: Sequence[str], cores: int) -> float:
    """The true limit of a workload of `subset` requests."""
    return limit_rps(cost_ms(stage_ms, subset), cores)


def mix_cost_ms(stage_ms: Mapping[str, float], mix: Mapping[tuple[str, ...], float]) -> float:
    """Mean CPU ms per request of a mix ({subset: share}, shares summing to 1)."""
    total = sum(mix.values())
    if not math.isclose(total, 1.0, abs_tol=1e-9) or any(w < 0 for w in mix.values()):
        raise ValueError(f"mix shares must be >= 0 and sum to 1, got {dict(mix)}")
    return sum(w * cost_ms(stage_ms, s) for s, w in mix.items())


def mix_limit_rps(
    stage_ms: Mapping[str, float], mix: Mapping[tuple[str, ...], float], cores: int
) -> float:
    """The true limit of a mixed workload: cores over its mean cost per request."""
    return limit_rps(mix_cost_ms(stage_ms, mix), cores)


def median_spread(values: Sequence[float]) -> dict[str, float | int | str]:
    """Median of repeated measurements with their spread as min-max (with 3-5 repeats an IQR
    would be the min-max anyway)."""
    if not values:
        raise ValueError("no values")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "kind": "min-max",
    }


def paired_ratios(served: Sequence[float], limits: Sequence[float]) -> list[float]:
    """served[i] / limits[i]: each served window against the limit measured just before it."""
    if len(served) != len(limits):
        raise ValueError(f"{len(served)} served windows for {len(limits)} limit windows")
    return [s / lim for s, lim in zip(served, limits, strict=True)]


def requests_per_core_second(cpu_ms_per_request: float) -> float:
    """What one core answers per second at this cost."""
    return 1000.0 / cpu_ms_per_request if cpu_ms_per_request > 0 else 0.0


def cores_for(target_rps: float, cpu_ms_per_request: float, utilisation: float = 0.7) -> float:
    """Cores to serve `target_rps` at `cpu_ms_per_request` (served, measured), keeping the
    cores `utilisation` busy at most (headroom for bursts and the tail latency)."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be within (0, 1], got {utilisation}")
    return target_rps * cpu_ms_per_request / 1000.0 / utilisation
