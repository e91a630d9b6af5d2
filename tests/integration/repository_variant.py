"""Copies of the exported model repository with some config parameters changed.

Model files are symlinked (the repository holds ~100 MB of weights); only the edited models'
config.pbtxt files are real files, rewritten through Triton's own protobuf schema, so whatever
value the build wrote is replaced (or removed) exactly.
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


def repository_with_parameters(
    source: Path, target: Path, model: str, parameters: dict[str, str | None]
) -> Path:
    """`target`: `source` with `model`'s config parameters set to the given texts (a None
    value removes the parameter)."""
    if not target.exists():
        shutil.copytree(
            source, target, copy_function=_link, ignore=shutil.ignore_patterns("__pycache__")
        )
    config_path = target / model / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    for name, value in parameters.items():
        config.parameters.pop(name, None)
        if value is not None:
            config.parameters[name].string_value = value
    config_path.unlink()  # may be a link into the source repository: never write through it
    config_path.write_text(text_format.MessageToString(config))
    return target


def repository_with_threshold(source: Path, target: Path, threshold: str | None) -> Path:
    """`target`: `source` with the ensemble's threshold parameter set to `threshold` (the text
    written into config.pbtxt), or without the parameter when None."""
    parameters = {spec.CONFIDENCE_THRESHOLD_PARAMETER: threshold}
    return repository_with_parameters(source, target, spec.ENSEMBLE.name, parameters)
