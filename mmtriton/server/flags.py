"""The tritonserver command line, defined once.

`mmtriton serve` and the Kubernetes manifests both use these flags; a test renders the manifests
and compares their container args with `triton_args` so the two cannot drift.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from mmtriton import spec

PROFILES = ("cpu", "gpu")
DEFAULT_PORTS = spec.DEFAULT_PORTS

# Each Python-backend instance maps a region of this size in /dev/shm; it grows on demand.
PYTHON_SHM_DEFAULT_BYTES = 8 * 1024 * 1024
PYTHON_SHM_GROWTH_BYTES = 8 * 1024 * 1024
# Triton drains in-flight requests this long on SIGTERM; Kubernetes' grace period must exceed it.
EXIT_TIMEOUT_S = 30
# APIs that change server state or expose /dev/shm: callable only with the admin header.
RESTRICTED_APIS = "shared-memory,model-repository,trace,logging"
ADMIN_HEADER = "mmtriton-admin"
# gRPC clients reconnect (and re-resolve DNS) this often, so new replicas get traffic.
GRPC_MAX_CONNECTION_AGE_MS = 300_000
GRPC_MAX_CONNECTION_AGE_GRACE_MS = 30_000
# OpenTelemetry: Triton samples one request in this many (a sampled request is traced through
# every step); the overhead at this rate is measured by `mmtriton bench --cache-trace`.
DEFAULT_TRACE_RATE = 100
# Read by `mmtriton serve`/`make run` as the default endpoint, and by the Python-backend steps
# (which inherit tritonserver's environment) to export their own spans to the same place.
OTLP_ENDPOINT_ENV = "MMTRITON_OTLP_ENDPOINT"
TRACE_SERVICE_NAME = "tritonserver"
# Triton batches its span exports; a second keeps traces current at negligible cost.
TRACE_EXPORT_DELAY_MS = 1000
# Triton's local response cache, shared by the models whose config enables it (the encoders:
# see export/repository.py). An image embedding is ~5 KB, so 64 MiB holds ~10^4 answers.
DEFAULT_RESPONSE_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """What differs between deployments; everything else in `triton_args` is fixed policy."""

    model_repository: str
    profile: str = "cpu"
    http_port: int = DEFAULT_PORTS["http"]
    grpc_port: int = DEFAULT_PORTS["grpc"]
    metrics_port: int = DEFAULT_PORTS["metrics"]
    # Served by `mmtriton serve` itself, not by tritonserver (see supervisor.py).
    health_port: int = DEFAULT_PORTS["health"]
    backend_directory: str | None = None
    # Optional gRPC TLS (Triton offers TLS on gRPC only): PEM file paths.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_root_cert: str | None = None
    # Value of the admin header for the restricted APIs. Random per start unless set; Kubernetes
    # passes "$(MMTRITON_ADMIN_KEY)" from a Secret.
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    # OTLP/HTTP traces endpoint (".../v1/traces"); None: no tracing.
    otlp_endpoint: str | None = None
    trace_rate: int = DEFAULT_TRACE_RATE
    # Size of the local response cache; 0 turns it off.
    response_cache_bytes: int = DEFAULT_RESPONSE_CACHE_BYTES
    # Folder holding Triton's cache libraries; default: the wheel's (cache_directory()).
    cache_directory: str | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {PROFILES}")
        if not self.admin_key:
            raise ValueError("admin_key must not be empty: it guards the admin APIs")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("gRPC TLS needs both a certificate and a key")
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"OTLP endpoint {self.otlp_endpoint!r} must be an http(s) URL, "
                "e.g. http://collector:4318/v1/traces"
            )
        if self.trace_rate < 1:
            raise ValueError(f"trace rate must be >= 1 (one request in N), got {self.trace_rate}")
        if self.response_cache_bytes < 0:
            raise ValueError(
                f"response cache size must be >= 0 bytes (0: off), got {self.response_cache_bytes}"
            )


def cache_directory() -> str:
    """The wheel's folder of Triton cache libraries (holds `local/libtritoncache_local.so`)."""
    from .install import triton_root

    return str(triton_root() / "caches")


def tracing_args(settings: ServerSettings) -> list[str]:
    """OpenTelemetry export of every sampled request: one trace, a span per ensemble step."""
    if not settings.otlp_endpoint:
        return []
    return [
        "--trace-config=mode=opentelemetry",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=rate={settings.trace_rate}",
        "--trace-config=count=-1",
        f"--trace-config=opentelemetry,url={settings.otlp_endpoint}",
        f"--trace-config=opentelemetry,resource=service.name={TRACE_SERVICE_NAME}",
        f"--trace-config=opentelemetry,bsp_schedule_delay={TRACE_EXPORT_DELAY_MS}",
    ]


def cache_args(settings: ServerSettings) -> list[str]:
    """The local response cache (used by models whose config has `response_cache`)."""
    if settings.response_cache_bytes == 0:
        return []
    return [
        f"--cache-directory={settings.cache_directory or cache_directory()}",
        f"--cache-config=local,size={settings.response_cache_bytes}",
    ]


def triton_args(settings: ServerSettings) -> list[str]:
    """The full tritonserver argument list (without the binary) for these settings."""
    args = [
        f"--model-repository={settings.model_repository}",
        # Clients may not load, unload or list models: the repository is fixed at start.
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        # Configs are complete; auto-complete would import every model.py twice at start.
        "--disable-auto-complete-config",
        f"--http-port={settings.http_port}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",
        f"--allow-gpu-metrics={'true' if settings.profile == 'gpu' else 'false'}",
        "--metrics-config=summary_latencies=true",
        f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={PYTHON_SHM_GROWTH_BYTES}",
        "--log-verbose=0",
        f"--grpc-restricted-protocol={RESTRICTED_APIS}:{ADMIN_HEADER}={settings.admin_key}",
        f"--http-restricted-api={RESTRICTED_APIS}:{ADMIN_HEADER}={settings.admin_key}",
        f"--grpc-max-connection-age={GRPC_MAX_CONNECTION_AGE_MS}",
        f"--grpc-max-connection-age-grace={GRPC_MAX_CONNECTION_AGE_GRACE_MS}",
    ]
    if settings.profile == "gpu":
        args.append("--model-config-name=gpu")
    else:
        # No CUDA: skip the pinned and device memory pools instead of failing to allocate them.
        args += ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
    if settings.backend_directory:
        args.append(f"--backend-directory={settings.backend_directory}")
    if settings.tls_cert:
        args += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={settings.tls_cert}",
            f"--grpc-server-key={settings.tls_key}",
        ]
        if settings.tls_root_cert:
            args += [f"--grpc-root-cert={settings.tls_root_cert}", "--grpc-use-ssl-mutual=true"]
    return args + tracing_args(settings) + cache_args(settings)


def serve_args(settings: ServerSettings, admin_key_file: str | None = None) -> list[str]:
    """The `mmtriton serve` options that reproduce `settings` (the Kubernetes container args).

    The admin key never appears on a command line: pass `admin_key_file` (a mounted Secret),
    or the server draws a random key at start.
    """
    args = [
        f"--profile={settings.profile}",
        f"--repository={settings.model_repository}",
        f"--http-port={settings.http_port}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-port={settings.metrics_port}",
        f"--health-port={settings.health_port}",
    ]
    if settings.tls_cert:
        args += [f"--tls-cert={settings.tls_cert}", f"--tls-key={settings.tls_key}"]
        if settings.tls_root_cert:
            args.append(f"--tls-root-cert={settings.tls_root_cert}")
    if settings.otlp_endpoint:
        args += [f"--otlp-endpoint={settings.otlp_endpoint}", f"--trace-rate={settings.trace_rate}"]
    args.append(f"--response-cache-bytes={settings.response_cache_bytes}")
    if admin_key_file:
        args.append(f"--admin-key-file={admin_key_file}")
    return args
