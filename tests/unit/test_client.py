"""The client library without a server: which failures are retried, the backoff schedule, the
channel options handed to gRPC, the checks both client faces share, and the `mmtriton infer`
command's answers to bad input (run as a real subprocess)."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from mmtriton import spec
from mmtriton_client import AsyncMultimodalClient, ChannelOptions, MultimodalClient, RetryPolicy
from mmtriton_client.cli import answer_text
from mmtriton_client.client import ClientError, Prediction, Sample
from mmtriton_client.confidence import ThresholdError, is_confident, threshold_from_config
from mmtriton_client.retry import HEAL_BUDGET_S, Attempts, is_retryable
from mmtriton_client.web.handlers import NOT_SURE, PageResult, status_text

from ..conftest import free_port

MMTRITON = Path(sys.executable).with_name("mmtriton")

# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("UNAVAILABLE", "failed to connect to all addresses; last error: Connection refused"),
        ("UNAVAILABLE", "Socket closed"),
        ("UNAVAILABLE", "recvmsg:Connection reset by peer"),
        ("UNAVAILABLE", "in ensemble 'multimodal', Exceeds maximum queue size"),
        ("UNAVAILABLE", "the server is draining; retry"),
        ("INTERNAL", "in ensemble 'multimodal', Stub process 'image_encoder_0_0' is not healthy."),
        (
            "INTERNAL",
            "Failed to process the request(s) for model 'x', Stub process is not healthy.",
        ),
        ("NOT_FOUND", "Request for unknown model: 'multimodal' has no available versions"),
        ("CANCELLED", "CANCELLED"),  # a server stopping under load cancels what it holds
    ],
)
def test_transient_failures_are_retried(status, message):
    assert is_retryable(status, message)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("INVALID_ARGUMENT", "sample 0: image is empty"),
        ("INTERNAL", "onnxruntime: Non-zero status code returned while running Conv node"),
        ("INTERNAL", "Stub process 'image_encoder_0_0' is healthy again"),
        ("NOT_FOUND", "Request for unknown model: 'multimodl' is not found"),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded"),
        ("RESOURCE_EXHAUSTED", "Received message larger than max"),
        ("UNKNOWN", "Stub process 'x' is not healthy"),
    ],
)
def test_permanent_failures_are_not_retried(status, message):
    assert not is_retryable(status, message)


# --------------------------------------------------------------------------- backoff schedule


def test_default_schedule_doubles_from_200ms_caps_at_2s_and_spends_the_heal_budget():
    delays = list(RetryPolicy(jitter=0).delays())
    assert delays[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0])
    assert set(delays[4:]) == {2.0}
    assert sum(delays) <= HEAL_BUDGET_S
    # no room for one more capped delay: the budget is used, not left on the table
    assert sum(delays) + 2.0 > HEAL_BUDGET_S
    # and it outlasts a heal (~10 s from a stub's death to a restarted server)
    assert sum(delays) >= 15


def test_attempts_still_bound_the_schedule_as_before():
    assert list(RetryPolicy(attempts=1).delays()) == []
    assert list(RetryPolicy(attempts=2, jitter=0).delays()) == [0.2]
    assert list(RetryPolicy(attempts=6, jitter=0).delays()) == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 2.0]
    )
    # an attempt count beyond the budget is cut by the budget
    assert sum(RetryPolicy(attempts=100, budget_s=3, jitter=0).delays()) <= 3


def test_jitter_shortens_each_delay_by_at_most_its_fraction():
    rng = random.Random(7)
    plain = list(RetryPolicy(jitter=0).delays())
    jittered = list(RetryPolicy(jitter=0.2).delays(rng))
    for exact, actual in zip(plain, jittered, strict=False):
        assert 0.8 * exact <= actual <= exact
    assert len(set(jittered)) > 3  # not all equal: clients do not retry in step


def test_budget_counts_the_time_requests_took_too():
    now = [0.0]
    attempts = Attempts(RetryPolicy(budget_s=10, jitter=0), clock=lambda: now[0])
    assert attempts.next_delay("UNAVAILABLE", "Connection refused") == pytest.approx(0.2)
    now[0] = 9.7  # a slow attempt used most of the budget
    assert attempts.next_delay("UNAVAILABLE", "Connection refused") is None
    assert len(attempts.failures) == 2


def test_a_permanent_failure_ends_the_call_at_once():
    attempts = RetryPolicy().start()
    assert attempts.next_delay("INVALID_ARGUMENT", "image is empty") is None


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"attempts": None, "budget_s": None}, {"jitter": 1.0}]
)
def test_retry_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# --------------------------------------------------------------------------- channel options


def test_channel_args_keep_tritonclient_defaults_and_add_balancing():
    args = dict(ChannelOptions(lb_policy="round_robin").channel_args())
    keepalive = KeepAliveOptions()
    # what tritonclient sets when channel_args is not given (passing channel_args replaces it)
    assert args["grpc.max_send_message_length"] == MAX_GRPC_MESSAGE_SIZE
    assert args["grpc.max_receive_message_length"] == MAX_GRPC_MESSAGE_SIZE
    assert args["grpc.keepalive_time_ms"] == keepalive.keepalive_time_ms
    assert args["grpc.keepalive_timeout_ms"] == keepalive.keepalive_timeout_ms
    assert args["grpc.keepalive_permit_without_calls"] == int(
        keepalive.keepalive_permit_without_calls
    )
    assert args["grpc.http2.max_pings_without_data"] == keepalive.http2_max_pings_without_data
    # balancing, reconnection and re-resolution
    assert args["grpc.lb_policy_name"] == "round_robin"
    assert json.loads(args["grpc.service_config"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert args["grpc.max_reconnect_backoff_ms"] == 2000
    assert args["grpc.dns_min_time_between_resolutions_ms"] == 5000


def test_channel_keepalive_when_asked():
    args = dict(ChannelOptions(keepalive_time_s=30, keepalive_timeout_s=5).channel_args())
    assert (args["grpc.keepalive_time_ms"], args["grpc.keepalive_timeout_ms"]) == (30000, 5000)


@pytest.mark.parametrize(
    "kwargs",
    [{"lb_policy": "least_request"}, {"keepalive_time_s": 0}, {"dns_min_reresolution_s": -1}],
)
def test_channel_options_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        ChannelOptions(**kwargs)


def test_tritonclient_accepts_the_channel_args_and_a_multi_address_target():
    target = f"ipv4:127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    channel = ChannelOptions(lb_policy="round_robin")
    with MultimodalClient(target, channel=channel) as client:
        assert not client.is_ready()  # nothing listens: a clean False, not an exception


def test_nothing_listening_is_retried_within_the_budget_then_reported_unavailable():
    target = f"ipv4:127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    policy = RetryPolicy(budget_s=1.5, jitter=0)
    channel = ChannelOptions(lb_policy="round_robin")
    with MultimodalClient(target, channel=channel, retry=policy, timeout_s=2) as client:
        start = time.monotonic()
        with pytest.raises(ClientError) as err:
            client.predict(text="seven")
        elapsed = time.monotonic() - start
    assert err.value.status == "UNAVAILABLE"
    assert "attempts" in str(err.value)  # 0.2 + 0.4 + 0.8 s of backoff: four attempts
    assert 1.3 <= elapsed < 4.0


# --------------------------------------------------------------------------- one core, two faces


class _Flaky:
    """Fails like a server healing from a dead stub, then answers."""

    def __init__(self, failures: list[tuple[str, str]], answer):
        self.failures, self.answer, self.calls = list(failures), answer, 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            status, message = self.failures.pop(0)
            raise InferenceServerException(message, status=f"StatusCode.{status}")
        return self.answer


HEALING = [
    ("INTERNAL", "in ensemble 'multimodal', Stub process 'text_encoder_0_0' is not healthy."),
    ("UNAVAILABLE", "failed to connect to all addresses; Connection refused"),
    ("NOT_FOUND", "Request for unknown model: 'multimodal' has no available versions"),
]


def test_sync_and_async_faces_retry_a_heal_alike():
    policy = RetryPolicy(initial_backoff_s=0.01, jitter=0)
    target = f"127.0.0.1:{free_port()}"
    with MultimodalClient(target, retry=policy) as sync_client:
        flaky = _Flaky(HEALING, "answer")
        assert sync_client._call(flaky) == "answer"
        assert flaky.calls == 4

    async def via_async():
        async with AsyncMultimodalClient(target, retry=policy) as client:
            flaky = _Flaky(HEALING, "answer")

            async def make():
                return flaky()

            assert await client._call(make) == "answer"
            return flaky.calls

    assert asyncio.run(via_async()) == 4


def test_a_bug_inside_the_model_is_not_retried():
    target = f"127.0.0.1:{free_port()}"
    with MultimodalClient(target, retry=RetryPolicy(initial_backoff_s=0.01)) as client:
        flaky = _Flaky([("INTERNAL", "onnxruntime: invalid shape"), *HEALING], "answer")
        with pytest.raises(ClientError) as err:
            client._call(flaky)
    assert (err.value.status, flaky.calls) == ("INTERNAL", 1)


def _predict_batch(face: str, samples: list[Sample]):
    """predict_batch on a client of `face` whose target has nothing listening."""
    target = f"127.0.0.1:{free_port()}"
    policy = RetryPolicy(attempts=1)
    if face == "sync":
        with MultimodalClient(target, retry=policy) as client:
            return client.predict_batch(samples)

    async def run():
        async with AsyncMultimodalClient(target, retry=policy) as client:
            return await client.predict_batch(samples)

    return asyncio.run(run())


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize(
    ("samples", "match"),
    [
        ([Sample(text="7")] * (spec.MAX_REQUEST_BATCH + 1), "limit is"),
        ([Sample(text="seven\udcff")], "not valid UTF-8"),
        ([Sample(text="seven"), Sample()], "at least one"),
        ([Sample(image=b"x" * (spec.LIMITS.max_image_bytes + 1))], "image is"),
        ([], "no samples"),
    ],
    ids=["too-many-samples", "not-utf8", "empty-row", "image-too-big", "no-samples"],
)
def test_both_faces_refuse_bad_requests_before_sending(face, samples, match):
    # the async face used to skip the request-size check: both now run the same core checks
    with pytest.raises(ClientError, match=match) as err:
        _predict_batch(face, samples)
    assert err.value.status == "INVALID_ARGUMENT"


def test_both_faces_offer_the_same_methods():
    def public(cls):
        return {
            name: list(inspect.signature(fn).parameters)
            for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }

    assert public(MultimodalClient) == public(AsyncMultimodalClient)
    for name in public(AsyncMultimodalClient):
        assert inspect.iscoroutinefunction(getattr(AsyncMultimodalClient, name)), name


def test_empty_file_is_named(tmp_path):
    empty = tmp_path / "blank.png"
    empty.write_bytes(b"")
    with pytest.raises(ClientError, match=r"image file .*blank\.png is empty"):
        Sample.from_files(image=empty, text="seven")


# --------------------------------------------------------------------------- "not sure"


def _config(**parameters: str) -> dict:
    """A model config as tritonclient.grpc's get_model_config(as_json=True) returns it."""
    entries = {k: {"string_value": v} for k, v in parameters.items()}
    return {"config": {"name": spec.ENSEMBLE.name, "parameters": entries}}


def _prediction(top: float, threshold: float) -> Prediction:
    probs = {"3": top, "8": round(0.6 * (1 - top), 6), "5": round(0.4 * (1 - top), 6)}
    return Prediction(
        label="3",
        probabilities=probs,
        weights={"image": 1.0, "text": 0.0, "audio": 0.0},
        modalities=["image"],
        confident=is_confident(top, threshold),
        threshold=threshold,
    )


def test_threshold_comes_from_the_ensemble_config_parameter():
    assert threshold_from_config(_config(**{spec.CONFIDENCE_THRESHOLD_PARAMETER: "0.73"})) == 0.73
    bare = _config(**{spec.CONFIDENCE_THRESHOLD_PARAMETER: " 0.2 "})["config"]
    assert threshold_from_config(bare) == 0.2


def test_a_config_without_the_parameter_gets_the_default():
    assert threshold_from_config(_config()) == spec.DEFAULT_CONFIDENCE_THRESHOLD
    assert threshold_from_config(_config(other="0.9")) == spec.DEFAULT_CONFIDENCE_THRESHOLD
    assert threshold_from_config({"config": {"name": "multimodal"}}) == 0.5


@pytest.mark.parametrize("raw", ["high", "", "1.5", "-0.1", "nan"])
def test_an_unusable_threshold_is_refused_naming_the_parameter(raw):
    with pytest.raises(ThresholdError, match=rf"{spec.CONFIDENCE_THRESHOLD_PARAMETER} = '{raw}'"):
        threshold_from_config(_config(**{spec.CONFIDENCE_THRESHOLD_PARAMETER: raw}))
    client = MultimodalClient(f"127.0.0.1:{free_port()}")  # connects only when used
    with client, pytest.raises(ClientError, match="must be a number from 0 to 1") as err:
        client._core.learn_threshold(_config(**{spec.CONFIDENCE_THRESHOLD_PARAMETER: raw}))
    assert err.value.status == "FAILED_PRECONDITION"


def test_confident_means_reaching_the_threshold():
    assert is_confident(0.5, 0.5) and is_confident(1.0, 1.0) and is_confident(0.01, 0.0)
    assert not is_confident(0.4999, 0.5)
    answer = _prediction(0.41, 0.5).as_dict()
    assert (answer["label"], answer["confident"], answer["threshold"]) == ("3", False, 0.5)
    assert _prediction(0.93, 0.5).as_dict()["confident"] is True


def test_cli_says_not_sure_with_the_best_guess_and_its_probability():
    assert answer_text(_prediction(0.93, 0.5)) == "3"
    assert answer_text(_prediction(0.41, 0.5)) == (
        "not sure (best guess 3 at 41.00 %, below the model's 50 % confidence threshold)"
    )


def test_page_heads_the_probabilities_with_not_sure():
    unsure = PageResult(status_text(_prediction(0.41, 0.62), "drawing"), _prediction(0.41, 0.62))
    assert unsure.status == (
        "? **Not sure**: best guess **3** at 41.0 %, below the model's 62 % confidence "
        "threshold, from image (drawing)."
    )
    assert unsure.label_value() == {
        "label": NOT_SURE,
        "confidences": [
            {"label": "3", "confidence": 0.41},
            {"label": "8", "confidence": 0.354},
            {"label": "5", "confidence": 0.236},
        ],
    }
    assert unsure.as_dict()["confident"] is False
    sure = PageResult(status_text(_prediction(0.93, 0.62), None), _prediction(0.93, 0.62))
    assert sure.status == "✓ Predicted **3** (93.0 %) from image."
    assert sure.label_value() == {"3": 0.93, "8": 0.042, "5": 0.028}


# --------------------------------------------------------------------------- the CLI


def _infer(*args: str | bytes) -> subprocess.CompletedProcess:
    url = f"127.0.0.1:{free_port()}"  # nothing listens: bad input must be named before that
    return subprocess.run(
        [MMTRITON, "infer", "--url", url, "--retry-budget", "0", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )


def test_cli_text_that_is_not_utf8_is_a_one_line_error():
    result = _infer("--text", b"seven \xff\xfe")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not valid UTF-8" in lines[0], result.stderr


@pytest.mark.parametrize("flag", ["--image", "--audio"])
def test_cli_empty_file_says_which_file_is_empty(tmp_path, flag):
    empty = tmp_path / ("empty.png" if flag == "--image" else "empty.wav")
    empty.write_bytes(b"")
    result = _infer(flag, str(empty))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{empty} is empty" in result.stderr
    assert "at least one" not in result.stderr


def test_cli_unknown_balancing_policy_is_refused_by_argparse():
    result = _infer("--text", "seven", "--grpc-lb", "random")
    assert result.returncode == 2
    assert "invalid choice: 'random'" in result.stderr
