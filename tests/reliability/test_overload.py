"""Offered load far beyond capacity on the shipped configs: fast explicit refusals, bounded
latency for what is accepted, recovery once the load drops. Then the queue policy's weak
spot in Triton 2.51: a request failed after the fan-out stays "in flight" for good, which is
why only the first step may reject (export/policy.py); per-request timeouts prove it.

These tests start their own servers: a server that leaked requests cannot stop gracefully.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmtriton.server.process import TritonProcess
from mmtriton_harness.reliability.overload import run_overload, run_timeout_override
from mmtriton_harness.reliability.servers import start_server

from ..conftest import require_repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Iterator[TritonProcess]:
    server = start_server(tmp_path_factory.mktemp("overload"), repository=require_repository())
    yield server
    code = server.stop(drain_timeout_s=10)
    # Nothing may stay in flight after overload: the stop is graceful and clean.
    assert code == 0 and not server.leaked_at_exit


def test_overload_is_refused_fast_and_accepted_latency_stays_bounded(shipped, examples):
    # 3 x the capacity measured just before: a fixed rate (300 req/s) was 3x on one machine
    # and barely overload on a faster one, where refusals then came late.
    result = run_overload(shipped, examples, factor=3.0, seconds=3, client_timeout_s=15)
    assert result["offered_rps"] >= 2.9 * result["capacity_rps"], result
    assert result["requests"] >= 0.95 * 3 * result["offered_rps"], result
    assert result["rejected"] >= result["requests"] / 3, result  # most work is refused...
    assert result["rejected_p50_ms"] < 100  # ...at once, not after a wait
    assert result["failed"] == result["lost"] == result["timeout"] == 0, result["errors"]
    assert result["in_flight_after"] == 0, result
    assert shipped.process.poll() is None
    # Every refusal is one of the explicit kinds. Which one refuses depends on where the
    # bottleneck is: admission when work piles up behind preprocess (2 slower cores), Triton's
    # queue in front of preprocess when preprocess itself is the bottleneck (a faster machine,
    # where admission refused 5 of 1,634 in `mmtriton reliability --only overload`);
    # test_admission.py covers admission.
    assert result["refused_by"]["other"] == 0, result
    assert result["ok"] >= 50 and result["accuracy"] == 1.0
    # The objective is 500 ms (`make reliability` holds the target); on shared cores the
    # client's own latency adds to it, so the test bounds it loosely. Unbounded queues gave
    # 3.1-4.4 s here.
    assert result["ok_p99_ms"] < 2_000, result
    assert result["recovered_after_s"] is not None and result["recovered_after_s"] < 15


def test_per_request_timeouts_leave_nothing_in_flight(shipped, examples):
    result = run_timeout_override(shipped, examples)
    assert result["rejected"] > 0 and result["failed"] == result["lost"] == 0
    assert all("timeout expired" in e for e in result["errors"]), result["errors"]
    assert result["in_flight_after"] == 0, result
