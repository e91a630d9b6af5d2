"""The summary written to reports/reliability.json, and its table."""

from __future__ import annotations

from .faults import faults_survived


def _sum(*values) -> int:
    return int(sum(v for v in values if v))


def summarize_report(parts: dict) -> dict:
    """The headline numbers from the scenario results (None where a scenario did not run).

    ``lost_requests`` counts requests that got neither an answer nor an explicit refusal
    (INVALID_ARGUMENT, or UNAVAILABLE / NOT_FOUND meaning "retry later"): connections broken
    mid-request, server errors such as INTERNAL, and requests still unanswered at the
    caller's deadline (30 s). For the two kill faults it counts the
    callers that use the client library's retries (a bare caller loses what was in flight
    when a process is SIGKILLed, by definition; those are reported per fault).
    """
    hostile, web = parts.get("hostile"), parts.get("web")
    overload, soak, faults = parts.get("overload"), parts.get("soak"), parts.get("faults")
    lost = None
    if overload or soak or faults:
        lost = 0
        for part in (overload, soak):
            if part:
                lost += _sum(part["lost"], part["failed"], part["timeout"])
        if faults:
            for name in ("stub_kill", "server_kill"):
                callers = faults[name]["retrying_callers"]
                lost += _sum(callers["lost"], callers["failed"], callers["timeout"])
            callers = faults["drain_under_load"]["callers"]
            lost += _sum(callers["lost"], callers["failed"], callers["timeout"])
    return {
        "bad_inputs_tried": None if not hostile else hostile["tried"] + (web or {}).get("tried", 0),
        "bad_inputs_clean": None if not hostile else hostile["clean"] + (web or {}).get("clean", 0),
        "server_crashes": parts.get("server_crashes"),
        "lost_requests": lost,
        "overload_rejected": overload["rejected"] if overload else None,
        "overload_p99_ms": overload["ok_p99_ms"] if overload else None,
        "left_in_flight": None
        if not overload
        else overload["in_flight_after"] + overload["timeout_override"]["in_flight_after"],
        "faults_survived": faults_survived(faults) if faults else None,
        "soak_errors": soak["errors_total"] if soak else None,
        "rss_growth_pct": soak["rss_growth_pct"] if soak else None,
    }


ROWS = (
    ("bad_inputs_tried", "hostile inputs sent (gRPC raw + web page)", None),
    ("bad_inputs_clean", "... refused clearly or answered, server fine after", "= tried"),
    ("server_crashes", "unplanned server exits / unclean shutdowns", "0"),
    ("lost_requests", "requests neither answered nor explicitly refused", "0"),
    ("overload_rejected", "requests refused fast under ~5x overload", "> 0"),
    ("overload_p99_ms", "p99 latency of accepted requests under overload", "bounded"),
    ("left_in_flight", "accepted, never finished (overload + 1 ms timeouts)", "0"),
    ("faults_survived", "faults recovered from (stub kill, SIGKILL, drain)", "3"),
    ("soak_errors", "unexpected outcomes during the soak", "0"),
    ("rss_growth_pct", "server RSS growth after warm-up (%)", "< 10"),
)


def table(summary: dict) -> str:
    """The summary as a fixed-width text table."""
    lines = [f"{'metric':<31} {'value':>8}  {'target':<8} meaning", "-" * 100]
    for key, meaning, target in ROWS:
        value = summary.get(key)
        shown = "-" if value is None else str(value)
        lines.append(f"{key:<31} {shown:>8}  {target or '':<8} {meaning}")
    return "\n".join(lines)
