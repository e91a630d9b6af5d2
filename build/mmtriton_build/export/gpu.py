"""The GPU an engine is built for, as nvidia-smi reports it.

A TensorRT plan is tuned for one GPU model (A10 and A40 share compute capability 8.6 but not
their tactics), and a MIG slice is a different device from the full GPU. So the engine cache
keys on the GPU's name, its MIG profile and its compute capability, all read here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

# What `mmtriton engines` says, in one line, when the pod has no GPU to build on.
NO_GPU_HINT = "the gpu overlay needs a node with nvidia.com/gpu"
FULL_GPU = "full"
QUERY = ["--query-gpu=name,compute_cap,mig.mode.current", "--format=csv,noheader"]


class NoGpuError(RuntimeError):
    """No NVIDIA GPU is visible to this process (a one-line message for the user)."""


@dataclass(frozen=True)
class GpuInfo:
    """One GPU (or MIG slice) as far as engines care."""

    name: str
    compute_capability: str
    # The MIG profile of the slice this process sees ("1g.10gb"), or "full".
    mig_profile: str = FULL_GPU

    @property
    def sm(self) -> str:
        """Compute capability without the dot: "8.6" -> "86"."""
        return self.compute_capability.replace(".", "")


def no_gpu(reason: str) -> NoGpuError:
    """The error for a pod without a GPU, naming why nvidia-smi found none."""
    return NoGpuError(f"no NVIDIA GPU visible ({reason}): {NO_GPU_HINT}")


def parse_query(text: str) -> list[tuple[str, str, str]]:
    """Rows of `nvidia-smi --query-gpu=name,compute_cap,mig.mode.current --format=csv,noheader`.

    Each row is (name, compute capability, MIG mode: "Enabled", "Disabled" or "[N/A]").
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # GPU names hold no commas; the last two fields are the CC and the MIG mode.
        name, cc, mig = (part.strip() for part in line.rsplit(",", 2))
        if not re.fullmatch(r"\d+\.\d+", cc):
            raise ValueError(f"nvidia-smi reported compute capability {cc!r} for {name!r}")
        rows.append((name, cc, mig))
    return rows


_MIG_LINE = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+\d+:", re.M)


def parse_mig_profiles(text: str) -> list[str]:
    """MIG profiles ("1g.10gb", ...) of the slices listed by `nvidia-smi -L`, in order."""
    return _MIG_LINE.findall(text)


def gpu_from_nvidia_smi(query_output: str, list_output: str) -> GpuInfo:
    """The first visible GPU (one per pod) from the two nvidia-smi outputs."""
    rows = parse_query(query_output)
    if not rows:
        raise no_gpu("nvidia-smi lists no devices")
    name, cc, mig_mode = rows[0]
    profile = FULL_GPU
    if mig_mode == "Enabled":
        profiles = parse_mig_profiles(list_output)
        # MIG on, but no slice listed: the whole GPU is visible (e.g. a privileged pod).
        profile = profiles[0] if profiles else FULL_GPU
    return GpuInfo(name=name, compute_capability=cc, mig_profile=profile)


def _nvidia_smi(*args: str, timeout: float = 30) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise no_gpu(f"nvidia-smi did not answer in {timeout:.0f} s") from None
    if out.returncode != 0 or not out.stdout.strip():
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise no_gpu(f"nvidia-smi: {detail[0] if detail else f'exit {out.returncode}'}")
    return out.stdout


def detect_gpu() -> GpuInfo:
    """The GPU this process sees; NoGpuError with a one-line reason when there is none."""
    if shutil.which("nvidia-smi") is None:
        raise no_gpu("nvidia-smi not found")
    return gpu_from_nvidia_smi(_nvidia_smi(*QUERY), _nvidia_smi("-L"))
