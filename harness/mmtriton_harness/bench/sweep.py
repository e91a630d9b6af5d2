"""`mmtriton bench --sweep`: one knob of export/policy.py changed at a time, fixed concurrency.

The machine is shared, so its speed drifts by tens of percent within minutes. Each variant is
therefore measured paired with the shipped policy: both servers stay up, and short windows
alternate between them (variant, shipped, variant, shipped). Compare the ratio column, which
drift affects far less than the absolute numbers. The servers run with the encoders' response
cache off (server.start_server): the samples repeat, and a cache hit skips the very policy a
variant changes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from mmtriton_build.export.policy import POLICIES, BatchPolicy
from mmtriton_client.client import Sample

from .load import LoadPoint, measure, merge, warm_up
from .server import start_server, write_variant

ENCODER_NAMES = ("image_encoder", "text_encoder", "audio_encoder")
BATCHED = ("preprocess", *ENCODER_NAMES, "fusion")


def _with(models: tuple[str, ...], **changes) -> dict[str, BatchPolicy]:
    return {m: dataclasses.replace(POLICIES[m], **changes) for m in models}


def _threads(model: str) -> tuple[str, dict[str, BatchPolicy]]:
    other = 1 if POLICIES[model].ort_threads > 1 else 2
    return f"{model}: {other} ORT thread{'s' * (other > 1)}", _with((model,), ort_threads=other)


def configurations() -> list[tuple[str, dict[str, BatchPolicy]]]:
    """(description, policies replaced) for each variant of the shipped policy."""
    pre = POLICIES["preprocess"].cpu_instances
    return [
        *(
            (f"preprocess: {n} instance{'s' * (n > 1)}", _with(("preprocess",), cpu_instances=n))
            for n in (pre - 1, pre + 1)
            if n >= 1
        ),
        (
            "preprocess: batches of 1 (preferred 1, delay 0)",
            _with(("preprocess",), preferred_batch_sizes=(1,), max_queue_delay_us=0),
        ),
        _threads("image_encoder"),
        _threads("text_encoder"),
        ("encoders: 2 instances each", _with(ENCODER_NAMES, cpu_instances=2)),
        ("all: preferred (16, 32)", _with(BATCHED, preferred_batch_sizes=(16, 32))),
        ("all: preferred (4, 8)", _with(BATCHED, preferred_batch_sizes=(4, 8))),
        ("all: queue delay 0 us", _with(BATCHED, max_queue_delay_us=0)),
        ("all: queue delay 10 ms", _with(BATCHED, max_queue_delay_us=10_000)),
    ]


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One variant and the shipped policy measured in the windows between its own."""

    name: str
    variant: LoadPoint | None
    shipped: LoadPoint | None
    failure: str = ""

    @property
    def ratio(self) -> float:
        if not self.variant or not self.shipped or not self.shipped.rps:
            return 0.0
        return self.variant.rps / self.shipped.rps


def _start(repo: Path, target: Path, policies: dict, log_dir: Path):
    return start_server(write_variant(repo, target, policies), log_dir)


def run_sweep(
    repo: Path,
    samples: list[Sample],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    log_dir: Path,
    only: int | None = None,
    rounds: int = 2,
    log=print,
) -> list[SweepRow]:
    """Measure every variant (or the first `only`) paired with the shipped policy."""
    rows = []
    window = duration_s / rounds
    with tempfile.TemporaryDirectory(prefix="mmtriton-sweep-") as tmp:
        shipped = _start(repo, Path(tmp) / "shipped", {}, log_dir)
        try:
            warm_up(shipped.grpc_url, samples[:4], rounds=1)
            for i, (name, policies) in enumerate(configurations()[:only]):
                try:
                    server = _start(repo, Path(tmp) / f"v{i}", policies, log_dir)
                except (RuntimeError, TimeoutError) as exc:
                    lines = str(exc).splitlines()
                    reason = next((x for x in lines if x.startswith("E")), lines[0])
                    log(f"  sweep  {name}: the server did not start: {reason}")
                    rows.append(SweepRow(name, None, None, reason))
                    continue
                try:
                    warm_up(server.grpc_url, samples[:4], rounds=1)
                    got: dict[str, list[LoadPoint]] = {"variant": [], "shipped": []}
                    for _ in range(rounds):
                        for kind, url in (
                            ("variant", server.grpc_url),
                            ("shipped", shipped.grpc_url),
                        ):
                            got[kind].append(
                                measure(url, samples, concurrency, warmup_s, window, name)
                            )
                finally:
                    server.stop(drain=False)
                row = SweepRow(name, merge(got["variant"]), merge(got["shipped"]))
                log(
                    f"  sweep  {name:<48} {row.variant.rps:6.1f} req/s vs shipped "
                    f"{row.shipped.rps:6.1f} = {row.ratio:4.2f}  p99 "
                    f"{row.variant.latency['p99_ms']:6.1f} ms  errors {row.variant.errors}"
                )
                rows.append(row)
        finally:
            shipped.stop(drain=False)
    return rows


def _batches(p: LoadPoint) -> str:
    return "/".join(f"{p.models.get(m, {}).get('avg_batch', 0):.1f}" for m in BATCHED)


def markdown(rows: list[SweepRow], concurrency: int) -> str:
    """The sweep as a markdown table."""
    shipped = (
        merge([r.shipped for r in rows if r.shipped]) if any(r.shipped for r in rows) else None
    )
    lines = [
        f"Concurrency {concurrency}, all three modalities, one knob of policy.py changed at a "
        "time; each variant alternates windows with the shipped policy (ratio = variant / "
        "shipped in the same minutes).",
        "",
        "| configuration | req/s | shipped req/s | ratio | p50 ms | p99 ms | errors "
        "| mean batch pre/img/txt/aud/fus |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    if shipped:
        lines.append(
            f"| **shipped policy.py** (all its windows) | {shipped.rps:.1f} | | 1.00 "
            f"| {shipped.latency['p50_ms']:.1f} | {shipped.latency['p99_ms']:.1f} "
            f"| {shipped.errors} | {_batches(shipped)} |"
        )
    for r in rows:
        if not r.variant:
            lines.append(f"| {r.name} | failed: {r.failure} | | | | | | |")
            continue
        v = r.variant
        lines.append(
            f"| {r.name} | {v.rps:.1f} | {r.shipped.rps:.1f} | {r.ratio:.2f} "
            f"| {v.latency['p50_ms']:.1f} | {v.latency['p99_ms']:.1f} | {v.errors} "
            f"| {_batches(v)} |"
        )
    return "\n".join(lines) + "\n"
