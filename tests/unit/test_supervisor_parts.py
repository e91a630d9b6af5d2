"""The supervisor's parts without a tritonserver: /proc fault detection on real processes, the
health endpoint over real HTTP, stale shared-memory clean-up, and the serve options round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mmtriton import layout, spec
from mmtriton.server import process as process_module
from mmtriton.server.flags import ServerSettings, serve_args
from mmtriton.server.health import (
    FAILED,
    HEALING,
    SERVING,
    HealthServer,
    HealthState,
)
from mmtriton.server.launcher import add_server_arguments, settings_from_args
from mmtriton.server.probe import probe_payload
from mmtriton.server.procs import stub_problems


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_stub_problems_names_a_killed_and_a_stopped_process():
    alive, stopped, killed = _sleeper(), _sleeper(), _sleeper()
    try:
        known = {"a_0_0": alive.pid, "b_0_0": stopped.pid, "c_0_0": killed.pid}
        assert stub_problems(os.getpid(), known) == {}
        os.kill(stopped.pid, signal.SIGSTOP)
        killed.kill()
        killed.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = stub_problems(os.getpid(), known)
            if len(found) == 2:
                break
            time.sleep(0.05)
        assert found == {"b_0_0": "stopped", "c_0_0": "dead"}
    finally:
        for p in (alive, stopped, killed):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_endpoint_follows_the_supervisor_state():
    health = HealthState()
    server = HealthServer(health, 0, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = _get(f"{base}/ready")
        assert code == 503 and body["state"] == "starting"
        health.set(SERVING)
        assert _get(f"{base}/ready")[0] == 200
        assert _get(f"{base}/live")[0] == 200
        health.set(HEALING, "stub image_encoder_0_0 is dead")
        code, body = _get(f"{base}/ready")
        assert code == 503 and body["reason"] == "stub image_encoder_0_0 is dead"
        assert _get(f"{base}/live")[0] == 200  # healing in place: keep the container
        health.set(FAILED, "gave up")
        assert _get(f"{base}/live")[0] == 503
        assert _get(f"{base}/status")[0] == 200
        assert _get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_liveness_fails_when_the_supervisor_loop_stops_beating(monkeypatch):
    health = HealthState()
    health.set(SERVING)
    assert health.live()
    monkeypatch.setattr("mmtriton.server.health.HEARTBEAT_STALE_S", 0.01)
    time.sleep(0.05)
    assert not health.live()
    health.beat()
    assert health.ready()


def test_stale_regions_are_removed_and_mapped_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "SHM_DIR", tmp_path)
    stale = tmp_path / f"{process_module.SHM_PREFIX}stale"
    in_use = tmp_path / f"{process_module.SHM_PREFIX}in_use"
    young = tmp_path / f"{process_module.SHM_PREFIX}young"
    for region in (stale, in_use, young):
        region.write_bytes(b"\0" * 4096)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(in_use, (old, old))
    # As if a live stub mapped `in_use` (reading real mappings: the next test).
    monkeypatch.setattr(process_module, "mapped_anywhere", lambda: {in_use})
    removed = process_module.remove_stale_regions(min_age_s=30)
    assert removed == [stale]
    assert not stale.exists() and in_use.exists() and young.exists()


def test_mapped_regions_reads_a_real_mapping():
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    region = Path("/dev/shm") / f"{process_module.SHM_PREFIX}test_{os.getpid()}"
    region.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import mmap, sys, time; f = open(sys.argv[1], 'r+b'); "
            "m = mmap.mmap(f.fileno(), 0); print('mapped', flush=True); time.sleep(60)",
            str(region),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"mapped"
        assert region in process_module.mapped_regions(holder.pid)
        assert region in process_module.mapped_anywhere()
    finally:
        holder.kill()
        holder.wait()
        region.unlink(missing_ok=True)


def test_a_child_started_from_the_main_thread_dies_with_its_parent(tmp_path):
    """The launcher's way of starting tritonserver, played with a sleeper: SIGKILL the
    parent, and the child must not live on (it would hold the server's ports)."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from mmtriton.server.process import tied_to_this_process\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " preexec_fn=tied_to_this_process(), start_new_session=True)\n"
            f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
            "time.sleep(60)\n",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child}").exists():
            stat = Path(f"/proc/{child}/stat").read_text(errors="replace")
            if stat.split(")")[-1].split()[0] == "Z":
                break  # dead, waiting for init to reap it
            assert time.monotonic() < deadline, "the child outlived its killed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def _exported_repository(tmp_path: Path) -> Path:
    """A repository folder where every encoder has its ONNX file (contents do not matter)."""
    repo = tmp_path / "repo"
    for model in spec.ENCODERS.values():
        path = layout.onnx_path(repo, model.name)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    return repo


def test_serve_args_round_trip_through_the_serve_parser(tmp_path):
    """What the manifests pass to `mmtriton serve` parses back into the same settings."""
    repo = _exported_repository(tmp_path)
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    settings = ServerSettings(
        model_repository=str(repo),
        profile="cpu",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18002,
        health_port=18003,
        admin_key="s3cret",
        tls_cert="/tls/tls.crt",
        tls_key="/tls/tls.key",
    )
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    parsed = settings_from_args(parser.parse_args(serve_args(settings, admin_key_file=str(key))))
    assert parsed == settings
    assert parsed.admin_key == "s3cret"
    assert "s3cret" not in " ".join(serve_args(settings, admin_key_file=str(key)))


def test_serve_refuses_an_empty_admin_key_file(tmp_path):
    repo = _exported_repository(tmp_path)
    key = tmp_path / "key"
    key.write_text("")
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    args = parser.parse_args([f"--repository={repo}", f"--admin-key-file={key}"])
    with pytest.raises(SystemExit, match="is empty"):
        settings_from_args(args)


def test_probe_payload_is_accepted_by_the_preprocessing_code():
    """The probe's inputs must be valid, or every probe would fail on a healthy server."""
    from mmtriton.preprocess.pipeline import Preprocessor

    payload = probe_payload()
    out = Preprocessor().preprocess_batch([payload["image"]], [payload["text"]], [payload["audio"]])
    assert out[spec.PRESENT.name].tolist() == [[1.0, 1.0, 1.0]]
    assert out[spec.AUDIO_MEL.name].any() and out[spec.IMAGE_PIXELS.name].any()


def test_stubs_of_a_server_that_crashed_by_itself_are_killed(tmp_path):
    """A tritonserver that dies on its own (a SIGSEGV) leaves its stubs alive in its process
    group: stopping or healing it must take them too, and nothing outside that group."""
    from mmtriton.server.process import TritonProcess
    from mmtriton.server.procs import STUB_BINARY, group_stubs, read_proc

    stub = tmp_path / STUB_BINARY  # a stand-in stub: `sleep` under the stub's name
    stub.symlink_to("/bin/sleep")
    fake_server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.argv[1], '60']); "
            "print('started', flush=True); time.sleep(60)",
            str(stub),
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,  # as TritonProcess starts tritonserver
    )
    bystander = subprocess.Popen([str(stub), "60"], start_new_session=True)
    try:
        assert fake_server.stdout.readline().strip() == b"started"
        (orphan,) = group_stubs(fake_server.pid)
        os.kill(fake_server.pid, signal.SIGKILL)  # the server crashes; its stub lives on
        fake_server.wait()
        assert read_proc(orphan.pid) is not None
        server = TritonProcess(ServerSettings("/repo", admin_key="k"), process=fake_server)
        server.kill()
        deadline = time.monotonic() + 5
        while (p := read_proc(orphan.pid)) is not None and p.state != "Z":
            assert time.monotonic() < deadline, "the orphaned stub outlived the kill"
            time.sleep(0.05)
        assert bystander.poll() is None, "a stub of another group was killed"
    finally:
        bystander.kill()
        bystander.wait()
        for p in group_stubs(fake_server.pid):
            os.kill(p.pid, signal.SIGKILL)


def test_heals_in_a_burst_back_off_instead_of_giving_up():
    from mmtriton.server.supervisor import Supervisor, SupervisorPolicy

    policy = SupervisorPolicy(heals_before_backoff=2, heal_window_s=60, max_backoff_s=5)
    supervisor = Supervisor(ServerSettings("/repo", admin_key="k"), None, policy=policy)
    assert [supervisor._backoff_s() for _ in range(6)] == [0, 0, 2, 4, 5, 5]
    supervisor._heal_times = [time.monotonic() - 120] * 6  # an old burst is forgotten
    assert supervisor._backoff_s() == 0
