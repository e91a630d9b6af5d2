"""Timing helpers of the GPU node check (scripts/gpu_check.py), runtime-agnostic.

Each runtime is timed as a callable from numpy inputs to numpy outputs, so host-device copies
count for every runtime alike (TensorRT's runner and the PyTorch CUDA call both copy in and
out; ONNX Runtime on CPU has nothing to copy).

Absent modalities on the GPU profile: the CPU encoders skip placeholder rows, but a TensorRT
engine computes every row of its batch. `placeholder_cost` measures what that costs: a batch
of `real` rows against the same rows padded with placeholders up to the batch Triton would
form when other requests lack the modality.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mmtriton import spec

Run = Callable[[dict[str, np.ndarray]], object]


def timeit(run: Run, feed: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Mean wall ms of `run(feed)` over `repeats` calls, after one warm-up call."""
    run(feed)
    start = time.perf_counter()
    for _ in range(repeats):
        run(feed)
    return (time.perf_counter() - start) / repeats * 1000


def padded_with_placeholders(
    encoder: spec.ModelSpec, feed: dict[str, np.ndarray], batch: int
) -> dict[str, np.ndarray]:
    """`feed`'s rows followed by placeholder rows (spec.PLACEHOLDER_VALUES) up to `batch`."""
    real = len(next(iter(feed.values())))
    if batch < real:
        raise ValueError(f"batch {batch} is smaller than the {real} real rows")
    padded = {}
    for tensor in encoder.inputs:
        rows = np.asarray(feed[tensor.name])
        pad = np.full((batch - real, *rows.shape[1:]), spec.PLACEHOLDER_VALUES[tensor.name])
        padded[tensor.name] = np.concatenate([rows, pad.astype(rows.dtype)])
    return padded


def placeholder_cost(
    run: Run, encoder: spec.ModelSpec, feed: dict[str, np.ndarray], batch: int, repeats: int = 20
) -> dict:
    """Time `feed`'s real rows alone and padded with placeholders to `batch` rows: what absent
    modalities cost a runtime that computes every row (the ratio padded / real only)."""
    real = len(next(iter(feed.values())))
    real_ms = timeit(run, feed, repeats)
    padded_ms = timeit(run, padded_with_placeholders(encoder, feed, batch), repeats)
    return {
        "encoder": encoder.name,
        "real_rows": real,
        "batch": batch,
        "real_only_ms": round(real_ms, 4),
        "padded_ms": round(padded_ms, 4),
        "padded_over_real": round(padded_ms / real_ms, 3) if real_ms > 0 else None,
    }
