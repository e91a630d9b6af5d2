"""Step `data`: the default data (MNIST digits, synthesised speech, phrases) or a JSONL set."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np

from mmtriton import spec

from ..artifacts import BuildPaths
from ..config import BuildConfig

# The Debian packages behind the tools the default data needs.
SYSTEM_TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "npm": "npm"}


def check_system_tools(needed: list[str]) -> None:
    """Fail early, naming the Debian package, when a tool the build runs is missing."""
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(SYSTEM_TOOLS[t] for t in missing)
        raise SystemExit(
            f"error: the build needs {', '.join(missing)}, which is not installed.\n"
            f"Install it with: sudo apt-get install -y {pkgs}  (or run `make system-deps`)"
        )


def outputs(paths: BuildPaths) -> list[Path]:
    """What this step writes."""
    return [paths.splits, paths.labels]


def run(config: BuildConfig, paths: BuildPaths, dataset: Path | None) -> None:
    """Write the splits, the MNIST pixels they index and the label names."""
    from ..data import dataset as ds

    paths.data.mkdir(parents=True, exist_ok=True)
    if dataset is not None:
        from ..data.jsonl import load_jsonl, split_samples

        samples, labels = load_jsonl(dataset)
        splits = split_samples(samples, config.seed, 0.15, 0.15)
        splits["test_degraded"] = splits["test"]
        mnist = np.zeros((0, 28, 28), np.uint8)
    else:
        from ..data.mnist import load_mnist
        from ..data.speech import synthesize

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
    np.save(paths.images, mnist)
    with paths.splits.open("wb") as f:
        pickle.dump(splits, f)
    paths.model.mkdir(parents=True, exist_ok=True)
    paths.labels.write_text("\n".join(labels) + "\n")
    counts = {k: len(v) for k, v in splits.items()}
    print(f"  samples per split: {counts}")
