"""Offered load far beyond capacity: fast explicit refusals, bounded latency, recovery.

The first step refuses what the pipeline cannot serve within its latency objective
(mmtriton/backend/admission.py), and Triton's own queue in front of it refuses when that queue
is full. Both answer UNAVAILABLE; `refused_by` says which refused how many. The machine's load
average is recorded with the figures: on shared cores the client's own latency moves them.

The offered rate is a multiple of the capacity measured just before on the same server: a
fixed rate is overload on one machine and nearly a fit on a faster one (300 req/s was ~3x
capacity on the cores the figures were first taken on, and ~1.25x on a later machine, where
refusals then came late, after a queue had formed).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Sequence

from mmtriton import spec
from mmtriton.server.drain import in_flight
from mmtriton.server.process import TritonProcess

from .load import closed_loop, open_loop, raw_caller, summarize, timed


def pipeline_in_flight(metrics_url: str) -> float:
    """Requests queued anywhere plus samples inside the ensemble (0 when nothing leaked)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        return in_flight(resp.read().decode())


# Who refused, by a phrase of the refusal's message (lower case).
REFUSERS = {
    "admission": "server overloaded",  # preprocess: the pipeline holds its bound
    "queue_full": "exceeds maximum queue size",  # Triton: the first step's queue is full
    "queue_timeout": "request timeout expired",  # Triton: waited past the queue timeout
}


def refused_by(outcomes: Sequence) -> dict[str, int]:
    """Refusals counted by who refused (see REFUSERS); "other" for the rest."""
    counts = dict.fromkeys((*REFUSERS, "other"), 0)
    for o in outcomes:
        if o.kind == "rejected":
            text = o.message.lower()
            counts[next((k for k, phrase in REFUSERS.items() if phrase in text), "other")] += 1
    return counts


def step_failures(http_url: str) -> dict[str, int]:
    """Failed requests per step after the fan-out (encoders, fusion), from Triton's statistics
    API: each of them failed beside running siblings, which Triton 2.51 never finishes."""
    import json

    out = {}
    for model in (*spec.ENCODERS.values(), spec.FUSION):
        with urllib.request.urlopen(f"{http_url}/v2/models/{model.name}/stats", timeout=5) as r:
            stats = json.loads(r.read())["model_stats"][0]["inference_stats"]
        out[model.name] = int(stats["fail"]["count"])
    return out


async def _probe_latency(call, n: int) -> list[float]:
    return [(await timed(call, i)).ms for i in range(n)]


# Closed-loop callers and seconds of the capacity measurement before the overload.
CAPACITY_WORKERS = 16
CAPACITY_SECONDS = 2.0


async def _capacity_rps(call) -> float:
    """Served requests/s with CAPACITY_WORKERS callers back to back for CAPACITY_SECONDS."""
    end = time.monotonic() + CAPACITY_SECONDS
    outcomes = await closed_loop(call, CAPACITY_WORKERS, lambda: time.monotonic() >= end)
    served = [o for o in outcomes if o.kind == "ok"]
    if not served:
        raise RuntimeError("overload: no request was served while measuring capacity")
    return len(served) / (max(o.end for o in served) - min(o.start for o in outcomes))


async def _overload(
    url: str, examples: Sequence, rate: float | None, factor: float, seconds: float, **infer_kw
):
    call = raw_caller(url, examples, **infer_kw)
    probe = raw_caller(url, examples, client_timeout=10)
    try:
        baseline = sorted(await _probe_latency(probe, 8))[4]
        capacity = await _capacity_rps(probe)
        rate = rate or factor * capacity
        outcomes, sent_until = await open_loop(call, rate, seconds)
        # Recovery: from the end of the offered load until a fresh request is served about as
        # fast as before it (the queue has drained).
        recovered_s, probes = None, []
        while recovered_s is None and time.monotonic() - sent_until < 60:
            outcome = await timed(probe, len(probes))
            probes.append(outcome)
            if outcome.kind == "ok" and outcome.ms <= max(3 * baseline, baseline + 100):
                recovered_s = outcome.end - sent_until
            elif outcome.kind != "ok":
                await asyncio.sleep(0.05)
    finally:
        await call.client.close()
        await probe.client.close()
    return baseline, capacity, rate, outcomes, recovered_s


def run_overload(
    server: TritonProcess,
    examples: Sequence,
    rate: float | None = None,
    factor: float = 3.0,
    seconds: float = 4.0,
    queue_timeout_us: int | None = None,
    client_timeout_s: float = 30.0,
) -> dict:
    """Open-loop load (full samples: image + text + audio) for `seconds` at `factor` times the
    capacity measured just before (`capacity_rps`), or at a fixed `rate` requests/s.

    With `queue_timeout_us`, every request carries Triton's per-request timeout (the configs
    allow overriding the 5 s queue timeout), bounding how long an accepted request may queue.
    A request unanswered after `client_timeout_s` ends as ``timeout`` (accepted, never served).
    """
    kw: dict = {"client_timeout": client_timeout_s}
    if queue_timeout_us:
        kw["timeout"] = queue_timeout_us
    load_before = os.getloadavg()[0]
    baseline, capacity, rate, outcomes, recovered_s = asyncio.run(
        _overload(server.grpc_url, examples, rate, factor, seconds, **kw)
    )
    window = max(o.end for o in outcomes) - min(o.start for o in outcomes)
    summary = summarize(outcomes)
    return {
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(rate, 1),
        "offered_seconds": seconds,
        "queue_timeout_us": queue_timeout_us,
        "baseline_ms": round(baseline, 1),
        **summary,
        "served_rps": round(summary["ok"] / window, 1),
        "refused_by": refused_by(outcomes),
        "load_average_1m": {"before": round(load_before, 2), "after": os.getloadavg()[0]},
        "recovered_after_s": None if recovered_s is None else round(recovered_s, 2),
        "in_flight_after": pipeline_in_flight(server.metrics_url),
        "step_failures": step_failures(server.http_url),
    }


def run_timeout_override(
    server: TritonProcess, examples: Sequence, timeout_us: int = 1_000, seconds: float = 3.0
) -> dict:
    """8 callers whose requests carry Triton's per-request timeout (`timeout_us`), which the
    configs allow to override the queue timeout. Whatever it rejects must leave nothing in
    flight. Only the first step has a queue policy: had the encoders one too, they would fail
    requests beside running siblings, and Triton 2.51 keeps those "in flight" for good (the
    drain never ends, SIGTERM waits out the exit timeout and exits 1; measured)."""

    async def go():
        call = raw_caller(server.grpc_url, examples, timeout=timeout_us, client_timeout=30)
        end = time.monotonic() + seconds
        try:
            return await closed_loop(call, 8, lambda: time.monotonic() >= end)
        finally:
            await call.client.close()

    outcomes = asyncio.run(go())
    time.sleep(0.5)  # let what was accepted finish
    return {
        "timeout_us": timeout_us,
        **summarize(outcomes),
        "in_flight_after": pipeline_in_flight(server.metrics_url),
        "step_failures": step_failures(server.http_url),
    }
