"""The naive baseline, without a server: what a simple web app would do, one request at a
time through PyTorch eager encoders and the torch fusion model, no batching, default torch
threads. (The true limit is measured stage by stage in stages.py.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mmtriton import layout, spec
from mmtriton_client.client import Sample

from .stats import latency_summary
from .workload import columns


def _preprocessor(repo: Path):
    from mmtriton.preprocess.pipeline import Preprocessor

    pre = layout.version_dir(repo, spec.PREPROCESS.name)
    return Preprocessor(pre / layout.TOKENIZER_FILE, pre / layout.VAD_FILE)


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
    start, cpu_start = time.perf_counter(), time.process_time()
    i = 0
    while time.perf_counter() - start < duration_s:
        t0 = time.perf_counter()
        pipeline(samples[i % len(samples)])
        latencies.append(time.perf_counter() - t0)
        i += 1
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    return {
        "rps": round(len(latencies) / elapsed, 2),
        "requests": len(latencies),
        # What it costs whatever else runs beside it (torch's threads spin-wait when the
        # machine is busy, which throughput alone hides).
        "cpu_ms_per_request": round(1000 * cpu_s / max(len(latencies), 1), 2),
        "torch_threads": pipeline.torch.get_num_threads(),
        **latency_summary(latencies),
    }
