"""TensorRT engines for the GPU profile: profiles, trtexec command lines, cache, builder.

An engine only runs on the GPU generation (compute capability) and the TensorRT version that
built it, so engines are built on the serving node and cached under a key made of the ONNX
content hash, the compute capability and the TensorRT version. Triton's `cc_model_filenames`
then picks the plan for the GPU it finds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mmtriton import spec
from mmtriton.paths import model_repository_dir
from mmtriton.spec import ModelSpec

from .policy import POLICIES
from .repository import ONNX_FILE, PLAN_PATTERN


class TensorRTUnavailable(RuntimeError):
    """Raised when an engine is asked for on a machine without a GPU or TensorRT."""


@dataclass(frozen=True)
class ShapeProfile:
    """One input's optimization profile: shapes including the batch axis."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @staticmethod
    def _fmt(shape: tuple[int, ...]) -> str:
        return "x".join(str(d) for d in shape)


def optimization_profiles(model: ModelSpec) -> list[ShapeProfile]:
    """min batch 1, opt = preferred batch, max = max_batch_size; text sequence 1..max tokens."""
    policy = POLICIES[model.name]
    profiles = []
    for t in model.inputs:
        lo = tuple(1 if d == -1 else d for d in t.dims)
        opt = tuple(spec.TEXT_MAX_TOKENS if d == -1 else d for d in t.dims)
        hi = tuple(spec.TEXT_MAX_TOKENS if d == -1 else d for d in t.dims)
        profiles.append(
            ShapeProfile(t.name, (1, *lo), (policy.opt_batch, *opt), (policy.max_batch_size, *hi))
        )
    return profiles


def trtexec_command(
    onnx_path: Path,
    plan_path: Path,
    model: ModelSpec,
    *,
    fp16: bool = True,
    timing_cache: Path | None = None,
) -> list[str]:
    """The same build as `build_engine`, as a trtexec command line (NVIDIA's Triton image)."""
    profiles = optimization_profiles(model)

    def shapes(attr: str) -> str:
        return ",".join(f"{p.name}:{ShapeProfile._fmt(getattr(p, attr))}" for p in profiles)

    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        f"--minShapes={shapes('min')}",
        f"--optShapes={shapes('opt')}",
        f"--maxShapes={shapes('max')}",
        "--skipInference",
    ]
    if fp16:
        cmd.append("--fp16")
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    return cmd


def file_sha256(path: Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(
    onnx_sha256: str, compute_capability: str, trt_version: str, fp16: bool = True
) -> str:
    """The engine cache key: ONNX content + GPU generation + TensorRT version + precision."""
    cc = compute_capability.replace(".", "")
    precision = "fp16" if fp16 else "fp32"
    return f"{onnx_sha256[:16]}-sm{cc}-trt{trt_version}-{precision}"


def plan_filename(compute_capability: str) -> str:
    """The plan's file name in the repository, as the GPU configs' cc_model_filenames say."""
    return PLAN_PATTERN.format(cc=compute_capability.replace(".", ""))


@dataclass(frozen=True)
class GpuInfo:
    """The local GPU's compute capability and the TensorRT version that would build for it."""

    compute_capability: str
    trt_version: str


def detect_gpu() -> GpuInfo:
    """Compute capability (nvidia-smi) and TensorRT version (Python module or trtexec)."""
    if shutil.which("nvidia-smi") is None:
        raise TensorRTUnavailable("no NVIDIA GPU here: nvidia-smi is not on PATH")
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise TensorRTUnavailable(f"nvidia-smi found no GPU: {out.stderr.strip()}")
    cc = out.stdout.strip().splitlines()[0].strip()
    try:
        import tensorrt

        version = tensorrt.__version__
    except ImportError:
        if shutil.which("trtexec") is None:
            raise TensorRTUnavailable(
                "TensorRT is not installed: neither the `tensorrt` Python module nor `trtexec` "
                "was found. Use NVIDIA's Triton image, which ships trtexec."
            ) from None
        version = _trtexec_version()
    return GpuInfo(cc, version)


def _trtexec_version() -> str:
    out = subprocess.run(["trtexec", "--help"], capture_output=True, text=True, check=False)
    for line in (out.stdout + out.stderr).splitlines():
        if "TensorRT version" in line or "[TensorRT v" in line:
            digits = "".join(c if c.isdigit() or c == "." else " " for c in line).split()
            if digits:
                return digits[-1]
    return "unknown"


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    model: ModelSpec,
    *,
    fp16: bool = True,
    timing_cache: Path | None = None,
    workspace_gib: int = 4,
) -> Path:
    """Build a serialized engine with the TensorRT Python API."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable("the `tensorrt` Python module is not installed") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise RuntimeError("fp16 requested but this GPU has no fast FP16; pass fp16=False")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in optimization_profiles(model):
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache_blob = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(engine))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path


def build_repository_engines(
    repo: Path, cache_dir: Path, *, use_trtexec: bool = False, fp16: bool = True
) -> list[Path]:
    """Build (or reuse from the cache) every encoder's engine and link it into the repository."""
    gpu = detect_gpu()
    cache_dir.mkdir(parents=True, exist_ok=True)
    timing_cache = (
        cache_dir / f"timing-sm{gpu.compute_capability.replace('.', '')}-trt{gpu.trt_version}.cache"
    )
    plans = []
    for model in spec.ENCODERS.values():
        onnx_path = repo / model.name / "1" / ONNX_FILE
        if not onnx_path.exists():
            raise FileNotFoundError(f"{onnx_path} is missing; run `mmtriton export` first")
        key = cache_key(file_sha256(onnx_path), gpu.compute_capability, gpu.trt_version, fp16)
        cached = cache_dir / model.name / f"{key}.plan"
        if cached.exists():
            print(f"{model.name}: engine cached ({key})")
        else:
            print(f"{model.name}: building engine {key}")
            if use_trtexec:
                cmd = trtexec_command(
                    onnx_path, cached, model, fp16=fp16, timing_cache=timing_cache
                )
                subprocess.run(cmd, check=True)
            else:
                build_engine(onnx_path, cached, model, fp16=fp16, timing_cache=timing_cache)
        target = repo / model.name / "1" / plan_filename(gpu.compute_capability)
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(cached.resolve(), target)
        plans.append(target)
    return plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton engines`."""
    parser.add_argument("--repository", type=Path, default=None, help="model repository")
    parser.add_argument("--cache-dir", type=Path, required=True, help="engine cache folder")
    parser.add_argument("--trtexec", action="store_true", help="build with trtexec, not the API")
    parser.add_argument("--fp32", action="store_true", help="build FP32 engines (default FP16)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton engines` (the Kubernetes init step runs it on the GPU node)."""
    repo = args.repository or model_repository_dir()
    try:
        plans = build_repository_engines(
            repo, args.cache_dir, use_trtexec=args.trtexec, fp16=not args.fp32
        )
    except TensorRTUnavailable as exc:
        raise SystemExit(f"error: {exc}") from exc
    for plan in plans:
        print(f"linked {plan}")
    return 0
