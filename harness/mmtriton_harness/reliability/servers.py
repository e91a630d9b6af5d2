"""Bare tritonservers for the scenarios that measure Triton and the shipped configs (hostile
inputs, overload, soak, security). Faults that need healing run against `mmtriton serve`
instead (serve.py): nothing here watches or restarts anything."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mmtriton.paths import model_repository_dir
from mmtriton.server.process import TritonProcess, http_ok, start_on_free_ports


def start_server(log_dir: Path, **overrides) -> TritonProcess:
    """A tritonserver on free loopback ports (or the ports given), started and ready."""
    repository = overrides.pop("repository", model_repository_dir())
    return start_on_free_ports(repository, log_dir, **overrides)


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


def is_ready(server: TritonProcess) -> bool:
    """GET /v2/health/ready answers 200."""
    return http_ok(f"{server.http_url}/v2/health/ready", timeout=1.0)
