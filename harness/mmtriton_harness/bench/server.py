"""Servers for the benchmark: the shipped repository or a variant written to a temp folder."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from mmtriton.server.process import TritonProcess, start_on_free_ports
from mmtriton.server.procs import stub_instances
from mmtriton_build.export import repository as repo_files
from mmtriton_build.export.policy import BatchPolicy


def start_server(
    repository: Path, log_dir: Path, timeout_s: float = 180, response_cache: bool = False
) -> TritonProcess:
    """A tritonserver on free ports, ready to serve.

    The encoders' response cache is off unless asked for: the bench cycles through a few dozen
    samples, so after one pass every encoder call would be a cache hit, and the served figure
    would measure the cache, not the pipeline (real requests rarely repeat; `--cache-trace`
    measures the cache on a workload where repeats are the point).
    """
    overrides = {} if response_cache else {"response_cache_bytes": 0}
    return start_on_free_ports(repository, log_dir, timeout_s, **overrides)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name sits in parentheses and may contain spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def rss_kb(pid: int) -> int:
    """VmRSS of one process in kB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def process_tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (tritonserver and its Python stubs), in MB."""
    tree, total, todo = _children(), 0, [pid]
    while todo:
        p = todo.pop()
        total += rss_kb(p)
        todo.extend(tree.get(p, []))
    return round(total / 1024, 1)


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by tritonserver and its stubs.

    Per request, this is the cost of a configuration that other jobs on a shared machine do
    not blur the way they blur throughput.
    """
    tree, todo, total = _children(), [pid], 0.0
    while todo:
        p = todo.pop()
        total += _process_cpu_s(p)
        todo.extend(tree.get(p, []))
    return total


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (utime + stime) of one process so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_PROCESS = "tritonserver"


def step_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds used so far by tritonserver itself (gRPC, the ensemble scheduler) and by
    each model's Python stubs, summed over its instances ("preprocess_0_1" -> preprocess)."""
    steps = {SERVER_PROCESS: _process_cpu_s(pid)}
    for instance, stub in stub_instances(pid).items():
        model = instance.rsplit("_", 2)[0]
        steps[model] = steps.get(model, 0.0) + _process_cpu_s(stub)
    return steps


def strip_dynamic_batching(config: str) -> str:
    """The config without its `dynamic_batching { ... }` block (max_batch_size is kept)."""
    start = config.find("dynamic_batching {")
    if start < 0:
        return config
    depth, i = 0, config.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(config[i], 0)
        i += 1
        if depth == 0:
            break
    return config[:start] + config[i:].lstrip("\n")


def variant_configs(
    labels: list[str],
    policies: Mapping[str, BatchPolicy] | None = None,
    dynamic_batching: bool = True,
) -> dict[str, str]:
    """The repository's generated files with some policies replaced (and batching optional)."""
    with mock.patch.dict(repo_files.POLICIES, dict(policies or {})):
        files = repo_files.generate_configs(labels)
    if not dynamic_batching:
        files = {
            k: strip_dynamic_batching(v) if k.endswith(".pbtxt") else v for k, v in files.items()
        }
    return files


def write_variant(
    source: Path,
    target: Path,
    policies: Mapping[str, BatchPolicy] | None = None,
    dynamic_batching: bool = True,
) -> Path:
    """A repository in `target`: generated configs, model files symlinked from `source`."""
    labels = (source / "multimodal" / repo_files.LABEL_FILE).read_text().split()
    for rel, text in variant_configs(labels, policies, dynamic_batching).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for version_dir in source.glob("*/1"):
        dest = target / version_dir.parent.name / "1"
        dest.mkdir(parents=True, exist_ok=True)
        for f in version_dir.iterdir():
            if f.is_file() and not (dest / f.name).exists():
                os.symlink(f.resolve(), dest / f.name)
    return target
