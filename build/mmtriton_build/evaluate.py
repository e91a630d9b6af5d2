"""Evaluation of the built model on the clean and degraded test sets; `mmtriton eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmtriton import spec
from mmtriton.paths import artifacts_dir

from .config import BuildConfig

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "print the evaluation of the built model"


def evaluate(paths, config: BuildConfig) -> dict:
    """Compute every figure of the evaluation report and write it as JSON."""
    from .features import SplitFeatures
    from .fusion import load_fusion
    from .train import accuracy

    sets = {
        "clean": SplitFeatures.load(paths.feature_file("test")),
        "degraded": SplitFeatures.load(paths.feature_file("test_degraded")),
    }
    main = load_fusion(paths.fusion(config.fusion.mode))
    everything = tuple(spec.MODALITIES)
    report: dict = {
        "fusion_mode": config.fusion.mode,
        "accuracy": {
            cond: {spec.subset_name(s): accuracy(main, feats, s) for s in spec.SUBSETS}
            for cond, feats in sets.items()
        },
        "fusion_modes": {},
        "unimodal_baselines": {},
        "test_samples": len(sets["clean"]),
    }
    for mode in spec.FUSION_MODES:
        model = load_fusion(paths.fusion(mode))
        report["fusion_modes"][mode] = {c: accuracy(model, f, everything) for c, f in sets.items()}
    for m in spec.MODALITIES:
        model = load_fusion(paths.baseline(m))
        report["unimodal_baselines"][m] = {c: accuracy(model, f, (m,)) for c, f in sets.items()}
    paths.report.parent.mkdir(parents=True, exist_ok=True)
    paths.report.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(report: dict) -> str:
    """The report as a readable table (accuracy in %)."""
    acc, base = report["accuracy"], report["unimodal_baselines"]
    lines = [
        f"Test samples: {report['test_samples']} (fusion: {report['fusion_mode']})",
        "",
        f"{'modalities':<18} {'clean %':>8} {'degraded %':>11}",
    ]
    for subset in acc["clean"]:
        lines.append(
            f"{subset:<18} {100 * acc['clean'][subset]:8.2f} {100 * acc['degraded'][subset]:11.2f}"
        )
    lines += ["", f"{'fusion mode (all 3)':<18} {'clean %':>8} {'degraded %':>11}"]
    for mode, r in report["fusion_modes"].items():
        lines.append(f"{mode:<18} {100 * r['clean']:8.2f} {100 * r['degraded']:11.2f}")
    lines += ["", f"{'unimodal baseline':<18} {'clean %':>8} {'degraded %':>11}"]
    for m, r in base.items():
        lines.append(f"{m + ' only':<18} {100 * r['clean']:8.2f} {100 * r['degraded']:11.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton eval`."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--artifacts", type=Path, help="build folder (default: artifacts/)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton eval`: prints the report of the last build."""
    from .artifacts import BuildPaths

    path = BuildPaths(args.artifacts or artifacts_dir()).report
    if not path.exists():
        raise SystemExit(f"error: no evaluation at {path}; run `mmtriton build` first")
    report = json.loads(path.read_text())
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
