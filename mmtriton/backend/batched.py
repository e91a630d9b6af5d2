"""The steps after the fan-out (the encoders, fusion): one way to run a dynamic batch.

Their inputs were validated by the first step, so a failure here is a bug or a broken
runtime, never the caller's mistake: every request of the batch gets the same INTERNAL error
naming the step, and the stub keeps serving. (Triton 2.51 may count such a request as in
flight forever; the supervisor's probe and `mmtriton drain`'s timeout bound the damage.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .triton_io import error_response, pb_utils, tensor_response

# A step's computation: one feed (every request's rows concatenated) -> its outputs by name.
Compute = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def gather_inputs(requests, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Each request's inputs as numpy, by name."""
    pb = pb_utils()
    return [{n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in names} for r in requests]


def run_batched(
    compute: Compute, requests_inputs: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """One call of `compute` over several requests' rows; outputs split back per request."""
    sizes = [len(next(iter(inputs.values()))) for inputs in requests_inputs]
    feed = {
        name: np.concatenate([inputs[name] for inputs in requests_inputs])
        for name in requests_inputs[0]
    }
    outputs = compute(feed)
    bounds = np.cumsum([0, *sizes])
    return [
        {name: out[bounds[i] : bounds[i + 1]] for name, out in outputs.items()}
        for i in range(len(sizes))
    ]


def batched_responses(
    step: str,
    compute: Compute,
    requests_inputs: list[dict[str, np.ndarray]],
    dtypes: dict[str, np.dtype],
) -> tuple[list, bool]:
    """(one response per request, whether the step succeeded)."""
    try:
        per_request = run_batched(compute, requests_inputs)
    except Exception as exc:  # report, never crash the stub
        message = f"{step} failed: {type(exc).__name__}: {exc}"
        return [error_response(message, invalid_argument=False) for _ in requests_inputs], False
    return [tensor_response(out, dtypes) for out in per_request], True


def batch_size(requests_inputs: list[dict[str, np.ndarray]]) -> int:
    """Rows in the whole dynamic batch."""
    return sum(len(next(iter(inputs.values()))) for inputs in requests_inputs)
