"""The GPU node check's timing helpers (build/mmtriton_build/export/gpu_timing.py), run here
with ONNX Runtime on CPU: scripts/gpu_check.py hands them TensorRT runners, which need a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from mmtriton import layout, spec
from mmtriton.backend.onnx_encoder import make_session
from mmtriton_build.export.gpu_timing import padded_with_placeholders, placeholder_cost

from ..conftest import require_repository


def _real_text_rows(n: int) -> dict[str, np.ndarray]:
    ids = np.zeros((n, 16), np.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 101, 2093, 102  # [CLS] seven [SEP]
    mask = (ids != 0).astype(np.int64)
    return {spec.TEXT_INPUT_IDS.name: ids, spec.TEXT_ATTENTION_MASK.name: mask}


def test_padding_appends_exactly_the_placeholder_rows() -> None:
    feed = _real_text_rows(3)
    padded = padded_with_placeholders(spec.TEXT_ENCODER, feed, 8)
    assert spec.placeholder_rows(spec.TEXT_ENCODER, padded).tolist() == [False] * 3 + [True] * 5
    for name, rows in feed.items():
        assert padded[name].dtype == rows.dtype and (padded[name][:3] == rows).all()
    with pytest.raises(ValueError, match="smaller"):
        padded_with_placeholders(spec.TEXT_ENCODER, feed, 2)


def test_placeholder_cost_times_the_real_rows_alone_and_padded_on_a_real_runtime() -> None:
    session = make_session(str(layout.onnx_path(require_repository(), spec.TEXT_ENCODER.name)), 1)
    seen: list[int] = []

    def run(feed):
        seen.append(len(feed[spec.TEXT_INPUT_IDS.name]))
        return session.run(None, feed)

    cost = placeholder_cost(run, spec.TEXT_ENCODER, _real_text_rows(2), batch=16, repeats=3)
    assert sorted(set(seen)) == [2, 16] and seen.count(2) == seen.count(16) == 4  # warm-up + 3
    assert cost["real_rows"] == 2 and cost["batch"] == 16
    assert cost["real_only_ms"] > 0 and cost["padded_ms"] > 0
    assert cost["padded_over_real"] == pytest.approx(
        cost["padded_ms"] / cost["real_only_ms"], rel=0.01
    )


def test_gpu_check_without_tensorrt_says_what_to_do_instead_of_a_traceback() -> None:
    """Here (no GPU, no tensorrt module) the GPU check can only refuse: it must say why."""
    import importlib.util
    import subprocess
    import sys

    from mmtriton.paths import PROJECT_ROOT

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the GPU check would run for real, not refuse")
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "gpu_check.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "TensorRT's Python module is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr
