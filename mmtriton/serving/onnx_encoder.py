"""CPU profile encoders: an ONNX graph run by ONNX Runtime inside a Python-backend model.

The same graph is what TensorRT compiles for the GPU profile, so both profiles compute the same
function. Requests in a dynamic batch are concatenated into one ONNX Runtime call.
"""

from __future__ import annotations

import time

import numpy as np

from .triton_io import error_response, model_parameters, output_dtypes, pb_utils, tensor_response


def make_session(path: str, threads: int):
    """An ONNX Runtime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_batched(session, requests_inputs: list[dict[str, np.ndarray]], output_names: list[str]):
    """Run one session call over several requests' inputs; split the outputs back per request."""
    sizes = [len(next(iter(inputs.values()))) for inputs in requests_inputs]
    feed = {
        name: np.concatenate([inputs[name] for inputs in requests_inputs])
        for name in requests_inputs[0]
    }
    outputs = session.run(output_names, feed)
    bounds = np.cumsum([0, *sizes])
    return [
        {
            name: out[bounds[i] : bounds[i + 1]]
            for name, out in zip(output_names, outputs, strict=True)
        }
        for i in range(len(sizes))
    ]


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
        pb = pb_utils()
        inputs = [
            {n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        try:
            per_request = run_batched(self.session, inputs, self.output_names)
        except Exception as exc:  # report, never crash the stub
            message = f"{self.name} failed: {exc}"
            return [error_response(message, invalid_argument=False) for _ in requests]
        responses = [tensor_response(out, self.dtypes) for out in per_request]
        batch = sum(len(next(iter(i.values()))) for i in inputs)
        self.metrics.observe_execute(batch, time.perf_counter() - start)
        return responses

    def finalize(self) -> None:
        self.session = None
