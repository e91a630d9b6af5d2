"""The page's logic without Gradio: page inputs -> Sample -> Prediction -> what the page shows.

Every failure becomes a ``PageError`` with a ``kind`` (the metrics label) and a message meant
for a person; the page itself never breaks, whatever the input or the server's state.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmtriton import spec

from ..client import (
    ChannelOptions,
    ClientError,
    MultimodalClient,
    Prediction,
    RetryPolicy,
    Sample,
)
from ..tracing import export_from_env, page_outcome, page_span
from .metrics import NO_MODALITIES, WebMetrics

# What the page says instead of a label when the model's top probability is below its threshold.
NOT_SURE = "Not sure"
NO_INPUT_MESSAGE = (
    "Nothing to classify yet: upload or draw an image, type some text, or upload or record "
    "audio. Any one of them is enough."
)


class PageError(Exception):
    """A request the page answers with a message instead of a prediction."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def size_text(n: int) -> str:
    """Bytes for people: 512 bytes, 3.4 KiB, 12.0 MiB."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def read_upload(path: str | Path | None, what: str, limit: int) -> bytes | None:
    """The bytes of an uploaded file, refusing an empty or too large one before it is sent."""
    if not path:
        return None
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise PageError("invalid_input", f"The {what} file is empty (0 bytes).")
    if size > limit:
        shown, allowed = size_text(size), size_text(limit)
        if shown == allowed:  # just over the limit: rounding would hide the difference
            shown, allowed = f"{size} bytes", f"{limit} bytes"
        raise PageError(
            "invalid_input",
            f"The {what} file is too large: {shown}; the limit is {allowed}. "
            "Please choose a smaller file.",
        )
    return path.read_bytes()


def _as_array(image: Any) -> np.ndarray | None:
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        with Image.open(image) as img:
            return np.asarray(img.convert("RGBA"))
    return np.asarray(image)


def _has_ink(layer: Any) -> bool:
    array = _as_array(layer)
    if array is None or array.size == 0:
        return False
    if array.ndim == 3 and array.shape[-1] == 4:
        return bool((array[..., 3] > 0).any())
    return bool((array < 250).any())  # opaque layer: anything darker than paper is ink


def sketch_png(value: dict | None) -> bytes | None:
    """The drawing pad's picture as PNG bytes, or None when nothing was drawn."""
    if not value:
        return None
    if not any(_has_ink(layer) for layer in value.get("layers") or []):
        return None
    composite = _as_array(value.get("composite"))
    if composite is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(composite.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class PageInputs:
    """A sample built from the page, and where its image came from ("upload", "drawing")."""

    sample: Sample
    image_source: str | None = None


def build_sample(
    image_path: str | Path | None,
    sketch: dict | None,
    text: str | None,
    audio_path: str | Path | None,
    source: str = "upload",
    limits: spec.Limits = spec.LIMITS,
) -> PageInputs:
    """Turn the page's inputs into a Sample, checking the limits before anything is sent.

    ``source`` is the image tab in front ("upload" or "draw"): its image is used when it has
    one, the other tab's otherwise.
    """
    drawn = sketch_png(sketch)
    image, image_source = None, None
    order = ("draw", "upload") if source == "draw" else ("upload", "draw")
    for tab in order:
        if tab == "upload" and image_path:
            image, image_source = read_upload(image_path, "image", limits.max_image_bytes), "upload"
            break
        if tab == "draw" and drawn:
            image, image_source = drawn, "drawing"
            break
    text = (text or "").strip() or None
    if text and len(text) > limits.max_text_chars:
        raise PageError(
            "invalid_input",
            f"The text is {len(text)} characters long; the limit is {limits.max_text_chars}.",
        )
    audio = read_upload(audio_path, "audio", limits.max_audio_bytes)
    sample = Sample(image=image, text=text, audio=audio)
    if not sample.modalities():
        raise PageError("no_input", NO_INPUT_MESSAGE)
    return PageInputs(sample, image_source)


_ENSEMBLE_PREFIX = re.compile(r"^(in ensemble '[^']*', )+")
_SAMPLE_PREFIX = re.compile(r"^sample \d+: ")
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f..>"


def server_detail(message: str) -> str:
    """The server's error message without Triton's routing prefixes and Python reprs."""
    text = _ENSEMBLE_PREFIX.sub("", message.strip())
    text = _SAMPLE_PREFIX.sub("", text)
    text = _OBJECT_REPR.sub("", text)
    return text[:1].upper() + text[1:] if text else "no details given"


def error_for(exc: ClientError, url: str, timeout_s: float) -> PageError:
    """A ClientError as a PageError with a friendly message."""
    status = exc.status
    if status == "INVALID_ARGUMENT":
        detail = server_detail(str(exc)).rstrip(".")
        return PageError("invalid_input", f"The input could not be used: {detail}.")
    if status in ("UNAVAILABLE", "NOT_FOUND"):
        return PageError(
            "server_unavailable",
            f"The inference server ({url}) is not reachable right now; it may be starting or "
            "restarting. The page keeps working: please try again in a few seconds.",
        )
    if status == "RESOURCE_EXHAUSTED":
        return PageError(
            "server_busy",
            "The inference server is busy (its queue is full). Please try again in a moment.",
        )
    if status in ("DEADLINE_EXCEEDED", "CANCELLED"):
        return PageError(
            "timeout",
            f"The inference server did not answer within {timeout_s:g} s; it may be overloaded. "
            "Please try again.",
        )
    return PageError(
        "internal", f"The server reported an error ({status}): {server_detail(str(exc))}"
    )


ClientFactory = Callable[[], MultimodalClient]


class Classifier:
    """Sends samples to Triton through one lazily created client, replaced after a failure.

    gRPC channels back off for up to minutes after a lost connection; a fresh client after an
    UNAVAILABLE answer lets the page pick the server up as soon as it is back.
    """

    RECONNECT = ("UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN")

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        channel: ChannelOptions | None = None,
        factory: ClientFactory | None = None,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._factory = factory or (
            lambda: MultimodalClient(
                url,
                timeout_s=timeout_s,
                retry=RetryPolicy(attempts=2, initial_backoff_s=0.2),
                ssl=ssl,
                root_certificates=root_certificates,
                channel=channel,
            )
        )
        self._client: MultimodalClient | None = None
        self._lock = threading.Lock()
        export_from_env("mmtriton-web")  # the page's spans, when tracing is configured

    def _get(self) -> MultimodalClient:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def reset(self, client: MultimodalClient | None = None) -> None:
        """Drop the current client (only if it is still ``client``, when given)."""
        with self._lock:
            old = self._client
            if old is None or (client is not None and old is not client):
                return
            self._client = None
        with contextlib.suppress(Exception):
            old.close()

    def close(self) -> None:
        """Close the client, if any."""
        self.reset()

    def predict(self, sample: Sample) -> Prediction:
        """Classify ``sample``; raises PageError with a friendly message on any failure."""
        client = None
        try:
            client = self._get()
            return client.predict(sample)
        except ClientError as exc:
            if exc.status in self.RECONNECT:
                self.reset(client)
            raise error_for(exc, self.url, self.timeout_s) from exc
        except Exception as exc:
            self.reset(client)
            raise PageError(
                "internal", f"Unexpected error talking to the server: {type(exc).__name__}: {exc}"
            ) from exc


def weights_rows(prediction: Prediction) -> list[dict]:
    """One row per modality for the fusion-weight chart."""
    return [
        {
            "modality": m,
            "weight": round(float(prediction.weights.get(m, 0.0)), 4),
            "used": "given" if m in prediction.modalities else "not given",
        }
        for m in spec.MODALITIES
    ]


def status_text(prediction: Prediction, image_source: str | None) -> str:
    """One line saying what was classified and the answer ("Not sure" below the threshold)."""
    names = [
        f"image ({image_source})" if m == "image" and image_source else m
        for m in prediction.modalities
    ]
    given = " + ".join(names)
    best, p = prediction.top(1)[0]
    if not prediction.confident:
        return (
            f"**{NOT_SURE}**: best guess **{best}** at {100 * p:.1f} %, below the model's "
            f"{100 * prediction.threshold:g} % confidence threshold, from {given}."
        )
    return f"Predicted **{best}** ({100 * p:.1f} %) from {given}."


@dataclass(frozen=True)
class PageResult:
    """What the page shows after one click: a prediction or an error message."""

    message: str
    prediction: Prediction | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.prediction is not None

    @property
    def status(self) -> str:
        """The message as the page's status line (Markdown)."""
        if self.prediction is None:
            return f"⚠ {self.message}"
        return f"{'✓' if self.prediction.confident else '?'} {self.message}"

    def label_value(self, top: int = 3) -> dict[str, Any] | None:
        """What the Prediction box shows: the probabilities (headed by the best label), or,
        when the model is not sure, "Not sure" as the heading over the same probabilities
        (gr.Label's {"label", "confidences"} form)."""
        if not self.prediction:
            return None
        if self.prediction.confident:
            return dict(self.prediction.probabilities)
        return {
            "label": NOT_SURE,
            "confidences": [
                {"label": label, "confidence": p} for label, p in self.prediction.top(top)
            ],
        }

    def latency_text(self) -> str:
        if not self.prediction:
            return ""
        return f"{self.prediction.latency_ms:.1f} ms (round trip to Triton)"

    def as_dict(self) -> dict:
        """JSON form, the /predict API's answer."""
        if self.prediction is None:
            return {"error": {"kind": self.error_kind, "message": self.message}}
        return {**self.prediction.as_dict(), "message": self.message}


def classify(
    classifier: Classifier,
    metrics: WebMetrics | None,
    image_path: str | Path | None,
    sketch: dict | None,
    text: str | None,
    audio_path: str | Path | None,
    source: str = "upload",
) -> PageResult:
    """One click of Classify, measured and counted, in a span; never raises."""
    with page_span(source) as span:
        result, modalities = _classify(
            classifier, metrics, image_path, sketch, text, audio_path, source
        )
        page_outcome(span, modalities, result.error_kind)
    return result


def _classify(
    classifier: Classifier,
    metrics: WebMetrics | None,
    image_path: str | Path | None,
    sketch: dict | None,
    text: str | None,
    audio_path: str | Path | None,
    source: str,
) -> tuple[PageResult, list[str]]:
    start = time.perf_counter()
    modalities: list[str] = []
    try:
        inputs = build_sample(image_path, sketch, text, audio_path, source)
        modalities = inputs.sample.modalities()
        prediction = classifier.predict(inputs.sample)
        result = PageResult(status_text(prediction, inputs.image_source), prediction)
    except PageError as exc:
        result = PageResult(exc.message, error_kind=exc.kind)
    except Exception as exc:  # a bug here must not take the page down
        result = PageResult(f"Unexpected error: {type(exc).__name__}: {exc}", error_kind="internal")
    if metrics is not None:
        if result.error_kind:
            metrics.count_error(result.error_kind)
        label = "+".join(modalities) or NO_MODALITIES
        metrics.observe_request(label, time.perf_counter() - start)
    return result, modalities
