"""Stopping under load: in-flight requests complete, exit code 0, no shared memory left.

The launcher drains before it sends SIGTERM (see mmtriton/server/drain.py for the Triton 2.51
crash that makes this necessary). A request that admission refused just before the stop is
still owed an answer: its caller is in its retry backoff, and the drain waits for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import pytest

from mmtriton import spec
from mmtriton.server import drain
from mmtriton_build.examples import load_examples
from mmtriton_client.client import AsyncMultimodalClient, Sample

from ..conftest import require_repository, start_triton
from .repository_variant import repository_with_parameters

pytestmark = pytest.mark.integration


# An admission bound far below the burst: most of it is refused at first and retried.
TIGHT_ADMISSION = {"admission_min_in_flight": "4", "admission_max_in_flight": "4"}


def stop_under_load(server, examples) -> tuple[list, float, int, float]:
    """Send every example (image + audio) at once, stop the server 0.2 s later as `mmtriton
    serve` does on Ctrl-C (drain, then SIGTERM); the results, the seconds from the stop until
    the last answer, tritonserver's exit code, and the requests refused (to be retried) when
    the stop began."""

    async def load():
        async with AsyncMultimodalClient(server.grpc_url) as client:
            await client.num_classes()  # metadata first: the requests below go straight out
            tasks = [
                asyncio.ensure_future(client.predict(Sample(image=e.image, audio=e.audio)))
                for e in examples
            ]
            await asyncio.sleep(0.2)  # requests are queued, executing or refused now
            with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
                refused_at_stop = drain.refused(resp.read().decode())
            sent_at = time.monotonic()
            stopper.start()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return results, time.monotonic() - sent_at, refused_at_stop

    codes = []
    stopper = threading.Thread(target=lambda: codes.append(server.stop()))
    try:
        results, drain_s, refused_at_stop = asyncio.run(load())
        stopper.join(timeout=90)
    finally:
        server.stop()
    return results, drain_s, codes[0], refused_at_stop


def assert_every_request_answered(examples, results) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} requests failed: {errors[:2]}"
    truth = [e.label for e in examples]
    assert sum(r.label == t for r, t in zip(results, truth, strict=True)) >= len(truth) - 2


def test_sigterm_under_load_drains_and_exits_cleanly(tmp_path, built_artifacts):
    examples = load_examples(built_artifacts, 16) * 2
    server = start_triton(tmp_path)
    results, drain_s, code, _ = stop_under_load(server, examples)
    assert_every_request_answered(examples, results)
    assert code == 0
    assert not server.leaked_at_exit, f"shared memory left behind: {server.leaked_at_exit}"
    assert drain_s < 30


def test_a_stop_right_after_admission_refusals_still_answers_the_retrying_callers(
    tmp_path, built_artifacts
):
    repository = repository_with_parameters(
        require_repository(), tmp_path / "repo", spec.PREPROCESS.name, TIGHT_ADMISSION
    )
    examples = load_examples(built_artifacts, 16) * 2
    server = start_triton(tmp_path, repository=repository)
    results, drain_s, code, refused_at_stop = stop_under_load(server, examples)
    assert refused_at_stop > 0, "the burst was not refused at all: nothing retried"
    assert_every_request_answered(examples, results)
    assert code == 0
    assert drain_s < 30
