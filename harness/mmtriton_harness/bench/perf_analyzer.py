"""Triton's own load generator, `perf_analyzer`, as a second opinion on the served numbers.

The real binary ships inside the tritonclient 2.51.0 wheel; it needs `libb64.so.0d` (Debian
libb64-0d) and `libcudart.so.12`, of which the pytriton wheel carries a copy.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from mmtriton import spec
from mmtriton_client.client import Sample


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer cannot run here; the message says why."""


def serialize_bytes(value: bytes) -> bytes:
    """Triton's BYTES element serialization: 4-byte little-endian length, then the bytes."""
    return struct.pack("<I", len(value)) + value


def input_data(samples: list[Sample]) -> dict:
    """`--input-data` JSON: one entry per sample, BYTES inputs as base64 of their serialization."""
    entries = []
    for s in samples:
        entry = {}
        for m in spec.MODALITIES:
            value = getattr(s, m)
            if not value:
                continue
            raw = value.encode() if isinstance(value, str) else value
            entry[spec.RAW_INPUTS[m].name] = {
                "b64": base64.b64encode(serialize_bytes(raw)).decode("ascii"),
                "shape": list(spec.RAW_INPUTS[m].dims),
            }
        entries.append(entry)
    return {"data": entries}


def find_binary() -> Path:
    """perf_analyzer from this venv (the tritonclient wheel's data scripts)."""
    candidates = [Path(sys.executable).parent / "perf_analyzer"]
    found = shutil.which("perf_analyzer")
    if found:
        candidates.append(Path(found))
    prefix = Path(sys.prefix)
    candidates += sorted(prefix.glob("lib/python3*/site-packages/tritonclient*/**/perf_analyzer"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise PerfAnalyzerUnavailable(
        "no perf_analyzer binary in this venv (it ships in the tritonclient==2.51.0 wheel's "
        ".data/data/bin; PyPI's perf-analyzer package is an empty placeholder)"
    )


def library_dir(work: Path) -> Path:
    """A folder holding `libcudart.so.12`, linked to the pytriton wheel's copy."""
    import pytriton

    libs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    found = sorted(libs.glob("libcudart-*.so.12*"))
    if not found:
        raise PerfAnalyzerUnavailable(f"no libcudart-*.so.12* under {libs} to satisfy the binary")
    work.mkdir(parents=True, exist_ok=True)
    link = work / "libcudart.so.12"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(found[0])
    return work


def _environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    lib = str(library_dir(work / "lib"))
    env["LD_LIBRARY_PATH"] = lib + (
        os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
    )
    return env


def check_runs(binary: Path, env: dict[str, str]) -> None:
    """Raise PerfAnalyzerUnavailable with the loader's complaint when the binary cannot start."""
    proc = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, env=env, check=False
    )
    missing = [line.split()[0] for line in proc.stdout.splitlines() if "not found" in line]
    if missing:
        hint = " (Debian package libb64-0d)" if any("libb64" in m for m in missing) else ""
        raise PerfAnalyzerUnavailable(f"perf_analyzer lacks {', '.join(missing)}{hint}")


def parse_csv(text: str) -> list[dict]:
    """perf_analyzer's `-f` CSV -> rows with rps and latencies in ms."""
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append(
            {
                "concurrency": int(row["Concurrency"]),
                "rps": float(row["Inferences/Second"]),
                "p50_ms": round(int(row["p50 latency"]) / 1000, 2),
                "p95_ms": round(int(row["p95 latency"]) / 1000, 2),
                "p99_ms": round(int(row["p99 latency"]) / 1000, 2),
                "server_queue_ms": round(int(row["Server Queue"]) / 1000, 2),
                "server_compute_ms": round(
                    sum(
                        int(row[k])
                        for k in (
                            "Server Compute Input",
                            "Server Compute Infer",
                            "Server Compute Output",
                        )
                    )
                    / 1000,
                    2,
                ),
            }
        )
    return rows


def run(
    url: str,
    samples: list[Sample],
    concurrencies: tuple[int, ...],
    work: Path,
    interval_ms: int,
    timeout_s: float = 120,
) -> list[dict]:
    """Measure the ensemble at each concurrency; one perf_analyzer process per level.

    A level perf_analyzer gives up on (no stable window on a busy machine, or a request
    refused by admission control: it stops at the first error) becomes a row with `failed`
    set, and the other levels still run; only when every level fails does it raise.
    """
    binary = find_binary()
    env = _environment(work)
    check_runs(binary, env)
    data = work / "input_data.json"
    data.write_text(json.dumps(input_data(samples)))
    rows = []
    for c in concurrencies:
        report = work / f"pa_c{c}.csv"
        cmd = [
            str(binary),
            "-m",
            spec.ENSEMBLE.name,
            "-i",
            "grpc",
            "-u",
            url,
            "--input-data",
            str(data),
            "--concurrency-range",
            f"{c}:{c}",
            "--measurement-interval",
            str(interval_ms),
            # A shared 2-core machine never settles within the default 10 %.
            "--stability-percentage",
            "50",
            "--max-trials",
            "4",
            "-f",
            str(report),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            rows.append({"concurrency": c, "failed": f"timed out after {timeout_s:g} s"})
            continue
        if proc.returncode != 0 or not report.exists():
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            reason = next((x.strip() for x in reversed(lines) if "error" in x.lower()), "")
            reason = reason or (lines[-1].strip() if lines else "")
            rows.append({"concurrency": c, "failed": f"exit {proc.returncode}: {reason}"})
            continue
        rows += parse_csv(report.read_text())
    if rows and all("failed" in r for r in rows):
        raise PerfAnalyzerUnavailable(
            "; ".join(f"concurrency {r['concurrency']}: {r['failed']}" for r in rows)
        )
    return rows
