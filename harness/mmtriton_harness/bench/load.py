"""Closed-loop load over gRPC: N workers, each sending one single-sample request at a time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from mmtriton import spec
from mmtriton_client.client import AsyncMultimodalClient, ClientError, RetryPolicy, Sample

from .server import server_cpu_s, step_cpu_s
from .stats import latency_summary, parse_statistics, stats_delta

# How long a worker waits after an UNAVAILABLE (the server refused: it is full) before it
# sends again; far below the client library's first retry (0.2 s), so the server stays full.
REFUSED_BACKOFF_S = 0.02


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
    server_cpu_s: float | None = None  # tritonserver + stubs, during the window (if asked)
    client_cpu_s: float = 0.0  # this process (the load generator), during the window
    # tritonserver itself and each model's stubs, during the window (with server_cpu_s)
    step_cpu_s: dict[str, float] | None = None

    @property
    def answered(self) -> int:
        """Requests the ensemble answered with a result during the window (Triton's own
        count; refusals by admission control are not answers)."""
        ensemble = self.models.get(spec.ENSEMBLE.name, {})
        return int(ensemble.get("successes", ensemble.get("requests", 0)))

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Server CPU ms (tritonserver and its Python stubs) per request answered."""
        if self.server_cpu_s is None or not self.answered:
            return None
        return 1000 * self.server_cpu_s / self.answered

    def as_dict(self) -> dict:
        cpu = self.cpu_ms_per_request
        client = 1000 * self.client_cpu_s / self.answered if self.answered else None
        steps = None
        if self.step_cpu_s is not None and self.answered:
            steps = {k: round(1000 * v / self.answered, 3) for k, v in self.step_cpu_s.items()}
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "rps": round(self.rps, 2),
            **{k: self.latency[k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "requests": self.requests,
            "cpu_ms_per_request": None if cpu is None else round(cpu, 3),
            "client_cpu_ms_per_request": None if client is None else round(client, 3),
            "step_cpu_ms_per_request": steps,
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
    server_pid: int | None = None,
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
            if status == "UNAVAILABLE":
                # Refused by admission control: a client backs off before it retries (a
                # closed loop that retried at once would spin on refusals, measuring them).
                await asyncio.sleep(REFUSED_BACKOFF_S)

    workers = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        before = await asyncio.to_thread(_statistics, url)
        cpu0 = None if server_pid is None else server_cpu_s(server_pid)
        steps0 = None if server_pid is None else step_cpu_s(server_pid)
        client0 = time.process_time()
        window_start = time.perf_counter()
        await asyncio.sleep(duration_s)
        window_end = time.perf_counter()
        client1 = time.process_time()
        cpu1 = None if server_pid is None else server_cpu_s(server_pid)
        steps1 = None if server_pid is None else step_cpu_s(server_pid)
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
        server_cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        client_cpu_s=client1 - client0,
        step_cpu_s=None
        if steps0 is None or steps1 is None
        else {k: steps1[k] - steps0.get(k, 0.0) for k in steps1},
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
        merged = {
            "requests": total,
            "successes": sum(x.get("successes", 0) for x in parts),
            "executions": sum(x["executions"] for x in parts),
        }
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
        server_cpu_s=None
        if any(p.server_cpu_s is None for p in points)
        else sum(p.server_cpu_s for p in points),
        client_cpu_s=sum(p.client_cpu_s for p in points),
    )


def measure(
    url: str,
    samples: list[Sample],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    label: str = "all three",
    server_pid: int | None = None,
) -> LoadPoint:
    """Run `concurrency` closed-loop workers; measure the window after `warmup_s`.

    With `server_pid`, also the CPU the server's process tree used during the window.
    """
    return asyncio.run(_measure(url, samples, concurrency, warmup_s, duration_s, label, server_pid))


def warm_up(url: str, samples: list[Sample], rounds: int = 2) -> None:
    """A few requests of every kind, so first-call costs stay out of the measurements."""
    from mmtriton_client.client import MultimodalClient

    with MultimodalClient(url) as c:
        for _ in range(rounds):
            for s in samples:
                c.predict(s)
