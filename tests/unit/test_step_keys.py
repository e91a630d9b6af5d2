"""The build's cache keys: a change of versioned code (the augmentation, the generated
no-digit texts) reruns the step that runs it and the steps it feeds, no others."""

from __future__ import annotations

import dataclasses

from mmtriton_build import pipeline
from mmtriton_build.config import BuildConfig


def _keys(steps: tuple[pipeline.Step, ...]) -> dict[str, str]:
    cfg, keys = dataclasses.asdict(BuildConfig()), {}
    for step in steps:
        keys[step.name] = pipeline.step_key(step, cfg, keys, None)
    return keys


def _changed_by_bumping(step_name: str) -> set[str]:
    before = _keys(pipeline.STEPS)
    bumped = tuple(
        dataclasses.replace(s, code_versions=tuple(v + 1 for v in s.code_versions))
        if s.name == step_name
        else s
        for s in pipeline.STEPS
    )
    after = _keys(bumped)
    return {name for name in before if before[name] != after[name]}


def test_augmentation_version_changes_embeddings_and_downstream_keys_only():
    assert _changed_by_bumping("embeddings") == {"embeddings", "fusion", "evaluate"}


def test_no_digit_text_version_is_part_of_the_data_step_key():
    from mmtriton_build.data.nodigit_text import NO_DIGIT_TEXT_VERSION

    data_step = next(s for s in pipeline.STEPS if s.name == "data")
    assert NO_DIGIT_TEXT_VERSION in data_step.code_versions
    assert _changed_by_bumping("data") == {s.name for s in pipeline.STEPS}
