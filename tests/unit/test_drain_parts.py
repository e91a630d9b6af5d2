"""What `mmtriton drain` reads from Triton's metrics (mmtriton/server/drain.py). The drain on a
real server, with callers refused just before the stop: tests/integration/test_shutdown.py."""

from __future__ import annotations

from mmtriton.server import drain

METRICS = """\
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="multimodal",reason="OTHER",version="1"} 6
nv_inference_request_failure{model="multimodal",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="preprocess",reason="OTHER",version="1"} 100
# HELP mmtriton_admission_refused_total Requests preprocess refused
# TYPE mmtriton_admission_refused_total counter
mmtriton_admission_refused_total{model="preprocess"} 5
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="fusion",version="1"} 1
nv_inference_pending_request_count{model="preprocess",version="1"} 2
# HELP mmtriton_modality_requests_total Samples accepted
# TYPE mmtriton_modality_requests_total counter
mmtriton_modality_requests_total{model="preprocess",modality="image"} 10
# HELP mmtriton_pipeline_seconds Pipeline latency
# TYPE mmtriton_pipeline_seconds histogram
mmtriton_pipeline_seconds_count{model="fusion"} 7
"""


def test_refusals_count_admission_and_the_ensembles_failures_only() -> None:
    # 5 refused by admission + 8 ensemble failures; a step's own failures are not callers'.
    assert drain.refused(METRICS) == 13


def test_in_flight_is_what_is_queued_plus_what_was_accepted_and_not_yet_fused() -> None:
    assert drain.in_flight(METRICS) == 3 + (10 - 7)


def test_the_grace_outlasts_the_default_clients_longest_backoff() -> None:
    from mmtriton_client.retry import RetryPolicy

    assert RetryPolicy().max_backoff_s < drain.RETRY_GRACE_S
