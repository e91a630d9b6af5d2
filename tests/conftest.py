"""Shared fixtures: a real tritonserver on the built model repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mmtriton.layout import missing_onnx
from mmtriton.paths import PROJECT_ROOT, artifacts_dir, model_repository_dir
from mmtriton.server.process import TritonProcess, free_port, start_on_free_ports

__all__ = ["free_port", "start_triton"]  # tests import these from here


def require_repository() -> Path:
    """The exported model repository; fails with the command to run when it is not built."""
    repo = model_repository_dir()
    if missing_onnx(repo):
        pytest.fail(f"{repo} is not exported; run `make repository` (mmtriton build && export)")
    return repo


def start_triton(log_dir: Path, **overrides) -> TritonProcess:
    """Start a tritonserver on free ports and wait until it is ready."""
    repository = overrides.pop("repository", None) or require_repository()
    return start_on_free_ports(repository, log_dir, **overrides)


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory) -> Iterator[TritonProcess]:
    """One real tritonserver for the whole session (tests that kill a server start their own)."""
    server = start_triton(tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def built_artifacts() -> Path:
    """The build folder with the trained model and test data."""
    root = artifacts_dir()
    if not (root / "reports" / "eval.json").exists():
        pytest.fail(f"no build under {root}; run `make model` (mmtriton build)")
    return root


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT
