"""The dependency rules of the house, read from every import statement of the code.

- the serving core (mmtriton/) and the Triton models (model_repository/) never import the
  build (mmtriton_build) or the harnesses;
- the client (client/mmtriton_client) never imports the build, the server or the harnesses,
  and of the core only the contract modules its distribution ships;
- nothing imports the harness package except its own tests and itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = "mmtriton_harness"
# The core modules the client distribution ships (client/pyproject.toml).
CLIENT_MAY_USE = {"mmtriton", "mmtriton.spec", "mmtriton.paths", "mmtriton.layout", "mmtriton.cli"}


def imports_of(folder: Path) -> list[tuple[Path, str]]:
    """(file, absolute module name) of every import under `folder`."""
    found = []
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path, node.module))
                if "." not in node.module:  # `from mmtriton import spec` imports mmtriton.spec
                    found += [(path, f"{node.module}.{a.name}") for a in node.names]
    return found


def _offending(folder: Path, forbidden) -> list[str]:
    return sorted(f"{p.relative_to(ROOT)}: {m}" for p, m in imports_of(folder) if forbidden(m))


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("folder", ["mmtriton", "model_repository"])
def test_serving_never_imports_the_build_or_the_harness(folder):
    assert _offending(ROOT / folder, lambda m: _is(m, "mmtriton_build") or _is(m, HARNESS)) == []


def test_client_imports_only_its_own_code_and_the_shipped_contract():
    def forbidden(module: str) -> bool:
        if _is(module, "mmtriton_build") or _is(module, HARNESS):
            return True
        # "from mmtriton import spec" is recorded as mmtriton and mmtriton.spec
        return _is(module, "mmtriton") and module not in CLIENT_MAY_USE

    assert _offending(ROOT / "client" / "mmtriton_client", forbidden) == []


def test_only_the_harness_and_its_tests_import_the_harness():
    outside = [ROOT / "mmtriton", ROOT / "client", ROOT / "build", ROOT / "model_repository"]
    for folder in outside:
        assert _offending(folder, lambda m: _is(m, HARNESS)) == [], folder
