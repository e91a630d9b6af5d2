"""One container instance as a process tree: start, signal, stop, find its processes.

There is no PID namespace here, so "the container" is the process the runtime started (its
PID 1) and everything that descends from it or carries its marker variable: a process that
daemonizes or starts its own session (tritonserver under `mmtriton serve`) still belongs to
the container and dies with it, as it would when the container's cgroup is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "REHEARSAL_CONTAINER_ID"
# The runtime's exit code when the command cannot be started (runc: "executable not found").
START_ERROR_EXIT = 128


class StartError(Exception):
    """The runtime could not exec the container's command (the kubelet's StartError)."""


def _ppid_and_env(pid: int) -> tuple[int, bytes] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # a zombie is already dead
    return int(fields[1]), environ


def resolve_executable(argv0: str, env: Mapping[str, str]) -> str:
    """argv[0] looked up on the container's PATH, as the runtime does."""
    if "/" in argv0:
        if os.access(argv0, os.X_OK):
            return argv0
        raise StartError(f'exec: "{argv0}": no such file or directory')
    found = shutil.which(argv0, path=env.get("PATH", ""))
    if found is None:
        raise StartError(f'exec: "{argv0}": executable file not found in $PATH')
    return found


@dataclass
class ContainerProcess:
    """A started container instance."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_dir: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    stdout_path: Path | None = None
    stderr_path: Path | None = None

    def start(self, attempt: int = 0) -> int:
        """Exec the command; returns the container's PID 1. Raises StartError."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{self.name}.{attempt}.out"
        self.stderr_path = self.log_dir / f"{self.name}.{attempt}.err"
        exe = resolve_executable(self.argv[0], self.env)
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.popen = subprocess.Popen(
                [exe, *self.argv[1:]],
                env={**self.env, MARKER: self.marker},
                cwd=self.cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, like a container's PID 1
            )
        self.started_at = time.monotonic()
        return self.popen.pid

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def exit_code(self) -> int | None:
        """The exit code (negative signal number as 128+n), or None while running."""
        if self.popen is None:
            return None
        code = self.popen.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> set[int]:
        """Every live process of this container: PID 1's descendants and marked processes."""
        if self.popen is None:
            return set()
        table: dict[int, int] = {}
        marked: set[int] = set()
        needle = f"{MARKER}={self.marker}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            info = _ppid_and_env(int(entry))
            if info is None:
                continue
            table[int(entry)] = info[0]
            if needle in info[1].split(b"\0"):
                marked.add(int(entry))
        tree = {self.popen.pid} if self.popen.pid in table else set()
        grew = True
        while grew:
            grew = False
            for pid, ppid in table.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return tree | marked

    def shm_regions(self) -> set[str]:
        """Files under /dev/shm that the container's processes have mapped right now."""
        regions: set[str] = set()
        for pid in self.pids():
            try:
                maps = Path(f"/proc/{pid}/maps").read_text()
            except OSError:
                continue
            regions |= set(re.findall(r"(/dev/shm/\S+)", maps))
        return regions

    def signal_main(self, sig: int) -> None:
        """Send a signal to PID 1 only (the runtime's stop signal goes there)."""
        if self.running():
            os.kill(self.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL every process of the container (the cgroup kill), then reap PID 1."""
        for _ in range(20):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for PID 1 to exit; its exit code or None."""
        if self.popen is None:
            return None
        try:
            self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code()

    def last_stderr_line(self) -> str:
        """The last non-empty line the container wrote to stderr (stdout if stderr is empty)."""
        for path in (self.stderr_path, self.stdout_path):
            if path is not None and path.exists():
                lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
                if lines:
                    return lines[-1].strip()
        return ""

    def stderr_text(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")
