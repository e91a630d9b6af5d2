"""Closed-loop load over gRPC: N workers, each sending one single-sample request at a time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from mmtriton_client.client import AsyncMultimodalClient, ClientError, RetryPolicy, Sample

from .stats import latency_summary, parse_statistics, stats_delta


@dataclass(frozen=True)
class LoadPoint:
    """What one measurement window saw."""

    label: str
    concurrency: int
    rps: float
    latency: dict[str, float]
    errors: int
    error_kinds: dict[str, int]
    requests: int
    models: dict[str, dict]
    latencies_s: tuple[float, ...] = ()
    window_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "rps": round(self.rps, 2),
            **{k: self.latency[k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "requests": self.requests,
            "models": self.models,
        }


def _statistics(url: str) -> dict[str, dict]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as c:
        return parse_statistics(c.get_inference_statistics(as_json=True))


async def _measure(
    url: str,
    samples: list[Sample],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    label: str,
) -> LoadPoint:
    records: list[tuple[float, float, str | None]] = []  # (start, end, error status)
    stop = asyncio.Event()
    # No retries: a refused request is an error here, not something to hide.
    client = AsyncMultimodalClient(url, retry=RetryPolicy(attempts=1), timeout_s=60)
    await client.num_classes()

    async def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            sample = samples[i % len(samples)]
            i += concurrency
            t0 = time.perf_counter()
            status = None
            try:
                await client.predict(sample)
            except ClientError as exc:
                status = exc.status
            records.append((t0, time.perf_counter(), status))

    workers = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        before = await asyncio.to_thread(_statistics, url)
        window_start = time.perf_counter()
        await asyncio.sleep(duration_s)
        window_end = time.perf_counter()
        after = await asyncio.to_thread(_statistics, url)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
    inside = [r for r in records if window_start <= r[1] <= window_end]
    ok = [end - start for start, end, status in inside if status is None]
    errors = Counter(status for _s, _e, status in inside if status is not None)
    return LoadPoint(
        label=label,
        concurrency=concurrency,
        rps=len(ok) / (window_end - window_start),
        latency=latency_summary(ok),
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        requests=len(inside),
        models=stats_delta(before, after),
        latencies_s=tuple(ok),
        window_s=window_end - window_start,
    )


def merge(points: list[LoadPoint]) -> LoadPoint:
    """Several windows of the same setting as one point (per-model figures request-weighted)."""
    first = points[0]
    window = sum(p.window_s for p in points)
    latencies = tuple(x for p in points for x in p.latencies_s)
    errors: Counter = Counter()
    for p in points:
        errors.update(p.error_kinds)
    models: dict[str, dict] = {}
    for name in {m for p in points for m in p.models}:
        parts = [p.models[name] for p in points if name in p.models]
        total = sum(x["requests"] for x in parts)
        merged = {"requests": total, "executions": sum(x["executions"] for x in parts)}
        for key in parts[0]:
            if key not in merged:
                merged[key] = round(sum(x[key] * x["requests"] for x in parts) / total, 3)
        models[name] = merged
    return LoadPoint(
        label=first.label,
        concurrency=first.concurrency,
        rps=len(latencies) / window if window else 0.0,
        latency=latency_summary(latencies),
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        requests=sum(p.requests for p in points),
        models=models,
        latencies_s=latencies,
        window_s=window,
    )


def measure(
    url: str,
    samples: list[Sample],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    label: str = "all three",
) -> LoadPoint:
    """Run `concurrency` closed-loop workers; measure the window after `warmup_s`."""
    return asyncio.run(_measure(url, samples, concurrency, warmup_s, duration_s, label))


def warm_up(url: str, samples: list[Sample], rounds: int = 2) -> None:
    """A few requests of every kind, so first-call costs stay out of the measurements."""
    from mmtriton_client.client import MultimodalClient

    with MultimodalClient(url) as c:
        for _ in range(rounds):
            for s in samples:
                c.predict(s)
