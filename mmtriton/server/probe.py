"""An end-to-end probe: one tiny request through the whole ensemble, with a deadline.

Triton's own `/v2/health/ready` stays 200 while a Python-backend stub is dead or hung (Triton
2.51), so readiness that only asks Triton would keep a broken pod in rotation. The probe sends
all three modalities, so every step of the graph (preprocess, the three encoders, fusion) must
answer for it to pass.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from functools import cache

import numpy as np

from mmtriton import spec

# A refusal for load (queue full, draining) proves the server answers: the step is alive.
ANSWERED_STATUSES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
# ...unless the refusal came from gRPC itself because nothing listens.
UNREACHABLE_HINTS = ("failed to connect", "connection refused", "socket closed", "connect failed")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found: `ok` when the pipeline answered (or refused for load) in time."""

    ok: bool
    latency_s: float
    reason: str = ""


def _png_digit() -> bytes:
    """A 28x28 grayscale PNG with a vertical bar (a "1"): valid, tiny, decodable."""
    from PIL import Image

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 12:16] = 255
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def _wav_tone(seconds: float = 0.4, rate: int = 16000) -> bytes:
    """A short 16-bit mono tone: enough signal for voice-activity trimming to keep it."""
    n = int(seconds * rate)
    samples = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{n}h", *samples))
    return out.getvalue()


@cache
def probe_payload() -> dict[str, bytes]:
    """The probe's raw inputs, one row per modality (built once)."""
    return {"image": _png_digit(), "text": b"probe: the digit one", "audio": _wav_tone()}


class PipelineProbe:
    """Sends the probe request over gRPC; one channel reused across probes."""

    def __init__(self, grpc_url: str, *, ssl: bool = False, root_certificates: str | None = None):
        self.grpc_url, self._ssl, self._root = grpc_url, ssl, root_certificates
        self._client = None

    def _connect(self):
        import tritonclient.grpc as grpcclient

        if self._client is None:
            self._client = grpcclient.InferenceServerClient(
                self.grpc_url, ssl=self._ssl, root_certificates=self._root
            )
        return self._client

    def close(self) -> None:
        """Close the channel (a restarted server gets a fresh one)."""
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def run(self, timeout_s: float) -> ProbeResult:
        """One probe: ok when the ensemble answered within `timeout_s`."""
        import time

        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        inputs = []
        for modality, value in probe_payload().items():
            tensor = spec.RAW_INPUTS[modality]
            item = grpcclient.InferInput(tensor.name, [1, 1], tensor.wire_type)
            item.set_data_from_numpy(np.array([[value]], dtype=object))
            inputs.append(item)
        start = time.monotonic()
        try:
            self._connect().infer(
                spec.ENSEMBLE.name,
                inputs,
                # Every output: asking for a subset lets Triton's ensemble scheduler stop early
                # ("unexpected deadlock, at least one output is not set"), so ask as clients do.
                outputs=[grpcclient.InferRequestedOutput(t.name) for t in spec.ENSEMBLE.outputs],
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            elapsed = time.monotonic() - start
            status = str(exc.status() or "").replace("StatusCode.", "")
            message = str(exc.message() or "")
            unreachable = any(h in message.lower() for h in UNREACHABLE_HINTS)
            if status in ANSWERED_STATUSES and not unreachable:
                return ProbeResult(True, elapsed, f"answered {status}")
            self.close()  # a half-dead channel must not poison the next probe
            return ProbeResult(False, elapsed, f"{status or 'error'}: {message}")
        return ProbeResult(True, time.monotonic() - start)
