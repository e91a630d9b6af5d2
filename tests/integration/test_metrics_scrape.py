"""The pipeline's metrics on a real tritonserver, scraped by a real Prometheus.

1. Triton's metrics port carries the mmtriton_* series with the counts the load implies, and
   they agree with Triton's own counters.
2. A Prometheus on monitoring/prometheus.yml and monitoring/rules/ scrapes Triton and the web
   page; under load every dashboard query and every recording rule returns data (GPU panels
   excepted on a CPU server).
3. `mmtriton top --once` shows every model.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
import urllib.request

import pytest

from mmtriton import spec
from mmtriton.observability import metrics as m
from mmtriton.observability import top
from mmtriton.observability.prometheus_server import PrometheusServer, all_queries, free_port
from mmtriton_build.examples import load_examples
from mmtriton_client.client import ClientError, MultimodalClient, Sample

pytestmark = pytest.mark.integration

SUBSETS = spec.SUBSETS
BROKEN_PNG = b"\x89PNG\r\n\x1a\n not really an image"
PYTHON_MODELS = {s.name for s in spec.ALL_MODELS} - {spec.ENSEMBLE.name}


@pytest.fixture(scope="module")
def examples(built_artifacts):
    complete = [e for e in load_examples(built_artifacts, 64) if e.image and e.text and e.audio]
    assert len(complete) >= 6, "the test split has too few samples with all three modalities"
    return complete


@pytest.fixture(scope="module")
def page(triton_server, tmp_path_factory):
    from mmtriton_client.web.app import WebSettings, launch

    settings = WebSettings(
        triton_url=triton_server.grpc_url,
        n_examples=0,
    )
    server = launch(host="127.0.0.1", port=free_port(), block=False, settings=settings)
    yield server
    server.stop()


def _scrape(url: str) -> top.Snapshot:
    with urllib.request.urlopen(url, timeout=10) as response:
        return top.parse_metrics(response.read().decode(), time.monotonic())


def _scrape_settled(url: str, names: tuple[str, ...], timeout: float = 10.0) -> top.Snapshot:
    """A scrape taken once the counters `names` stopped moving.

    The Python backend records its custom metrics inside execute(), but Triton reports the
    model's own statistics (nv_inference_*) only after the response went back, so a scrape
    taken the instant the last answer arrives can see one side counted and not the other.
    """
    deadline = time.monotonic() + timeout
    previous = _scrape(url)
    while True:
        time.sleep(0.3)
        current = _scrape(url)
        if all(previous.series(n) == current.series(n) for n in names):
            return current
        if time.monotonic() > deadline:
            pytest.fail(f"the counters {names} were still moving {timeout:.0f} s after the load")
        previous = current


def _sample(example, subset) -> Sample:
    return Sample(
        image=example.image if "image" in subset else None,
        text=example.text if "text" in subset else None,
        audio=example.audio if "audio" in subset else None,
    )


def _send(url: str, samples: list[Sample]) -> tuple[int, int]:
    """One request per sample from 4 threads (so the batchers group some); (ok, failed)."""
    results: list[bool] = []

    def worker(chunk: list[Sample]) -> None:
        with MultimodalClient(url) as client:
            for sample in chunk:
                try:
                    client.predict(sample)
                    results.append(True)
                except ClientError:
                    results.append(False)

    threads = [threading.Thread(target=worker, args=(samples[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results.count(True), results.count(False)


def test_custom_metrics_count_what_was_sent(triton_server, examples):
    counters = (
        "nv_inference_exec_count",
        "nv_inference_count",
        f"{m.BATCH_SIZE}_count",
        f"{m.EXECUTE_SECONDS}_count",
        f"{m.PIPELINE_SECONDS}_count",
    )
    before = _scrape_settled(triton_server.metrics_url, counters)
    samples = [_sample(e, subset) for e in examples[:6] for subset in SUBSETS]
    broken = [Sample(image=BROKEN_PNG, text="seven") for _ in range(3)]
    ok, failed = _send(triton_server.grpc_url, samples + broken)
    assert (ok, failed) == (len(samples), len(broken))
    after = _scrape_settled(triton_server.metrics_url, counters)

    def delta(name, keys=("model",)):
        return top.counter_deltas(before, after, name, keys)

    # Every label value exists from the start, so rates see the first request.
    assert {k[0] for k in after.sum_by(m.MODALITY_REQUESTS, ("modalities",))} == set(
        m.MODALITY_LABELS
    )
    assert set(m.FAILURE_REASONS) <= {
        k[0] for k in after.sum_by(m.PREPROCESS_FAILURES, ("reason",))
    }
    modalities = delta(m.MODALITY_REQUESTS, ("modalities",))
    for subset in SUBSETS:
        assert modalities[("+".join(subset),)] == len(examples[:6]), subset
    assert delta(m.PREPROCESS_FAILURES, ("reason",))[("image_decode",)] == len(broken)

    # One pipeline observation per answered (single-sample) request.
    assert sum(delta(f"{m.PIPELINE_SECONDS}_count", ()).values()) == ok
    # Batch sizes and execute() counts agree with Triton's own counters, for every Python model
    # (a batch size counts every row execute() received, rejected ones included).
    executed = {labels["model"] for labels, _ in after.series(f"{m.EXECUTE_SECONDS}_count")}
    assert executed == PYTHON_MODELS
    batch_sum, batch_count = delta(f"{m.BATCH_SIZE}_sum"), delta(f"{m.BATCH_SIZE}_count")
    exec_count, inferences = delta("nv_inference_exec_count"), delta("nv_inference_count")
    for model in PYTHON_MODELS:
        key = (model,)
        assert batch_count[key] == exec_count[key] == delta(f"{m.EXECUTE_SECONDS}_count")[key]
        assert batch_sum[key] == inferences[key], model
    # Latencies are plausible: the pipeline takes longer than any single execute().
    p50, _, p99 = top.histogram_quantiles(before, after, m.PIPELINE_SECONDS, (0.5, 0.95, 0.99))
    assert 0 < p50 <= p99 < 30


def test_every_dashboard_query_and_recording_rule_returns_data(triton_server, page, examples):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not installed (scripts/install-system-deps.sh)")
    from gradio_client import Client

    metrics_target = triton_server.metrics_url.split("//", 1)[1].split("/", 1)[0]
    web_target = page.url.split("//", 1)[1].rstrip("/")
    stop = threading.Event()
    samples = [_sample(e, subset) for e in examples[:4] for subset in SUBSETS]

    def load() -> None:
        web = Client(page.url, verbose=False)
        while not stop.is_set():
            _send(triton_server.grpc_url, [*samples, Sample(image=BROKEN_PNG)])
            web.predict(None, examples[0].text, None, api_name="/predict")
            web.predict(None, "", None, api_name="/predict")  # no_input

    loader = threading.Thread(target=load, daemon=True)
    with PrometheusServer(metrics_target, web_target, scrape_interval="1s") as prom:
        loader.start()
        try:
            prom.wait_for_targets(timeout_s=60)
            prom.wait_for_data("mmtriton:pipeline_seconds:p99_1m", timeout_s=90)
            missing = []
            deadline = time.monotonic() + 60
            for query in all_queries():
                if query.gpu_only:
                    assert not prom.query(query.expr), f"GPU data on a CPU server: {query.name}"
                    continue
                while True:
                    result = prom.query(query.expr)
                    if any(r["value"][1] != "NaN" for r in result):
                        break
                    if time.monotonic() > deadline:
                        missing.append(f"{query.source}: {query.name}: {query.expr}")
                        break
                    time.sleep(1)
            assert not missing, "no data for:\n" + "\n".join(missing)
            alerts = prom.query('ALERTS{alertname=~"MmtritonTargetDown|MmtritonModelNotLoaded"}')
            assert not alerts, alerts
        finally:
            stop.set()
            loader.join(timeout=120)


def test_top_once_shows_every_model(triton_server, examples, capsys):
    samples = [_sample(e, ("image", "text", "audio")) for e in examples[:4]]
    worker = threading.Thread(target=_send, args=(triton_server.grpc_url, samples * 3))
    worker.start()
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    args = parser.parse_args(["--url", triton_server.metrics_url, "--once", "--interval", "1"])
    try:
        assert top.run(args) == 0
    finally:
        worker.join()
    out = capsys.readouterr().out
    rows = {line.split()[0] for line in out.splitlines()[2:] if line.strip()}
    assert {s.name for s in spec.ALL_MODELS} <= rows
