"""The stage measurements run on the `mmtriton` core of another commit, for before/after.

On a shared machine even CPU time drifts by tens of percent within minutes, so a figure
measured once "before" cannot be compared with one measured later "after". ``snapshot``
writes a commit's ``mmtriton/`` folder to a temporary folder (``git archive``), and
``python -m mmtriton_harness.bench.core_at DIR [stages args]`` runs stages.py with
``mmtriton`` imported from ``DIR`` (everything else, the harness included, from this checkout):
the bench alternates the two in each round and reports their paired ratio.

Today's client and harness code may read contract names (``mmtriton.spec``) added after that
commit; the old code never reads them, so the snapshot's spec gets them from today's spec
(its own names keep their old values).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import subprocess
import sys
import tarfile
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

CORE_PACKAGE = "mmtriton"


class CoreFinder:
    """A meta-path finder that resolves the top-level ``mmtriton`` package in one folder
    (ahead of the editable install's finder); its submodules follow the package's path."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname != CORE_PACKAGE:
            return None
        return PathFinder.find_spec(fullname, [self.folder])


def snapshot(commit: str, dest: Path, checkout: Path | None = None) -> Path:
    """`commit`'s ``mmtriton/`` written under `dest`; returns `dest` (the folder to import
    from). Raises RuntimeError when git cannot produce it (no checkout, unknown commit)."""
    checkout = checkout or Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        ["git", "-C", str(checkout), "archive", "--format=tar", commit, CORE_PACKAGE],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"git archive {commit} {CORE_PACKAGE} failed: {proc.stderr.decode().strip()}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _add_new_contract_names(old_spec) -> None:
    """Names today's spec defines and `old_spec` lacks, set on `old_spec` (see the docstring)."""
    today = Path(__file__).resolve().parents[3] / CORE_PACKAGE / "spec.py"
    loader_spec = importlib.util.spec_from_file_location("_mmtriton_spec_today", today)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[loader_spec.name] = module  # dataclasses look their module up while built
    try:
        loader_spec.loader.exec_module(module)
    finally:
        del sys.modules[loader_spec.name]
    for name, value in vars(module).items():
        if not name.startswith("__") and not hasattr(old_spec, name):
            setattr(old_spec, name, value)


def main(argv: list[str] | None = None) -> int:
    """``core_at DIR [stages args]``: stages.main with ``mmtriton`` from DIR."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m mmtriton_harness.bench.core_at DIR [stages args]")
    folder = Path(argv.pop(0)).resolve()
    if CORE_PACKAGE in sys.modules:
        raise RuntimeError(f"{CORE_PACKAGE} is already imported; the snapshot cannot replace it")
    sys.meta_path.insert(0, CoreFinder(folder))
    _add_new_contract_names(importlib.import_module(f"{CORE_PACKAGE}.spec"))
    from .stages import main as stages_main

    return stages_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
