"""Admission at the first step on real servers: under an overload burst the excess is refused
with UNAVAILABLE and a message saying why, what is accepted is answered, nothing stays in
flight, the server stays ready, and `mmtriton serve`'s supervisor does not take the refusals
for a fault (no heal, /ready 200 throughout)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections import Counter

import pytest

from mmtriton.backend.admission import MAX_WRITERS, REFUSED_METRIC, Ledger, ledger_path
from mmtriton.observability import top
from mmtriton.server.probe import PipelineProbe
from mmtriton_build.examples import load_examples
from mmtriton_build.export.policy import ADMISSION
from mmtriton_client.retry import is_retryable
from mmtriton_harness.reliability.load import open_loop, raw_caller
from mmtriton_harness.reliability.overload import pipeline_in_flight
from mmtriton_harness.reliability.production import metrics_text
from mmtriton_harness.reliability.serve import ServeProcess
from tests.conftest import require_repository, start_triton

pytestmark = pytest.mark.integration

# Far beyond what 2 cores serve (~100 all-three samples/s): most of it must be refused.
BURST_RPS = 400.0
REFUSAL_TEXT = "server overloaded"


@pytest.fixture(scope="module")
def examples(built_artifacts):
    return [e for e in load_examples(built_artifacts, 64) if e.image and e.text and e.audio]


def burst(grpc_url: str, examples, seconds: float) -> list:
    async def go():
        call = raw_caller(grpc_url, examples, client_timeout=30)
        try:
            return (await open_loop(call, BURST_RPS, seconds))[0]
        finally:
            await call.client.close()

    return asyncio.run(go())


def refused_total(text: str) -> float:
    return sum(top.parse_metrics(text).sum_by(REFUSED_METRIC, ()).values())


def settle(metrics_url: str, timeout_s: float = 10.0) -> float:
    """Samples still in flight once the pipeline had time to finish what it accepted."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = pipeline_in_flight(metrics_url)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_triton(tmp_path_factory.mktemp("admission"))
    yield server
    server.stop()


def test_an_overload_burst_is_refused_with_unavailable_and_the_accepted_are_answered(
    server, examples
):
    outcomes = burst(server.grpc_url, examples, seconds=3.0)
    kinds = Counter(o.kind for o in outcomes)
    assert kinds["ok"] > 0 and kinds["rejected"] > 0, kinds
    assert kinds["ok"] + kinds["rejected"] == len(outcomes), Counter(
        (o.kind, o.status, o.message[:80]) for o in outcomes if o.kind not in ("ok", "rejected")
    )
    refusals = [o for o in outcomes if o.kind == "rejected"]
    assert {o.status for o in refusals} == {"UNAVAILABLE"}
    ours = [o for o in refusals if REFUSAL_TEXT in o.message]
    assert ours, Counter(o.message[:80] for o in refusals)  # admission itself refused some
    assert all("retry" in o.message for o in ours)
    assert all(is_retryable(o.status, o.message) for o in refusals)  # the client retries them
    # Accepted requests were answered right (the label matched where the model knows it).
    answered = [o for o in outcomes if o.kind == "ok"]
    assert sum(bool(o.correct) for o in answered) >= 0.8 * len(answered)
    text = metrics_text(server.metrics_url)
    assert refused_total(text) == len(ours)
    assert settle(server.metrics_url) == 0  # every admitted sample left fusion
    assert urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=2).status == 200


def test_the_probe_takes_a_refusal_for_an_answer_and_a_stuck_pipeline_is_admitted(server):
    """A full pipeline, made certain by writing into the server's own ledger: the supervisor's
    probe is refused and counts that as an answer (no fault); once nothing has finished for
    the stall time the pipeline counts as stuck, not busy, and the probe gets through."""
    ledger = Ledger(ledger_path(server.process.pid))
    probe = PipelineProbe(server.grpc_url)
    try:
        ledger.admit(MAX_WRITERS - 1, time.time(), 10_000)  # a slot no instance uses
        refused = probe.run(timeout_s=6.0)
        assert refused.ok and refused.reason == "answered UNAVAILABLE", refused
        time.sleep(ADMISSION.stall_after_s + 0.6)  # nothing finished, the oldest waits on
        through = probe.run(timeout_s=6.0)
        assert through.ok and through.reason == "", through
    finally:
        probe.close()
        ledger.close()


def test_the_ledger_belongs_to_this_server_and_is_removed_by_a_clean_stop(tmp_path, examples):
    own = start_triton(tmp_path)
    path = ledger_path(own.process.pid)
    try:
        assert path.exists()
        burst(own.grpc_url, examples[:4], seconds=0.5)
    finally:
        assert own.stop() == 0
    assert not path.exists()


def test_the_supervisor_does_not_heal_on_refusals_under_overload(tmp_path, examples):
    served = ServeProcess(require_repository(), tmp_path).start()
    readiness: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            readiness.append(served.ready())

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        # Longer than two probe intervals (2 s) plus a probe's timeout: several probes meet
        # the overload, each refused or answered.
        outcomes = burst(served.grpc_url, examples, seconds=8.0)
        stop.set()
        watcher.join()
        kinds = Counter(o.kind for o in outcomes)
        assert kinds["rejected"] > 0 and kinds["ok"] > 0, kinds
        status = served.status()
        assert status["restarts"] == 0 and not status["heals"], status
        assert readiness and all(readiness), readiness.count(False)
        assert status.get("last_probe", {}).get("ok") is True, status
    finally:
        stop.set()
        result = served.stop()
    assert result.clean(30.0), result
