"""Probes as the kubelet runs them: one check (httpGet, tcpSocket, exec, grpc) and the
threshold state machine that turns check results into Ready/Started/kill decisions.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Kubernetes' defaults (core/v1 Probe).
DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}


@dataclass(frozen=True)
class ProbeSpec:
    """One declared probe, defaults filled in."""

    kind: str  # startup, readiness, liveness
    handler: Mapping
    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int
    failure_threshold: int
    termination_grace_s: float | None  # probe-level terminationGracePeriodSeconds

    @classmethod
    def from_manifest(cls, kind: str, probe: Mapping) -> ProbeSpec:
        v = {k: probe.get(k, d) for k, d in DEFAULTS.items()}
        # Liveness and startup probes must have successThreshold 1 (API validation).
        success = 1 if kind in ("liveness", "startup") else int(v["successThreshold"])
        handler = {k: probe[k] for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in probe}
        return cls(
            kind,
            handler,
            float(v["initialDelaySeconds"]),
            float(v["periodSeconds"]),
            float(v["timeoutSeconds"]),
            success,
            int(v["failureThreshold"]),
            probe.get("terminationGracePeriodSeconds"),
        )

    def describe(self) -> str:
        h = self.handler
        if "httpGet" in h:
            what = f"httpGet {h['httpGet'].get('path', '/')} port {h['httpGet']['port']}"
        elif "tcpSocket" in h:
            what = f"tcpSocket port {h['tcpSocket']['port']}"
        elif "exec" in h:
            what = "exec " + " ".join(h["exec"]["command"])
        else:
            what = f"grpc port {h['grpc']['port']}"
        return (
            f"{what} every {self.period_s:g}s, timeout {self.timeout_s:g}s, "
            f"failureThreshold {self.failure_threshold}, successThreshold {self.success_threshold}"
        )


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str


def http_get(port: int, handler: Mapping, timeout_s: float, host: str = "127.0.0.1") -> Result:
    """Kubelet httpGet: 200 <= status < 400 succeeds; HTTPS is not verified (as the kubelet)."""
    path = handler.get("path", "/") or "/"
    headers = {h["name"]: h["value"] for h in handler.get("httpHeaders", []) or []}
    headers.setdefault("User-Agent", "kube-probe/1.31")
    scheme = str(handler.get("scheme", "HTTP")).upper()
    if scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        ok = 200 <= resp.status < 400
        return Result(ok, f"HTTP {resp.status}" + _why(resp.read(8192), ok))
    except TimeoutError:
        return Result(False, f"timeout after {timeout_s:g}s")
    except OSError as exc:
        return Result(False, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _why(body: bytes, ok: bool) -> str:
    """What an answer says: a JSON body's "state"/"reason" (and the reason of its "last_heal",
    as `mmtriton serve`'s health endpoint reports it), else the start of a failing body."""
    text = body.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return "" if ok or not text else f" {text[:200]}".replace("\n", " ")
    heal = data.get("last_heal")
    since = (
        f" (last heal: {heal['reason']})" if isinstance(heal, dict) and heal.get("reason") else ""
    )
    if ok or not data.get("reason"):
        return since
    state = f"{data['state']}: " if data.get("state") else ""
    return f" {state}{data['reason']}{since}"[:300]


def tcp_socket(port: int, timeout_s: float, host: str = "127.0.0.1") -> Result:
    """Kubelet tcpSocket: succeeds when a connection opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return Result(True, "connected")
    except OSError as exc:
        return Result(False, f"{type(exc).__name__}: {exc}")


def exec_command(argv: list[str], env: Mapping[str, str], timeout_s: float) -> Result:
    """Kubelet exec: exit 0 succeeds; the timeout is enforced (since Kubernetes 1.20)."""
    try:
        done = subprocess.run(
            argv, env=dict(env), capture_output=True, timeout=timeout_s, check=False, cwd="/"
        )
    except subprocess.TimeoutExpired:
        return Result(False, f"timeout after {timeout_s:g}s")
    except OSError as exc:
        return Result(False, f"{type(exc).__name__}: {exc}")
    tail = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-1:]
    return Result(
        done.returncode == 0, f"exit {done.returncode}" + (f": {tail[0]}" if tail else "")
    )


def grpc_health(port: int, service: str, timeout_s: float) -> Result:
    """Kubelet grpc probe: grpc.health.v1.Health/Check must answer SERVING (status 1)."""
    import grpc

    request = b"\x0a" + bytes([len(service)]) + service.encode() if service else b""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = check(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            return Result(False, f"{exc.code().name}: {exc.details()}")
    return Result(reply == b"\x08\x01", f"status bytes {reply!r}")


class ProbeState:
    """The kubelet's result-to-decision logic for one probe of one container instance.

    `observe(result)` returns the transition it causes, if any: "started" (startup probe),
    "ready" / "unready" (readiness), or "kill" (a liveness or startup probe that failed
    failureThreshold times in a row).
    """

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.successes = 0
        self.failures = 0
        # Readiness starts false; startup starts "not started"; liveness starts healthy.
        self.passing = spec.kind == "liveness"
        self.done = False  # startup succeeded, or a kill was decided

    def observe(self, result: Result) -> str | None:
        if self.done:
            return None
        if result.ok:
            self.successes += 1
            self.failures = 0
            if not self.passing and self.successes >= self.spec.success_threshold:
                self.passing = True
                if self.spec.kind == "startup":
                    self.done = True
                    return "started"
                return "ready"
            return None
        self.failures += 1
        self.successes = 0
        if self.failures >= self.spec.failure_threshold:
            if self.spec.kind in ("liveness", "startup"):
                self.done = True
                self.passing = False
                return "kill"
            if self.passing:
                self.passing = False
                return "unready"
        return None


Check = Callable[[], Result]
