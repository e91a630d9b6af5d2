"""The engine step without a GPU: cache (atomic, locked), keys, GPU facts, versions, linking.

The cache and lock code runs for real, in separate processes that are killed or race. Only what
needs a GPU is stood in for: a "builder" function instead of trtexec in the cache tests, and
small nvidia-smi / trtexec scripts (printing what the real tools print) in the end-to-end run of
`mmtriton engines`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmtriton import spec
from mmtriton.paths import model_repository_dir
from mmtriton_build.export import engine_cache
from mmtriton_build.export.engine_cache import CacheEntry, get_or_build
from mmtriton_build.export.gpu import (
    FULL_GPU,
    NoGpuError,
    detect_gpu,
    gpu_from_nvidia_smi,
    parse_mig_profiles,
    parse_query,
)
from mmtriton_build.export.repository import ONNX_FILE, SUPPORTED_COMPUTE_CAPABILITIES
from mmtriton_build.export.tensorrt import (
    DEFAULT_PLAN,
    TensorRTMismatch,
    cache_key,
    check_same_tensorrt,
    choose_builder,
    engine_facts,
    link_plan,
    parse_trtexec_banner,
    release,
)

MMTRITON = Path(sys.executable).parent / "mmtriton"

# --------------------------------------------------------------------------- nvidia-smi samples
# `nvidia-smi --query-gpu=name,compute_cap,mig.mode.current --format=csv,noheader` and
# `nvidia-smi -L` as they read on each kind of node.
A10 = (
    "NVIDIA A10, 8.6, [N/A]\n",
    "GPU 0: NVIDIA A10 (UUID: GPU-4c1e0d7a-8f0b-5a7e-9d1c-2b6f3e8a1c55)\n",
)
A40 = (
    "NVIDIA A40, 8.6, [N/A]\n",
    "GPU 0: NVIDIA A40 (UUID: GPU-9e2b7c41-0d3a-11ee-b962-0242ac120002)\n",
)
H100_FULL = (
    "NVIDIA H100 80GB HBM3, 9.0, Disabled\n",
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-3b0d5c1e-77aa-4f6e-8c2d-91f0a4b5e6d7)\n",
)
H100_MIG_1G = (
    "NVIDIA H100 80GB HBM3, 9.0, Enabled\n",
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-3b0d5c1e-77aa-4f6e-8c2d-91f0a4b5e6d7)\n"
    "  MIG 1g.10gb     Device  0: (UUID: MIG-6a1f2c3d-4e5b-5c6d-8e7f-9a0b1c2d3e4f)\n",
)
RTX_5090 = (  # compute capability 12.0: not in the configs' cc_model_filenames
    "NVIDIA GeForce RTX 5090, 12.0, [N/A]\n",
    "GPU 0: NVIDIA GeForce RTX 5090 (UUID: GPU-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)\n",
)
TRTEXEC_BANNER = "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] [b18] # trtexec --help\n"


def test_nvidia_smi_parsing_tells_gpu_models_and_mig_slices_apart() -> None:
    a10, a40 = gpu_from_nvidia_smi(*A10), gpu_from_nvidia_smi(*A40)
    assert (a10.name, a10.compute_capability, a10.mig_profile) == ("NVIDIA A10", "8.6", FULL_GPU)
    assert a40.compute_capability == a10.compute_capability and a40.name != a10.name
    full, mig = gpu_from_nvidia_smi(*H100_FULL), gpu_from_nvidia_smi(*H100_MIG_1G)
    assert full.mig_profile == FULL_GPU and mig.mig_profile == "1g.10gb"
    assert parse_mig_profiles(H100_MIG_1G[1]) == ["1g.10gb"]
    assert parse_query("NVIDIA A10, 8.6, [N/A]\nNVIDIA A10, 8.6, [N/A]\n")[1][0] == "NVIDIA A10"
    with pytest.raises(ValueError, match="compute capability"):
        parse_query("NVIDIA A10, [N/A], [N/A]\n")
    with pytest.raises(NoGpuError, match="no NVIDIA GPU visible"):
        gpu_from_nvidia_smi("", "")


def _facts(gpu: tuple[str, str], trt: str = "10.5.0", onnx: str = "a" * 64, fp16: bool = True):
    return engine_facts(spec.IMAGE_ENCODER, onnx, gpu_from_nvidia_smi(*gpu), trt, fp16)


def test_cache_key_separates_every_fact_an_engine_depends_on() -> None:
    base = cache_key(_facts(A10))
    assert re.fullmatch(r"image_encoder-sm86-trt10\.5\.0-[0-9a-f]{20}", base), base
    differing = {
        "A40 (same CC)": cache_key(_facts(A40)),
        "other TensorRT": cache_key(_facts(A10, trt="10.6.0")),
        "other ONNX": cache_key(_facts(A10, onnx="b" * 64)),
        "FP32": cache_key(_facts(A10, fp16=False)),
    }
    assert base not in differing.values() and len(set(differing.values())) == 4
    assert cache_key(_facts(H100_FULL)) != cache_key(_facts(H100_MIG_1G))
    # A TensorRT build number does not change the release (10.5.0.18 == 10.5.0).
    assert cache_key(_facts(A10, trt="10.5.0.18")) == base
    other_profile = _facts(A10)
    other_profile["profiles"][0]["max"][0] += 1
    assert cache_key(other_profile) != base
    facts = _facts(H100_MIG_1G)
    assert facts["mig_profile"] == "1g.10gb" and facts["gpu_name"] == "NVIDIA H100 80GB HBM3"


def test_trtexec_banner_gives_the_tensorrt_release() -> None:
    assert parse_trtexec_banner(TRTEXEC_BANNER) == "10.5.0"
    assert parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v100001] # t") == "10.0.1"
    assert parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # t") == "8.6.1"
    assert parse_trtexec_banner("usage: trtexec ...") is None
    assert release("10.5.0.18") == "10.5.0" and release("10.5.0.post1") == "10.5.0"


def test_a_builder_of_another_tensorrt_is_refused() -> None:
    check_same_tensorrt("trtexec", "10.5.0", "10.5.0.18")
    with pytest.raises(TensorRTMismatch, match=r"TensorRT 10\.6\.0 but the server's is 10\.5\.0"):
        check_same_tensorrt("the tensorrt Python module", "10.6.0.post1", "10.5.0.18")
    with pytest.raises(TensorRTMismatch, match="cannot tell which TensorRT serves"):
        check_same_tensorrt("the tensorrt Python module", "10.5.0", None)


def test_trtexec_of_another_tensorrt_than_the_image_is_refused(tmp_path) -> None:
    trtexec = _script(tmp_path / "trtexec", f"print({TRTEXEC_BANNER!r}, end='')")
    assert choose_builder(trtexec, env={"TRT_VERSION": "10.5.0.18"}).trt_version == "10.5.0"
    assert choose_builder(trtexec, env={}).trtexec == trtexec  # the banner is the server's
    with pytest.raises(TensorRTMismatch, match=r"10\.5\.0 but the server's is 10\.3\.0"):
        choose_builder(trtexec, env={"TRT_VERSION": "10.3.0.26"})


# --------------------------------------------------------------------------- linking
def _plan_triton_loads(config: str, cc: str) -> str:
    """Triton's choice for a tensorrt_plan model: cc_model_filenames[cc], else the default."""
    chosen = dict(
        re.findall(r'cc_model_filenames\s*{\s*key:\s*"([^"]+)"\s*value:\s*"([^"]+)"', config)
    )
    default = re.search(r'default_model_filename:\s*"([^"]+)"', config)
    return chosen.get(cc) or (default.group(1) if default else DEFAULT_PLAN)


@pytest.mark.parametrize("cc", [*SUPPORTED_COMPUTE_CAPABILITIES, "12.0", "7.0"])
def test_the_plan_triton_loads_exists_for_any_compute_capability(tmp_path, cc) -> None:
    """GPUs outside cc_model_filenames load model.plan: the link is there for them too."""
    config = (model_repository_dir() / "image_encoder" / "configs" / "gpu.pbtxt").read_text()
    version_dir = tmp_path / "repo" / "image_encoder" / "1"
    version_dir.mkdir(parents=True)
    plan = tmp_path / "cache" / "image_encoder" / "k.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"engine")
    link_plan(version_dir, plan, cc)
    loaded = version_dir / _plan_triton_loads(config, cc)
    assert loaded.is_symlink() and loaded.read_bytes() == b"engine", loaded
    # Relinking (a new engine after an image update) replaces the links in place.
    plan2 = plan.with_name("k2.plan")
    plan2.write_bytes(b"engine 2")
    link_plan(version_dir, plan2, cc)
    assert loaded.read_bytes() == b"engine 2"


# --------------------------------------------------------------------------- the cache, for real
def test_a_partial_or_uncommitted_plan_is_never_a_hit(tmp_path) -> None:
    entry = CacheEntry(tmp_path, "k")
    entry.plan.write_bytes(b"half an engine")
    assert not entry.valid(), "a plan without its metadata (written last) is not committed"
    plan, built = get_or_build(entry, {"x": 1}, lambda tmp: tmp.write_bytes(b"whole engine"))
    assert built and plan.read_bytes() == b"whole engine" and entry.valid()
    meta = json.loads(entry.metadata.read_text())
    assert meta["x"] == 1 and meta["plan_bytes"] == len(b"whole engine")
    with entry.plan.open("r+b") as f:  # truncated later (disk full, bad copy)
        f.truncate(5)
    assert not entry.valid()
    entry.plan.write_bytes(b"whole enginX")  # same size, other bytes
    assert not entry.valid()
    empty = CacheEntry(tmp_path, "empty")
    with pytest.raises(RuntimeError, match="wrote no plan"):
        get_or_build(empty, {}, lambda tmp: tmp.write_bytes(b""))
    assert not empty.valid() and not list(tmp_path.glob(".empty.*"))


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mmtriton_build.export.engine_cache import CacheEntry, get_or_build

    folder, key, log, mode = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

    def build(tmp):
        with log.open("a") as f:
            f.write(f"start {time.monotonic()}\\n")
        with tmp.open("wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            if mode == "hang":  # killed here, mid-write
                Path(str(log) + ".mid-write").touch()
                time.sleep(60)
            time.sleep(1.0)
            f.write(b"y" * 4096)
        with log.open("a") as f:
            f.write(f"end {time.monotonic()}\\n")

    plan, built = get_or_build(CacheEntry(folder, key), {"by": mode}, build)
    print("built" if built else "reused", plan, flush=True)
    """
)


def _worker(folder: Path, log: Path, mode: str = "ok") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(folder), "k", str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_build_killed_mid_write_leaves_no_hit_and_the_next_builder_recovers(tmp_path) -> None:
    log = tmp_path / "builds.log"
    victim = _worker(tmp_path, log, "hang")
    deadline = time.monotonic() + 30
    while not Path(f"{log}.mid-write").exists():
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    entry = CacheEntry(tmp_path, "k")
    leftovers = list(tmp_path.glob(".k.plan.tmp.*"))
    assert leftovers and not entry.plan.exists() and not entry.valid()
    # The kernel released the dead builder's lock: the next one is not blocked, removes the
    # leftover and builds a whole plan.
    started = time.monotonic()
    out, err = _worker(tmp_path, log).communicate(timeout=30)
    assert out.splitlines()[-1].startswith("built"), err
    assert time.monotonic() - started < 20
    assert "left by an interrupted build" in out
    assert entry.valid() and entry.plan.stat().st_size == 8192
    assert not list(tmp_path.glob(".k.*"))


def test_two_concurrent_builders_build_once_and_share_the_result(tmp_path) -> None:
    log = tmp_path / "builds.log"
    first, second = _worker(tmp_path, log), _worker(tmp_path, log)
    outputs = [p.communicate(timeout=60) for p in (first, second)]
    assert all(p.returncode == 0 for p in (first, second)), outputs
    results = [out.splitlines()[-1].split() for out, _ in outputs]
    assert sorted(r[0] for r in results) == ["built", "reused"], outputs
    assert len({r[1] for r in results}) == 1
    assert "waiting for" in "".join(out for out, _ in outputs)
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 1, "the engine was built twice"
    assert CacheEntry(tmp_path, "k").valid()


def test_timing_cache_is_replaced_whole(tmp_path) -> None:
    shared = tmp_path / "timing.cache"
    tmp = engine_cache.snapshot(shared)
    assert not tmp.exists(), "no shared cache yet: the tool starts a new one"
    tmp.write_bytes(b"timings v1")
    assert engine_cache.publish(tmp, shared) and shared.read_bytes() == b"timings v1"
    tmp = engine_cache.snapshot(shared)
    assert tmp.read_bytes() == b"timings v1" and tmp.parent == shared.parent
    tmp.write_bytes(b"")  # a tool that failed midway: the shared cache stays as it was
    assert not engine_cache.publish(tmp, shared) and shared.read_bytes() == b"timings v1"


# --------------------------------------------------------------------------- `mmtriton engines`
def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(0o755)
    return path


def _stand_ins(bin_dir: Path, gpu: tuple[str, str], builds: Path) -> Path:
    """nvidia-smi printing `gpu`'s outputs and a trtexec that writes a plan and logs its args."""
    bin_dir.mkdir(exist_ok=True)
    query, listing = gpu
    _script(
        bin_dir / "nvidia-smi",
        f"print({listing!r} if sys.argv[1:] == ['-L'] else {query!r}, end='')",
    )
    return _script(
        bin_dir / "trtexec",
        textwrap.dedent(
            f"""
            print({TRTEXEC_BANNER!r}, end='')
            if '--help' in sys.argv:
                sys.exit(0)
            args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
            open(args['saveEngine'], 'wb').write(b'plan for ' + args['onnx'].encode())
            open(args['timingCacheFile'], 'ab').write(b't')
            open({str(builds)!r}, 'a').write(args['onnx'] + '\\n')
            """
        ),
    )


def _repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repository"
    for model in spec.ENCODERS.values():
        (repo / model.name / "1").mkdir(parents=True)
        (repo / model.name / "1" / ONNX_FILE).write_bytes(f"onnx of {model.name}".encode())
    return repo


def _engines(bin_dir: Path, repo: Path, cache: Path, trtexec: Path, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "TRT_VERSION"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", **(env_extra or {}))
    cmd = [str(MMTRITON), "engines", "--repository", str(repo), "--cache-dir", str(cache)]
    cmd += ["--trtexec", str(trtexec)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_engines_command_builds_once_per_gpu_model_and_links_the_plans(tmp_path) -> None:
    repo, cache, builds = _repository(tmp_path), tmp_path / "cache", tmp_path / "builds.log"
    trtexec = _stand_ins(tmp_path / "a10", A10, builds)
    first = _engines(tmp_path / "a10", repo, cache, trtexec)
    assert first.returncode == 0, first.stderr
    assert "NVIDIA A10 (compute capability 8.6, MIG full); TensorRT 10.5.0" in first.stdout
    assert "  trtexec: &&&& RUNNING TensorRT.trtexec" in first.stdout, "build log streamed"
    assert len(builds.read_text().splitlines()) == len(spec.ENCODERS)
    for model in spec.ENCODERS.values():
        plan = repo / model.name / "1" / "model_sm86.plan"
        assert plan.read_bytes().startswith(b"plan for "), plan
        assert (repo / model.name / "1" / DEFAULT_PLAN).resolve() == plan.resolve()
        (meta,) = (cache / model.name).glob("*.json")
        assert json.loads(meta.read_text())["gpu_name"] == "NVIDIA A10"
    again = _engines(tmp_path / "a10", repo, cache, trtexec)
    assert again.returncode == 0 and again.stdout.count("from the cache") == len(spec.ENCODERS)
    assert len(builds.read_text().splitlines()) == len(spec.ENCODERS), "a cached plan was rebuilt"
    # An A40 (same compute capability) gets its own engines.
    trtexec = _stand_ins(tmp_path / "a40", A40, builds)
    a40 = _engines(tmp_path / "a40", repo, cache, trtexec)
    assert a40.returncode == 0 and len(builds.read_text().splitlines()) == 2 * len(spec.ENCODERS)
    assert len(list(cache.glob("timing-sm86-*.cache"))) == 2


def test_engines_command_on_an_unlisted_gpu_links_the_default_plan(tmp_path) -> None:
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    trtexec = _stand_ins(tmp_path / "bin", RTX_5090, tmp_path / "builds.log")
    result = _engines(tmp_path / "bin", repo, cache, trtexec)
    assert result.returncode == 0, result.stderr
    for model in spec.ENCODERS.values():
        assert (repo / model.name / "1" / DEFAULT_PLAN).read_bytes().startswith(b"plan for ")


def test_engines_command_refuses_a_trtexec_that_is_not_the_servers(tmp_path) -> None:
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    trtexec = _stand_ins(tmp_path / "bin", A10, tmp_path / "builds.log")
    result = _engines(tmp_path / "bin", repo, cache, trtexec, {"TRT_VERSION": "10.3.0.26"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert "server's is 10.3.0" in result.stderr and not (tmp_path / "builds.log").exists()


@pytest.mark.parametrize(
    ("body", "timeout", "message"),
    [
        ("print('[E] Error[4]: ITensor::getDimensions'); sys.exit(1)", 60, "trtexec exited 1"),
        ("import time; time.sleep(60)", 2, "did not finish building"),
    ],
    ids=["build-fails", "build-hangs"],
)
def test_engines_command_reports_a_failed_or_hung_build_without_a_traceback(
    tmp_path, body, timeout, message
) -> None:
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    _stand_ins(tmp_path / "bin", A10, tmp_path / "builds.log")
    trtexec = _script(
        tmp_path / "bin" / "trtexec",
        f"print({TRTEXEC_BANNER!r}, end='', flush=True)\nif '--help' in sys.argv: sys.exit(0)\n"
        + body,
    )
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "TRT_VERSION"}
    env["PATH"] = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    cmd = [str(MMTRITON), "engines", "--repository", str(repo), "--cache-dir", str(cache)]
    cmd += ["--trtexec", str(trtexec), "--timeout", str(timeout)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert time.monotonic() - started < 30
    assert not [p for p in cache.rglob("*.plan") if p.stat().st_size], "no plan may be committed"
    assert not list(cache.rglob("*.json"))


def test_engines_command_reports_a_gpu_that_nvidia_smi_cannot_see(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "nvidia-smi", "print('No devices were found'); sys.exit(6)")
    result = _engines(bin_dir, _repository(tmp_path), tmp_path / "c", Path("/nonexistent"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: no NVIDIA GPU visible (nvidia-smi: No devices were found): "
        "the gpu overlay needs a node with nvidia.com/gpu"
    )


def test_detect_gpu_without_nvidia_smi_names_the_missing_gpu(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NoGpuError) as exc:
        detect_gpu()
    assert str(exc.value) == (
        "no NVIDIA GPU visible (nvidia-smi not found): "
        "the gpu overlay needs a node with nvidia.com/gpu"
    )
