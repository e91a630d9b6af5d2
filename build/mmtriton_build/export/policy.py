"""Batching, queueing and instance policy per model: the knobs the benchmark tunes.

Both profiles use the same batch sizes, so a TensorRT optimization profile (min 1, opt =
preferred batch, max = max_batch_size) always covers what the dynamic batcher sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmtriton import spec
from mmtriton.backend.admission import AdmissionSettings
from mmtriton.observability.metrics import PIPELINE_P99_OBJECTIVE_SECONDS


@dataclass(frozen=True)
class BatchPolicy:
    """Dynamic batching and queue policy of one model."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    cpu_instances: int
    gpu_instances: int = 1
    # Overload protection, first step only (None elsewhere): beyond `max_queue_size` queued
    # requests Triton rejects at once, and a request that waited `queue_timeout_us` is rejected
    # instead of served late. A step after the fan-out must never reject: Triton 2.51 then
    # keeps the ensemble request in flight for good (measured: unanswered calls, a shutdown
    # that hangs and exits 1, once a segfault).
    max_queue_size: int | None = None
    queue_timeout_us: int | None = None
    # ONNX Runtime intra-op threads per CPU instance.
    ort_threads: int = 1

    @property
    def opt_batch(self) -> int:
        """The batch TensorRT optimises for: the largest preferred size."""
        return max(self.preferred_batch_sizes)


# Checked by `mmtriton bench --sweep` on 2 cores (docs/performance.md, "Tuning sweep").
POLICIES: dict[str, BatchPolicy] = {
    # Decoding is pure Python/numpy: two instances use both cores while an encoder runs
    # (1 instance measured 0.84-0.91x; 3 instances within noise).
    # Overload is refused up front: admission (ADMISSION below) bounds the samples inside the
    # pipeline; Triton's queue in front of preprocess stays short (16: beyond, Triton refuses
    # at once, the fastest refusal there is; 32 measured refusal p50 84-106 ms against 18-29
    # ms under the same overload), and a request that waited the whole latency objective
    # there (0.5 s) is refused rather than served late.
    "preprocess": BatchPolicy(
        32, (8, 16), 1_000, cpu_instances=2, max_queue_size=16, queue_timeout_us=500_000
    ),
    # One ORT thread per encoder: with five models sharing 2 cores, a second intra-op thread
    # only competes with the other steps (image 2 threads: 0.75x, text 2 threads: 0.66-0.83x).
    # Batches amortise the per-call overhead; preferred sizes and queue delay were within noise.
    "image_encoder": BatchPolicy(32, (16, 32), 2_000, cpu_instances=1, ort_threads=1),
    "text_encoder": BatchPolicy(32, (16, 32), 2_000, cpu_instances=1, ort_threads=1),
    "audio_encoder": BatchPolicy(32, (16, 32), 2_000, cpu_instances=1, ort_threads=1),
    "fusion": BatchPolicy(64, (16, 32), 500, cpu_instances=1),
}
# The ensemble's own batch limit: what one client request may carry.
ENSEMBLE_MAX_BATCH = spec.MAX_REQUEST_BATCH


# --- Admission at the first step (mmtriton/backend/admission.py) ---------------------------
# What the whole pipeline finishes on the 2-core CPU profile, in samples per second, when it
# has both cores: served all-three peak 114.6 req/s at c=16, the in-process limit ~140 req/s
# (docs/performance.md). The bound is sized from it; at run time it follows the measured pace.
# The GPU profile reads the same preprocess config (the first step runs on CPU there too): its
# pace moves the bound the same way, up to max_in_flight, which a node whose CPUs finish more
# than this should raise (capacity measured there x the budget).
CPU_CAPACITY_SAMPLES_PER_S = 140.0
# Of the p99 objective (0.5 s, the one `mmtriton top` shows), the share a new sample may expect
# to wait inside the pipeline: by Little's law that wait is (samples in flight) / (samples
# finished per second). Half leaves the other half for the tail (batching in five steps,
# decoding, the queue in front of preprocess, gRPC). Measured on 2 quiet cores (`mmtriton
# reliability --only overload`, 300 req/s of all three): a share of 0.35 held the accepted p99 at
# 165 ms but refused a closed loop of 16 callers (p99 285 ms, well inside the objective); 0.6
# holds it at 270-280 ms, refusals in 2 ms, and admits 16 callers. On loaded cores (six agents
# on the same 2) 0.35 gave 0.52-1.9 s and 0.5 gave 0.76-1.16 s: the tail there is the cores,
# not the queue. A closed loop of callers is refused only once its own latency passes the
# budget (callers / pace > budget), never up to min_in_flight callers.
ADMISSION_WAIT_SHARE = 0.6


def admission_settings(
    capacity_samples_per_s: float = CPU_CAPACITY_SAMPLES_PER_S,
    objective_s: float = PIPELINE_P99_OBJECTIVE_SECONDS,
) -> AdmissionSettings:
    """The admission bound, derived from the pipeline's capacity and the latency objective.

    - wait budget: ADMISSION_WAIT_SHARE of the objective;
    - max in flight: what the budget allows at full capacity (capacity x budget): a machine
      faster than where this was measured still never holds more;
    - min in flight: one preferred preprocess batch (8), admitted even while the measured pace
      is low (light traffic, a cold start): so few samples batch well and wait far less than
      the objective on any core that serves at all, and a closed loop of up to 8 callers is
      never refused;
    - max age: entries older than 10 x the objective count no more (a request lost in a step
      must not shrink the bound for good; a real one is long answered by then);
    - stall: nothing finished for a second while a sample waited 4 x the objective means a
      hung step, not overload: preprocess then admits, so that the supervisor's probe (which
      takes a refusal for an answer) meets the hang and heals it.
    """
    budget = objective_s * ADMISSION_WAIT_SHARE
    floor = min(POLICIES["preprocess"].preferred_batch_sizes)
    return AdmissionSettings(
        wait_budget_s=budget,
        min_in_flight=floor,
        max_in_flight=max(floor, round(capacity_samples_per_s * budget)),
        max_age_s=10 * objective_s,
        stall_after_s=4 * objective_s,
    )


ADMISSION = admission_settings()
