"""The build's cache keys: a change of versioned code (the augmentation, the generated
no-digit texts) or of a constant it keys on (the noise floors) reruns the step that runs it
and the steps it feeds, no others."""

from __future__ import annotations

import dataclasses

from mmtriton_build import pipeline
from mmtriton_build.config import BuildConfig


def _keys(steps: tuple[pipeline.Step, ...]) -> dict[str, str]:
    cfg, keys = dataclasses.asdict(BuildConfig()), {}
    for step in steps:
        keys[step.name] = pipeline.step_key(step, cfg, keys, None)
    return keys


def _changed_by_bumping(*step_names: str) -> set[str]:
    """The steps whose keys change when the code versions of ``step_names`` go up by one."""
    before = _keys(pipeline.STEPS)
    bumped = tuple(
        dataclasses.replace(s, code_versions=tuple(v + 1 for v in s.code_versions))
        if s.name in step_names
        else s
        for s in pipeline.STEPS
    )
    after = _keys(bumped)
    return {name for name in before if before[name] != after[name]}


def _steps_running(version: int) -> set[str]:
    return {s.name for s in pipeline.STEPS if version in s.code_versions}


def test_augmentation_version_reruns_the_audio_cnn_embeddings_and_downstream_only():
    from mmtriton_build.data.augment import AUGMENTATION_VERSION

    # Both steps run the augmentation: the audio CNN trains on augmented clips (a stale
    # cached CNN would pair old audio features with new image features), the embeddings
    # step augments the fusion's training images and clips.
    assert _steps_running(AUGMENTATION_VERSION) >= {"audio_encoder", "embeddings"}
    changed = _changed_by_bumping("audio_encoder", "embeddings")
    assert changed == {"audio_encoder", "embeddings", "fusion", "evaluate"}


def test_no_digit_text_version_is_part_of_the_data_step_key():
    from mmtriton_build.data.nodigit_text import NO_DIGIT_TEXT_VERSION

    data_step = next(s for s in pipeline.STEPS if s.name == "data")
    assert NO_DIGIT_TEXT_VERSION in data_step.code_versions
    assert _changed_by_bumping("data") == {s.name for s in pipeline.STEPS}


def _changed_by_setting(step_name: str, index: int, value: object) -> set[str]:
    """The steps whose keys change when setting ``index`` of ``step_name`` becomes ``value``."""
    before = _keys(pipeline.STEPS)
    changed = tuple(
        dataclasses.replace(
            s, settings=tuple(value if i == index else v for i, v in enumerate(s.settings))
        )
        if s.name == step_name
        else s
        for s in pipeline.STEPS
    )
    after = _keys(changed)
    return {name for name in before if before[name] != after[name]}


def test_noise_floors_are_keyed_so_changing_one_reruns_the_steps_that_use_it():
    # A stale audio CNN once survived a floor change that bumped no version: the documented
    # figures then came from a model a fresh build no longer made.
    from mmtriton_build.features import CNN_NOISE_SNR_DB, FUSION_NOISE_SNR_DB

    steps = {s.name: s for s in pipeline.STEPS}
    assert CNN_NOISE_SNR_DB in steps["audio_encoder"].settings
    assert FUSION_NOISE_SNR_DB in steps["embeddings"].settings
    assert _changed_by_setting("audio_encoder", 0, (-12.0, 20.0)) == {
        "audio_encoder",
        "embeddings",
        "fusion",
        "evaluate",
    }
    assert _changed_by_setting("embeddings", 0, (-12.0, 20.0)) == {
        "embeddings",
        "fusion",
        "evaluate",
    }


def test_calibration_version_reruns_the_fusion_and_evaluation_only():
    from mmtriton_build.calibration import CALIBRATION_VERSION

    assert _steps_running(CALIBRATION_VERSION) >= {"fusion"}
    assert _changed_by_bumping("fusion") == {"fusion", "evaluate"}
