"""Evaluation of the built model on the clean and degraded test sets; `mmtriton eval`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mmtriton import spec
from mmtriton.paths import artifacts_dir

from .config import BuildConfig

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "print the evaluation of the built model"


def _probs(model, feats, subset: tuple[str, ...]) -> np.ndarray:
    from .calibration import softmax
    from .train import logits_for

    return softmax(logits_for(model, feats, subset))


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def calibration_errors(model, sets: dict) -> dict:
    """ECE per set: pooled over every modality subset, and per subset."""
    from .calibration import expected_calibration_error as ece

    out = {}
    for name, feats in sets.items():
        per, pooled_p, pooled_y = {}, [], []
        for subset in spec.SUBSETS:
            p = _probs(model, feats, subset)
            per[spec.subset_name(subset)] = round(ece(p, feats.labels), 4)
            pooled_p.append(p)
            pooled_y.append(feats.labels)
        out[name] = {
            "all_subsets": round(ece(np.concatenate(pooled_p), np.concatenate(pooled_y)), 4),
            **per,
        }
    return out


def unseen_report(model, feats, sources: dict) -> dict:
    """Accuracy on the held-out sources: each source alone, each subset, each subset per
    image source with the check fused >= the best single modality present; and ECE."""
    from .calibration import expected_calibration_error as ece

    image_source = np.array(sources["image_source"])
    probs = {s: _probs(model, feats, s) for s in spec.SUBSETS}
    y = feats.labels
    report: dict = {
        "samples": len(y),
        "sources": {
            "image": {
                src: _acc(probs[("image",)][image_source == src], y[image_source == src])
                for src in dict.fromkeys(image_source.tolist())
            },
            "audio": {sources["audio_source"]: _acc(probs[("audio",)], y)},
            "text": {sources["text_source"]: _acc(probs[("text",)], y)},
        },
        "subsets": {spec.subset_name(s): _acc(p, y) for s, p in probs.items()},
        "by_image_source": {},
        "fused_vs_best_single": {"failures": []},
    }
    for src in report["sources"]["image"]:
        rows = image_source == src
        accs = {s: _acc(probs[s][rows], y[rows]) for s in spec.SUBSETS}
        report["by_image_source"][src] = {spec.subset_name(s): a for s, a in accs.items()}
        for s in spec.SUBSETS:
            if len(s) > 1:
                best = max(accs[(m,)] for m in s)
                if accs[s] < best:
                    report["fused_vs_best_single"]["failures"].append(
                        {
                            "image_source": src,
                            "subset": spec.subset_name(s),
                            "fused": accs[s],
                            "best_single": best,
                        }
                    )
    report["fused_vs_best_single"]["all_ok"] = not report["fused_vs_best_single"]["failures"]
    pooled = np.concatenate(list(probs.values()))
    report["ece"] = round(ece(pooled, np.tile(y, len(probs))), 4)
    return report


def no_digit_report(model, feats, kinds: list[dict], threshold: float) -> dict:
    """Top probabilities on inputs without a digit: per subset and per kind of input."""
    out: dict = {"samples": len(feats), "threshold": threshold, "subsets": {}, "by_kind": {}}
    worst = 0.0
    for subset in spec.SUBSETS:
        top = _probs(model, feats, subset).max(axis=1)
        worst = max(worst, float(top.max()))
        out["subsets"][spec.subset_name(subset)] = {
            "mean_top": round(float(top.mean()), 4),
            "max_top": round(float(top.max()), 4),
            "share_below_threshold": round(float((top < threshold).mean()), 4),
        }
        if len(subset) == 1:
            (m,) = subset
            key = "text" if m == "text" else m
            groups: dict[str, list[float]] = {}
            for k, t in zip(kinds, top.tolist(), strict=True):
                groups.setdefault(f"{m}:{k[key]}" if m != "text" else "text", []).append(t)
            for name, tops in groups.items():
                out["by_kind"][name] = round(max(tops), 4)
    out["max_top"] = round(worst, 4)
    out["all_below_0.5"] = worst < 0.5
    return out


def severity_report(model, sets: dict[float, object]) -> dict:
    """Accuracy per subset at each corruption severity (image noise sigma = severity,
    audio SNR = 30 - 40 x severity dB; text is not corrupted)."""
    levels = sorted(sets)
    return {
        "levels": levels,
        "image_sigma": levels,
        "audio_snr_db": [30 - 40 * lv if lv > 0 else None for lv in levels],  # 0: clean
        "accuracy": {
            spec.subset_name(s): [
                _acc(_probs(model, sets[lv], s), sets[lv].labels) for lv in levels
            ]
            for s in spec.SUBSETS
        },
    }


def evaluate(paths, config: BuildConfig) -> dict:
    """Compute every figure of the evaluation report and write it as JSON."""
    from .artifacts import SEVERITY_LEVELS
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
    calibration = json.loads(paths.calibration.read_text()) if paths.calibration.exists() else {}
    threshold = calibration.get("confidence_threshold") or spec.DEFAULT_CONFIDENCE_THRESHOLD
    report["calibration"] = {
        "temperature": {
            spec.subset_name(s): round(float(main.temperature[spec.presence_code(s)]), 4)
            for s in spec.SUBSETS
        },
        "confidence_threshold": threshold,
    }
    held_out = {"test": sets["clean"], "test_degraded": sets["degraded"]}
    unseen = SplitFeatures.load(paths.feature_file("unseen"))
    if len(unseen) and paths.unseen_sources.exists():
        sources = json.loads(paths.unseen_sources.read_text())
        report["unseen"] = unseen_report(main, unseen, sources)
        held_out["unseen"] = unseen
        nd = SplitFeatures.load(paths.feature_file("nodigit_test"))
        report["no_digit"] = no_digit_report(
            main, nd, sources["no_digit_kinds"]["nodigit_test"], threshold
        )
        report["severity"] = severity_report(
            main,
            {
                lv: SplitFeatures.load(paths.feature_file(f"severity_{lv:.1f}"))
                for lv in SEVERITY_LEVELS
            },
        )
    report["ece"] = calibration_errors(main, held_out)
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
    return "\n".join(lines + _held_out_lines(report))


def _temperatures(temperature: dict[str, float] | float) -> str:
    """Per-subset temperatures, or the single one of reports written before them."""
    if isinstance(temperature, dict):
        return ", ".join(f"{s} {t:.3f}" for s, t in temperature.items())
    return f"{temperature:.3f} (every subset)"


def _held_out_lines(report: dict) -> list[str]:
    """The held-out sources, calibration and no-digit part of the table."""
    lines: list[str] = []
    unseen = report.get("unseen")
    if unseen:
        lines += ["", f"held-out sources ({unseen['samples']} samples)   alone %"]
        for modality, sources in unseen["sources"].items():
            for src, acc in sources.items():
                lines.append(f"{modality + ': ' + src:<34} {100 * acc:7.2f}")
        lines += ["", f"{'held-out, subset':<18} {'acc %':>8}"]
        for subset, acc in unseen["subsets"].items():
            lines.append(f"{subset:<18} {100 * acc:8.2f}")
        ok = unseen["fused_vs_best_single"]["all_ok"]
        failures = len(unseen["fused_vs_best_single"]["failures"])
        lines.append(
            f"fused >= best single modality on every source and subset: "
            f"{'yes' if ok else f'no ({failures} misses)'}"
        )
    cal = report.get("calibration")
    if cal:
        lines += [
            "",
            f"temperature {_temperatures(cal['temperature'])}; "
            f"confidence threshold {cal['confidence_threshold']}",
        ]
    for name, e in report.get("ece", {}).items():
        lines.append(f"ECE {name:<14} {e['all_subsets']:.4f} (all subsets pooled)")
    nd = report.get("no_digit")
    if nd:
        lines += [
            "",
            f"no-digit inputs ({nd['samples']}): highest top probability "
            f"{nd['max_top']:.3f} (below 0.5: {'yes' if nd['all_below_0.5'] else 'no'})",
        ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton eval`."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--artifacts", type=Path, help="build folder (default: artifacts/)")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="also draw accuracy vs corruption severity"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton eval`: prints the report of the last build."""
    from .artifacts import BuildPaths

    path = BuildPaths(args.artifacts or artifacts_dir()).report
    if not path.exists():
        raise SystemExit(f"error: no evaluation at {path}; run `mmtriton build` first")
    report = json.loads(path.read_text())
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    if args.plot:
        from .plot import severity_plot

        if "severity" not in report:
            raise SystemExit("error: this build has no severity sets (default data only)")
        severity_plot(report["severity"], args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
