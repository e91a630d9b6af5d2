"""`mmtriton serve` as shipped: a real tritonserver under the supervisor, faults made for real.

A dead or stopped Python-backend stub must turn the health endpoint's /ready to 503 within
5 s and be healed (ready, answering) within 30 s; a stop after a stub death is bounded and
exits 0 without leaving shared memory; SIGKILL of the launcher takes tritonserver with it.
Figures under load live in the reliability harness (`make reliability`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmtriton.server.process import free_port, mapped_regions
from mmtriton.server.procs import read_proc, stub_instances
from mmtriton_client import MultimodalClient, Sample

from ..conftest import require_repository

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECT_WITHIN_S = 5.0
HEAL_WITHIN_S = 30.0
STOP_WITHIN_S = 30.0


@dataclass
class Served:
    """One `mmtriton serve` process and its ports."""

    process: subprocess.Popen
    grpc_port: int
    health_port: int
    log: Path

    def status(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.health_port}/status"
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, json.loads(resp.read())

    def ready_code(self) -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/ready", timeout=2
            ) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return None

    def triton_pid(self) -> int:
        return int(self.status()[1]["triton_pid"])

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"mmtriton serve exited:\n{self.log_tail()}"
            if self.ready_code() == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def serve(tmp_path: Path) -> Served:
    """Start `mmtriton serve` on free ports, as a user would, and wait for /ready."""
    ports = {name: free_port() for name in ("http", "grpc", "metrics", "health")}
    log = tmp_path / "serve.log"
    cmd = [
        sys.executable,
        "-m",
        "mmtriton.cli",
        "serve",
        f"--repository={require_repository()}",
        *(f"--{name}-port={port}" for name, port in ports.items()),
        f"--log={tmp_path / 'triton.log'}",
    ]
    out = log.open("ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, ports["grpc"], ports["health"], log)
    served.wait_ready()
    return served


def shut(served: Served) -> None:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=STOP_WITHIN_S + 10)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    s = serve(tmp_path_factory.mktemp("serve"))
    yield s
    shut(s)


def _stub(served: Served, model: str) -> int:
    stubs = stub_instances(served.triton_pid())
    return next(pid for name, pid in stubs.items() if name.startswith(model))


@pytest.fixture(scope="module")
def example(built_artifacts):
    """A held-out test sample with all three modalities."""
    from mmtriton_build.examples import load_examples

    return next(e for e in load_examples(built_artifacts, 32) if e.image and e.audio and e.text)


def _answers(served: Served, example) -> str:
    with MultimodalClient(f"127.0.0.1:{served.grpc_port}") as client:
        sample = Sample(image=example.image, text=example.text, audio=example.audio)
        return client.predict(sample).label


def _fault_then_heal(served: Served, model: str, sig: signal.Signals) -> dict:
    restarts_before = served.status()[1]["restarts"]
    pid = _stub(served, model)
    at = time.monotonic()
    os.kill(pid, sig)
    unready_after = healed_after = None
    deadline = at + HEAL_WITHIN_S + 5
    while time.monotonic() < deadline:
        code = served.ready_code()
        now = time.monotonic() - at
        if code != 200 and unready_after is None:
            unready_after = now
        if code == 200 and unready_after is not None:
            healed_after = now
            break
        time.sleep(0.05)
    if sig == signal.SIGSTOP and read_proc(pid) is not None:
        os.kill(pid, signal.SIGCONT)  # only if the heal left it behind (it must not)
    status = served.status()[1]
    return {
        "unready_after": unready_after,
        "healed_after": healed_after,
        "restarts": status["restarts"] - restarts_before,
        "reason": (status["last_heal"] or {}).get("reason", ""),
        "stub_left": read_proc(pid) is not None and read_proc(pid).state != "Z",
    }


def test_the_probe_passes_on_a_healthy_server(triton_server):
    from mmtriton.server.probe import PipelineProbe

    probe = PipelineProbe(triton_server.grpc_url)
    try:
        results = [probe.run(timeout_s=10) for _ in range(5)]
    finally:
        probe.close()
    assert all(r.ok and not r.reason for r in results), results


def test_a_healthy_idle_server_is_never_restarted(served):
    """The supervisor's own probes must not mistake a healthy server for a broken one."""
    before = served.status()[1]["restarts"]
    deadline = time.monotonic() + 12  # six probe intervals
    while time.monotonic() < deadline:
        assert served.ready_code() == 200
        time.sleep(0.5)
    status = served.status()[1]
    assert status["restarts"] == before, status
    assert status["last_probe"]["ok"] and not status["last_probe"]["reason"], status


@pytest.mark.parametrize(
    ("model", "sig"),
    [("image_encoder", signal.SIGKILL), ("audio_encoder", signal.SIGSTOP)],
    ids=["killed", "stopped"],
)
def test_broken_stub_turns_unready_within_5s_and_is_healed_within_30s(served, model, sig, example):
    got = _fault_then_heal(served, model, sig)
    assert got["unready_after"] is not None and got["unready_after"] <= DETECT_WITHIN_S, got
    assert got["healed_after"] is not None and got["healed_after"] <= HEAL_WITHIN_S, got
    assert got["restarts"] == 1, got
    assert (
        model in got["reason"]
        and ("dead" if sig == signal.SIGKILL else "stopped") in (got["reason"])
    ), got
    assert not got["stub_left"], "the broken stub outlived the heal"
    assert _answers(served, example) == example.label


def test_stop_right_after_a_stub_death_is_bounded_exits_0_and_frees_shared_memory(tmp_path):
    s = serve(tmp_path)
    try:
        triton = s.triton_pid()
        regions = mapped_regions(triton)
        assert regions, "a ready server maps its Python-backend regions"
        os.kill(_stub(s, "text_encoder"), signal.SIGKILL)
        time.sleep(0.5)  # the supervisor has noticed, the heal is under way
        at = time.monotonic()
        s.process.send_signal(signal.SIGTERM)
        code = s.process.wait(timeout=STOP_WITHIN_S + 10)
        took = time.monotonic() - at
    finally:
        shut(s)
    assert code == 0, s.log_tail()
    assert took <= STOP_WITHIN_S, f"stop took {took:.1f} s"
    assert read_proc(triton) is None or read_proc(triton).state == "Z"
    assert not [r for r in regions if r.exists()], "shared-memory regions left behind"


def test_sigkill_of_the_launcher_takes_tritonserver_with_it(tmp_path):
    s = serve(tmp_path)
    triton = s.triton_pid()
    s.process.kill()
    s.process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc = read_proc(triton)
        if proc is None or proc.state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(triton, signal.SIGKILL)
        pytest.fail("tritonserver outlived its SIGKILLed launcher")
    # Its gRPC port is free again: a new server could bind and listen on it. Like gRPC's own
    # listener, set SO_REUSEADDR: connections the dead server had accepted may sit in
    # TIME_WAIT (a plain bind then fails although nothing listens), while a listening orphan
    # still makes the bind fail.
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", s.grpc_port))
        sock.listen()
