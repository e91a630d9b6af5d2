"""Faults under load against the product, `mmtriton serve` (serve.py): each Python-backend stub
SIGKILLed in turn, a stub SIGSTOPped, tritonserver SIGKILLed, SIGTERM after a stub death,
SIGTERM under load, SIGKILL of the launcher itself, and the web page while Triton restarts.

Nothing here heals anything: the supervisor inside `mmtriton serve` must. While a fault runs,
``ReadinessWatch`` polls the health port's /ready every 50 ms, so each figure says whether
readiness was false during the gap, how long the heal took, and when callers were answered
again. Callers are clients of the library: most use its default ``RetryPolicy`` (what a
caller gets without tuning anything), one never retries (what a bare gRPC caller sees). Every
request a retrying caller did not get answered counts as lost: failed (e.g. INTERNAL), broken
mid-flight, or past its deadline, and, in the heal faults, refused as "retry later" once
its retry budget was spent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mmtriton.server.supervisor import SupervisorPolicy
from mmtriton_client.client import AsyncMultimodalClient, RetryPolicy

from .load import Outcome, closed_loop, mixed_caller, summarize
from .serve import ServeProcess, describe, port_listening, same_alive, start_time

BARE = RetryPolicy(attempts=1)
# During a stop nothing comes back: a short policy so callers give up quickly.
STOPPING = RetryPolicy(attempts=2)
PACE_S = 0.15  # per caller: about 6-7 requests/s each, well within capacity
HEAL_BOUND_S = 30.0  # the bound: next answer within 30 s of the fault
STOP_BOUND_S = 30.0  # SIGTERM: exit 0 within 30 s in every state
ORPHAN_BOUND_S = 5.0  # SIGKILL of the launcher: tritonserver gone, ports free within this
# Heals the supervisor makes at once within its window (beyond, it backs off between them).
MAX_HEALS = SupervisorPolicy().heals_before_backoff


class ReadinessWatch:
    """Polls /ready (health port) in a thread: [(monotonic time, ready?)]."""

    def __init__(self, serve: ServeProcess, every_s: float = 0.05) -> None:
        self.serve, self.every_s = serve, every_s
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ready-watch", daemon=True)

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.serve.ready()))
            self._stop.wait(self.every_s)

    def first(self, ready: bool, after: float) -> float | None:
        """When /ready first answered `ready` after `after`."""
        return next((t for t, r in list(self.samples) if t > after and r == ready), None)

    def wait_for(self, ready: bool, after: float, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self.first(ready, after)
            if at is not None:
                return at
            time.sleep(0.02)
        return None


async def _with_load(
    url: str,
    examples: Sequence,
    workers: int,
    fault: Callable,
    policy: RetryPolicy | None = None,
    lead_s: float = 1.5,
    tail_s: float = 1.5,
    answered_after: Callable[[], float | None] | None = None,
):
    """Run `fault()` (blocking, in a thread) while `workers` callers with `policy` (default:
    the library's default retries) and one bare caller send mixed requests; the load starts
    `lead_s` before the fault and goes on for `tail_s` after it returns, and (up to 30 s more)
    until a retrying caller got an answer to a request sent after `answered_after()` (default:
    when the fault began): that answer is the "next successful answer" the figures time.
    Returns (retrying outcomes, bare outcomes, fault's result)."""
    done_at: list[float] = []
    began: list[float] = []
    retried: list[Outcome] = []

    def answered_since_fault() -> bool:
        since = (answered_after() if answered_after else None) or began[0]
        return any(o.kind == "ok" and o.start >= since for o in retried)

    def until() -> bool:
        if not done_at:
            return False
        now = time.monotonic()
        return now > done_at[0] + tail_s and (answered_since_fault() or now > done_at[0] + 30)

    async with (
        AsyncMultimodalClient(url, retry=policy or RetryPolicy()) as retrying,
        AsyncMultimodalClient(url, retry=BARE) as bare,
    ):
        await retrying.num_classes()
        await bare.num_classes()

        async def run_fault():
            await asyncio.sleep(lead_s)  # load is steady by now
            began.append(time.monotonic())
            try:
                return await asyncio.to_thread(fault)
            finally:
                done_at.append(time.monotonic())

        return await asyncio.gather(
            closed_loop(mixed_caller(retrying, examples), workers, until, PACE_S, retried),
            closed_loop(mixed_caller(bare, examples), 1, until, PACE_S),
            run_fault(),
        )


def lost(summary: dict) -> int:
    """Requests neither answered nor refused as invalid/retry-later: failed, broken, timed out."""
    return summary["failed"] + summary["lost"] + summary["timeout"]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def answer_gaps(outcomes: list[Outcome], since: float) -> tuple[float | None, float | None]:
    """(back after: the first answer to a request sent at or after `since`, in seconds from
    `since`; the longest time between two answers from the last one before `since` on)."""
    ends = sorted(o.end for o in outcomes if o.kind == "ok")
    after = [o.end for o in outcomes if o.kind == "ok" and o.start >= since]
    back = min(after) - since if after else None
    around = [e for e in ends if e < since][-1:] + [e for e in ends if e >= since]
    gap = max((b - a for a, b in itertools.pairwise(around)), default=None)
    return _rounded(back), _rounded(gap)


def stub_fault(
    serve: ServeProcess,
    examples: Sequence,
    instance: str,
    sig: int = signal.SIGKILL,
    workers: int = 3,
    timeout_s: float = 60.0,
) -> dict:
    """Send `sig` to one stub (or "tritonserver") under load and wait for the product to heal.

    Figures, in seconds from the signal: ``detected_after_s`` (first /ready 503),
    ``healed_after_s`` (first /ready 200 after that), ``back_after_s`` (first answer to a
    request sent after detection began: served by the healed server), ``longest_gap_s``
    between two answers. The fault survived when readiness went false, the heal and the next
    answer came within HEAL_BOUND_S, and no retrying caller lost a request.
    """
    before = serve.status()
    marks: dict = {}
    with ReadinessWatch(serve) as watch:

        def fault():
            serve.track_now()
            stubs = serve.stubs()
            pid = serve.triton_pid() if instance == "tritonserver" else stubs[instance]
            started = start_time(pid)
            # The broken server's other processes must go with it (not live on as orphans).
            siblings = {p: start_time(p) for p in stubs.values() if p != pid}
            marks["at"] = time.monotonic()
            os.kill(pid, sig)
            down = watch.wait_for(False, marks["at"], timeout_s)
            marks["down"] = down
            marks["up"] = watch.wait_for(True, down, timeout_s) if down else None
            if marks["up"]:
                deadline = time.monotonic() + 10  # the signalled process must be gone too
                while same_alive(pid, started) and time.monotonic() < deadline:
                    time.sleep(0.05)
                serve.track_now()
            marks["signalled_left_alive"] = same_alive(pid, started)
            deadline = time.monotonic() + (ORPHAN_BOUND_S if marks["up"] else 0)
            while any(same_alive(p, t) for p, t in siblings.items()):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            marks["orphans"] = [describe(p) for p, t in siblings.items() if same_alive(p, t)]

        retrying, bare, _ = asyncio.run(
            _with_load(
                serve.grpc_url, examples, workers, fault, answered_after=lambda: marks.get("down")
            )
        )
    at, down, up = marks["at"], marks["down"], marks["up"]
    after = serve.status()
    back, gap = answer_gaps(retrying, down if down is not None else at)
    callers = summarize(retrying)
    out = {
        "target": instance,
        "signal": signal.Signals(sig).name,
        "ready_false_during_gap": down is not None,
        "detected_after_s": _rounded(down - at if down else None),
        "healed_after_s": _rounded(up - at if up else None),
        "back_after_s": None if back is None else round(back + (down - at if down else 0), 2),
        "longest_gap_s": gap,
        "restarts": [before.get("restarts"), after.get("restarts")],
        "heal_reason": (after.get("last_heal") or {}).get("reason"),
        "signalled_process_left_alive": marks["signalled_left_alive"],
        "old_stubs_left_alive": marks["orphans"],
        "retrying_callers": callers,
        # A retrying caller that finally gave up (UNAVAILABLE after its budget) lost it too.
        "retrying_lost": lost(callers) + callers["rejected"],
        "bare_caller": summarize(bare),
    }
    out["survived"] = bool(
        out["ready_false_during_gap"]
        and out["healed_after_s"] is not None
        and out["back_after_s"] is not None
        and out["back_after_s"] < HEAL_BOUND_S
        and out["retrying_lost"] == 0
        and not out["signalled_process_left_alive"]
        and not out["old_stubs_left_alive"]
    )
    return out


def guarded(fn: Callable[..., dict], *args, label: dict | None = None, **kwargs) -> dict:
    """`fn(*args, **kwargs)`'s figures, or {"error", "survived": False} when the scenario itself
    broke (e.g. the server gave up healing): one broken fault must not lose the others'."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        return {**(label or {}), "error": f"{type(exc).__name__}: {first}"[:300], "survived": False}


class Lineage:
    """`mmtriton serve` processes one after another, each given at most MAX_HEALS faults that
    need a heal: more within the supervisor's window and it backs off between restarts (on
    purpose, as a kubelet would), which would blur the heal times measured here."""

    def __init__(self, repository: Path, log_dir: Path) -> None:
        self.repository, self.log_dir = repository, log_dir
        self.serve: ServeProcess | None = None
        self.heals = 0
        self.started = 0

    def serve_for(self, heals: int = 1) -> ServeProcess:
        """A ready server that can still take `heals` heals; counts them as taken."""
        worn = self.heals + heals > MAX_HEALS
        if self.serve is None or worn or self.serve.process.poll() is not None:
            self.close()
            self.serve = ServeProcess(self.repository, self.log_dir).start()
            self.started += 1
            self.heals = 0
        self.heals += heals
        return self.serve

    def stub_names(self) -> list[str]:
        """The instances of the shipped repository (from a running server)."""
        return sorted(self.serve_for(0).stubs())

    def close(self) -> None:
        """Kill the current server, if any is still running."""
        serve, self.serve = self.serve, None
        if serve is not None and serve.process is not None and serve.process.poll() is None:
            serve.kill_all()


def kill_each_stub(lineage: Lineage, examples: Sequence, workers: int = 3) -> list[dict]:
    """SIGKILL every Python-backend stub in turn (waiting for each heal)."""
    return [
        guarded(
            lambda name=name: stub_fault(lineage.serve_for(1), examples, name, workers=workers),
            label={"target": name},
        )
        for name in lineage.stub_names()
    ]


def _stop_under_load(
    serve: ServeProcess, examples: Sequence, before_stop: Callable[[], None], workers: int
) -> dict:
    box: dict = {}

    def fault():
        before_stop()
        box["state"] = serve.status().get("state")
        box["at"] = time.monotonic()
        box["stop"] = serve.stop(signal.SIGTERM, bound_s=60.0)

    retrying, bare, _ = asyncio.run(
        _with_load(serve.grpc_url, examples, workers, fault, policy=STOPPING, tail_s=0.5)
    )
    stop = box["stop"]
    in_flight = [o for o in retrying + bare if o.start < box["at"] < o.end]
    return {
        "supervisor_state_at_sigterm": box["state"],
        "exit_code": stop.exit_code,
        "triton_exit": stop.triton_exit,
        "stop_s": stop.seconds,
        "shm_regions_left": stop.shm_regions_left,
        "processes_left": stop.processes_left,
        "left_behind": list(stop.left),
        "left_behind_gone_after_s": stop.processes_gone_after_s,
        "in_flight_at_stop": len(in_flight),
        "in_flight_at_stop_answered": sum(o.kind == "ok" for o in in_flight),
        "callers": summarize(retrying + bare),
        "stop_clean": stop.clean(STOP_BOUND_S),
    }


def stop_after_stub_death(
    serve: ServeProcess, examples: Sequence, instance: str = "image_encoder_0_0", workers: int = 3
) -> dict:
    """SIGKILL a stub under load, then SIGTERM `mmtriton serve` 1 s later (mid-heal)."""

    def kill_then_wait():
        os.kill(serve.stubs()[instance], signal.SIGKILL)
        time.sleep(1.0)

    out = {"killed": instance, **_stop_under_load(serve, examples, kill_then_wait, workers)}
    out["survived"] = out["stop_clean"]
    return out


def stop_under_load(serve: ServeProcess, examples: Sequence, workers: int = 3) -> dict:
    """SIGTERM `mmtriton serve` while callers keep sending: what was in flight is answered."""
    out = _stop_under_load(serve, examples, lambda: None, workers)
    out["survived"] = bool(
        out["stop_clean"]
        and out["triton_exit"] == "0"  # healthy: drained, not killed
        and out["in_flight_at_stop_answered"] == out["in_flight_at_stop"]
        and lost(out["callers"]) == 0
    )
    return out


def launcher_sigkill(serve: ServeProcess, bound_s: float = ORPHAN_BOUND_S) -> dict:
    """SIGKILL `mmtriton serve` itself: tritonserver and its stubs must die with it and free
    the ports (the launcher ties their lives to its own), not live on as orphans."""
    assert serve.process is not None
    serve.track_now()
    triton = serve.triton_pid()
    procs = {p: start_time(p) for p in [triton, *serve.stubs().values()] if p}
    ports = {k: v for k, v in serve.ports.items() if k != "health"}
    at = time.monotonic()
    serve.process.kill()
    serve.process.wait()
    gone_at = free_at = None
    deadline = at + max(15.0, bound_s * 3)
    while time.monotonic() < deadline and (gone_at is None or free_at is None):
        now = time.monotonic()
        if gone_at is None and not any(same_alive(p, t) for p, t in procs.items()):
            gone_at = now
        if free_at is None and not any(port_listening(p) for p in ports.values()):
            free_at = now
        time.sleep(0.05)
    left = [p for p, t in procs.items() if same_alive(p, t)]
    listening = sorted(k for k, p in ports.items() if port_listening(p))
    regions, _ = serve.leftovers()
    serve.cleanup()  # whatever survived: we remove it, after counting
    out = {
        "triton_pid": triton,
        "stubs": len(procs) - 1,
        "processes_gone_after_s": _rounded(gone_at - at if gone_at else None),
        "ports_free_after_s": _rounded(free_at - at if free_at else None),
        "processes_left": len(left),
        "ports_still_listening": listening,
        "shm_regions_left": len(regions),  # the next start removes them (stale regions)
    }
    out["survived"] = bool(
        gone_at is not None
        and free_at is not None
        and gone_at - at < bound_s
        and free_at - at < bound_s
    )
    return out


def web_during_restart(
    serve: ServeProcess, examples: Sequence, instance: str = "text_encoder_0_0"
) -> dict:
    """The web page (real HTTP through its API) while `mmtriton serve` heals a SIGKILLed stub:
    friendly errors during the gap, answers again by itself once the server is back."""
    from gradio_client import Client

    from mmtriton.server.process import free_port
    from mmtriton_client.web.app import WebSettings, launch

    ex = next(e for e in examples if e.text)
    settings = WebSettings(triton_url=serve.grpc_url, n_examples=0)
    page = launch(host="127.0.0.1", port=free_port(), block=False, settings=settings)
    answers: list[tuple[float, float, str]] = []  # (sent, answered, label or error kind)
    stop = threading.Event()
    marks: dict = {}
    api = Client(page.url, verbose=False)

    def ask():
        while not stop.is_set():
            sent = time.monotonic()
            try:
                got = api.predict(None, ex.text, None, api_name="/predict")
                kind = (got.get("error") or {}).get("kind") or f"label {got.get('label')}"
            except Exception as exc:  # the page itself failed: never expected
                kind = f"page error: {type(exc).__name__}"
            answers.append((sent, time.monotonic(), kind))
            stop.wait(0.25)

    try:
        with ReadinessWatch(serve) as watch:
            asker = threading.Thread(target=ask, name="web-asker", daemon=True)
            asker.start()
            time.sleep(1.5)
            marks["at"] = time.monotonic()
            os.kill(serve.stubs()[instance], signal.SIGKILL)
            down = watch.wait_for(False, marks["at"], 60)
            up = watch.wait_for(True, down, 60) if down else None
            deadline = time.monotonic() + 20
            # Until the page has answered correctly twice after the server was back.
            while time.monotonic() < deadline and up is not None:
                if sum(1 for s, _, k in answers if s > up and k.startswith("label")) >= 2:
                    break
                time.sleep(0.1)
            stop.set()
            asker.join(timeout=30)
    finally:
        api.close()
        page.stop()
    good = f"label {ex.label}"
    at = marks["at"]
    kinds: dict[str, int] = {}
    for _, _, kind in answers:
        kinds[kind] = kinds.get(kind, 0) + 1
    back = next((a for s, a, k in answers if up and s > up and k == good), None)
    out = {
        "killed": instance,
        "ready_false_during_gap": down is not None,
        "server_healed_after_s": _rounded(up - at if up else None),
        "page_back_after_server_s": _rounded(back - up if back and up else None),
        "page_answers": kinds,
        "page_failures": sum(n for k, n in kinds.items() if k.startswith("page error")),
        "answered_before_fault": sum(1 for s, _, k in answers if s < at and k == good),
    }
    out["survived"] = bool(
        out["page_back_after_server_s"] is not None
        and out["page_back_after_server_s"] < 10
        and out["page_failures"] == 0
        and out["answered_before_fault"] > 0
    )
    return out


def run_heal_faults(
    repository: Path, log_dir: Path, examples: Sequence, every_stub: bool = True
) -> dict:
    """Serve lineage A: every stub killed in turn, a stub SIGSTOPped, tritonserver SIGKILLed,
    the web page across a heal, then SIGTERM right after a stub death."""
    lineage = Lineage(repository, log_dir)
    out: dict = {}
    try:
        if every_stub:
            out["stub_kill"] = kill_each_stub(lineage, examples)
        else:
            out["stub_kill"] = [
                guarded(
                    lambda: stub_fault(lineage.serve_for(1), examples, "image_encoder_0_0"),
                    label={"target": "image_encoder_0_0"},
                )
            ]
        out["stub_stop"] = guarded(
            lambda: stub_fault(lineage.serve_for(1), examples, "image_encoder_0_0", signal.SIGSTOP)
        )
        out["triton_kill"] = guarded(
            lambda: stub_fault(lineage.serve_for(1), examples, "tritonserver")
        )
        out["web_during_restart"] = guarded(
            lambda: web_during_restart(lineage.serve_for(1), examples)
        )
        out["stop_after_stub_death"] = guarded(
            lambda: stop_after_stub_death(lineage.serve_for(1), examples)
        )
        out["servers_started"] = lineage.started
    finally:
        lineage.close()
    return out


FAULT_NAMES = (
    "stub_kill",
    "stub_stop",
    "triton_kill",
    "web_during_restart",
    "stop_after_stub_death",
    "stop_under_load",
    "launcher_sigkill",
    "prometheus_down",
    "idle_connections",
    "client_disconnects",
    "client_deadlines",
)


def fault_results(faults: dict) -> list[tuple[str, bool]]:
    """(name, survived) per fault that ran; one entry per stub for the stub kills."""
    out = []
    for name in FAULT_NAMES:
        value = faults.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            label = f"{name}:{item['target']}" if "target" in item and name == "stub_kill" else name
            out.append((label, bool(item["survived"])))
    return out
