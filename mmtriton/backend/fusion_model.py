"""Triton Python-backend model for fusion + softmax classifier (numpy, see fusion.py)."""

from __future__ import annotations

import time

import numpy as np

from mmtriton import spec

from . import tracing
from .admission import instance_slot, open_ledger
from .batched import batch_size, batched_responses, gather_inputs
from .fusion import NumpyFusion
from .triton_io import model_parameters, output_dtypes, pb_utils


class FusionModel:
    """Triton Python-backend model: embeddings + presence mask in, probabilities out."""

    def initialize(self, args: dict) -> None:
        from mmtriton.observability.metrics import ModelMetrics

        config, params, version_dir = model_parameters(args)
        self.dtypes = output_dtypes(config)
        self.name = config["name"]
        self.fusion = NumpyFusion(version_dir / params["weights_file"])
        self.metrics = ModelMetrics(config["name"], pb_utils().MetricFamily, pipeline=True)
        self.tracer = tracing.StepTracer(config["name"])
        # Samples leaving the pipeline, for preprocess's admission (admission.py); written
        # whether or not preprocess bounds the flight, since it costs next to nothing.
        self.ledger = open_ledger()
        self.slot = instance_slot(args.get("model_instance_name", ""))

    def execute(self, requests):
        start = time.perf_counter()
        inputs = gather_inputs(requests, [t.name for t in spec.FUSION.inputs])
        spans = self._start_spans(requests, inputs)
        responses, ok = batched_responses(self.name, self._compute, inputs, self.dtypes)
        self.tracer.end(spans)
        now = time.time()
        stamps = [s for i in inputs for s in i[spec.PIPELINE_START.name][:, 0].tolist()]
        self.ledger.complete(self.slot, stamps, now)  # answered or failed, they are out
        if not ok:
            return responses
        for start_s in stamps:
            if start_s > 0:  # warm-up requests carry no start time
                self.metrics.observe_pipeline(max(now - start_s, 0.0))
        self.metrics.observe_execute(batch_size(inputs), time.perf_counter() - start)
        return responses

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = {m: feed[spec.ENCODERS[m].outputs[0].name] for m in spec.MODALITIES}
        probs, weights = self.fusion(embeddings, feed[spec.PRESENT.name])
        return {spec.PROBABILITIES.name: probs, spec.WEIGHTS.name: weights}

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
        self.fusion = None
        self.ledger.close()
