"""`mmtriton export`: ONNX graphs, the parity report, and the Triton model repository."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np

from mmtriton import spec
from mmtriton.paths import artifacts_dir, gallery_dir, model_repository_dir
from mmtriton.preprocess.vad_graph import write_batched_vad

from ..artifacts import BuildPaths
from ..config import DEFAULT_CONFIG, BuildConfig, load_config
from ..examples import write_gallery
from ..loaders import load_encoders, make_extractor
from ..steps import StepRunner, fingerprint
from . import repository as repo_files
from .onnx_export import OPSET, export_encoder
from .parity import TOLERANCE, onnx_test_embeddings, pipeline_agreement, random_parity
from .tensorrt import file_sha256

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "export ONNX, check parity, write the repository"

CODE_VERSION = 1


def onnx_paths(paths: BuildPaths) -> dict[str, Path]:
    """Where each modality's exported encoder goes."""
    return {m: paths.root / "onnx" / f"{model.name}.onnx" for m, model in spec.ENCODERS.items()}


def export_onnx(config: BuildConfig, paths: BuildPaths) -> None:
    """Export the three encoders."""
    modules = load_encoders(config, paths)
    for m, path in onnx_paths(paths).items():
        export_encoder(modules[m], spec.ENCODERS[m], path)
        print(f"  {path.name}: {path.stat().st_size / 1e6:.1f} MB, onnx.checker clean")


def check_parity(config: BuildConfig, paths: BuildPaths, report_path: Path) -> dict:
    """Write and return the parity report; raises SystemExit if a check fails."""
    from ..features import SplitFeatures
    from ..fusion import load_fusion

    modules = load_encoders(config, paths)
    sessions_paths = onnx_paths(paths)
    from mmtriton.backend.onnx_encoder import make_session

    report: dict = {"tolerance": TOLERANCE, "opset": OPSET, "encoders": {}}
    with paths.splits.open("rb") as f:
        test_samples = pickle.load(f)["test"]
    extractor = make_extractor(paths, modules)
    onnx_emb = onnx_test_embeddings(sessions_paths, test_samples, extractor)
    torch_feats = SplitFeatures.load(paths.feature_file("test"))
    for m, path in sessions_paths.items():
        session = make_session(str(path), 2)
        real = float(np.abs(getattr(torch_feats, m) - onnx_emb[m]).max())
        rand = random_parity(modules[m], session, spec.ENCODERS[m])
        report["encoders"][spec.ENCODERS[m].name] = {
            "max_abs_diff_test_set": real,
            "max_abs_diff_random": rand,
            "ok": real <= TOLERANCE and rand <= TOLERANCE,
        }
    mode = config.fusion.mode
    report["pipeline"] = pipeline_agreement(
        load_fusion(paths.fusion(mode)), paths.fusion(mode), torch_feats, onnx_emb
    )
    report["ok"] = report["pipeline"]["top1_all_identical"] and all(
        e["ok"] for e in report["encoders"].values()
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(format_parity(report))
    if not report["ok"]:
        raise SystemExit(f"error: parity check failed; see {report_path}")
    return report


def format_parity(report: dict) -> str:
    """The parity report as a table."""
    lines = [f"{'encoder':<15} {'test set max|diff|':>19} {'random max|diff|':>17}  ok"]
    for name, r in report["encoders"].items():
        lines.append(
            f"{name:<15} {r['max_abs_diff_test_set']:19.2e} {r['max_abs_diff_random']:17.2e}  "
            f"{'yes' if r['ok'] else 'NO'}"
        )
    p = report["pipeline"]
    lines.append(
        f"pipeline top-1 identical: {p['top1_identical']}/{p['test_samples']} "
        f"(served-path accuracy {100 * p['accuracy_served_path']:.2f} %)"
    )
    return "\n".join(lines)


def populate_repository(config: BuildConfig, paths: BuildPaths, repo: Path) -> None:
    """Write configs and copy every model file the server loads into the repository."""
    from ..encoders import default_text_model_dir

    labels = paths.labels.read_text().split()
    threshold = repo_files.read_confidence_threshold(paths.calibration)
    repo_files.write_configs(repo, labels, threshold)
    for m, path in onnx_paths(paths).items():
        repo_files.install_file(path, repo / spec.ENCODERS[m].name / "1" / repo_files.ONNX_FILE)
    repo_files.install_file(
        paths.fusion(config.fusion.mode), repo / "fusion" / "1" / repo_files.FUSION_WEIGHTS
    )
    text_dir = (
        Path(config.encoders.text_path) if config.encoders.text_path else default_text_model_dir()
    )
    pre = repo / "preprocess" / "1"
    repo_files.install_file(text_dir / "tokenizer.json", pre / repo_files.TOKENIZER_FILE)
    write_batched_vad(pre / repo_files.VAD_FILE)


def export(config: BuildConfig, root: Path, repo: Path, *, force: bool = False) -> None:
    """Every export step, each skipped when up to date."""
    paths = BuildPaths(root)
    if not paths.audio_encoder.exists() or not paths.fusion(config.fusion.mode).exists():
        raise SystemExit(f"error: no built model under {root}; run `mmtriton build` first")
    runner = StepRunner(root / "stamps", force=force)
    cfg = dataclasses.asdict(config)
    onnx_key = fingerprint(CODE_VERSION, OPSET, cfg["encoders"], file_sha256(paths.audio_encoder))
    runner.run(
        "onnx", onnx_key, list(onnx_paths(paths).values()), lambda: export_onnx(config, paths)
    )
    report_path = root / "reports" / "parity.json"
    parity_key = fingerprint(onnx_key, file_sha256(paths.fusion(config.fusion.mode)))
    ran = runner.run(
        "parity", parity_key, [report_path], lambda: check_parity(config, paths, report_path)
    )
    if not ran:
        print(format_parity(json.loads(report_path.read_text())))
    populate_repository(config, paths, repo)
    written = write_gallery(root, gallery_dir(root))
    print(f"web page gallery: {written} examples in {gallery_dir(root)}")
    print(f"model repository ready: {repo}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton export`."""
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model.toml recipe")
    parser.add_argument("--artifacts", type=Path, help="build folder (default: artifacts/)")
    parser.add_argument("--repository", type=Path, help="model repository to write")
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument(
        "--trt", action="store_true", help="also build TensorRT engines (needs a GPU and TensorRT)"
    )
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default: artifacts/engines)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton export`."""
    root = args.artifacts or artifacts_dir()
    repo = args.repository or model_repository_dir()
    export(load_config(args.config), root, repo, force=args.force)
    if args.trt:
        from .tensorrt import ENGINE_ERRORS, build_engines, trtexec_on_path

        try:
            build_engines(repo, args.cache_dir or root / "engines", trtexec=trtexec_on_path())
        except ENGINE_ERRORS as exc:
            raise SystemExit(f"error: --trt needs a GPU node: {exc}") from exc
    return 0
