#!/usr/bin/env python3
"""Reproduce docs/model.md's sweep of the fusion's training noise floor (issue 15, severity 1.0).

    .venv/bin/python scripts/sweep_fusion_noise_floor.py LOW HIGH [--floors F ...] [--seeds S ...]

LOW and HIGH are the artifacts folders of two builds that differ only in
``features.FUSION_NOISE_SNR_DB``: LOW built with (-12, 20), HIGH with (-6, 20) (same audio CNN:
its range is ``CNN_NOISE_SNR_DB``). A training clip's noise SNR is replayed from its random
stream (``features.sample_rng``, the draws ``augmented_audio`` makes); for a floor F, the
augmented rows of LOW whose SNR is below F take HIGH's copy of the same clip, and the attention
fusion is retrained (about 10 s per seed) and evaluated as the build does: severity 0.8 and
1.0, the held-out synthesizer, fused < best single cells, no-digit audio, threshold, ECE.
Rows whose copy is not noise (the effects chain) are checked identical in both builds first.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from mmtriton_build import evaluate as ev
from mmtriton_build.artifacts import FEATURE_SETS, BuildPaths
from mmtriton_build.config import load_config
from mmtriton_build.features import SplitFeatures, sample_rng
from mmtriton_build.steps.fusion import _choose_threshold, calibration_sets, training_args
from mmtriton_build.train import TRAINING_SUBSETS, calibrate, train_fusion

AUGMENTED = ("train_degraded", "val_degraded")
LOW_RANGE = (-12.0, 20.0)  # what LOW was built with


def replayed_snr(seed: int, name: str, n: int) -> np.ndarray:
    """Per row of feature set ``name``: the SNR its noise copy drew, inf where the copy was
    the effects chain instead (``features.augmented_audio``: one draw picks, one the SNR)."""
    out = np.full(n, np.inf)
    for i in range(n):
        rng = sample_rng(seed, f"{name}-audio", i)
        if rng.random() < 1 / 3:
            out[i] = rng.uniform(*LOW_RANGE)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("low", type=Path, help="artifacts built with the fusion floor at -12 dB")
    parser.add_argument("high", type=Path, help="artifacts built with the fusion floor at -6 dB")
    parser.add_argument("--floors", type=float, nargs="+", default=[-6.0, -8.0, -12.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    config = load_config()
    low, high = BuildPaths(args.low), BuildPaths(args.high)
    f = {n: SplitFeatures.load(low.feature_file(n)) for n in FEATURE_SETS}
    other = {n: SplitFeatures.load(high.feature_file(n)) for n in AUGMENTED}
    snr = {n: replayed_snr(config.seed, n, len(f[n])) for n in AUGMENTED}
    for n in AUGMENTED:
        chain = ~np.isfinite(snr[n])
        if not np.array_equal(f[n].audio[chain], other[n].audio[chain]):
            raise SystemExit(f"error: {n}: the builds differ beyond the noise SNR; see --help")
    sources = json.loads(low.unseen_sources.read_text())
    kinds = sources["no_digit_kinds"]["nodigit_test"]
    print(
        "floor seed  sev1.0 audio  image+audio  img+txt+aud  festival  misses  "
        "no-digit audio  threshold  ECE degraded  ECE held-out audio"
    )
    for floor in args.floors:
        g = dict(f)
        for n in AUGMENTED:
            g[n] = copy.copy(f[n])
            audio = f[n].audio.copy()
            below = snr[n] < floor
            audio[below] = other[n].audio[below]
            g[n].audio = audio
        for seed in args.seeds:
            args = {**training_args(config, g, len(low.labels.read_text().split())), "seed": seed}
            model, _ = train_fusion(
                config.fusion.mode, g["train"], g["train_degraded"], g["val"],
                dropout=config.fusion.modality_dropout, **args,
            )  # fmt: skip
            calibrate(model, calibration_sets(g), list(TRAINING_SUBSETS))
            threshold = _choose_threshold(model, g)
            sev = ev.severity_report(model, {1.0: g["severity_1.0"]})["accuracy"]
            unseen = ev.unseen_report(model, g["unseen"], sources)
            nd = ev.no_digit_report(model, g["nodigit_test"], kinds, threshold)
            ece = ev.calibration_errors(
                model, {"test_degraded": g["test_degraded"], "unseen": g["unseen"]}
            )
            nd_audio = max(v for k, v in nd["by_kind"].items() if k.startswith("audio:"))
            print(
                f"{floor:5.0f} {seed:4d}  {sev['audio'][0]:12.3f}  {sev['image+audio'][0]:11.3f}"
                f"  {sev['image+text+audio'][0]:11.3f}  {unseen['subsets']['audio']:8.3f}"
                f"  {len(unseen['fused_vs_best_single']['failures']):6d}  {nd_audio:14.3f}"
                f"  {threshold:9.2f}  {ece['test_degraded']['all_subsets']:12.4f}"
                f"  {ece['unseen']['audio']:18.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
