"""A copy of the exported model repository whose ensemble carries a chosen confidence threshold.

Model files are symlinked (the repository holds ~100 MB of weights); only the ensemble's
config.pbtxt is a real file, rewritten through Triton's own protobuf schema, so whatever
threshold the build wrote is replaced (or removed, for the "absent" case) exactly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mmtriton import spec


def _link(source: str, target: str) -> None:
    os.symlink(os.path.abspath(source), target)


def repository_with_threshold(source: Path, target: Path, threshold: str | None) -> Path:
    """`target`: `source` with the ensemble's threshold parameter set to `threshold` (the text
    written into config.pbtxt), or without the parameter when None."""
    shutil.copytree(
        source, target, copy_function=_link, ignore=shutil.ignore_patterns("__pycache__")
    )
    config_path = target / spec.ENSEMBLE.name / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    config.parameters.pop(spec.CONFIDENCE_THRESHOLD_PARAMETER, None)
    if threshold is not None:
        config.parameters[spec.CONFIDENCE_THRESHOLD_PARAMETER].string_value = threshold
    config_path.unlink()  # a link into the source repository: never write through it
    config_path.write_text(text_format.MessageToString(config))
    return target
