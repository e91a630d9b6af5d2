"""Run a real Prometheus on the project's config and rules, query it, list the queries we rely on.

    with PrometheusServer("127.0.0.1:8002", "127.0.0.1:7860", scrape_interval="1s") as prom:
        prom.wait_for_targets()
        prom.query('up{job="triton"}')

`dashboard_queries()` and `rule_queries()` list every PromQL expression of the Grafana dashboard
and the rule files, so a test can send each one to a Prometheus that scrapes a real stack and
check it returns data. Queries that can only have data on a GPU server are marked `gpu_only`
(dashboard panels whose description holds GPU_ONLY_MARKER); those that need the web page's
metrics are marked `needs_web`. Standard library only (urllib), besides PyYAML for the config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmtriton.paths import PROJECT_ROOT
from mmtriton.server.process import free_port, tied_to_this_process

MONITORING_DIR = PROJECT_ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING_DIR / "prometheus.yml"
RULES_DIR = MONITORING_DIR / "rules"
DASHBOARD = MONITORING_DIR / "grafana" / "mmtriton.json"

TRITON_JOB = "triton"
WEB_JOB = "mmtriton-web"
GPU_ONLY_MARKER = "[gpu-only]"
# What Grafana's built-in variables stand for when a dashboard query is sent outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_WEB_MARKERS = ("mmtriton_web_", "mmtriton:web_", f'job="{WEB_JOB}"')


class PrometheusError(RuntimeError):
    """Prometheus refused a query or did not start."""


@dataclass(frozen=True)
class PromQuery:
    """One PromQL expression we rely on, and where it comes from.

    `source` is "dashboard", "record" or "alert"; `name` the panel title (with the target's
    refId), the recorded series or the alert; `expr` is ready to send to Prometheus (Grafana
    variables expanded).
    """

    source: str
    name: str
    expr: str
    gpu_only: bool = False
    needs_web: bool = False


def expand_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana's `$__rate_interval`-style variables with concrete durations."""
    for name, value in (values or GRAFANA_VARIABLES).items():
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    return expr


def _needs_web(expr: str) -> bool:
    return any(marker in expr for marker in _WEB_MARKERS)


def _panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(path: Path = DASHBOARD) -> list[PromQuery]:
    """Every target expression of the Grafana dashboard at `path`."""
    dashboard = json.loads(Path(path).read_text())
    queries = []
    for panel in _panels(dashboard.get("panels", [])):
        gpu_only = GPU_ONLY_MARKER in panel.get("description", "")
        for target in panel.get("targets", []):
            if not target.get("expr"):
                continue
            queries.append(
                PromQuery(
                    source="dashboard",
                    name=f"{panel.get('title', '?')} [{target.get('refId', '?')}]",
                    expr=expand_grafana_variables(target["expr"]),
                    gpu_only=gpu_only,
                    needs_web=_needs_web(target["expr"]),
                )
            )
    return queries


def rule_queries(rules_dir: Path = RULES_DIR) -> list[PromQuery]:
    """Every recording rule ("record") and alert ("alert") in `rules_dir/*.yml`, in file order."""
    queries = []
    for path in sorted(Path(rules_dir).glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                source = "record" if "record" in rule else "alert"
                queries.append(
                    PromQuery(
                        source=source,
                        name=rule[source],
                        expr=str(rule["expr"]).strip(),
                        gpu_only="nv_gpu_" in str(rule["expr"]),
                        needs_web=_needs_web(str(rule["expr"])),
                    )
                )
    return queries


def all_queries(dashboard: Path = DASHBOARD, rules_dir: Path = RULES_DIR) -> list[PromQuery]:
    """The dashboard's queries and the recording rules (what must return data under load)."""
    records = [q for q in rule_queries(rules_dir) if q.source == "record"]
    return [*dashboard_queries(dashboard), *records]


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def referenced_recording_rules(expr: str) -> set[str]:
    """Names in `expr` that look like recording rules (level:metric:operation)."""
    return {name for name in _NAME.findall(expr) if name.count(":") >= 2}


# --- configuration -------------------------------------------------------------------------
def render_config(
    dest_dir: Path,
    *,
    triton_targets: Sequence[str],
    web_targets: Sequence[str] = (),
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    rules_dir: Path = RULES_DIR,
    template: Path = PROMETHEUS_CONFIG,
) -> Path:
    """Write `dest_dir/prometheus.yml`: the project's config with these targets and intervals.

    A job without targets is left out (so a missing web page is not reported as down), and
    rule_files point at `rules_dir` by absolute path.
    """
    config = yaml.safe_load(Path(template).read_text())
    targets = {TRITON_JOB: list(triton_targets), WEB_JOB: list(web_targets)}
    unknown = {c["job_name"] for c in config["scrape_configs"]} - set(targets)
    if unknown:
        raise ValueError(f"render_config does not know the jobs {sorted(unknown)}")
    config["scrape_configs"] = [
        {**c, "static_configs": [{"targets": targets[c["job_name"]]}]}
        for c in config["scrape_configs"]
        if targets[c["job_name"]]
    ]
    glob = config.get("global", {})
    if scrape_interval:
        glob["scrape_interval"] = scrape_interval
        glob["scrape_timeout"] = scrape_interval
    if evaluation_interval or scrape_interval:
        glob["evaluation_interval"] = evaluation_interval or scrape_interval
    config["global"] = glob
    config["rule_files"] = [str(Path(rules_dir).resolve() / "*.yml")]
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / "prometheus.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


# --- HTTP API ------------------------------------------------------------------------------
def _get_json(url: str, timeout_s: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # Prometheus explains a bad query in the body
        try:
            body = json.loads(exc.read())
        except ValueError:
            raise PrometheusError(f"{url}: HTTP {exc.code}") from exc
        raise PrometheusError(body.get("error", f"HTTP {exc.code}")) from exc


def instant_query(
    base_url: str, expr: str, *, at: float | None = None, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Evaluate `expr` at `at` (default now) through /api/v1/query; returns the result list.

    Each item is `{"metric": {labels}, "value": [time, "value"]}` for vectors; a scalar comes
    back as one item without labels.
    """
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
    body = _get_json(url, timeout_s)
    if body.get("status") != "success":
        raise PrometheusError(f"{expr}: {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def _targets(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


class PrometheusServer:
    """A `prometheus` process on a rendered copy of monitoring/prometheus.yml (context manager).

    `triton_metrics` and `web_metrics` are host:port targets (one or several). By default the
    config, log and TSDB go to a temporary directory removed on stop; give `data_dir` to keep
    them (`mmtriton up`). Tests pass `scrape_interval="1s"`: rules are evaluated as often.
    """

    def __init__(
        self,
        triton_metrics: str | Sequence[str],
        web_metrics: str | Sequence[str] | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        scrape_interval: str | None = None,
        evaluation_interval: str | None = None,
        data_dir: Path | None = None,
        binary: str | None = None,
        ready_timeout_s: float = 30.0,
        rules_dir: Path = RULES_DIR,
    ) -> None:
        self.triton_targets, self.web_targets = _targets(triton_metrics), _targets(web_metrics)
        if not self.triton_targets:
            raise ValueError("PrometheusServer needs at least one Triton metrics target")
        self.host, self.port = host, port or free_port()
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        self.rules_dir = rules_dir
        self.binary = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
        self.ready_timeout_s = ready_timeout_s
        self._temporary = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. http://127.0.0.1:9090."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "prometheus.log"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of Prometheus' log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, AssertionError):
            return ""

    def start(self) -> PrometheusServer:
        """Render the config, start Prometheus and wait until /-/ready answers 200."""
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="mmtriton-prometheus-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = render_config(
            self.data_dir,
            triton_targets=self.triton_targets,
            web_targets=self.web_targets,
            scrape_interval=self.scrape_interval,
            evaluation_interval=self.evaluation_interval,
            rules_dir=self.rules_dir,
        )
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=warn",
            # The web page's latency histogram carries trace ids as exemplars.
            "--enable-feature=exemplar-storage",
        ]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=tied_to_this_process(),  # never outlives `mmtriton up`
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise PrometheusError(f"prometheus not ready after {self.ready_timeout_s} s:\n{tail}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; remove a temporary data_dir."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temporary and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate `expr` now (or at `at`); see `instant_query`."""
        return instant_query(self.url, expr, at=at)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health ("up", "down", "unknown")."""
        body = _get_json(f"{self.url}/api/v1/targets?state=active", 10.0)
        return list(body["data"]["activeTargets"])

    def wait_for_targets(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every target has been scraped successfully; raise with their errors."""
        deadline = time.monotonic() + timeout_s
        while True:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            if time.monotonic() > deadline:
                states = [(t["scrapeUrl"], t["health"], t.get("lastError", "")) for t in targets]
                raise PrometheusError(f"targets not all up after {timeout_s} s: {states}")
            time.sleep(0.5)

    def wait_for_data(self, expr: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until `expr` returns at least one sample that is a number (not NaN)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = [r for r in self.query(expr) if r.get("value", [0, "NaN"])[1] != "NaN"]
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"no data for {expr!r} after {timeout_s} s")
            time.sleep(0.5)
