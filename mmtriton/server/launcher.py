"""`mmtriton serve`: run tritonserver on the model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from mmtriton.paths import artifacts_dir, model_repository_dir

from .flags import EXIT_TIMEOUT_S, PROFILES, ServerSettings
from .process import TritonProcess


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `mmtriton serve` and `mmtriton up`."""
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="cpu or gpu configs")
    parser.add_argument(
        "--repository", type=Path, help="model repository (default: ./model_repository)"
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--tls-cert", help="PEM certificate: serve gRPC over TLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--log", type=Path, help="server log file (default: artifacts/logs/)")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from parsed options."""
    repo = (args.repository or model_repository_dir()).resolve()
    missing = [p for p in repo.glob("*_encoder/1") if not (p / "model.onnx").exists()]
    if args.profile == "cpu" and missing:
        raise SystemExit(
            f"error: {repo} has no ONNX models ({missing[0]} is empty); run `mmtriton export`"
        )
    return ServerSettings(
        model_repository=str(repo),
        profile=args.profile,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def start_server(args: argparse.Namespace) -> TritonProcess:
    """Start tritonserver and wait until ready, with a clear error when it cannot start."""
    log = args.log or artifacts_dir() / "logs" / "tritonserver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = TritonProcess(settings_from_args(args), log_path=log)
    print(f"starting tritonserver ({args.profile} profile), log: {log}", flush=True)
    server.start()
    try:
        server.wait_ready()
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        hint = (
            "\nIf a port is in use, pass --http-port/--grpc-port/--metrics-port or stop the other "
            "server; if /dev/shm is full, free space there (df -h /dev/shm)."
        )
        raise SystemExit(f"error: {exc}{hint}") from exc
    s = server.settings
    print(
        f"ready: gRPC {s.grpc_port}, HTTP {s.http_port}, metrics http://localhost:{s.metrics_port}/metrics",
        flush=True,
    )
    return server


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton serve`."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton serve`: forwards SIGTERM/Ctrl-C as a graceful drain."""
    server = start_server(args)
    wait_for_signal()
    print(f"draining in-flight requests (up to {EXIT_TIMEOUT_S} s)...", flush=True)
    code = server.stop()
    print(f"tritonserver exited with code {code}", flush=True)
    return 0 if code == 0 else 1
