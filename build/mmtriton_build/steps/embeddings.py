"""Step `embeddings`: every split through the three frozen encoders, as the server would."""

from __future__ import annotations

import time
from pathlib import Path

from ..artifacts import FEATURE_PLAN, BuildPaths
from ..config import BuildConfig
from ..loaders import load_encoders, load_splits, make_extractor


def outputs(paths: BuildPaths) -> list[Path]:
    """What this step writes."""
    return [paths.feature_file(name) for name in FEATURE_PLAN]


def run(config: BuildConfig, paths: BuildPaths) -> None:
    """Write one feature file per feature set (clean and degraded)."""
    from ..data.unseen import TRAINING_FONTS, font_paths

    splits = load_splits(paths)
    extractor = make_extractor(paths, load_encoders(config, paths))
    if any(s.image_index is not None for s in splits["train"]):  # the default (MNIST) data
        if "unseen" not in splits:
            raise SystemExit(
                "error: the data step's output predates the held-out and no-digit sets; "
                "run `mmtriton build --force`"
            )
        extractor.fonts = font_paths(TRAINING_FONTS)
    for name, (split, degrade) in FEATURE_PLAN.items():
        start = time.perf_counter()
        # Held-out, no-digit and severity sets exist for the default data only.
        samples = splits.get(split, [])
        feats = extractor.split(samples, name, degrade=degrade, seed=config.seed)
        feats.save(paths.feature_file(name))
        print(f"  {name}: {len(feats)} samples in {time.perf_counter() - start:.1f} s")
