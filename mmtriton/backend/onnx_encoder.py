"""CPU profile encoders: an ONNX graph run by ONNX Runtime inside a Python-backend model.

The same graph is what TensorRT compiles for the GPU profile, so both profiles compute the same
function. Requests in a dynamic batch are concatenated into one ONNX Runtime call, over the rows
that carry a real input only: the rows of an absent modality hold its placeholder
(`spec.PLACEHOLDER_VALUES`) and get a zero embedding, which fusion ignores (PRESENT), so a
text-only request costs the image and audio encoders no inference at all. The text encoder's
rows run only up to the batch's longest real text (`trim_padding`), not the padded length.
"""

from __future__ import annotations

import time

import numpy as np

from mmtriton import spec

from .batched import batch_size, batched_responses, gather_inputs
from .triton_io import model_parameters, output_dtypes, pb_utils

# Rows each encoder saw, by outcome: "encoded" (ONNX Runtime ran on them) or "placeholder"
# (an absent modality: zero embedding, no inference). Served next to Triton's nv_* metrics.
ROWS_METRIC = "mmtriton_encoder_rows_total"
ROW_OUTCOMES = ("encoded", "placeholder")


def make_session(path: str, threads: int):
    """An ONNX Runtime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def trim_padding(encoder: spec.ModelSpec, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feed` cut, on its dynamic axis, after the last position any row's mask marks real
    (``encoder.sequence_mask``); other encoders' feeds are returned as they are.

    Preprocessing pads every text to TEXT_MAX_TOKENS so that requests batch together, but the
    phrases are shorter: the masked positions change no real token's output (their attention
    weight is exactly 0) and mean pooling skips them, so running up to the longest real text
    gives the same embedding (within float32 rounding: 1.5e-8 on the build's test phrases) at
    35-45 % less CPU (scripts/measure_speedups.py text)."""
    if encoder.sequence_mask is None:
        return feed
    mask = feed[encoder.sequence_mask]
    used = np.flatnonzero(mask.any(axis=0))
    length = int(used[-1]) + 1 if used.size else 1
    if length == mask.shape[1]:
        return feed
    out = dict(feed)
    for tensor in encoder.inputs:
        if -1 in tensor.dims:
            cut = [slice(None)] * (1 + len(tensor.dims))
            cut[1 + tensor.dims.index(-1)] = slice(length)  # the axis after the batch axis
            out[tensor.name] = np.ascontiguousarray(feed[tensor.name][tuple(cut)])
    return out


def encode_present_rows(
    run, encoder: spec.ModelSpec, feed: dict[str, np.ndarray], dtypes: dict[str, np.dtype]
) -> tuple[dict[str, np.ndarray], int]:
    """(outputs for every row, rows encoded): `run(feed) -> {output: array}` is called on the
    rows that are not placeholders only (not at all when every row is one), with their padding
    trimmed (``trim_padding``); placeholder rows get zeros of each output's shape."""
    n = len(next(iter(feed.values())))
    real = ~spec.placeholder_rows(encoder, feed)
    encoded = int(real.sum())
    if encoded == n:
        return run(trim_padding(encoder, feed)), n
    outputs = {
        t.name: np.zeros((n, *t.dims), dtype=dtypes.get(t.name, t.numpy_dtype))
        for t in encoder.outputs
    }
    if encoded:
        rows = trim_padding(encoder, {k: v[real] for k, v in feed.items()})
        for name, values in run(rows).items():
            outputs[name][real] = values
    return outputs, encoded


class OnnxEncoderModel:
    """Triton Python-backend model wrapping one ONNX encoder."""

    def initialize(self, args: dict) -> None:
        config, params, version_dir = model_parameters(args)
        self.name = config["name"]
        self.encoder = next(m for m in spec.ENCODERS.values() if m.name == self.name)
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.dtypes = output_dtypes(config)
        self.session = make_session(
            str(version_dir / params["onnx_file"]), int(params.get("intra_op_threads", "1"))
        )
        self._warm_up(int(config.get("max_batch_size", 1)) or 1)
        from mmtriton.observability.metrics import ModelMetrics

        pb = pb_utils()
        self.metrics = ModelMetrics(self.name, pb.MetricFamily)
        # Keep the family referenced on the model: Triton drops a collected one's series.
        self._rows_family = pb.MetricFamily(
            name=ROWS_METRIC,
            description="Rows each encoder received: encoded by its runtime, or placeholders "
            "of an absent modality (zero embedding, no inference)",
            kind=pb.MetricFamily.COUNTER,
        )
        self._rows = {
            o: self._rows_family.Metric(labels={"model": self.name, "outcome": o})
            for o in ROW_OUTCOMES
        }

    def _warm_up(self, batch: int) -> None:
        """Run ONNX Runtime once when Triton's zero-filled warm-up would not: zeros are the
        text encoder's placeholder, which execute() never hands to the session."""
        zeros = {
            t.name: np.zeros((batch, *t.fixed_dims), dtype=t.numpy_dtype)
            for t in self.encoder.inputs
        }
        if spec.placeholder_rows(self.encoder, zeros).all():
            self._run(zeros)

    def execute(self, requests):
        start = time.perf_counter()
        inputs = gather_inputs(requests, self.input_names)
        responses, ok = batched_responses(self.name, self._compute, inputs, self.dtypes)
        if ok:
            self.metrics.observe_execute(batch_size(inputs), time.perf_counter() - start)
        return responses

    def _run(self, feed: dict) -> dict:
        return dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))

    def _compute(self, feed: dict) -> dict:
        outputs, encoded = encode_present_rows(self._run, self.encoder, feed, self.dtypes)
        n = len(next(iter(feed.values())))
        if encoded:
            self._rows["encoded"].increment(encoded)
        if n - encoded:
            self._rows["placeholder"].increment(n - encoded)
        return outputs

    def finalize(self) -> None:
        self.session = None
