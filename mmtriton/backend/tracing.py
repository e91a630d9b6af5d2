"""Spans from inside the Python-backend steps, in the trace Triton started for the request.

Triton (`--trace-config mode=opentelemetry`) gives each sampled request a trace with one span
per ensemble step, and hands the step's own span to the model as a W3C `traceparent`
(`request.trace().get_context()`). The steps add what only they know as child spans: the
preprocess validation and decode, the fusion, with the modalities present, the batch sizes and
the reason a request was refused. They export over OTLP/HTTP (JSON) to the endpoint in
$MMTRITON_OTLP_ENDPOINT, which `mmtriton serve --otlp-endpoint` sets for tritonserver.

A request Triton did not sample carries no context: no span, no cost beyond one call.
Without an endpoint, or without the OpenTelemetry SDK installed, every call here is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mmtriton import spec
from mmtriton.server.flags import OTLP_ENDPOINT_ENV

# Span attributes, shared with the client's span (mmtriton_client.tracing).
MODALITIES = spec.SPAN_MODALITIES
BATCH_SIZE = spec.SPAN_BATCH_SIZE
STEP_BATCH_SIZE = "mmtriton.step_batch_size"  # rows the step executed together (dynamic batch)
ERROR_REASON = "mmtriton.error.reason"  # the refusal's machine-readable reason (InvalidInput)
ERROR_MODALITY = "mmtriton.error.modality"
SERVICE_NAME = "mmtriton-steps"


def modalities_attribute(present: np.ndarray) -> str:
    """`image+text` for the modalities present in any row of a PRESENT mask."""
    seen = np.asarray(present).reshape(-1, len(spec.MODALITIES)).any(axis=0)
    return "+".join(m for m, on in zip(spec.MODALITIES, seen, strict=True) if on)


class StepTracer:
    """Starts spans for one step (`preprocess`, `fusion`) under Triton's span of the request."""

    def __init__(self, step: str, endpoint: str | None = None) -> None:
        self.step = step
        self._tracer = None
        self._provider = None
        endpoint = endpoint or os.environ.get(OTLP_ENDPOINT_ENV)
        if not endpoint:
            return
        try:
            from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:  # tracing is optional: serve without it rather than fail to load
            # Said once per step in Triton's log: Triton's own spans still export.
            print(
                f"mmtriton {step}: {OTLP_ENDPOINT_ENV} is set but the OpenTelemetry SDK or its "
                "OTLP/HTTP JSON exporter is not installed; this step's own spans are off",
                file=sys.stderr,
                flush=True,
            )
            return
        resource = Resource.create({"service.name": SERVICE_NAME, "mmtriton.step": step})
        self._provider = TracerProvider(resource=resource)
        # Exported off the request path, in the background; flushed at finalize().
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=1000)
        )
        self._tracer = self._provider.get_tracer("mmtriton.backend")
        self._propagator = TraceContextTextMapPropagator()

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def context(self, request: Any):
        """The OpenTelemetry context of Triton's span for `request`, or None if not sampled."""
        if self._tracer is None:
            return None
        try:
            raw = request.trace().get_context()
        except Exception:  # no trace object on this request (warm-up, tracing off)
            return None
        if not raw:
            return None
        try:
            carrier = json.loads(raw)
        except ValueError:
            return None
        if "traceparent" not in carrier:
            return None
        return self._propagator.extract(carrier)

    @contextlib.contextmanager
    def span(self, name: str, parent, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
        """A child span of `parent` (a context from `context()`); yields None when unsampled."""
        if self._tracer is None or parent is None:
            yield None
            return
        # Refusals are marked by `refuse`, with their reason: an exception passing through is
        # not the span's verdict (InvalidInput is the client's, reported by the caller).
        with self._tracer.start_as_current_span(
            f"{self.step}.{name}",
            context=parent,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def start(self, name: str, parent, attributes: dict[str, Any] | None = None) -> Any:
        """A started child span of `parent` (end it with `end`), or None when unsampled."""
        if self._tracer is None or parent is None:
            return None
        return self._tracer.start_span(f"{self.step}.{name}", context=parent, attributes=attributes)

    @staticmethod
    def end(spans: Sequence[Any]) -> None:
        for span in spans:
            if span is not None:
                span.end()

    @staticmethod
    def refuse(span: Any, reason: str, message: str, modality: str = "") -> None:
        """Mark `span` as the place a request was refused, and why."""
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute(ERROR_REASON, reason)
        if modality:
            span.set_attribute(ERROR_MODALITY, modality)
        span.set_status(Status(StatusCode.ERROR, message))

    def shutdown(self) -> None:
        """Flush what is queued (called from the model's finalize)."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = self._tracer = None
