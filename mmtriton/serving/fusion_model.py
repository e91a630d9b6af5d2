"""Triton Python-backend model for fusion + softmax classifier (numpy, see fusion.py)."""

from __future__ import annotations

import time

import numpy as np

from mmtriton import spec

from . import tracing
from .fusion import NumpyFusion
from .onnx_encoder import run_batched
from .triton_io import model_parameters, output_dtypes, pb_utils, tensor_response


class _FusionSession:
    """Adapts NumpyFusion to the ONNX-session-like call used by `run_batched`."""

    def __init__(self, fusion: NumpyFusion) -> None:
        self.fusion = fusion

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        embeddings = {m: feed[spec.ENCODERS[m].outputs[0].name] for m in spec.MODALITIES}
        probs, weights = self.fusion(embeddings, feed[spec.PRESENT.name])
        by_name = {spec.PROBABILITIES.name: probs, spec.WEIGHTS.name: weights}
        return [by_name[n] for n in output_names]


class FusionModel:
    """Triton Python-backend model: embeddings + presence mask in, probabilities out."""

    def initialize(self, args: dict) -> None:
        from mmtriton.observability.metrics import ModelMetrics

        config, params, version_dir = model_parameters(args)
        self.dtypes = output_dtypes(config)
        self.output_names = [t["name"] for t in config["output"]]
        self.session = _FusionSession(NumpyFusion(version_dir / params["weights_file"]))
        self.metrics = ModelMetrics(config["name"], pb_utils().MetricFamily, pipeline=True)
        self.tracer = tracing.StepTracer(config["name"])

    def execute(self, requests):
        start = time.perf_counter()
        pb = pb_utils()
        names = [t.name for t in spec.FUSION.inputs]
        inputs = [
            {n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in names} for r in requests
        ]
        spans = self._start_spans(requests, inputs)
        per_request = run_batched(self.session, inputs, self.output_names)
        self.tracer.end(spans)
        now = time.time()
        for request_inputs in inputs:
            started = request_inputs[spec.PIPELINE_START.name]
            for start_s in started[:, 0].tolist():
                if start_s > 0:  # warm-up requests carry no start time
                    self.metrics.observe_pipeline(max(now - start_s, 0.0))
        batch = sum(len(i[spec.PRESENT.name]) for i in inputs)
        self.metrics.observe_execute(batch, time.perf_counter() - start)
        return [tensor_response(out, self.dtypes) for out in per_request]

    def _start_spans(self, requests, inputs: list[dict[str, np.ndarray]]) -> list:
        """A `fusion.fuse` span per traced request: the batch they are fused in together."""
        if not self.tracer.enabled:
            return []
        batch = sum(len(i[spec.PRESENT.name]) for i in inputs)
        spans = []
        for request, request_inputs in zip(requests, inputs, strict=True):
            present = request_inputs[spec.PRESENT.name]
            attributes = {
                tracing.MODALITIES: tracing.modalities_attribute(present),
                tracing.BATCH_SIZE: len(present),
                tracing.STEP_BATCH_SIZE: batch,
            }
            spans.append(self.tracer.start("fuse", self.tracer.context(request), attributes))
        return spans

    def finalize(self) -> None:
        self.tracer.shutdown()
        self.session = None
