"""A tritonserver child process: start, wait for readiness, graceful stop, clean-up."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .drain import DRAIN_FILE_ENV
from .drain import drain as drain_pipeline
from .flags import EXIT_TIMEOUT_S, ServerSettings, triton_args
from .install import backend_directory, install_stub, tritonserver_binary
from .procs import group_stubs

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def server_environment() -> dict[str, str]:
    """The environment for tritonserver: this venv's python3 first on PATH.

    The Python-backend stub ignores PYTHONPATH and imports packages through `python3` on PATH.
    """
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def shm_regions() -> set[Path]:
    """The Python backend's shared-memory regions that exist now."""
    return set(SHM_DIR.glob(SHM_PREFIX + "*")) if SHM_DIR.exists() else set()


def mapped_regions(pid: int) -> set[Path]:
    """The Python-backend regions process `pid` has mapped (its own, not other servers')."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {Path(m) for m in re.findall(rf"(/dev/shm/{SHM_PREFIX}\S+)", maps)}


def mapped_anywhere() -> set[Path]:
    """Python-backend regions mapped by any live process on this machine."""
    mapped: set[Path] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            mapped |= mapped_regions(int(entry.name))
    return mapped


def remove_stale_regions(min_age_s: float = 5.0) -> list[Path]:
    """Remove regions no live process maps: left by a server that was SIGKILLed.

    Regions younger than `min_age_s` are spared: a server starting right now may have created
    one an instant before mapping it.
    """
    now = time.time()
    candidates = []
    for region in shm_regions():
        try:
            if now - region.stat().st_mtime >= min_age_s:
                candidates.append(region)
        except OSError:
            continue
    if not candidates:
        return []
    in_use = mapped_anywhere()
    removed = [r for r in candidates if r not in in_use]
    for region in removed:
        region.unlink(missing_ok=True)
    return removed


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent thread dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def tied_to_this_process() -> Callable[[], None] | None:
    """A preexec_fn that ties a child's life to this process, or None where it would not.

    The kernel sends the signal when the *thread* that forked the child exits, so it is only
    safe from the main thread (which lives as long as the process): a child started from a
    worker thread would be killed when that thread ends.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    return _die_with_parent


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class TritonProcess:
    """One tritonserver process started with the project's flags."""

    settings: ServerSettings
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    _shm_before: set[Path] = field(default_factory=set)
    # Regions seen mapped by this server: on a shared machine other servers' regions come and
    # go in /dev/shm too, and must be neither reported nor removed.
    _shm_owned: set[Path] = field(default_factory=set)
    # While this file exists the first step refuses new requests (see drain.py).
    drain_file: Path | None = None
    # Regions the server itself left behind at exit (before our clean-up removed them).
    leaked_at_exit: set[Path] = field(default_factory=set)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The full command line."""
        return [str(tritonserver_binary()), *triton_args(self.settings)]

    def start(self) -> None:
        """Start the server (does not wait for readiness)."""
        install_stub()
        if self.settings.backend_directory is None:
            self.settings = ServerSettings(
                **{**self.settings.__dict__, "backend_directory": str(backend_directory())}
            )
        self._shm_before = shm_regions()
        self._shm_owned = set()
        # A deployment names the flag file (the preStop hook's `mmtriton drain` raises the same
        # one); otherwise each server gets its own, so servers on one machine never share it.
        configured = os.environ.get(DRAIN_FILE_ENV)
        self.drain_file = (
            Path(configured)
            if configured
            else Path(tempfile.gettempdir()) / f"mmtriton-drain-{uuid.uuid4().hex}"
        )
        self.drain_file.unlink(missing_ok=True)  # a new server serves until told otherwise
        out = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            self.command(),
            env={**server_environment(), DRAIN_FILE_ENV: str(self.drain_file)},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            # Ctrl-C in a terminal reaches us, and we forward it as a drain; and the server
            # must not outlive us holding the ports (SIGKILL of the launcher).
            start_new_session=True,
            preexec_fn=tied_to_this_process(),
        )

    def wait_ready(self, timeout: float = 180.0, tick: Callable[[], None] | None = None) -> None:
        """Block until /v2/health/ready answers 200; raise with the log's tail if it dies.

        `tick` is called on every poll (the supervisor's heartbeat while it waits).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {self.process.returncode} before it was "
                    f"ready.\n{self.log_tail()}"
                )
            if http_ok(f"{self.http_url}/v2/health/ready"):
                self._shm_owned |= mapped_regions(self.process.pid) if self.process else set()
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s.\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(
        self,
        grace: float = EXIT_TIMEOUT_S + 5,
        drain: bool = True,
        drain_timeout_s: float = EXIT_TIMEOUT_S,
    ) -> int | None:
        """Drain (see drain.py; serving new requests up to `drain_timeout_s`), SIGTERM, and
        SIGKILL after `grace` seconds.

        Removes the shared-memory regions this server left behind. Returns the exit code.
        """
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._shm_owned |= mapped_regions(proc.pid)
            if drain:
                drain_pipeline(self.metrics_url, drain_timeout_s, self.drain_file)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait()
        self._kill_group()  # stubs that outlived their server
        self._clean_up()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the server and its stubs (its process group) at once, then clean up.

        For a server that cannot stop gracefully: after a stub died, Triton's ensemble counts
        the failed requests as in flight forever and a SIGTERM waits out every timeout.
        """
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._shm_owned |= mapped_regions(proc.pid)
        # Always the whole group: a tritonserver that crashed by itself leaves its stubs alive.
        self._kill_group()
        proc.wait()
        self._clean_up()
        return proc.returncode

    def _kill_group(self) -> None:
        """SIGKILL the server's process group while it runs, and then any stub left in it.

        Once tritonserver is gone its pid may be reused, so stragglers are killed one by one,
        each checked to be a Python-backend stub of this server's group.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return
        for stub in group_stubs(self.process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stub.pid, signal.SIGKILL)

    def _clean_up(self) -> None:
        owned = self._shm_owned or shm_regions() - self._shm_before  # never ready: best guess
        self.leaked_at_exit = {r for r in owned if r.exists()}
        if self.drain_file is not None:
            self.drain_file.unlink(missing_ok=True)
        for region in self.leaked_at_exit:
            region.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ready(settings: ServerSettings, log_dir: Path, timeout_s: float = 180) -> TritonProcess:
    """Start a tritonserver with these settings and wait until ready (stopped on failure)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    server = TritonProcess(settings, log_path=log_dir / f"triton-{settings.grpc_port}.log")
    server.start()
    try:
        server.wait_ready(timeout=timeout_s)
    except Exception:
        server.stop(drain=False, grace=5)
        raise
    return server


def start_on_free_ports(
    repository: str | Path, log_dir: Path, timeout_s: float = 180, **overrides
) -> TritonProcess:
    """A ready tritonserver on free ports (tests, benchmark, reliability runs)."""
    settings = ServerSettings(
        model_repository=str(repository),
        http_port=overrides.pop("http_port", None) or free_port(),
        grpc_port=overrides.pop("grpc_port", None) or free_port(),
        metrics_port=overrides.pop("metrics_port", None) or free_port(),
        **overrides,
    )
    return launch_ready(settings, log_dir, timeout_s)
