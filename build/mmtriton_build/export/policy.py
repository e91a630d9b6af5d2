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
    # Overload protection: beyond this many queued requests Triton rejects at once.
    max_queue_size: int = 256
    # A request that waited this long in the queue is rejected instead of served late.
    queue_timeout_us: int = 5_000_000
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
    "preprocess": BatchPolicy(32, (8, 16), 1_000, cpu_instances=2),
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
