"""The fusion model's forward pass in numpy, for Triton's Python backend (no torch there).

It reads the npz the build's fusion module writes (`save_fusion`) and reproduces
`FusionModel.forward` (a test holds the two within 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmtriton import spec


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(x - peak)
    total = e.sum(axis=axis, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


class NumpyFusion:
    """Fusion + softmax classifier: embeddings and presence mask in, probabilities out."""

    def __init__(self, weights_path: Path) -> None:
        data = np.load(weights_path)
        self.mode = str(data["__mode__"])
        if self.mode not in spec.FUSION_MODES:
            # A silent fallback would serve a model other than the one that was trained.
            raise ValueError(
                f"{weights_path}: unknown fusion mode {self.mode!r}; "
                f"expected one of {spec.FUSION_MODES}"
            )
        self.w = {k: data[k].astype(np.float32) for k in data.files if k != "__mode__"}
        # The calibration temperatures the build fitted on validation data, one per modality
        # subset (indexed by spec.presence_code); a scalar (older builds) or none (1) for all.
        t = self.w.pop("temperature", np.float32(1.0))
        self.temperature = np.broadcast_to(t, (spec.PRESENCE_CODES,)).astype(np.float32)
        self._presence_bits = np.array(spec.PRESENCE_BITS)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def __call__(
        self, embeddings: dict[str, np.ndarray], present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and fusion weights [N, M] for a batch."""
        z = np.stack(
            [
                _layer_norm(
                    self._linear(embeddings[m].astype(np.float32), f"proj.{m}.0"),
                    self.w[f"proj.{m}.1.weight"],
                    self.w[f"proj.{m}.1.bias"],
                )
                for m in spec.MODALITIES
            ],
            axis=1,
        )
        mask = present > 0.5
        if self.mode == "sum":
            weights = mask.astype(np.float32)
        else:
            if self.mode == "weighted":
                scores = np.broadcast_to(self.w["modality_logits"], mask.shape).astype(np.float32)
            else:
                hidden = np.tanh(self._linear(np.tanh(z), "attention.0"))
                scores = self._linear(hidden, "attention.2")[..., 0]
            scores = np.where(mask, scores, -np.inf)
            weights = _softmax(scores, axis=1).astype(np.float32)
        fused = np.where(mask[..., None], z * weights[..., None], 0.0).sum(axis=1)
        hidden = _gelu(self._linear(fused, "classifier.0"))
        codes = (mask * self._presence_bits).sum(axis=1)
        logits = self._linear(hidden, "classifier.2") / self.temperature[codes][:, None]
        if self.mode == "sum":
            weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
        return _softmax(logits, axis=1).astype(np.float32), weights.astype(np.float32)
