"""`mmtriton web`: serve the web page (Gradio at /, Prometheus at /metrics)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from mmtriton import spec

from ..cli import add_channel_arguments, channel_options
from ..client import DEFAULT_URL

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "start the web page"

PASSWORD_ENV = "MMTRITON_WEB_PASSWORD"
USER_ENV = "MMTRITON_WEB_USER"
URL_ENV = "MMTRITON_TRITON_URL"
LB_ENV = "MMTRITON_GRPC_LB"


def auth_from_env(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) when MMTRITON_WEB_PASSWORD is set (user from MMTRITON_WEB_USER)."""
    env = os.environ if environ is None else environ
    password = env.get(PASSWORD_ENV)
    if not password:
        return None
    return env.get(USER_ENV) or "admin", password


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton web`."""
    parser.add_argument(
        "--triton-url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help="Triton gRPC target: HOST:PORT, dns:///HOST:PORT (every pod behind a headless "
        f"Service, with --grpc-lb round_robin) or ipv4:A:P,B:Q (default ${URL_ENV} or "
        f"{DEFAULT_URL})",
    )
    # A bad $MMTRITON_GRPC_LB is named by run() (ChannelOptions refuses it).
    add_channel_arguments(parser, lb_default=os.environ.get(LB_ENV) or "pick_first")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        help="address to listen on (default $GRADIO_SERVER_NAME or 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", spec.DEFAULT_WEB_PORT)),
        help=f"port to listen on (default $GRADIO_SERVER_PORT or {spec.DEFAULT_WEB_PORT})",
    )
    parser.add_argument(
        "--triton-ca-cert",
        type=Path,
        help="CA certificate (PEM): talk to Triton over gRPC with TLS, trusting this CA",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for Triton (default 10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests sent to Triton at once (default 8)"
    )
    parser.add_argument(
        "--queue-size", type=int, default=64, help="requests waiting on the page (default 64)"
    )
    parser.add_argument(
        "--examples", type=int, default=8, help="test-set examples in the gallery (default 8)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton web`; serves until interrupted."""
    root_certificates = None
    if args.triton_ca_cert is not None:
        if not args.triton_ca_cert.is_file():
            print(f"error: no such file: {args.triton_ca_cert}", file=sys.stderr)
            return 2
        root_certificates = str(args.triton_ca_cert)  # tritonclient reads the file itself
    try:
        channel = channel_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .app import WebSettings, launch

    auth = auth_from_env()
    settings = WebSettings(
        triton_url=args.triton_url,
        root_certificates=root_certificates,
        ssl=root_certificates is not None,
        timeout_s=args.timeout,
        channel=channel,
        auth=auth,
        concurrency_limit=args.concurrency,
        queue_size=args.queue_size,
        n_examples=args.examples,
    )
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"web page on http://{shown}:{args.port} (metrics at /metrics), Triton at "
        f"{args.triton_url} ({channel.lb_policy}){' over TLS' if settings.ssl else ''}"
        f"{', password protected' if auth else ''}",
        flush=True,
    )
    # uvicorn stops on SIGTERM, then re-raises it under the handler it found: make that a
    # clean exit (0), as a Kubernetes stop is a normal stop, not a crash (143).
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        launch(host=args.host, port=args.port, settings=settings)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
