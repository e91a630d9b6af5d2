"""monitoring/: Prometheus config, recording rules, alerts and the Grafana dashboard.

promtool (Debian `prometheus`, installed by scripts/install-system-deps.sh) checks the config
and the rules and runs the rule unit tests in monitoring/tests/; every dashboard query is parsed
by promtool too. The rest keeps the names consistent: recording rules the dashboard and alerts
use exist, metric, model and job names exist, every alert has a firing and a quiet test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mmtriton import spec
from mmtriton.observability import metrics as m
from mmtriton.observability.prometheus_server import (
    DASHBOARD,
    GPU_ONLY_MARKER,
    MONITORING_DIR,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    TRITON_JOB,
    WEB_JOB,
    dashboard_queries,
    free_port,
    referenced_recording_rules,
    render_config,
    rule_queries,
)
from mmtriton_client.web import metrics as wm

ALERT_TESTS = sorted((MONITORING_DIR / "tests").glob("*.yml"))
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))

# What Triton 2.51 exports on its metrics port (CPU and GPU); see docs/observability.md.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_inference_request_summary_us",
    "nv_cache_num_hits_per_model",  # with --cache-config, per model whose config caches
    "nv_cache_num_misses_per_model",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
}


def _histogram_samples(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}


OUR_METRICS = (
    set(m.custom_metric_names())
    | {wm.WEB_REQUESTS, wm.WEB_ERRORS}
    | _histogram_samples(wm.WEB_REQUEST_SECONDS)
)
MODEL_NAMES = {s.name for s in spec.ALL_MODELS}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian prometheus (scripts/install-system-deps.sh)"
        )
    return path


def _run(command: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def _alerts() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _records() -> dict[str, str]:
    return {q.name: q.expr for q in rule_queries() if q.source == "record"}


# --- promtool ------------------------------------------------------------------------------
def test_promtool_checks_the_config_as_shipped(promtool):
    _run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])


def test_promtool_checks_a_rendered_config(promtool, tmp_path):
    config = render_config(
        tmp_path,
        triton_targets=[f"127.0.0.1:{free_port()}"],
        web_targets=[f"127.0.0.1:{free_port()}"],
        scrape_interval="1s",
    )
    output = _run([promtool, "check", "config", str(config)])
    assert "SUCCESS" in output and str(RULES_DIR) in output
    rendered = yaml.safe_load(config.read_text())
    assert [c["job_name"] for c in rendered["scrape_configs"]] == [TRITON_JOB, WEB_JOB]
    without_web = yaml.safe_load(
        render_config(tmp_path / "b", triton_targets=["127.0.0.1:1"]).read_text()
    )
    assert [c["job_name"] for c in without_web["scrape_configs"]] == [TRITON_JOB]
    assert without_web["global"]["scrape_interval"] == "15s"


def test_promtool_checks_the_rules(promtool):
    output = _run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert output.count("SUCCESS") == len(RULE_FILES)


def test_promtool_rule_unit_tests_pass(promtool):
    assert ALERT_TESTS, "monitoring/tests/ holds no promtool test"
    _run([promtool, "test", "rules", *(p.name for p in ALERT_TESTS)], cwd=MONITORING_DIR / "tests")


def test_every_dashboard_query_parses(promtool, tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 30
    groups = [
        {
            "name": f"q{i} {q.name}",
            "rules": [{"record": f"dashboard:query_{i}:check", "expr": q.expr}],
        }
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    _run([promtool, "check", "rules", str(path)])


# --- names ---------------------------------------------------------------------------------
def test_recording_rules_used_by_the_dashboard_and_alerts_exist():
    records = _records()
    users = [*dashboard_queries(), *rule_queries()]
    missing = {
        (q.source, q.name, name)
        for q in users
        for name in referenced_recording_rules(q.expr)
        if name not in records
    }
    assert not missing


def test_every_recording_rule_is_used():
    """A rule nobody reads costs evaluations: the dashboard, an alert or another rule uses it."""
    used = set()
    for q in [*dashboard_queries(), *rule_queries()]:
        used |= referenced_recording_rules(q.expr) - {q.name}
    assert set(_records()) - used == set()


def test_recording_rule_names_follow_the_convention():
    for name in _records():
        level, metric, operation = name.split(":")
        assert level and metric and re.fullmatch(r"[a-z0-9_]+", operation), name


def _identifiers(expr: str) -> set[str]:
    """Metric names (not recording rules, label values or functions) in `expr`."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    names = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
    return {n for n in names if ":" not in n and n.startswith(("nv_", "mmtriton_"))}


def test_metric_names_in_queries_exist():
    unknown = set()
    for q in [*dashboard_queries(), *rule_queries()]:
        for name in _identifiers(q.expr):
            if name not in TRITON_METRICS | OUR_METRICS:
                unknown.add((q.name, name))
    assert not unknown


def test_model_and_job_names_in_queries_exist():
    jobs = {c["job_name"] for c in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert jobs == {TRITON_JOB, WEB_JOB}
    for q in [*dashboard_queries(), *rule_queries()]:
        for op, value in re.findall(r'\bmodel\s*(=~|!~|=|!=)\s*"([^"]*)"', q.expr):
            if "~" in op:
                assert any(re.fullmatch(value, name) for name in MODEL_NAMES), (q.name, value)
            else:
                assert value in MODEL_NAMES, (q.name, value)
        for op, value in re.findall(r'\bjob\s*(=~|!~|=|!=)\s*"([^"]*)"', q.expr):
            names = set(value.split("|")) if "~" in op else {value}
            assert names <= jobs, (q.name, value)


def test_latency_objective_is_one_value():
    expr = _records()["mmtriton:pipeline_p99_objective:seconds"]
    assert float(re.fullmatch(r"vector\((.+)\)", expr).group(1)) == m.PIPELINE_P99_OBJECTIVE_SECONDS
    assert m.PIPELINE_P99_OBJECTIVE_SECONDS in m.PIPELINE_SECONDS_BUCKETS


# --- alerts --------------------------------------------------------------------------------
def test_alerts_carry_severity_and_annotations():
    alerts = _alerts()
    assert len(alerts) >= 6
    for rule in alerts:
        assert re.fullmatch(r"Mmtriton[A-Z][A-Za-z0-9]+", rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description", "runbook"}, rule["alert"]
        assert all(str(v).strip() for v in rule["annotations"].values())


def test_every_alert_has_a_firing_and_a_quiet_test():
    fires, quiet = set(), set()
    for path in ALERT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


# --- dashboard -----------------------------------------------------------------------------
def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_dashboard_structure():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "mmtriton"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_what_operators_need():
    titles = " | ".join(p["title"].lower() for p in _panels())
    for words in ("requests per second", "p50 / p95 / p99", "queue time", "compute time",
                  "batch size", "failures by model and reason", "modality", "cpu",
                  "gpu utilisation", "gpu memory", "web"):  # fmt: skip
        assert words in titles, words


def test_gpu_panels_are_marked_and_only_they_read_gpu_metrics():
    queries = dashboard_queries()
    gpu = [q for q in queries if q.gpu_only]
    assert len(gpu) >= 2
    for q in queries:
        assert ("nv_gpu_" in q.expr) == q.gpu_only, q.name
    marked = [p for p in _panels() if GPU_ONLY_MARKER in p.get("description", "")]
    assert {p["title"] for p in marked} == {q.name.rsplit(" [", 1)[0] for q in gpu}


def test_web_queries_are_marked():
    for q in [*dashboard_queries(), *rule_queries()]:
        reads_web = any(n.startswith("mmtriton_web_") for n in _identifiers(q.expr))
        reads_web |= any(
            "web" in name and _records().get(name) and "mmtriton_web_" in _records()[name]
            for name in referenced_recording_rules(q.expr)
        )
        assert reads_web == q.needs_web or f'job="{WEB_JOB}"' in q.expr, q.name
