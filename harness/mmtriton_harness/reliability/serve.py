"""The product under test: `mmtriton serve` (supervisor + tritonserver) as a child process.

Faults that need healing run against this, not against a bare tritonserver: what is measured
is what ships. ``ServeProcess`` starts it on free ports, waits for the health port's /ready,
reads /status, finds tritonserver and its stubs in /proc, remembers the shared-memory regions
the server maps (to tell its leftovers from other servers' on a shared machine), and stops it
with SIGTERM, timing the stop and keeping the exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mmtriton.server.process import free_port, mapped_regions, server_environment
from mmtriton.server.procs import children, read_proc, stub_instances

TRITON_COMM = "tritonserver"
LINGER_WAIT_S = 10.0
# The launcher's last words on a stop (mmtriton.server.launcher.stop_supervised).
TRITON_EXIT = re.compile(
    r"tritonserver exited with code (\S+)|did not exit cleanly \(code (\S+?)\)"
)


@dataclass(frozen=True)
class StopResult:
    """How a SIGTERM (or SIGINT) stop of `mmtriton serve` went."""

    exit_code: int | None  # None: did not exit within the bound (then SIGKILLed)
    seconds: float
    # What the launcher said of tritonserver's own exit: "0" (drained and exited), another
    # code ("killed": after a fault the supervisor kills it on purpose), None: it said nothing.
    triton_exit: str | None
    shm_regions_left: int  # regions this server mapped that still exist after it exited
    processes_left: int  # tritonserver or stubs of this server still alive after it exited
    left: tuple[str, ...] = ()  # what they were (region paths, "pid comm state")
    # Seconds until the processes left went away by themselves (None: not within
    # LINGER_WAIT_S, then killed by the harness; 0: none was left).
    processes_gone_after_s: float | None = 0.0

    def clean(self, bound_s: float) -> bool:
        """Exit 0 within `bound_s`, nothing left behind."""
        return (
            self.exit_code == 0
            and self.seconds < bound_s
            and not self.shm_regions_left
            and not self.processes_left
        )


def http_get(url: str, timeout: float = 1.0) -> tuple[int, dict]:
    """(status code, JSON body) of a GET; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on `port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    proc = read_proc(pid)
    return proc is not None and proc.state != "Z"


def describe(pid: int) -> str:
    """What a process left behind is: pid, name (a stub's instance), state, parent, age."""
    proc = read_proc(pid)
    if proc is None:
        return f"{pid} gone"
    stub = proc.comm.startswith("triton_python") and len(proc.cmdline) > 8
    name = proc.cmdline[8] if stub else proc.comm
    ticks = start_time(pid)
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    age = f"{uptime - ticks / _TICKS:.1f} s old" if ticks is not None else "age ?"
    return f"{pid} {name} {proc.state} ppid {proc.ppid} {age}"


_TICKS = os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, names one process for good
    (a pid alone is reused by the next process on a busy machine)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def same_alive(pid: int, started: int | None) -> bool:
    """`pid` is still the process that started at `started`, and not a zombie."""
    return started is not None and alive(pid) and start_time(pid) == started


@dataclass
class ServeProcess:
    """`python -m mmtriton.cli serve` on free loopback ports."""

    repository: Path
    log_dir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # Every tritonserver and stub seen ({pid: start time}) and shm region (restarts add).
    triton_pids: dict[int, int | None] = field(default_factory=dict)
    stub_pids: dict[int, int | None] = field(default_factory=dict)
    regions: set[Path] = field(default_factory=set)
    _stop_tracking: threading.Event = field(default_factory=threading.Event)
    _tracker: threading.Thread | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "http": self.http_port,
            "grpc": self.grpc_port,
            "metrics": self.metrics_port,
            "health": self.health_port,
        }

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"serve-{self.grpc_port}.log"

    @property
    def console_path(self) -> Path:
        return self.log_dir / f"serve-{self.grpc_port}.console"

    def command(self) -> list[str]:
        """The command line: the product's own entry point, every port given."""
        return [
            sys.executable,
            "-m",
            "mmtriton.cli",
            "serve",
            "--repository",
            str(self.repository),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--log",
            str(self.log_path),
        ]

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout_s: float = 240.0) -> ServeProcess:
        """Start it and wait until the health port says ready."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        console = self.console_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            env=server_environment(),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals only, never a terminal's Ctrl-C
        )
        console.close()
        self._tracker = threading.Thread(target=self._track, name="serve-tracker", daemon=True)
        self._tracker.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill_all()
            raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Block until /ready answers 200; seconds waited. Raises if the launcher exits."""
        start = time.monotonic()
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"mmtriton serve exited with {self.process.returncode}:\n{self.console_tail()}"
                )
            if self.ready():
                self.track_now()
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(
                    f"mmtriton serve not ready after {timeout_s:.0f} s: {self.status()}\n"
                    f"{self.console_tail()}"
                )
            time.sleep(0.1)

    def console_tail(self, lines: int = 30) -> str:
        """The end of what `mmtriton serve` printed."""
        try:
            text = self.console_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ready(self) -> bool:
        """GET /ready on the health port answers 200."""
        return http_get(f"{self.health_url}/ready", timeout=1.0)[0] == 200

    def live(self) -> bool:
        """GET /live on the health port answers 200."""
        return http_get(f"{self.health_url}/live", timeout=1.0)[0] == 200

    def status(self) -> dict:
        """GET /status ({} when the health port does not answer)."""
        return http_get(f"{self.health_url}/status", timeout=2.0)[1]

    def triton_pid(self) -> int | None:
        """The live tritonserver child of the launcher, if any."""
        if self.process is None:
            return None
        for proc in children(self.process.pid):
            if proc.comm == TRITON_COMM and proc.state != "Z":
                return proc.pid
        return None

    def stubs(self) -> dict[str, int]:
        """{instance: pid} of the current tritonserver's Python-backend stubs."""
        pid = self.triton_pid()
        return stub_instances(pid) if pid else {}

    def track_now(self) -> None:
        """Remember the current tritonserver, its stubs and the regions they map."""
        pid = self.triton_pid()
        if pid is None:
            return
        self.triton_pids.setdefault(pid, start_time(pid))
        self.regions |= mapped_regions(pid)
        for stub in stub_instances(pid).values():
            self.stub_pids.setdefault(stub, start_time(stub))
            self.regions |= mapped_regions(stub)

    def _track(self) -> None:
        while not self._stop_tracking.wait(0.5):
            if self.process is None or self.process.poll() is not None:
                return
            self.track_now()

    def leftovers(self) -> tuple[list[Path], list[int]]:
        """(regions, pids) of this server that still exist."""
        regions = sorted(r for r in self.regions if r.exists())
        return regions, self.alive_pids()

    def alive_pids(self) -> list[int]:
        """The tritonservers and stubs of this server still running (never a reused pid)."""
        seen = {**self.triton_pids, **self.stub_pids}
        return sorted(p for p, started in seen.items() if same_alive(p, started))

    def stop(self, sig: int = signal.SIGTERM, bound_s: float = 60.0) -> StopResult:
        """Send `sig` to the launcher and time its exit; SIGKILL everything after `bound_s`.

        Leftover regions are counted, then removed (so one run cannot fill /dev/shm).
        """
        assert self.process is not None
        self.track_now()
        start = time.monotonic()
        code: int | None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=bound_s)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - start
        if code is None:
            self.kill_all()
        time.sleep(0.2)  # let children the launcher killed disappear from /proc
        regions, pids = self.leftovers()
        left = tuple(str(r) for r in regions) + tuple(describe(p) for p in pids)
        # Orphans may still go away by themselves (a stub notices its parent is gone): how long?
        linger = time.monotonic()
        while self.alive_pids() and time.monotonic() - linger < LINGER_WAIT_S:
            time.sleep(0.1)
        lingered = None if self.alive_pids() else round(time.monotonic() - linger, 2)
        self.cleanup()
        return StopResult(
            code,
            round(seconds, 2),
            self.triton_exit(),
            len(regions),
            len(pids),
            left,
            lingered if pids else 0.0,
        )

    def triton_exit(self) -> str | None:
        """tritonserver's exit code as the launcher printed it at its last stop."""
        found = TRITON_EXIT.findall(self.console_tail(200))
        return found[-1][0] or found[-1][1] if found else None

    def kill_all(self) -> None:
        """SIGKILL the launcher, every tritonserver and stub of it, remove its regions."""
        self._stop_tracking.set()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.cleanup()

    def cleanup(self) -> None:
        """Kill what is left of this server and remove its shared-memory regions."""
        self._stop_tracking.set()
        for pid in self.alive_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for region in self.regions:
            region.unlink(missing_ok=True)


def start_serve(repository: Path, log_dir: Path, timeout_s: float = 240.0) -> ServeProcess:
    """A ready `mmtriton serve` on free ports."""
    return ServeProcess(Path(repository), Path(log_dir)).start(timeout_s)
