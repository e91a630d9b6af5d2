"""Pure logic of mmtriton.observability: bucket math, quantiles, the web metrics, `mmtriton top`.

The Python-backend side is checked for real against a running Triton by
tests/integration/test_metrics_scrape.py; here only the arithmetic and the text handling.
"""

from __future__ import annotations

import argparse
import math
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mmtriton import cli, spec
from mmtriton.observability import metrics as m
from mmtriton.observability import top
from mmtriton_client.web.metrics import (
    NO_MODALITIES,
    WEB_ERROR_KINDS,
    WEB_MODALITY_LABELS,
    WebMetrics,
    web_modalities_label,
)

INF = math.inf

# A real scrape of Triton 2.51's metrics port (trimmed: fewer models, reasons and buckets, shorter
# HELP texts) after 200 requests to a small ensemble whose Python models record with ModelMetrics.
AFTER = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="multimodal",version="1"} 140
nv_inference_request_success{model="fusion",version="1"} 140
nv_inference_request_success{model="preprocess",version="1"} 200
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="multimodal",reason="OTHER",version="1"} 120
nv_inference_request_failure{model="multimodal",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="preprocess",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="preprocess",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="fusion",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="fusion",reason="OTHER",version="1"} 0
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="multimodal",version="1"} 220
nv_inference_count{model="fusion",version="1"} 220
nv_inference_count{model="preprocess",version="1"} 321
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="multimodal",version="1"} 140
nv_inference_exec_count{model="fusion",version="1"} 62
nv_inference_exec_count{model="preprocess",version="1"} 90
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="multimodal",version="1"} 3731356
nv_inference_request_duration_us{model="fusion",version="1"} 1996287
nv_inference_request_duration_us{model="preprocess",version="1"} 2311298
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="multimodal",version="1"} 117
nv_inference_queue_duration_us{model="fusion",version="1"} 740434
nv_inference_queue_duration_us{model="preprocess",version="1"} 353576
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="multimodal",version="1"} 2651767
nv_inference_compute_infer_duration_us{model="fusion",version="1"} 1193198
nv_inference_compute_infer_duration_us{model="preprocess",version="1"} 1908262
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="multimodal",version="1"} 0
nv_inference_pending_request_count{model="fusion",version="1"} 2
nv_inference_pending_request_count{model="preprocess",version="1"} 0
# HELP mmtriton_modality_requests_total Samples accepted by preprocess, by the modalities they carry
# TYPE mmtriton_modality_requests_total counter
mmtriton_modality_requests_total{modalities="text+audio"} 17
mmtriton_modality_requests_total{modalities="image+audio"} 39
mmtriton_modality_requests_total{modalities="image+text"} 41
mmtriton_modality_requests_total{modalities="image+text+audio"} 34
mmtriton_modality_requests_total{modalities="audio"} 17
mmtriton_modality_requests_total{modalities="text"} 27
mmtriton_modality_requests_total{modalities="image"} 45
# HELP mmtriton_preprocess_failures_total Samples preprocess rejected, by reason
# TYPE mmtriton_preprocess_failures_total counter
mmtriton_preprocess_failures_total{reason="image_decode"} 0
mmtriton_preprocess_failures_total{reason="no_input"} 63
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.5
# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25276059648
# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 2493968384
# HELP mmtriton_execute_seconds Wall time of each execute() call of a Python-backend model
# TYPE mmtriton_execute_seconds histogram
mmtriton_execute_seconds_count{model="preprocess"} 90
mmtriton_execute_seconds_sum{model="preprocess"} 0.498985538999932
mmtriton_execute_seconds_bucket{model="preprocess",le="0.005"} 45
mmtriton_execute_seconds_bucket{model="preprocess",le="0.01"} 79
mmtriton_execute_seconds_bucket{model="preprocess",le="0.025"} 90
mmtriton_execute_seconds_bucket{model="preprocess",le="1"} 90
mmtriton_execute_seconds_bucket{model="preprocess",le="+Inf"} 90
mmtriton_execute_seconds_count{model="fusion"} 62
mmtriton_execute_seconds_sum{model="fusion"} 0.3433666369992352
mmtriton_execute_seconds_bucket{model="fusion",le="0.005"} 0
mmtriton_execute_seconds_bucket{model="fusion",le="0.01"} 61
mmtriton_execute_seconds_bucket{model="fusion",le="0.025"} 62
mmtriton_execute_seconds_bucket{model="fusion",le="1"} 62
mmtriton_execute_seconds_bucket{model="fusion",le="+Inf"} 62
# HELP mmtriton_pipeline_seconds Per request, seconds from preprocess start to fusion end
# TYPE mmtriton_pipeline_seconds histogram
mmtriton_pipeline_seconds_count 140
mmtriton_pipeline_seconds_sum 2.989224498000001
mmtriton_pipeline_seconds_bucket{le="0.005"} 0
mmtriton_pipeline_seconds_bucket{le="0.01"} 0
mmtriton_pipeline_seconds_bucket{le="0.025"} 129
mmtriton_pipeline_seconds_bucket{le="0.05"} 133
mmtriton_pipeline_seconds_bucket{le="0.075"} 133
mmtriton_pipeline_seconds_bucket{le="0.1"} 139
mmtriton_pipeline_seconds_bucket{le="0.5"} 140
mmtriton_pipeline_seconds_bucket{le="+Inf"} 140
"""


def zeroed(text: str) -> str:
    """The same exposition as a freshly started server: every counter at 0, gauges kept."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#") and not line.startswith("nv_cpu_"):
            line = re.sub(r" \S+$", " 0", line)
        out.append(line)
    return "\n".join(out) + "\n"


BEFORE = zeroed(AFTER)


# --- bucket math ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bound", "text"), [(1, "1"), (64.0, "64"), (0.005, "0.005"), (2.5, "2.5"), (INF, "+Inf")]
)
def test_format_le_writes_bounds_as_prometheus_does(bound, text):
    assert m.format_le(bound) == text


def test_bucket_increments_are_cumulative_and_inclusive():
    buckets = m.BATCH_SIZE_BUCKETS
    assert m.bucket_increments(3, buckets) == ("4", "8", "16", "32", "64", "+Inf")
    assert m.bucket_increments(1, buckets) == ("1", "2", "4", "8", "16", "32", "64", "+Inf")
    assert m.bucket_increments(64, buckets) == ("64", "+Inf")
    assert m.bucket_increments(65, buckets) == ("+Inf",)
    assert m.bucket_increments(0.0101, (0.1, 0.01, 0.05)) == ("0.05", "0.1", "+Inf")


def test_bucket_counters_give_back_the_distribution():
    values = [0.003] * 50 + [0.02] * 30 + [0.4] * 15 + [20.0] * 5
    counts: Counter[str] = Counter()
    for v in values:
        counts.update(m.bucket_increments(v, m.EXECUTE_SECONDS_BUCKETS))
    assert counts["+Inf"] == len(values)
    assert counts["0.005"] == 50 and counts["0.025"] == 80 and counts["0.5"] == 95
    assert counts["10"] == 95  # the 20 s calls land in +Inf only
    buckets = [(float(le), n) for le, n in counts.items()]
    assert 0.0025 < m.quantile_from_buckets(0.5, buckets) <= 0.005
    assert 0.25 < m.quantile_from_buckets(0.9, buckets) <= 0.5
    assert m.quantile_from_buckets(0.99, buckets) == 10.0  # rank in +Inf: highest finite bound


def test_quantile_from_buckets_follows_histogram_quantile():
    # The same buckets as monitoring/tests/recording_test.yml, where promtool gets p50 = 0.05
    # and p95 = 0.095 from histogram_quantile().
    buckets = [(0.05, 10), (0.1, 20), (INF, 20)]
    assert m.quantile_from_buckets(0.5, buckets) == pytest.approx(0.05)
    assert m.quantile_from_buckets(0.95, buckets) == pytest.approx(0.095)
    assert m.quantile_from_buckets(0.25, buckets) == pytest.approx(0.025)  # first bucket from 0
    assert m.quantile_from_buckets(1.0, buckets) == pytest.approx(0.1)
    # Order does not matter; counts read a moment apart that dip are made monotonic.
    assert m.quantile_from_buckets(0.5, [(INF, 20), (0.1, 19), (0.05, 10), (0.075, 9)]) == (
        pytest.approx(0.05)
    )


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [], math.nan),
        (0.5, [(1.0, 0), (INF, 0)], math.nan),  # no observations
        (0.5, [(1.0, 5), (2.0, 5)], math.nan),  # no +Inf bucket
        (-0.1, [(1.0, 5), (INF, 5)], -INF),
        (1.1, [(1.0, 5), (INF, 5)], INF),
        (math.nan, [(1.0, 5), (INF, 5)], math.nan),
    ],
)
def test_quantile_from_buckets_edge_cases(q, buckets, expected):
    got = m.quantile_from_buckets(q, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


# --- labels --------------------------------------------------------------------------------
def test_modality_labels_are_the_seven_canonical_subsets():
    assert len(m.MODALITY_LABELS) == 7 == len(set(m.MODALITY_LABELS))
    assert m.MODALITY_LABELS[0] == "image" and m.MODALITY_LABELS[-1] == "image+text+audio"
    for label in m.MODALITY_LABELS:
        parts = label.split("+")
        assert parts == [x for x in spec.MODALITIES if x in parts]


def test_modality_label_and_counts_from_presence_rows():
    assert m.modality_label([1.0, 0.0, 1.0]) == "image+audio"
    assert m.modality_label([False, True, False]) == "text"
    assert m.modality_label([0, 0, 0]) is None
    with pytest.raises(ValueError):
        m.modality_label([1, 0])
    rows = [[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0], [0.9, 0.1, 0.0]]
    assert m.count_modality_labels(rows) == {"image+text+audio": 2, "text+audio": 1, "image": 1}


def test_failure_reasons_are_slugs_and_others_collapse():
    for reason in m.FAILURE_REASONS:
        assert m.failure_reason(reason) == reason
    assert m.failure_reason("new_reason") == "new_reason"
    assert m.failure_reason("Image failed: /tmp/x.png") == m.OTHER_REASON
    assert m.failure_reason("x" * 80) == m.OTHER_REASON


def test_failure_reasons_cover_every_reason_preprocess_raises():
    from mmtriton.preprocess.errors import REASONS

    assert set(REASONS) <= set(m.FAILURE_REASONS)
    assert set(m.FAILURE_REASONS) - set(REASONS) == {"internal"}


# --- ModelMetrics, with the smallest stand-in for pb_utils.MetricFamily -----------------------
class _CounterOnlyFamily:
    """Records what ModelMetrics asks of pb_utils.MetricFamily (no behaviour of its own).

    Like an older Python-backend stub: COUNTER (and GAUGE) kinds only.
    """

    COUNTER = "counter"
    created: dict[str, _CounterOnlyFamily]

    def __init__(self, name, description, kind):
        self.name, self.kind, self.series = name, kind, {}
        self.created[name] = self

    def Metric(self, labels, buckets=None):
        key = tuple(sorted(labels.items()))
        self.series[key] = _Metric(buckets)
        return self.series[key]


class _Metric:
    def __init__(self, buckets):
        self.buckets, self.value, self.observed = buckets, 0.0, []

    def increment(self, v):
        self.value += v

    def observe(self, v):
        self.observed.append(v)


class _Family(_CounterOnlyFamily):
    """Triton >= 24.08: native histograms too."""

    HISTOGRAM = "histogram"


def _factory(base):
    return type("Factory", (base,), {"created": {}})


def test_model_metrics_uses_native_histograms_when_offered():
    factory = _factory(_Family)
    rec = m.ModelMetrics("preprocess", factory, inputs=True)
    assert rec.native_histograms
    assert set(factory.created) == {
        m.BATCH_SIZE,
        m.EXECUTE_SECONDS,
        m.MODALITY_REQUESTS,
        m.PREPROCESS_FAILURES,
    }
    # Every label value exists at zero before the first request.
    assert len(factory.created[m.MODALITY_REQUESTS].series) == 7
    assert len(factory.created[m.PREPROCESS_FAILURES].series) == len(m.FAILURE_REASONS)
    rec.observe_execute(5, 0.012)
    batch = factory.created[m.BATCH_SIZE].series[(("model", "preprocess"),)]
    assert batch.buckets == list(m.BATCH_SIZE_BUCKETS) and batch.observed == [5.0]
    rec.count_modalities([[1, 0, 1], [1, 0, 1], [0, 0, 0]])
    rec.count_failure("audio_decode", 2)
    rec.count_failure("Something Odd")
    counters = factory.created[m.MODALITY_REQUESTS].series
    assert counters[(("modalities", "image+audio"),)].value == 2
    failures = factory.created[m.PREPROCESS_FAILURES].series
    assert failures[(("reason", "audio_decode"),)].value == 2
    assert failures[(("reason", "other"),)].value == 1


def test_model_metrics_emulates_histograms_with_cumulative_counters():
    factory = _factory(_CounterOnlyFamily)
    rec = m.ModelMetrics("fusion", factory, pipeline=True)
    assert not rec.native_histograms
    assert f"{m.PIPELINE_SECONDS}_bucket" in factory.created
    for seconds in (0.02, 0.3, 0.3, 7.0):
        rec.observe_pipeline(seconds)
    rec.observe_pipeline(0.04)
    rec.observe_pipeline(-0.001)  # a wall clock stepping back counts as 0
    buckets = factory.created[f"{m.PIPELINE_SECONDS}_bucket"].series
    value = {dict(k)["le"]: s.value for k, s in buckets.items()}
    assert value["0.005"] == 1 and value["0.025"] == 2 and value["0.05"] == 3
    assert value["0.3"] == 5 and value["5"] == 5 and value["+Inf"] == 6
    assert factory.created[f"{m.PIPELINE_SECONDS}_count"].series[()].value == 6
    assert factory.created[f"{m.PIPELINE_SECONDS}_sum"].series[()].value == pytest.approx(7.66)
    with rec.time_execute(3):
        pass
    count = factory.created[f"{m.BATCH_SIZE}_count"].series[(("model", "fusion"),)]
    assert count.value == 1


def test_custom_metric_names_cover_every_series():
    names = m.custom_metric_names()
    assert m.MODALITY_REQUESTS in names and "mmtriton_pipeline_seconds_bucket" in names
    assert all(n.startswith("mmtriton_") for n in names)


# --- web page metrics ----------------------------------------------------------------------
def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(generate_latest(registry).decode())
        for s in fam.samples
    }


def test_web_metrics_registries_are_independent_and_pre_populated():
    a, b = WebMetrics(CollectorRegistry()), WebMetrics(CollectorRegistry())
    a.observe_request("image+text", 0.2)
    a.count_error("timeout")
    with a.track(NO_MODALITIES):
        pass
    assert (
        a.registry.get_sample_value("mmtriton_web_requests_total", {"modalities": "image+text"})
        == 1
    )
    assert a.registry.get_sample_value("mmtriton_web_request_seconds_count") == 2
    assert b.registry.get_sample_value("mmtriton_web_request_seconds_count") == 0
    samples = _samples(b.registry)
    for label in WEB_MODALITY_LABELS:
        assert samples[("mmtriton_web_requests_total", (("modalities", label),))] == 0
    for kind in WEB_ERROR_KINDS:
        assert samples[("mmtriton_web_errors_total", (("kind", kind),))] == 0
    body, content_type = a.exposition()
    assert b"mmtriton_web_request_seconds_bucket" in body and content_type.startswith("text/")


def test_web_metrics_refuse_unknown_labels():
    web = WebMetrics(CollectorRegistry())
    with pytest.raises(ValueError):
        web.count_error("oops")
    with pytest.raises(ValueError):
        web.observe_request("video", 1.0)
    assert web_modalities_label(image=b"x", audio=b"y") == "image+audio"
    assert web_modalities_label(text="") == NO_MODALITIES


# --- mmtriton top --------------------------------------------------------------------------
def test_parse_metrics_finds_counters_by_their_wire_name():
    snap = top.parse_metrics(AFTER)
    assert snap.sum_by("nv_inference_count", ()) == {(): 761}
    assert snap.sum_by(m.MODALITY_REQUESTS, ("modalities",))[("image",)] == 45
    assert snap.sum_by("mmtriton_pipeline_seconds_bucket", ("le",))[("+Inf",)] == 140


def test_build_view_from_two_real_scrapes():
    view = top.build_view(top.parse_metrics(BEFORE, 0.0), top.parse_metrics(AFTER, 10.0))
    rows = {r.model: r for r in view.rows}
    assert [r.model for r in view.rows] == ["preprocess", "fusion", "multimodal"]  # spec order
    pre = rows["preprocess"]
    assert pre.requests_per_s == 20.0 and pre.inferences_per_s == pytest.approx(32.1)
    assert pre.batch_size == pytest.approx(321 / 90)
    assert pre.queue_ms == pytest.approx(353576 / 200 / 1000)
    assert pre.compute_ms == pytest.approx(1908262 / 200 / 1000)
    assert pre.percentiles_ms == pytest.approx((5.0, 10 + 15 * 6.5 / 11, 10 + 15 * 10.1 / 11))
    assert rows["fusion"].percentiles_ms[0] == pytest.approx(5 + 5 * 31 / 61)
    assert rows["fusion"].pending == 2
    ensemble = rows["multimodal"]
    assert ensemble.failures == {"OTHER": 120}
    # The ensemble row shows the end-to-end pipeline percentiles.
    assert ensemble.percentiles_ms == view.pipeline_ms
    p50, _, p99 = view.pipeline_ms
    assert p50 == pytest.approx((0.01 + 0.015 * 70 / 129) * 1000)
    assert p99 == pytest.approx((0.075 + 0.025 * 5.6 / 6) * 1000)
    assert view.pipeline_per_s == 14.0
    assert view.modalities["image"] == 45 and sum(view.modalities.values()) == 220
    assert view.preprocess_failures == {"no_input": 63}
    assert view.cpu_utilization == 0.5 and view.gpus == []


def test_render_prints_one_line_per_model_and_the_summaries():
    view = top.build_view(top.parse_metrics(BEFORE, 0.0), top.parse_metrics(AFTER, 10.0))
    text = top.render(view, url="http://t:8002/metrics", now="12:00:00")
    lines = text.splitlines()
    assert lines[0] == "mmtriton top  http://t:8002/metrics  interval 10.0 s  12:00:00"
    assert lines[1].split() == [c for c, _, _ in top.COLUMNS]
    pre = next(line for line in lines if line.startswith("preprocess"))
    assert pre.split() == ["preprocess", "20.0", "32.1", "3.6", "1.77", "9.54", "5.0", "18.9",
                           "23.8", "0", "-"]  # fmt: skip
    assert next(line for line in lines if line.startswith("multimodal")).endswith("OTHER:120")
    assert "p50 18.1 ms" in text and "p99 98.3 ms" in text and "objective p99 500 ms" in text
    assert "image:20%" in text and "rejected   no_input:63" in text
    assert "memory 2.3/23.5 GiB" in text


def test_counter_emulated_histograms_give_the_same_view():
    """Servers whose stub lacks HISTOGRAM export three counter families instead."""
    native = [line for line in AFTER.splitlines() if line.startswith("mmtriton_pipeline")]
    emulated = []
    for part in ("bucket", "count", "sum"):
        emulated.append(f"# TYPE mmtriton_pipeline_seconds_{part} counter")
        emulated += [
            line for line in native if line.startswith(f"mmtriton_pipeline_seconds_{part}")
        ]
    text = "\n".join(emulated) + "\n"
    view = top.build_view(top.parse_metrics(zeroed(text), 0), top.parse_metrics(text, 10))
    expected = top.build_view(top.parse_metrics(BEFORE, 0), top.parse_metrics(AFTER, 10))
    assert view.pipeline_ms == expected.pipeline_ms and view.pipeline_per_s == 14.0


def test_counter_reset_counts_from_zero():
    after = top.parse_metrics('nv_inference_count{model="a"} 5\n', 10)
    before = top.parse_metrics('nv_inference_count{model="a"} 100\n', 0)
    assert top.counter_deltas(before, after, "nv_inference_count", ("model",)) == {("a",): 5}


def test_view_without_traffic_shows_dashes():
    view = top.build_view(top.parse_metrics(BEFORE, 0), top.parse_metrics(BEFORE, 2))
    assert all(math.isnan(v) for v in view.pipeline_ms)
    text = top.render(view, now="")
    assert "p50 - ms" in text and "modalities -" in text


def test_web_section_from_the_web_pages_metrics():
    web = WebMetrics(CollectorRegistry())
    first = web.exposition()[0].decode()
    for _ in range(8):
        web.observe_request("text", 0.2)
    web.count_error("server_busy")
    second = web.exposition()[0].decode()
    view = top.build_view(
        top.parse_metrics(BEFORE, 0),
        top.parse_metrics(AFTER, 4),
        top.parse_metrics(first, 0),
        top.parse_metrics(second, 4),
    )
    assert view.web is not None and view.web.requests_per_s == 2.0
    assert view.web.errors == {"server_busy": 1}
    assert 150 < view.web.percentiles_ms[0] <= 200
    assert "errors server_busy:1" in top.render(view)


@pytest.fixture()
def metrics_endpoint():
    """A local HTTP server answering BEFORE on the first GET and AFTER afterwards."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = (BEFORE if not hits else AFTER).encode()
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_top_once_through_the_cli(metrics_endpoint, capsys):
    code = cli.main(["top", "--url", metrics_endpoint, "--once", "--interval", "0.05"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"mmtriton top  {metrics_endpoint}")
    assert re.search(r"^multimodal .* OTHER:\d+", out, re.MULTILINE)


def test_top_once_fails_cleanly_without_a_server(capsys):
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    args = parser.parse_args(["--url", "http://127.0.0.1:9/metrics", "--once", "--timeout", "1"])
    assert top.run(args) == 1
    assert "cannot read metrics" in capsys.readouterr().err
