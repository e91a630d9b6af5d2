"""Metrics of the web page (Gradio app), exposed on its `/metrics` with prometheus_client.

Each `WebMetrics` owns the registry it is given, so tests can create as many as they like:

    registry = CollectorRegistry()
    web_metrics = WebMetrics(registry)
    ...
    body, content_type = web_metrics.exposition()

Every submission is counted once in `mmtriton_web_requests_total` (label "none" when it carried
nothing) and timed in `mmtriton_web_request_seconds`; one that failed is also counted in
`mmtriton_web_errors_total{kind}`. All label values are created at zero up front so that rates
and the dashboard have series before the first error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from mmtriton import spec

from ..tracing import current_trace_id

WEB_REQUESTS = "mmtriton_web_requests_total"
WEB_ERRORS = "mmtriton_web_errors_total"
WEB_REQUEST_SECONDS = "mmtriton_web_request_seconds"

NO_MODALITIES = "none"
WEB_MODALITY_LABELS: tuple[str, ...] = (*(spec.subset_name(s) for s in spec.SUBSETS), NO_MODALITIES)
# no_input and invalid_input are the user's; the others are the service's.
WEB_ERROR_KINDS: tuple[str, ...] = (
    "no_input",
    "invalid_input",
    "server_unavailable",
    "server_busy",
    "timeout",
    "internal",
)
WEB_CLIENT_ERROR_KINDS: tuple[str, ...] = ("no_input", "invalid_input")
WEB_REQUEST_SECONDS_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def web_modalities_label(image: object = None, text: object = None, audio: object = None) -> str:
    """The `modalities` label of a submission: "image+audio", ... or "none"."""
    given = {"image": bool(image), "text": bool(text), "audio": bool(audio)}
    chosen = [m for m in spec.MODALITIES if given[m]]
    return "+".join(chosen) if chosen else NO_MODALITIES


class WebMetrics:
    """The web page's three metrics, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # prometheus_client appends `_total` to counter names itself.
        self.requests = Counter(
            WEB_REQUESTS.removesuffix("_total"),
            "Submissions to the web page, by the modalities they carried",
            ["modalities"],
            registry=registry,
        )
        self.errors = Counter(
            WEB_ERRORS.removesuffix("_total"),
            "Submissions that failed, by kind (no_input and invalid_input are the user's)",
            ["kind"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            WEB_REQUEST_SECONDS,
            "Seconds from a submission to its answer (or error) on the web page",
            buckets=WEB_REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )
        for label in WEB_MODALITY_LABELS:
            self.requests.labels(modalities=label)
        for kind in WEB_ERROR_KINDS:
            self.errors.labels(kind=kind)

    def observe_request(self, modalities: str, seconds: float) -> None:
        """One submission with its `modalities` label and duration."""
        if modalities not in WEB_MODALITY_LABELS:
            raise ValueError(f"unknown modalities label {modalities!r}")
        self.requests.labels(modalities=modalities).inc()
        # The trace of this submission as an exemplar: a slow bucket on the dashboard links to
        # the trace that explains it (served in the OpenMetrics format, see exposition).
        trace_id = current_trace_id()
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.request_seconds.observe(max(seconds, 0.0), exemplar=exemplar)

    def count_error(self, kind: str) -> None:
        """One failed submission of `kind` (one of WEB_ERROR_KINDS)."""
        if kind not in WEB_ERROR_KINDS:
            raise ValueError(f"unknown web error kind {kind!r}; use one of {WEB_ERROR_KINDS}")
        self.errors.labels(kind=kind).inc()

    @contextlib.contextmanager
    def track(self, modalities: str) -> Iterator[None]:
        """Count and time the block as one submission (errors are counted by the caller)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_request(modalities, time.perf_counter() - start)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and Content-Type to serve on `/metrics`: OpenMetrics (with exemplars) when
        the scraper asks for it, as Prometheus does, else the classic text format."""
        if accept and "application/openmetrics-text" in accept:
            from prometheus_client.openmetrics import exposition as openmetrics

            return openmetrics.generate_latest(self.registry), openmetrics.CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
