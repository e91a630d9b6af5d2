"""The Kubernetes manifests (k8s/) and the serving image (build/Dockerfile), checked offline.

Renders each overlay with `kubectl kustomize`, validates every object against the Kubernetes
schemas bundled with kubernetes-validate (Prometheus Operator resources against the minimal
schemas in k8s/schemas/), runs checkov once over both renders and the Dockerfile, and checks
the invariants that tie the manifests to the code: Triton's args equal the launcher's
(`mmtriton.server.flags.triton_args`), generated files are current, the HPA's metrics exist in
the adapter rules, the serving pins equal requirements.lock.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mmtriton import spec
from mmtriton.server.flags import EXIT_TIMEOUT_S, triton_args

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu")
# Oldest Kubernetes these manifests target, and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
KUBECTL = shutil.which("kubectl")
CHECKOV = Path(sys.executable).parent / "checkov"


def _load_generator():
    module_spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


generate = _load_generator()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rendered_text(tmp_path_factory) -> dict[str, Path]:
    """Each overlay rendered once into a file: {overlay: path}."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not on PATH: cannot render")
    out = tmp_path_factory.mktemp("rendered")
    paths = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
        paths[overlay] = out / f"{overlay}.yaml"
        paths[overlay].write_text(result.stdout)
    return paths


@pytest.fixture(scope="module")
def rendered(rendered_text) -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects: {overlay: [object, ...]}."""
    return {
        overlay: [d for d in yaml.safe_load_all(path.read_text()) if d]
        for overlay, path in rendered_text.items()
    }


@pytest.fixture(scope="module")
def checkov_reports(rendered_text) -> list[dict[str, Any]]:
    """One checkov run over both overlays and the Dockerfile (checkov's start-up dominates)."""
    cmd = [str(CHECKOV), "--framework", "kubernetes", "dockerfile", "-o", "json"]
    cmd += ["--skip-download", "--compact"]
    for path in [*rendered_text.values(), ROOT / "build" / "Dockerfile"]:
        cmd += ["-f", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.stdout.strip(), f"checkov produced no report:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def _container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    containers = pod.get("initContainers" if init else "containers", [])
    matches = [c for c in containers if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name!r}"
    return matches[0]


def _triton_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return _find(objects, "Deployment", generate.TRITON_DEPLOYMENT)["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- rendering & schemas
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_component(rendered, overlay):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]}
    for expected in [
        ("Deployment", "triton"),
        ("Deployment", "mmtriton-web"),
        ("Service", "triton-grpc"),
        ("Service", "triton-grpc-headless"),
        ("Service", "triton-http"),
        ("Service", "triton-metrics"),
        ("Service", "mmtriton-web"),
        ("Ingress", "mmtriton-web"),
        ("HorizontalPodAutoscaler", "triton"),
        ("PodDisruptionBudget", "triton"),
        ("Job", "mmtriton-populate-repository"),
        ("PersistentVolumeClaim", "mmtriton-model-store"),
        ("ServiceMonitor", "triton"),
        ("ConfigMap", generate.DASHBOARDS_CONFIGMAP),
        ("NetworkPolicy", "default-deny"),
    ]:
        assert expected in kinds, f"{overlay}: {expected} missing"
    assert all(
        o["metadata"].get("namespace") == "mmtriton"
        for o in rendered[overlay]
        if o["kind"] != "Namespace"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_schemas(rendered, overlay):
    """Core objects: kubernetes-validate, strict (unknown fields fail). CRDs: k8s/schemas/."""
    failures = []
    for obj in rendered[overlay]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if crd_schema:
            schema = json.loads((K8S / "schemas" / crd_schema).read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(obj))
            failures += [f"{where}: {e.json_path}: {e.message}" for e in errors]
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{where} (k8s {version}): {e.json_path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures.append(f"{where}: no schema ({e.message}); add one to k8s/schemas/")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_resolved_to_a_registry(rendered, overlay):
    """An image left as its kustomize placeholder name would never pull."""
    for where, pod in _pod_specs(rendered[overlay]):
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert "/" in c["image"] and ":" in c["image"], f"{where}/{c['name']}: {c['image']}"


# --------------------------------------------------------------------------- checkov
def test_checkov_reports_no_failed_check(checkov_reports):
    failed = [
        f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}"
        for report in checkov_reports
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    scanned = {report["check_type"] for report in checkov_reports}
    assert scanned == {"kubernetes", "dockerfile"}, scanned


def test_checkov_skips_are_justified(checkov_reports):
    for report in checkov_reports:
        for c in report["results"]["skipped_checks"]:
            reason = (c.get("check_result") or {}).get("suppress_comment") or ""
            assert len(reason) > 20, f"{c['check_id']} on {c['resource']} skipped without a reason"


# --------------------------------------------------------------------------- Triton's flags
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_flags_match_launcher(rendered, overlay):
    """The Deployment runs exactly the launcher's flags for this overlay's settings."""
    settings = generate.OVERLAY_SETTINGS[overlay]
    pod = _triton_pod(rendered[overlay])
    triton = _container(pod, generate.TRITON_CONTAINER)
    assert triton["args"] == triton_args(settings)
    # The wrapper passes the args through unchanged to tritonserver, as PID 1.
    assert triton["command"][:2] == ["/bin/sh", "-c"]
    assert 'exec tritonserver "$@"' in triton["command"][2]
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert settings.model_repository in mounts
    assert settings.profile == overlay
    if settings.tls_cert:
        volumes = {v["name"]: v for v in pod["volumes"]}
        tls_dir = str(Path(settings.tls_cert).parent)
        assert tls_dir in mounts and "secret" in volumes[mounts[tls_dir]["name"]]
        keys = {i["path"] for i in volumes[mounts[tls_dir]["name"]]["secret"]["items"]}
        assert {Path(settings.tls_cert).name, Path(settings.tls_key).name} <= keys


def test_generated_args_patches_are_current():
    stale = [p for p in generate.stale() if p.name == "triton-args.yaml"]
    assert not stale, f"run .venv/bin/python k8s/generate.py; stale: {stale}"


# --------------------------------------------------------------------------- pod behaviour
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_graceful_shutdown(rendered, overlay):
    pod = _triton_pod(rendered[overlay])
    triton = _container(pod, generate.TRITON_CONTAINER)
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "allow model load"
    pre_stop = triton["lifecycle"]["preStop"]["exec"]["command"]
    script = pre_stop[-1]
    sleep_s = int(re.search(r"sleep (\d+)", script).group(1))
    drain_s = int(re.search(r"mmtriton drain .*--timeout (\d+)", script).group(1))
    assert pod["terminationGracePeriodSeconds"] > sleep_s + drain_s + EXIT_TIMEOUT_S


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dev_shm_is_a_sized_memory_volume(rendered, overlay):
    pod = _triton_pod(rendered[overlay])
    triton = _container(pod, generate.TRITON_CONTAINER)
    (mount,) = [m for m in triton["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered, overlay):
    for where, pod in _pod_specs(rendered[overlay]):
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "requests" in c["resources"] and "limits" in c["resources"], (where, c["name"])
    for sa in (o for o in rendered[overlay] if o["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


def test_gpu_overlay_builds_engines_on_a_gpu_node(rendered):
    pod = _triton_pod(rendered["gpu"])
    triton = _container(pod, generate.TRITON_CONTAINER)
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    init = [c["name"] for c in pod["initContainers"]]
    assert init == ["stage-repository", "build-engines"], init
    engines = _container(pod, "build-engines", init=True)
    command = " ".join(engines["command"])
    assert "mmtriton engines --repository /models/repository --cache-dir /engine-cache" in command
    assert engines["resources"]["limits"]["nvidia.com/gpu"] == 1
    cache = {m["mountPath"]: m for m in triton["volumeMounts"]}["/engine-cache"]
    assert cache.get("readOnly") is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[cache["name"]]


def test_cpu_overlay_needs_no_gpu(rendered):
    text = json.dumps(rendered["cpu"])
    assert "nvidia.com/gpu" not in text
    pod = _triton_pod(rendered["cpu"])
    assert [c["name"] for c in pod["initContainers"]] == ["stage-repository"]


# --------------------------------------------------------------------------- network & scaling
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_expose_only_grpc_and_metrics(rendered, overlay):
    policies = [o for o in rendered[overlay] if o["kind"] == "NetworkPolicy"]
    deny = _find(policies, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    triton_ports = set()
    for p in policies:
        if (
            p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
            == "triton"
        ):
            for rule in p["spec"].get("ingress", []):
                triton_ports |= {port["port"] for port in rule["ports"]}
    assert triton_ports == {8001, 8002}, "HTTP (8000) and anything else must stay closed"


def test_hpa_metrics_are_served_by_the_adapter(rendered):
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    rules = values["rules"]["custom"]
    served = {r["name"]["as"] for r in rules}
    hpa = _find(rendered["gpu"], "HorizontalPodAutoscaler", "triton")["spec"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= served, wanted - served
    assert hpa["minReplicas"] >= 2, "the PodDisruptionBudget needs a second replica"
    queries = " ".join(r["metricsQuery"] for r in rules)
    assert f'model="{spec.ENSEMBLE.name}"' in queries


# --------------------------------------------------------------------------- monitoring wiring
def test_prometheus_rules_and_dashboards_match_monitoring(rendered):
    """PrometheusRule and dashboard ConfigMap carry monitoring/ unchanged (k8s/generate.py)."""
    assert generate.rule_files(), "monitoring/rules/*.yml is missing"
    stale = [p for p in generate.stale() if p.name != "triton-args.yaml"]
    assert not stale, f"run .venv/bin/python k8s/generate.py; stale: {stale}"
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        rules = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PrometheusRule"}
        files = generate.rule_files()
        assert files, "monitoring/rules/ holds no rule file"
        for path in files:
            name = generate._k8s_name(path.stem)
            expected = yaml.safe_load(path.read_text())["groups"]
            assert rules[name]["spec"]["groups"] == expected, path
        dashboards = _find(objects, "ConfigMap", generate.DASHBOARDS_CONFIGMAP)
        assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
        expected_data = {p.name: p.read_text() for p in generate.dashboard_files()}
        assert dashboards.get("data", {}) == expected_data
        for text in expected_data.values():
            json.loads(text)


# --------------------------------------------------------------------------- image contents
def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            name = re.sub(r"\[.*\]", "", name)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_serving_requirements_are_pinned_to_the_lock():
    serving = _pins(ROOT / "build" / "requirements-serving.txt")
    lock = _pins(ROOT / "requirements.lock")
    for name in ("numpy", "pillow", "soundfile", "scipy", "onnxruntime", "tokenizers"):
        assert name in serving, f"{name} missing from build/requirements-serving.txt"
    assert "torch" not in serving and "onnxruntime-gpu" not in serving
    mismatched = {n: (v, lock.get(n)) for n, v in serving.items() if lock.get(n) != v}
    assert not mismatched, f"serving pin != requirements.lock: {mismatched}"


def test_dockerfile_installs_pinned_deps_and_runs_unprivileged():
    text = (ROOT / "build" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS" in text
    assert (
        "-c /tmp/requirements/requirements.lock -r /tmp/requirements/requirements-serving.txt"
        in text
    )
    assert text.count("pip install --no-deps /src") == 2
    # Each final stage (triton, web) ends as the unprivileged user.
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    finals = [s for s in stages if re.match(r"\S+ AS (triton|web)\s*$", s.splitlines()[0])]
    assert len(finals) == 2
    for stage in finals:
        users = re.findall(r"^USER (\S+)", stage, flags=re.M)
        assert users and users[-1] == "10001:10001", stage.splitlines()[0]
