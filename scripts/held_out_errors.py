#!/usr/bin/env python3
"""Per-class accuracy and confident errors of one modality alone on each held-out image source.

    .venv/bin/python scripts/held_out_errors.py            # image alone (default)
    .venv/bin/python scripts/held_out_errors.py --subset image+audio

Reads the built model (``make model``): the held-out features, their sources and the main
fusion; the threshold is the one the build chose on validation data. docs/model.md's model
card quotes the `sklearn_digits` line ("weakest classes", "confident wrong answers").
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mmtriton import spec
from mmtriton.paths import artifacts_dir
from mmtriton_build.artifacts import BuildPaths
from mmtriton_build.config import BuildConfig
from mmtriton_build.evaluate import _probs
from mmtriton_build.features import SplitFeatures
from mmtriton_build.fusion import load_fusion


def main() -> int:
    """Print one line per held-out image source: per-class accuracy, errors above threshold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="image", help="modalities given, e.g. image+audio")
    subset = tuple(parser.parse_args().subset.split("+"))
    if any(m not in spec.MODALITIES for m in subset):
        parser.error(f"--subset: modalities are {', '.join(spec.MODALITIES)}, joined by +")
    paths = BuildPaths(artifacts_dir())
    feats = SplitFeatures.load(paths.feature_file("unseen"))
    sources = np.array(json.loads(paths.unseen_sources.read_text())["image_source"])
    threshold = json.loads(paths.calibration.read_text())["confidence_threshold"]
    probs = _probs(load_fusion(paths.fusion(BuildConfig().fusion.mode)), feats, subset)
    pred, conf, y = probs.argmax(axis=1), probs.max(axis=1), feats.labels
    print(f"{'+'.join(subset)} alone, threshold {threshold}")
    for source in sorted(set(sources)):
        rows = sources == source
        per_class = {d: float((pred[rows & (y == d)] == d).mean()) for d in range(10)}
        wrong = rows & (pred != y)
        cells = " ".join(f"{d}:{a * 100:.0f}" for d, a in per_class.items())
        print(
            f"{source:20s} {(pred[rows] == y[rows]).mean() * 100:5.1f} %  per class {cells}  "
            f"wrong {wrong.sum()}, of them confident {(wrong & (conf >= threshold)).sum()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
