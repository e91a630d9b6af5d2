"""Small helpers between Triton's Python-backend objects and numpy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def pb_utils():
    """The Python-backend utilities module; importable only inside the Triton stub."""
    import triton_python_backend_utils

    return triton_python_backend_utils


def model_parameters(args: dict[str, Any]) -> tuple[dict, dict[str, str], Path]:
    """(model config, its string parameters, the version folder) from initialize()'s args."""
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    version_dir = Path(args["model_repository"]) / args["model_version"]
    return config, params, version_dir


def output_dtypes(config: dict) -> dict[str, np.dtype]:
    """Each output's numpy dtype, read from the model config (never hard-coded)."""
    pb = pb_utils()
    return {out["name"]: pb.triton_string_to_numpy(out["data_type"]) for out in config["output"]}


def optional_input(request, name: str) -> np.ndarray | None:
    """The input as numpy, or None when the request does not carry it."""
    tensor = pb_utils().get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def error_response(message: str, invalid_argument: bool = True):
    """An error response; INVALID_ARGUMENT for the caller's mistakes, INTERNAL otherwise."""
    pb = pb_utils()
    code = pb.TritonError.INVALID_ARG if invalid_argument else pb.TritonError.INTERNAL
    return pb.InferenceResponse(error=pb.TritonError(message, code))


def unavailable_response(message: str):
    """An UNAVAILABLE error response: the server refuses for now; clients may retry."""
    pb = pb_utils()
    return pb.InferenceResponse(error=pb.TritonError(message, pb.TritonError.UNAVAILABLE))


def tensor_response(arrays: dict[str, np.ndarray], dtypes: dict[str, np.dtype]):
    """A response carrying each array, cast to the dtype the config declares."""
    pb = pb_utils()
    return pb.InferenceResponse(
        output_tensors=[
            pb.Tensor(name, np.ascontiguousarray(a, dtypes[name])) for name, a in arrays.items()
        ]
    )
