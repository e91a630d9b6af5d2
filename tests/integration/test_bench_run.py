"""One quick `mmtriton bench` run against a real server: the report's shape, not its speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmtriton import spec
from mmtriton_harness.bench import command

from ..unit.test_bench import MIXED_FIELDS, REQUIRED_KEYS, SERVED_KEYS, SUBSET_FIELDS

pytestmark = pytest.mark.integration


def test_quick_bench_against_a_real_server(built_artifacts, tmp_path) -> None:
    """One `mmtriton bench --quick --json` run: every key present, every rate positive, every
    subset measured against its own limit, the server's CPU counted, 'before' paired."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mmtriton.cli", "bench", "--quick", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert set(doc) >= REQUIRED_KEYS
    for key in ("limit_rps", "served_over_limit", "served_over_naive", "preprocess_cpu_ms"):
        assert doc[key] > 0, key
    assert doc["spread"]["min"] <= doc["served_over_limit"] <= doc["spread"]["max"]
    assert doc["spread"]["repeats"] == 3
    assert set(doc["subsets"]) == {spec.subset_name(s) for s in spec.SUBSETS}
    for name, entry in doc["subsets"].items():
        assert set(entry) >= SUBSET_FIELDS, name
        assert entry["served_rps"] > 0 and entry["limit_rps"] > 0, name
        assert entry["cpu_ms_per_request"] > 0 and entry["errors"] == 0, name
        # The null graph served every workload too, for far less than the real one.
        fl = entry["floor"]
        assert fl["null_rps"] > 0 and 0 < fl["ceiling_over_limit"] < 1, name
        assert fl["null_cpu_ms_per_request"] < entry["cpu_ms_per_request"], name
    assert all(p["errors"] == 0 for r in doc["rounds"] for p in r["null"].values())
    # The served CPU split by process covers tritonserver and every model's stubs, and adds up
    # to (nearly all of) the process tree's CPU.
    head = doc["subsets"]["image+text+audio"]
    steps = head["step_cpu_ms_per_request"]
    assert set(steps) == {"tritonserver", *command.MODELS}
    assert (
        0.8 * head["cpu_ms_per_request"] <= sum(steps.values()) <= 1.05 * head["cpu_ms_per_request"]
    )
    assert set(doc["mixed"]) >= MIXED_FIELDS and doc["mixed"]["errors"] == 0
    assert doc["preprocess_before"]["paired"], doc.get("preprocess_before_skipped")
    assert doc["served"] and all(set(p) == SERVED_KEYS for p in doc["served"])
    for point in doc["served"]:
        assert point["rps"] > 0 and point["p50_ms"] > 0 and point["errors"] == 0
        assert point["p99_ms"] >= point["p95_ms"] >= point["p50_ms"]
    models = doc["served_detail"][-1]["models"]
    assert {"preprocess", "image_encoder", "text_encoder", "audio_encoder", "fusion"} <= set(models)
    # By the last round every sample was sent many times: only with the response cache off
    # (the bench's default) do the encoders still run, as the limit assumes.
    assert not doc["settings"]["response_cache"]
    last = doc["rounds"][-1]["served"]
    for subset, model in (("image", "image_encoder"), ("text", "text_encoder")):
        assert last[subset]["models"][model]["executions"] > 0, subset
    table = command.format_table(doc)  # the human report renders from the JSON too
    assert "true limit" in table and "served_over_naive" in table and "framework floor" in table
