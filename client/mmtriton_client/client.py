"""gRPC clients for the `multimodal` ensemble: synchronous and asyncio, typed results.

Requests are checked against the server's limits before they are sent; UNAVAILABLE (server
starting, restarting or shedding load) is retried with exponential backoff. Inference is
idempotent, so a retry never does harm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmtriton import spec

DEFAULT_URL = "localhost:8001"


class ClientError(Exception):
    """A request failed; `status` is the gRPC status name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status


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
        """Read image and audio from files."""
        return cls(
            image=Path(image).read_bytes() if image else None,
            text=text,
            audio=Path(audio).read_bytes() if audio else None,
        )

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
        if self.text and len(self.text) > limits.max_text_chars:
            raise ClientError(
                f"text is {len(self.text)} characters; the limit is {limits.max_text_chars}",
                "INVALID_ARGUMENT",
            )


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one sample."""

    label: str
    probabilities: dict[str, float]
    weights: dict[str, float]
    modalities: list[str]
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
            [[(v.encode() if isinstance(v, str) else v) or b""] for v in values], dtype=object
        )
        tensor = input_cls(
            spec.RAW_INPUTS[m].name, list(column.shape), spec.RAW_INPUTS[m].wire_type
        )
        tensor.set_data_from_numpy(column)
        inputs.append(tensor)
    return inputs


def parse_result(result, num_classes: int, latency_ms: float) -> list[Prediction]:
    """Predictions from a response whose PROBABILITIES came through the classification extension."""
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


@dataclass
class RetryPolicy:
    """Exponential backoff on UNAVAILABLE: by default about 5 s in all, which covers a server
    restart (ready again 3.3 s after a SIGKILL, measured)."""

    attempts: int = 6
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0

    def delays(self):
        delay = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_s)


class MultimodalClient:
    """Synchronous client. Use as a context manager or call close()."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        model: str = spec.ENSEMBLE.name,
        ssl: bool = False,
        root_certificates: str | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url, self.timeout_s, self.model = url, timeout_s, model
        self.retry = retry or RetryPolicy()
        self._client = grpcclient.InferenceServerClient(
            url, ssl=ssl, root_certificates=root_certificates
        )
        self._num_classes: int | None = None

    def __enter__(self) -> MultimodalClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def is_ready(self) -> bool:
        """True when the server and the ensemble are ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def num_classes(self) -> int:
        """The classifier's class count, from the ensemble's metadata (cached)."""
        if self._num_classes is None:
            meta = self._call(lambda: self._client.get_model_metadata(self.model, as_json=True))
            out = next(o for o in meta["outputs"] if o["name"] == spec.PROBABILITIES.name)
            self._num_classes = int(out["shape"][-1])
        return self._num_classes

    def _call(self, fn):
        from tritonclient.utils import InferenceServerException

        delays = self.retry.delays()
        while True:
            try:
                return fn()
            except InferenceServerException as exc:
                status = _status(exc)
                if status == "UNAVAILABLE":
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise ClientError(_message(exc), status) from exc

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
        if len(samples) > spec.MAX_REQUEST_BATCH:
            raise ClientError(
                f"{len(samples)} samples in one request; the limit is {spec.MAX_REQUEST_BATCH} "
                "(use predict_many)",
                "INVALID_ARGUMENT",
            )
        for s in samples:
            s.validate()
        n = self.num_classes()
        inputs = build_inputs(samples, self._grpc.InferInput)
        outputs = [
            self._grpc.InferRequestedOutput(spec.PROBABILITIES.name, class_count=n),
            self._grpc.InferRequestedOutput(spec.WEIGHTS.name),
            self._grpc.InferRequestedOutput(spec.PRESENT.name),
        ]
        start = time.perf_counter()
        result = self._call(
            lambda: self._client.infer(
                self.model, inputs, outputs=outputs, client_timeout=self.timeout_s
            )
        )
        return parse_result(result, n, (time.perf_counter() - start) * 1000)


class AsyncMultimodalClient:
    """asyncio client over tritonclient.grpc.aio; same results as MultimodalClient."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        model: str = spec.ENSEMBLE.name,
        ssl: bool = False,
        root_certificates: str | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient

        self._grpc = grpcclient
        self.timeout_s, self.model = timeout_s, model
        self.retry = retry or RetryPolicy()
        self._client = aioclient.InferenceServerClient(
            url, ssl=ssl, root_certificates=root_certificates
        )
        self._num_classes: int | None = None

    async def __aenter__(self) -> AsyncMultimodalClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    async def _call(self, make):
        from tritonclient.utils import InferenceServerException

        delays = self.retry.delays()
        while True:
            try:
                return await make()
            except InferenceServerException as exc:
                status = _status(exc)
                if status == "UNAVAILABLE":
                    delay = next(delays, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise ClientError(_message(exc), status) from exc

    async def num_classes(self) -> int:
        """The classifier's class count (cached)."""
        if self._num_classes is None:
            meta = await self._call(
                lambda: self._client.get_model_metadata(self.model, as_json=True)
            )
            out = next(o for o in meta["outputs"] if o["name"] == spec.PROBABILITIES.name)
            self._num_classes = int(out["shape"][-1])
        return self._num_classes

    async def predict(self, sample: Sample | None = None, **kwargs) -> Prediction:
        """Classify one sample."""
        return (await self.predict_batch([sample or Sample(**kwargs)]))[0]

    async def predict_batch(self, samples: Sequence[Sample]) -> list[Prediction]:
        """Classify several samples in one request."""
        for s in samples:
            s.validate()
        n = await self.num_classes()
        inputs = build_inputs(samples, self._grpc.InferInput)
        outputs = [
            self._grpc.InferRequestedOutput(spec.PROBABILITIES.name, class_count=n),
            self._grpc.InferRequestedOutput(spec.WEIGHTS.name),
            self._grpc.InferRequestedOutput(spec.PRESENT.name),
        ]
        start = time.perf_counter()
        result = await self._call(
            lambda: self._client.infer(
                self.model, inputs, outputs=outputs, client_timeout=self.timeout_s
            )
        )
        return parse_result(result, n, (time.perf_counter() - start) * 1000)
