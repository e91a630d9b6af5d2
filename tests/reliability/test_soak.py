"""Sustained mixed load (SOAK_SECONDS, 20 s here; `make soak` runs 10 minutes with the same
bounds): no errors, and the server's memory (tritonserver + stubs) flat after warm-up."""

from __future__ import annotations

import pytest

from mmtriton_harness.reliability.soak import run_soak, soak_seconds

pytestmark = pytest.mark.integration


def test_soak_has_no_errors_and_flat_memory(rel_server, examples):
    result = run_soak(rel_server.grpc_url, rel_server.process.pid, examples, soak_seconds(20))
    assert result["errors_total"] == 0, result["errors"]
    assert result["requests"] >= 10 * result["seconds"]  # load was really held
    assert result["bad_inputs_refused"] > 0  # the refusal path ran too
    assert result["accuracy"] >= 0.85
    assert result["rss_growth_pct"] is not None
    assert result["rss_growth_pct"] < 5, result
    # Reported like Triton's L0_memory_growth; 20 s is too short to bound it meaningfully.
    assert result["requests_after_warmup"] > 0
    assert result["rss_bytes_per_10k_requests"] is not None
