"""The framework's floor: the served graph with steps that do nothing, and what it leaves.

The true limit (limits.py) counts only the stages' own CPU. Served requests also pay for
gRPC, the ensemble scheduler and five Python-stub hand-offs, and the load generator shares the
cores. The bench measures that part directly: the same repository (configs, batching,
instances, queue policies) with null_model.py as every step, served beside the real one in
every round. Then, per subset,

    ceiling_over_limit = limit_ms / (limit_ms + floor_ms + client_ms)

is the best served / limit any models could reach in this graph on these cores (stage costs as
measured, everything else as cheap as doing nothing, the cores 100 % busy), and
served_over_limit / ceiling_over_limit is how much of that the real pipeline reaches.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from mmtriton import layout

NULL_MODEL = Path(__file__).with_name("null_model.py")


def write_null_repository(source: Path, target: Path) -> Path:
    """`target`: `source`'s configs (and label files) linked, every Python step's model.py
    replaced by the null model, no weights."""
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        dest = target / model_dir.name
        dest.mkdir(parents=True)
        for f in model_dir.iterdir():
            if f.is_file():
                os.symlink(f.resolve(), dest / f.name)
        version = layout.version_dir(target, model_dir.name)
        version.mkdir()
        if (layout.version_dir(source, model_dir.name) / layout.PYTHON_MODEL_FILE).exists():
            (version / layout.PYTHON_MODEL_FILE).write_text(NULL_MODEL.read_text())
    return target


def ceiling_over_limit(limit_ms: float, floor_ms: float, client_ms: float) -> float:
    """The best served / limit reachable when each request also costs the null graph's server
    CPU (`floor_ms`) and the load generator's (`client_ms`)."""
    if limit_ms <= 0 or floor_ms < 0 or client_ms < 0:
        raise ValueError(f"costs must be positive: {limit_ms}, {floor_ms}, {client_ms}")
    return limit_ms / (limit_ms + floor_ms + client_ms)


def summarise_floor(
    null_points: Sequence[dict],
    served_points: Sequence[dict],
    limit_ms: Sequence[float],
    served_over_limit: float,
    cores: int,
) -> dict:
    """One subset's floor figures over the rounds: the null graph's served rate and server CPU
    per request, the ceiling ratio per round (paired with that round's limit and client CPU),
    its median and spread, the rate it stands for on `cores` cores, and how much of the
    ceiling the real pipeline reaches."""
    rounds = [
        (lim, null["cpu_ms_per_request"], real["client_cpu_ms_per_request"])
        for null, real, lim in zip(null_points, served_points, limit_ms, strict=True)
        if null.get("cpu_ms_per_request") and real.get("client_cpu_ms_per_request") is not None
    ]
    if not rounds:
        return {}
    ceilings = [ceiling_over_limit(*r) for r in rounds]
    ceiling = statistics.median(ceilings)
    return {
        "ceiling_rps": round(statistics.median(cores * 1000.0 / sum(r) for r in rounds), 2),
        "null_rps": round(statistics.median(p["rps"] for p in null_points), 2),
        "null_cpu_ms_per_request": round(
            statistics.median(
                p["cpu_ms_per_request"] for p in null_points if p.get("cpu_ms_per_request")
            ),
            3,
        ),
        "client_cpu_ms_per_request": round(
            statistics.median(
                p["client_cpu_ms_per_request"]
                for p in served_points
                if p.get("client_cpu_ms_per_request") is not None
            ),
            3,
        ),
        "ceiling_over_limit": round(ceiling, 3),
        "ceiling_spread": [round(min(ceilings), 3), round(max(ceilings), 3)],
        "served_over_ceiling": round(served_over_limit / ceiling, 3),
    }
