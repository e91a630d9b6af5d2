"""A small OTLP/HTTP trace receiver for tests: what a collector would receive, decoded.

No OpenTelemetry collector, Jaeger or Tempo installs here, so tests receive the real export
themselves. Accepts `POST /v1/traces` with a JSON body (what this tritonserver and the JSON
exporter send) or a protobuf body (`application/x-protobuf`, decoded with opentelemetry-proto),
gzip-compressed or not, and keeps every span in one normalised form.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Span:
    """One received span: ids as lowercase hex, times in ns, attributes as plain values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _hex_id(value: str | bytes | None, size: int) -> str:
    """OTLP/JSON carries ids as hex; protobuf->dict gives base64: normalise both to hex."""
    if not value:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    if len(value) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return base64.b64decode(value).hex()


def _any_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])  # JSON encodes 64-bit ints as strings
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _any_value(a.get("value", {})) for a in items or []}


def spans_from_export(body: dict[str, Any]) -> list[Span]:
    """Every span of an ExportTraceServiceRequest in its JSON mapping."""
    spans = []
    for resource_spans in body.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes"))
        service = str(resource.get("service.name", ""))
        for scope in resource_spans.get("scopeSpans", []):
            for s in scope.get("spans", []):
                status = s.get("status", {})
                code = status.get("code", 0)
                if isinstance(code, str):  # protobuf->dict spells enums by name
                    code = {"STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
                spans.append(
                    Span(
                        trace_id=_hex_id(s.get("traceId"), 16),
                        span_id=_hex_id(s.get("spanId"), 8),
                        parent_span_id=_hex_id(s.get("parentSpanId"), 8),
                        name=s.get("name", ""),
                        service=service,
                        start_ns=int(s.get("startTimeUnixNano", 0)),
                        end_ns=int(s.get("endTimeUnixNano", 0)),
                        attributes=_attributes(s.get("attributes")),
                        events=tuple(e.get("name", "") for e in s.get("events", [])),
                        status_code=int(code),
                        status_message=status.get("message", ""),
                    )
                )
    return spans


def decode_protobuf(payload: bytes) -> dict[str, Any]:
    """An `application/x-protobuf` export body as its JSON mapping."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return MessageToDict(ExportTraceServiceRequest.FromString(payload))


class OtlpReceiver:
    """An OTLP/HTTP endpoint on 127.0.0.1 that stores every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.content_types: list[str] = []
        self.errors: list[str] = []  # exports it could not decode
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as exporters expect: with HTTP/1.0 the server closes every connection
            # after one answer, and an exporter reusing its pooled connection loses a batch.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    payload = gzip.decompress(payload)
                kind = self.headers.get("Content-Type", "").split(";")[0].strip()
                try:
                    if kind == "application/x-protobuf":
                        body = decode_protobuf(payload)
                    else:
                        body = json.loads(payload)
                    spans = spans_from_export(body)
                except Exception as exc:  # a malformed export is a test failure, shown plainly
                    receiver.errors.append(f"{kind}: {exc}")
                    self.send_error(400, f"cannot decode {kind}: {exc}")
                    return
                receiver._add(kind, spans)
                answer = b"" if kind == "application/x-protobuf" else b"{}"
                self.send_response(200)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _add(self, kind: str, spans: list[Span]) -> None:
        with self._lock:
            self.content_types.append(kind)
            self.spans.extend(spans)

    @property
    def url(self) -> str:
        """The traces endpoint to give exporters (`.../v1/traces`)."""
        return f"http://127.0.0.1:{self._server.server_port}/v1/traces"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[Span]:
        """The spans received so far for one trace."""
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(
        self, predicate: Callable[[list[Span]], bool], timeout_s: float = 30.0
    ) -> list[Span]:
        """All spans once `predicate(spans)` holds; AssertionError with what came otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(
                    f"spans not received in {timeout_s} s; got {names}; errors {self.errors}"
                )
            time.sleep(0.1)


def span_tree(spans: list[Span]) -> str:
    """The spans of one trace as an indented tree (name, duration, key attributes)."""
    by_parent: dict[str, list[Span]] = {}
    ids = {s.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_ns):
        parent = s.parent_span_id if s.parent_span_id in ids else ""
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in by_parent.get(parent, []):
            shown = {
                k: v
                for k, v in s.attributes.items()
                if k.startswith("mmtriton.") or k in ("model_name", "triton.model_name")
            }
            extra = " ".join(f"{k}={v}" for k, v in shown.items())
            error = f" ERROR: {s.status_message}" if s.status_code == 2 else ""
            lines.append(
                f"{'  ' * depth}{s.name} [{s.service}] {s.duration_ms:.1f} ms {extra}{error}"
            )
            walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)
