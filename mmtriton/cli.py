"""`mmtriton`: the project's single command-line entry point.

Subcommands are registered by the installed distributions as entry points in the group
`mmtriton.commands` (pyproject.toml): the client distribution brings `infer` and `web`, the
full project everything else. Each entry point names a module with `add_arguments(parser)` and
`run(args) -> int`; a module is imported only when its command runs, so `mmtriton --help`
stays instant and a client-only install never imports the server or the build.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from importlib.metadata import entry_points

GROUP = "mmtriton.commands"


def commands() -> dict[str, tuple[str, str]]:
    """{name: (module, one-line help)} of every installed subcommand, in a stable order.

    An entry point's value is the module; its `COMMAND_HELP` is the help.
    """
    found = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        found[ep.name] = (ep.value, _command_help(ep.value))
    return found


def _command_help(module_name: str) -> str:
    """The module's `COMMAND_HELP` string, read from its source without importing it (a heavy
    module such as the build's would import torch just to print --help)."""
    import ast
    import importlib.util

    try:
        origin = importlib.util.find_spec(module_name).origin  # type: ignore[union-attr]
        with open(origin, encoding="utf-8") as f:  # type: ignore[arg-type]
            tree = ast.parse(f.read())
    except (ImportError, AttributeError, OSError, SyntaxError, TypeError, ValueError):
        return ""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["COMMAND_HELP"]
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return ""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand.

    A reader that stops early (``mmtriton infer ... | head -1``) closes the pipe under the
    output: like other Unix tools the command then stops quietly, with 141 (128 + SIGPIPE),
    instead of a BrokenPipeError traceback.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python would try to flush stdout again at exit and print the error a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = commands()
    parser = argparse.ArgumentParser(prog="mmtriton", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in table else None
    for name, (module_name, help_text) in table.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(sub_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(table[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
