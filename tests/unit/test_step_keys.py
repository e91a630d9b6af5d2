"""The build's cache keys: a change of the augmentation code reruns the steps it feeds."""

from __future__ import annotations

import dataclasses

from mmtriton_build import pipeline
from mmtriton_build.config import BuildConfig


def _keys(steps: tuple[pipeline.Step, ...]) -> dict[str, str]:
    cfg, keys = dataclasses.asdict(BuildConfig()), {}
    for step in steps:
        keys[step.name] = pipeline.step_key(step, cfg, keys, None)
    return keys


def test_augmentation_version_changes_embeddings_and_downstream_keys_only():
    before = _keys(pipeline.STEPS)
    bumped = tuple(
        dataclasses.replace(s, code_versions=tuple(v + 1 for v in s.code_versions))
        for s in pipeline.STEPS
    )
    after = _keys(bumped)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"embeddings", "fusion", "evaluate"}
