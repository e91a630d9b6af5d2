"""Step `fusion`: a fusion model per mode, and a single-modality baseline per modality."""

from __future__ import annotations

from pathlib import Path

from mmtriton import spec

from ..artifacts import FEATURE_SETS, BuildPaths
from ..config import BuildConfig


def outputs(paths: BuildPaths) -> list[Path]:
    """What this step writes."""
    return [paths.fusion(m) for m in spec.FUSION_MODES] + [
        paths.baseline(m) for m in spec.MODALITIES
    ]


def run(config: BuildConfig, paths: BuildPaths) -> None:
    """Train and save every fusion mode and every unimodal baseline."""
    from ..features import SplitFeatures
    from ..fusion import save_fusion
    from ..train import train_fusion

    f = {n: SplitFeatures.load(paths.feature_file(n)) for n in FEATURE_SETS}
    fs = config.fusion
    num_classes = len(paths.labels.read_text().split())
    common = dict(
        shared_dim=fs.shared_dim,
        epochs=fs.epochs,
        seed=config.seed,
        num_classes=num_classes,
        degraded_share=fs.degraded_share,
    )
    for mode in spec.FUSION_MODES:
        model, acc = train_fusion(
            mode, f["train"], f["train_degraded"], f["val"], dropout=fs.modality_dropout, **common
        )
        save_fusion(model, paths.fusion(mode))
        print(f"  fusion {mode}: validation accuracy over all subsets {acc:.4f}")
    for modality in spec.MODALITIES:
        model, acc = train_fusion(
            fs.mode, f["train"], f["train_degraded"], f["val"], dropout=0.0, only=modality, **common
        )
        save_fusion(model, paths.baseline(modality))
        print(f"  {modality}-only baseline: validation accuracy {acc:.4f}")
