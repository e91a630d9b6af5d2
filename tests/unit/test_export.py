"""Export pieces that need no GPU: configs, TensorRT profiles, trtexec lines, cache keys."""

from __future__ import annotations

import shutil

import pytest

from mmtriton import spec
from mmtriton.paths import model_repository_dir
from mmtriton_build.export import repository as repo
from mmtriton_build.export.policy import POLICIES
from mmtriton_build.export.tensorrt import (
    ShapeProfile,
    cache_key,
    detect_gpu,
    optimization_profiles,
    plan_filename,
    trtexec_command,
)


def test_committed_configs_match_the_generator() -> None:
    """config.pbtxt files are generated from the spec; a hand edit or stale file fails here."""
    root = model_repository_dir()
    labels = (root / "multimodal" / repo.LABEL_FILE).read_text().split()
    for rel, text in repo.generate_configs(labels).items():
        assert (root / rel).read_text() == text, f"{rel} is stale: run `mmtriton export`"


def test_every_model_has_a_config_and_thin_model_py() -> None:
    root = model_repository_dir()
    for model in spec.ALL_MODELS:
        assert (root / model.name / "config.pbtxt").exists()
        model_py = root / model.name / "1" / "model.py"
        if model is not spec.ENSEMBLE:
            assert len(model_py.read_text().splitlines()) <= 10, "model.py must stay thin"


@pytest.mark.parametrize("model", list(spec.ENCODERS.values()), ids=lambda m: m.name)
def test_profiles_cover_the_batcher(model: spec.ModelSpec) -> None:
    policy = POLICIES[model.name]
    for p in optimization_profiles(model):
        assert p.min[0] == 1
        assert p.opt[0] == max(policy.preferred_batch_sizes)
        assert p.max[0] == policy.max_batch_size
        assert all(lo <= o <= hi for lo, o, hi in zip(p.min, p.opt, p.max, strict=True))
        tensor = model.input(p.name)
        assert len(p.max) == len(tensor.dims) + 1


def test_text_profile_spans_sequence_lengths() -> None:
    ids = optimization_profiles(spec.TEXT_ENCODER)[0]
    assert ids.min[1] == 1 and ids.max[1] == spec.TEXT_MAX_TOKENS


def test_trtexec_command_from_the_same_profiles(tmp_path) -> None:
    cmd = trtexec_command(
        tmp_path / "m.onnx", tmp_path / "m.plan", spec.TEXT_ENCODER, timing_cache=tmp_path / "t"
    )
    assert cmd[0] == "trtexec"
    assert f"--onnx={tmp_path / 'm.onnx'}" in cmd
    assert "--fp16" in cmd
    p = POLICIES["text_encoder"]
    t = spec.TEXT_MAX_TOKENS
    assert (
        f"--maxShapes=TEXT_INPUT_IDS:{p.max_batch_size}x{t},TEXT_ATTENTION_MASK:{p.max_batch_size}x{t}"
        in cmd
    )
    assert "--minShapes=TEXT_INPUT_IDS:1x1,TEXT_ATTENTION_MASK:1x1" in cmd
    assert f"--timingCacheFile={tmp_path / 't'}" in cmd
    assert "--fp16" not in trtexec_command(
        tmp_path / "a", tmp_path / "b", spec.TEXT_ENCODER, fp16=False
    )


def test_cache_key_changes_with_each_part() -> None:
    base = cache_key("a" * 64, "9.0", "10.5.0")
    assert base == "aaaaaaaaaaaaaaaa-sm90-trt10.5.0-fp16"
    assert cache_key("b" * 64, "9.0", "10.5.0") != base
    assert cache_key("a" * 64, "8.6", "10.5.0") != base
    assert cache_key("a" * 64, "9.0", "10.6.0") != base
    assert cache_key("a" * 64, "9.0", "10.5.0", fp16=False) != base


def test_gpu_configs_name_a_plan_per_compute_capability() -> None:
    text = repo.encoder_config_gpu(spec.IMAGE_ENCODER)
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text
    for cc in repo.SUPPORTED_COMPUTE_CAPABILITIES:
        assert f'value: "{plan_filename(cc)}"' in text


def test_shape_profile_format() -> None:
    assert ShapeProfile._fmt((1, 3, 112, 112)) == "1x3x112x112"


@pytest.mark.gpu
def test_engine_build_on_gpu(tmp_path) -> None:
    """Builds a real engine; only where an NVIDIA GPU and TensorRT exist."""
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi not found): TensorRT cannot run")
    pytest.importorskip("tensorrt", reason="TensorRT Python module not installed")
    gpu = detect_gpu()
    assert gpu.compute_capability
