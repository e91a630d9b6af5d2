"""Locates the pinned tritonserver and prepares it.

Here tritonserver comes from the nvidia-pytriton wheel; in the serving image it is NVIDIA's own
(`/opt/tritonserver`, named by $MMTRITON_TRITON_ROOT). `mmtriton setup-server` copies the
Python-backend stub for this Python version next to libtriton_python.so, where the Python
backend looks for it (the image links it there at build time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "prepare the pinned tritonserver for this venv"

# A tritonserver tree (bin/tritonserver, backends/) to use instead of the wheel's.
TRITON_ROOT_ENV = "MMTRITON_TRITON_ROOT"


def triton_root() -> Path:
    """The tritonserver tree: $MMTRITON_TRITON_ROOT, else the nvidia-pytriton package's."""
    configured = os.environ.get(TRITON_ROOT_ENV)
    if configured:
        root = Path(configured)
        if not (root / "bin" / "tritonserver").exists():
            raise SystemExit(f"error: ${TRITON_ROOT_ENV}={root} has no bin/tritonserver")
        return root
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
    target = backend_directory() / "python" / "triton_python_backend_stub"
    if not source.exists():
        if os.access(target, os.X_OK):  # put in place when the image was built
            return target
        raise SystemExit(f"error: no Python-backend stub for Python {version} at {source}")
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copy2(source, target)
    if not os.access(target, os.X_OK):
        target.chmod(0o755)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mmtriton setup-server` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton setup-server`."""
    print(f"tritonserver: {tritonserver_binary()}")
    print(f"python backend stub: {install_stub()}")
    return 0
