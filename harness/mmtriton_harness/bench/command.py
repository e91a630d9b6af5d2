"""`mmtriton bench`: the served ensemble against its true limit and baselines, in one run.

1. stages   - each stage's CPU ms per sample, one thread, at its best batch size, measured in
              a child process (stages.py); a workload's true limit is cores over the sum of
              its stages' costs (limits.py).
2. naive    - one request at a time through PyTorch eager encoders (a simple web app), the
              better of torch's default thread count and one thread.
3. served   - the `multimodal` ensemble over gRPC at several concurrencies (all three
              modalities), with Triton's per-model statistics (queue vs compute).
4. repeats  - at least 3 rounds, each: the stage costs again (the limit), then one window per
              modality subset and one of the realistic mix, with the server's CPU per request;
              every served figure is paired with the limit measured just before it, and the
              median of those ratios is reported with its min-max spread.
5. unbatched - the same repository with dynamic batching removed, peak throughput.

The workload's clips are re-recorded at other sample rates, channel counts and lengths
(workload.AUDIO_VARIANTS). `--perf-analyzer` adds Triton's perf_analyzer as a second opinion;
`--sweep` measures variants of export/policy.py instead and writes a markdown table;
`--cache-trace` measures the response cache and the cost of tracing instead (cache_trace.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mmtriton import spec
from mmtriton.layout import missing_onnx
from mmtriton.paths import artifacts_dir, model_repository_dir

from . import limits
from .floor import summarise_floor, write_null_repository

# One-line help of this `mmtriton bench` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "benchmark the served pipeline against its true limit and baselines"

SERVED_KEYS = ("concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors")
SUBSET_KEYS = ("served_rps", "limit_rps", "cpu_ms_per_request")
MIXED_KEYS = ("served_rps", "limit_rps", "served_over_limit")
MODELS = tuple(m.name for m in spec.ALL_MODELS if m is not spec.ENSEMBLE)  # in graph order
ALL = spec.subset_name(spec.MODALITIES)

# Issue 16's targets.
TARGET_LIMIT, TARGET_NAIVE, TARGET_TAIL = 0.90, 5.0, 2.0
TARGET_TEXT_LIMIT, TARGET_TEXT_OVER_ALL = 0.70, 3.0
TARGET_PREPROCESS = 0.5  # of PREPROCESS_CPU_MS_BEFORE
# `preprocess_cpu_ms` before issue 16's preprocessing work: median of 14 runs of
# `python -m mmtriton_harness.bench.stages preprocess` on commit 06d4440 (spread 12.4-24.1 ms,
# shared machine). Each bench run measures that commit again beside today's code, paired
# (core_at.py); this figure of record is the fallback where git cannot.
PREPROCESS_CPU_MS_BEFORE = 15.8
PREPROCESS_BEFORE_COMMIT = "06d4440"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton bench`."""
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds measured per window (default 4)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before each window"
    )
    parser.add_argument(
        "--concurrency",
        default="1,4,8,16,32",
        help="comma-separated client concurrencies of the sweep (default 1,4,8,16,32)",
    )
    parser.add_argument(
        "--load-concurrency",
        type=int,
        default=16,
        help="concurrency of the repeated subset and mix windows (default 16)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="limit / served rounds (default 3, at least 3)"
    )
    parser.add_argument(
        "--preprocess-before",
        default=PREPROCESS_BEFORE_COMMIT,
        metavar="COMMIT",
        help="commit whose preprocessing each round also measures, paired "
        f"(default {PREPROCESS_BEFORE_COMMIT}, before issue 16; 'none' skips it)",
    )
    parser.add_argument(
        "--response-cache",
        action="store_true",
        help="keep the encoders' response cache on (off by default: the bench's samples "
        "repeat, so the cache would answer them)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (for tests)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--perf-analyzer", action="store_true", help="also run Triton's perf_analyzer"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="measure policy variants instead (writes markdown)"
    )
    parser.add_argument(
        "--sweep-concurrency", type=int, default=16, help="concurrency of the sweep (16)"
    )
    parser.add_argument(
        "--cache-trace",
        action="store_true",
        help="measure the response cache (on/off) and tracing overhead instead",
    )
    parser.add_argument("--out", type=Path, help="where to write the JSON / sweep markdown")
    parser.add_argument("--artifacts", type=Path, help="build folder (default: artifacts/)")
    parser.add_argument("--repository", type=Path, help="model repository (default: shipped)")


def _settings(args: argparse.Namespace) -> dict:
    before = None if args.preprocess_before.lower() == "none" else args.preprocess_before
    if args.quick:
        one = (16,)
        return {
            "response_cache": args.response_cache,
            "preprocess_before": before,
            "duration_s": 1.0,
            "warmup_s": 0.2,
            "window_s": 0.6,
            "concurrency": (1, 4),
            "load_concurrency": 4,
            "repeats": 3,
            "unbatched_concurrency": (4,),
            "pa_concurrency": (4,),
            "stage_batches": {k: one for k in _stage_names()},
            "stage_min_cpu_s": 0.02,
            "preprocess_min_cpu_s": 0.1,
            "naive_s": 1.0,
        }
    if args.repeats < 3:
        raise SystemExit("error: --repeats must be at least 3 (a median of fewer says little)")
    return {
        "response_cache": args.response_cache,
        "preprocess_before": before,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "window_s": args.duration,
        "concurrency": tuple(int(c) for c in args.concurrency.split(",")),
        "load_concurrency": args.load_concurrency,
        "repeats": args.repeats,
        "unbatched_concurrency": (8, 16),
        "pa_concurrency": (1, 8, 16),
        "stage_batches": None,  # stages.DEFAULT_BATCHES
        "stage_min_cpu_s": 0.2,
        "preprocess_min_cpu_s": 1.0,
        "naive_s": args.duration,
    }


def _stage_names() -> tuple[str, ...]:
    from .stages import STAGES

    return STAGES


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def _stage_ms(doc: dict) -> dict[str, float]:
    return {k: v["cpu_ms"] for k, v in doc["stages"].items()}


def run_bench(root: Path, repo: Path, s: dict, perf_analyzer: bool) -> dict:
    """Every measurement of the default run; returns the results dict."""
    with tempfile.TemporaryDirectory(prefix="mmtriton-bench-") as tmp_dir:
        return _run_bench(root, repo, s, perf_analyzer, tmp_dir)


def _run_bench(root: Path, repo: Path, s: dict, perf_analyzer: bool, tmp_dir: str) -> dict:
    from .inprocess import TorchPipeline, run_naive
    from .load import measure, warm_up
    from .server import process_tree_rss_mb, start_server, write_variant
    from .stages import measure_in_child
    from .workload import AUDIO_VARIANTS, MIX, full_samples, realistic_mix, subset_samples

    samples = full_samples(root)
    workloads = {spec.subset_name(sub): subset_samples(samples, sub) for sub in spec.SUBSETS}
    mixed = realistic_mix(samples, MIX)
    cores = limits.available_cores()
    result: dict = {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
        "cpus": cores,
        "loadavg_start": _loadavg(),
        "audio_variants": [v.name for v in AUDIO_VARIANTS],
        "mix": {spec.subset_name(sub): w for sub, w in MIX.items()},
    }
    log_dir = root / "logs" / "bench"
    core = None
    if s["preprocess_before"]:
        from .core_at import snapshot

        try:
            core = snapshot(s["preprocess_before"], Path(tmp_dir) / "core-before")
        except RuntimeError as exc:
            log(f"  no paired 'before' preprocessing: {exc}")
            result["preprocess_before_skipped"] = str(exc)

    log(f"[1/5] stages: CPU ms per sample, one thread, best batch ({cores} cores for the limit)")
    first = measure_in_child(
        repo, root, s["stage_batches"], s["stage_min_cpu_s"], s["preprocess_min_cpu_s"]
    )
    _log_stages(first)
    best = {k: (v["batch"],) for k, v in first["stages"].items()}
    result["stage_search"] = first

    log("[2/5] naive: PyTorch eager, one request at a time")
    torch_pipeline = TorchPipeline(root, repo)
    # The app's best shot: torch's default threads, and one thread (on an oversubscribed
    # machine two spin-waiting OpenMP threads collapse to ~1 req/s, which would flatter us).
    tries = []
    for threads in sorted({torch_pipeline.torch.get_num_threads(), 1}, reverse=True):
        torch_pipeline.torch.set_num_threads(threads)
        tries.append(run_naive(torch_pipeline, samples, s["naive_s"]))
        log(f"  naive  torch threads {threads}: {tries[-1]['rps']:7.1f} req/s")
    naive = max(tries, key=lambda t: t["rps"])
    naive["tried"] = [{"torch_threads": t["torch_threads"], "rps": t["rps"]} for t in tries]
    del torch_pipeline
    gc.collect()
    log(f"  naive  {naive['rps']:7.1f} req/s  p50 {naive['p50_ms']} ms  p99 {naive['p99_ms']} ms")
    result["naive_rps"] = naive["rps"]
    result["naive"] = naive

    log("[3/5] served: the multimodal ensemble over gRPC, all three modalities")
    server = start_server(repo, log_dir, response_cache=s["response_cache"])
    pid = server.process.pid
    # The same graph with null steps, served beside it: the framework's floor (floor.py).
    null = start_server(write_null_repository(repo, Path(tmp_dir) / "null"), log_dir / "null")
    rounds: list[dict] = []
    try:
        warm_up(server.grpc_url, [w[0] for w in workloads.values()] + samples[:5] + mixed[:5])
        warm_up(null.grpc_url, [w[0] for w in workloads.values()] + mixed[:5])
        served = []
        for c in s["concurrency"]:
            point = measure(server.grpc_url, samples, c, s["warmup_s"], s["duration_s"], ALL, pid)
            served.append(point.as_dict())
            _log_point("served", point)
        if perf_analyzer:
            result["perf_analyzer"] = _perf_analyzer(server.grpc_url, samples, s)

        log(
            f"[4/5] {s['repeats']} rounds: limit, then each subset and the mix at "
            f"c={s['load_concurrency']}"
        )
        for r in range(s["repeats"]):
            doc = measure_in_child(
                repo, root, best, s["stage_min_cpu_s"], s["preprocess_min_cpu_s"]
            )
            round_: dict = {"stages": _stage_ms(doc), "preprocess_cpu_ms": doc["preprocess_cpu_ms"]}
            note = ""
            if core is not None:
                old = measure_in_child(
                    repo, root, None, s["stage_min_cpu_s"], s["preprocess_min_cpu_s"],
                    what="preprocess", core=core,
                )  # fmt: skip
                round_["preprocess_cpu_ms_before"] = old["preprocess_cpu_ms"]
                note = f" ({old['preprocess_cpu_ms']:.2f} at {s['preprocess_before']})"
            log(
                f"  round {r + 1}: limit (all three) "
                f"{limits.subset_limit_rps(round_['stages'], spec.MODALITIES, cores):7.1f} req/s, "
                f"preprocess_cpu_ms {doc['preprocess_cpu_ms']:.2f}{note}"
            )
            points = {}
            for name, work in [*workloads.items(), ("mixed", mixed)]:
                point = measure(
                    server.grpc_url, work, s["load_concurrency"], s["warmup_s"], s["window_s"],
                    name, pid,
                )  # fmt: skip
                points[name] = point.as_dict()
                _log_point("served", point)
            round_["served"] = points
            round_["null"] = {}
            for name, work in [*workloads.items(), ("mixed", mixed)]:
                point = measure(
                    null.grpc_url, work, s["load_concurrency"], s["warmup_s"], s["window_s"],
                    name, null.process.pid,
                )  # fmt: skip
                round_["null"][name] = point.as_dict()
                _log_point("floor", point)
            rounds.append(round_)
        result["server_rss_mb"] = process_tree_rss_mb(pid)
    finally:
        server.stop(drain=False)
        null.stop(drain=False)
    result["served"] = served
    result["rounds"] = rounds

    log("[5/5] served with dynamic batching removed")
    with tempfile.TemporaryDirectory(prefix="mmtriton-unbatched-") as tmp:
        variant = write_variant(repo, Path(tmp) / "repo", dynamic_batching=False)
        server = start_server(variant, log_dir, response_cache=s["response_cache"])
        try:
            warm_up(server.grpc_url, samples[:4], rounds=1)
            unbatched = []
            for c in s["unbatched_concurrency"]:
                point = measure(
                    server.grpc_url, samples, c, s["warmup_s"], s["duration_s"], "unbatched",
                    server.process.pid,
                )  # fmt: skip
                unbatched.append(point.as_dict())
                _log_point("unbatch", point)
        finally:
            server.stop(drain=False)
    result["unbatched"] = unbatched
    result["unbatched_peak_rps"] = max(p["rps"] for p in unbatched)

    peak = max(served, key=lambda p: p["rps"])
    result["served_peak_rps"] = peak["rps"]
    result["served_peak_concurrency"] = peak["concurrency"]
    result.update(summarise(rounds, cores, MIX))
    result["served_over_naive"] = round(result["subsets"][ALL]["served_rps"] / naive["rps"], 3)
    served_cpu = result["subsets"][ALL]["cpu_ms_per_request"]
    if served_cpu:  # the same comparison in CPU per request, which other jobs blur less
        result["served_over_naive_cpu"] = round(naive["cpu_ms_per_request"] / served_cpu, 3)
    result["loadavg_end"] = _loadavg()
    result["targets"] = targets(result)
    return result


def summarise(rounds: list[dict], cores: int, mix: dict[tuple[str, ...], float]) -> dict:
    """The headline figures from the rounds: per subset and for the mix, the medians of the
    served rate, of the limit and of their paired ratio (with its min-max spread), the server's
    CPU per request; the stage costs' medians; `preprocess_cpu_ms`'s median."""
    subsets: dict[str, dict] = {}
    for sub in spec.SUBSETS:
        name = spec.subset_name(sub)
        lims = [limits.subset_limit_rps(r["stages"], sub, cores) for r in rounds]
        subsets[name] = _paired(rounds, name, lims)
        subsets[name]["limit_cpu_ms_per_request"] = round(
            statistics.median(limits.cost_ms(r["stages"], sub) for r in rounds), 3
        )
        subsets[name]["cpu_efficiency"] = _cpu_efficiency(subsets[name])
        subsets[name]["floor"] = _floor(
            rounds, name, [limits.cost_ms(r["stages"], sub) for r in rounds], subsets[name], cores
        )
    mix_lims = [limits.mix_limit_rps(r["stages"], mix, cores) for r in rounds]
    mixed = _paired(rounds, "mixed", mix_lims)
    mixed["limit_cpu_ms_per_request"] = round(
        statistics.median(limits.mix_cost_ms(r["stages"], mix) for r in rounds), 3
    )
    mixed["cpu_efficiency"] = _cpu_efficiency(mixed)
    mixed["floor"] = _floor(
        rounds, "mixed", [limits.mix_cost_ms(r["stages"], mix) for r in rounds], mixed, cores
    )
    head = subsets[ALL]
    pre = limits.median_spread([r["preprocess_cpu_ms"] for r in rounds])
    before: dict = {"preprocess_cpu_ms_before": PREPROCESS_CPU_MS_BEFORE, "paired": False}
    if all("preprocess_cpu_ms_before" in r for r in rounds):
        old = [r["preprocess_cpu_ms_before"] for r in rounds]
        ratio = limits.median_spread(
            limits.paired_ratios([r["preprocess_cpu_ms"] for r in rounds], old)
        )
        before = {
            "preprocess_cpu_ms_before": round(statistics.median(old), 3),
            "paired": True,
            "over_before": round(ratio["median"], 3),
            "over_before_spread": [round(ratio["min"], 3), round(ratio["max"], 3)],
        }
    stage_ms = {
        k: round(statistics.median(r["stages"][k] for r in rounds), 4) for k in rounds[0]["stages"]
    }
    return {
        "limit_rps": head["limit_rps"],
        "served_over_limit": head["served_over_limit"],
        "spread": head["spread"],
        "subsets": subsets,
        "mixed": mixed,
        "preprocess_cpu_ms": round(pre["median"], 3),
        "preprocess_cpu_ms_spread": [round(pre["min"], 3), round(pre["max"], 3)],
        "preprocess_before": before,
        "stage_cpu_ms": stage_ms,
        "repeats": len(rounds),
    }


def _floor(rounds: list[dict], name: str, limit_ms: list[float], paired: dict, cores: int) -> dict:
    """The floor figures of one workload (floor.py), when the rounds measured the null graph."""
    if not all("null" in r for r in rounds):
        return {}
    null = [r["null"][name] for r in rounds]
    out = summarise_floor(
        null, [r["served"][name] for r in rounds], limit_ms, paired["served_over_limit"], cores
    )
    if out:
        out["null_step_cpu_ms_per_request"] = median_steps(null)
    return out


def _cpu_efficiency(v: dict) -> float | None:
    """Limit CPU ms over the server's CPU ms per request: the served pipeline's efficiency in
    CPU, which other jobs on a shared machine blur far less than its throughput."""
    cpu = v["cpu_ms_per_request"]
    return round(v["limit_cpu_ms_per_request"] / cpu, 3) if cpu else None


def median_steps(points: list[dict]) -> dict[str, float] | None:
    """Per step (tritonserver, each model's stubs), the median CPU ms per request of `points`."""
    steps = [p["step_cpu_ms_per_request"] for p in points if p.get("step_cpu_ms_per_request")]
    if not steps:
        return None
    names = sorted({k for s in steps for k in s})
    return {k: round(statistics.median(s.get(k, 0.0) for s in steps), 3) for k in names}


def _paired(rounds: list[dict], name: str, lims: list[float]) -> dict:
    points = [r["served"][name] for r in rounds]
    served = [p["rps"] for p in points]
    ratios = limits.median_spread(limits.paired_ratios(served, lims))
    cpu = [p["cpu_ms_per_request"] for p in points if p.get("cpu_ms_per_request")]
    cpu_ms = statistics.median(cpu) if cpu else None
    return {
        "served_rps": round(statistics.median(served), 2),
        "limit_rps": round(statistics.median(lims), 2),
        "served_over_limit": round(ratios["median"], 3),
        "spread": {
            "min": round(ratios["min"], 3),
            "max": round(ratios["max"], 3),
            "kind": ratios["kind"],
            "repeats": ratios["n"],
        },
        "cpu_ms_per_request": None if cpu_ms is None else round(cpu_ms, 3),
        "requests_per_core_s": None
        if cpu_ms is None
        else round(limits.requests_per_core_second(cpu_ms), 2),
        "step_cpu_ms_per_request": median_steps(points),
        "p50_ms": statistics.median(p["p50_ms"] for p in points),
        "p99_ms": statistics.median(p["p99_ms"] for p in points),
        "errors": sum(p["errors"] for p in points),
        "refused": sum(p.get("error_kinds", {}).get("UNAVAILABLE", 0) for p in points),
    }


def _log_stages(doc: dict) -> None:
    for k, v in doc["stages"].items():
        tried = ", ".join(f"{b}: {ms:.3f}" for b, ms in v["tried"].items())
        log(f"  {k:<18} {v['cpu_ms']:8.3f} ms/sample at batch {v['batch']:<3} (tried {tried})")
    log(f"  preprocess_cpu_ms {doc['preprocess_cpu_ms']:.2f} (all three, 22.05 kHz stereo clip)")


def _log_point(kind: str, p) -> None:
    cpu = p.cpu_ms_per_request
    log(
        f"  {kind:<7}{p.label:>17} c={p.concurrency:<3} {p.rps:7.1f} req/s  "
        f"p50 {p.latency['p50_ms']:7.1f}  p99 {p.latency['p99_ms']:7.1f} ms  errors {p.errors}"
        + ("" if cpu is None else f"  server {cpu:5.1f} CPU ms/req")
    )


def _perf_analyzer(url: str, samples, s: dict) -> dict:
    from .perf_analyzer import PerfAnalyzerUnavailable
    from .perf_analyzer import run as run_pa

    log("  perf_analyzer (second opinion)")
    with tempfile.TemporaryDirectory(prefix="mmtriton-pa-") as tmp:
        try:
            rows = run_pa(
                url,
                samples[:16],
                s["pa_concurrency"],
                Path(tmp),
                interval_ms=int(1000 * max(s["duration_s"] / 2, 1.0)),
            )
        except PerfAnalyzerUnavailable as exc:
            log(f"  perf_analyzer could not run: {exc}")
            return {"ok": False, "reason": str(exc)}
    for r in rows:
        if "failed" in r:
            log(f"  pa     c={r['concurrency']:<3} gave up: {r['failed']}")
        else:
            log(f"  pa     c={r['concurrency']:<3} {r['rps']:7.1f} req/s  p99 {r['p99_ms']} ms")
    return {"ok": True, "rows": rows}


def _target(target: str, value: float, met: bool, **extra) -> dict:
    return {"target": target, "value": round(value, 3), "met": bool(met), **extra}


def _ceiling(subset: dict) -> dict:
    """The floor's ceiling for a served/limit target, when the bench measured it."""
    floor = subset.get("floor") or {}
    return {"ceiling": floor["ceiling_over_limit"]} if floor else {}


def _ceiling_rate(subset: dict, per: float) -> dict:
    """The ceiling of a target that is a rate over `per`: the floor's ceiling rate over it."""
    floor = subset.get("floor") or {}
    return {"ceiling": round(floor["ceiling_rps"] / per, 3)} if floor and per else {}


def targets(r: dict) -> dict:
    """Issue 16's targets, each with the measured value and whether it is met."""
    text = r["subsets"]["text"]
    all_three = r["subsets"][ALL]
    out = {
        "served_over_limit": _target(
            f">= {TARGET_LIMIT}",
            r["served_over_limit"],
            r["served_over_limit"] >= TARGET_LIMIT,
            **_ceiling(all_three),
        ),
        "served_over_naive": _target(
            f">= {TARGET_NAIVE}",
            r["served_over_naive"],
            r["served_over_naive"] >= TARGET_NAIVE,
            **_ceiling_rate(all_three, r["naive_rps"]),
        ),
        "text_over_limit": _target(
            f">= {TARGET_TEXT_LIMIT}",
            text["served_over_limit"],
            text["served_over_limit"] >= TARGET_TEXT_LIMIT,
            **_ceiling(text),
        ),
    }
    if all_three["served_rps"] > 0:
        ratio = text["served_rps"] / all_three["served_rps"]
        over_all = (all_three.get("floor") or {}).get("ceiling_rps")
        out["text_over_all_three"] = _target(
            f">= {TARGET_TEXT_OVER_ALL}",
            ratio,
            ratio >= TARGET_TEXT_OVER_ALL,
            **(_ceiling_rate(text, over_all) if over_all else {}),
        )
    before = r["preprocess_before"]
    pre = before.get("over_before") or r["preprocess_cpu_ms"] / before["preprocess_cpu_ms_before"]
    out["preprocess_over_before"] = _target(
        f"<= {TARGET_PREPROCESS}", pre, pre <= TARGET_PREPROCESS
    )
    c8 = next((p for p in r["served"] if p["concurrency"] == 8), None)
    if c8 and c8["p50_ms"] > 0:
        tail = c8["p99_ms"] / c8["p50_ms"]
        out["c8_p99_over_p50"] = _target(
            f"<= {TARGET_TAIL}, no errors",
            tail,
            tail <= TARGET_TAIL and c8["errors"] == 0,
            errors=c8["errors"],
        )
    return out


def json_view(r: dict) -> dict:
    """The --json document: issue 16's keys first, then the details."""
    head = {
        "limit_rps": r["limit_rps"],
        "served_over_limit": r["served_over_limit"],
        "spread": r["spread"],
        "served_over_naive": r["served_over_naive"],
        "subsets": r["subsets"],
        "mixed": r["mixed"],
        "preprocess_cpu_ms": r["preprocess_cpu_ms"],
        "naive_rps": r["naive_rps"],
        "served": [{k: p[k] for k in SERVED_KEYS} for p in r["served"]],
        "served_peak_rps": r["served_peak_rps"],
        "unbatched_peak_rps": r["unbatched_peak_rps"],
        "server_rss_mb": r["server_rss_mb"],
    }
    details = {k: v for k, v in r.items() if k not in head}
    details["served_detail"] = r["served"]
    return {**head, **details}


def _row(name: str, conc, rps, p: dict | None = None, errors="") -> str:
    p = p or {}
    cols = [f"{p[k]:8.1f}" if k in p else f"{'':>8}" for k in ("p50_ms", "p95_ms", "p99_ms")]
    cpu = p.get("cpu_ms_per_request")
    cpu_col = f"{cpu:8.1f}" if cpu else f"{'':>8}"
    return f"{name:<40} {conc!s:>4} {rps:8.1f} {' '.join(cols)} {cpu_col} {errors!s:>6}"


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _ratio(v: dict) -> str:
    sp = v["spread"]
    return f"{v['served_over_limit']:5.2f} ({sp['min']:.2f}-{sp['max']:.2f})"


def _floor_table(r: dict) -> list[str]:
    """The framework's floor per workload (floor.py): what the real graph costs with null steps,
    and the served/limit it leaves reachable."""
    rows = [(n, v.get("floor")) for n, v in [*r["subsets"].items(), ("mixed", r["mixed"])]]
    if not all(f for _n, f in rows):
        return []
    lines = [
        "framework floor: the same graph and configs with null steps (null_model.py), served "
        "beside it each round;",
        "ceiling = limit ms / (limit ms + null CPU ms + client CPU ms): the best served/limit "
        "possible here",
        f"{'workload':<18} {'null req/s':>10} {'null CPU ms':>11} {'client ms':>9} "
        f"{'ceiling req/s':>13} {'ceiling/limit':>18} {'served/ceiling':>14}",
    ]
    for name, f in rows:
        lo, hi = f["ceiling_spread"]
        lines.append(
            f"{name:<18} {f['null_rps']:10.1f} {f['null_cpu_ms_per_request']:11.2f} "
            f"{f['client_cpu_ms_per_request']:9.2f} {f['ceiling_rps']:13.1f} "
            f"{f['ceiling_over_limit']:>7.2f} ({lo:.2f}-{hi:.2f}) {f['served_over_ceiling']:14.2f}"
        )
    return [*lines, ""]


STEP_COLUMNS = ("tritonserver", *MODELS)


def _steps_table(r: dict) -> list[str]:
    """Where the served CPU goes: per workload, CPU ms per request by process (tritonserver
    itself, each model's stubs), against the stages' own costs (the limit's)."""
    rows = [(n, v.get("step_cpu_ms_per_request")) for n, v in r["subsets"].items()]
    null = r["subsets"][ALL].get("floor", {}).get("null_step_cpu_ms_per_request")
    if not all(steps for _n, steps in rows):
        return []
    stage = r["stage_cpu_ms"]
    lines = [
        "served CPU ms per request by process (medians of the rounds), and the stages' own cost",
        f"{'workload':<22} " + " ".join(f"{c:>13}" for c in STEP_COLUMNS),
    ]
    for name, steps in [*rows, *([("null graph, all three", null)] if null else [])]:
        lines.append(f"{name:<22} " + " ".join(f"{steps.get(c, 0.0):13.2f}" for c in STEP_COLUMNS))
    per_step = {
        "tritonserver": 0.0,
        "preprocess": sum(stage[f"preprocess.{m}"] for m in spec.MODALITIES),
        **{spec.ENCODERS[m].name: stage[f"encoder.{m}"] for m in spec.MODALITIES},
        "fusion": stage["fusion"],
    }
    lines.append(
        f"{'stages, all three':<22} " + " ".join(f"{per_step[c]:13.2f}" for c in STEP_COLUMNS)
    )
    return [*lines, ""]


def format_table(r: dict) -> str:
    """The human-readable report (from the results or from their --json view)."""
    served = r.get("served_detail", r["served"])
    s = r["settings"]
    lines = [
        f"mmtriton bench: {r['cpus']} CPUs, load average {r['loadavg_start']} -> "
        f"{r['loadavg_end']}; one sample per request; clips: {', '.join(r['audio_variants'])}",
        "",
        f"true limit: stage CPU ms per sample (one thread, best batch), median of "
        f"{r['repeats']} rounds",
    ]
    for k, ms in r["stage_cpu_ms"].items():
        batch = r["stage_search"]["stages"][k]["batch"]
        lines.append(f"  {k:<18} {ms:8.3f} ms  (batch {batch})")
    pre, before = r["preprocess_cpu_ms"], r["preprocess_before"]
    if before["paired"]:
        lo, hi = before["over_before_spread"]
        then = (
            f"{before['preprocess_cpu_ms_before']} ms at {r['settings']['preprocess_before']}, "
            f"measured alternately: x{before['over_before']:.2f} ({lo:.2f}-{hi:.2f})"
        )
    else:
        then = f"{before['preprocess_cpu_ms_before']} ms at {PREPROCESS_BEFORE_COMMIT}, on record"
    lines += [
        f"  preprocess_cpu_ms  {pre:8.2f} ms per all-three request (22.05 kHz stereo 1.7 s clip, "
        f"batch 16); before: {then}",
        "",
        f"per subset, c={s['load_concurrency']}, {s['window_s']:g} s windows; medians of "
        f"{r['repeats']} rounds, ratio spread min-max; CPU = tritonserver + stubs from /proc",
        f"{'subset':<18} {'served':>8} {'limit':>8} {'served/limit':>18} {'CPU ms/req':>10} "
        f"{'limit ms':>8} {'CPU eff.':>8} {'req/core-s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}",
    ]
    for name, v in [*r["subsets"].items(), ("mixed (stated mix)", r["mixed"])]:
        lines.append(
            f"{name:<18} {v['served_rps']:8.1f} {v['limit_rps']:8.1f} {_ratio(v):>18} "
            f"{_num(v['cpu_ms_per_request'], 10, 2)} {v['limit_cpu_ms_per_request']:8.2f} "
            f"{_num(v.get('cpu_efficiency'), 8, 2)} {_num(v['requests_per_core_s'], 10, 1)} "
            f"{v['p50_ms']:8.1f} {v['p99_ms']:8.1f} {v['errors']:>6}"
        )
    mix = ", ".join(f"{w:.0%} {k}" for k, w in r["mix"].items())
    lines += [f"  stated mix: {mix}", "", *_floor_table(r), *_steps_table(r)]
    lines += [
        f"{'':<40} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/r':>8} {'errors':>6}",
        _row("naive (torch eager, one at a time)", 1, r["naive_rps"], r["naive"]),
    ]
    for p in served:
        lines.append(
            _row("served gRPC, all three modalities", p["concurrency"], p["rps"], p, p["errors"])
        )
    for p in r["unbatched"]:
        lines.append(
            _row("served, no dynamic batching", p["concurrency"], p["rps"], p, p["errors"])
        )
    pa = r.get("perf_analyzer")
    if pa and pa.get("ok"):
        for p in pa["rows"]:
            if "failed" in p:
                lines.append(f"perf_analyzer at c={p['concurrency']} gave up: {p['failed']}")
            else:
                lines.append(
                    _row("perf_analyzer (served, all three)", p["concurrency"], p["rps"], p)
                )
    elif pa:
        lines.append(f"perf_analyzer could not run: {pa['reason']}")
    lines += ["", "where time goes: mean ms per request in queue / compute (mean batch size)"]
    lines.append(f"{'conc':>10} " + " ".join(f"{m:>20}" for m in MODELS))
    for p in [*served, *r["unbatched"]]:
        cells = []
        for name in MODELS:
            st = p["models"].get(name)
            if not st:
                cells.append(f"{'-':>20}")
                continue
            compute = st["compute_input_ms"] + st["compute_infer_ms"] + st["compute_output_ms"]
            cells.append(f"{st['queue_ms']:6.1f} / {compute:5.1f} (x{st['avg_batch']:4.1f})")
        tag = {"unbatched": "u"}.get(p["label"], "")
        lines.append(f"{str(p['concurrency']) + tag:>10} " + " ".join(cells))
    lines.append("  (u = no dynamic batching)")
    lines += [
        "",
        f"served peak {r['served_peak_rps']:.1f} req/s at c={r['served_peak_concurrency']}; "
        f"unbatched peak {r['unbatched_peak_rps']:.1f} req/s; "
        f"server RSS {r['server_rss_mb']:.0f} MB",
    ]
    for key, v in r["targets"].items():
        ceiling = f" (ceiling {v['ceiling']:.2f})" if "ceiling" in v else ""
        lines.append(
            f"  {key:<22} {v['value']:6.2f}  target {v['target']:<18} "
            f"{'met' if v['met'] else 'NOT met'}{ceiling}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton bench`."""
    root = args.artifacts or artifacts_dir()
    repo = args.repository or model_repository_dir()
    if missing_onnx(repo):
        raise SystemExit(f"error: {repo} is not exported; run `mmtriton export` first")
    if args.cache_trace:
        from .cache_trace import run_cache_trace

        return run_cache_trace(args, root, repo, log)
    s = _settings(args)
    if args.sweep:
        return _run_sweep(args, root, repo, s)
    start = time.perf_counter()
    # Libraries print while loading (efficientnet's "Loaded pretrained weights"): keep stdout
    # for the report, so that --json prints nothing but the document.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_bench(root, repo, s, args.perf_analyzer)
    result["bench_seconds"] = round(time.perf_counter() - start, 1)
    out = args.out or root / "reports" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_view(result), indent=2) + "\n")
    if args.json:
        print(json.dumps(json_view(result), indent=2))
    else:
        print(format_table(result))
        print(f"(took {result['bench_seconds']:.0f} s; JSON in {out})")
    return 0


def _run_sweep(args: argparse.Namespace, root: Path, repo: Path, s: dict) -> int:
    from .sweep import markdown, run_sweep
    from .workload import full_samples

    c = 4 if args.quick else args.sweep_concurrency
    log(f"sweep at concurrency {c}, {s['duration_s']:g} s per configuration")
    with contextlib.redirect_stdout(sys.stderr):
        results = run_sweep(
            repo,
            full_samples(root),
            c,
            s["warmup_s"],
            s["duration_s"],
            root / "logs" / "bench",
            only=2 if args.quick else None,
            log=log,
        )
    text = markdown(results, c)
    out = args.out or root / "reports" / "bench_sweep.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        doc = [
            {
                "configuration": r.name,
                "ratio": round(r.ratio, 3),
                "variant": r.variant.as_dict() if r.variant else None,
                "shipped": r.shipped.as_dict() if r.shipped else None,
                "failure": r.failure,
            }
            for r in results
        ]
        print(json.dumps(doc, indent=2))
    else:
        print(text)
        print(f"(written to {out})")
    return 0
