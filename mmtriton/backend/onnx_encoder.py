"""CPU profile encoders: an ONNX graph run by ONNX Runtime inside a Python-backend model.

The same graph is what TensorRT compiles for the GPU profile, so both profiles compute the same
function. Requests in a dynamic batch are concatenated into one ONNX Runtime call.
"""

from __future__ import annotations

import time

from .batched import batch_size, batched_responses, gather_inputs
from .triton_io import model_parameters, output_dtypes, pb_utils


def make_session(path: str, threads: int):
    """An ONNX Runtime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxEncoderModel:
    """Triton Python-backend model wrapping one ONNX encoder."""

    def initialize(self, args: dict) -> None:
        config, params, version_dir = model_parameters(args)
        self.name = config["name"]
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.dtypes = output_dtypes(config)
        self.session = make_session(
            str(version_dir / params["onnx_file"]), int(params.get("intra_op_threads", "1"))
        )
        from mmtriton.observability.metrics import ModelMetrics

        self.metrics = ModelMetrics(self.name, pb_utils().MetricFamily)

    def execute(self, requests):
        start = time.perf_counter()
        inputs = gather_inputs(requests, self.input_names)
        responses, ok = batched_responses(self.name, self._compute, inputs, self.dtypes)
        if ok:
            self.metrics.observe_execute(batch_size(inputs), time.perf_counter() - start)
        return responses

    def _compute(self, feed: dict) -> dict:
        return dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))

    def finalize(self) -> None:
        self.session = None
