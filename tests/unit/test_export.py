"""Export: configs, TensorRT profiles and trtexec lines; a real engine build where a GPU is."""

from __future__ import annotations

import shutil

import pytest

from mmtriton import spec
from mmtriton.paths import model_repository_dir
from mmtriton_build.export import repository as repo
from mmtriton_build.export.gpu import NoGpuError, detect_gpu
from mmtriton_build.export.policy import POLICIES
from mmtriton_build.export.tensorrt import (
    ShapeProfile,
    build_engines,
    optimization_profiles,
    plan_filename,
    trtexec_command,
    trtexec_on_path,
)


def _served_threshold(config_text: str) -> float:
    """The confidence threshold a config.pbtxt carries, parsed as Triton and clients do."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    return float(config.parameters[spec.CONFIDENCE_THRESHOLD_PARAMETER].string_value)


def test_committed_configs_match_the_generator() -> None:
    """config.pbtxt files are generated from the spec; a hand edit or stale file fails here.

    The ensemble's confidence threshold is the one value chosen by the build (on validation
    data), so it is taken from the committed file; everything else must match exactly.
    """
    root = model_repository_dir()
    labels = (root / "multimodal" / repo.LABEL_FILE).read_text().split()
    threshold = _served_threshold((root / "multimodal" / "config.pbtxt").read_text())
    assert 0.0 < threshold < 1.0
    for rel, text in repo.generate_configs(labels, threshold).items():
        assert (root / rel).read_text() == text, f"{rel} is stale: run `mmtriton export`"


def test_ensemble_config_carries_the_threshold_the_build_chose(tmp_path) -> None:
    calibration = tmp_path / "calibration.json"
    assert repo.read_confidence_threshold(calibration) == spec.DEFAULT_CONFIDENCE_THRESHOLD
    calibration.write_text('{"temperature": 1.3, "confidence_threshold": 0.42}')
    threshold = repo.read_confidence_threshold(calibration)
    repo.write_configs(tmp_path / "repo", ["a", "b"], threshold)
    text = (tmp_path / "repo" / "multimodal" / "config.pbtxt").read_text()
    assert _served_threshold(text) == 0.42
    with pytest.raises(ValueError, match="confidence threshold"):
        repo.ensemble_config(2, 1.5)


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


def test_gpu_configs_name_a_plan_per_compute_capability() -> None:
    text = repo.encoder_config_gpu(spec.IMAGE_ENCODER)
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text
    for cc in repo.SUPPORTED_COMPUTE_CAPABILITIES:
        assert f'value: "{plan_filename(cc)}"' in text


def test_shape_profile_format() -> None:
    assert ShapeProfile._fmt((1, 3, 112, 112)) == "1x3x112x112"


AGREEMENT_TARGET = 0.999
GPU_SAMPLES = 2000


def _gpu_test_requirements() -> None:
    """Skip, saying which, unless this machine has what a real engine build and run need."""
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi not found): TensorRT cannot run")
    try:
        detect_gpu()
    except NoGpuError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("tensorrt", reason="the tensorrt module (to deserialize plans) is missing")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here: needed for the plans' device buffers")


@pytest.mark.gpu
def test_engine_build_on_gpu(tmp_path) -> None:
    """Builds every engine as `mmtriton engines` does, runs it, and agrees with ONNX Runtime.

    Into a temporary cache and a copy of the repository: deserialize each plan, run the held-out
    test samples in batches, then the fused pipeline's top-1 must agree with the ONNX Runtime
    pipeline's on >= 99.9 % of them (FP16).
    """
    _gpu_test_requirements()
    import pickle

    import numpy as np
    import tensorrt as trt

    from mmtriton.backend.fusion import NumpyFusion
    from mmtriton.backend.onnx_encoder import make_session
    from mmtriton.paths import artifacts_dir
    from mmtriton_build.artifacts import BuildPaths
    from mmtriton_build.config import load_config
    from mmtriton_build.export.trt_runner import TrtRunner, batched, encoder_inputs
    from mmtriton_build.loaders import load_encoders, make_extractor

    repo = tmp_path / "repository"
    shutil.copytree(model_repository_dir(), repo, symlinks=True)
    # Build with whatever TensorRT is here; it is also the one that runs the plans below.
    env = {"TRT_VERSION": trt.__version__}
    links = build_engines(repo, tmp_path / "cache", trtexec=trtexec_on_path(), env=env)
    plans = {}
    for m, model in spec.ENCODERS.items():
        loaded = repo / model.name / "1" / "model.plan"
        assert loaded in links and loaded.resolve().stat().st_size > 0
        plans[m] = TrtRunner(loaded.resolve())

    paths, config = BuildPaths(artifacts_dir()), load_config()
    with paths.splits.open("rb") as f:
        samples = pickle.load(f)["test"][:GPU_SAMPLES]
    feeds = encoder_inputs(samples, make_extractor(paths, load_encoders(config, paths)))
    emb_trt, emb_ort = {}, {}
    for m, model in spec.ENCODERS.items():
        out = model.outputs[0].name
        session = make_session(str(repo / model.name / "1" / "model.onnx"), 2)
        batch = POLICIES[model.name].max_batch_size
        emb_trt[m] = np.concatenate([plans[m](b)[out] for b in batched(feeds[m], batch)])
        emb_ort[m] = np.concatenate([session.run([out], b)[0] for b in batched(feeds[m], batch)])
        assert emb_trt[m].shape == emb_ort[m].shape
    present = np.array([[1.0, float(bool(s.text)), 1.0] for s in samples], np.float32)
    fusion = NumpyFusion(paths.fusion(config.fusion.mode))
    top_trt = fusion(emb_trt, present)[0].argmax(1)
    top_ort = fusion(emb_ort, present)[0].argmax(1)
    agreement = float((top_trt == top_ort).mean())
    assert len(samples) >= 1000, "too few held-out samples to measure 99.9 %"
    assert agreement >= AGREEMENT_TARGET, f"top-1 agreement {agreement:.4%} < 99.9 %"
