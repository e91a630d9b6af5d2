"""The exported repository: ONNX graphs agree with the spec and configs; parity holds."""

from __future__ import annotations

import json

import pytest

from mmtriton import spec
from mmtriton.backend.onnx_encoder import make_session
from mmtriton.paths import model_repository_dir
from mmtriton_build.artifacts import BuildPaths
from mmtriton_build.export.onnx_export import onnx_io
from mmtriton_build.export.parity import TOLERANCE, random_parity
from mmtriton_build.loaders import load_audio_encoder

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("model", list(spec.ENCODERS.values()), ids=lambda m: m.name)
def test_onnx_graph_matches_spec_and_config(model):
    repo = model_repository_dir()
    io = onnx_io(repo / model.name / "1" / "model.onnx")
    config = (repo / model.name / "config.pbtxt").read_text()
    for t in (*model.inputs, *model.outputs):
        assert t.name in io, f"{t.name} missing from the ONNX graph"
        dtype, dims = io[t.name]
        assert dtype == t.dtype
        assert dims == t.dims, f"{t.name}: ONNX {dims} vs spec {t.dims}"
        assert f'name: "{t.name}"' in config and t.triton_type in config
    assert set(io) == {t.name for t in (*model.inputs, *model.outputs)}


def test_parity_report_meets_the_tolerance(built_artifacts):
    report = json.loads((built_artifacts / "reports" / "parity.json").read_text())
    assert report["ok"]
    for name, r in report["encoders"].items():
        assert r["max_abs_diff_test_set"] <= TOLERANCE, name
        assert r["max_abs_diff_random"] <= TOLERANCE, name
    assert report["pipeline"]["top1_identical"] == report["pipeline"]["test_samples"] > 0


def test_exported_audio_encoder_matches_pytorch_now(built_artifacts):
    """Recomputed here (not just read from the report): the trained CNN against its ONNX."""
    module = load_audio_encoder(BuildPaths(built_artifacts))
    session = make_session(str(model_repository_dir() / "audio_encoder" / "1" / "model.onnx"), 1)
    for seed in range(3):
        assert random_parity(module, session, spec.AUDIO_ENCODER, seed=seed) <= TOLERANCE
