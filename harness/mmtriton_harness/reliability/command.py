"""`mmtriton reliability`: every scenario on real servers, a JSON report, a table.

make reliability                 # all scenarios, soak 40 s (about 5 minutes)
make soak                        # the soak alone, SOAK_SECONDS (default 600)
mmtriton reliability --only hostile security

Exits 1 when any target (report.TARGETS) is missed, 0 when all that were measured are met.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmtriton.paths import PROJECT_ROOT, artifacts_dir, model_repository_dir
from mmtriton_build.examples import load_examples

from .faults import run_heal_faults
from .hostile import run_hostile, run_web_hostile
from .overload import run_overload, run_timeout_override
from .production import run_production_faults
from .report import missed, summarize_report, table, verdicts
from .security import admin_apis_refused, run_admin_apis, run_tls, run_upload_limits, tls_ok
from .servers import kill_hard, start_server
from .soak import run_soak, soak_seconds

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "hostile inputs, overload, faults, soak, security on real servers"

SCENARIOS = ("hostile", "overload", "soak", "security", "faults")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton reliability`."""
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--soak-seconds", type=float, default=None, help="default: $SOAK_SECONDS, else 40"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="faults: one stub kill instead of every stub, fewer repeats",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "reliability.json")
    parser.add_argument("--work-dir", type=Path, default=artifacts_dir() / "reliability")
    parser.add_argument("--no-web", action="store_true", help="skip the web page's hostile inputs")


def overload_on(server, examples) -> tuple[dict, int]:
    """Overload, then per-request timeouts, on `server`; stops it (SIGKILL when requests
    leaked: a graceful stop would wait out both timeouts). (result, unplanned exits)."""
    result: dict = {}
    try:
        result.update(run_overload(server, examples))
        result["timeout_override"] = run_timeout_override(server, examples)
    finally:
        died = server.process.poll() is not None
        leaked = not result.get("timeout_override") or any(
            r["in_flight_after"] for r in (result, result["timeout_override"])
        )
        if died or leaked:
            kill_hard(server)
            result["shutdown"] = "died" if died else "SIGKILL (requests left in flight)"
        else:
            result["shutdown"] = f"exit {server.stop()}"
    result["repository"] = server.settings.model_repository
    return result, int(
        died or result["shutdown"] not in ("exit 0", "SIGKILL (requests left in flight)")
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m mmtriton_harness.reliability` (the same as `mmtriton reliability`)."""
    parser = argparse.ArgumentParser(prog="mmtriton reliability")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton reliability`."""
    only, work = set(args.only), args.work_dir
    seconds = args.soak_seconds or soak_seconds(40)
    examples = load_examples(artifacts_dir(), 64)
    parts: dict = {}
    crashes = 0
    started = time.monotonic()

    def step(name: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {name}", flush=True)

    if only & {"hostile", "soak", "security"}:
        step("starting the server for hostile inputs, soak and security")
        server = start_server(work / "logs")
        died = False
        try:
            if "hostile" in only:
                step("hostile inputs (gRPC)")
                parts["hostile"] = run_hostile(server.grpc_url, examples)
                if not args.no_web:
                    step("hostile inputs (web page)")
                    parts["web"] = run_web_hostile(server.grpc_url, examples, work / "web")
            if "soak" in only:
                step(f"soak ({seconds:g} s)")
                parts["soak"] = run_soak(server.grpc_url, server.process.pid, examples, seconds)
            if "security" in only:
                step("security: admin APIs and upload limits")
                admin = run_admin_apis(server)
                parts["security"] = {
                    "admin_apis_refused": admin_apis_refused(admin),
                    "admin_apis": admin,
                    "upload_limits": run_upload_limits(server.grpc_url, examples),
                }
            died = server.process.poll() is not None
        finally:
            code = server.stop()
        parts["main_server"] = {
            "exit_code": code,
            "died_during_run": died,
            "shm_regions_left": len(server.leaked_at_exit),
        }
        crashes += int(died or code != 0 or bool(server.leaked_at_exit))
    if "overload" in only:
        step("overload on the shipped configs (own server: leaked requests would wedge it)")
        parts["overload"], crashed = overload_on(start_server(work / "overload"), examples)
        crashes += crashed
        parts["overload"].pop("repository", None)
    if "security" in only:
        step("security: gRPC over TLS")
        tls = run_tls(work / "tls", examples, start_server)
        parts.setdefault("security", {})["tls"] = {"ok": tls_ok(tls), **tls}
        crashes += int(tls["exit_code"] != 0)
    if "faults" in only:
        repository = model_repository_dir()
        step("faults on `mmtriton serve`: stub kills, SIGSTOP, tritonserver kill, web page, stop")
        faults = run_heal_faults(repository, work / "faults", examples, every_stub=not args.quick)
        step("faults on `mmtriton serve`: Prometheus down, idle connections, disconnects, stops")
        faults.update(run_production_faults(repository, work / "faults", examples, args.quick))
        parts["faults"] = faults
        for name in ("stop_after_stub_death", "stop_under_load"):
            crashes += int(faults[name].get("exit_code") != 0)
    parts["server_crashes"] = crashes

    summary = summarize_report(parts)
    report = {
        **summary,
        "targets": verdicts(summary),
        "targets_missed": missed(summary),
        "soak_seconds": seconds if "soak" in only else None,
        "scenarios": sorted(only),
        "took_s": round(time.monotonic() - started, 1),
        "details": parts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(summary))
    print(f"\nreport: {args.out}")
    return 1 if missed(summary) else 0
