"""The true limit's measurement (harness/mmtriton_harness/bench/stages.py, core_at.py) run for
real, briefly, on the built model: every stage runs the serving code on real samples.

No figure is asserted (the machine is shared): only that each stage ran what it claims to.
"""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from mmtriton import spec
from mmtriton.paths import PROJECT_ROOT, model_repository_dir
from mmtriton_harness.bench import stages
from mmtriton_harness.bench.core_at import snapshot
from mmtriton_harness.bench.workload import full_samples


@pytest.fixture(scope="module")
def samples(built_artifacts):
    return full_samples(built_artifacts, n=10)


@pytest.fixture(scope="module")
def runner(samples):
    return stages.StageRunner(model_repository_dir(), samples)


def test_every_stage_is_measured_at_the_batch_it_was_given(runner, samples) -> None:
    costs = stages.measure_stages(
        model_repository_dir(), samples, {s: (1, 3) for s in stages.STAGES}, 0.0, runner
    )
    assert set(costs) == set(stages.STAGES)
    for stage, cost in costs.items():
        assert set(cost.tried) == {1, 3}, stage
        assert cost.batch in (1, 3) and cost.cpu_ms == min(cost.tried.values()), stage
        assert cost.cpu_ms > 0, stage
    back = stages.costs_from_json(stages.costs_as_json(costs))
    assert back == costs


@pytest.mark.parametrize("modality", spec.MODALITIES)
def test_preprocess_stage_runs_its_modality_alone(runner, modality) -> None:
    out = runner.call(f"preprocess.{modality}", 4)()
    present = out[spec.PRESENT.name]
    column = spec.MODALITIES.index(modality)
    assert present.shape == (4, len(spec.MODALITIES))
    assert present[:, column].all() and present.sum() == 4  # that modality, nothing else


def test_encoder_and_fusion_stages_run_the_served_graphs(runner) -> None:
    for modality, model in spec.ENCODERS.items():
        embedding = runner.call(f"encoder.{modality}", 2)()
        assert embedding.shape[0] == 2 and embedding.shape[1:] == tuple(model.outputs[0].dims)
        assert np.isfinite(embedding).all()
    probs, _weights = runner.call(stages.FUSION, 2)()
    assert probs.shape == (2, len(spec.LABELS))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_preprocess_cpu_ms_uses_22_khz_stereo_clips_of_1_7_s(samples) -> None:
    work = stages.preprocess_workload(samples, 3)
    assert len(work) == 3 and all(s.image and s.text for s in work)
    for s in work:
        info = sf.info(io.BytesIO(s.audio))
        assert (info.samplerate, info.channels) == (22_050, 2)
        assert info.duration == pytest.approx(1.7, abs=0.01)
    assert stages.preprocess_cpu_ms(model_repository_dir(), samples, batch=3, min_cpu_s=0.0) > 0


def test_cpu_clock_counts_every_call_after_a_warm_up() -> None:
    calls = []
    ms = stages.cpu_ms_per_sample(lambda: calls.append(sum(range(20_000))), 4, 0.0, min_calls=3)
    assert len(calls) == 4 and ms >= 0  # one warm-up call, then the three measured


def test_one_thread_holds_the_pools_and_restores_the_environment(monkeypatch) -> None:
    from threadpoolctl import threadpool_info

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with stages.one_thread():
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert "OMP_NUM_THREADS" not in os.environ


def test_child_measures_a_commits_core_when_asked(built_artifacts, tmp_path) -> None:
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    core = snapshot(head, tmp_path / "core")
    assert (core / "mmtriton" / "preprocess" / "pipeline.py").is_file()
    doc = stages.measure_in_child(
        model_repository_dir(), built_artifacts, None, 0.0, 0.0, what="preprocess", core=core
    )
    assert doc["core"] == str(core / "mmtriton") and doc["preprocess_cpu_ms"] > 0
    here = stages.measure_in_child(
        model_repository_dir(), built_artifacts, None, 0.0, 0.0, what="preprocess"
    )
    assert here["core"] == str(PROJECT_ROOT / "mmtriton")
    with pytest.raises(RuntimeError, match="git archive"):
        snapshot("no-such-commit", tmp_path / "none")
