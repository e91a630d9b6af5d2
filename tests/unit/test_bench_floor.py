"""The bench's framework floor (harness/mmtriton_harness/bench/floor.py): the null repository
and the ceiling arithmetic. The null graph served for real: tests/integration/test_bench_run.py.
"""

from __future__ import annotations

import pytest

from mmtriton import layout, spec
from mmtriton_build.export import repository as repo_files
from mmtriton_harness.bench import floor


def test_ceiling_is_the_limit_share_of_everything_a_request_costs() -> None:
    # 4 ms of stages, 1 ms of framework, 1 ms of load generator: at best 4/6 of the limit.
    assert floor.ceiling_over_limit(4.0, 1.0, 1.0) == pytest.approx(4 / 6)
    assert floor.ceiling_over_limit(4.0, 0.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        floor.ceiling_over_limit(0.0, 1.0, 1.0)


def test_null_repository_keeps_the_configs_and_replaces_every_python_step(tmp_path) -> None:
    source = tmp_path / "src"
    for rel, text in repo_files.generate_configs(list(spec.LABELS)).items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    for model in spec.ALL_MODELS:
        version = layout.version_dir(source, model.name)
        version.mkdir(parents=True, exist_ok=True)
        if model is not spec.ENSEMBLE:
            (version / layout.PYTHON_MODEL_FILE).write_text("real model\n")
    (layout.onnx_path(source, spec.IMAGE_ENCODER.name)).write_bytes(b"weights")

    target = floor.write_null_repository(source, tmp_path / "null")
    null_source = floor.NULL_MODEL.read_text()
    for model in spec.ALL_MODELS:
        config = target / model.name / "config.pbtxt"
        assert (
            config.is_symlink()
            and config.read_text() == (source / model.name / "config.pbtxt").read_text()
        )
        model_py = layout.version_dir(target, model.name) / layout.PYTHON_MODEL_FILE
        if model is spec.ENSEMBLE:
            assert layout.version_dir(target, model.name).is_dir() and not model_py.exists()
        else:
            assert model_py.read_text() == null_source, model.name
    assert (target / spec.ENSEMBLE.name / layout.LABEL_FILE).exists()
    assert not layout.onnx_path(target, spec.IMAGE_ENCODER.name).exists()


def test_floor_pairs_each_round_and_says_how_much_of_the_ceiling_is_reached() -> None:
    null = [{"rps": 900.0, "cpu_ms_per_request": ms} for ms in (1.0, 2.0, 1.5)]
    served = [{"client_cpu_ms_per_request": 1.0}] * 3
    out = floor.summarise_floor(null, served, [4.0, 4.0, 8.0], served_over_limit=0.4, cores=2)
    # Rounds: 4/6, 4/7, 8/10.5 -> median 4/6.
    assert out["ceiling_over_limit"] == pytest.approx(4 / 6, abs=1e-3)
    assert out["ceiling_spread"] == [
        pytest.approx(4 / 7, abs=1e-3),
        pytest.approx(8 / 10.5, abs=1e-3),
    ]
    assert out["served_over_ceiling"] == pytest.approx(0.4 / (4 / 6), abs=1e-3)
    assert out["null_cpu_ms_per_request"] == 1.5 and out["null_rps"] == 900.0
    # The rate at the ceiling on 2 cores: 2000 ms over 6, 7 and 10.5 ms -> median 2000 / 7.
    assert out["ceiling_rps"] == pytest.approx(2000 / 7, abs=0.01)
