"""The true limit's inputs: what each stage of the pipeline costs, in CPU time per sample.

Each stage runs here, in one process on one thread (ONNX Runtime intra-op 1, BLAS/OpenMP 1,
tokenizers without their thread pool), and is timed with the process's CPU clock
(``time.process_time``), at each stage's best batch size:

- ``preprocess.<modality>``: ``Preprocessor.preprocess_batch`` (mmtriton.preprocess, what the
  served first step calls) on batches carrying that modality alone: image decode and
  normalisation, text cleaning and tokenisation, audio decode, resampling, VAD and log-mel;
- ``encoder.<modality>``: the encoder's ``model.onnx`` in an ONNX Runtime session made by the
  backend's own ``make_session``, on tensors preprocessed from the same samples;
- ``fusion``: the backend's numpy fusion on those embeddings.

CPU time, unlike wall time, is what a stage takes from the machine whatever else runs beside
it, so the sum over a workload's stages gives a bound the served pipeline can only approach
(limits.py). Run as ``python -m mmtriton_harness.bench.stages`` it prints the same figures as
JSON (the bench runs it in a child process with ``ONE_THREAD_ENV``, away from its gRPC
client's threads); ``... stages preprocess`` prints ``preprocess_cpu_ms`` alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmtriton import layout, spec
from mmtriton_client.client import Sample

from .workload import PREPROCESS_VARIANT, columns, rerecord, restrict

# Everything that could start a second thread in this process, held to one.
ONE_THREAD_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

PREPROCESS = tuple(f"preprocess.{m}" for m in spec.MODALITIES)
ENCODER = tuple(f"encoder.{m}" for m in spec.MODALITIES)
FUSION = "fusion"
STAGES: tuple[str, ...] = (*PREPROCESS, *ENCODER, FUSION)

# Batch sizes tried per stage. Preprocessing works sample by sample (only tokenisation is
# batched), so two sizes tell; the encoders and fusion are matrix work that batching helps.
DEFAULT_BATCHES: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(PREPROCESS, (1, 16)),
    **dict.fromkeys(ENCODER, (1, 8, 16, 32)),
    FUSION: (1, 16, 32),
}
PREPROCESS_BATCH = 16  # the batch `preprocess_cpu_ms` is quoted at (issue 16)


@dataclass(frozen=True)
class StageCost:
    """One stage: CPU ms per sample at its best batch, and what each batch size tried gave."""

    stage: str
    batch: int
    cpu_ms: float
    tried: dict[int, float]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Hold numpy's BLAS/OpenMP pools and the tokenizers to one thread while inside."""
    from threadpoolctl import threadpool_limits

    saved = {k: os.environ.get(k) for k in ONE_THREAD_ENV}
    os.environ.update(ONE_THREAD_ENV)  # tokenizers reads its variable at each batch call
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cpu_ms_per_sample(
    call: Callable[[], object], batch: int, min_cpu_s: float, min_calls: int = 2
) -> float:
    """Process CPU milliseconds per sample of `call` (which handles `batch` samples), after one
    warm-up call, over at least `min_calls` calls and `min_cpu_s` CPU seconds."""
    call()
    calls, start = 0, time.process_time()
    while calls < min_calls or time.process_time() - start < min_cpu_s:
        call()
        calls += 1
    return 1000 * (time.process_time() - start) / (calls * batch)


def _cycle(samples: Sequence[Sample], batch: int, offset: int = 0) -> list[Sample]:
    return [samples[(offset + k) % len(samples)] for k in range(batch)]


class StageRunner:
    """The served computation's parts, loaded once, each callable on a batch of samples."""

    def __init__(self, repo: Path, samples: Sequence[Sample]) -> None:
        from mmtriton.backend import onnx_encoder
        from mmtriton.backend.fusion import NumpyFusion
        from mmtriton.backend.onnx_encoder import make_session
        from mmtriton.preprocess.pipeline import Preprocessor

        if not samples:
            raise ValueError("no samples to measure the stages on")
        pre = layout.version_dir(repo, spec.PREPROCESS.name)
        # A core of an older commit (core_at.py) may name another VAD file than this repository
        # carries; it then gets None, its own default (the model that commit exported).
        vad = pre / layout.VAD_FILE
        self.preprocessor = Preprocessor(pre / layout.TOKENIZER_FILE, vad if vad.exists() else None)
        self.sessions = {
            m: make_session(str(layout.onnx_path(repo, model.name)), 1)
            for m, model in spec.ENCODERS.items()
        }
        self.fusion = NumpyFusion(
            layout.version_dir(repo, spec.FUSION.name) / layout.FUSION_WEIGHTS
        )
        # A core of an older commit (core_at.py) may not trim; it then runs the whole padding.
        self.trim_padding = getattr(onnx_encoder, "trim_padding", None)
        self.samples = list(samples)
        self._tensors: dict[int, dict[str, np.ndarray]] = {}
        self._embeddings: dict[int, dict[str, np.ndarray]] = {}

    def preprocess(self, batch: list[Sample]) -> dict[str, np.ndarray]:
        """The first step on a batch of samples."""
        return self.preprocessor.preprocess_batch(*columns(batch))

    def tensors(self, batch: int) -> dict[str, np.ndarray]:
        """The first `batch` samples preprocessed (cached: the encoders' inputs)."""
        if batch not in self._tensors:
            self._tensors[batch] = self.preprocess(_cycle(self.samples, batch))
        return self._tensors[batch]

    def encode(self, modality: str, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """One encoder's ONNX Runtime session on its inputs, their padding trimmed as the
        served encoder trims it (so the limit counts the work the server does)."""
        model = spec.ENCODERS[modality]
        feed = {t.name: tensors[t.name] for t in model.inputs}
        if self.trim_padding is not None:
            feed = self.trim_padding(model, feed)
        return self.sessions[modality].run(None, feed)[0]

    def embeddings(self, batch: int) -> dict[str, np.ndarray]:
        """The three embeddings of the first `batch` samples (cached: fusion's inputs)."""
        if batch not in self._embeddings:
            t = self.tensors(batch)
            self._embeddings[batch] = {m: self.encode(m, t) for m in spec.MODALITIES}
        return self._embeddings[batch]

    def call(self, stage: str, batch: int) -> Callable[[], object]:
        """A zero-argument call that runs `stage` on `batch` samples."""
        kind, _, modality = stage.partition(".")
        if kind == "preprocess":
            # Successive calls take successive samples, so the workload's variety is covered.
            only = [restrict(s, (modality,)) for s in self.samples]
            state = {"offset": 0}

            def run_preprocess() -> object:
                state["offset"] += batch
                return self.preprocess(_cycle(only, batch, state["offset"]))

            return run_preprocess
        if kind == "encoder":
            t = self.tensors(batch)
            return lambda: self.encode(modality, t)
        if stage == FUSION:
            e, present = self.embeddings(batch), self.tensors(batch)[spec.PRESENT.name]
            return lambda: self.fusion(e, present)
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def measure_stages(
    repo: Path,
    samples: Sequence[Sample],
    batches: Mapping[str, Sequence[int]] | None = None,
    min_cpu_s: float = 0.2,
    runner: StageRunner | None = None,
) -> dict[str, StageCost]:
    """Every stage's CPU ms per sample at the best of its batch sizes (default
    ``DEFAULT_BATCHES``; pass one size per stage to re-measure at a known best)."""
    runner = runner or StageRunner(repo, samples)
    batches = {**DEFAULT_BATCHES, **(batches or {})}
    out = {}
    with one_thread():
        for stage in STAGES:
            tried = {
                b: round(cpu_ms_per_sample(runner.call(stage, b), b, min_cpu_s), 4)
                for b in batches[stage]
            }
            best = min(tried, key=lambda b: tried[b])
            out[stage] = StageCost(stage, best, tried[best], tried)
    return out


def preprocess_workload(samples: Sequence[Sample], n: int = PREPROCESS_BATCH) -> list[Sample]:
    """`n` all-three samples whose clips are re-recorded as ``PREPROCESS_VARIANT``
    (22.05 kHz stereo, 1.7 s with padding), the request `preprocess_cpu_ms` is quoted for."""
    full = [s for s in samples if s.image and s.text and s.audio][:n]
    if not full:
        raise ValueError("no sample carries image, text and audio")
    return [
        Sample(image=s.image, text=s.text, audio=rerecord(s.audio, PREPROCESS_VARIANT, seed=i))
        for i, s in enumerate(full)
    ]


def preprocess_cpu_ms(
    repo: Path,
    samples: Sequence[Sample],
    batch: int = PREPROCESS_BATCH,
    min_cpu_s: float = 1.0,
    runner: StageRunner | None = None,
) -> float:
    """CPU ms per all-three request of the preprocess step alone: in this process, one thread,
    batches of `batch` samples whose clips are 22.05 kHz stereo 1.7 s (``preprocess_workload``
    of `samples`). The figure issue 16 asks to halve; docs/performance.md has before/after."""
    work = preprocess_workload(samples, batch)
    runner = runner or StageRunner(repo, work)
    chunk = _cycle(work, batch)
    with one_thread():
        return cpu_ms_per_sample(lambda: runner.preprocess(chunk), batch, min_cpu_s)


def costs_as_json(costs: Mapping[str, StageCost]) -> dict[str, dict]:
    """{stage: {batch, cpu_ms, tried}} (JSON keys are strings)."""
    return {
        k: {**asdict(c), "tried": {str(b): ms for b, ms in c.tried.items()}}
        for k, c in costs.items()
    }


def costs_from_json(doc: Mapping[str, Mapping]) -> dict[str, StageCost]:
    """The inverse of ``costs_as_json``."""
    return {
        k: StageCost(
            k, int(v["batch"]), float(v["cpu_ms"]), {int(b): ms for b, ms in v["tried"].items()}
        )
        for k, v in doc.items()
    }


def measure_in_child(
    repo: Path,
    root: Path,
    batches: Mapping[str, Sequence[int]] | None,
    min_cpu_s: float,
    preprocess_min_cpu_s: float,
    timeout_s: float = 600,
    what: str = "stages",
    core: Path | None = None,
) -> dict:
    """``measure_stages`` and ``preprocess_cpu_ms`` (`what` "stages"; "preprocess": that one
    alone) in a fresh child process with ``ONE_THREAD_ENV`` set before anything loads, so no
    thread of this process (the gRPC client's) lands on its CPU clock. With `core`, the child
    imports ``mmtriton`` from that folder (core_at.py: another commit's code). Returns the
    child's JSON document."""
    import subprocess

    entry = ["-m", "mmtriton_harness.bench.stages"]
    if core is not None:
        entry = ["-m", "mmtriton_harness.bench.core_at", str(core)]
    cmd = [
        sys.executable, *entry, what,
        "--repository", str(repo), "--artifacts", str(root),
        "--min-cpu-s", str(min_cpu_s), "--preprocess-min-cpu-s", str(preprocess_min_cpu_s),
    ]  # fmt: skip
    if batches:
        cmd += ["--batches", json.dumps({k: list(v) for k, v in batches.items()})]
    proc = subprocess.run(
        cmd,
        env={**os.environ, **ONE_THREAD_ENV},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage measurement failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    """``python -m mmtriton_harness.bench.stages [stages|preprocess]``: the figures as JSON."""
    from mmtriton.paths import artifacts_dir, model_repository_dir

    from .workload import full_samples

    parser = argparse.ArgumentParser(prog="python -m mmtriton_harness.bench.stages")
    parser.add_argument("what", nargs="?", choices=("stages", "preprocess"), default="stages")
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--min-cpu-s", type=float, default=0.2)
    parser.add_argument("--preprocess-min-cpu-s", type=float, default=2.0)
    parser.add_argument("--batches", default=None, help='JSON: {"encoder.text": [16], ...}')
    args = parser.parse_args(argv)
    os.environ.update(ONE_THREAD_ENV)
    repo = args.repository or model_repository_dir()
    root = args.artifacts or artifacts_dir()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        if args.what == "preprocess":  # its own clips only: preprocess_workload re-records
            samples = full_samples(root, PREPROCESS_BATCH, varied_audio=False)
        else:
            samples = full_samples(root)
        doc: dict = {
            "preprocess_cpu_ms": round(
                preprocess_cpu_ms(repo, samples, min_cpu_s=args.preprocess_min_cpu_s), 3
            ),
            "preprocess_clip": PREPROCESS_VARIANT.name,
            "preprocess_batch": PREPROCESS_BATCH,
            "core": str(Path(sys.modules["mmtriton"].__file__).parent),
        }
        if args.what == "stages":
            batches = json.loads(args.batches) if args.batches else None
            costs = measure_stages(repo, samples, batches, args.min_cpu_s)
            doc["stages"] = costs_as_json(costs)
    doc["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
