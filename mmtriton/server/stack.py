"""`mmtriton up` (what `make run` runs): Triton, the web page and a local Prometheus.

Triton runs under the same supervisor as `mmtriton serve` (healed when a step dies). With
$MMTRITON_OTLP_ENDPOINT set (or --otlp-endpoint), Triton, its Python steps and the web page
all export their traces there. Ctrl-C
stops everything: the web page first, then Triton drains its in-flight requests; every child
dies with this process if it is killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mmtriton import spec
from mmtriton.paths import artifacts_dir
from mmtriton.server.launcher import (
    add_server_arguments,
    start_supervised,
    stop_on_signals,
    stop_supervised,
)
from mmtriton.server.process import tied_to_this_process

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "start the whole stack: Triton, the web page, Prometheus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton up`."""
    add_server_arguments(parser)
    parser.add_argument("--web-port", type=int, default=spec.DEFAULT_WEB_PORT, help="web page port")
    parser.add_argument("--no-web", action="store_true", help="do not start the web page")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--no-prometheus", action="store_true", help="no local Prometheus")


def _web_environment(otlp_endpoint: str | None) -> dict[str, str]:
    """The page's environment: with tracing on, it exports its own spans to the same place."""
    from mmtriton_client.tracing import ENDPOINT_ENV

    env = dict(os.environ)
    if otlp_endpoint:
        env[ENDPOINT_ENV] = otlp_endpoint
    return env


def _start_web(
    args: argparse.Namespace, grpc_port: int, otlp_endpoint: str | None = None
) -> subprocess.Popen:
    log = (artifacts_dir() / "logs" / "web.log").open("ab")
    cmd = [
        sys.executable,
        "-m",
        "mmtriton.cli",
        "web",
        "--triton-url",
        f"localhost:{grpc_port}",
        "--port",
        str(args.web_port),
    ]
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_web_environment(otlp_endpoint),
        preexec_fn=tied_to_this_process(),
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton up`."""
    stop = stop_on_signals()
    supervisor = start_supervised(args, stop)
    server = supervisor.server
    assert server is not None
    web = prometheus = None
    healthy = True
    try:
        if not args.no_web:
            web = _start_web(args, server.settings.grpc_port, server.settings.otlp_endpoint)
            print(f"web page: http://localhost:{args.web_port}  (metrics at /metrics)", flush=True)
        if not args.no_prometheus:
            if shutil.which("prometheus") is None:
                print("prometheus not installed (apt-get install prometheus): skipped", flush=True)
            else:
                from mmtriton.observability.prometheus_server import PrometheusServer

                prometheus = PrometheusServer(
                    triton_metrics=f"localhost:{server.settings.metrics_port}",
                    web_metrics=f"localhost:{args.web_port}" if web else None,
                    port=args.prometheus_port,
                    data_dir=Path(artifacts_dir()) / "prometheus",
                )
                prometheus.start()
                print(f"prometheus: http://localhost:{args.prometheus_port}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        healthy = supervisor.run()  # heals tritonserver until Ctrl-C
    finally:
        if prometheus is not None:
            prometheus.stop(timeout_s=5.0)
        if web is not None:
            web.terminate()
            try:
                web.wait(timeout=5)
            except subprocess.TimeoutExpired:
                web.kill()
        stop_supervised(supervisor)
    return 0 if healthy else 1
