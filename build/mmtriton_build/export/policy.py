"""Batching, queueing and instance policy per model: the knobs the benchmark tunes.

Both profiles use the same batch sizes, so a TensorRT optimization profile (min 1, opt =
preferred batch, max = max_batch_size) always covers what the dynamic batcher sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmtriton import spec


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
    # Its queue of 64 is about 1 s of work on 2 cores: overload is refused fast, up front.
    "preprocess": BatchPolicy(
        32, (8, 16), 1_000, cpu_instances=2, max_queue_size=64, queue_timeout_us=5_000_000
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
