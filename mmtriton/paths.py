"""Where the project's files and build outputs live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def artifacts_dir() -> Path:
    """Root of all git-ignored build outputs (override with MMTRITON_ARTIFACTS)."""
    return Path(os.environ.get("MMTRITON_ARTIFACTS", PROJECT_ROOT / "artifacts"))


def model_repository_dir() -> Path:
    """The Triton model repository (override with MMTRITON_MODEL_REPOSITORY)."""
    return Path(os.environ.get("MMTRITON_MODEL_REPOSITORY", PROJECT_ROOT / "model_repository"))
