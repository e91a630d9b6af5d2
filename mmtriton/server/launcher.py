"""`mmtriton serve`: tritonserver under a supervisor that heals it, until Ctrl-C or SIGTERM.

The supervisor (supervisor.py) restarts tritonserver when a step dies or hangs, and serves the
health endpoint that Kubernetes probes (health.py). Stopping is bounded (< 30 s, exit 0) in
every state, and tritonserver never outlives this process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from mmtriton.layout import missing_onnx
from mmtriton.paths import artifacts_dir, model_repository_dir

from .flags import (
    DEFAULT_PORTS,
    DEFAULT_RESPONSE_CACHE_BYTES,
    DEFAULT_TRACE_RATE,
    OTLP_ENDPOINT_ENV,
    PROFILES,
    ServerSettings,
)
from .health import HealthServer, HealthState
from .supervisor import StopRequested, Supervisor

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "serve the model repository, healing it (health on :8003)"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `mmtriton serve` and `mmtriton up`."""
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="cpu or gpu configs")
    parser.add_argument(
        "--repository", type=Path, help="model repository (default: ./model_repository)"
    )
    for name, port in DEFAULT_PORTS.items():
        what = "supervisor's health endpoint (/ready, /live, /status)" if name == "health" else ""
        parser.add_argument(f"--{name}-port", type=int, default=port, help=what or None)
    parser.add_argument("--tls-cert", help="PEM certificate: serve gRPC over TLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--tls-root-cert", help="PEM CA: require client certificates (mTLS)")
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        help="file holding the admin header's key (a mounted Secret); default: random per start",
    )
    parser.add_argument(
        "--log",
        help="tritonserver log file, or - for this process's output (default: artifacts/logs/)",
    )
    parser.add_argument(
        "--otlp-endpoint",
        default=os.environ.get(OTLP_ENDPOINT_ENV) or None,
        help="export OpenTelemetry traces over OTLP/HTTP to this URL (e.g. "
        f"http://collector:4318/v1/traces); default: ${OTLP_ENDPOINT_ENV}, else no tracing",
    )
    parser.add_argument(
        "--trace-rate",
        type=int,
        default=DEFAULT_TRACE_RATE,
        help=f"trace one request in N (default {DEFAULT_TRACE_RATE}; 1 traces every request)",
    )
    parser.add_argument(
        "--response-cache-bytes",
        type=int,
        default=DEFAULT_RESPONSE_CACHE_BYTES,
        help="size of the encoders' response cache in bytes "
        f"(default {DEFAULT_RESPONSE_CACHE_BYTES}; 0 turns it off)",
    )


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from parsed options; SystemExit with the fix when they cannot work."""
    repo = (args.repository or model_repository_dir()).resolve()
    if not repo.is_dir():
        raise SystemExit(f"error: model repository {repo} does not exist; run `make repository`")
    missing = missing_onnx(repo)
    if args.profile == "cpu" and missing:
        raise SystemExit(
            f"error: {repo} has no ONNX models ({missing[0]} is missing); run `mmtriton export`"
        )
    extra = {}
    if args.admin_key_file is not None:
        try:
            key = args.admin_key_file.read_text().strip()
        except OSError as exc:
            raise SystemExit(f"error: cannot read --admin-key-file: {exc}") from exc
        if not key:
            raise SystemExit(f"error: --admin-key-file {args.admin_key_file} is empty")
        extra["admin_key"] = key
    try:
        return ServerSettings(
            model_repository=str(repo),
            profile=args.profile,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_root_cert=args.tls_root_cert,
            otlp_endpoint=args.otlp_endpoint,
            trace_rate=args.trace_rate,
            response_cache_bytes=args.response_cache_bytes,
            **extra,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc


def log_path_from_args(args: argparse.Namespace) -> Path | None:
    """Where tritonserver writes its log; None means this process's own output."""
    if args.log == "-":
        return None
    log = Path(args.log) if args.log else artifacts_dir() / "logs" / "tritonserver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return log


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (handlers installed in the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start_supervised(args: argparse.Namespace, stop: threading.Event) -> Supervisor:
    """Start tritonserver under a supervisor with its health endpoint; SystemExit on failure."""
    settings = settings_from_args(args)
    log = log_path_from_args(args)
    if settings.otlp_endpoint:
        # Inherited by tritonserver, so its Python-backend steps export their spans there too.
        os.environ[OTLP_ENDPOINT_ENV] = settings.otlp_endpoint
    health = HealthState()
    try:
        health_server = HealthServer(health, settings.health_port).start()
    except OSError as exc:
        raise SystemExit(
            f"error: health port {settings.health_port} is not free ({exc.strerror}); "
            "pass --health-port or stop the other server"
        ) from exc
    supervisor = Supervisor(settings, log, health, health_server=health_server, stop_event=stop)
    print(
        f"starting tritonserver ({args.profile} profile), log: {log or 'this output'}", flush=True
    )
    try:
        supervisor.start()
    except StopRequested:
        health_server.stop()
        raise SystemExit(0) from None
    except (RuntimeError, TimeoutError) as exc:
        health_server.stop()
        hint = (
            "\nIf a port is in use, pass --http-port/--grpc-port/--metrics-port or stop the other "
            "server; if /dev/shm is full, free space there (df -h /dev/shm)."
        )
        raise SystemExit(f"error: {exc}{hint}") from exc
    s = settings
    print(
        f"ready: gRPC {s.grpc_port}, HTTP {s.http_port}, "
        f"metrics http://localhost:{s.metrics_port}/metrics, "
        f"health http://localhost:{s.health_port}/ready",
        flush=True,
    )
    tracing = f"1 request in {s.trace_rate} to {s.otlp_endpoint}" if s.otlp_endpoint else "off"
    cache = f"{s.response_cache_bytes} bytes" if s.response_cache_bytes else "off"
    print(f"tracing: {tracing}; response cache: {cache}", flush=True)
    return supervisor


def stop_supervised(supervisor: Supervisor) -> int:
    """Bounded stop of the server and the health endpoint; the exit code to return."""
    print("stopping: draining in-flight requests (at most ~25 s)...", flush=True)
    code = supervisor.stop()
    if supervisor.health_server is not None:
        supervisor.health_server.stop()
    if code == 0:
        print("stopped: tritonserver exited with code 0", flush=True)
    else:  # killed after a fault or past the grace period: stopped all the same
        print(f"stopped: tritonserver did not exit cleanly (code {code}); killed", flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton serve`."""
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton serve`: serve, heal, stop on SIGTERM/Ctrl-C."""
    stop = stop_on_signals()
    supervisor = start_supervised(args, stop)
    healthy = supervisor.run()
    code = stop_supervised(supervisor)
    if not healthy:
        print("error: the server could not be healed; see the log above", file=sys.stderr)
        return 1
    return code
