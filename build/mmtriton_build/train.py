"""Training: the audio CNN on spoken digits, then the fusion models on frozen embeddings."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmtriton import spec

from .encoders import AudioClassifier, AudioEncoder
from .features import SplitFeatures
from .fusion import FusionModel

# The order in which modality dropout draws subsets: all three first, then by presence bits
# (image, text, audio) descending. Derived from spec.SUBSETS; the order only matters because
# changing it changes which subset each random draw picks, and so the trained weights.
TRAINING_SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    sorted(spec.SUBSETS, key=lambda s: [m in s for m in spec.MODALITIES], reverse=True)
)


def subset_mask(subset: tuple[str, ...], n: int) -> np.ndarray:
    """A presence mask [n, M] with the subset's modalities on."""
    row = np.array([float(m in subset) for m in spec.MODALITIES], np.float32)
    return np.tile(row, (n, 1))


def train_audio_encoder(
    mels: np.ndarray,
    labels: np.ndarray,
    val_mels: np.ndarray,
    val_labels: np.ndarray,
    *,
    epochs: int,
    seed: int,
    num_classes: int = spec.NUM_CLASSES,
) -> tuple[AudioEncoder, float]:
    """Train the log-mel CNN; returns the encoder of the best validation epoch and its accuracy."""
    torch.manual_seed(seed)
    model = AudioClassifier(num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    steps = epochs * int(np.ceil(len(mels) / 64))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    x_all, y_all = torch.from_numpy(mels), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state = -1.0, None
    bar = tqdm(range(epochs), desc="audio CNN", unit="epoch")
    for _ in bar:
        model.train()
        for idx in torch.randperm(len(mels), generator=gen).split(64):
            x = x_all[idx]
            # SpecAugment-style time shift: the word may sit anywhere in the window.
            shift = int(torch.randint(-8, 9, (1,), generator=gen))
            x = torch.roll(x, shifts=shift, dims=3)
            loss = nn.functional.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = _accuracy(model, val_mels, val_labels)
        bar.set_postfix(val_acc=f"{acc:.3f}")
        if acc > best_acc:
            best_acc = acc
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.encoder.eval(), best_acc


@torch.inference_mode()
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    preds = torch.cat([model(torch.from_numpy(c)).argmax(1) for c in np.array_split(x, 16)])
    return float((preds.numpy() == y).mean())


def _tensors(f: SplitFeatures) -> dict[str, torch.Tensor]:
    return {
        "image": torch.from_numpy(f.image),
        "text": torch.from_numpy(f.text),
        "audio": torch.from_numpy(f.audio),
    }


def _training_masks(
    available: torch.Tensor, gen: torch.Generator, dropout: float, only: str | None
) -> torch.Tensor:
    """Modality dropout: all modalities with prob 1-dropout, else a random non-empty subset."""
    n = available.shape[0]
    if only is not None:
        keep = torch.zeros_like(available)
        keep[:, spec.MODALITIES.index(only)] = 1.0
        return keep * available
    subsets = torch.from_numpy(np.stack([subset_mask(s, 1)[0] for s in TRAINING_SUBSETS]))
    pick = subsets[torch.randint(len(TRAINING_SUBSETS), (n,), generator=gen)]
    full = torch.rand(n, generator=gen) >= dropout
    keep = torch.where(full.unsqueeze(1), torch.ones_like(pick), pick) * available
    empty = keep.sum(dim=1) == 0
    keep[empty] = available[empty]
    return keep


def train_fusion(
    mode: str,
    clean: SplitFeatures,
    degraded: SplitFeatures,
    val: SplitFeatures,
    *,
    shared_dim: int,
    epochs: int,
    dropout: float,
    seed: int,
    only: str | None = None,
    num_classes: int = spec.NUM_CLASSES,
    degraded_share: float = 0.4,
) -> tuple[FusionModel, float]:
    """Train one fusion model (or a unimodal baseline with `only`) on frozen embeddings.

    Each training row is drawn clean or degraded so the model learns to lean on whichever
    modality is reliable; the epoch with the best validation accuracy over all subsets is kept.
    """
    torch.manual_seed(seed)
    model = FusionModel(mode, shared_dim, num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    batch = 256
    steps = epochs * int(np.ceil(len(clean) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    xc, xd = _tensors(clean), _tensors(degraded)
    labels = torch.from_numpy(clean.labels)
    available = torch.from_numpy(clean.present)
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state = -1.0, None
    val_subsets = [(only,)] if only else list(TRAINING_SUBSETS)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(clean), generator=gen).split(batch):
            use_degraded = (torch.rand(len(idx), generator=gen) < degraded_share).unsqueeze(1)
            feats = {m: torch.where(use_degraded, xd[m][idx], xc[m][idx]) for m in xc}
            present = _training_masks(available[idx], gen, dropout, only)
            logits, _ = model(**feats, present=present)
            loss = nn.functional.cross_entropy(logits, labels[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = float(np.mean([accuracy(model, val, s) for s in val_subsets]))
        if acc > best_acc:
            best_acc = acc
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), best_acc


@torch.inference_mode()
def predict(model: FusionModel, feats: SplitFeatures, subset: tuple[str, ...]) -> np.ndarray:
    """Predicted labels with only `subset` of the modalities given."""
    model.eval()
    present = torch.from_numpy(subset_mask(subset, len(feats)) * feats.present)
    logits, _ = model(**_tensors(feats), present=present)
    return logits.argmax(1).numpy()


def accuracy(model: FusionModel, feats: SplitFeatures, subset: tuple[str, ...]) -> float:
    """Top-1 accuracy with only `subset` of the modalities given."""
    return float((predict(model, feats, subset) == feats.labels).mean())
