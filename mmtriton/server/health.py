"""The supervisor's health endpoint: what Kubernetes probes and operators ask.

    GET /ready   200 when every step of the pipeline can answer; 503 (JSON reason) otherwise
    GET /live    200 while the supervisor works; 503 once it is wedged or gave up healing
    GET /status  JSON: state, restarts, the last heal, the stubs watched

Triton's own `/v2/health/ready` stays 200 with a dead Python stub (Triton 2.51), so probes
must ask the supervisor, which watches the stubs and sends end-to-end probe requests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# States of the supervised server.
STARTING, SERVING, UNHEALTHY, HEALING, STOPPING, FAILED = (
    "starting",
    "serving",
    "unhealthy",
    "healing",
    "stopping",
    "failed",
)
# Liveness fails when the supervisor loop has not ticked for this long (it ticks every
# ~0.25 s; a heal blocks it for at most a restart, bounded well below this).
HEARTBEAT_STALE_S = 120.0


@dataclass
class HealthState:
    """Shared between the supervisor loop (writer) and the HTTP handler (reader)."""

    state: str = STARTING
    reason: str = "starting tritonserver"
    restarts: int = 0
    heals: list[dict[str, Any]] = field(default_factory=list)
    stubs: dict[str, int] = field(default_factory=dict)
    triton_pid: int | None = None
    last_probe: dict[str, Any] = field(default_factory=dict)
    heartbeat: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, reason: str = "") -> None:
        """Move to `state`, with a reason a person can act on."""
        with self._lock:
            self.state, self.reason = state, reason

    def update(self, **fields: Any) -> None:
        """Set several fields at once."""
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, value)

    def beat(self) -> None:
        """The supervisor loop is alive."""
        self.heartbeat = time.monotonic()

    def ready(self) -> bool:
        """Traffic may be sent here."""
        return self.state == SERVING

    def live(self) -> bool:
        """The container is worth keeping (else the kubelet restarts it)."""
        fresh = time.monotonic() - self.heartbeat < HEARTBEAT_STALE_S
        return fresh and self.state != FAILED

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy for /status."""
        with self._lock:
            return {
                "state": self.state,
                "reason": self.reason,
                "ready": self.state == SERVING,
                "restarts": self.restarts,
                "last_heal": self.heals[-1] if self.heals else None,
                "heals": list(self.heals[-10:]),
                "stubs": dict(self.stubs),
                "triton_pid": self.triton_pid,
                "last_probe": dict(self.last_probe),
                "heartbeat_age_s": round(time.monotonic() - self.heartbeat, 2),
            }


def _handler(health: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/ready":
                ok = health.ready()
            elif path == "/live":
                ok = health.live()
            elif path == "/status":
                ok = True
            else:
                self._send(404, {"error": f"unknown path {self.path}; try /ready, /live, /status"})
                return
            body = health.snapshot()
            self._send(200 if ok else 503, body)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # probes every few seconds: keep logs quiet
            pass

    return Handler


class HealthServer:
    """Serves HealthState over HTTP from a daemon thread."""

    def __init__(self, health: HealthState, port: int, host: str = "0.0.0.0") -> None:
        self._httpd = ThreadingHTTPServer((host, port), _handler(health))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
