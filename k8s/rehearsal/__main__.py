"""`python -m k8s.rehearsal`: play an overlay's pods here; exit 0 when it behaved as expected.

python -m k8s.rehearsal --overlay cpu --heal           # Ready, answers, heals
python -m k8s.rehearsal --overlay gpu --expect gpu-missing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .scenario import Options, rehearse


def short_summary(summary: dict) -> dict:
    """The summary without the event log and the per-pod detail a reader rarely needs."""
    keep = (
        "overlay",
        "expect",
        "ok",
        "outcome",
        "error",
        "seconds",
        "inference",
        "stub_kill",
        "freeze",
        "after_stub_kill",
        "after_restart",
        "web_page",
        "generated_secrets",
        "services",
        "failed_config",
    )
    out = {k: summary[k] for k in keep if summary.get(k) not in (None, {}, [])}
    for key in ("inference", "after_stub_kill", "after_restart"):
        if key in out:
            out[key] = {k: v for k, v in out[key].items() if k != "batches"}
    out["pods"] = [
        {
            "name": p["name"],
            "init_containers": [
                {k: i[k] for k in ("name", "exit_code", "seconds")} for i in p["init_containers"]
            ],
            "stopped_at": p["stopped_at"],
            "containers": [
                {
                    "name": c["name"],
                    "restarts": c["restarts"],
                    "probe_failures": c["probe_failures"],
                }
                for c in p["containers"]
            ],
            "ready_history": p["ready_history"],
            "shm_left": {k: len(v) for k, v in p.get("shm_left", {}).items()},
            "stop": [
                {
                    k: s[k]
                    for k in (
                        "container",
                        "exit_code",
                        "seconds",
                        "pre_stop",
                        "escalated_to_sigkill",
                    )
                }
                for s in p["stop"]
            ],
        }
        for p in summary.get("pods", [])
    ]
    notes = {n for p in summary.get("pods", []) for n in p["not_enforced"]}
    out["not_enforced_here"] = sorted(notes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s.rehearsal", description=__doc__)
    parser.add_argument("--overlay", default="cpu", help="k8s/overlays/<name> (default cpu)")
    parser.add_argument(
        "--expect",
        choices=("ready", "gpu-missing"),
        default=None,
        help="ready: every pod Ready and correct answers; gpu-missing: the GPU pod stops at "
        "its first GPU step with a message naming the missing GPU (default: gpu-missing for "
        "the gpu overlay, ready otherwise)",
    )
    parser.add_argument("--pods", nargs="*", default=[], help="workload names (default: all)")
    parser.add_argument("--samples", type=int, default=32, help="held-out samples to send")
    parser.add_argument("--min-accuracy", type=float, default=0.95)
    parser.add_argument(
        "--heal", action="store_true", help="also kill a stub and freeze the container (issue 13)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the pods' temp dirs")
    parser.add_argument(
        "--rendered", type=Path, help="play this rendered YAML instead of rendering the overlay"
    )
    parser.add_argument("--json", type=Path, help="write the summary here as well")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="containers' logs and the summary (default artifacts/rehearsal/<overlay>)",
    )
    args = parser.parse_args(argv)
    expect = args.expect or ("gpu-missing" if args.overlay == "gpu" else "ready")
    summary = rehearse(
        Options(
            overlay=args.overlay,
            expect=expect,
            pods=args.pods,
            samples=args.samples,
            min_accuracy=args.min_accuracy,
            heal=args.heal,
            keep=args.keep,
            rendered=args.rendered,
            out_dir=args.out_dir,
        )
    )
    path = args.json or Path(summary["logs"]) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n== summary (the full one, with every event: {path})")
    print(json.dumps(short_summary(summary), indent=2, default=str))
    verdict = "as expected" if summary["ok"] else "NOT as expected"
    print(
        f"\nrehearsal of overlay {args.overlay} (expect {expect}): {verdict}: "
        f"{summary.get('outcome') or summary.get('error')}"
    )
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
