"""What /proc says about a tritonserver and its Python-backend stub processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"
# The stub's command line: binary, model.py, shm region, sizes, parent pid, backend dir, ...,
# then the instance name (e.g. "image_encoder_0_0") at this position.
_INSTANCE_ARG = 8


@dataclass(frozen=True)
class Proc:
    """One process as read from /proc/<pid>/stat and cmdline."""

    pid: int
    ppid: int
    state: str  # R, S, D, Z (zombie), ...
    comm: str
    cmdline: tuple[str, ...]
    pgrp: int = 0  # process group


def read_proc(pid: int) -> Proc | None:
    """The process `pid`, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    args = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    return Proc(pid, int(fields[1]), fields[0], comm, args, int(fields[2]))


def children(pid: int) -> list[Proc]:
    """Direct children of `pid` (zombies included)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None and proc.ppid == pid:
                out.append(proc)
    return out


def group_stubs(pgid: int) -> list[Proc]:
    """Live Python-backend stubs in process group `pgid`, whoever their parent is now (a stub
    whose tritonserver died is reparented, yet stays in the server's group)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if (
                proc is not None
                and proc.pgrp == pgid
                and proc.state != "Z"
                and proc.cmdline
                and proc.cmdline[0].endswith(STUB_BINARY)
            ):
                out.append(proc)
    return out


def stub_instances(server_pid: int) -> dict[str, int]:
    """{instance name: pid} of the server's live Python-backend stubs."""
    stubs = {}
    for proc in children(server_pid):
        if proc.state != "Z" and proc.cmdline and proc.cmdline[0].endswith(STUB_BINARY):
            name = proc.cmdline[_INSTANCE_ARG] if len(proc.cmdline) > _INSTANCE_ARG else ""
            stubs[name or str(proc.pid)] = proc.pid
    return stubs


def stub_problems(server_pid: int, known: dict[str, int]) -> dict[str, str]:
    """{instance: "dead" | "stopped"} for the stubs of `known` that cannot answer.

    A stub stopped by SIGSTOP (state T) never answers: the instance's requests hang instead of
    failing, so it is as broken as a dead one, only quieter.
    """
    problems = {}
    for name, pid in known.items():
        proc = read_proc(pid)
        if proc is None or proc.state == "Z" or proc.ppid != server_pid:
            problems[name] = "dead"
        elif proc.state in ("T", "t"):
            problems[name] = "stopped"
    return problems


def dead_stubs(server_pid: int, known: dict[str, int]) -> list[str]:
    """Instances of `known` whose stub has exited or is a zombie.

    Triton 2.51's Python backend does not restart a stub that died: the instance then fails
    every request ("Stub process '<name>' is not healthy") while /v2/health/ready stays 200.
    """
    dead = []
    for name, pid in known.items():
        proc = read_proc(pid)
        if proc is None or proc.state == "Z" or proc.ppid != server_pid:
            dead.append(name)
    return dead


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(server_pid: int) -> int:
    """RSS of tritonserver plus its stub children."""
    return rss_bytes(server_pid) + sum(rss_bytes(p.pid) for p in children(server_pid))
