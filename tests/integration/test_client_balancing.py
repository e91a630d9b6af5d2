"""One client target, two real tritonservers: round_robin spreads requests over both,
pick_first (gRPC's default, the defect as it was: one web replica -> one Triton pod) sends
everything to one, and when one server goes away (drained and stopped, or killed) the requests
keep succeeding through the other: the client retries what the going server refused.

The target ``ipv4:127.0.0.1:P1,127.0.0.1:P2`` stands in for ``dns:///<headless Service>``:
both hand the channel one address per pod; the policy decides where each request goes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from mmtriton import spec
from mmtriton_client import (
    AsyncMultimodalClient,
    ChannelOptions,
    ClientError,
    MultimodalClient,
    RetryPolicy,
    Sample,
)
from mmtriton_client.retry import is_retryable
from mmtriton_client.web.handlers import Classifier

from ..conftest import start_triton

pytestmark = pytest.mark.integration

N = 40
SAMPLE = Sample(text="the digit seven")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two independent tritonservers on the same repository, each on its own free ports."""
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_triton(tmp_path_factory.mktemp(f"triton-{name}")))
        yield started
    finally:
        for server in started:
            server.stop()


def target(servers) -> str:
    return "ipv4:" + ",".join(s.grpc_url for s in servers)


def successes(server) -> int:
    """Requests the ensemble answered successfully on this server (Triton's own statistics)."""
    url = f"{server.http_url}/v2/models/{spec.ENSEMBLE.name}/stats"
    with urllib.request.urlopen(url, timeout=5) as resp:
        stats = json.load(resp)
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def served_shares(servers, send) -> list[int]:
    """How many of the requests that `send()` makes each server answered.

    A server counts a success just after it sends the answer, so the counts are read until
    they add up to N (or 5 s passed) rather than once, right after the last answer arrived.
    """
    before = [successes(s) for s in servers]
    send()
    deadline = time.monotonic() + 5
    while True:
        shares = [successes(s) - b for s, b in zip(servers, before, strict=True)]
        if sum(shares) >= N or time.monotonic() > deadline:
            return shares
        time.sleep(0.1)


def send_sync(url: str, policy: str) -> None:
    with MultimodalClient(url, channel=ChannelOptions(lb_policy=policy)) as client:
        for _ in range(N):
            assert client.predict(SAMPLE).label == "7"


def send_async(url: str, policy: str) -> None:
    async def run():
        async with AsyncMultimodalClient(url, channel=ChannelOptions(lb_policy=policy)) as c:
            for _ in range(N):
                assert (await c.predict(SAMPLE)).label == "7"

    asyncio.run(run())


def send_page(url: str, policy: str) -> None:
    """The web page's path to Triton: its Classifier, as `mmtriton web --grpc-lb` builds it."""
    classifier = Classifier(url, channel=ChannelOptions(lb_policy=policy))
    try:
        for _ in range(N):
            assert classifier.predict(SAMPLE).label == "7"
    finally:
        classifier.close()


FACES = {"sync": send_sync, "async": send_async, "page": send_page}


@pytest.mark.parametrize("face", FACES)
def test_round_robin_spreads_requests_over_both_servers(servers, face):
    shares = served_shares(servers, lambda: FACES[face](target(servers), "round_robin"))
    print(f"round_robin ({face}): {shares} of {N}")
    assert sum(shares) == N
    # exactly alternating once both connections are up; the first requests may go to the
    # connection that was ready first
    assert min(shares) >= 0.35 * N, shares


@pytest.mark.parametrize("face", FACES)
def test_pick_first_sends_everything_to_one_server(servers, face):
    # the defect as it was: one channel, one connection, one pod does all the work
    shares = served_shares(servers, lambda: FACES[face](target(servers), "pick_first"))
    print(f"pick_first ({face}): {shares} of {N}")
    assert sorted(shares) == [0, N]


@pytest.mark.parametrize("policy", ["pick_first", "round_robin"])
def test_a_dns_target_reaches_the_server(servers, policy):
    # the form a headless Service is dialled in (dns:///NAME:PORT); here NAME is localhost,
    # whose ::1 address nothing listens on: round_robin must skip it, not fail
    a, _ = servers
    url = f"dns:///localhost:{a.settings.grpc_port}"
    shares = served_shares(servers, lambda: send_sync(url, policy))
    assert shares == [N, 0]


@dataclass
class LoadRun:
    """What callers saw while one server went away."""

    answered: int = 0
    errors: list[ClientError] = field(default_factory=list)
    b_served_before: int = 0
    answered_at_stop: int = 0
    a_at_stop: int = 0


WORKERS = 3


def load_while_b_goes(servers, retry: RetryPolicy, take_b_away) -> LoadRun:
    """Three callers send requests through one round_robin client while `take_b_away(b)` runs,
    and 3 s after it."""
    a, b = servers
    run, stop = LoadRun(), threading.Event()

    def load(client: MultimodalClient) -> None:
        while not stop.is_set():
            try:
                assert client.predict(SAMPLE).label == "7"
                run.answered += 1
            except ClientError as exc:  # every failure is the finding
                run.errors.append(exc)

    channel = ChannelOptions(lb_policy="round_robin")
    with MultimodalClient(target(servers), channel=channel, retry=retry, timeout_s=10) as client:
        client.predict(SAMPLE)
        workers = [threading.Thread(target=load, args=(client,)) for _ in range(WORKERS)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.5)
            run.b_served_before = successes(b)
            take_b_away(b)
            run.a_at_stop, run.answered_at_stop = successes(a), run.answered
            time.sleep(3.0)
        finally:
            stop.set()
            for w in workers:
                w.join(30)
    return run


@pytest.fixture
def b_comes_back(servers):
    """Restart server b on its ports after a test took it away."""
    yield
    b = servers[1]
    if b.process is None or b.process.poll() is not None:
        b.start()
        b.wait_ready()


TAKE_AWAY = {
    "drain-then-sigterm": lambda b: b.stop(),  # a pod deleted: preStop drain, then SIGTERM
    "sigkill": lambda b: b.kill(),  # a pod lost: in-flight requests break
}


@pytest.mark.parametrize("how", TAKE_AWAY)
def test_requests_keep_succeeding_while_one_server_goes_away(servers, b_comes_back, how):
    run = load_while_b_goes(servers, RetryPolicy(), TAKE_AWAY[how])
    print(f"{how}: answered {run.answered}, failed {len(run.errors)}")
    assert run.b_served_before > 0, "b served nothing before it went away"
    assert not run.errors, f"{len(run.errors)} failed: {run.errors[:3]}"
    # afterwards a serves everything (up to the answers in flight when the counts were read)
    a, _ = servers
    assert run.answered > run.answered_at_stop
    assert successes(a) - run.a_at_stop >= run.answered - run.answered_at_stop - WORKERS


def test_without_retries_a_stopping_server_fails_requests_the_policy_retries(servers, b_comes_back):
    """Why the retries matter: a caller that never retries sees a stopping server's refusals
    (queue shut, server stopping, model unloading), and every one of them is an answer
    `is_retryable` accepts, so the default policy would have sent it to the other server."""
    run = load_while_b_goes(servers, RetryPolicy(attempts=1), TAKE_AWAY["drain-then-sigterm"])
    seen = sorted({f"{e.status}: {e}"[:90] for e in run.errors})
    print(f"without retries: answered {run.answered}, failed {len(run.errors)}: {seen}")
    assert run.errors, "a stopping server refused nothing: this test no longer shows anything"
    assert all(is_retryable(e.status, str(e)) for e in run.errors), seen
