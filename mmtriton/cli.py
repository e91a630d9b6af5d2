"""`mmtriton`: the project's single command-line entry point.

Each subcommand imports its implementation lazily so that `mmtriton --help` stays instant and a
serving-only install never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Each module exposes `add_arguments(parser)` and
# `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("mmtriton_build.pipeline", "build data, features and the trained default model"),
    "eval": ("mmtriton_build.evaluate", "print the evaluation of the built model"),
    "export": ("mmtriton_build.export.command", "export ONNX, check parity, write the repository"),
    "engines": ("mmtriton_build.export.tensorrt", "build TensorRT engines on this GPU node"),
    "setup-server": ("mmtriton.server.install", "prepare the pinned tritonserver for this venv"),
    "serve": ("mmtriton.server.launcher", "start tritonserver on the model repository"),
    "drain": ("mmtriton.server.drain", "wait until the server has no request in flight"),
    "up": ("mmtriton.stack", "start the whole stack: Triton, the web page, Prometheus"),
    "infer": ("mmtriton_client.cli", "send one request to a running server"),
    "web": ("mmtriton_client.web.command", "start the web page"),
    "top": ("mmtriton.observability.top", "live per-model view from the metrics endpoints"),
    "bench": ("mmtriton_build.bench.command", "benchmark the served pipeline against baselines"),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mmtriton", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
