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


# No-digit training rows: each modality of a row is swapped for a no-digit input with this
# probability, and this share of rows gets no digit in any modality.
NO_DIGIT_MODALITY_SHARE = 0.2
NO_DIGIT_ROW_SHARE = 0.12
LABEL_SMOOTHING = 0.05


def soft_targets(
    labels: torch.Tensor, informative: torch.Tensor, present: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Training targets [N, C]: the (smoothed) label where a present modality carries the
    digit, else uniform, so inputs without a digit teach the model to say "not sure"."""
    uniform = torch.full((len(labels), num_classes), 1.0 / num_classes)
    onehot = nn.functional.one_hot(labels.clamp(min=0), num_classes).float()
    smoothed = onehot * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / num_classes
    has_digit = ((informative > 0.5) & (present > 0.5)).any(dim=1) & (labels >= 0)
    return torch.where(has_digit.unsqueeze(1), smoothed, uniform)


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
    no_digit: SplitFeatures | None = None,
    no_digit_texts: SplitFeatures | None = None,
) -> tuple[FusionModel, float]:
    """Train one fusion model (or a unimodal baseline with `only`) on frozen embeddings.

    Each modality of each training row is drawn clean or augmented/corrupted (at a random
    severity) on its own, so one modality can be bad while another is fine and the model
    learns to lean on the reliable one; rows may carry no-digit inputs (``no_digit``), whose
    target is uniform; their texts are drawn from ``no_digit`` and the text-only rows of
    ``no_digit_texts`` (generated). The epoch with the best validation accuracy over all
    subsets is kept.
    """
    torch.manual_seed(seed)
    model = FusionModel(mode, shared_dim, num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    batch = 256
    steps = epochs * int(np.ceil(len(clean) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    xc, xd = _tensors(clean), _tensors(degraded)
    info_c = torch.from_numpy(clean.informative.astype(np.float32))
    info_d = torch.from_numpy(degraded.informative.astype(np.float32))
    nd = _tensors(no_digit) if no_digit is not None and len(no_digit) else None
    if nd is not None and no_digit_texts is not None and len(no_digit_texts):
        nd["text"] = torch.cat([nd["text"], torch.from_numpy(no_digit_texts.text)])
    labels = torch.from_numpy(clean.labels)
    available = torch.from_numpy(clean.present)
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state = -1.0, None
    val_subsets = [(only,)] if only else list(TRAINING_SUBSETS)
    n_mod = len(spec.MODALITIES)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(clean), generator=gen).split(batch):
            n = len(idx)
            use_degraded = torch.rand(n, n_mod, generator=gen) < degraded_share
            feats = {
                m: torch.where(use_degraded[:, j : j + 1], xd[m][idx], xc[m][idx])
                for j, m in enumerate(spec.MODALITIES)
            }
            informative = torch.where(use_degraded, info_d[idx], info_c[idx])
            present = _training_masks(available[idx], gen, dropout, only)
            if nd is not None:
                swap = torch.rand(n, n_mod, generator=gen) < NO_DIGIT_MODALITY_SHARE
                swap |= (torch.rand(n, generator=gen) < NO_DIGIT_ROW_SHARE).unsqueeze(1)
                for j, m in enumerate(spec.MODALITIES):
                    pick = torch.randint(len(nd[m]), (n,), generator=gen)
                    feats[m] = torch.where(swap[:, j : j + 1], nd[m][pick], feats[m])
                informative = torch.where(swap, torch.zeros_like(informative), informative)
            logits, _ = model(**feats, present=present)
            target = soft_targets(labels[idx], informative, present, num_classes)
            loss = nn.functional.cross_entropy(logits, target)
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
def logits_for(model: FusionModel, feats: SplitFeatures, subset: tuple[str, ...]) -> np.ndarray:
    """Logits [N, C] (after the model's temperature) with only `subset` given."""
    model.eval()
    present = torch.from_numpy(subset_mask(subset, len(feats)) * feats.present)
    logits, _ = model(**_tensors(feats), present=present)
    return logits.numpy()


def calibrate(
    model: FusionModel,
    val_sets: list[SplitFeatures],
    subsets: list[tuple[str, ...]],
) -> dict[str, float]:
    """Fit one temperature per modality subset on validation rows; returns them by subset name.

    A subset's rows are those carrying one of its modalities. A row whose given modalities
    carry no digit (an uninformative phrase alone, a no-digit input) is scored against a uniform
    target, as in training: with labels only, the text temperature sharpens until no-digit
    texts read as confident (scripts/temperature_fit_variants.py: at most 0.27 -> 0.55).
    """
    from .calibration import fit_temperature

    model.temperature.fill_(1.0)
    fitted = {}
    for subset in subsets:
        digit_logits, labels, uniform_logits = [], [], []
        for feats in val_sets:
            given = subset_mask(subset, len(feats)) * feats.present
            rows = given.sum(axis=1) > 0
            has_digit = (given * feats.informative).sum(axis=1) > 0
            logits = logits_for(model, feats, subset)
            digit_logits.append(logits[rows & has_digit])
            labels.append(feats.labels[rows & has_digit])
            uniform_logits.append(logits[rows & ~has_digit])
        fitted[subset] = fit_temperature(
            np.concatenate(digit_logits), np.concatenate(labels), np.concatenate(uniform_logits)
        )
    for subset, temperature in fitted.items():
        model.temperature[spec.presence_code(subset)] = temperature
    return {spec.subset_name(s): t for s, t in fitted.items()}


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
