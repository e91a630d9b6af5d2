"""gRPC clients for the `multimodal` ensemble: synchronous and asyncio, typed results.

Both clients are thin faces over one core (`_Core`): request building, input checks against
the server's limits, result parsing and retry decisions live there once, so the two cannot
drift. Retryable failures (see `retry.is_retryable`: UNAVAILABLE, a dead Python stub while the
server heals) are retried with exponential backoff within a time budget; inference is
idempotent, so a retry never does harm. The channel (load balancing across pods, keepalive,
message sizes) is configured by `ChannelOptions`. Each client reads the served model's
confidence threshold once (see `confidence`) and marks every Prediction `confident` or not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmtriton import spec

from .channel import LB_POLICIES, ChannelOptions
from .confidence import ThresholdError, is_confident, threshold_from_config
from .retry import HEAL_BUDGET_S, STUB_NOT_HEALTHY, Attempts, RetryPolicy, is_retryable
from .tracing import request_span

__all__ = [
    "DEFAULT_URL",
    "HEAL_BUDGET_S",
    "LB_POLICIES",
    "STUB_NOT_HEALTHY",
    "AsyncMultimodalClient",
    "ChannelOptions",
    "ClientError",
    "MultimodalClient",
    "Prediction",
    "RetryPolicy",
    "Sample",
    "build_inputs",
    "is_retryable",
    "parse_result",
]

DEFAULT_URL = f"localhost:{spec.DEFAULT_PORTS['grpc']}"


class ClientError(Exception):
    """A request failed; `status` is the gRPC status name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status


def _read_file(path: str | Path | None, what: str) -> bytes | None:
    if not path:
        return None
    data = Path(path).read_bytes()
    if not data:
        # b"" means "absent" in a Sample; an empty file given on purpose is a mistake to name.
        raise ClientError(f"{what} file {path} is empty (0 bytes)", "INVALID_ARGUMENT")
    return data


@dataclass(frozen=True)
class Sample:
    """One multimodal input: any non-empty subset of image bytes, text and audio bytes."""

    image: bytes | None = None
    text: str | None = None
    audio: bytes | None = None

    @classmethod
    def from_files(
        cls,
        image: str | Path | None = None,
        text: str | None = None,
        audio: str | Path | None = None,
    ) -> Sample:
        """Read image and audio from files; an empty file raises ClientError naming it."""
        return cls(image=_read_file(image, "image"), text=text, audio=_read_file(audio, "audio"))

    def modalities(self) -> list[str]:
        """The modalities this sample carries, in canonical order."""
        given = {"image": bool(self.image), "text": bool(self.text), "audio": bool(self.audio)}
        return [m for m in spec.MODALITIES if given[m]]

    def validate(self, limits: spec.Limits = spec.LIMITS) -> None:
        """Raise ClientError (INVALID_ARGUMENT) for what the server would refuse anyway."""
        if not self.modalities():
            raise ClientError("give at least one of image, text or audio", "INVALID_ARGUMENT")
        if self.image and len(self.image) > limits.max_image_bytes:
            raise ClientError(
                f"image is {len(self.image)} bytes; the limit is {limits.max_image_bytes}",
                "INVALID_ARGUMENT",
            )
        if self.audio and len(self.audio) > limits.max_audio_bytes:
            raise ClientError(
                f"audio is {len(self.audio)} bytes; the limit is {limits.max_audio_bytes}",
                "INVALID_ARGUMENT",
            )
        if self.text:
            if len(self.text) > limits.max_text_chars:
                raise ClientError(
                    f"text is {len(self.text)} characters; the limit is {limits.max_text_chars}",
                    "INVALID_ARGUMENT",
                )
            _utf8(self.text)


def _utf8(text: str) -> bytes:
    """The text as UTF-8; ClientError when it cannot be (e.g. undecodable command-line bytes,
    which Python hands over as lone surrogates)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ClientError(
            f"text is not valid UTF-8 (character {exc.start + 1} of {len(text)} is not text)",
            "INVALID_ARGUMENT",
        ) from None


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one sample.

    ``label`` is the most likely class even when the model is not sure; ``confident`` says
    whether its probability reaches the served model's ``threshold`` (below it, people are
    told "not sure", with ``label`` as the best guess).
    """

    label: str
    probabilities: dict[str, float]
    weights: dict[str, float]
    modalities: list[str]
    confident: bool
    threshold: float
    latency_ms: float = field(default=0.0, compare=False)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely labels with their probabilities."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def as_dict(self) -> dict:
        """JSON-ready form (the CLI's --json output)."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "weights": self.weights,
            "modalities": self.modalities,
            "confident": self.confident,
            "threshold": self.threshold,
            "latency_ms": round(self.latency_ms, 2),
        }


def build_inputs(samples: Sequence[Sample], input_cls) -> list:
    """Triton inputs for a batch: a modality is sent when any sample has it (b"" elsewhere)."""
    inputs = []
    for m in spec.MODALITIES:
        values = [getattr(s, m) for s in samples]
        if not any(values):
            continue
        column = np.array(
            [[(_utf8(v) if isinstance(v, str) else v) or b""] for v in values], dtype=object
        )
        tensor = input_cls(
            spec.RAW_INPUTS[m].name, list(column.shape), spec.RAW_INPUTS[m].wire_type
        )
        tensor.set_data_from_numpy(column)
        inputs.append(tensor)
    return inputs


def parse_result(
    result,
    num_classes: int,
    latency_ms: float,
    threshold: float = spec.DEFAULT_CONFIDENCE_THRESHOLD,
) -> list[Prediction]:
    """Predictions from a response whose PROBABILITIES came through the classification extension;
    each is confident when its top probability reaches ``threshold``."""
    classes = result.as_numpy(spec.PROBABILITIES.name)
    weights = result.as_numpy(spec.WEIGHTS.name)
    present = result.as_numpy(spec.PRESENT.name)
    predictions = []
    for row in range(classes.shape[0]):
        probs = {}
        for entry in classes[row][:num_classes]:
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            score, _index, label = text.split(":", 2)
            probs[label] = float(score)
        label = next(iter(probs))  # the extension returns classes best first
        predictions.append(
            Prediction(
                label=label,
                probabilities=probs,
                weights={m: float(w) for m, w in zip(spec.MODALITIES, weights[row], strict=True)},
                modalities=[
                    m for m, p in zip(spec.MODALITIES, present[row], strict=True) if p > 0.5
                ],
                confident=is_confident(probs[label], threshold),
                threshold=threshold,
                latency_ms=latency_ms,
            )
        )
    return predictions


def _status(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = str(status() if callable(status) else status or "")
    return text.replace("StatusCode.", "") or "UNKNOWN"


def _message(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return str(message() if callable(message) else message or exc)


@dataclass(frozen=True)
class _Request:
    """One prepared inference request."""

    inputs: list
    outputs: list
    num_classes: int
    threshold: float  # the served model's confidence threshold


class _Core:
    """Everything the sync and async clients share; they only add the I/O (blocking or
    awaited calls, sleeping or awaiting between retries)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        retry: RetryPolicy | None,
        model: str,
        ssl: bool,
        root_certificates: str | None,
        channel: ChannelOptions | None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.url, self.timeout_s, self.model = url, timeout_s, model
        self.retry = retry or RetryPolicy()
        self.channel = channel or ChannelOptions()
        self.ssl, self.root_certificates = ssl, root_certificates
        self.num_classes: int | None = None
        self.threshold: float | None = None

    def connection_kwargs(self) -> dict:
        """Keyword arguments of tritonclient's InferenceServerClient (sync and aio alike)."""
        return {
            "ssl": self.ssl,
            "root_certificates": self.root_certificates,
            "channel_args": self.channel.channel_args(),
        }

    def check(self, samples: Sequence[Sample]) -> None:
        """Raise ClientError (INVALID_ARGUMENT) before sending what the server would refuse."""
        if not samples:
            raise ClientError("no samples given", "INVALID_ARGUMENT")
        if len(samples) > spec.MAX_REQUEST_BATCH:
            raise ClientError(
                f"{len(samples)} samples in one request; the limit is {spec.MAX_REQUEST_BATCH} "
                "(use predict_many)",
                "INVALID_ARGUMENT",
            )
        for s in samples:
            s.validate()

    def learn_num_classes(self, metadata: dict) -> int:
        """The classifier's class count from the ensemble's metadata (remembered)."""
        out = next(o for o in metadata["outputs"] if o["name"] == spec.PROBABILITIES.name)
        self.num_classes = int(out["shape"][-1])
        return self.num_classes

    def learn_threshold(self, config: dict) -> float:
        """The confidence threshold from the ensemble's model config (remembered); ClientError
        FAILED_PRECONDITION when the served value is unusable."""
        try:
            self.threshold = threshold_from_config(config)
        except ThresholdError as exc:
            raise ClientError(str(exc), "FAILED_PRECONDITION") from None
        return self.threshold

    def request(self, samples: Sequence[Sample], num_classes: int, threshold: float) -> _Request:
        """Inputs and requested outputs for already checked samples."""
        requested = self.grpc.InferRequestedOutput
        return _Request(
            inputs=build_inputs(samples, self.grpc.InferInput),
            outputs=[
                requested(spec.PROBABILITIES.name, class_count=num_classes),
                requested(spec.WEIGHTS.name),
                requested(spec.PRESENT.name),
            ],
            num_classes=num_classes,
            threshold=threshold,
        )

    def infer_kwargs(self, request: _Request) -> dict:
        """Keyword arguments of tritonclient's infer() for this request."""
        return {
            "model_name": self.model,
            "inputs": request.inputs,
            "outputs": request.outputs,
            "client_timeout": self.timeout_s,
        }

    def parse(self, result, request: _Request, started: float) -> list[Prediction]:
        """Predictions from the response (latency measured from `started`, perf_counter)."""
        latency_ms = (time.perf_counter() - started) * 1000
        return parse_result(result, request.num_classes, latency_ms, request.threshold)

    def retry_delay(self, attempts: Attempts, exc: Exception) -> float:
        """Seconds to wait before the next attempt; raises ClientError when `exc` is final.

        Call it inside the ``except`` block (the ClientError chains to `exc`)."""
        status, message = _status(exc), _message(exc)
        delay = attempts.next_delay(status, message)
        if delay is None:
            if len(attempts.failures) > 1:
                message = f"{message} (after {len(attempts.failures)} attempts)"
            raise ClientError(message, status) from exc
        return delay

    @staticmethod
    def errors():
        from tritonclient.utils import InferenceServerException

        return InferenceServerException


class MultimodalClient:
    """Synchronous client. Use as a context manager or call close().

    ``url`` is any gRPC target (``HOST:PORT``, ``dns:///HOST:PORT``, ``ipv4:A:P,B:Q``); with
    ``channel=ChannelOptions(lb_policy="round_robin")`` requests are spread over every address
    it resolves to.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        model: str = spec.ENSEMBLE.name,
        ssl: bool = False,
        root_certificates: str | None = None,
        channel: ChannelOptions | None = None,
    ) -> None:
        self._core = _Core(url, timeout_s, retry, model, ssl, root_certificates, channel)
        self.url, self.timeout_s, self.model = url, timeout_s, model
        self.retry, self.channel = self._core.retry, self._core.channel
        self._client = self._core.grpc.InferenceServerClient(url, **self._core.connection_kwargs())

    def __enter__(self) -> MultimodalClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def _call(self, fn: Callable):
        attempts = self.retry.start()
        while True:
            try:
                return fn()
            except self._core.errors() as exc:
                delay = self._core.retry_delay(attempts, exc)
            time.sleep(delay)

    def is_ready(self) -> bool:
        """True when the server (the one this call reaches) and the ensemble are ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def num_classes(self) -> int:
        """The classifier's class count, from the ensemble's metadata (cached)."""
        if self._core.num_classes is None:
            meta = self._call(lambda: self._client.get_model_metadata(self.model, as_json=True))
            self._core.learn_num_classes(meta)
        return self._core.num_classes  # type: ignore[return-value]

    def confidence_threshold(self) -> float:
        """The served model's confidence threshold, from its config (read once; the default
        when the config has none)."""
        if self._core.threshold is None:
            config = self._call(lambda: self._client.get_model_config(self.model, as_json=True))
            self._core.learn_threshold(config)
        return self._core.threshold  # type: ignore[return-value]

    def predict(self, sample: Sample | None = None, **kwargs) -> Prediction:
        """Classify one sample (a Sample, or image=/text=/audio= keywords)."""
        return self.predict_batch([sample or Sample(**kwargs)])[0]

    def predict_many(
        self, samples: Sequence[Sample], batch_size: int = spec.MAX_REQUEST_BATCH
    ) -> list[Prediction]:
        """Classify any number of samples, `batch_size` per request, in order."""
        out: list[Prediction] = []
        for start in range(0, len(samples), batch_size):
            out += self.predict_batch(samples[start : start + batch_size])
        return out

    def predict_batch(self, samples: Sequence[Sample]) -> list[Prediction]:
        """Classify several samples in one request (at most spec.MAX_REQUEST_BATCH)."""
        self._core.check(samples)
        request = self._core.request(samples, self.num_classes(), self.confidence_threshold())
        started = time.perf_counter()
        with request_span(samples, self.model) as span:  # traceparent goes as gRPC metadata
            result = self._call(
                lambda: self._client.infer(**self._core.infer_kwargs(request), headers=span.headers)
            )
        return self._core.parse(result, request, started)


class AsyncMultimodalClient:
    """asyncio client over tritonclient.grpc.aio; the same methods and results as
    MultimodalClient, as coroutines."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        model: str = spec.ENSEMBLE.name,
        ssl: bool = False,
        root_certificates: str | None = None,
        channel: ChannelOptions | None = None,
    ) -> None:
        import tritonclient.grpc.aio as aioclient

        self._core = _Core(url, timeout_s, retry, model, ssl, root_certificates, channel)
        self.url, self.timeout_s, self.model = url, timeout_s, model
        self.retry, self.channel = self._core.retry, self._core.channel
        self._client = aioclient.InferenceServerClient(url, **self._core.connection_kwargs())

    async def __aenter__(self) -> AsyncMultimodalClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    async def _call(self, make: Callable):
        attempts = self.retry.start()
        while True:
            try:
                return await make()
            except self._core.errors() as exc:
                delay = self._core.retry_delay(attempts, exc)
            await asyncio.sleep(delay)

    async def is_ready(self) -> bool:
        """True when the server (the one this call reaches) and the ensemble are ready."""
        try:
            return bool(
                await self._client.is_server_ready()
                and await self._client.is_model_ready(self.model)
            )
        except Exception:
            return False

    async def num_classes(self) -> int:
        """The classifier's class count, from the ensemble's metadata (cached)."""
        if self._core.num_classes is None:
            meta = await self._call(
                lambda: self._client.get_model_metadata(self.model, as_json=True)
            )
            self._core.learn_num_classes(meta)
        return self._core.num_classes  # type: ignore[return-value]

    async def confidence_threshold(self) -> float:
        """The served model's confidence threshold, from its config (read once; the default
        when the config has none)."""
        if self._core.threshold is None:
            config = await self._call(
                lambda: self._client.get_model_config(self.model, as_json=True)
            )
            self._core.learn_threshold(config)
        return self._core.threshold  # type: ignore[return-value]

    async def predict(self, sample: Sample | None = None, **kwargs) -> Prediction:
        """Classify one sample (a Sample, or image=/text=/audio= keywords)."""
        return (await self.predict_batch([sample or Sample(**kwargs)]))[0]

    async def predict_many(
        self, samples: Sequence[Sample], batch_size: int = spec.MAX_REQUEST_BATCH
    ) -> list[Prediction]:
        """Classify any number of samples, `batch_size` per request, in order."""
        out: list[Prediction] = []
        for start in range(0, len(samples), batch_size):
            out += await self.predict_batch(samples[start : start + batch_size])
        return out

    async def predict_batch(self, samples: Sequence[Sample]) -> list[Prediction]:
        """Classify several samples in one request (at most spec.MAX_REQUEST_BATCH)."""
        self._core.check(samples)
        request = self._core.request(
            samples, await self.num_classes(), await self.confidence_threshold()
        )
        started = time.perf_counter()
        with request_span(samples, self.model) as span:  # traceparent goes as gRPC metadata
            result = await self._call(
                lambda: self._client.infer(**self._core.infer_kwargs(request), headers=span.headers)
            )
        return self._core.parse(result, request, started)
