"""One quick `mmtriton bench` run against a real server: the report's shape, not its speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmtriton_harness.bench import command

from ..unit.test_bench import REQUIRED_KEYS, SERVED_KEYS

pytestmark = pytest.mark.integration


def test_quick_bench_against_a_real_server(built_artifacts, tmp_path) -> None:
    """One `mmtriton bench --quick --json` run: every key present, every rate positive."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mmtriton.cli", "bench", "--quick", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert set(doc) >= REQUIRED_KEYS
    for key in REQUIRED_KEYS - {"served"}:
        assert doc[key] > 0, key
    assert doc["served"] and all(set(p) == SERVED_KEYS for p in doc["served"])
    for point in doc["served"]:
        assert point["rps"] > 0 and point["p50_ms"] > 0 and point["errors"] == 0
        assert point["p99_ms"] >= point["p95_ms"] >= point["p50_ms"]
    assert doc["mixed"]["errors"] == 0
    models = doc["served_detail"][-1]["models"]
    assert {"preprocess", "image_encoder", "text_encoder", "audio_encoder", "fusion"} <= set(models)
    table = command.format_table(doc)  # the human report renders from the JSON too
    assert "limit" in table and "served_over_naive" in table
