"""The ensemble's first step: validate and decode raw IMAGE / TEXT / AUDIO bytes.

Every input is checked here, before the graph fans out to the encoders: a request that fails
gets INVALID_ARGUMENT naming the problem and never reaches a sibling step (a failure inside a
fanned-out step leaks in-flight requests in Triton 2.51; see shared notes). For the same reason
admission happens here (admission.py): under overload the excess is refused with UNAVAILABLE
before any decoding, so that what is accepted is served within the latency objective.
"""

from __future__ import annotations

import os
import time

import numpy as np

from mmtriton import spec
from mmtriton.preprocess.errors import InvalidInput
from mmtriton.preprocess.pipeline import element_bytes
from mmtriton.server.drain import DRAIN_FILE_ENV, draining

from . import tracing
from .admission import (
    BOUND_METRIC,
    IN_FLIGHT_METRIC,
    REFUSAL,
    REFUSED_METRIC,
    Admission,
    AdmissionSettings,
    instance_slot,
    open_ledger,
)
from .triton_io import (
    error_response,
    model_parameters,
    optional_input,
    output_dtypes,
    pb_utils,
    tensor_response,
    unavailable_response,
)


def request_samples(
    raw: dict[str, np.ndarray | None],
) -> tuple[list[bytes | None], list[bytes | None], list[bytes | None]]:
    """Per-sample bytes (None where absent) from a request's raw BYTES tensors.

    All given inputs must share the batch size and carry one element per sample ([N, 1]).
    """
    given = {m: a for m, a in raw.items() if a is not None}
    if not given:
        raise InvalidInput("request", "no_input", "the request carries no IMAGE, TEXT or AUDIO")
    sizes = {m: a.shape[0] for m, a in given.items()}
    if len(set(sizes.values())) != 1:
        raise InvalidInput("request", "bad_tensor", f"inputs have different batch sizes: {sizes}")
    n = next(iter(sizes.values()))
    columns = {}
    for m in spec.MODALITIES:
        array = given.get(m)
        if array is None:
            columns[m] = [None] * n
            continue
        if array.ndim != 2 or array.shape[1] != 1:
            raise InvalidInput(
                m,
                "bad_tensor",
                f"{spec.RAW_INPUTS[m].name} must have shape [batch, 1], got {list(array.shape)}",
            )
        columns[m] = [element_bytes(m, x) for x in array[:, 0]]
    return columns["image"], columns["text"], columns["audio"]


class PreprocessModel:
    """Triton Python-backend model: raw request tensors in, encoder tensors out."""

    def initialize(self, args: dict) -> None:
        from mmtriton.observability.metrics import ModelMetrics
        from mmtriton.preprocess.pipeline import Preprocessor

        config, params, version_dir = model_parameters(args)
        self.dtypes = output_dtypes(config)
        self.preprocessor = Preprocessor(
            tokenizer_path=version_dir / params["tokenizer_file"],
            vad_model=version_dir / params["vad_file"],
        )
        self.metrics = ModelMetrics(config["name"], pb_utils().MetricFamily, inputs=True)
        self.drain_file = os.environ.get(DRAIN_FILE_ENV)
        self.tracer = tracing.StepTracer(config["name"])
        self.admission = self._admission(params, args.get("model_instance_name", ""))

    def _admission(self, params: dict[str, str], instance: str) -> Admission | None:
        """Admission against this server's ledger, when the config asks for it."""
        settings = AdmissionSettings.from_parameters(params)
        if settings is None:
            return None
        pb = pb_utils()
        # Keep the families referenced on the model: Triton drops a collected one's series.
        self._admission_families = [
            pb.MetricFamily(
                name=REFUSED_METRIC,
                description="Requests preprocess refused (UNAVAILABLE) because the pipeline "
                "held its bound of samples in flight",
                kind=pb.MetricFamily.COUNTER,
            ),
            pb.MetricFamily(
                name=IN_FLIGHT_METRIC,
                description="Samples in the pipeline at the last admission decision",
                kind=pb.MetricFamily.GAUGE,
            ),
            pb.MetricFamily(
                name=BOUND_METRIC,
                description="The admission bound (samples) at the last decision",
                kind=pb.MetricFamily.GAUGE,
            ),
        ]
        labels = {"model": spec.PREPROCESS.name}
        self._refused, self._flight_gauge, self._bound_gauge = (
            f.Metric(labels=labels) for f in self._admission_families
        )
        return Admission(open_ledger(), instance_slot(instance), settings)

    def execute(self, requests):
        if draining(self.drain_file):  # shutting down: admit nothing new (see server/drain.py)
            message = "server is shutting down; retry"
            for request in requests:
                with self.tracer.span("admit", self.tracer.context(request)) as span:
                    self.tracer.refuse(span, "draining", message)
            return [unavailable_response(message) for _ in requests]
        start = time.perf_counter()
        raws = [
            {m: optional_input(r, t.name) for m, t in spec.RAW_INPUTS.items()} for r in requests
        ]
        # Every row received counts toward the batch size, rejected ones included.
        rows = [max((len(a) for a in raw.values() if a is not None), default=0) for raw in raws]
        batch = sum(rows)
        admitted, refusal = self._admit(rows)
        # The refused get their answer at once, before any decoding (the response sender, one
        # final response per request); the admitted are decoded together, in one call, so the
        # VAD's model runs once per window position for the whole batch (about half the CPU of
        # decoding request by request), and then answered in order.
        pb = pb_utils()
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        senders = [r.get_response_sender() for r in requests]
        try:
            for request, sender, admit in zip(requests, senders, admitted, strict=True):
                if not admit:
                    with self.tracer.span("admit", self.tracer.context(request)) as span:
                        self.tracer.refuse(span, "overloaded", refusal)
                    sender.send(unavailable_response(refusal), flags=final)
            chosen = [k for k, admit in enumerate(admitted) if admit]
            outcomes = self._preprocess_all(
                [raws[k] for k in chosen],
                [self.tracer.context(requests[k]) for k in chosen],
                [{tracing.BATCH_SIZE: rows[k], tracing.STEP_BATCH_SIZE: batch} for k in chosen],
            )
            decoding = sum(rows[k] for k in chosen)
            for k, outcome in zip(chosen, outcomes, strict=True):
                decoding -= rows[k]
                senders[k].send(self._respond(outcome, rows[k], decoding), flags=final)
        finally:
            if self.admission is not None:
                self.admission.done()
        self.metrics.observe_execute(batch, time.perf_counter() - start)
        return None

    def _admit(self, rows: list[int]) -> tuple[list[bool], str]:
        """Which requests of the batch enter the pipeline, and the refusal for the others."""
        if self.admission is None:
            return [True] * len(rows), ""
        decision = self.admission.choose(rows)
        self._flight_gauge.set(decision.flight)
        self._bound_gauge.set(decision.bound)
        refused = decision.admitted.count(False)
        if refused:
            self._refused.increment(refused)
        return decision.admitted, REFUSAL.format(bound=decision.bound)

    def _respond(self, outcome: dict | Exception, n: int, decoding: int):
        """One admitted request's response: its encoder tensors, or the error naming why not.
        `decoding`: admitted samples of this batch not yet answered after this one."""
        if isinstance(outcome, InvalidInput):
            self.metrics.count_failure(outcome.reason)
            return error_response(str(outcome))
        if isinstance(outcome, Exception):  # a decoder bug must not take the model down
            self.metrics.count_failure("internal")
            return error_response(f"preprocessing failed: {outcome}", False)
        tensors = outcome
        present = tensors[spec.PRESENT.name]
        spec.fill_placeholders(tensors, present)
        stamp = time.time()
        tensors[spec.PIPELINE_START.name] = np.full((n, 1), stamp, np.float64)
        self.metrics.count_modalities(present)
        if self.admission is not None:
            self.admission.admitted(stamp, n, decoding)
        return tensor_response(tensors, self.dtypes)

    def _preprocess_all(
        self, raws: list[dict], parents: list, sizes: list[dict]
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Each request's encoder tensors, or the exception that refuses it (it fails alone).

        Validation runs per request; the valid ones are decoded in one call. A traced request
        gets a `validate` span and a `decode` span (the shared call, so traced requests of one
        batch show the same decode interval).
        """
        outcomes: list[dict[str, np.ndarray] | Exception | None] = []
        columns = []
        for raw, parent, size in zip(raws, parents, sizes, strict=True):
            given = "+".join(m for m in spec.MODALITIES if raw[m] is not None)
            with self.tracer.span("validate", parent, {tracing.MODALITIES: given, **size}) as span:
                try:
                    columns.append(request_samples(raw))
                    outcomes.append(None)
                except Exception as exc:
                    self._refuse(span, exc)
                    outcomes.append(exc)
        valid = [k for k, outcome in enumerate(outcomes) if outcome is None]
        spans = [self.tracer.start("decode", parents[k], dict(sizes[k])) for k in valid]
        try:
            decoded = self.preprocessor.preprocess_requests(columns)
        except Exception as exc:  # not one request's fault: every valid request fails alike
            decoded = [exc] * len(valid)
        for k, span, result in zip(valid, spans, decoded, strict=True):
            outcomes[k] = result
            if span is None:
                continue
            if isinstance(result, Exception):
                self._refuse(span, result)
            else:
                present = result[spec.PRESENT.name]
                span.set_attribute(tracing.MODALITIES, tracing.modalities_attribute(present))
        self.tracer.end(spans)
        return outcomes

    def _refuse(self, span, exc: Exception) -> None:
        if isinstance(exc, InvalidInput):
            self.tracer.refuse(span, exc.reason, str(exc), exc.modality)
        else:
            self.tracer.refuse(span, "internal", f"preprocessing failed: {exc}")

    def finalize(self) -> None:
        self.tracer.shutdown()
        self.preprocessor = None
        if self.admission is not None:
            self.admission.ledger.close()
            # The server is stopping (or the model unloading): a new start gets a new ledger.
            self.admission.ledger.path.unlink(missing_ok=True)
