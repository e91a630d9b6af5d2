"""Load generation over real gRPC (asyncio), and what each request's caller saw.

Every request ends as one ``Outcome`` whose ``kind`` says what the caller experienced:

- ``ok``: answered (``correct`` tells whether the label matched, when known);
- ``invalid``: INVALID_ARGUMENT (the input was refused, naming the problem);
- ``rejected``: an explicit refusal to retry later: queue full, queue timeout, server
  stopping, nothing listening (UNAVAILABLE, or NOT_FOUND while models unload);
- ``timeout``: the caller's own deadline passed;
- ``failed``: the server answered with an error that is none of the above (e.g. INTERNAL);
- ``lost``: no answer at all: the connection broke while the request was in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mmtriton import spec
from mmtriton_client.client import AsyncMultimodalClient, ClientError, Sample, parse_result

from .payloads import column

# Messages of explicit, retryable refusals (lower case).
REFUSALS = (
    "exceeds maximum queue size",
    "request timeout expired",
    "server overloaded",  # admission at the first step (mmtriton/backend/admission.py)
    "shutting down",
    "server is stopping",
    "has no available versions",
    "failed to connect",
    "connection refused",
    "connect failed",
)
# The connection went away under an in-flight request.
BROKEN = ("stream removed", "connection reset", "socket closed", "eof", "broken pipe")


@dataclass(frozen=True)
class Outcome:
    """One request as its caller saw it."""

    start: float  # time.monotonic()
    end: float
    kind: str
    status: str = "OK"
    message: str = ""
    correct: bool | None = None

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


def error_kind(status: str, message: str) -> str:
    """The outcome kind of an error with this gRPC status name and message."""
    text = message.lower()
    if status == "INVALID_ARGUMENT":
        return "invalid"
    if status in ("DEADLINE_EXCEEDED", "CANCELLED") and "deadline" in text:
        return "timeout"
    if any(b in text for b in BROKEN):
        return "lost"
    if status in ("UNAVAILABLE", "NOT_FOUND") and any(r in text for r in REFUSALS):
        return "rejected"
    return "failed"


def _status_message(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        return exc.status, str(exc)
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    status = str(status() if callable(status) else status or type(exc).__name__)
    message = str(message() if callable(message) else message or exc)
    return status.replace("StatusCode.", ""), message


Call = Callable[[int], Awaitable[bool | None]]


async def timed(call: Call, i: int) -> Outcome:
    """Run one request, never raising: its Outcome."""
    start = time.monotonic()
    try:
        correct = await call(i)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        status, message = _status_message(exc)
        return Outcome(start, time.monotonic(), error_kind(status, message), status, message[:300])
    return Outcome(start, time.monotonic(), "ok", correct=correct)


async def closed_loop(
    call: Call,
    workers: int,
    until: Callable[[], bool],
    pace_s: float = 0.0,
    outcomes: list[Outcome] | None = None,
) -> list[Outcome]:
    """`workers` callers, each sending its next request when the last one ended, until
    `until()` is true. `pace_s` spaces one worker's requests (a worker's rate <= 1/pace_s).
    Outcomes are appended to `outcomes` as they come (watch its length for progress)."""
    counter = itertools.count()
    outcomes = [] if outcomes is None else outcomes

    async def worker() -> None:
        while not until():
            started = time.monotonic()
            outcome = await timed(call, next(counter))
            outcomes.append(outcome)
            if outcome.kind not in ("ok", "invalid"):
                await asyncio.sleep(0.05)  # don't spin on a server that is down
            rest = pace_s - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes


async def open_loop(call: Call, rate: float, duration_s: float) -> tuple[list[Outcome], float]:
    """Requests arrive at `rate` per second for `duration_s` whatever the server does (the
    offered load). Returns every outcome and the time the last request was sent."""
    tasks = []
    start = time.monotonic()
    for i in itertools.count():
        at = start + i / rate
        if at - start >= duration_s:
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(timed(call, i)))
    sent_until = time.monotonic()
    return list(await asyncio.gather(*tasks)), sent_until


# --------------------------------------------------------------------------- request makers


def subsets_of(example) -> list[tuple[str, ...]]:
    """The modality subsets this example can be sent as."""
    return [s for s in spec.SUBSETS if all(getattr(example, m) for m in s)]


def sample_of(example, subset: Sequence[str]) -> Sample:
    return Sample(**{m: getattr(example, m) for m in subset})


def raw_caller(url: str, examples: Sequence, modalities=("image", "text", "audio"), **infer_kw):
    """A Call sending full samples straight through tritonclient's aio client (no retries, no
    client-side checks): what an arbitrary gRPC caller does. ``infer_kw`` go to ``infer``
    (e.g. ``timeout=`` in microseconds: the server-side queue timeout override)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    names = {"image": "IMAGE", "text": "TEXT", "audio": "AUDIO"}

    async def call(i: int) -> bool:
        ex = examples[i % len(examples)]
        inputs = []
        for m in modalities:
            value = getattr(ex, m)
            if value:
                value = value.encode() if isinstance(value, str) else value
                inputs.append(column(names[m], [value]).to_grpc())
        outputs = [
            grpcclient.InferRequestedOutput(spec.PROBABILITIES.name, class_count=spec.NUM_CLASSES),
            grpcclient.InferRequestedOutput(spec.WEIGHTS.name),
            grpcclient.InferRequestedOutput(spec.PRESENT.name),
        ]
        result = await client.infer(spec.ENSEMBLE.name, inputs, outputs=outputs, **infer_kw)
        return parse_result(result, spec.NUM_CLASSES, 0.0)[0].label == ex.label

    call.client = client  # type: ignore[attr-defined]  # closed by the caller
    return call


def mixed_caller(client: AsyncMultimodalClient, examples: Sequence, bad_every: int = 0):
    """A Call through the client library: every modality subset in turn, every 10th request a
    batch of 4, and (``bad_every``) every n-th request a corrupt image that must be refused."""
    plan = [(ex, s) for ex in examples for s in subsets_of(ex)]

    async def call(i: int) -> bool | None:
        if bad_every and i % bad_every == bad_every - 1:
            try:
                await client.predict(Sample(image=b"\x89PNG\r\n\x1a\n broken"))
            except ClientError as exc:
                if exc.status == "INVALID_ARGUMENT":
                    return None  # the refusal it must get
                raise
            raise ClientError("a corrupt image was accepted", "FAILED_PRECONDITION")
        if i % 10 == 9:
            rows = [plan[(i + k) % len(plan)] for k in range(4)]
            preds = await client.predict_batch([sample_of(ex, s) for ex, s in rows])
            return all(p.label == ex.label for p, (ex, _) in zip(preds, rows, strict=True))
        ex, subset = plan[i % len(plan)]
        return (await client.predict(sample_of(ex, subset))).label == ex.label

    return call


# --------------------------------------------------------------------------- summaries


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def summarize(outcomes: Sequence[Outcome]) -> dict:
    """Counts by kind, latency percentiles of answered and of refused requests."""
    kinds = Counter(o.kind for o in outcomes)
    ok = [o.ms for o in outcomes if o.kind == "ok"]
    refused = [o.ms for o in outcomes if o.kind == "rejected"]
    judged = [o.correct for o in outcomes if o.kind == "ok" and o.correct is not None]
    errors = Counter(f"{o.status}: {o.message[:90]}" for o in outcomes if o.kind != "ok")
    return {
        "requests": len(outcomes),
        **{k: kinds.get(k, 0) for k in ("ok", "invalid", "rejected", "timeout", "failed", "lost")},
        "ok_p50_ms": percentile(ok, 50),
        "ok_p99_ms": percentile(ok, 99),
        "ok_max_ms": round(max(ok), 1) if ok else None,
        "rejected_p50_ms": percentile(refused, 50),
        "rejected_p99_ms": percentile(refused, 99),
        "accuracy": round(float(np.mean(judged)), 3) if judged else None,
        "errors": dict(errors.most_common(6)),
    }
