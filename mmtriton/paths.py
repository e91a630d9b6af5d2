"""Where the project's files and build outputs live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def artifacts_dir() -> Path:
    """Root of all git-ignored build outputs (override with MMTRITON_ARTIFACTS)."""
    return Path(os.environ.get("MMTRITON_ARTIFACTS", PROJECT_ROOT / "artifacts"))


# The web page's example gallery, written by `mmtriton export` as plain files: an index
# {"examples": [{"label", "text", "image", "audio"}, ...]} naming PNG and WAV files beside it.
GALLERY_INDEX = "gallery.json"


def gallery_dir(root: Path | None = None) -> Path:
    """Where the gallery lives under the artifacts folder `root` (default: artifacts_dir())."""
    return (root or artifacts_dir()) / "examples"


def model_repository_dir() -> Path:
    """The Triton model repository (override with MMTRITON_MODEL_REPOSITORY)."""
    return Path(os.environ.get("MMTRITON_MODEL_REPOSITORY", PROJECT_ROOT / "model_repository"))
