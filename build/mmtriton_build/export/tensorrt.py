"""TensorRT engines for the GPU profile: profiles, trtexec command lines, cache keys, builder.

An engine runs only on the GPU model and the TensorRT version that built it, so the Kubernetes
init step (`mmtriton engines`) builds them on the serving node with the serving image's own
trtexec, caches them on a shared volume (engine_cache.py: atomic, locked per key) and links the
plan Triton will load into the pod's repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmtriton import spec
from mmtriton.layout import DEFAULT_PLAN, ONNX_FILE, PLAN_PATTERN
from mmtriton.paths import model_repository_dir
from mmtriton.spec import ModelSpec

from . import engine_cache
from .engine_cache import CacheEntry, LockTimeout, file_sha256
from .gpu import GpuInfo, NoGpuError, detect_gpu
from .policy import POLICIES

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "build TensorRT engines on this GPU node"

# Where NVIDIA's Triton images keep trtexec (the serving TensorRT's own builder).
IMAGE_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# NGC images state their TensorRT version in this variable (e.g. "10.5.0.18").
TRT_VERSION_ENV = "TRT_VERSION"
# Triton's default_model_filename for tensorrt_plan: loaded when cc_model_filenames has no entry
# for the GPU's compute capability.
DEFAULT_TIMEOUT_S = 3600


class TensorRTUnavailable(RuntimeError):
    """No TensorRT builder here (neither trtexec nor the Python module)."""


class TensorRTMismatch(RuntimeError):
    """The TensorRT that would build differs from the one that serves."""


class EngineBuildError(RuntimeError):
    """The builder failed; the message carries the end of its log."""


# --------------------------------------------------------------------------- profiles
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
        opt = hi = t.fixed_dims
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
    trtexec: str | Path = "trtexec",
) -> list[str]:
    """The same build as `build_engine`, as a trtexec command line (NVIDIA's Triton image)."""
    profiles = optimization_profiles(model)

    def shapes(attr: str) -> str:
        return ",".join(f"{p.name}:{ShapeProfile._fmt(getattr(p, attr))}" for p in profiles)

    cmd = [
        str(trtexec),
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


# --------------------------------------------------------------------------- TensorRT versions
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")


def parse_trtexec_banner(text: str) -> str | None:
    """TensorRT version from trtexec's banner ("&&&& RUNNING TensorRT.trtexec [TensorRT v100500]").

    The number is NV_TENSORRT_VERSION: major*10000 + minor*100 + patch from TensorRT 10 on,
    major*1000 + minor*100 + patch before (v8601 = 8.6.1).
    """
    match = _BANNER.search(text)
    if not match:
        return None
    n = int(match.group(1))
    if n >= 10000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def release(version: str) -> str:
    """major.minor.patch of a TensorRT version ("10.5.0.18" and "10.5.0.post1" -> "10.5.0")."""
    parts = re.findall(r"\d+", version)[:3]
    if len(parts) < 2:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def trtexec_version(trtexec: Path) -> str:
    """The TensorRT version of a trtexec binary, from its banner."""
    out = subprocess.run(
        [str(trtexec), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    version = parse_trtexec_banner(out.stdout + out.stderr)
    if version is None:
        raise TensorRTUnavailable(f"{trtexec} printed no TensorRT version banner")
    return version


def check_same_tensorrt(builder: str, builder_version: str, server_version: str | None) -> None:
    """Refuse to build when the builder's TensorRT is not the serving one (plans would not load)."""
    if server_version is None:
        raise TensorRTMismatch(
            f"cannot tell which TensorRT serves (no ${TRT_VERSION_ENV}, no trtexec): refusing to "
            f"build with {builder}; pass --trtexec {IMAGE_TRTEXEC} in the serving image"
        )
    if release(builder_version) != release(server_version):
        raise TensorRTMismatch(
            f"{builder} is TensorRT {release(builder_version)} but the server's is "
            f"{release(server_version)}: its plans would not load; build with the serving "
            f"image's trtexec (--trtexec {IMAGE_TRTEXEC})"
        )


@dataclass(frozen=True)
class Builder:
    """What builds the plans: the serving image's trtexec, or the Python API."""

    trt_version: str
    trtexec: Path | None = None

    @property
    def name(self) -> str:
        return str(self.trtexec) if self.trtexec else "the tensorrt Python module"


def choose_builder(trtexec: Path | None, env: dict[str, str] | None = None) -> Builder:
    """The builder, checked against the serving TensorRT ($TRT_VERSION or trtexec's banner)."""
    env = os.environ if env is None else env
    server = env.get(TRT_VERSION_ENV) or None
    if trtexec is not None:
        if not (trtexec.is_file() and os.access(trtexec, os.X_OK)):
            raise TensorRTUnavailable(f"--trtexec {trtexec}: no such executable")
        version = trtexec_version(trtexec)
        check_same_tensorrt(str(trtexec), version, server or version)
        return Builder(version, trtexec)
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(
            f"no TensorRT builder: pass --trtexec (in the serving image: {IMAGE_TRTEXEC}); "
            "the tensorrt Python module is not installed either"
        ) from None
    check_same_tensorrt("the tensorrt Python module", tensorrt.__version__, server)
    return Builder(release(tensorrt.__version__))


# --------------------------------------------------------------------------- cache keys
def engine_facts(
    model: ModelSpec, onnx_sha256: str, gpu: GpuInfo, trt_version: str, fp16: bool = True
) -> dict[str, Any]:
    """Everything a plan depends on, as recorded in the cache's metadata file."""
    return {
        "model": model.name,
        "onnx_sha256": onnx_sha256,
        "gpu_name": gpu.name,
        "mig_profile": gpu.mig_profile,
        "compute_capability": gpu.compute_capability,
        "tensorrt_version": release(trt_version),
        "precision": "fp16" if fp16 else "fp32",
        # As JSON has them (lists), so the metadata file reads back equal.
        "profiles": json.loads(json.dumps([asdict(p) for p in optimization_profiles(model)])),
    }


def cache_key(facts: dict[str, Any]) -> str:
    """A file-name-safe key: readable prefix + a hash of every fact (engine_facts)."""
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]
    cc = facts["compute_capability"].replace(".", "")
    return f"{facts['model']}-sm{cc}-trt{facts['tensorrt_version']}-{digest}"


def timing_cache_name(gpu: GpuInfo, trt_version: str) -> str:
    """One timing cache per GPU model, slice and TensorRT version."""
    ident = f"{gpu.name}|{gpu.mig_profile}|{gpu.compute_capability}|{release(trt_version)}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return f"timing-sm{gpu.sm}-trt{release(trt_version)}-{digest}.cache"


# --------------------------------------------------------------------------- linking
def plan_filename(compute_capability: str) -> str:
    """The plan's file name in the repository, as the GPU configs' cc_model_filenames say."""
    return PLAN_PATTERN.format(cc=compute_capability.replace(".", ""))


def _symlink(target: Path, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: Triton never sees a missing plan


def link_plan(version_dir: Path, plan: Path, compute_capability: str) -> list[Path]:
    """Link `plan` as the file Triton loads on this GPU, whatever its compute capability.

    `model_sm<cc>.plan` is the name cc_model_filenames gives listed GPUs; `model.plan` (Triton's
    default_model_filename) is what a GPU outside that list loads. Both point at the plan.
    """
    links = [version_dir / plan_filename(compute_capability), version_dir / DEFAULT_PLAN]
    for link in links:
        _symlink(plan.resolve(), link)
    return links


# --------------------------------------------------------------------------- building
def build_engine(
    onnx_path: Path,
    plan_path: Path,
    model: ModelSpec,
    *,
    fp16: bool = True,
    timing_cache: Path | None = None,
    workspace_gib: int = 4,
) -> Path:
    """Build a serialized engine with the TensorRT Python API into `plan_path`."""
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
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in optimization_profiles(model):
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache_blob = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    config.set_timing_cache(config.create_timing_cache(cache_blob), ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(engine))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the engine step ran out of time (--timeout)")
    return left


def run_trtexec(
    cmd: list[str], deadline: float, log: Callable[[str], None] = print, what: str = "the plan"
) -> None:
    """Run one trtexec build, its output streamed to `log` (a build takes minutes).

    Killed at `deadline` (TimeoutError); EngineBuildError when it fails.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    timer = threading.Timer(_remaining(deadline), proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            log(f"  trtexec: {line.rstrip()}")
        code = proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
    if code < 0 and time.monotonic() >= deadline:
        raise TimeoutError(f"trtexec did not finish building {what} before --timeout")
    if code != 0:
        raise EngineBuildError(f"trtexec exited {code} building {what} (its log is above)")


# A plan builder: (onnx, plan to write, model, timing cache to read and update) -> None.
PlanBuilder = Callable[[Path, Path, ModelSpec, Path], None]


def plan_builder(
    builder: Builder, fp16: bool, deadline: float, log: Callable[[str], None] = print
) -> PlanBuilder:
    """The function that writes one plan with the chosen builder."""
    if builder.trtexec is not None:

        def with_trtexec(onnx: Path, plan: Path, model: ModelSpec, timing: Path) -> None:
            cmd = trtexec_command(
                onnx, plan, model, fp16=fp16, timing_cache=timing, trtexec=builder.trtexec
            )
            run_trtexec(cmd, deadline, log, what=model.name)

        return with_trtexec

    def with_api(onnx: Path, plan: Path, model: ModelSpec, timing: Path) -> None:
        build_engine(onnx, plan, model, fp16=fp16, timing_cache=timing)

    return with_api


def build_repository_engines(
    repo: Path,
    cache_dir: Path,
    gpu: GpuInfo,
    trt_version: str,
    build_plan: PlanBuilder,
    *,
    fp16: bool = True,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Build (or reuse from the cache) every encoder's plan and link it into the repository."""
    deadline = time.monotonic() + DEFAULT_TIMEOUT_S if deadline is None else deadline
    onnx_files = {m.name: repo / m.name / "1" / ONNX_FILE for m in spec.ENCODERS.values()}
    missing = [str(p) for p in onnx_files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is missing: is {repo} the staged repository?")
    cache_dir.mkdir(parents=True, exist_ok=True)
    shared_timing = cache_dir / timing_cache_name(gpu, trt_version)
    links = []
    for model in spec.ENCODERS.values():
        onnx = onnx_files[model.name]
        facts = engine_facts(model, file_sha256(onnx), gpu, trt_version, fp16)
        entry = CacheEntry(cache_dir / model.name, cache_key(facts))

        def build(tmp_plan: Path, onnx: Path = onnx, model: ModelSpec = model) -> None:
            timing = engine_cache.snapshot(shared_timing)
            try:
                build_plan(onnx, tmp_plan, model, timing)
                engine_cache.publish(timing, shared_timing, deadline)
            finally:
                timing.unlink(missing_ok=True)

        started = time.monotonic()
        plan, built = engine_cache.get_or_build(entry, facts, build, deadline=deadline, log=log)
        how = f"built in {time.monotonic() - started:.0f} s" if built else "from the cache"
        log(f"{model.name}: {entry.key} {how}")
        links += link_plan(onnx.parent, plan, gpu.compute_capability)
    return links


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton engines`."""
    parser.add_argument("--repository", type=Path, default=None, help="model repository")
    parser.add_argument("--cache-dir", type=Path, required=True, help="engine cache folder")
    parser.add_argument(
        "--trtexec",
        type=Path,
        default=None,
        help=f"build with this trtexec (the serving image's: {IMAGE_TRTEXEC}); without it the "
        f"tensorrt Python module builds, only if its version equals ${TRT_VERSION_ENV}",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="give up after this many seconds, waits for other pods' builds included",
    )
    parser.add_argument("--fp32", action="store_true", help="build FP32 engines (default FP16)")


# What `mmtriton engines` reports as one line (a user or node problem, not a bug).
ENGINE_ERRORS = (
    NoGpuError,
    TensorRTUnavailable,
    TensorRTMismatch,
    EngineBuildError,
    FileNotFoundError,
    LockTimeout,
    TimeoutError,
    PermissionError,
)


def build_engines(
    repo: Path,
    cache_dir: Path,
    *,
    trtexec: Path | None = None,
    fp16: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Detect the GPU, check the builder against the serving TensorRT, build and link plans.

    `env` (default: this process's) says the serving TensorRT version ($TRT_VERSION).
    """
    deadline = time.monotonic() + timeout
    gpu = detect_gpu()  # first: without a GPU nothing else matters
    builder = choose_builder(trtexec, env)
    log(
        f"GPU: {gpu.name} (compute capability {gpu.compute_capability}, MIG {gpu.mig_profile}); "
        f"TensorRT {builder.trt_version} via {builder.name}"
    )
    return build_repository_engines(
        repo,
        cache_dir,
        gpu,
        builder.trt_version,
        plan_builder(builder, fp16, deadline, log),
        fp16=fp16,
        deadline=deadline,
        log=log,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton engines` (the Kubernetes init step runs it on the GPU node).

    Every expected failure ends in one line on stderr and exit 1, never a traceback.
    """
    try:
        links = build_engines(
            args.repository or model_repository_dir(),
            args.cache_dir,
            trtexec=args.trtexec,
            fp16=not args.fp32,
            timeout=args.timeout,
            log=lambda line: print(line, flush=True),
        )
    except ENGINE_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from None
    for link in links:
        print(f"linked {link} -> {os.readlink(link)}")
    return 0


def trtexec_on_path() -> Path | None:
    """trtexec where NVIDIA's images put it, or on PATH (for tests and tools)."""
    found = shutil.which("trtexec") or (IMAGE_TRTEXEC if Path(IMAGE_TRTEXEC).exists() else None)
    return Path(found) if found else None
