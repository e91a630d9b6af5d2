"""The fusion model: per-modality projections, sum / weighted / attention fusion, classifier.

Its weights are saved as a flat npz that `mmtriton.backend.fusion` (numpy, no torch) loads to
reproduce this forward pass inside Triton's Python backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmtriton import spec

EMBED_DIMS = spec.EMBED_DIMS


class FusionModel(nn.Module):
    """Late fusion over the modalities in `spec.MODALITIES`, masked by which are present."""

    def __init__(self, mode: str, shared_dim: int = 128, num_classes: int = spec.NUM_CLASSES):
        super().__init__()
        if mode not in spec.FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; choose one of {spec.FUSION_MODES}")
        self.mode = mode
        self.proj = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(EMBED_DIMS[m], shared_dim), nn.LayerNorm(shared_dim))
                for m in spec.MODALITIES
            }
        )
        # weighted: one learned logit per modality; attention: a score from each projection.
        self.modality_logits = nn.Parameter(torch.zeros(len(spec.MODALITIES)))
        self.attention = nn.Sequential(nn.Linear(shared_dim, 64), nn.Tanh(), nn.Linear(64, 1))
        self.classifier = nn.Sequential(
            nn.Linear(shared_dim, shared_dim), nn.GELU(), nn.Linear(shared_dim, num_classes)
        )
        # Logits are divided by the temperature of the row's modality subset (indexed by
        # spec.presence_code); fitted on validation data after training (calibration).
        self.register_buffer("temperature", torch.ones(spec.PRESENCE_CODES))

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        audio: torch.Tensor,
        present: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [N, C] and per-modality fusion weights [N, M] (zero where absent)."""
        feats = {"image": image, "text": text, "audio": audio}
        z = torch.stack([self.proj[m](feats[m]) for m in spec.MODALITIES], dim=1)  # [N, M, D]
        mask = present > 0.5
        if self.mode == "sum":
            weights = mask.to(z.dtype)
        else:
            if self.mode == "weighted":
                scores = self.modality_logits.expand(z.shape[0], -1)
            else:
                scores = self.attention(torch.tanh(z)).squeeze(-1)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=1)
            weights = torch.nan_to_num(weights, nan=0.0)  # a row with nothing present
        # where(), not multiply: an absent modality's placeholder can never leak in.
        fused = torch.where(mask.unsqueeze(-1), z * weights.unsqueeze(-1), torch.zeros_like(z))
        codes = (mask.long() * torch.tensor(spec.PRESENCE_BITS, device=mask.device)).sum(dim=1)
        logits = self.classifier(fused.sum(dim=1)) / self.temperature[codes].unsqueeze(1)
        if self.mode == "sum":
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return logits, weights


def save_fusion(model: FusionModel, path: Path) -> None:
    """Save weights as npz (numpy names = state_dict keys) plus the mode and class count."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["__mode__"] = np.array(model.mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_fusion(path: Path) -> FusionModel:
    """Load a FusionModel saved by `save_fusion`."""
    data = np.load(path)
    mode = str(data["__mode__"])
    shared_dim = data["proj.image.0.weight"].shape[0]
    num_classes = data["classifier.2.weight"].shape[0]
    model = FusionModel(mode, shared_dim, num_classes)
    state = {k: torch.from_numpy(data[k]) for k in data.files if k != "__mode__"}
    # Saved before calibration existed (none) or with one temperature for every subset.
    t = state.get("temperature", torch.ones(()))
    state["temperature"] = t.expand(spec.PRESENCE_CODES).clone() if t.dim() == 0 else t
    model.load_state_dict(state)
    return model.eval()
