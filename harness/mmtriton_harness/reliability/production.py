"""Faults from production that must change nothing for callers: Prometheus down, 1,000 idle
gRPC connections beside normal load, clients that disconnect mid-request.

They run against `mmtriton serve` (serve.py) like the heal faults, so readiness is the health
port's /ready and "nothing leaks" covers Triton's pending count, the drain's in-flight figure
(what a graceful stop waits for) and the supervisor's restart count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import resource
import statistics
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mmtriton import spec
from mmtriton.server.drain import PENDING, in_flight
from mmtriton.server.procs import tree_rss
from mmtriton_client.client import AsyncMultimodalClient, MultimodalClient, RetryPolicy, Sample

from .faults import PACE_S, ReadinessWatch
from .load import closed_loop, mixed_caller, summarize
from .payloads import column
from .serve import ServeProcess

NO_RETRY = RetryPolicy(attempts=1)  # normal load: any error is an error to see


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def pending_requests(text: str) -> float:
    """Triton's nv_inference_pending_request_count over all models, from metrics `text`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == PENDING
    )


def _normal_load(url: str, examples: Sequence, seconds: float, workers: int = 3) -> dict:
    """Closed-loop mixed load without retries for `seconds`: its summary."""

    async def go():
        end = time.monotonic() + seconds
        async with AsyncMultimodalClient(url, retry=NO_RETRY) as client:
            await client.num_classes()
            return await closed_loop(
                mixed_caller(client, examples), workers, lambda: time.monotonic() >= end, PACE_S
            )

    return summarize(asyncio.run(go()))


def _ok(summary: dict) -> bool:
    return summary["requests"] > 0 and summary["ok"] == summary["requests"]


# --------------------------------------------------------------------------- Prometheus down


def prometheus_down(serve: ServeProcess, examples: Sequence, phase_s: float = 4.0) -> dict:
    """The real Prometheus scrapes the server and the web page; SIGKILL it under load: the
    server and the page keep answering, metrics stay scrapeable."""
    from gradio_client import Client

    from mmtriton.observability.prometheus_server import PrometheusServer
    from mmtriton.server.process import free_port
    from mmtriton_client.web.app import WebSettings, launch

    ex = next(e for e in examples if e.text)
    page = launch(
        host="127.0.0.1",
        port=free_port(),
        block=False,
        settings=WebSettings(triton_url=serve.grpc_url, n_examples=0),
    )
    api = Client(page.url, verbose=False)
    prom = PrometheusServer(
        f"127.0.0.1:{serve.metrics_port}", f"127.0.0.1:{page.port}", scrape_interval="1s"
    )
    try:
        prom.start()
        targets = prom.wait_for_targets(timeout_s=30)
        with ReadinessWatch(serve) as watch:
            page_before = [api.predict(None, ex.text, None, api_name="/predict") for _ in range(3)]
            before = _normal_load(serve.grpc_url, examples, phase_s)
            assert prom.process is not None
            killed_at = time.monotonic()
            prom.process.kill()
            prom.process.wait()
            after = _normal_load(serve.grpc_url, examples, phase_s)
            page_after = [api.predict(None, ex.text, None, api_name="/predict") for _ in range(3)]
            scrape_ok = "nv_inference_count" in metrics_text(serve.metrics_url)
            with urllib.request.urlopen(page.url + "/metrics", timeout=5) as resp:
                page_metrics_ok = b"mmtriton_web_requests_total" in resp.read()
        not_ready = sum(1 for t, r in watch.samples if not r)
    finally:
        prom.stop()
        api.close()
        page.stop()
    page_ok = sum(p.get("label") == ex.label for p in page_before + page_after)
    out = {
        "targets_up_before": sorted(t["labels"]["job"] for t in targets),
        "prometheus_killed": killed_at is not None,
        "load_before": before,
        "load_after": after,
        "page_correct": f"{page_ok}/{len(page_before) + len(page_after)}",
        "metrics_scrapeable_after": scrape_ok and page_metrics_ok,
        "not_ready_samples": not_ready,
    }
    out["survived"] = bool(
        _ok(before)
        and _ok(after)
        and page_ok == len(page_before) + len(page_after)
        and out["metrics_scrapeable_after"]
        and not_ready == 0
    )
    return out


# --------------------------------------------------------------------------- idle connections


def established(port: int) -> int:
    """Established TCP connections whose local port is `port` (the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise this process's soft open-file limit to at least `needed` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def open_limit(pid: int) -> int | None:
    """A process's soft "Max open files"."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def idle_connections(
    serve: ServeProcess, examples: Sequence, n: int = 1000, phase_s: float = 5.0
) -> dict:
    """Normal load alone, then with `n` idle gRPC connections open (each its own HTTP/2
    connection, handshake done): success and p99 of the normal load must not change."""
    import grpc

    raise_fd_limit(n + 1024)
    pid = serve.triton_pid()
    baseline = _normal_load(serve.grpc_url, examples, phase_s)
    rss_before = tree_rss(pid) if pid else 0
    channels = []
    opened_at = time.monotonic()
    try:
        for _ in range(n):
            # Without a local subchannel pool, channels to one target share one connection.
            channels.append(
                grpc.insecure_channel(
                    serve.grpc_url, options=[("grpc.use_local_subchannel_pool", 1)]
                )
            )
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=60)
        open_s = time.monotonic() - opened_at
        server_side = established(serve.grpc_port)
        with ReadinessWatch(serve) as watch:
            loaded = _normal_load(serve.grpc_url, examples, phase_s)
        still_open = established(serve.grpc_port)
        rss_with = tree_rss(pid) if pid else 0
    finally:
        for channel in channels:
            channel.close()
    time.sleep(0.5)
    p99_base, p99_idle = baseline["ok_p99_ms"], loaded["ok_p99_ms"]
    out = {
        "idle_connections": n,
        "opened_in_s": round(open_s, 2),
        "server_side_established": server_side,
        "still_established_after_load": still_open,
        "triton_open_file_limit": open_limit(pid) if pid else None,
        "baseline": baseline,
        "with_idle": loaded,
        "p99_ratio": round(p99_idle / p99_base, 2) if p99_base and p99_idle else None,
        "rss_mb_per_1000_connections": round((rss_with - rss_before) / 2**20 * 1000 / n, 1),
        "not_ready_samples": sum(1 for _, r in watch.samples if not r),
        "established_after_close": established(serve.grpc_port),
    }
    # 2 shared cores: allow twice the baseline p99 plus 100 ms before calling it an effect.
    out["survived"] = bool(
        _ok(baseline)
        and _ok(loaded)
        and server_side >= n
        and still_open >= n
        and p99_idle is not None
        and p99_idle <= 2 * p99_base + 100
        and out["not_ready_samples"] == 0
    )
    return out


# --------------------------------------------------------------------------- disconnects


def _full_inputs(example) -> list:
    return [
        column(name, [value.encode() if isinstance(value, str) else value]).to_grpc()
        for name, value in (
            ("IMAGE", example.image),
            ("TEXT", example.text),
            ("AUDIO", example.audio),
        )
        if value
    ]


async def _cancel_mid_request(url: str, examples: Sequence, n: int, rng: random.Random) -> dict:
    """`n` requests, each cancelled (RST_STREAM CANCEL) after 0-80 ms: 4 at a time."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    counts = {"cancelled": 0, "answered_first": 0, "error_first": 0}
    outputs = [grpcclient.InferRequestedOutput(spec.WEIGHTS.name)]  # fusion's: every step
    client = aioclient.InferenceServerClient(url)
    try:

        async def one(i: int) -> None:
            ex = examples[i % len(examples)]
            task = asyncio.ensure_future(
                client.infer(spec.ENSEMBLE.name, _full_inputs(ex), outputs=outputs)
            )
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            task.cancel()
            try:
                await task
                counts["answered_first"] += 1
            except asyncio.CancelledError:
                counts["cancelled"] += 1
            except Exception:
                counts["error_first"] += 1

        for start in range(0, n, 4):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 4, n))))
    finally:
        await client.close()
    return counts


async def _deadline_mid_request(url: str, examples: Sequence, n: int, rng: random.Random) -> dict:
    """`n` requests whose client deadline (5-80 ms) expires mid-request: 4 at a time."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    counts = {"deadline_exceeded": 0, "answered_first": 0, "other_error": 0}
    outputs = [grpcclient.InferRequestedOutput(spec.WEIGHTS.name)]  # fusion's: every step
    client = aioclient.InferenceServerClient(url)
    try:

        async def one(i: int) -> None:
            ex = examples[i % len(examples)]
            try:
                await client.infer(
                    spec.ENSEMBLE.name,
                    _full_inputs(ex),
                    outputs=outputs,
                    client_timeout=rng.uniform(0.005, 0.08),
                )
                counts["answered_first"] += 1
            except Exception as exc:
                expired = "deadline" in str(exc).lower()
                counts["deadline_exceeded" if expired else "other_error"] += 1

        for start in range(0, n, 4):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 4, n))))
    finally:
        await client.close()
    return counts


def _close_mid_request(url: str, examples: Sequence, n: int, rng: random.Random) -> dict:
    """`n` requests, each on its own channel, closed 0-80 ms after sending."""
    import tritonclient.grpc as grpcclient

    counts = {"closed": 0, "answered_first": 0}
    outputs = [grpcclient.InferRequestedOutput(spec.WEIGHTS.name)]  # fusion's: every step
    for i in range(n):
        ex = examples[i % len(examples)]
        done = threading.Event()
        client = grpcclient.InferenceServerClient(url)
        client.async_infer(
            spec.ENSEMBLE.name,
            _full_inputs(ex),
            callback=lambda result, error, done=done: done.set(),
            outputs=outputs,
        )
        time.sleep(rng.uniform(0.0, 0.08))
        answered = done.is_set()
        client.close()
        counts["answered_first" if answered else "closed"] += 1
    return counts


def _settle(metrics_url: str, timeout_s: float) -> tuple[float | None, float, float]:
    """(seconds until Triton's pending count and the drain's in-flight figure were both 0
    twice in a row, or None; the last pending count; the last in-flight figure)."""
    start = time.monotonic()
    quiet, pending, busy = 0, -1.0, -1.0
    while time.monotonic() - start < timeout_s:
        try:
            text = metrics_text(metrics_url)
        except OSError:  # restarting: ask again
            time.sleep(0.5)
            continue
        pending = pending_requests(text)
        busy = in_flight(text)
        quiet = quiet + 1 if pending == 0 and busy == 0 else 0
        if quiet >= 2:
            return round(time.monotonic() - start, 2), pending, busy
        time.sleep(0.2)
    return None, pending, busy


def client_disconnects(
    serve: ServeProcess,
    examples: Sequence,
    n: int = 200,
    seed: int = 0,
    batch: int = 20,
    stop_after: bool = True,
    ways: tuple[str, ...] = ("cancel", "close"),
) -> dict:
    """Clients that go away mid-request, `n` times each way ("cancel" the call, "close" the
    channel, let a 5-80 ms "deadline" expire), `batch` at a time: the server must keep
    serving with nothing left pending, readiness true throughout and no heal. When
    tritonserver dies instead, the figures say after how many disconnects and how the
    supervisor healed it (the run goes on). Then (`stop_after`) SIGTERM: the server must
    still stop cleanly, tritonserver drained (exit 0).
    """
    rng = random.Random(seed)
    full = [e for e in examples if e.image and e.text and e.audio]
    first_pid = pid = serve.triton_pid()
    restarts_before = serve.status().get("restarts")
    rss_before = tree_rss(pid) if pid else 0
    counts: dict[str, dict[str, int]] = {way: {} for way in ways}
    crashes: list[dict] = []
    sent = 0
    gave_up: str | None = None
    with ReadinessWatch(serve) as watch:
        for way in ways:
            if gave_up:
                break
            for _ in range(0, n, batch):
                if way == "cancel":
                    got = asyncio.run(_cancel_mid_request(serve.grpc_url, full, batch, rng))
                elif way == "deadline":
                    got = asyncio.run(_deadline_mid_request(serve.grpc_url, full, batch, rng))
                else:
                    got = _close_mid_request(serve.grpc_url, full, batch, rng)
                sent += batch
                for key, value in got.items():
                    counts[way][key] = counts[way].get(key, 0) + value
                time.sleep(0.3)  # a crash takes a moment to show in /proc
                now = serve.triton_pid()
                if now != pid:  # tritonserver died under the disconnects
                    down = time.monotonic()
                    try:
                        healed = serve.wait_ready(90)
                    except (RuntimeError, TimeoutError) as exc:  # the supervisor gave up
                        gave_up = (str(exc).splitlines() or [""])[0]
                        crashes.append({"way": way, "after_disconnects": sent, "exit": {}})
                        break
                    crashes.append(
                        {
                            "way": way,
                            "after_disconnects": sent,
                            "exit": serve.status().get("last_heal", {}) or {},
                            "ready_again_after_s": round(time.monotonic() - down, 2),
                            "waited_s": round(healed, 2),
                        }
                    )
                    pid = serve.triton_pid()
        if gave_up:
            return {
                "disconnects_per_way": n,
                "by_way": counts,
                "tritonserver_crashes": len(crashes),
                "crashes": [{**c, "exit": (c["exit"] or {}).get("reason")} for c in crashes],
                "supervisor_gave_up": gave_up,
                "survived": False,
            }
        settled_s, pending, busy = _settle(serve.metrics_url, 20.0)
        ex = full[0]
        with MultimodalClient(serve.grpc_url, retry=NO_RETRY) as client:
            next_ok = client.predict(Sample(image=ex.image, text=ex.text, audio=ex.audio))
        after = _normal_load(serve.grpc_url, examples, 3.0)
    rss_after = tree_rss(pid) if pid else 0
    stop = serve.stop() if stop_after else None  # can a server that took them still stop?
    out = {
        "disconnects_per_way": n,
        "by_way": counts,
        "tritonserver_crashes": len(crashes),
        "crashes": [{**c, "exit": (c["exit"] or {}).get("reason")} for c in crashes],
        "supervisor_gave_up": None,
        "settled_after_s": settled_s,
        "pending_after": pending,
        "drain_in_flight_after": busy,
        "next_request_correct": next_ok.label == ex.label,
        "load_after": after,
        "not_ready_samples": sum(1 for _, r in watch.samples if not r),
        "restarts": [restarts_before, serve.status().get("restarts")],
        "same_tritonserver": serve.triton_pid() == first_pid,
        "rss_mb_delta": None if crashes else round((rss_after - rss_before) / 2**20, 1),
        "stop_after": None if stop is None else dataclasses.asdict(stop),
    }
    out["survived"] = bool(
        not crashes
        and (stop is None or (stop.clean(30.0) and stop.triton_exit == "0"))
        and settled_s is not None
        and out["next_request_correct"]
        and _ok(after)
        and out["not_ready_samples"] == 0
        and out["same_tritonserver"]
    )
    return out


def run_production_faults(repository: Path, log_dir: Path, examples: Sequence, quick: bool) -> dict:
    """One server for Prometheus down, idle connections, then SIGTERM under load; one for
    disconnecting clients (and its stop afterwards); one for SIGKILL of the launcher."""
    from .faults import guarded, launcher_sigkill, stop_under_load

    out: dict = {}
    serve = ServeProcess(repository, log_dir).start()
    try:
        phase = 3.0 if quick else 6.0
        out["prometheus_down"] = guarded(prometheus_down, serve, examples, phase)
        out["idle_connections"] = guarded(idle_connections, serve, examples, 1000, phase + 2)
        out["stop_under_load"] = guarded(stop_under_load, serve, examples)
    finally:
        serve.kill_all()
    # Its own server: what disconnects leave behind must not spill into the other figures.
    serve = ServeProcess(repository, log_dir).start()
    try:
        n = 60 if quick else 200
        out["client_disconnects"] = guarded(client_disconnects, serve, examples, n)
    finally:
        serve.kill_all()
    # The everyday trigger: clients whose deadline expires while the request runs.
    serve = ServeProcess(repository, log_dir).start()
    try:
        out["client_deadlines"] = guarded(
            client_disconnects, serve, examples, 40 if quick else 100, ways=("deadline",)
        )
    finally:
        serve.kill_all()
    serve = ServeProcess(repository, log_dir).start()
    try:
        out["launcher_sigkill"] = guarded(launcher_sigkill, serve)
    finally:
        serve.kill_all()
    return out


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None
