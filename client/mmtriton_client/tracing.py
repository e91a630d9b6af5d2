"""The client's span around each request, and W3C trace context propagation to Triton.

The library depends on the OpenTelemetry *API* only, as libraries should: the application
chooses the SDK and the exporter (`export_to` sets up both for the CLI, the web page and tests).
Each request runs in a client span, and its `traceparent` goes to Triton as gRPC metadata;
Triton continues that trace (`mmtriton serve --otlp-endpoint`) with a span per ensemble step,
and the Python steps add theirs, so one trace id runs from the app to the fusion step.

Without the API installed, or with no SDK configured, there is no span and no header: Triton
then starts its own trace for the requests it samples.

Triton samples on its own (one request in `--trace-rate`); a request it does not sample has
the client span only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmtriton import spec

TRACER_NAME = "mmtriton_client"
# The same attributes as the server's step spans (defined once, in the contract).
MODALITIES = spec.SPAN_MODALITIES
BATCH_SIZE = spec.SPAN_BATCH_SIZE
ERROR_STATUS = "rpc.grpc.status"


@dataclass
class RequestSpan:
    """What a traced request sends along: metadata headers and the trace id ('' if none)."""

    headers: dict[str, str] = field(default_factory=dict)
    trace_id: str = ""
    span: Any = None


def _trace_api():
    try:
        from opentelemetry import trace
    except ImportError:  # tracing is optional for client-only installs
        return None
    return trace


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span this code runs in, if one is recording."""
    trace = _trace_api()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def sample_modalities(samples: Sequence[Any]) -> str:
    """`image+text`: the modalities present in any of the samples."""
    given = {m for s in samples for m in s.modalities()}
    return "+".join(m for m in spec.MODALITIES if m in given)


@contextlib.contextmanager
def request_span(samples: Sequence[Any], model: str) -> Iterator[RequestSpan]:
    """A client span for one inference request; yields the headers that propagate it.

    A failure passing through marks the span as an error with the gRPC status and message.
    """
    trace = _trace_api()
    if trace is None:
        yield RequestSpan()
        return
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = trace.get_tracer(TRACER_NAME)
    attributes = {
        MODALITIES: sample_modalities(samples),
        BATCH_SIZE: len(samples),
        "rpc.system": "grpc",
        "rpc.method": f"ModelInfer/{model}",
    }
    with tracer.start_as_current_span(
        f"{TRACER_NAME}.predict",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        context = span.get_span_context()
        out = RequestSpan(span=span)
        if context.is_valid:
            inject(out.headers)  # traceparent (+ tracestate), as gRPC metadata
            out.trace_id = format(context.trace_id, "032x")
        try:
            yield out
        except Exception as exc:
            status = getattr(exc, "status", type(exc).__name__)  # ClientError: a str
            span.set_attribute(ERROR_STATUS, str(status() if callable(status) else status))
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise


def export_to(endpoint: str, service_name: str) -> Any:
    """Install an SDK tracer provider exporting OTLP/HTTP (JSON) to `endpoint`, as the global
    one; returns it (call `shutdown()` to flush). For applications, not the library."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=1000)
    )
    trace.set_tracer_provider(provider)
    return provider


# The standard OpenTelemetry variable: an application (the web page) that finds it set exports
# its spans there. `mmtriton up` sets it for the page when tracing is on.
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


def export_from_env(service_name: str, environ: dict[str, str] | None = None) -> Any:
    """`export_to` the endpoint in $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, once per process.

    None when the variable is unset, the SDK is not installed, or a provider is already set.
    """
    env = os.environ if environ is None else environ
    endpoint = env.get(ENDPOINT_ENV)
    trace = _trace_api()
    if not endpoint or trace is None:
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    return export_to(endpoint, service_name)


@contextlib.contextmanager
def page_span(source: str) -> Iterator[Any]:
    """The web page's span for one click (the client's request span nests inside it)."""
    trace = _trace_api()
    if trace is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        "mmtriton_web.classify", kind=SpanKind.SERVER, attributes={"mmtriton.web.source": source}
    ) as span:
        yield span


def page_outcome(span: Any, modalities: Sequence[str], error_kind: str | None) -> None:
    """Record on the page's span what was sent and how it ended."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(MODALITIES, "+".join(modalities))
    if error_kind:
        span.set_attribute("mmtriton.web.error_kind", error_kind)
        span.set_status(Status(StatusCode.ERROR, error_kind))
