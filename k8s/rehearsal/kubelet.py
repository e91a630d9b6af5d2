"""Running a planned pod the way the kubelet does.

Init containers run one at a time, each to exit 0; then the main containers start together.
Each main container gets one worker per declared probe. The startup probe gates the others;
readiness sets the container's (and so the pod's) Ready condition; a liveness or startup
probe that fails failureThreshold times in a row kills the container (preStop, SIGTERM, grace
period, SIGKILL) and restartPolicy Always starts it again after the crash-loop back-off
(0 s for the first restart, then 10 s doubling to 300 s, reset after 10 min of running).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .container import START_ERROR_EXIT, ContainerProcess, StartError
from .events import Events
from .plan import ContainerPlan, PodPlan
from .probes import ProbeSpec, ProbeState, Result, exec_command, grpc_health, http_get, tcp_socket

BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_AFTER_S = 600.0
# The kubelet never gives a container less than this after its preStop hook.
MIN_GRACE_S = 2.0


def run_check(
    spec: ProbeSpec | dict, plan: ContainerPlan, pod: PodPlan, timeout_s: float
) -> Result:
    """Run one probe or hook handler against the container, with its ports remapped."""
    h = spec.handler if isinstance(spec, ProbeSpec) else spec
    if "httpGet" in h:
        g = h["httpGet"]
        return http_get(pod.ports.host_port(g["port"]), g, timeout_s)
    if "tcpSocket" in h:
        return tcp_socket(pod.ports.host_port(h["tcpSocket"]["port"]), timeout_s)
    if "exec" in h:
        command = h["exec"]["command"]
        if isinstance(spec, ProbeSpec):
            command = plan.rewriter.many(command)
        return exec_command(command, plan.env, timeout_s)
    if "grpc" in h:
        g = h["grpc"]
        return grpc_health(pod.ports.host_port(g["port"]), g.get("service", ""), timeout_s)
    if "sleep" in h:
        time.sleep(float(h["sleep"]["seconds"]))
        return Result(True, f"slept {h['sleep']['seconds']} s")
    return Result(False, f"unsupported handler {sorted(h)}")


@dataclass
class Termination:
    """How one container instance ended."""

    reason: str  # Completed, Error, Killed (liveness/startup), PodStopped, StartError
    exit_code: int | None
    seconds: float
    pre_stop: str | None = None
    escalated_to_sigkill: bool = False


class ContainerRunner:
    """One main container: start, probe, restart; its Ready and Started flags."""

    def __init__(self, pod: PodRunner, plan: ContainerPlan) -> None:
        self.pod, self.plan = pod, plan
        self.where = f"{pod.plan.workload}/{plan.name}"
        self.restarts = 0
        self.ready = False
        self.started = False
        self.instance: ContainerProcess | None = None
        self.generation = 0
        self.kill_request: tuple[str, float] | None = None
        self.terminations: list[Termination] = []
        self.probe_log: list[dict] = []
        # generation -> /dev/shm files its processes mapped (checked for leaks at pod stop)
        self.shm_seen: dict[int, set[str]] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=self.where, daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the container's life ---------------------------------------------------------------
    def _loop(self) -> None:
        consecutive = 0
        while not self.pod.stopping.is_set():
            self.generation += 1
            gen = self.generation
            self.kill_request = None
            self.started = "startup" not in self.plan.probes
            inst = ContainerProcess(
                self.plan.name, self.plan.argv, self.plan.env, self.plan.cwd, self.pod.log_dir
            )
            try:
                pid = inst.start(self.restarts)
            except StartError as exc:
                self.pod.events(self.where, f"StartError: {exc}")
                self.terminations.append(Termination("StartError", START_ERROR_EXIT, 0.0))
                inst = None
            if inst is not None:
                self.instance = inst
                self.pod.events(
                    self.where,
                    f"started (pid {pid}, restart {self.restarts})",
                    argv=self.plan.argv if self.restarts == 0 else None,
                )
                if self.plan.post_start and not self._post_start(inst):
                    self.kill_request = ("FailedPostStartHook", self.pod.plan.grace_s)
                if self.started and "readiness" not in self.plan.probes:
                    self._set_ready(True, "started (no readiness probe)")
                for kind, spec in self.plan.probes.items():
                    threading.Thread(
                        target=self._probe_worker,
                        args=(kind, spec, gen),
                        daemon=True,
                        name=f"{self.where}:{kind}",
                    ).start()
                self._supervise(inst)
            # A terminating pod leaves the Service endpoints at once, before its hooks run.
            gone = "pod terminating" if self.pod.stopping.is_set() else "container not running"
            self._set_ready(False, gone)
            if self.pod.stopping.is_set() or self.pod.plan.restart_policy == "Never":
                return
            last = self.terminations[-1]
            if last.reason == "Completed" and self.pod.plan.restart_policy == "OnFailure":
                return
            ran = time.monotonic() - inst.started_at if inst is not None else 0.0
            consecutive = 0 if ran >= BACKOFF_RESET_AFTER_S else consecutive + 1
            delay = (
                0.0
                if consecutive <= 1
                else min(BACKOFF_INITIAL_S * 2 ** (consecutive - 2), BACKOFF_MAX_S)
            )
            if delay:
                self.pod.events(self.where, f"Back-off restarting failed container ({delay:g} s)")
            if self.pod.stopping.wait(delay):
                return
            self.restarts += 1
            self.pod.events(self.where, f"restarting (restartCount={self.restarts})")

    def _supervise(self, inst: ContainerProcess) -> None:
        next_sample = 0.0
        while True:
            if time.monotonic() >= next_sample:  # what this instance keeps in /dev/shm
                self.shm_seen.setdefault(self.generation, set()).update(inst.shm_regions())
                next_sample = time.monotonic() + 2.0
            code = inst.exit_code()
            if code is not None:
                reason = "Completed" if code == 0 else "Error"
                seconds = time.monotonic() - inst.started_at
                self.terminations.append(Termination(reason, code, seconds))
                self.pod.events(
                    self.where,
                    f"exited: {reason}, exit code {code}",
                    last_stderr=inst.last_stderr_line(),
                )
                inst.kill_all()  # leftovers die with the container
                return
            if self.kill_request is not None:
                reason, grace = self.kill_request
                self.pod.events(self.where, f"Killing: {reason} (grace period {grace:g} s)")
                self.terminations.append(self.stop(inst, grace, reason))
                return
            if self.pod.stopping.is_set():
                return  # the pod stops every container itself
            time.sleep(0.1)

    def _post_start(self, inst: ContainerProcess) -> bool:
        result = run_check(self.plan.post_start or {}, self.plan, self.pod.plan, 30.0)
        self.pod.events(self.where, f"postStart hook: {result.detail}")
        return result.ok

    def stop(self, inst: ContainerProcess, grace_s: float, reason: str) -> Termination:
        """The kubelet's killContainer: preStop within the grace period, then SIGTERM to PID 1,
        SIGKILL of every process when the rest of the grace period runs out."""
        t0 = time.monotonic()
        pre = None
        self.shm_seen.setdefault(self.generation, set()).update(inst.shm_regions())
        if self.plan.pre_stop and inst.running():
            self.pod.events(self.where, "running preStop hook")
            done = threading.Event()
            box: list[Result] = []

            def hook() -> None:
                box.append(run_check(self.plan.pre_stop or {}, self.plan, self.pod.plan, grace_s))
                done.set()

            threading.Thread(target=hook, daemon=True).start()
            pre = box[0].detail if done.wait(grace_s) else f"did not finish within {grace_s:g} s"
            self.pod.events(self.where, f"preStop hook: {pre}")
        left = max(grace_s - (time.monotonic() - t0), MIN_GRACE_S)
        escalated = False
        if inst.running():
            inst.signal_main(signal.SIGTERM)
            self.pod.events(self.where, f"SIGTERM sent to PID 1 (waiting up to {left:.0f} s)")
            if inst.wait(left) is None:
                escalated = True
                self.pod.events(self.where, "grace period over: SIGKILL")
        inst.kill_all()
        code = inst.exit_code()
        seconds = time.monotonic() - t0
        self.pod.events(self.where, f"terminated: exit code {code} after {seconds:.1f} s")
        return Termination(reason, code, round(seconds, 2), pre, escalated)

    # -- probes -----------------------------------------------------------------------------
    def _probe_worker(self, kind: str, spec: ProbeSpec, gen: int) -> None:
        state = ProbeState(spec)
        if self._sleep(spec.initial_delay_s, gen):
            return
        while True:
            began = time.monotonic()
            if kind != "startup" and not self.started:
                if self._sleep(spec.period_s, gen):
                    return
                continue
            result = run_check(spec, self.plan, self.pod.plan, spec.timeout_s)
            if gen != self.generation or self.kill_request is not None:
                return
            self.probe_log.append(
                {
                    "t": self.pod.events.now(),
                    "probe": kind,
                    "ok": result.ok,
                    "detail": result.detail,
                    "restart": self.restarts,
                }
            )
            transition = state.observe(result)
            if not result.ok:
                n, limit = state.failures, spec.failure_threshold
                count = f"{n}/{limit}" if n <= limit else f"{n} in a row"
                self.pod.events(self.where, f"{kind} probe failed ({count}): {result.detail}")
            if transition == "started":
                self.started = True
                self.pod.events(self.where, f"startup probe succeeded: {result.detail}")
                if "readiness" not in self.plan.probes:
                    self._set_ready(True, "started (no readiness probe)")
                return  # the startup probe's work is done for this instance
            elif transition in ("ready", "unready"):
                self._set_ready(transition == "ready", f"readiness probe: {result.detail}")
            elif transition == "kill":
                grace = spec.termination_grace_s
                grace = self.pod.plan.grace_s if grace is None else float(grace)
                self.kill_request = (f"{kind} probe failed {spec.failure_threshold} times", grace)
                return
            if self._sleep(spec.period_s - (time.monotonic() - began), gen):
                return

    def _sleep(self, seconds: float, gen: int) -> bool:
        """Sleep; True when this instance is gone or the pod stops (the worker then ends)."""
        deadline = time.monotonic() + max(seconds, 0)
        while time.monotonic() < deadline:
            if gen != self.generation or self.pod.stopping.is_set():
                return True
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        return gen != self.generation or self.pod.stopping.is_set()

    def _set_ready(self, ready: bool, why: str) -> None:
        with self.lock:
            if ready == self.ready:
                return
            self.ready = ready
        self.pod.events(self.where, f"Ready={ready}: {why}")
        self.pod.readiness_changed()


class PodRunner:
    """One pod: its init containers, its main containers, the Ready condition, and stop."""

    def __init__(self, plan: PodPlan, events: Events, log_dir) -> None:
        self.plan, self.events, self.log_dir = plan, events, log_dir
        self.where = f"pod/{plan.name}"
        self.stopping = threading.Event()
        self.containers: list[ContainerRunner] = []
        self.init_results: list[dict] = []
        self.stopped_at: dict | None = None
        self.shm_left: dict[str, list[str]] = {}
        self.ready_history: list[tuple[float, bool]] = []
        self.scheduled_at = time.monotonic()
        self._ready = False
        self._ready_event = threading.Condition()

    @property
    def ready(self) -> bool:
        return self._ready

    def readiness_changed(self) -> None:
        now = bool(self.containers) and all(c.ready for c in self.containers)
        with self._ready_event:
            if now != self._ready:
                self._ready = now
                self.ready_history.append((self.events.now(), now))
                self.events(self.where, f"pod condition Ready={now}")
            self._ready_event.notify_all()

    def wait_ready(self, value: bool, timeout_s: float) -> float | None:
        """Wait until the pod's Ready condition equals `value`; the time it took, or None."""
        t0 = time.monotonic()
        with self._ready_event:
            while self._ready != value:
                left = timeout_s - (time.monotonic() - t0)
                if left <= 0 or (value and self.failed()):
                    return None
                self._ready_event.wait(min(left, 0.5))
        return time.monotonic() - t0

    def failed(self) -> bool:
        return self.stopped_at is not None

    def run_init(self, timeout_s: float = 3600) -> bool:
        """Run the init containers in order; False (and stopped_at set) when one fails."""
        for plan in self.plan.init:
            where = f"{self.plan.workload}/init:{plan.name}"
            if plan.restart_policy == "Always":  # a native sidecar: runs beside the pod
                runner = ContainerRunner(self, plan)
                self.containers.append(runner)
                runner.start()
                self.events(where, "sidecar started")
                continue
            inst = ContainerProcess(plan.name, plan.argv, plan.env, plan.cwd, self.log_dir)
            t0 = time.monotonic()
            try:
                inst.start()
            except StartError as exc:
                return self._init_failed(plan, where, START_ERROR_EXIT, str(exc), 0.0)
            self.events(where, "init container started", argv=plan.argv)
            code = inst.wait(timeout_s)
            if code is None:
                inst.kill_all()
                code = inst.exit_code()
            inst.kill_all()
            seconds = round(time.monotonic() - t0, 2)
            if code != 0:
                return self._init_failed(
                    plan,
                    where,
                    code,
                    inst.last_stderr_line(),
                    seconds,
                    stderr=inst.stderr_text()[-4000:],
                )
            self.init_results.append(
                {
                    "name": plan.name,
                    "exit_code": 0,
                    "seconds": seconds,
                    "last_output": inst.last_stderr_line(),
                }
            )
            self.events(where, f"completed (exit 0, {seconds:.1f} s): {inst.last_stderr_line()}")
        return True

    def _init_failed(
        self,
        plan: ContainerPlan,
        where: str,
        code: int | None,
        message: str,
        seconds: float,
        stderr: str = "",
    ) -> bool:
        self.init_results.append(
            {"name": plan.name, "exit_code": code, "seconds": seconds, "last_stderr": message}
        )
        self.stopped_at = {
            "container": plan.name,
            "init": True,
            "exit_code": code,
            "message": message,
            "gpu_request": plan.gpu_request,
            "traceback": "Traceback (most recent call last)" in stderr,
        }
        self.events(where, f"failed (exit {code}, {seconds:.1f} s): {message}")
        self.events(self.where, f"stopped at init container {plan.name}: {message}")
        return False

    def start(self) -> bool:
        """Init containers, then the main containers. False when an init container failed."""
        self.scheduled_at = time.monotonic()
        self.events(self.where, f"scheduled ({self.plan.kind} {self.plan.workload})")
        if not self.run_init():
            return False
        for plan in self.plan.containers:
            runner = ContainerRunner(self, plan)
            self.containers.append(runner)
            runner.start()
        return True

    def container(self, name: str | None = None) -> ContainerRunner:
        main = [c for c in self.containers if c.plan in self.plan.containers]
        return next(c for c in main if name is None or c.plan.name == name)

    def wait_completed(self, timeout_s: float) -> int | None:
        """For a Job's pod: wait until its containers exit; the first non-zero exit code or 0."""
        deadline = time.monotonic() + timeout_s
        for c in self.containers:
            c.thread.join(max(deadline - time.monotonic(), 0))
        codes = [c.terminations[-1].exit_code for c in self.containers if c.terminations]
        if len(codes) != len(self.containers):
            return None
        return next((code for code in codes if code != 0), 0)

    def stop(self) -> list[dict]:
        """Delete the pod: every running container stops in parallel within the grace period."""
        self.events(self.where, f"stopping (terminationGracePeriodSeconds {self.plan.grace_s:g})")
        self.stopping.set()
        results: list[dict] = []
        threads = []
        for c in self.containers:
            if c.instance is None or not c.instance.running():
                continue

            def one(c: ContainerRunner = c) -> None:
                assert c.instance is not None
                t = c.stop(c.instance, self.plan.grace_s, "PodStopped")
                results.append({"container": c.plan.name, **t.__dict__})

            threads.append(threading.Thread(target=one, daemon=True))
            threads[-1].start()
        for t in threads:
            t.join(self.plan.grace_s + 15)
        for c in self.containers:
            c.thread.join(5)
            c._set_ready(False, "pod stopped")
        self.shm_left = self._shm_leftovers()
        return results

    def _shm_leftovers(self) -> dict[str, list[str]]:
        """/dev/shm files the containers mapped that still exist once they are gone: by the
        last instance (stopped gracefully) or by earlier ones (killed). They are removed then,
        as deleting the pod deletes its /dev/shm emptyDir (here the host's /dev/shm)."""
        last: set[str] = set()
        killed: set[str] = set()
        for c in self.containers:
            for gen, regions in c.shm_seen.items():
                (last if gen == c.generation else killed).update(regions)
        left = {
            "after_graceful_stop": sorted(r for r in last if Path(r).exists()),
            "from_killed_instances": sorted(r for r in killed - last if Path(r).exists()),
        }
        for group, regions in left.items():
            if regions:
                self.events(
                    self.where,
                    f"/dev/shm left {group.replace('_', ' ')}: "
                    f"{len(regions)} region(s); removed with the pod",
                )
            for r in regions:
                Path(r).unlink(missing_ok=True)
        return left


__all__ = ["ContainerRunner", "PodRunner", "Termination", "run_check"]
