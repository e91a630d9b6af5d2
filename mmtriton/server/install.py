"""Locates the pinned tritonserver (shipped in the nvidia-pytriton wheel) and prepares it.

`mmtriton setup-server` copies the Python-backend stub for this Python version next to
libtriton_python.so, where the Python backend looks for it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def triton_root() -> Path:
    """The tritonserver tree inside the installed nvidia-pytriton package."""
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - an install problem, reported plainly
        raise SystemExit("error: nvidia-pytriton is not installed; run `make venv`") from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    """Path of the tritonserver executable."""
    return triton_root() / "bin" / "tritonserver"


def backend_directory() -> Path:
    """The --backend-directory holding the Python backend."""
    return triton_root() / "backends"


def install_stub() -> Path:
    """Put the stub matching this interpreter where the Python backend expects it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = triton_root() / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source.exists():
        raise SystemExit(f"error: no Python-backend stub for Python {version} at {source}")
    target = backend_directory() / "python" / "triton_python_backend_stub"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copy2(source, target)
    target.chmod(0o755)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mmtriton setup-server` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton setup-server`."""
    print(f"tritonserver: {tritonserver_binary()}")
    print(f"python backend stub: {install_stub()}")
    return 0
