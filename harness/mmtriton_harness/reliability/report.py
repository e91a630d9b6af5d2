"""The summary written to reports/reliability.json, its targets (defined here, once) and the
table `make reliability` prints. `missed(summary)` lists the targets a run missed; the command
exits non-zero when it is not empty."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from mmtriton.observability.metrics import PIPELINE_P99_OBJECTIVE_SECONDS

from .faults import fault_results, lost


@dataclass(frozen=True)
class Target:
    """A headline figure and the bound it must meet (`check` is None: reported only)."""

    key: str
    meaning: str
    shown: str  # the target as printed
    check: Callable[[object, dict], bool] | None = None

    def met(self, summary: dict) -> bool | None:
        """True/False, or None when the figure was not measured in this run (or is info)."""
        value = summary.get(self.key)
        if self.check is None or value is None:
            return None
        return bool(self.check(value, summary))


def _equals(other: str) -> Callable[[object, dict], bool]:
    return lambda value, summary: value == summary.get(other)


def _compare(op, bound: float) -> Callable[[object, dict], bool]:
    # A figure that is not a number ("never": a heal that did not come back) misses.
    return lambda value, summary: isinstance(value, int | float) and op(value, bound)


HEAL_BOUND_S = 30.0
STOP_BOUND_S = 30.0
# Under ~3x overload (issue 16): what is accepted is served within the pipeline's p99
# objective (the one `mmtriton top` shows), and the excess is refused fast.
OVERLOAD_P99_BOUND_MS = PIPELINE_P99_OBJECTIVE_SECONDS * 1000
OVERLOAD_REFUSAL_P50_BOUND_MS = 50.0

TARGETS = (
    Target("invalid_inputs_tried", "invalid inputs sent (raw gRPC + web page)", ""),
    Target(
        "invalid_inputs_refused",
        "... refused: INVALID_ARGUMENT naming the problem, server ready after",
        "= tried",
        _equals("invalid_inputs_tried"),
    ),
    Target("valid_odd_inputs_tried", "odd but valid inputs sent (sizes, formats, rates)", ""),
    Target(
        "valid_odd_inputs_answered",
        "... answered (right label where one is known), server ready after",
        "= tried",
        _equals("valid_odd_inputs_tried"),
    ),
    Target(
        "server_crashes",
        "unplanned exits / unclean stops of servers",
        "0",
        _compare(operator.eq, 0),
    ),
    Target(
        "lost_requests",
        "requests failed, broken or timed out (retrying callers in faults)",
        "0",
        _compare(operator.eq, 0),
    ),
    Target(
        "overload_rejected",
        "refused fast (UNAVAILABLE) under ~3x overload",
        "> 0",
        _compare(operator.gt, 0),
    ),
    Target(
        "overload_p99_ms",
        "p99 of accepted requests under ~3x overload (admission at the first step)",
        f"<= {OVERLOAD_P99_BOUND_MS:g}",
        _compare(operator.le, OVERLOAD_P99_BOUND_MS),
    ),
    Target("overload_p50_ms", "p50 of the same", ""),
    Target(
        "overload_refused_p50_ms",
        "p50 of the refusals (UNAVAILABLE) under the same overload",
        f"< {OVERLOAD_REFUSAL_P50_BOUND_MS:g}",
        _compare(operator.lt, OVERLOAD_REFUSAL_P50_BOUND_MS),
    ),
    Target(
        "left_in_flight",
        "accepted, never finished (overload + 1 ms timeouts)",
        "0",
        _compare(operator.eq, 0),
    ),
    Target("faults_tried", "faults injected into `mmtriton serve` (one per stub kill)", ""),
    Target(
        "faults_survived",
        "... survived (each fault's own criteria, see the faults table)",
        "= tried",
        _equals("faults_tried"),
    ),
    Target(
        "heal_back_max_s",
        "slowest: fault -> next answer to a new request (kill/stop of a stub or Triton)",
        f"< {HEAL_BOUND_S:g}",
        _compare(operator.lt, HEAL_BOUND_S),
    ),
    Target("heal_back_median_s", "median of the same", ""),
    Target(
        "stop_max_s",
        "slowest SIGTERM stop of `mmtriton serve` (after a stub death, under load)",
        f"< {STOP_BOUND_S:g}",
        _compare(operator.lt, STOP_BOUND_S),
    ),
    Target("soak_errors", "unexpected outcomes during the soak", "0", _compare(operator.eq, 0)),
    Target("soak_requests", "requests during the soak", ""),
    Target(
        "rss_growth_pct", "server RSS growth after warm-up (%)", "< 5", _compare(operator.lt, 5)
    ),
    Target("rss_bytes_per_10k_requests", "... as bytes per 10,000 requests (L0_memory_growth)", ""),
)


def _sum(*values) -> int:
    return int(sum(v for v in values if v))


def _median(values: list[float]) -> float | None:
    import statistics

    return round(statistics.median(values), 2) if values else None


def _entries(faults: dict, name: str) -> list[dict]:
    value = faults.get(name)
    return [] if value is None else (value if isinstance(value, list) else [value])


HEAL_FAULTS = ("stub_kill", "stub_stop", "triton_kill")
STOP_FAULTS = ("stop_after_stub_death", "stop_under_load")


def heal_figures(faults: dict) -> tuple[list[float | None], list[float]]:
    """(fault -> next answer, per heal fault; None: never), (SIGTERM stop seconds)."""
    heals = [f.get("back_after_s") for n in HEAL_FAULTS for f in _entries(faults, n)]
    stops = [f["stop_s"] for n in STOP_FAULTS for f in _entries(faults, n) if "stop_s" in f]
    return heals, stops


def faults_lost(faults: dict) -> int:
    """Requests lost by retrying callers across the faults (failed counts as lost)."""
    total = sum(f.get("retrying_lost", 0) for n in HEAL_FAULTS for f in _entries(faults, n))
    loads = {
        "stop_under_load": ("callers",),
        "prometheus_down": ("load_before", "load_after"),
        "idle_connections": ("baseline", "with_idle"),
        "client_disconnects": ("load_after",),
        "client_deadlines": ("load_after",),
    }
    for name, keys in loads.items():
        for f in _entries(faults, name):
            total += sum(lost(f[k]) for k in keys if k in f)
    return total


def summarize_report(parts: dict) -> dict:
    """The headline numbers from the scenario results (None where a scenario did not run).

    ``lost_requests`` counts requests that got neither an answer nor an explicit refusal
    (INVALID_ARGUMENT, or UNAVAILABLE / NOT_FOUND meaning "retry later"): server errors such
    as INTERNAL, connections broken mid-request, and requests unanswered at the caller's
    deadline. In the faults it counts the callers that retry with the library's default
    policy; a bare caller loses what was in flight when a process is killed, by definition
    (reported per fault, not here).
    """
    hostile, web = parts.get("hostile"), parts.get("web") or {}
    overload, soak, faults = parts.get("overload"), parts.get("soak"), parts.get("faults")
    lost_total = None
    if overload or soak or faults:
        lost_total = 0
        for part in (overload, soak):
            if part:
                lost_total += _sum(part["lost"], part["failed"], part["timeout"])
        if faults:
            lost_total += faults_lost(faults)
    results = fault_results(faults) if faults else []
    heals, stops = heal_figures(faults) if faults else ([], [])

    def count(part: dict | None, key: str) -> int:
        return (part or {}).get(key, 0)

    return {
        "invalid_inputs_tried": None
        if not hostile
        else count(hostile, "invalid_tried") + count(web, "invalid_tried"),
        "invalid_inputs_refused": None
        if not hostile
        else count(hostile, "invalid_refused") + count(web, "invalid_refused"),
        "valid_odd_inputs_tried": None
        if not hostile
        else count(hostile, "valid_tried") + count(web, "valid_tried"),
        "valid_odd_inputs_answered": None
        if not hostile
        else count(hostile, "valid_answered") + count(web, "valid_answered"),
        "server_crashes": parts.get("server_crashes"),
        "lost_requests": lost_total,
        "overload_rejected": overload["rejected"] if overload else None,
        "overload_p99_ms": overload["ok_p99_ms"] if overload else None,
        "overload_p50_ms": overload["ok_p50_ms"] if overload else None,
        "overload_refused_p50_ms": overload["rejected_p50_ms"] if overload else None,
        "left_in_flight": None
        if not overload
        else overload["in_flight_after"] + overload["timeout_override"]["in_flight_after"],
        "faults_tried": len(results) if faults else None,
        "faults_survived": sum(ok for _, ok in results) if faults else None,
        # A heal that never came back is shown (and missed) as "never".
        "heal_back_max_s": None if not heals else ("never" if None in heals else max(heals)),
        "heal_back_median_s": _median([h for h in heals if h is not None]),
        "stop_max_s": max(stops) if stops else None,
        "soak_errors": soak["errors_total"] if soak else None,
        "soak_requests": soak["requests"] if soak else None,
        "rss_growth_pct": soak["rss_growth_pct"] if soak else None,
        "rss_bytes_per_10k_requests": soak["rss_bytes_per_10k_requests"] if soak else None,
        "faults": dict(results),
    }


def verdicts(summary: dict) -> dict:
    """{key: {value, target, met}} for the JSON report (met None: not measured, or info)."""
    return {
        t.key: {"value": summary.get(t.key), "target": t.shown or None, "met": t.met(summary)}
        for t in TARGETS
    }


def missed(summary: dict) -> list[str]:
    """The keys whose target this run missed."""
    return [t.key for t in TARGETS if t.met(summary) is False]


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(summary: dict) -> str:
    """The summary as a fixed-width text table: value, target, pass/fail, meaning."""
    lines = [f"{'metric':<27} {'value':>9}  {'target':<8} {'':<4} meaning", "-" * 110]
    for t in TARGETS:
        met = t.met(summary)
        verdict = "" if met is None else ("ok" if met else "MISS")
        shown = _shown(summary.get(t.key))
        lines.append(f"{t.key:<27} {shown:>9}  {t.shown:<8} {verdict:<4} {t.meaning}")
    faults = summary.get("faults") or {}
    if faults:
        lines += ["", f"{'fault':<40} survived", "-" * 50]
        lines += [f"{name:<40} {'yes' if ok else 'NO'}" for name, ok in faults.items()]
    gone = missed(summary)
    lines += ["", f"targets missed: {', '.join(gone)}" if gone else "every measured target met"]
    return "\n".join(lines)
