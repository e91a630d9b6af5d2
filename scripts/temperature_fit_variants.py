#!/usr/bin/env python3
"""Why the build's temperature fit scores no-digit rows against a uniform target.

    .venv/bin/python scripts/temperature_fit_variants.py

On the built main fusion (`make model`), refits one temperature per modality subset on the
validation sets two ways: as the build does (`train.calibrate`: validation, augmented
validation and validation no-digit inputs, uniform targets where no given modality carries a
digit) and with labels only (every validation row scored against its digit, no no-digit
inputs). For each: the text temperature, the held-out ECE of text alone, the highest top
probability of the held-out no-digit texts and their share at or over the threshold the build
chose. The fitted fusion weights are not changed on disk.
"""

from __future__ import annotations

import json

import numpy as np

from mmtriton.paths import artifacts_dir
from mmtriton_build.artifacts import FEATURE_SETS, BuildPaths
from mmtriton_build.calibration import expected_calibration_error, fit_temperature, softmax
from mmtriton_build.config import BuildConfig
from mmtriton_build.features import SplitFeatures
from mmtriton_build.fusion import load_fusion
from mmtriton_build.steps.fusion import calibration_sets
from mmtriton_build.train import calibrate, logits_for, subset_mask


def _labels_only(model, val_sets: list, subset: tuple[str, ...]) -> float:
    logits, labels = [], []
    for feats in val_sets:
        rows = (subset_mask(subset, len(feats)) * feats.present).sum(axis=1) > 0
        logits.append(logits_for(model, feats, subset)[rows])
        labels.append(feats.labels[rows])
    return fit_temperature(np.concatenate(logits), np.concatenate(labels))


def main() -> int:
    """Print the two fits' text temperature, held-out text ECE and no-digit text confidence."""
    paths = BuildPaths(artifacts_dir())
    f = {n: SplitFeatures.load(paths.feature_file(n)) for n in FEATURE_SETS}
    threshold = json.loads(paths.calibration.read_text())["confidence_threshold"]
    model = load_fusion(paths.fusion(BuildConfig().fusion.mode))
    text = ("text",)
    model.temperature.fill_(1.0)
    raw = {n: logits_for(model, f[n], text) for n in ("unseen", "nodigit_test")}
    fits = {"build (uniform targets)": calibrate(model, calibration_sets(f), [text])["text"]}
    model.temperature.fill_(1.0)
    fits["labels only"] = _labels_only(model, [f["val"], f["val_degraded"]], text)
    print(f"text alone; threshold {threshold}")
    rows = (subset_mask(text, len(f["nodigit_test"])) * f["nodigit_test"].present).sum(1) > 0
    for name, t in fits.items():
        ece = expected_calibration_error(softmax(raw["unseen"] / t), f["unseen"].labels)
        top = softmax(raw["nodigit_test"][rows] / t).max(axis=1)
        print(
            f"{name:24s} T {t:.3f}  held-out ECE {ece:.4f}  no-digit texts: highest "
            f"{top.max():.3f}, {(top >= threshold).mean() * 100:.1f} % at or over the threshold"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
