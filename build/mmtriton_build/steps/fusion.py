"""Step `fusion`: a fusion model per mode, and a single-modality baseline per modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmtriton import spec

from ..artifacts import FEATURE_SETS, BuildPaths
from ..config import BuildConfig


def outputs(paths: BuildPaths) -> list[Path]:
    """What this step writes."""
    return (
        [paths.fusion(m) for m in spec.FUSION_MODES]
        + [paths.baseline(m) for m in spec.MODALITIES]
        + [paths.calibration]
    )


def _choose_threshold(model, f: dict) -> float:
    """The confidence threshold, from validation digits and validation no-digit inputs."""
    from ..calibration import choose_threshold, softmax
    from ..train import TRAINING_SUBSETS, logits_for

    digit_p, digit_y, nd_p = [], [], []
    for subset in TRAINING_SUBSETS:
        for name in ("val", "val_degraded"):
            digit_p.append(softmax(logits_for(model, f[name], subset)))
            digit_y.append(f[name].labels)
        nd_p.append(softmax(logits_for(model, f["nodigit_val"], subset)))
    return choose_threshold(np.concatenate(digit_p), np.concatenate(digit_y), np.concatenate(nd_p))


def calibration_sets(f: dict) -> list:
    """The feature sets the temperatures are fitted on: validation, augmented validation and
    validation no-digit inputs (where built)."""
    return [f[n] for n in ("val", "val_degraded", "nodigit_val") if len(f[n])]


def training_args(config: BuildConfig, f: dict, num_classes: int) -> dict:
    """`train_fusion` keyword arguments of the recipe (all but mode, dropout and `only`)."""
    fs = config.fusion
    return dict(
        shared_dim=fs.shared_dim,
        epochs=fs.epochs,
        seed=config.seed,
        num_classes=num_classes,
        degraded_share=fs.degraded_share,
        no_digit=f["nodigit_train"],
        no_digit_texts=f["nodigit_text_train"],
    )


def run(config: BuildConfig, paths: BuildPaths) -> None:
    """Train, calibrate and save every fusion mode and every unimodal baseline; write the
    temperature and the confidence threshold (chosen on validation data) beside them."""
    from ..features import SplitFeatures
    from ..fusion import save_fusion
    from ..train import TRAINING_SUBSETS, calibrate, train_fusion

    f = {n: SplitFeatures.load(paths.feature_file(n)) for n in FEATURE_SETS}
    fit_on = calibration_sets(f)
    fs = config.fusion
    common = training_args(config, f, len(paths.labels.read_text().split()))
    calibration = {}
    for mode in spec.FUSION_MODES:
        model, acc = train_fusion(
            mode, f["train"], f["train_degraded"], f["val"], dropout=fs.modality_dropout, **common
        )
        temperatures = calibrate(model, fit_on, list(TRAINING_SUBSETS))
        save_fusion(model, paths.fusion(mode))
        t_text = ", ".join(f"{s} {t:.3f}" for s, t in temperatures.items())
        print(f"  fusion {mode}: validation accuracy (all subsets) {acc:.4f}, T {t_text}")
        if mode == fs.mode:
            threshold = _choose_threshold(model, f) if len(f["nodigit_val"]) else None
            calibration = {
                "temperature": {s: round(t, 4) for s, t in temperatures.items()},
                "confidence_threshold": threshold,
                "chosen_on": "val, val_degraded and nodigit_val (temperature: NLL per modality "
                "subset, uniform targets where no given modality carries a digit); "
                "threshold: the same sets (calibration.choose_threshold)",
            }
    for modality in spec.MODALITIES:
        model, acc = train_fusion(
            fs.mode, f["train"], f["train_degraded"], f["val"], dropout=0.0, only=modality, **common
        )
        calibrate(model, fit_on, [(modality,)])
        save_fusion(model, paths.baseline(modality))
        print(f"  {modality}-only baseline: validation accuracy {acc:.4f}")
    paths.calibration.write_text(json.dumps(calibration, indent=1) + "\n")
    print(f"  calibration: {calibration}")
