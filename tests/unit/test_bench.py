"""`mmtriton bench`: the arithmetic, the serializations and the JSON shape (the real run:
tests/integration/test_bench_run.py).

Speed is measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from mmtriton import spec
from mmtriton_build.export import repository as repo_files
from mmtriton_build.export.policy import POLICIES
from mmtriton_client.client import Sample
from mmtriton_harness.bench import command, perf_analyzer, server
from mmtriton_harness.bench.load import LoadPoint, merge
from mmtriton_harness.bench.stats import latency_summary, parse_statistics, percentile, stats_delta
from mmtriton_harness.bench.workload import MIX, SUBSETS, mixed_samples

# Issue 16's keys, then the ones kept from before.
REQUIRED_KEYS = {
    "limit_rps",
    "served_over_limit",
    "spread",
    "served_over_naive",
    "subsets",
    "mixed",
    "preprocess_cpu_ms",
    "naive_rps",
    "served",
    "served_peak_rps",
    "unbatched_peak_rps",
    "server_rss_mb",
}
SUBSET_FIELDS = {"served_rps", "limit_rps", "cpu_ms_per_request"}
MIXED_FIELDS = {"served_rps", "limit_rps", "served_over_limit"}
SERVED_KEYS = {"concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors"}


# ----------------------------------------------------------------------------- percentiles


@pytest.mark.parametrize("q", [0, 1, 50, 95, 99, 100])
def test_percentile_matches_numpy(q) -> None:
    values = list(np.random.default_rng(q).exponential(10.0, size=137))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.010] * 98 + [0.100, 0.200])
    assert summary["p50_ms"] == 10.0
    assert summary["p99_ms"] > summary["p95_ms"] >= 10.0
    assert latency_summary([]) == {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}


# ----------------------------------------------------------------------------- statistics


def _model_stats(name: str, n: int, executions: int, queue_ns: int, infer_ns: int) -> dict:
    """One model's entry as MessageToJson writes it: 64-bit ints as strings, zeros left out."""
    timing = {"count": str(n), "ns": str(infer_ns)}
    entry = {
        "name": name,
        "version": "1",
        "inference_count": str(n),
        "execution_count": str(executions),
        "inference_stats": {
            "success": {"count": str(n), "ns": str(queue_ns + infer_ns)},
            "fail": {},
            "queue": {"count": str(n), "ns": str(queue_ns)},
            "compute_input": {"count": str(n), "ns": "0"},
            "compute_infer": timing,
            "compute_output": {"count": str(n)},
        },
        "batch_stats": [{"batch_size": "4", "compute_infer": {"count": str(executions)}}],
    }
    if n == 0:
        for key in ("inference_count", "execution_count"):
            del entry[key]
        entry["inference_stats"] = {}
        entry["batch_stats"] = []
    return entry


def test_stats_delta_gives_per_request_phases_and_batch_size() -> None:
    before = parse_statistics(
        {"model_stats": [_model_stats("text_encoder", 10, 5, 10_000_000, 20_000_000)]}
    )
    after = parse_statistics(
        {
            "model_stats": [
                _model_stats("text_encoder", 50, 15, 50_000_000, 420_000_000),
                _model_stats("idle", 0, 0, 0, 0),
            ]
        }
    )
    assert after["idle"]["inference_count"] == 0
    delta = stats_delta(before, after)
    assert set(delta) == {"text_encoder"}  # a model without new requests is left out
    d = delta["text_encoder"]
    assert d["requests"] == 40 and d["executions"] == 10 and d["avg_batch"] == 4.0
    assert d["successes"] == 40  # what the bench divides the server's CPU by
    assert d["queue_ms"] == pytest.approx(1.0)  # 40 ms over 40 requests
    assert d["compute_infer_ms"] == pytest.approx(10.0)  # 400 ms over 40 requests
    assert d["compute_output_ms"] == 0.0


def test_stats_delta_of_a_new_model_starts_from_zero() -> None:
    after = parse_statistics({"model_stats": [_model_stats("fusion", 8, 2, 8_000_000, 0)]})
    assert stats_delta({}, after)["fusion"]["queue_ms"] == pytest.approx(1.0)


def _point(rps: float, latencies: list[float], batch: float) -> LoadPoint:
    models = {
        "fusion": {
            "requests": 10, "executions": 5, "avg_batch": batch, "queue_ms": 1.0,
            "compute_input_ms": 0.1, "compute_infer_ms": 2.0, "compute_output_ms": 0.1,
        }
    }  # fmt: skip
    return LoadPoint(
        "all three", 8, rps, latency_summary(latencies), 0, {}, len(latencies), models,
        tuple(latencies), 1.0,
    )  # fmt: skip


def test_merge_pools_windows() -> None:
    merged = merge([_point(2.0, [0.01, 0.02], 2.0), _point(4.0, [0.03] * 4, 4.0)])
    assert merged.rps == pytest.approx(3.0)  # six requests in two seconds
    assert merged.requests == 6
    assert merged.models["fusion"]["avg_batch"] == pytest.approx(3.0)
    assert merged.models["fusion"]["requests"] == 20


# ----------------------------------------------------------------------------- perf_analyzer


def test_bytes_serialization_matches_tritonclient() -> None:
    for value in (b"seven", bytes(range(256)) * 3):
        expected = serialize_byte_tensor(np.array([value], dtype=object)).item()
        assert perf_analyzer.serialize_bytes(value) == expected
    assert perf_analyzer.serialize_bytes(b"abc") == b"\x03\x00\x00\x00abc"
    assert perf_analyzer.serialize_bytes(b"") == b"\x00\x00\x00\x00"


def test_input_data_encodes_each_present_input() -> None:
    samples = [Sample(image=b"\x89PNG...", text="seven", audio=b"RIFF..."), Sample(text="two")]
    data = perf_analyzer.input_data(samples)
    assert len(data["data"]) == 2
    first, second = data["data"]
    assert set(first) == {"IMAGE", "TEXT", "AUDIO"}
    assert set(second) == {"TEXT"}  # absent modalities are not sent
    raw = base64.b64decode(first["TEXT"]["b64"])
    assert raw == len(b"seven").to_bytes(4, "little") + b"seven"
    assert first["IMAGE"]["shape"] == list(spec.RAW_IMAGE.dims)


def test_parse_perf_analyzer_csv() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        "p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,"
        "response wait\n"
        "8,71.5,30,900,4000,100,60000,200,20,110000,150000,160000,200000,112000,0,0\n"
    )
    (row,) = perf_analyzer.parse_csv(text)
    assert row["concurrency"] == 8 and row["rps"] == 71.5
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (110.0, 160.0, 200.0)
    assert row["server_queue_ms"] == 4.0 and row["server_compute_ms"] == 60.3


# ----------------------------------------------------------------------------- variants


def test_unbatched_variant_drops_dynamic_batching_only() -> None:
    files = server.variant_configs(list(spec.LABELS), dynamic_batching=False)
    for model in ("preprocess", "image_encoder", "text_encoder", "audio_encoder", "fusion"):
        text = files[f"{model}/config.pbtxt"]
        assert "dynamic_batching" not in text and "preferred_batch_size" not in text
        assert f"max_batch_size: {POLICIES[model].max_batch_size}" in text
        assert "instance_group" in text and "parameters" in text
        assert text.count("{") == text.count("}")


def test_policy_variant_changes_only_that_model_and_restores_the_policy() -> None:
    import dataclasses

    changed = {"preprocess": dataclasses.replace(POLICIES["preprocess"], cpu_instances=5)}
    files = server.variant_configs(list(spec.LABELS), changed)
    assert "count: 5" in files["preprocess/config.pbtxt"]
    shipped = repo_files.generate_configs(list(spec.LABELS))
    assert files["text_encoder/config.pbtxt"] == shipped["text_encoder/config.pbtxt"]
    assert "count: 5" not in shipped["preprocess/config.pbtxt"]


def test_write_variant_links_model_files(tmp_path) -> None:
    source = tmp_path / "src"
    for rel, text in repo_files.generate_configs(list(spec.LABELS)).items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    (source / "image_encoder" / "1").mkdir(parents=True)
    (source / "image_encoder" / "1" / "model.onnx").write_bytes(b"onnx")
    target = server.write_variant(source, tmp_path / "variant", dynamic_batching=False)
    linked = target / "image_encoder" / "1" / "model.onnx"
    assert linked.is_symlink() and linked.read_bytes() == b"onnx"
    assert "dynamic_batching" not in (target / "fusion" / "config.pbtxt").read_text()


def test_process_tree_rss_counts_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        alone = server.rss_kb(os.getpid())
        assert alone > 0
        assert server.process_tree_rss_mb(os.getpid()) * 1024 > alone
    finally:
        child.kill()
        child.wait()
    assert server.rss_kb(child.pid) == 0


def test_mixed_samples_cover_every_subset() -> None:
    full = [Sample(image=b"i", text="t", audio=b"a")] * len(SUBSETS)
    assert {tuple(s.modalities()) for s in mixed_samples(full)} == set(SUBSETS)


# ----------------------------------------------------------------------------- JSON shape


def _result() -> dict:
    """A whole result as run_bench builds it, from synthetic rounds (2 cores)."""
    from .test_bench_limits import STAGE_MS

    served = [
        {**_point(30.0 * c, [0.05] * 5, 2.0).as_dict(), "concurrency": c, "rps": 30.0 * c}
        for c in (1, 8)
    ]
    rounds = []
    for scale in (1.0, 1.1, 0.9):
        points = {
            spec.subset_name(sub): {
                "rps": 110.0 * scale if len(sub) == 3 else 400.0 * scale,
                "cpu_ms_per_request": 20.0, "p50_ms": 10.0, "p99_ms": 30.0, "errors": 0,
            }
            for sub in spec.SUBSETS
        }  # fmt: skip
        points["mixed"] = {**points["text"], "rps": 150.0}
        steps = {"tritonserver": 2.0, "preprocess": 9.0, "text_encoder": 5.0 * scale}
        for p in points.values():
            p["client_cpu_ms_per_request"] = 1.0
            p["step_cpu_ms_per_request"] = steps
        null = {
            k: {"rps": 900.0, "cpu_ms_per_request": 1.5, "step_cpu_ms_per_request": {"fusion": 0.1}}
            for k in points
        }
        rounds.append(
            {
                "stages": {k: v * scale for k, v in STAGE_MS.items()},
                "preprocess_cpu_ms": 7.0,
                "preprocess_cpu_ms_before": 14.0,
                "served": points,
                "null": null,
            }
        )
    r = {
        "settings": {"preprocess_before": "06d4440", "load_concurrency": 16, "window_s": 5.0},
        "cpus": 2,
        "loadavg_start": 1.0,
        "loadavg_end": 2.0,
        "audio_variants": ["16 kHz mono (as built)"],
        "mix": {"image+text+audio": 0.4, "text": 0.2, "image+text": 0.2, "audio": 0.2},
        "stage_search": {"stages": {k: {"batch": 16} for k in STAGE_MS}},
        "naive_rps": 10.0,
        "naive": {"rps": 10.0, "p50_ms": 90.0, "p95_ms": 99.0, "p99_ms": 110.0},
        "served": served,
        "served_peak_rps": 240.0,
        "served_peak_concurrency": 8,
        "unbatched": served[:1],
        "unbatched_peak_rps": 50.0,
        "server_rss_mb": 900.0,
        **command.summarise(rounds, 2, MIX),
    }
    r["served_over_naive"] = round(r["subsets"]["image+text+audio"]["served_rps"] / 10.0, 3)
    r["targets"] = command.targets(r)
    return r


def test_json_view_has_issue_16s_keys_first() -> None:
    doc = command.json_view(_result())
    assert set(list(doc)[: len(REQUIRED_KEYS)]) == REQUIRED_KEYS
    assert set(doc["subsets"]) == {spec.subset_name(s) for s in spec.SUBSETS}
    for name, entry in doc["subsets"].items():
        assert set(entry) >= SUBSET_FIELDS, name
    assert set(doc["mixed"]) >= MIXED_FIELDS
    assert set(doc["spread"]) >= {"min", "max", "kind"}
    for point in doc["served"]:
        assert set(point) == SERVED_KEYS
    json.dumps(doc)


def test_targets_are_judged_from_the_numbers() -> None:
    r = _result()
    t = r["targets"]
    # All three: limits 125, 113.6, 138.9 req/s against 110, 121, 99 served: ratios 0.88,
    # 1.065, 0.713, median 0.88 (not a ratio of medians: 110 / 125 happens to be the same).
    assert t["served_over_limit"]["value"] == pytest.approx(0.88, abs=0.001)
    assert not t["served_over_limit"]["met"]  # 0.88 < 0.9
    assert (r["spread"]["min"], r["spread"]["max"]) == (0.713, 1.065)
    assert t["served_over_naive"]["met"]  # 110 / 10
    assert t["text_over_all_three"]["value"] == pytest.approx(400 / 110, abs=0.01)
    assert t["preprocess_over_before"]["value"] == 0.5 and t["preprocess_over_before"]["met"]
    assert t["c8_p99_over_p50"]["value"] == 1.0 and t["c8_p99_over_p50"]["met"]
    # The framework floor's ceiling rides along with the served/limit targets.
    floors = {k: v["floor"] for k, v in r["subsets"].items()}
    for key, subset in (("served_over_limit", "image+text+audio"), ("text_over_limit", "text")):
        assert t[key]["ceiling"] == floors[subset]["ceiling_over_limit"], key
    all_three_ceiling = floors["image+text+audio"]["ceiling_rps"]
    assert t["served_over_naive"]["ceiling"] == pytest.approx(all_three_ceiling / 10.0, abs=1e-3)
    assert t["text_over_all_three"]["ceiling"] == pytest.approx(
        floors["text"]["ceiling_rps"] / all_three_ceiling, abs=1e-3
    )


def test_step_cpu_is_the_median_of_the_rounds_per_process() -> None:
    r = _result()
    steps = r["subsets"]["text"]["step_cpu_ms_per_request"]
    assert steps == {"preprocess": 9.0, "text_encoder": 5.0, "tritonserver": 2.0}  # 4.5, 5, 5.5
    floor = r["subsets"]["image+text+audio"]["floor"]
    assert floor["null_step_cpu_ms_per_request"] == {"fusion": 0.1}


def test_human_report_renders_from_the_json_view() -> None:
    table = command.format_table(command.json_view(_result()))
    for needle in ("true limit", "preprocess_cpu_ms", "image+text+audio", "mixed (stated mix)",
                   "served_over_limit", "x0.50", "framework floor", "(ceiling ",
                   "by process", "null graph, all three", "stages, all three"):  # fmt: skip
        assert needle in table, needle


def test_server_cpu_per_request_divides_by_answers_not_refusals() -> None:
    ensemble = {"requests": 100, "successes": 80, "executions": 80, "avg_batch": 1.0}
    point = LoadPoint(
        "all three", 16, 80.0, latency_summary([0.01]), 20, {"UNAVAILABLE": 20}, 100,
        {spec.ENSEMBLE.name: ensemble}, (0.01,), 1.0, server_cpu_s=0.8, client_cpu_s=0.1,
    )  # fmt: skip
    assert point.answered == 80
    assert point.cpu_ms_per_request == pytest.approx(10.0)  # 800 ms over 80 answers
    d = point.as_dict()
    assert d["cpu_ms_per_request"] == 10.0 and d["client_cpu_ms_per_request"] == 1.25
    unmeasured = LoadPoint("x", 1, 0.0, latency_summary([]), 0, {}, 0, {}, (), 1.0)
    assert unmeasured.cpu_ms_per_request is None
