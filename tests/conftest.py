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


# What each top-level test folder needs, as markers: `-m "not integration"` runs what needs no
# server, `-m "not browser"` skips Chromium. Markers come from the folder, so they cannot
# contradict it; a test marked for more than its folder allows is a collection error.
TESTS_DIR = Path(__file__).resolve().parent
FOLDER_MARKERS: dict[str, set[str]] = {
    "unit": set(),
    "integration": {"integration"},
    "reliability": {"integration", "slow"},
    "browser": {"integration", "browser"},
}
NEEDS = ("integration", "browser")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        folder = Path(str(item.fspath)).resolve().relative_to(TESTS_DIR).parts[0]
        allowed = FOLDER_MARKERS.get(folder)
        if allowed is None:
            raise pytest.UsageError(
                f"{item.nodeid}: tests/{folder}/ has no entry in FOLDER_MARKERS"
            )
        for name in sorted(allowed):
            item.add_marker(name)
        extra = {m for m in NEEDS if item.get_closest_marker(m)} - allowed
        if extra:
            raise pytest.UsageError(
                f"{item.nodeid} is marked {sorted(extra)} but lives in tests/{folder}/: "
                "move it to the folder of what it needs"
            )
