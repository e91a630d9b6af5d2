"""`mmtriton` subcommands come from entry points (pyproject.toml), not a table of strings."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmtriton import cli

ROOT = Path(__file__).resolve().parents[2]


def _declared(pyproject: Path) -> dict[str, str]:
    data = tomllib.loads(pyproject.read_text())
    return data["project"]["entry-points"][cli.GROUP]


def test_installed_commands_are_the_declared_entry_points():
    declared = _declared(ROOT / "pyproject.toml")
    installed = {name: module for name, (module, _) in cli.commands().items()}
    assert installed == declared, "reinstall the project (make venv) after editing pyproject"


@pytest.mark.parametrize("name", sorted(_declared(ROOT / "pyproject.toml")))
def test_every_command_module_has_the_command_interface_and_a_help_line(name):
    module_name, help_text = cli.commands()[name]
    assert help_text, f"{module_name} has no COMMAND_HELP"
    module = importlib.import_module(module_name)
    assert callable(module.add_arguments) and callable(module.run)
    assert help_text == module.COMMAND_HELP


def test_client_distribution_declares_only_client_commands():
    declared = _declared(ROOT / "client" / "pyproject.toml")
    assert set(declared) == {"infer", "web"}
    assert all(module.startswith("mmtriton_client") for module in declared.values())


def test_help_lists_every_command_without_importing_the_build():
    code = (
        "import sys; from mmtriton.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'mmtriton_build.pipeline' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for name in _declared(ROOT / "pyproject.toml"):
        assert name in out
    assert out.strip().splitlines()[-1] == "False False"
