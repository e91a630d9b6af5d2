"""Sustained mixed load: zero errors, and the server's memory (tritonserver + stubs) flat."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence

from mmtriton.server.procs import tree_rss
from mmtriton_client.client import AsyncMultimodalClient, RetryPolicy

from .load import closed_loop, mixed_caller, summarize

SOAK_SECONDS_ENV = "SOAK_SECONDS"


def soak_seconds(default: float) -> float:
    """$SOAK_SECONDS when set, else `default`."""
    return float(os.environ.get(SOAK_SECONDS_ENV) or default)


async def _soak(url: str, server_pid: int, examples, seconds, workers, pace_s, bad_every):
    end = time.monotonic() + seconds
    samples: list[tuple[float, int, int]] = []  # (seconds in, RSS, requests done)
    done: list = []

    async def sample_rss():
        start = time.monotonic()
        while time.monotonic() < end:
            samples.append((time.monotonic() - start, tree_rss(server_pid), len(done)))
            await asyncio.sleep(1.0)

    # No retries: in a soak every UNAVAILABLE is an error to see, not to hide.
    async with AsyncMultimodalClient(url, retry=RetryPolicy(attempts=1)) as client:
        await client.num_classes()
        call = mixed_caller(client, examples, bad_every=bad_every)
        outcomes, _ = await asyncio.gather(
            closed_loop(call, workers, lambda: time.monotonic() >= end, pace_s, done),
            sample_rss(),
        )
    return outcomes, samples


def run_soak(
    url: str,
    server_pid: int,
    examples: Sequence,
    seconds: float,
    workers: int = 4,
    pace_s: float = 0.1,
    bad_every: int = 25,
    warmup_fraction: float = 0.25,
) -> dict:
    """Closed-loop mixed load (every modality subset, batches of 4, a corrupt image every
    `bad_every` requests that must be refused) for `seconds`, sampling RSS every second.

    Growth compares the median RSS of the 3 samples right after warm-up with the median of the
    last 3 samples, as a percentage and, the way Triton's L0_memory_growth bounds it, as
    bytes per 10,000 requests served in between. Errors are all outcomes other than answers
    and the expected refusals.
    """
    outcomes, samples = asyncio.run(
        _soak(url, server_pid, examples, seconds, workers, pace_s, bad_every)
    )
    summary = summarize(outcomes)
    warm = [(rss, n) for t, rss, n in samples if t >= seconds * warmup_fraction]
    enough = len(warm) >= 6
    base = statistics.median(r for r, _ in warm[:3]) if enough else None
    last = statistics.median(r for r, _ in warm[-3:]) if enough else None
    served = (warm[-2][1] - warm[1][1]) if enough else 0  # between the two medians' samples
    per_10k = round((last - base) / served * 10_000) if enough and served > 0 else None
    return {
        "seconds": seconds,
        "workers": workers,
        **summary,
        "errors_total": summary["requests"] - summary["ok"],
        "bad_inputs_refused": sum(o.kind == "ok" and o.correct is None for o in outcomes),
        "achieved_rps": round(len(outcomes) / seconds, 1),
        "rss_mb_after_warmup": None if base is None else round(base / 2**20, 1),
        "rss_mb_end": None if last is None else round(last / 2**20, 1),
        "rss_mb_max": round(max(r for _, r, _ in samples) / 2**20, 1) if samples else None,
        "rss_growth_pct": None if base is None else round((last - base) / base * 100, 2),
        "requests_after_warmup": served,
        "rss_bytes_per_10k_requests": per_10k,
    }
