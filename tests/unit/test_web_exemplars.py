"""The page's latency histogram links a submission to its trace: an exemplar with the trace id,
served in the OpenMetrics format that Prometheus asks for."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from mmtriton_client.web.metrics import WEB_REQUEST_SECONDS, WebMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"


def _exemplars(body: bytes) -> list[dict]:
    return [
        sample.exemplar.labels
        for family in text_string_to_metric_families(body.decode())
        if family.name == WEB_REQUEST_SECONDS
        for sample in family.samples
        if sample.exemplar is not None
    ]


def test_a_traced_submission_leaves_its_trace_id_as_an_exemplar():
    from opentelemetry.sdk.trace import TracerProvider

    metrics = WebMetrics(CollectorRegistry())
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("mmtriton_web.classify") as span:
        metrics.observe_request("image+text", 0.42)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    body, content_type = metrics.exposition(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert _exemplars(body) == [{"trace_id": trace_id}]


def test_untraced_submissions_and_the_classic_format_carry_no_exemplar():
    metrics = WebMetrics(CollectorRegistry())
    metrics.observe_request("text", 0.1)
    body, _ = metrics.exposition(OPENMETRICS)
    assert _exemplars(body) == []
    classic, content_type = metrics.exposition("text/plain")
    assert content_type.startswith("text/plain") and b"trace_id" not in classic
