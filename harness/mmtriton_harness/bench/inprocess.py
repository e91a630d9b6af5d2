"""The two baselines that run without a server.

- limit: the served computation (same preprocessing, the same ONNX graphs under ONNX Runtime,
  the same numpy fusion) called directly in one process, batched: what the hardware allows.
- naive: what a simple web app would do: one request at a time through PyTorch eager encoders
  and the torch fusion model, no batching, default torch threads.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmtriton import layout, spec
from mmtriton_client.client import Sample

from .stats import latency_summary
from .workload import columns


def _preprocessor(repo: Path):
    from mmtriton.preprocess.pipeline import Preprocessor

    pre = repo / "preprocess" / "1"
    return Preprocessor(pre / "tokenizer.json", pre / "silero_vad.onnx")


class OnnxPipeline:
    """preprocess -> three ONNX Runtime encoders -> numpy fusion, in this process."""

    def __init__(self, repo: Path, ort_threads: int) -> None:
        from mmtriton.backend.fusion import NumpyFusion
        from mmtriton.backend.onnx_encoder import make_session

        self.preprocessor = _preprocessor(repo)
        self.sessions = {
            m: make_session(str(layout.onnx_path(repo, model.name)), ort_threads)
            for m, model in spec.ENCODERS.items()
        }
        self.fusion = NumpyFusion(
            layout.version_dir(repo, spec.FUSION.name) / layout.FUSION_WEIGHTS
        )

    def preprocess(self, samples: list[Sample]) -> dict[str, np.ndarray]:
        return self.preprocessor.preprocess_batch(*columns(samples))

    def infer(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        embeddings = {
            m: self.sessions[m].run(None, {t.name: tensors[t.name] for t in model.inputs})[0]
            for m, model in spec.ENCODERS.items()
        }
        probs, _weights = self.fusion(embeddings, tensors[spec.PRESENT.name])
        return probs

    def __call__(self, samples: list[Sample]) -> np.ndarray:
        return self.infer(self.preprocess(samples))


@dataclass(frozen=True)
class LimitTrial:
    """One in-process setting and its measured throughput."""

    batch: int
    ort_threads: int
    pipelined: bool
    rps: float

    @property
    def name(self) -> str:
        mode = "pipelined" if self.pipelined else "sequential"
        return f"batch {self.batch}, ORT threads {self.ort_threads}, {mode}"


def _batches(samples: list[Sample], batch: int):
    i = 0
    while True:
        yield [samples[(i + k) % len(samples)] for k in range(batch)]
        i += batch


def measure_limit(
    pipeline: OnnxPipeline, samples: list[Sample], batch: int, duration_s: float, pipelined: bool
) -> float:
    """Samples per second over `duration_s` (after one warm-up batch).

    Pipelined: one thread preprocesses the next batch while another runs the encoders and
    fusion (ONNX Runtime releases the GIL), the way Triton overlaps its steps.
    """
    batches = _batches(samples, batch)
    pipeline(next(batches))
    done = 0
    start = time.perf_counter()
    deadline = start + duration_s
    if not pipelined:
        while time.perf_counter() < deadline:
            pipeline(next(batches))
            done += batch
        return done / (time.perf_counter() - start)

    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                ready.put(pipeline.preprocess(next(batches)))
        finally:
            ready.put(None)  # also on error, so the consumer never waits forever

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while time.perf_counter() < deadline:
        tensors = ready.get()
        if tensors is None:
            raise RuntimeError("the preprocessing thread stopped")
        pipeline.infer(tensors)
        done += batch
    elapsed = time.perf_counter() - start
    stop.set()
    while ready.get() is not None:  # let the producer finish its last batch
        pass
    producer.join()
    return done / elapsed


def run_limit(
    repo: Path,
    samples: list[Sample],
    duration_s: float,
    batches: tuple[int, ...] = (8, 32),
    threads: tuple[int, ...] = (1, 2),
    pipelined: bool = True,
    log=print,
) -> list[LimitTrial]:
    """Try batch sizes and ORT thread counts (sequential), then the best batch pipelined."""
    trials = []
    for t in threads:
        pipeline = OnnxPipeline(repo, t)
        for b in batches:
            trial = LimitTrial(b, t, False, measure_limit(pipeline, samples, b, duration_s, False))
            log(f"  limit  {trial.name:<42} {trial.rps:7.1f} req/s")
            trials.append(trial)
    if not pipelined:
        return trials
    best = max(trials, key=lambda x: x.rps)
    # Pipelined, the second core preprocesses: one ORT thread is the natural pairing.
    for t in sorted({1, best.ort_threads}):
        pipeline = OnnxPipeline(repo, t)
        rps = measure_limit(pipeline, samples, best.batch, duration_s, True)
        trial = LimitTrial(best.batch, t, True, rps)
        log(f"  limit  {trial.name:<42} {trial.rps:7.1f} req/s")
        trials.append(trial)
    return trials


class TorchPipeline:
    """The naive app: PyTorch eager encoders and the torch fusion model, one sample per call."""

    def __init__(self, root: Path, repo: Path) -> None:
        import torch

        from mmtriton_build.artifacts import BuildPaths
        from mmtriton_build.config import DEFAULT_CONFIG, load_config
        from mmtriton_build.encoders import load_pretrained_encoders
        from mmtriton_build.fusion import load_fusion
        from mmtriton_build.loaders import load_audio_encoder

        config = load_config(DEFAULT_CONFIG)
        paths = BuildPaths(root)
        self.torch = torch
        self.preprocessor = _preprocessor(repo)
        self.encoders = load_pretrained_encoders(config.encoders)
        self.encoders["audio"] = load_audio_encoder(paths)
        self.fusion = load_fusion(paths.fusion(config.fusion.mode))

    def __call__(self, sample: Sample) -> np.ndarray:
        torch = self.torch
        t = {
            k: torch.from_numpy(v)
            for k, v in self.preprocessor.preprocess_batch(*columns([sample])).items()
        }
        with torch.inference_mode():
            image = self.encoders["image"](t[spec.IMAGE_PIXELS.name])
            text = self.encoders["text"](
                t[spec.TEXT_INPUT_IDS.name], t[spec.TEXT_ATTENTION_MASK.name]
            )
            audio = self.encoders["audio"](t[spec.AUDIO_MEL.name])
            logits, _weights = self.fusion(image, text, audio, t[spec.PRESENT.name])
            return torch.softmax(logits, dim=1).numpy()


def run_naive(pipeline: TorchPipeline, samples: list[Sample], duration_s: float) -> dict:
    """Requests per second and latency of one-at-a-time requests (after a few warm-up calls)."""
    for sample in samples[:5]:
        pipeline(sample)
    latencies = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < duration_s:
        t0 = time.perf_counter()
        pipeline(samples[i % len(samples)])
        latencies.append(time.perf_counter() - t0)
        i += 1
    elapsed = time.perf_counter() - start
    return {
        "rps": round(len(latencies) / elapsed, 2),
        "requests": len(latencies),
        "torch_threads": pipeline.torch.get_num_threads(),
        **latency_summary(latencies),
    }
