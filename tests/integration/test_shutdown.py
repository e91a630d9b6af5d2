"""Stopping under load: in-flight requests complete, exit code 0, no shared memory left.

The launcher drains before it sends SIGTERM (see mmtriton/server/drain.py for the Triton 2.51
crash that makes this necessary).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mmtriton_build.examples import load_examples
from mmtriton_client.client import AsyncMultimodalClient, Sample

from ..conftest import start_triton

pytestmark = pytest.mark.integration


def test_sigterm_under_load_drains_and_exits_cleanly(tmp_path, built_artifacts):
    examples = load_examples(built_artifacts, 16)
    server = start_triton(tmp_path)
    try:

        async def load():
            async with AsyncMultimodalClient(server.grpc_url) as client:
                await client.num_classes()  # metadata first: the requests below go straight out
                tasks = [
                    asyncio.ensure_future(client.predict(Sample(image=e.image, audio=e.audio)))
                    for e in examples * 2
                ]
                await asyncio.sleep(0.2)  # requests are queued or executing now
                sent_at = time.monotonic()
                stopper.start()  # drain + SIGTERM, as `mmtriton serve` does on Ctrl-C
                results = await asyncio.gather(*tasks, return_exceptions=True)
                return results, time.monotonic() - sent_at

        codes = []
        stopper = threading.Thread(target=lambda: codes.append(server.stop()))
        results, drain_s = asyncio.run(load())
        stopper.join(timeout=90)
        code = codes[0]
    finally:
        server.stop()
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} in-flight requests failed: {errors[:2]}"
    truth = [e.label for e in examples * 2]
    assert sum(r.label == t for r, t in zip(results, truth, strict=True)) >= len(truth) - 2
    assert code == 0
    assert not server.leaked_at_exit, f"shared memory left behind: {server.leaked_at_exit}"
    assert drain_s < 30
