"""Faults under load: a Python-backend stub killed, the server SIGKILLed and restarted on the
same ports, and a graceful stop (drain) while clients keep sending.

Callers are clients of the library: most retry UNAVAILABLE (``RETRYING``, a budget of about
9 s: longer than a restart here), one does not retry at all (what a bare gRPC caller sees).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from mmtriton.server.process import TritonProcess
from mmtriton.server.procs import stub_instances
from mmtriton_client.client import AsyncMultimodalClient, RetryPolicy

from .load import Outcome, closed_loop, mixed_caller, summarize
from .servers import StubWatchdog, is_ready, kill_hard, restart

RETRYING = RetryPolicy(attempts=12, initial_backoff_s=0.2, max_backoff_s=1.0)
BARE = RetryPolicy(attempts=1)
PACE_S = 0.15  # per caller: about 6-7 requests/s each, well within capacity


async def _with_load(url: str, examples: Sequence, workers: int, fault, policy=RETRYING):
    """Run `fault()` (blocking, in a thread) while `workers` retrying callers and one bare
    caller send mixed requests; load goes on for 2 s after the fault returns."""
    done_at: list[float] = []

    def until() -> bool:
        return bool(done_at) and time.monotonic() > done_at[0] + 2.0

    async with (
        AsyncMultimodalClient(url, retry=policy) as retrying,
        AsyncMultimodalClient(url, retry=BARE) as bare,
    ):
        await retrying.num_classes()
        await bare.num_classes()

        async def run_fault():
            await asyncio.sleep(2.0)  # load is steady by now
            try:
                return await asyncio.to_thread(fault)
            finally:
                done_at.append(time.monotonic())

        both = await asyncio.gather(
            closed_loop(mixed_caller(retrying, examples), workers, until, PACE_S),
            closed_loop(mixed_caller(bare, examples), 1, until, PACE_S),
            run_fault(),
        )
    return both


def _back_after(outcomes: list[Outcome], since: float) -> float | None:
    """Seconds from `since` until the first request started after it was answered."""
    ends = [o.end for o in outcomes if o.kind == "ok" and o.start > since]
    return round(min(ends) - since, 2) if ends else None


def stub_kill(server: TritonProcess, log_dir: Path, examples: Sequence, workers: int = 4):
    """SIGKILL the image encoder's stub under load; the watchdog restarts the server."""
    probes: list[tuple[float, bool]] = []  # (answered at, ready?)
    marks: dict[str, float] = {}

    with StubWatchdog(server, log_dir, poll_s=0.2) as watchdog:

        def fault():
            name, pid = next(
                (n, p)
                for n, p in stub_instances(server.process.pid).items()
                if n.startswith("image_encoder")
            )
            marks["kill"] = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while not watchdog.detected_at:  # Triton's own view meanwhile
                ready = is_ready(server)
                probes.append((time.monotonic(), ready))
                time.sleep(0.02)
            while not watchdog.events:
                time.sleep(0.05)
            return name

        retrying, bare, name = asyncio.run(_with_load(server.grpc_url, examples, workers, fault))
        event = watchdog.events[0]
        server = watchdog.server
    kill = marks["kill"]
    before = [ready for at, ready in probes if at < event["detected_at"]]
    return server, {
        "killed": name,
        "ready_probes_while_broken": len(before),
        "ready_while_broken": sum(before),
        "detected_after_ms": round((event["detected_at"] - kill) * 1000),
        "restart_s": round(event["ready_at"] - event["detected_at"], 2),
        "back_after_s": _back_after(retrying, kill),
        "shm_regions_left_by_killed_server": event["shm_regions_left"],
        "retrying_callers": summarize(retrying),
        "bare_caller": summarize(bare),
    }


def server_kill(server: TritonProcess, log_dir: Path, examples: Sequence, workers: int = 4):
    """SIGKILL tritonserver under load and start it again on the same ports."""
    box: dict = {}

    def fault():
        box["kill"] = time.monotonic()
        box["shm_left"] = kill_hard(server)
        box["server"] = restart(server, log_dir)
        box["ready"] = time.monotonic()

    retrying, bare, _ = asyncio.run(_with_load(server.grpc_url, examples, workers, fault))
    return box["server"], {
        "restart_s": round(box["ready"] - box["kill"], 2),
        "back_after_s": _back_after(retrying, box["kill"]),
        "shm_regions_left_by_killed_server": box["shm_left"],
        "retrying_callers": summarize(retrying),
        "bare_caller": summarize(bare),
    }


def drain_under_load(server: TritonProcess, examples: Sequence, workers: int = 4) -> dict:
    """Graceful stop (drain, then SIGTERM) while callers keep sending; callers use the
    library's default retry policy, so requests after the stop end in UNAVAILABLE."""
    box: dict = {}

    def fault():
        box["stop"] = time.monotonic()
        box["code"] = server.stop(drain_timeout_s=3.0)
        box["stopped"] = time.monotonic()

    retrying, bare, _ = asyncio.run(
        _with_load(server.grpc_url, examples, workers, fault, policy=RetryPolicy())
    )
    in_flight_at_stop = [o for o in retrying + bare if o.start < box["stop"] < o.end]
    return {
        "exit_code": box["code"],
        "stop_s": round(box["stopped"] - box["stop"], 2),
        "shm_regions_left": len(server.leaked_at_exit),
        "in_flight_at_stop": len(in_flight_at_stop),
        "in_flight_at_stop_answered": sum(o.kind == "ok" for o in in_flight_at_stop),
        "callers": summarize(retrying + bare),
    }


def run_faults(log_dir: Path, examples: Sequence, start) -> dict:
    """All three faults on one server lineage (`start(log_dir)` starts the first server)."""
    server = start(log_dir)
    out: dict = {}
    try:
        server, out["stub_kill"] = stub_kill(server, log_dir, examples)
        server, out["server_kill"] = server_kill(server, log_dir, examples)
        out["drain_under_load"] = drain_under_load(server, examples)
    finally:
        if server.process is not None and server.process.poll() is None:
            kill_hard(server)
    return out


def faults_survived(result: dict) -> int:
    """How many of the faults the service came back from with nothing lost."""
    stub, kill, drain = (result[k] for k in ("stub_kill", "server_kill", "drain_under_load"))
    return sum(
        [
            stub["back_after_s"] is not None and stub["retrying_callers"]["lost"] == 0,
            kill["back_after_s"] is not None
            and kill["retrying_callers"]["failed"] + kill["retrying_callers"]["lost"] == 0,
            drain["exit_code"] == 0
            and drain["shm_regions_left"] == 0
            and drain["callers"]["failed"] + drain["callers"]["lost"] == 0,
        ]
    )
