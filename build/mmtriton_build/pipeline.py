"""`mmtriton build`: data -> audio CNN -> embeddings -> fusion models -> evaluation.

Every step is skipped when its outputs exist for the same inputs, so a second run is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmtriton import spec
from mmtriton.paths import artifacts_dir

from .config import DEFAULT_CONFIG, FUSION_MODES, BuildConfig, load_config
from .steps import StepRunner, fingerprint

SYSTEM_TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "npm": "npm"}
# Bump when a step's code changes in a way that invalidates its cached outputs.
CODE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BuildPaths:
    """Where each build output lives under the artifacts folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def splits(self) -> Path:
        return self.data / "splits.pkl"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def audio_encoder(self) -> Path:
        return self.model / "audio_encoder.pt"

    @property
    def labels(self) -> Path:
        return self.model / "labels.txt"

    def fusion(self, mode: str) -> Path:
        return self.model / f"fusion_{mode}.npz"

    def baseline(self, modality: str) -> Path:
        return self.model / f"baseline_{modality}.npz"

    def feature_file(self, name: str) -> Path:
        return self.features / f"{name}.npz"

    @property
    def report(self) -> Path:
        return self.root / "reports" / "eval.json"


FEATURE_SETS = ("train", "train_degraded", "val", "test", "test_degraded")


def check_system_tools(needed: list[str]) -> None:
    """Fail early, naming the Debian package, when a tool the build runs is missing."""
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(SYSTEM_TOOLS[t] for t in missing)
        raise SystemExit(
            f"error: the build needs {', '.join(missing)}, which is not installed.\n"
            f"Install it with: sudo apt-get install -y {pkgs}  (or run `make system-deps`)"
        )


def build(
    config: BuildConfig, root: Path, *, dataset: Path | None = None, force: bool = False
) -> dict[str, float]:
    """Run every step of the build into `root`; returns each step's seconds."""
    torch.set_num_threads(os.cpu_count() or 1)
    paths = BuildPaths(root)
    runner = StepRunner(root / "stamps", force=force)
    cfg = dataclasses.asdict(config)
    if dataset is None:
        check_system_tools(["npm", "espeak-ng", "flite"])
    data_key = fingerprint(CODE_VERSION, cfg["seed"], cfg["data"], str(dataset or "default"))

    runner.run(
        "data", data_key, [paths.splits, paths.labels], lambda: _make_data(config, paths, dataset)
    )

    audio_key = fingerprint(data_key, cfg["encoders"])
    runner.run(
        "audio_encoder", audio_key, [paths.audio_encoder], lambda: _train_audio(config, paths)
    )

    feat_key = fingerprint(audio_key, cfg["encoders"])
    runner.run(
        "embeddings",
        feat_key,
        [paths.feature_file(n) for n in FEATURE_SETS],
        lambda: _make_features(config, paths),
    )

    fusion_key = fingerprint(feat_key, cfg["fusion"])
    outputs = [paths.fusion(m) for m in FUSION_MODES] + [paths.baseline(m) for m in spec.MODALITIES]
    runner.run("fusion", fusion_key, outputs, lambda: _train_fusion(config, paths))

    from .evaluate import evaluate

    runner.run("evaluate", fingerprint(fusion_key), [paths.report], lambda: evaluate(paths, config))
    return runner.timings


def _load_splits(paths: BuildPaths) -> dict:
    with paths.splits.open("rb") as f:
        return pickle.load(f)


def _make_data(config: BuildConfig, paths: BuildPaths, dataset: Path | None) -> None:
    from .data import dataset as ds

    paths.data.mkdir(parents=True, exist_ok=True)
    if dataset is not None:
        from .data.jsonl import load_jsonl, split_samples

        samples, labels = load_jsonl(dataset)
        splits = split_samples(samples, config.seed, 0.15, 0.15)
        splits["test_degraded"] = splits["test"]
        mnist = np.zeros((0, 28, 28), np.uint8)
    else:
        from .data.mnist import load_mnist
        from .data.speech import synthesize

        images, digit_labels = load_mnist(paths.data / "mnist")
        clips = synthesize(paths.data / "speech", config.seed)
        d = config.data
        splits = ds.build_splits(
            (images, digit_labels),
            clips,
            config.seed,
            text_informative_share=d.text_informative_share,
            sizes={"train": d.mnist_train, "val": d.mnist_val, "test": d.mnist_test},
        )
        splits["test_degraded"] = ds.make_degraded_test(splits["test"], config.seed)
        labels = list(spec.LABELS)
        mnist = images
    np.save(paths.data / "images.npy", mnist)
    with paths.splits.open("wb") as f:
        pickle.dump(splits, f)
    paths.model.mkdir(parents=True, exist_ok=True)
    paths.labels.write_text("\n".join(labels) + "\n")
    counts = {k: len(v) for k, v in splits.items()}
    print(f"  samples per split: {counts}")


def _clip_mels(samples, trimmer, seed: int, split: str, noisy: bool):
    """Log-mels of each distinct clip in `samples` (optionally noise-augmented) and labels."""
    from .features import audio_mel, sample_rng

    clips = {}
    for s in samples:
        if s.audio_path is not None:
            clips.setdefault(str(s.audio_path), s)
    mels, labels = [], []
    for i, s in enumerate(clips.values()):
        mels.append(audio_mel(s, trimmer, None))
        labels.append(s.label)
        if noisy:
            mels.append(audio_mel(s, trimmer, sample_rng(seed, f"{split}-aug", i)))
            labels.append(s.label)
    if not mels:
        return np.zeros((0, *spec.AUDIO_MEL.dims), np.float32), np.zeros(0, np.int64)
    return np.stack(mels).astype(np.float32), np.array(labels, np.int64)


def _train_audio(config: BuildConfig, paths: BuildPaths) -> None:
    from mmtriton.preprocess.audio import VoiceActivityTrimmer

    from .encoders import AudioEncoder
    from .train import train_audio_encoder

    splits = _load_splits(paths)
    paths.model.mkdir(parents=True, exist_ok=True)
    if not any(s.audio_path for s in splits["train"]):
        print("  no audio in the training data: the audio encoder stays untrained")
        torch.manual_seed(config.seed)
        torch.save(AudioEncoder().state_dict(), paths.audio_encoder)
        return
    trimmer = VoiceActivityTrimmer()
    start = time.perf_counter()
    mels, labels = _clip_mels(splits["train"], trimmer, config.seed, "train", noisy=True)
    val_mels, val_labels = _clip_mels(splits["val"], trimmer, config.seed, "val", noisy=False)
    if len(val_mels) == 0:  # tiny user datasets: validate on the training clips
        val_mels, val_labels = mels, labels
    print(f"  {len(mels)} training log-mels in {time.perf_counter() - start:.1f} s")
    encoder, acc = train_audio_encoder(
        mels,
        labels,
        val_mels,
        val_labels,
        epochs=config.encoders.audio_epochs,
        seed=config.seed,
        num_classes=len(paths.labels.read_text().split()),
    )
    print(f"  audio CNN: validation accuracy {acc:.3f} (unseen voices)")
    torch.save(encoder.state_dict(), paths.audio_encoder)


def load_audio_encoder(paths: BuildPaths):
    """The trained audio encoder, in eval mode."""
    from .encoders import AudioEncoder

    encoder = AudioEncoder()
    encoder.load_state_dict(torch.load(paths.audio_encoder, weights_only=True))
    return encoder.eval()


def load_encoders(config: BuildConfig, paths: BuildPaths) -> dict:
    """All three encoders: the pretrained ones from the config and the trained audio CNN."""
    from .encoders import load_pretrained_encoders

    encoders = load_pretrained_encoders(config.encoders)
    encoders["audio"] = load_audio_encoder(paths)
    return encoders


def make_extractor(paths: BuildPaths, encoders: dict):
    """A FeatureExtractor over the built data, with the serving preprocessing state."""
    from mmtriton.preprocess.audio import VoiceActivityTrimmer
    from mmtriton.preprocess.text import TextTokenizer

    from .features import FeatureExtractor

    return FeatureExtractor(
        encoders["image"],
        encoders["text"],
        encoders["audio"],
        mnist=np.load(paths.data / "images.npy"),
        tokenizer=TextTokenizer(),
        trimmer=VoiceActivityTrimmer(),
    )


def _make_features(config: BuildConfig, paths: BuildPaths) -> None:
    splits = _load_splits(paths)
    extractor = make_extractor(paths, load_encoders(config, paths))
    plan = {
        "train": ("train", False),
        "train_degraded": ("train", True),
        "val": ("val", False),
        "test": ("test", False),
        "test_degraded": ("test_degraded", True),
    }
    for name, (split, degrade) in plan.items():
        start = time.perf_counter()
        feats = extractor.split(splits[split], name, degrade=degrade, seed=config.seed)
        feats.save(paths.feature_file(name))
        print(f"  {name}: {len(feats)} samples in {time.perf_counter() - start:.1f} s")


def _train_fusion(config: BuildConfig, paths: BuildPaths) -> None:
    from .features import SplitFeatures
    from .fusion import save_fusion
    from .train import train_fusion

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
    for mode in FUSION_MODES:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton build`."""
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model.toml recipe")
    parser.add_argument("--dataset", type=Path, help="train on your own JSONL dataset")
    parser.add_argument("--artifacts", type=Path, help="output folder (default: artifacts/)")
    parser.add_argument("--force", action="store_true", help="rebuild every step")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton build`."""
    root = args.artifacts or artifacts_dir()
    start = time.perf_counter()
    timings = build(load_config(args.config), root, dataset=args.dataset, force=args.force)
    print("\nstep            seconds")
    for name, secs in timings.items():
        print(f"{name:<15} {secs:8.1f}")
    print(f"{'total':<15} {time.perf_counter() - start:8.1f}")
    report = json.loads(BuildPaths(root).report.read_text())
    from .evaluate import format_table

    print(format_table(report), file=sys.stdout)
    return 0
