"""`mmtriton top`: a live per-model view of the pipeline from Triton's metrics endpoint.

For operators without Grafana. It reads the Prometheus text from Triton's metrics port (and,
with --web-url, the web page's /metrics), samples twice an interval apart and shows, per model:
requests and inferences per second, average batch size, average queue and compute time per
request (from Triton's cumulative duration counters), latency percentiles from the pipeline's
own histograms and failures by reason; then the pipeline's end-to-end percentiles, the modality
mix, preprocess rejections, the encoders' response-cache hit ratio, CPU/GPU use and the
web page. `--once` prints one view and exits.

Everything but the HTTP fetch is a pure function of two snapshots, so it is tested offline.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mmtriton import spec
from mmtriton.observability import metrics as m
from mmtriton_client.web import metrics as wm

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "live per-model view from the metrics endpoints"

DEFAULT_URL = f"http://localhost:{spec.DEFAULT_PORTS['metrics']}/metrics"
Labels = Mapping[str, str]


# --- snapshots -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """All samples of one scrape: sample name -> [(labels, value)], and when it was taken."""

    at: float
    samples: Mapping[str, list[tuple[dict[str, str], float]]]

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return list(self.samples.get(name, ()))

    def sum_by(
        self, name: str, keys: tuple[str, ...], where: Callable[[Labels], bool] | None = None
    ) -> dict[tuple[str, ...], float]:
        """Sum of `name` grouped by the values of `keys` (like PromQL `sum by`)."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in self.series(name):
            if where is None or where(labels):
                out[tuple(labels.get(k, "") for k in keys)] += value
        return dict(out)


def parse_metrics(text: str, at: float = 0.0) -> Snapshot:
    """Parse Prometheus text exposition into a Snapshot.

    prometheus_client's parser renames counter samples to `<family>_total`; each counter sample
    is therefore also filed under its family name, so both `nv_inference_count` (as Triton
    writes it) and `mmtriton_modality_requests_total` are found by the name on the wire.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names = {sample.name}
            if family.type == "counter" and sample.name == f"{family.name}_total":
                names.add(family.name)
            for name in names:
                samples[name].append((dict(sample.labels), float(sample.value)))
    return Snapshot(at=at, samples=dict(samples))


def fetch_metrics(url: str, timeout_s: float = 5.0) -> str:
    """GET a metrics endpoint; raises OSError (URLError) when it cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8", errors="replace")


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot:
    """Fetch and parse `url` now."""
    return parse_metrics(fetch_metrics(url, timeout_s), at=time.monotonic())


def counter_deltas(
    before: Snapshot,
    after: Snapshot,
    name: str,
    keys: tuple[str, ...],
    where: Callable[[Labels], bool] | None = None,
) -> dict[tuple[str, ...], float]:
    """Increase of counter `name` per group between two snapshots (a reset counts from 0)."""
    old, new = before.sum_by(name, keys, where), after.sum_by(name, keys, where)
    return {k: (v - old.get(k, 0.0) if v >= old.get(k, 0.0) else v) for k, v in new.items()}


def histogram_quantiles(
    before: Snapshot,
    after: Snapshot,
    name: str,
    quantiles: tuple[float, ...],
    where: Callable[[Labels], bool] | None = None,
) -> tuple[float, ...]:
    """Quantiles of the observations histogram `name` gained between two snapshots.

    Bucket increases are summed over every series that passes `where` (all replicas), like
    `histogram_quantile(q, sum by (le) (increase(name_bucket[...])))`.
    """
    increases = counter_deltas(before, after, f"{name}_bucket", ("le",), where)
    buckets = [(float(le), count) for (le,), count in increases.items() if le]
    return tuple(m.quantile_from_buckets(q, buckets) for q in quantiles)


# --- the view ------------------------------------------------------------------------------
QUANTILES = (0.5, 0.95, 0.99)
# Triton's response-cache counters, per model (only models whose config enables the cache).
CACHE_HITS = "nv_cache_num_hits_per_model"
CACHE_MISSES = "nv_cache_num_misses_per_model"


@dataclass
class ModelRow:
    """One model over the interval; None where there is nothing to compute from."""

    model: str
    requests_per_s: float
    inferences_per_s: float
    batch_size: float | None
    queue_ms: float | None
    compute_ms: float | None
    percentiles_ms: tuple[float, ...] | None
    pending: float
    failures: dict[str, float] = field(default_factory=dict)


@dataclass
class WebView:
    requests_per_s: float
    percentiles_ms: tuple[float, ...]
    errors: dict[str, float]


@dataclass
class View:
    """Everything `mmtriton top` prints for one interval."""

    interval_s: float
    rows: list[ModelRow]
    pipeline_per_s: float
    pipeline_ms: tuple[float, ...]
    modalities: dict[str, float]
    preprocess_failures: dict[str, float]
    cpu_utilization: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    gpus: list[tuple[str, float | None, float | None, float | None]]
    web: WebView | None = None
    # Response cache per model over the interval: (hits, misses); None: no cache on the server.
    cache: dict[str, tuple[float, float]] | None = None


def _model_order(model: str) -> tuple[int, str]:
    names = [s.name for s in spec.ALL_MODELS]
    return (names.index(model) if model in names else len(names), model)


def _ms(seconds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(s * 1000 for s in seconds)


def build_view(
    before: Snapshot,
    after: Snapshot,
    web_before: Snapshot | None = None,
    web_after: Snapshot | None = None,
) -> View:
    """The per-model view of what happened between two snapshots of Triton's metrics."""
    seconds = max(after.at - before.at, 1e-9)

    def delta(name: str, keys: tuple[str, ...] = ("model",)) -> dict[tuple[str, ...], float]:
        return counter_deltas(before, after, name, keys)

    success = delta("nv_inference_request_success")
    inferences = delta("nv_inference_count")
    executions = delta("nv_inference_exec_count")
    queue_us = delta("nv_inference_queue_duration_us")
    compute_us: dict[tuple[str, ...], float] = defaultdict(float)
    for part in ("input", "infer", "output"):
        for key, value in delta(f"nv_inference_compute_{part}_duration_us").items():
            compute_us[key] += value
    failures = delta("nv_inference_request_failure", ("model", "reason"))
    pending = after.sum_by("nv_inference_pending_request_count", ("model",))
    executed = {labels.get("model") for labels, _ in after.series(f"{m.EXECUTE_SECONDS}_count")}

    models = {k[0] for k in success} | {k[0] for k in inferences} | executed
    rows = []
    for model in sorted(models - {None, ""}, key=_model_order):
        key = (model,)
        ok, execs = success.get(key, 0.0), executions.get(key, 0.0)
        percentiles = None
        if model == spec.ENSEMBLE.name:
            percentiles = _ms(histogram_quantiles(before, after, m.PIPELINE_SECONDS, QUANTILES))
        elif model in executed:
            percentiles = _ms(
                histogram_quantiles(
                    before,
                    after,
                    m.EXECUTE_SECONDS,
                    QUANTILES,
                    lambda labels, model=model: labels.get("model") == model,
                )
            )
        rows.append(
            ModelRow(
                model=model,
                requests_per_s=ok / seconds,
                inferences_per_s=inferences.get(key, 0.0) / seconds,
                batch_size=inferences.get(key, 0.0) / execs if execs else None,
                queue_ms=queue_us.get(key, 0.0) / ok / 1000 if ok else None,
                compute_ms=compute_us.get(key, 0.0) / ok / 1000 if ok else None,
                percentiles_ms=percentiles,
                pending=pending.get(key, 0.0),
                failures={r: n for (mod, r), n in failures.items() if mod == model and n > 0},
            )
        )

    pipeline_count = sum(counter_deltas(before, after, f"{m.PIPELINE_SECONDS}_count", ()).values())
    modalities = {k[0]: v for k, v in delta(m.MODALITY_REQUESTS, ("modalities",)).items() if v > 0}
    rejected = {k[0]: v for k, v in delta(m.PREPROCESS_FAILURES, ("reason",)).items() if v > 0}

    def gauge(name: str, keys: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
        return after.sum_by(name, keys)

    cpu = after.series("nv_cpu_utilization")
    gpu_util = gauge("nv_gpu_utilization", ("gpu_uuid",))
    gpu_used = gauge("nv_gpu_memory_used_bytes", ("gpu_uuid",))
    gpu_total = gauge("nv_gpu_memory_total_bytes", ("gpu_uuid",))
    gpus = [
        (uuid[0], gpu_util.get(uuid), gpu_used.get(uuid), gpu_total.get(uuid))
        for uuid in sorted(set(gpu_util) | set(gpu_used))
    ]
    cache = None
    if after.series(CACHE_HITS):
        hits, misses = delta(CACHE_HITS), delta(CACHE_MISSES)
        cache = {
            k[0]: (hits.get(k, 0.0), misses.get(k, 0.0))
            for k in sorted(set(hits) | set(misses), key=lambda k: _model_order(k[0]))
        }
    web = None
    if web_before is not None and web_after is not None:
        web_seconds = max(web_after.at - web_before.at, 1e-9)
        web_requests = sum(counter_deltas(web_before, web_after, wm.WEB_REQUESTS, ()).values())
        web_errors = counter_deltas(web_before, web_after, wm.WEB_ERRORS, ("kind",))
        web = WebView(
            requests_per_s=web_requests / web_seconds,
            percentiles_ms=_ms(
                histogram_quantiles(web_before, web_after, wm.WEB_REQUEST_SECONDS, QUANTILES)
            ),
            errors={k[0]: v for k, v in web_errors.items() if v > 0},
        )
    return View(
        interval_s=seconds,
        rows=rows,
        pipeline_per_s=pipeline_count / seconds,
        pipeline_ms=_ms(histogram_quantiles(before, after, m.PIPELINE_SECONDS, QUANTILES)),
        modalities=modalities,
        preprocess_failures=rejected,
        cpu_utilization=sum(v for _, v in cpu) / len(cpu) if cpu else None,
        memory_used_bytes=gauge("nv_cpu_memory_used_bytes").get(()),
        memory_total_bytes=gauge("nv_cpu_memory_total_bytes").get(()),
        gpus=gpus,
        web=web,
        cache=cache,
    )


# --- rendering -----------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _counts(counts: Mapping[str, float]) -> str:
    if not counts:
        return "-"
    return " ".join(f"{k}:{v:g}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _cache(view: View) -> str:
    """`image_encoder 50% of 4.0/s ...`: hit ratio of each cached model's lookups."""
    if view.cache is None:
        return "off"
    parts = []
    for model, (hits, misses) in view.cache.items():
        lookups = hits + misses
        ratio = f"{hits / lookups:.0%}" if lookups else "-"
        parts.append(f"{model} {ratio} of {lookups / view.interval_s:.1f}/s")
    return "  ".join(parts) + "  (hits of lookups)" if parts else "-"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


COLUMNS = (
    ("MODEL", "<", 16),
    ("REQ/S", ">", 8),
    ("INF/S", ">", 8),
    ("BATCH", ">", 6),
    ("QUEUE_MS", ">", 9),
    ("COMPUTE_MS", ">", 11),
    ("P50_MS", ">", 8),
    ("P95_MS", ">", 8),
    ("P99_MS", ">", 8),
    ("PENDING", ">", 8),
    ("FAILURES", "<", 0),
)


def _line(cells: list[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def render(view: View, *, url: str = "", now: str | None = None) -> str:
    """The view as a plain-text table and a few summary lines."""
    now = now if now is not None else time.strftime("%H:%M:%S")
    lines = [f"mmtriton top  {url}  interval {view.interval_s:.1f} s  {now}"]
    lines.append(_line([name for name, _, _ in COLUMNS]))
    for row in view.rows:
        p = row.percentiles_ms or (math.nan,) * len(QUANTILES)
        lines.append(
            _line(
                [
                    row.model,
                    _num(row.requests_per_s),
                    _num(row.inferences_per_s),
                    _num(row.batch_size),
                    _num(row.queue_ms, 2),
                    _num(row.compute_ms, 2),
                    *(_num(v) for v in p),
                    f"{row.pending:g}",
                    _counts(row.failures),
                ]
            )
        )
    if not view.rows:
        lines.append("(no models reported)")
    p50, p95, p99 = (_num(v) for v in view.pipeline_ms)
    lines += [
        "P50/P95/P99: execute() time of each Python model; for the ensemble, end to end.",
        f"pipeline   {_num(view.pipeline_per_s)} req/s  p50 {p50} ms  p95 {p95} ms  "
        f"p99 {p99} ms  (objective p99 {m.PIPELINE_P99_OBJECTIVE_SECONDS * 1000:g} ms)",
    ]
    total = sum(view.modalities.values())
    mix = " ".join(
        f"{k}:{v / total:.0%}" for k, v in sorted(view.modalities.items(), key=lambda kv: -kv[1])
    )
    lines.append(f"modalities {mix or '-'}")
    lines.append(f"rejected   {_counts(view.preprocess_failures)}")
    lines.append(f"cache      {_cache(view)}")
    cpu = "-" if view.cpu_utilization is None else f"{view.cpu_utilization:.0%}"
    lines.append(
        f"cpu        {cpu}  memory {_gib(view.memory_used_bytes)}"
        f"/{_gib(view.memory_total_bytes)} GiB"
    )
    for uuid, util, used, total_bytes in view.gpus:
        gpu_util = "-" if util is None else f"{util:.0%}"
        lines.append(f"gpu        {uuid}  {gpu_util}  memory {_gib(used)}/{_gib(total_bytes)} GiB")
    if view.web is not None:
        w50, w95, w99 = (_num(v) for v in view.web.percentiles_ms)
        lines.append(
            f"web        {_num(view.web.requests_per_s)} req/s  p50 {w50} ms  p95 {w95} ms  "
            f"p99 {w99} ms  errors {_counts(view.web.errors)}"
        )
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton top`."""
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton metrics (default %(default)s)")
    parser.add_argument(
        "--web-url",
        default=None,
        help=f"the web page's metrics too, e.g. http://localhost:{spec.DEFAULT_WEB_PORT}/metrics",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between samples, and between refreshes (default %(default)s)",
    )
    parser.add_argument("--once", action="store_true", help="print one view and exit")
    parser.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout in seconds")


def _take(args: argparse.Namespace) -> tuple[Snapshot, Snapshot | None]:
    triton = scrape(args.url, args.timeout)
    web = scrape(args.web_url, args.timeout) if args.web_url else None
    return triton, web


def run(args: argparse.Namespace) -> int:
    """Print one view (--once) or refresh until interrupted."""
    if args.interval <= 0:
        print("--interval must be positive", file=sys.stderr)
        return 2
    live = not args.once
    clear = "\x1b[2J\x1b[H" if live and sys.stdout.isatty() else ""
    previous = None
    try:
        while True:
            try:
                if previous is None:
                    previous = _take(args)
                    time.sleep(args.interval)
                current = _take(args)
            except (OSError, ValueError) as exc:
                message = f"cannot read metrics: {exc}"
                if not live:
                    print(message, file=sys.stderr)
                    return 1
                print(f"{clear}mmtriton top  {args.url}\n{message}", flush=True)
                previous = None
                time.sleep(args.interval)
                continue
            view = build_view(previous[0], current[0], previous[1], current[1])
            print(clear + render(view, url=args.url), flush=True)
            if not live:
                return 0
            previous = current
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
