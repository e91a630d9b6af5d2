"""`mmtriton bench --cache-trace`: what the response cache buys, what tracing costs.

One workload where a modality repeats, as on the web page's example gallery: a few images,
each sent with texts that never repeat (so only the image encoder can hit the cache). Four
servers on the same repository, measured in alternating windows (so drift in this shared
machine's load hits every configuration alike), each window a closed loop at one concurrency:

- cache on, no tracing (what `mmtriton serve` runs by default);
- cache off (`--response-cache-bytes 0`);
- cache on, tracing at the default rate (`--otlp-endpoint`, one request in DEFAULT_TRACE_RATE),
  exporting to a local OTLP/HTTP sink, the Python steps' spans included;
- cache on, every request traced (rate 1), for scale.

The report gives, per configuration, the median over the repeats of the throughput and of
the latency percentiles, with their spread (min-max), the median of the paired ratios to the
default in the same round (adjacent windows), the CPU time tritonserver and its stubs spent
per request (which other jobs on the machine hardly change), and the image encoder's hit
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mmtriton import spec
from mmtriton.server.flags import DEFAULT_TRACE_RATE, OTLP_ENDPOINT_ENV
from mmtriton.server.process import TritonProcess, start_on_free_ports
from mmtriton_build.examples import load_examples
from mmtriton_client.client import Sample

from .load import measure, warm_up
from .server import server_cpu_s

GALLERY_IMAGES = 8  # distinct images the workload repeats
SAMPLES_PER_WINDOW = 4000  # more requests than a window sends: no text ever repeats


@dataclass(frozen=True)
class Config:
    """One server configuration of the comparison."""

    name: str
    cache: bool
    trace_rate: int | None  # None: tracing off


CONFIGS = (
    Config("cache on", cache=True, trace_rate=None),
    Config("cache off", cache=False, trace_rate=None),
    Config(f"cache on, tracing 1/{DEFAULT_TRACE_RATE} (default)", True, DEFAULT_TRACE_RATE),
    Config("cache on, tracing every request", cache=True, trace_rate=1),
)


class SpanSink:
    """An OTLP/HTTP endpoint that accepts and counts exports (a collector stand-in)."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.exports += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1/traces"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def gallery_workload(root: Path, window: int) -> list[Sample]:
    """Samples cycling over a few images, each with a text no other request carries."""
    examples = [e for e in load_examples(root, 200) if e.image and e.text]
    images = [e.image for e in examples[:GALLERY_IMAGES]]
    texts = [e.text for e in examples]
    # The marker leads: the tokenizer keeps the first tokens, so each text tokenises apart.
    return [
        Sample(image=images[i % len(images)], text=f"{window}x{i} {texts[i % len(texts)]}")
        for i in range(SAMPLES_PER_WINDOW)
    ]


def _counts(url: str) -> tuple[int, int, int]:
    """(image_encoder cache hits, its misses, ensemble requests answered) so far."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        image = client.get_inference_statistics("image_encoder", as_json=True)["model_stats"][0]
        ensemble = client.get_inference_statistics(spec.ENSEMBLE.name, as_json=True)
    infer = image["inference_stats"]
    answered = ensemble["model_stats"][0]["inference_stats"].get("success", {})
    return (
        int(infer.get("cache_hit", {}).get("count", 0)),
        int(infer.get("cache_miss", {}).get("count", 0)),
        int(answered.get("count", 0)),
    )


def start(config: Config, repo: Path, log_dir: Path, sink: SpanSink) -> TritonProcess:
    """A server for `config`; a traced one also exports the Python steps' spans to the sink."""
    overrides: dict = {"response_cache_bytes": 0} if not config.cache else {}
    if config.trace_rate is not None:
        overrides.update(otlp_endpoint=sink.url, trace_rate=config.trace_rate)
        os.environ[OTLP_ENDPOINT_ENV] = sink.url  # inherited by the stubs, as serve does
    try:
        return start_on_free_ports(repo, log_dir, **overrides)
    finally:
        os.environ.pop(OTLP_ENDPOINT_ENV, None)


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def summarise(windows: dict[str, list[dict]]) -> list[dict]:
    """Per configuration: medians over the windows, their spread, the cache hit ratio."""
    rows = []
    for name, ws in windows.items():
        rps = [w["rps"] for w in ws]
        row = {"config": name, "windows": len(ws), "rps": statistics.median(rps)}
        row["rps_spread"] = _spread(rps)
        for key in ("p50_ms", "p99_ms"):
            values = [w[key] for w in ws]
            row[key], row[f"{key}_spread"] = statistics.median(values), _spread(values)
        cpu = [w["cpu_ms_per_request"] for w in ws]
        row["cpu_ms"], row["cpu_ms_spread"] = statistics.median(cpu), _spread(cpu)
        hits, misses = sum(w["hits"] for w in ws), sum(w["misses"] for w in ws)
        row["image_hit_ratio"] = hits / (hits + misses) if hits + misses else None
        row["errors"] = sum(w["errors"] for w in ws)
        rows.append(row)
    # Paired: each window against the default's window of the same round (adjacent in time),
    # which cancels most of the machine's drift; the median of those ratios.
    base = windows[rows[0]["config"]]
    for row in rows:
        ratios = [
            w["rps"] / b["rps"] - 1
            for w, b in zip(windows[row["config"]], base, strict=True)
            if b["rps"]
        ]
        row["vs_default_pct"] = round(100 * statistics.median(ratios), 1) if ratios else None
        row["vs_default_spread"] = (
            f"{100 * min(ratios):+.0f}..{100 * max(ratios):+.0f}" if ratios else "-"
        )
    return rows


def format_report(rows: list[dict], concurrency: int, window_s: float) -> str:
    """The table: medians of the windows with (min-max) spreads."""
    lines = [
        f"cache and tracing: repeating images ({GALLERY_IMAGES}) with never-repeating texts, "
        f"concurrency {concurrency}, {rows[0]['windows']} alternating windows of {window_s:g} s "
        "per configuration; medians (min-max)",
        "",
        f"{'configuration':<36} {'req/s':>16} {'vs default (paired)':>21} {'p50 ms':>16} "
        f"{'p99 ms':>18} {'server CPU ms/req':>20} {'image hits':>10} {'errors':>6}",
    ]
    for r in rows:
        ratio = "-" if r["image_hit_ratio"] is None else f"{r['image_hit_ratio']:.0%}"
        lines.append(
            f"{r['config']:<36} {r['rps']:6.1f} ({r['rps_spread']:>8}) "
            f"{r['vs_default_pct']:>+6.1f}% ({r['vs_default_spread']:>11}) "
            f"{r['p50_ms']:6.1f} ({r['p50_ms_spread']:>8}) "
            f"{r['p99_ms']:7.1f} ({r['p99_ms_spread']:>9}) "
            f"{r['cpu_ms']:6.1f} ({r['cpu_ms_spread']:>11}) {ratio:>10} {r['errors']:>6}"
        )
    return "\n".join(lines)


def run_cache_trace(args: argparse.Namespace, root: Path, repo: Path, log) -> int:
    """Entry point of `mmtriton bench --cache-trace`."""
    quick = args.quick
    # Many short alternating windows: on a shared machine the load drifts within seconds.
    window_s = 1.5 if quick else min(args.duration, 3.0)
    warmup_s = 0.5 if quick else 1.0
    repeats = 1 if quick else 6
    concurrency = 4 if quick else 8
    configs = CONFIGS[:3] if quick else CONFIGS
    sink = SpanSink()
    servers: dict[str, TritonProcess] = {}
    windows: dict[str, list[dict]] = {c.name: [] for c in configs}
    try:
        for c in configs:
            log(f"starting: {c.name}")
            servers[c.name] = start(c, repo, root / "logs" / "bench-cache-trace", sink)
            warm_up(servers[c.name].grpc_url, gallery_workload(root, -1)[:16], rounds=1)
        for r in range(repeats):
            for c in configs:
                url = servers[c.name].grpc_url
                samples = gallery_workload(root, r * len(configs) + configs.index(c))
                pid = servers[c.name].process.pid
                hits0, misses0, answered0 = _counts(url)
                cpu0 = server_cpu_s(pid)
                point = measure(url, samples, concurrency, warmup_s, window_s, c.name)
                cpu1 = server_cpu_s(pid)
                hits1, misses1, answered1 = _counts(url)
                windows[c.name].append(
                    {
                        "rps": point.rps,
                        "p50_ms": point.latency["p50_ms"],
                        "p99_ms": point.latency["p99_ms"],
                        "errors": point.errors,
                        "hits": hits1 - hits0,
                        "misses": misses1 - misses0,
                        # Warm-up and window alike: every request answered meanwhile.
                        "cpu_ms_per_request": 1000 * (cpu1 - cpu0) / max(answered1 - answered0, 1),
                    }
                )
                log(f"  window {r + 1}/{repeats} {c.name}: {point.rps:.1f} req/s")
    finally:
        for server in servers.values():
            server.stop()
        sink.stop()
    rows = summarise(windows)
    result = {
        "concurrency": concurrency,
        "window_s": window_s,
        "repeats": repeats,
        "rows": rows,
        "otlp_exports": sink.exports,
        "otlp_bytes": sink.bytes,
        "loadavg_end": round(os.getloadavg()[0], 2),
    }
    out = args.out or root / "reports" / "bench-cache-trace.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(rows, concurrency, window_s))
        print(
            f"(spans exported: {sink.exports} OTLP posts, {sink.bytes / 1e3:.0f} kB; "
            f"load average at the end {result['loadavg_end']}; JSON in {out}; "
            f"{time.strftime('%H:%M:%S')})"
        )
    return 0
