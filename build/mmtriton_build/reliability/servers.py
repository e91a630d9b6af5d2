"""Starting, killing and restarting real tritonservers for the scenarios, and a stub watchdog."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

from mmtriton.paths import model_repository_dir
from mmtriton.server.flags import ServerSettings
from mmtriton.server.process import (
    TritonProcess,
    http_ok,
    launch_ready,
    start_on_free_ports,
)
from mmtriton.server.procs import dead_stubs, stub_instances


def start_server(log_dir: Path, **overrides) -> TritonProcess:
    """A tritonserver on free loopback ports (or the ports given), started and ready."""
    repository = overrides.pop("repository", model_repository_dir())
    return start_on_free_ports(repository, log_dir, **overrides)


def launch(settings: ServerSettings, log_dir: Path, timeout_s: float = 180) -> TritonProcess:
    """Start a tritonserver with exactly these settings and wait until it is ready."""
    return launch_ready(settings, log_dir, timeout_s)


def kill_hard(server: TritonProcess) -> int:
    """SIGKILL the server and its stubs (its process group); returns the shm regions it left.

    The regions are removed afterwards (TritonProcess.stop on a dead process only cleans up).
    """
    proc = server.process
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    server.stop(drain=False)
    return len(server.leaked_at_exit)


def restart(server: TritonProcess, log_dir: Path) -> TritonProcess:
    """A new server with the same settings (ports, admin key, TLS) as `server`, ready."""
    return launch(dataclasses.replace(server.settings), log_dir)


def is_ready(server: TritonProcess) -> bool:
    """GET /v2/health/ready answers 200."""
    return http_ok(f"{server.http_url}/v2/health/ready", timeout=1.0)


class StubWatchdog:
    """Restarts the server when one of its Python-backend stubs dies.

    Triton 2.51 neither restarts a dead stub nor reports the server unready, so without this
    every request fails INTERNAL until someone restarts the server. A stub's death leaves
    ensemble requests counted in flight (a step failed beside running siblings), so a graceful
    stop would wait out both timeouts (measured: 60 s, exit 1); the watchdog SIGKILLs instead.
    """

    def __init__(self, server: TritonProcess, log_dir: Path, poll_s: float = 0.2) -> None:
        self.server, self.log_dir, self.poll_s = server, log_dir, poll_s
        self.events: list[dict] = []
        self.detected_at: list[float] = []  # appended before the restart begins
        self._known = stub_instances(server.process.pid)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="stub-watchdog", daemon=True)

    def __enter__(self) -> StubWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                dead = dead_stubs(self.server.process.pid, self._known)
                if dead:
                    self._restart(dead)

    def _restart(self, dead: list[str]) -> None:
        detected = time.monotonic()
        self.detected_at.append(detected)
        leaked = kill_hard(self.server)
        self.server = restart(self.server, self.log_dir)
        self._known = stub_instances(self.server.process.pid)
        self.events.append(
            {
                "dead": dead,
                "detected_at": detected,
                "ready_at": time.monotonic(),
                "shm_regions_left": leaked,
            }
        )
