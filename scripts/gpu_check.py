#!/usr/bin/env python3
"""GPU node check: build TensorRT engines, check FP16 parity, time every runtime.

Run on a machine with an NVIDIA GPU, TensorRT's Python module and a built/exported model
(`make repository`):

    .venv/bin/python scripts/gpu_check.py [--samples 2000] [--json reports/gpu_check.json]

It builds each encoder's engine (FP16, profiles from export/policy.py) into artifacts/engines,
runs the test set through TensorRT and ONNX Runtime, requires top-1 agreement >= 99.9 % for the
full pipeline (engines + numpy fusion vs ONNX Runtime + numpy fusion), and prints a latency
table for TensorRT FP16, ONNX Runtime (CPU) and PyTorch (CUDA) per encoder, each timed from
numpy in to numpy out (host-device copies included for both GPU runtimes), and what absent
modalities' placeholder rows cost a TensorRT batch (export/gpu_timing.py).
Not run in CI: CI has no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AGREEMENT_TARGET = 0.999
# Placeholder cost: this many real rows, alone and padded with placeholders to the batch.
PLACEHOLDER_REAL_ROWS = (1, 8)
PLACEHOLDER_BATCH = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "gpu_check.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    import pickle

    try:
        import tensorrt as trt
    except ImportError:
        print(
            "error: TensorRT's Python module is not installed here; run this on a GPU node "
            "with the serving image (or `pip install tensorrt` matching its TensorRT)",
            file=sys.stderr,
        )
        return 2
    import torch

    from mmtriton import layout, spec
    from mmtriton.backend.fusion import NumpyFusion
    from mmtriton.backend.onnx_encoder import make_session
    from mmtriton.paths import artifacts_dir, model_repository_dir
    from mmtriton_build.artifacts import BuildPaths
    from mmtriton_build.config import load_config
    from mmtriton_build.export.gpu import detect_gpu
    from mmtriton_build.export.gpu_timing import placeholder_cost, timeit
    from mmtriton_build.export.tensorrt import build_engines, trtexec_on_path
    from mmtriton_build.export.trt_runner import TrtRunner, batched, encoder_inputs
    from mmtriton_build.loaders import load_encoders, make_extractor

    if not torch.cuda.is_available():
        print("error: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    gpu = detect_gpu()
    root, repo = artifacts_dir(), model_repository_dir()
    paths = BuildPaths(root)
    config = load_config()
    print(
        f"GPU {torch.cuda.get_device_name()} (sm {gpu.compute_capability}, MIG {gpu.mig_profile})"
    )

    start = time.perf_counter()
    # The plans are run below by this tensorrt module: it is the "server" they must match.
    env = {**os.environ, "TRT_VERSION": trt.__version__}
    links = build_engines(repo, root / "engines", trtexec=trtexec_on_path(), env=env)
    build_s = {m: time.perf_counter() - start for m in spec.ENCODERS}  # all engines together
    plans = {
        m: next(p.resolve() for p in links if p.parent.parent.name == model.name)
        for m, model in spec.ENCODERS.items()
    }
    for m, plan in plans.items():
        print(f"{spec.ENCODERS[m].name}: engine {plan.name}")

    modules = load_encoders(config, paths)
    with paths.splits.open("rb") as f:
        samples = pickle.load(f)["test"][: args.samples]
    extractor = make_extractor(paths, modules)
    feeds = encoder_inputs(samples, extractor)
    trt_runners = {m: TrtRunner(p) for m, p in plans.items()}
    ort = {
        m: make_session(str(layout.onnx_path(repo, spec.ENCODERS[m].name)), 4)
        for m in spec.ENCODERS
    }

    emb_trt, emb_ort = {}, {}
    for m in spec.ENCODERS:
        out = spec.ENCODERS[m].outputs[0].name
        emb_trt[m] = np.concatenate([trt_runners[m](b)[out] for b in batched(feeds[m], 32)])
        emb_ort[m] = np.concatenate([ort[m].run([out], b)[0] for b in batched(feeds[m], 32)])
    present = np.array([[1.0, float(bool(s.text)), 1.0] for s in samples], np.float32)
    fusion = NumpyFusion(paths.fusion(config.fusion.mode))
    top_trt = fusion(emb_trt, present)[0].argmax(1)
    top_ort = fusion(emb_ort, present)[0].argmax(1)
    agreement = float((top_trt == top_ort).mean())
    labels = np.array([s.label for s in samples])

    rows = []
    for m, model in spec.ENCODERS.items():
        module = modules[m].cuda().eval()
        for batch in (1, 8, 32):
            feed = next(batched(feeds[m], batch))

            # Copies in and out, as TrtRunner makes them.
            def torch_fn(feed, module=module, model=model):
                with torch.inference_mode():
                    args = [torch.from_numpy(feed[t.name]).cuda() for t in model.inputs]
                    out = module(*args)
                    first = out[0] if isinstance(out, (tuple, list)) else out
                    first.cpu().numpy()

            rows.append(
                {
                    "encoder": model.name,
                    "batch": batch,
                    "tensorrt_fp16_ms": timeit(trt_runners[m], feed),
                    "onnxruntime_cpu_ms": timeit(lambda f, s=ort[m]: s.run(None, f), feed, 5),
                    "pytorch_cuda_ms": timeit(torch_fn, feed),
                    "max_abs_diff_fp16": float(np.abs(emb_trt[m] - emb_ort[m]).max()),
                }
            )
    print(
        f"\n{'encoder':<14} {'batch':>5} {'TRT fp16 ms':>12} {'ORT cpu ms':>11} "
        f"{'torch cuda ms':>14}"
    )
    for r in rows:
        print(
            f"{r['encoder']:<14} {r['batch']:>5} {r['tensorrt_fp16_ms']:12.2f} "
            f"{r['onnxruntime_cpu_ms']:11.2f} {r['pytorch_cuda_ms']:14.2f}"
        )
    placeholders = [
        placeholder_cost(trt_runners[m], model, next(batched(feeds[m], real)), PLACEHOLDER_BATCH)
        for m, model in spec.ENCODERS.items()
        for real in PLACEHOLDER_REAL_ROWS
    ]
    print(f"\nplaceholder rows in a TensorRT batch of {PLACEHOLDER_BATCH} (absent modalities)")
    print(
        f"{'encoder':<14} {'real rows':>9} {'alone ms':>9} {'padded ms':>10} {'padded/alone':>12}"
    )
    for p in placeholders:
        print(
            f"{p['encoder']:<14} {p['real_rows']:>9} {p['real_only_ms']:9.3f} "
            f"{p['padded_ms']:10.3f} {p['padded_over_real']:12.2f}"
        )
    print(
        f"\npipeline top-1 agreement TensorRT fp16 vs ONNX Runtime: {100 * agreement:.2f} % "
        f"(target {100 * AGREEMENT_TARGET:.1f} %)"
    )
    print(
        f"accuracy: TensorRT {100 * (top_trt == labels).mean():.2f} %, "
        f"ONNX Runtime {100 * (top_ort == labels).mean():.2f} %"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "gpu": torch.cuda.get_device_name(),
                "compute_capability": gpu.compute_capability,
                "tensorrt": trt.__version__,
                "engine_build_s": build_s,
                "timings": rows,
                "placeholder_cost": placeholders,
                "top1_agreement": agreement,
                "samples": len(samples),
            },
            indent=2,
        )
    )
    return 0 if agreement >= AGREEMENT_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
