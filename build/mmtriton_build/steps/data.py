"""Step `data`: the default data (MNIST digits, synthesised speech, phrases) or a JSONL set."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from mmtriton import spec

from ..artifacts import SEVERITY_LEVELS, BuildPaths
from ..config import BuildConfig

# The Debian packages behind the tools the default data needs (festival: the
# held-out speech synthesizer, only ever heard in the evaluation).
SYSTEM_TOOLS = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "npm": "npm",
    "festival": "festival festvox-kdlpc16k",
}
# Sizes of the held-out and no-digit sets.
UNSEEN_PER_IMAGE_SOURCE = 250
FESTIVAL_CLIPS_PER_DIGIT = 16
NO_DIGIT_SIZES = {"nodigit_train": 480, "nodigit_val": 160, "nodigit_test": 160}
# Text-only training rows with a generated no-digit text each (data/nodigit_text.py): the
# fusion's no-digit text swaps draw from them and from `nodigit_train`'s fixed phrases.
NO_DIGIT_GENERATED_TEXTS = 1920
SEVERITY_SAMPLES = 250


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


def _add_held_out(splits: dict, paths: BuildPaths, seed: int) -> dict:
    """Add the held-out ("unseen"), no-digit and severity splits; returns their metadata."""
    from dataclasses import replace

    from ..data import dataset as ds
    from ..data import unseen
    from ..data.nodigit_text import no_digit_texts
    from ..data.text import UNINFORMATIVE_PHRASES

    root = paths.data / "unseen"
    festival = unseen.festival_clips(root / "festival", seed, FESTIVAL_CLIPS_PER_DIGIT)
    by_label: dict[int, list[Path]] = {}
    for path, label in festival:
        by_label.setdefault(label, []).append(path)
    images = unseen.image_sources(root / "images", seed, UNSEEN_PER_IMAGE_SOURCE)
    rng = np.random.default_rng([seed, 14])
    samples, image_source = [], []
    for source, items in images.items():
        for i, (path, label) in enumerate(items):
            clips = by_label[label]
            samples.append(
                ds.Sample(
                    label=label,
                    image_path=path,
                    text=unseen.held_out_phrase(label, rng),
                    audio_path=clips[(i // 10) % len(clips)],
                )
            )
            image_source.append(source)
    splits["unseen"] = samples
    kinds = {}
    train_texts = (*UNINFORMATIVE_PHRASES, *unseen.NO_DIGIT_TEXTS_TRAIN)
    for n, (name, size) in enumerate(NO_DIGIT_SIZES.items()):
        texts = {
            "nodigit_train": train_texts,
            "nodigit_val": unseen.NO_DIGIT_TEXTS_VAL,
            "nodigit_test": unseen.NO_DIGIT_TEXTS_HELD_OUT,
        }[name]
        nd = unseen.no_digit_set(root / name, seed * 10 + n, size, texts)
        splits[name] = nd.samples
        kinds[name] = nd.kinds
    generated = no_digit_texts(seed, NO_DIGIT_GENERATED_TEXTS)
    splits["nodigit_text_train"] = [ds.Sample(label=-1, text=t) for t in generated]
    # Accuracy against corruption severity: the first test samples at each level.
    base = ds.make_degraded_test(splits["test"][:SEVERITY_SAMPLES], seed)
    for level in SEVERITY_LEVELS:
        splits[f"severity_{level:.1f}"] = [replace(s, severity=level) for s in base]
    return {
        "image_source": image_source,
        "audio_source": f"festival:{'+'.join(unseen.HELD_OUT_FESTIVAL_VOICES)}",
        "text_source": "held_out_phrasings",
        "no_digit_kinds": kinds,
        "severity_levels": list(SEVERITY_LEVELS),
    }


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
        sources = _add_held_out(splits, paths, config.seed)
        paths.unseen_sources.write_text(json.dumps(sources, indent=1) + "\n")
        labels = list(spec.LABELS)
        mnist = images
    np.save(paths.images, mnist)
    with paths.splits.open("wb") as f:
        pickle.dump(splits, f)
    paths.model.mkdir(parents=True, exist_ok=True)
    paths.labels.write_text("\n".join(labels) + "\n")
    counts = {k: len(v) for k, v in splits.items()}
    print(f"  samples per split: {counts}")
