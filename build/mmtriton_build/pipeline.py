"""`mmtriton build`: data -> audio CNN -> embeddings -> fusion models -> evaluation.

Each step declares what its cache key depends on (upstream steps and sections of the recipe)
and what it writes; a step is skipped when its outputs exist for the same key, so a second run
is instant and a changed recipe section reruns only the steps downstream of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmtriton.paths import artifacts_dir
from mmtriton.preprocess.image import IMAGE_PREPROCESS_VERSION

from . import evaluate
from .artifacts import BuildPaths
from .calibration import CALIBRATION_VERSION
from .config import DEFAULT_CONFIG, BuildConfig, load_config
from .data.augment import AUGMENTATION_VERSION
from .data.nodigit_text import NO_DIGIT_TEXT_VERSION
from .features import CNN_NOISE_SNR_DB, FUSION_NOISE_SNR_DB
from .steps import StepRunner, audio_encoder, data, embeddings, fingerprint, fusion

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "build data, features and the trained default model"

# Bump when a step's code changes in a way that invalidates its cached outputs.
CODE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Step:
    """One build step: its key's ingredients, its outputs and its body."""

    name: str
    upstream: tuple[str, ...]  # steps whose keys feed this step's key
    config: tuple[str, ...]  # sections of the recipe (model.toml) it reads
    outputs: Callable[[BuildPaths], list[Path]]
    run: Callable[[BuildConfig, BuildPaths, Path | None], None]
    # The data step also depends on the code version and on which dataset is used.
    versioned: bool = False
    # Versions of code the step runs whose output changes are not in the recipe.
    code_versions: tuple[int, ...] = ()
    # Constants of that code that are not in the recipe either (the noise floors): their
    # values are part of the key, so changing one reruns the step without a version bump.
    settings: tuple[object, ...] = ()


STEPS: tuple[Step, ...] = (
    Step(
        "data",
        (),
        ("seed", "data"),
        data.outputs,
        data.run,
        versioned=True,
        code_versions=(NO_DIGIT_TEXT_VERSION,),  # it writes the generated no-digit texts
    ),
    Step(
        "audio_encoder",
        ("data",),
        ("encoders",),
        audio_encoder.outputs,
        lambda c, p, _: audio_encoder.run(c, p),
        code_versions=(AUGMENTATION_VERSION,),  # it trains on augmented clips
        settings=(CNN_NOISE_SNR_DB,),
    ),
    Step(
        "embeddings",
        ("audio_encoder",),
        ("encoders",),
        embeddings.outputs,
        lambda c, p, _: embeddings.run(c, p),
        # It augments the training images and clips and runs the served image preprocessing.
        code_versions=(AUGMENTATION_VERSION, IMAGE_PREPROCESS_VERSION),
        settings=(FUSION_NOISE_SNR_DB,),
    ),
    Step(
        "fusion",
        ("embeddings",),
        ("fusion",),
        fusion.outputs,
        lambda c, p, _: fusion.run(c, p),
        code_versions=(CALIBRATION_VERSION,),  # it calibrates what it trains
    ),
    Step(
        "evaluate",
        ("fusion",),
        (),
        lambda p: [p.report],
        lambda c, p, _: evaluate.evaluate(p, c),
    ),
)


def step_key(step: Step, cfg: dict, keys: dict[str, str], dataset: Path | None) -> str:
    """The cache key of `step`, from its declared ingredients."""
    parts: list[object] = [CODE_VERSION] if step.versioned else []
    parts += [keys[name] for name in step.upstream]
    parts += [cfg[section] for section in step.config]
    parts += list(step.code_versions)  # empty for most steps: their keys stay as they were
    parts += list(step.settings)
    if step.versioned:
        parts.append(str(dataset or "default"))
    return fingerprint(*parts)


def build(
    config: BuildConfig, root: Path, *, dataset: Path | None = None, force: bool = False
) -> dict[str, float]:
    """Run every step of the build into `root`; returns each step's seconds."""
    torch.set_num_threads(os.cpu_count() or 1)
    paths = BuildPaths(root)
    runner = StepRunner(paths.stamps, force=force)
    cfg = dataclasses.asdict(config)
    if dataset is None:
        data.check_system_tools(list(data.SYSTEM_TOOLS))
    keys: dict[str, str] = {}
    for step in STEPS:
        keys[step.name] = step_key(step, cfg, keys, dataset)
        runner.run(
            step.name,
            keys[step.name],
            step.outputs(paths),
            lambda step=step: step.run(config, paths, dataset),
        )
    return runner.timings


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
    print(evaluate.format_table(report), file=sys.stdout)
    return 0
