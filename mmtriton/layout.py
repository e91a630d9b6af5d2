"""The model repository's file layout, defined once.

The export writes these files, the Python-backend models and the launcher read them, the
engine step links TensorRT plans beside them, and the harnesses and tests find models by them.
"""

from __future__ import annotations

from pathlib import Path

from mmtriton import spec

# Every model has one version folder.
VERSION = "1"
LABEL_FILE = "labels.txt"  # beside the ensemble's config: Triton's classification extension
PYTHON_MODEL_FILE = "model.py"  # what Triton's Python backend imports from a version folder
# Files the Python-backend models load, copied beside their model.py.
TOKENIZER_FILE = "tokenizer.json"
VAD_FILE = "silero_vad_batched.onnx"  # preprocess/vad_graph.py writes it
FUSION_WEIGHTS = "fusion.npz"
ONNX_FILE = "model.onnx"
# TensorRT plans: one per GPU generation (cc_model_filenames), and the default plan Triton
# loads on a GPU whose compute capability is not listed (the engine step links it at start).
PLAN_PATTERN = "model_sm{cc}.plan"
DEFAULT_PLAN = "model.plan"
SUPPORTED_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "9.0")


def version_dir(repository: Path, model: str) -> Path:
    """<repository>/<model>/1."""
    return Path(repository) / model / VERSION


def onnx_path(repository: Path, model: str) -> Path:
    """Where an encoder's exported ONNX graph lives."""
    return version_dir(repository, model) / ONNX_FILE


def missing_onnx(repository: Path) -> list[Path]:
    """Encoders of `repository` whose ONNX graph is not exported yet (all, when none is)."""
    return [
        onnx_path(repository, m.name)
        for m in spec.ENCODERS.values()
        if not onnx_path(repository, m.name).exists()
    ]
