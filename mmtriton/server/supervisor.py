"""Keeps one tritonserver able to answer: detects a dead or hung step and heals it.

Triton 2.51 neither restarts a Python-backend stub that died (OOM killer, native crash) nor
reports itself unready: every request then fails INTERNAL "Stub process ... is not healthy"
while `/v2/health/ready` stays 200. A stub stopped by SIGSTOP is worse: requests hang. So the
supervisor watches for itself:

- every `poll_s`, each stub's process in /proc (gone, zombie or stopped) and tritonserver's;
- every `probe_interval_s`, one tiny request through the whole ensemble (probe.py) with a
  deadline, which catches a step that is alive but does not answer.

On a fault it turns not-ready at once (health.py), then heals by restarting tritonserver on the
same ports. Reloading the model in place is not safe on this Triton: model control is off
(`--model-control-mode=none`, clients may not load models), and after a step fails beside
running siblings the ensemble counts those requests in flight forever, which also makes a
graceful stop wait out every timeout; so the broken server is killed outright. Requests in
flight get UNAVAILABLE (retryable: inference is idempotent), and the client library retries
them and the "not healthy" failures until the server is back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .flags import ServerSettings
from .health import (
    FAILED,
    HEALING,
    SERVING,
    STARTING,
    STOPPING,
    UNHEALTHY,
    HealthServer,
    HealthState,
)
from .probe import PipelineProbe
from .process import TritonProcess, remove_stale_regions
from .procs import children, stub_instances, stub_problems


@dataclass(frozen=True)
class SupervisorPolicy:
    """How often to look, how long to wait, when to give up."""

    poll_s: float = 0.25
    probe_interval_s: float = 2.0
    # Far longer than the first step's queue timeout (0.5 s) and admission's refusals (at
    # once), so overload answers UNAVAILABLE in time instead of looking like a hang.
    probe_timeout_s: float = 6.0
    # One failed probe turns the server unready; this many in a row restart it.
    probe_failures_to_heal: int = 2
    start_timeout_s: float = 180.0
    restart_attempts: int = 3
    # Heals are immediate up to this many within the window; beyond, each waits twice as long
    # as the last (up to max_backoff_s), as a kubelet would. Giving up would not help: a
    # server that comes back ready is worth keeping (Triton 2.51 segfaults now and then when
    # clients disconnect mid-request, which no restart of the container fixes either). Only a
    # server that cannot come back makes the supervisor give up (exit 1, liveness fails).
    heals_before_backoff: int = 5
    heal_window_s: float = 60.0
    max_backoff_s: float = 30.0
    # A requested stop: drain for at most this long, then SIGTERM, SIGKILL after the grace.
    # With the drain flag's own 5 s and a probe in progress (6 s): below 30 s in all.
    stop_drain_s: float = 5.0
    stop_grace_s: float = 12.0


class StopRequested(Exception):
    """Raised inside a wait when a stop was asked for meanwhile."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def reap_orphans(keep: set[int]) -> None:
    """Collect exited children we did not start ourselves.

    As PID 1 in a container the supervisor inherits every orphan: stubs of a killed server
    are reparented to it and would stay zombies.
    """
    for child in children(os.getpid()):
        if child.state == "Z" and child.pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, os.WNOHANG)


class Supervisor:
    """Runs tritonserver with `settings` and keeps it healthy until `stop` is set."""

    def __init__(
        self,
        settings: ServerSettings,
        log_path: Path | None,
        health: HealthState | None = None,
        policy: SupervisorPolicy | None = None,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
        health_server: HealthServer | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings, self.log_path = settings, log_path
        self.health_server = health_server  # stopped by whoever started it
        self.health = health or HealthState()
        self.policy = policy or SupervisorPolicy()
        self.say = say
        self.server: TritonProcess | None = None
        self._known: dict[str, int] = {}
        self._probe = PipelineProbe(
            f"127.0.0.1:{settings.grpc_port}",
            ssl=bool(settings.tls_cert),
            root_certificates=settings.tls_root_cert,
        )
        self._probe_failures = 0
        self._next_probe = 0.0
        self._heal_times: list[float] = []
        # Set by SIGTERM/Ctrl-C (launcher.stop_on_signals): ends the loop and any wait.
        self.stop_event = stop_event or threading.Event()

    def _tick(self) -> None:
        """Heartbeat while waiting; aborts the wait once a stop was asked for."""
        self.health.beat()
        if self.stop_event.is_set():
            raise StopRequested

    # ------------------------------------------------------------------ start and stop
    def start(self) -> TritonProcess:
        """Start tritonserver and wait until it and every stub can answer."""
        removed = remove_stale_regions()
        if removed:
            self.say(f"removed {len(removed)} shared-memory regions left by a killed server")
        self.health.set(STARTING, "starting tritonserver")
        self.server = TritonProcess(dataclasses.replace(self.settings), log_path=self.log_path)
        self.server.start()
        try:
            self.server.wait_ready(timeout=self.policy.start_timeout_s, tick=self._tick)
        except BaseException:
            self.server.kill()
            raise
        self._watch(self.server)
        return self.server

    def _watch(self, server: TritonProcess) -> None:
        assert server.process is not None
        self._known = stub_instances(server.process.pid)
        self._probe.close()
        self._probe_failures = 0
        self._next_probe = time.monotonic() + self.policy.probe_interval_s
        self.health.update(stubs=dict(self._known), triton_pid=server.process.pid)
        self.health.set(SERVING, "")

    def stop(self) -> int | None:
        """Bounded stop: drain if healthy (else kill at once); returns tritonserver's code."""
        server = self.server
        if server is None:
            return None
        healthy = self.health.state == SERVING
        self.health.set(STOPPING, "stopping")
        self._probe.close()
        if not healthy:
            return server.kill()
        return server.stop(
            grace=self.policy.stop_grace_s,
            drain=True,
            drain_timeout_s=self.policy.stop_drain_s,
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> bool:
        """Watch and heal until `stop_event` is set; False when healing gave up."""
        while not self.stop_event.wait(self.policy.poll_s):
            self.health.beat()
            fault = self.check()
            if fault and not self.stop_event.is_set() and not self.heal(fault):
                return False
        return True

    def check(self) -> str | None:
        """The reason the server cannot answer now, or None when it can."""
        server = self.server
        assert server is not None and server.process is not None
        reap_orphans({server.process.pid})
        code = server.process.poll()
        if code is not None:
            return f"tritonserver exited with code {code}"
        problems = stub_problems(server.process.pid, self._known)
        if problems:
            return "; ".join(f"stub {name} is {what}" for name, what in sorted(problems.items()))
        now = time.monotonic()
        if now < self._next_probe:
            return None
        result = self._probe.run(self.policy.probe_timeout_s)
        self._next_probe = time.monotonic() + self.policy.probe_interval_s
        self.health.update(
            last_probe={
                "ok": result.ok,
                "latency_ms": round(result.latency_s * 1000, 1),
                "reason": result.reason,
                "at": _now_iso(),
            }
        )
        if result.ok:
            self._probe_failures = 0
            if self.health.state == UNHEALTHY:
                self.health.set(SERVING, "")
            return None
        self._probe_failures += 1
        reason = f"end-to-end probe failed: {result.reason}"
        if self._probe_failures >= self.policy.probe_failures_to_heal:
            return reason
        self.health.set(UNHEALTHY, reason)  # out of rotation now; heal if it persists
        return None

    # ------------------------------------------------------------------ healing
    def heal(self, reason: str) -> bool:
        """Restart tritonserver on the same ports; False when it could not be brought back."""
        detected = time.monotonic()
        self.health.set(HEALING, reason)
        self.say(f"unhealthy: {reason}; restarting tritonserver")
        old = self.server
        assert old is not None
        old.kill()  # at once: a graceful stop would wait for requests that will never finish
        backoff = self._backoff_s()
        if backoff:
            self.say(
                f"{len(self._heal_times)} heals within {self.policy.heal_window_s:.0f} s: "
                f"waiting {backoff:.0f} s before the restart"
            )
            if self.stop_event.wait(backoff):
                return True
        error = ""
        for attempt in range(1, self.policy.restart_attempts + 1):
            if self.stop_event.is_set():
                return True  # asked to stop meanwhile: nothing left to heal
            try:
                self.start()
            except StopRequested:
                return True
            except (RuntimeError, TimeoutError) as exc:
                error = str(exc).splitlines()[0]
                self.say(f"restart attempt {attempt} failed: {error}")
                self.stop_event.wait(2.0 * attempt)
                continue
            event = {
                "reason": reason,
                "detected_at": _now_iso(),
                "healed_in_s": round(time.monotonic() - detected, 2),
                "attempts": attempt,
                "shm_regions_left_by_broken_server": len(old.leaked_at_exit),
            }
            self.health.update(restarts=self.health.restarts + 1, heals=[*self.health.heals, event])
            self.say(f"healed in {event['healed_in_s']} s: tritonserver ready again")
            return True
        return self._give_up(f"tritonserver did not come back: {error}")

    def _backoff_s(self) -> float:
        """Seconds to wait before this heal's restart (0 unless heals come in a burst)."""
        now = time.monotonic()
        self._heal_times = [t for t in self._heal_times if now - t < self.policy.heal_window_s]
        self._heal_times.append(now)
        beyond = len(self._heal_times) - self.policy.heals_before_backoff
        return 0.0 if beyond <= 0 else min(2.0**beyond, self.policy.max_backoff_s)

    def _give_up(self, why: str) -> bool:
        self.health.set(FAILED, why)
        self.say(f"error: giving up healing: {why}")
        return False
