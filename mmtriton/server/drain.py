"""Wait until the pipeline has no request in flight, before tritonserver gets SIGTERM.

Triton 2.51 crashed here (SIGSEGV in TRITONBACKEND_ResponseSend) when SIGTERM arrived while
ensemble requests were executing over gRPC, losing every in-flight request. So the launcher
(and the Kubernetes preStop hook) first waits for quiet: nothing queued at the first step and
every sample that preprocessing accepted has left fusion. New requests are still served
meanwhile; the wait is bounded.

Under steady traffic "quiet" is only a moment, and requests arriving between that moment and
SIGTERM still met it (measured: SIGSEGV, 6 in-flight requests reset). So the drain then raises a
flag file (``$MMTRITON_DRAIN_FILE``): while it exists, the first step refuses new requests with
UNAVAILABLE (retryable, before the graph fans out) and the pipeline empties for good.

A caller that admission refused (overload) is not in flight anywhere the metrics can see: it
sleeps in its retry backoff and comes back. Raising the flag then would turn its retry into a
failure (seen in CI: a burst of 32 on a slow machine, one request refused, then "connection
refused" after the server left). So "quiet" also needs no refusal in the last
`spec.RETRY_MAX_BACKOFF_S` plus a margin for the retry's own trip (RETRY_GRACE_S): by then
every refused caller has retried.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.error
import urllib.request

from mmtriton import spec
from mmtriton.backend.admission import REFUSED_METRIC

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "wait until the server has no request in flight"

PENDING = "nv_inference_pending_request_count"
ACCEPTED = "mmtriton_modality_requests_total"
COMPLETED = "mmtriton_pipeline_seconds_count"
# Refusals callers may retry: admission's (REFUSED_METRIC) and the ensemble's failures, Triton's
# own queue refusals among them (measured: "Exceeds maximum queue size" counts under reason
# OTHER). A failure nobody retries only makes the drain wait longer.
FAILURE = "nv_inference_request_failure"
# A refused caller retries within the client's longest backoff; a margin for its request time.
RETRY_GRACE_S = spec.RETRY_MAX_BACKOFF_S + 0.5
# Names the drain flag file; tritonserver's environment carries it to the preprocess model.
DRAIN_FILE_ENV = "MMTRITON_DRAIN_FILE"
# After the flag is raised only requests already past preprocessing remain: this is plenty.
FLAGGED_DRAIN_TIMEOUT_S = 5.0


def draining(path: str | None) -> bool:
    """True when the drain flag file `path` exists (the preprocess model asks per batch)."""
    return bool(path) and os.path.exists(path)


def raise_flag(path: str | os.PathLike | None) -> bool:
    """Create the drain flag file; False when no path is configured."""
    if not path:
        return False
    with open(path, "a"):
        pass
    return True


def in_flight(metrics_text: str) -> float:
    """Requests queued anywhere plus samples accepted by preprocess and not yet fused."""
    from prometheus_client.parser import text_string_to_metric_families

    pending = accepted = completed = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == PENDING:
                pending += sample.value
            elif sample.name == ACCEPTED:
                accepted += sample.value
            elif sample.name == COMPLETED:
                completed += sample.value
    return pending + max(accepted - completed, 0.0)


def refused(metrics_text: str) -> float:
    """Requests refused so far that a client may retry (admission, the ensemble's failures)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            # By family: the parser names a counter's samples <family>_total.
            failed = family.name == FAILURE and sample.labels.get("model") == spec.ENSEMBLE.name
            if sample.name == REFUSED_METRIC or failed:
                total += sample.value
    return total


def wait_until_idle(
    metrics_url: str,
    timeout_s: float,
    poll_s: float = 0.1,
    retry_grace_s: float = RETRY_GRACE_S,
) -> bool:
    """Poll until nothing is in flight twice in a row and no request was refused within
    `retry_grace_s` (its caller is about to retry); False when `timeout_s` ran out."""
    start = time.monotonic()
    deadline = start + timeout_s
    quiet = 0
    last_refused, refused_at = None, start - retry_grace_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(metrics_url, timeout=2) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return True  # metrics gone: the server is not serving anything either
        now, count = time.monotonic(), refused(text)
        # Refusals before the first look may be just now: assume so (it costs one grace).
        if count > (0.0 if last_refused is None else last_refused):
            refused_at = now
        last_refused = count
        busy = in_flight(text) > 0 or now - refused_at < retry_grace_s
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return True
        time.sleep(poll_s)
    return False


def drain(metrics_url: str, timeout_s: float, flag_path: str | os.PathLike | None) -> bool:
    """Serve what arrives until quiet (or `timeout_s`), then refuse new requests and empty out.

    True when the pipeline was empty at the end (SIGTERM is then safe).
    """
    idle = wait_until_idle(metrics_url, timeout_s)
    if raise_flag(flag_path):
        # From here on the refusals are the flag's own: nobody is waited for any more.
        idle = wait_until_idle(metrics_url, FLAGGED_DRAIN_TIMEOUT_S, retry_grace_s=0.0)
    return idle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton drain`."""
    parser.add_argument(
        "--metrics-url", default=f"http://localhost:{spec.DEFAULT_PORTS['metrics']}/metrics"
    )
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds to wait at most")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton drain` (the Kubernetes preStop hook runs it)."""
    idle = drain(args.metrics_url, args.timeout, os.environ.get(DRAIN_FILE_ENV))
    print(f"{spec.ENSEMBLE.name}: {'idle' if idle else 'still busy after the timeout'}")
    return 0
