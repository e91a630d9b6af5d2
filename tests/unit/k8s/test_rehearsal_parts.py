"""The rehearsal's pure parts: $(VAR) expansion, command/args rules, rewrites of ports, paths
and Service names, the image config read from the Dockerfile, test Secrets, the probe state
machine against a tiny local HTTP server, and the kubelet's stop and restart sequence on a
small real process.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from k8s.rehearsal.events import Events
from k8s.rehearsal.expand import EnvError, EnvSources, command_line, container_env, expand
from k8s.rehearsal.image import image_config
from k8s.rehearsal.kubelet import PodRunner
from k8s.rehearsal.plan import ContainerPlan, PodPlan
from k8s.rehearsal.probes import ProbeSpec, ProbeState, Result, http_get, tcp_socket
from k8s.rehearsal.remap import PathMap, PortMap, Rewriter, ServiceMap, free_ports
from k8s.rehearsal.service import ServiceProxy
from k8s.rehearsal.volumes import SecretStore, self_signed_tls

ROOT = Path(__file__).resolve().parents[3]


# -- $(VAR) expansion and env -------------------------------------------------------------
def test_expand_replaces_defined_vars_and_keeps_undefined_and_shell_syntax():
    env = {"KEY": "s3cret", "PORT": "8001"}
    assert expand("--api=x:hdr=$(KEY)", env) == "--api=x:hdr=s3cret"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"
    assert expand("$$(KEY) is escaped", env) == "$(KEY) is escaped"
    assert expand("$$ alone", env) == "$ alone"
    # Shell syntax inside `sh -c` scripts passes through untouched.
    assert expand('"${KEY}" $((n + 1)) $PORT', env) == '"${KEY}" $((n + 1)) $PORT'
    assert expand("unclosed $(KEY", env) == "unclosed $(KEY"


def test_env_expands_against_earlier_vars_only_and_reads_secret_and_configmap_refs():
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "a-$(B)"},  # B is defined later: stays literal
            {"name": "B", "value": "b"},
            {"name": "C", "value": "$(B)-$(CM_MODE)"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "adm", "key": "key"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
    }
    sources = EnvSources({"cm": {"MODE": "cpu"}}, {"adm": {"key": "k1"}})
    env, secret_vars = container_env(container, sources)
    assert env == {"CM_MODE": "cpu", "A": "a-$(B)", "B": "b", "C": "b-cpu", "KEY": "k1"}
    assert secret_vars == {"KEY"}


def test_missing_secret_is_a_create_container_config_error_naming_it():
    container = {
        "env": [
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "triton-admin", "key": "key"}}}
        ]
    }
    with pytest.raises(EnvError, match="triton-admin"):
        container_env(container, EnvSources({}, {}))


def test_command_and_args_follow_kubernetes_rules_over_the_image_entrypoint():
    entry, cmd, env = ["/entry.sh"], ["default"], {"X": "1"}
    assert command_line({"args": ["serve", "$(X)"]}, entry, cmd, env) == ["/entry.sh", "serve", "1"]
    assert command_line({"command": ["run"]}, entry, cmd, env) == ["run"]  # CMD dropped
    assert command_line({"command": ["run"], "args": ["$(X)"]}, entry, cmd, env) == ["run", "1"]
    assert command_line({}, entry, cmd, env) == ["/entry.sh", "default"]
    # The image's own ENTRYPOINT is never expanded.
    assert command_line({"args": ["a"]}, ["$(X)"], [], env) == ["$(X)", "a"]


# -- rewrites ---------------------------------------------------------------------------------
def test_port_rewrite_changes_standalone_ports_only():
    ports = PortMap({8000: 41000, 8003: 41003}, {"http": 8000, "health": 8003})
    text = "--http-port=8000 --health-port 8003 http://localhost:8000/m 300000 18000 8000.5"
    assert ports.rewrite(text) == (
        "--http-port=41000 --health-port 41003 http://localhost:41000/m 300000 18000 8000.5"
    )
    assert ports.rewrite("8003") == "41003"
    assert ports.host_port("health") == 41003 and ports.host_port(8000) == 41000


def test_path_rewrite_respects_component_boundaries_and_longest_prefix():
    paths = PathMap()
    paths.add("/opt/mmtriton", "/img")
    paths.add("/opt/mmtriton/model_repository", "/project/model_repository")
    paths.add("/tmp", "/pod/tmp")
    out = paths.rewrite(
        "cp -R /opt/mmtriton/model_repository/. /x; PATH=/opt/mmtriton/venv/bin:/bin "
        '/tmpfs /a/tmp --log=/tmp/log "/tmp"'
    )
    assert out == (
        "cp -R /project/model_repository/. /x; PATH=/img/venv/bin:/bin "
        '/tmpfs /a/tmp --log=/pod/tmp/log "/pod/tmp"'
    )


def test_service_names_resolve_to_the_backing_pods_host_port():
    services = ServiceMap("mmtriton", {("triton-grpc", 8001): 45001})
    assert services.rewrite("triton-grpc:8001") == "127.0.0.1:45001"
    assert services.rewrite("dns:///triton-grpc.mmtriton.svc.cluster.local:8001") == (
        "dns:///127.0.0.1:45001"
    )
    assert services.rewrite("triton-grpc-headless:8001 triton-grpc:80") == (
        "triton-grpc-headless:8001 triton-grpc:80"
    )


def test_rewriter_records_each_change_and_free_ports_avoid_manifest_ports():
    rw = Rewriter(PathMap({"/tmp": "/t"}), PortMap({8000: 40000}))
    assert rw("--p=8000 /tmp/x") == "--p=40000 /t/x"
    assert rw("unchanged") == "unchanged"
    assert rw.changes == [("--p=8000 /tmp/x", "--p=40000 /t/x")]
    ports = free_ports(3, avoid=[8000])
    assert len(set(ports)) == 3 and 8000 not in ports


# -- image and Secrets ------------------------------------------------------------------------
def test_image_config_comes_from_the_dockerfile_stage_and_its_base():
    triton = image_config("registry.example.com/mmtriton/triton:0.1.0")
    assert triton.entrypoint == ["/opt/nvidia/nvidia_entrypoint.sh"]  # NGC's, inherited
    assert triton.env["PATH"].startswith("/opt/mmtriton/venv/bin:")
    assert triton.files["/opt/mmtriton/model_repository"] == ROOT / "model_repository"
    web = image_config("registry.example.com/mmtriton/web@sha256:" + "0" * 64)
    assert web.entrypoint == ["mmtriton"] and web.cmd[0] == "web"
    with pytest.raises(KeyError, match="no stage"):
        image_config("registry.example.com/mmtriton/nope:1")


def test_generated_tls_secret_verifies_for_localhost_and_service_names(tmp_path):
    data = self_signed_tls(["triton-grpc"], tmp_path / "tls")
    for name in ("ca.crt", "tls.crt"):
        (tmp_path / name).write_text(data[name])
    for host in ("triton-grpc", "localhost"):
        done = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(tmp_path / "ca.crt"),
                "-verify_hostname",
                host,
                str(tmp_path / "tls.crt"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    store = SecretStore({"given": {"key": "v"}}, tmp_path / "s")
    assert store.ensure("given", ["key"]) == {"key": "v"}  # rendered values win
    made = store.ensure("triton-admin", ["key"])
    assert len(made["key"]) >= 24 and store.generated == {"triton-admin": ["key"]}


# -- probes -----------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    status: ClassVar[dict[str, int]] = {"/ok": 200, "/down": 503}

    def do_GET(self):
        if self.path == "/hang":
            time.sleep(3)
        code = self.status.get(self.path, 404)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"reason": "stub image_encoder_0_0 dead"}' if code != 200 else b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_http_probe_succeeds_on_200_fails_on_503_with_reason_and_times_out(http_port):
    assert http_get(http_port, {"path": "/ok"}, 1).ok
    down = http_get(http_port, {"path": "/down"}, 1)
    assert not down.ok and "503" in down.detail and "image_encoder" in down.detail
    hung = http_get(http_port, {"path": "/hang"}, 0.5)
    assert not hung.ok and "timeout" in hung.detail
    assert tcp_socket(http_port, 1).ok
    assert not tcp_socket(free_ports(1)[0], 1).ok


def test_probe_state_machine_applies_thresholds_like_the_kubelet(http_port):
    spec = ProbeSpec.from_manifest(
        "readiness", {"httpGet": {"path": "/"}, "failureThreshold": 2, "successThreshold": 2}
    )
    ready = ProbeState(spec)
    ok, bad = http_get(http_port, {"path": "/ok"}, 1), http_get(http_port, {"path": "/down"}, 1)
    assert [ready.observe(r) for r in (ok, ok, bad, ok, bad, bad, ok, ok)] == [
        None,
        "ready",
        None,
        None,
        None,
        "unready",
        None,
        "ready",
    ]
    live = ProbeState(ProbeSpec.from_manifest("liveness", {"httpGet": {}, "failureThreshold": 3}))
    assert [live.observe(r) for r in (bad, bad, ok, bad, bad, bad)] == [
        None,
        None,
        None,
        None,
        None,
        "kill",
    ]
    start = ProbeState(ProbeSpec.from_manifest("startup", {"httpGet": {}, "failureThreshold": 2}))
    assert [start.observe(r) for r in (bad, Result(True, ""))] == [None, "started"]
    # Defaults are Kubernetes': period 10 s, timeout 1 s, failureThreshold 3.
    d = ProbeSpec.from_manifest("liveness", {"tcpSocket": {"port": 1}})
    assert (d.period_s, d.timeout_s, d.failure_threshold) == (10, 1, 3)


def test_service_port_forwards_only_while_the_pod_is_ready(http_port):
    ready = {"now": False}
    [front] = free_ports(1, avoid=[http_port])
    proxy = ServiceProxy("svc", 80, front, http_port, ready=lambda: ready["now"]).start()
    try:
        refused = http_get(front, {"path": "/ok"}, 1)
        assert not refused.ok and proxy.refused == 1  # no Ready endpoint: refused at once
        ready["now"] = True
        assert http_get(front, {"path": "/ok"}, 1).ok and proxy.forwarded == 1
    finally:
        proxy.stop()


# -- the kubelet's stop and restart, on a small real process --------------------------------
_SERVER = """
import http.server, os, signal, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, lambda *a: None)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if os.path.exists(os.environ["HEALTHY"]) else 500)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _pod(
    tmp_path: Path,
    probes: dict,
    pre_stop: dict | None = None,
    grace: float = 3,
    ignore_term: bool = False,
) -> tuple[PodRunner, Path]:
    port = free_ports(1)[0]
    healthy = tmp_path / "healthy"
    healthy.touch()
    env = {"PATH": "/usr/bin:/bin", "HEALTHY": str(healthy)}
    if ignore_term:
        env["IGNORE_TERM"] = "1"
    ports = PortMap({8080: port}, {"http": 8080})
    plan = ContainerPlan(
        name="app",
        image="test",
        argv=[sys.executable, "-c", _SERVER, str(port)],
        env=env,
        cwd="/",
        probes={k: ProbeSpec.from_manifest(k, v) for k, v in probes.items()},
        pre_stop=pre_stop,
        post_start=None,
        rewriter=Rewriter(PathMap(), ports),
        gpu_request=0,
    )
    pod = PodPlan(
        name="app-rehearsal",
        kind="Deployment",
        workload="app",
        labels={},
        spec={},
        ports=ports,
        containers=[plan],
        grace_s=grace,
    )
    return PodRunner(pod, Events(stream=None), tmp_path / "logs"), healthy


def test_liveness_failures_kill_and_restart_the_container(tmp_path):
    probe = {
        "httpGet": {"path": "/", "port": "http"},
        "periodSeconds": 0.3,
        "failureThreshold": 2,
        "timeoutSeconds": 1,
    }
    pod, healthy = _pod(tmp_path, {"liveness": probe, "readiness": probe})
    assert pod.start()
    try:
        assert pod.wait_ready(True, 20) is not None
        first_pid = pod.container().instance.pid
        healthy.unlink()  # /health now answers 500
        assert pod.wait_ready(False, 10) is not None
        deadline = time.monotonic() + 20
        while pod.container().restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        healthy.touch()
        assert pod.container().restarts == 1
        assert "liveness" in pod.container().terminations[0].reason
        assert pod.wait_ready(True, 20) is not None
        assert pod.container().instance.pid != first_pid
    finally:
        pod.stop()


def test_stop_runs_prestop_then_sigterm_then_sigkill_after_grace(tmp_path):
    marker = tmp_path / "prestop-ran"
    pre_stop = {"exec": {"command": ["/bin/sh", "-c", f"touch {marker}"]}}
    listening = {"tcpSocket": {"port": "http"}, "periodSeconds": 0.2}
    pod, _ = _pod(tmp_path, {"readiness": listening}, pre_stop=pre_stop, grace=2, ignore_term=True)
    assert pod.start()
    assert pod.wait_ready(True, 20) is not None  # listening: its SIGTERM handler is set
    t0 = time.monotonic()
    [stopped] = pod.stop()
    took = time.monotonic() - t0
    assert marker.exists()
    assert stopped["escalated_to_sigkill"] and stopped["exit_code"] == 137
    assert 1.5 <= took < 6


# -- whole pods from small manifests (no server needed) -----------------------------------------
def _deployment(init: list[dict], main: dict, name: str = "demo") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {
                    "initContainers": init,
                    "containers": [main],
                    "terminationGracePeriodSeconds": 2,
                },
            },
        },
    }


def _play(tmp_path: Path, objects: list[dict]) -> tuple[int, dict]:
    import json

    import yaml

    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "k8s.rehearsal",
            "--rendered",
            str(rendered),
            "--out-dir",
            str(tmp_path / "out"),
            "--json",
            str(tmp_path / "summary.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads((tmp_path / "summary.json").read_text())


IMAGE = "registry.example.com/mmtriton/triton:0.1.0"


def test_failing_init_container_stops_the_pod_and_reports_its_last_stderr_line(tmp_path):
    init = [
        {"name": "first", "image": IMAGE, "args": ["sh", "-c", "echo staged"]},
        {
            "name": "second",
            "image": IMAGE,
            "args": ["sh", "-c", "echo working; echo 'error: no disk named $(DISK)' >&2; exit 3"],
            "env": [{"name": "DISK", "value": "vdb"}],
        },
        {"name": "never", "image": IMAGE, "args": ["sh", "-c", "touch /never"]},
    ]
    main = {"name": "app", "image": IMAGE, "args": ["sleep", "30"]}
    code, summary = _play(tmp_path, [_deployment(init, main)])
    [pod] = summary["pods"]
    assert code == 1 and not summary["ok"]
    assert [i["name"] for i in pod["init_containers"]] == ["first", "second"]
    assert pod["stopped_at"]["container"] == "second" and pod["stopped_at"]["exit_code"] == 3
    assert pod["stopped_at"]["message"] == "error: no disk named vdb"  # $(DISK) expanded
    assert pod["containers"] == []  # the main container never started


def test_missing_configmap_is_a_create_container_config_error(tmp_path):
    name = f"demo-{uuid.uuid4().hex[:8]}"
    main = {
        "name": "app",
        "image": IMAGE,
        "args": ["sleep", "30"],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    deployment = _deployment([], main, name)
    deployment["spec"]["template"]["spec"]["volumes"] = [
        {"name": "shm", "emptyDir": {"medium": "Memory"}}
    ]
    code, summary = _play(tmp_path, [deployment])
    assert code == 1 and not summary["ok"]
    assert "CreateContainerConfigError: configMapRef 'settings' not found" in summary["outcome"]
    assert not list(Path("/dev/shm").glob(f"rehearsal-{name}-*")), "sandbox left in /dev/shm"
