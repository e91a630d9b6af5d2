"""The Kubernetes manifests (k8s/) and the serving image (k8s/images/Dockerfile), checked offline.

Renders each overlay (cpu, gpu, kserve) with `kubectl kustomize`, validates every object against
the Kubernetes schemas bundled with kubernetes-validate (custom resources against k8s/schemas/:
the Prometheus Operator's hand-written ones and KServe's own CRD schemas), runs checkov once
over the renders and the Dockerfile, and checks what ties the manifests to the code: the Triton
container's args parse, with the real `mmtriton serve` parser, to the overlay's ServerSettings;
the engine init container's exact command runs here and names the missing GPU; no container
replaces the image's entrypoint; the repository comes from the image; probes hit the
supervisor's health port.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
from mmtriton.server.flags import DEFAULT_PORTS, EXIT_TIMEOUT_S
from mmtriton.server.launcher import add_server_arguments, settings_from_args
from mmtriton_build.export.gpu import NO_GPU_HINT
from mmtriton_build.export.tensorrt import IMAGE_TRTEXEC

from .k8s_render import (
    DEPLOYMENT_OVERLAYS,
    K8S,
    OVERLAYS,
    ROOT,
    container,
    containers,
    find,
    load_generator,
    objects,
    pod_specs,
    remap_args,
    render,
)

# Oldest Kubernetes these manifests target, and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    ): "servingruntime-serving.kserve.io-v1alpha1.json",
    (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    ): "inferenceservice-serving.kserve.io-v1beta1.json",
}
CHECKOV = Path(sys.executable).parent / "checkov"
MMTRITON = Path(sys.executable).parent / "mmtriton"
DOCKERFILE = ROOT / "k8s" / "images" / "Dockerfile"

generate = load_generator()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rendered_text(tmp_path_factory) -> dict[str, Path]:
    """Each overlay rendered once into a file: {overlay: path}."""
    out = tmp_path_factory.mktemp("rendered")
    paths = {}
    for overlay in OVERLAYS:
        paths[overlay] = out / f"{overlay}.yaml"
        paths[overlay].write_text(render(K8S / "overlays" / overlay))
    return paths


@pytest.fixture(scope="module")
def rendered(rendered_text) -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects: {overlay: [object, ...]}."""
    return {overlay: objects(path.read_text()) for overlay, path in rendered_text.items()}


@pytest.fixture(scope="module")
def checkov_reports(rendered_text) -> list[dict[str, Any]]:
    """One checkov run over every overlay and the Dockerfile (checkov's start-up dominates)."""
    cmd = [str(CHECKOV), "--framework", "kubernetes", "dockerfile", "-o", "json"]
    cmd += ["--skip-download", "--compact"]
    for path in [*rendered_text.values(), DOCKERFILE]:
        cmd += ["-f", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.stdout.strip(), f"checkov produced no report:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def _triton_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objs, "Deployment", generate.TRITON_DEPLOYMENT)["spec"]["template"]["spec"]


def _serving(overlay: str, objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, serving container) of the overlay's Triton pod."""
    if overlay == "kserve":
        (pod,) = [p for w, p in pod_specs(objs) if w.startswith("InferenceService/")]
        return pod, pod["containers"][0]
    pod = _triton_pod(objs)
    return pod, container(pod, generate.TRITON_CONTAINER)


# --------------------------------------------------------------------------- rendering & schemas
@pytest.mark.parametrize("overlay", DEPLOYMENT_OVERLAYS)
def test_overlay_renders_every_component(rendered, overlay):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]}
    for expected in [
        ("Namespace", "mmtriton"),
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


def test_kserve_overlay_renders_a_runtime_and_an_inference_service(rendered):
    objs = rendered["kserve"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {
        ("Namespace", "mmtriton"),
        ("ServingRuntime", generate.KSERVE_RUNTIME),
        ("InferenceService", generate.KSERVE_NAME),
        ("ServiceAccount", generate.KSERVE_SERVICE_ACCOUNT),
        ("PersistentVolumeClaim", "mmtriton-engine-cache"),
        ("HorizontalPodAutoscaler", f"{generate.KSERVE_NAME}-predictor"),
    } == kinds
    assert all(
        o["metadata"].get("namespace") == "mmtriton" for o in objs if o["kind"] != "Namespace"
    )


def _strict(schema: Any) -> Any:
    """A CRD schema as `kubectl --validate=strict` applies it: unknown fields are errors."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.Validator]:
    return {
        key: jsonschema.Draft202012Validator(
            _strict(json.loads((K8S / "schemas" / name).read_text()))
        )
        for key, name in CRD_SCHEMAS.items()
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_schemas(rendered, crd_validators, overlay):
    """Core objects: kubernetes-validate, strict (unknown fields fail). CRDs: k8s/schemas/."""
    failures = []
    for obj in rendered[overlay]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        validator = crd_validators.get((obj["apiVersion"], obj["kind"]))
        if validator is not None:
            errors = list(validator.iter_errors(obj))
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


def test_kserve_schemas_reject_what_kserve_would(crd_validators):
    """The shipped KServe schemas do catch mistakes (so the test above can fail)."""
    isvc = crd_validators[("serving.kserve.io/v1beta1", "InferenceService")]
    good = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "m"}}}},
    }
    assert not list(isvc.iter_errors(good))
    typo = json.loads(json.dumps(good))
    typo["spec"]["predictor"]["model"]["modelFromat"] = {"name": "m"}
    assert list(isvc.iter_errors(typo)), "an unknown field must fail"
    no_format = json.loads(json.dumps(good))
    del no_format["spec"]["predictor"]["model"]["modelFormat"]["name"]
    assert list(isvc.iter_errors(no_format)), "modelFormat.name is required"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_resolved_to_a_registry(rendered, overlay):
    """An image left as its kustomize placeholder name would never pull."""
    for where, pod in pod_specs(rendered[overlay]):
        for c in containers(pod):
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


def test_checkov_skips_are_justified_by_what_exists(checkov_reports):
    """Every skip names its reason, and what the reason points at is really there.

    A reason may cite a file (`docs/kubernetes.md`) and commands in backticks: the file must
    exist and contain each of them, so a skip cannot outlive the practice that justifies it.
    """
    skipped = [c for r in checkov_reports for c in r["results"]["skipped_checks"]]
    assert skipped, "no skip left: drop this test's premise or the skips' annotations"
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        where = f"{c['check_id']} on {c['resource']}"
        assert len(reason) > 20, f"{where} skipped without a reason"
        cited = re.findall(r"\b((?:docs|k8s|build)/[\w./-]+\.(?:md|yaml|py))\b", reason)
        assert cited, f"{where}: the reason cites no file that backs it: {reason}"
        texts = [(ROOT / path).read_text() for path in cited]
        for snippet in re.findall(r"`([^`]+)`", reason):
            assert any(snippet in t for t in texts), f"{where}: `{snippet}` not in {cited}"
    assert "CKV_K8S_35" not in {c["check_id"] for c in skipped}, "Secrets are files, not env"


# --------------------------------------------------------------------------- the image's entrypoint
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_triton_container_replaces_the_image_entrypoint(rendered, overlay):
    """NGC's entrypoint (CUDA forward compatibility) must run: `args` only, never `command`."""
    pod, _ = _serving(overlay, rendered[overlay])
    for c in containers(pod):
        assert "command" not in c, f"{overlay}/{c['name']} overrides the image's entrypoint"
        assert c["args"][0] in ("mmtriton", "cp"), f"{overlay}/{c['name']}: {c['args'][:2]}"
    for runtime in (o for o in rendered[overlay] if o["kind"] == "ServingRuntime"):
        assert all("command" not in c for c in runtime["spec"]["containers"])


def _dockerfile_stage(name: str) -> str:
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1:]
    (stage,) = [s for s in stages if re.match(rf"\S+ AS {name}\s*$", s.splitlines()[0])]
    return stage


def test_triton_image_keeps_the_ngc_entrypoint_and_checks_the_health_port():
    stage = _dockerfile_stage("triton")
    assert not re.search(r"^ENTRYPOINT", stage, flags=re.M), "NGC's entrypoint must stay"
    # The stage builds FROM the NGC image (through triton-base), whose entrypoint execs args.
    assert re.search(
        r"^FROM nvcr\.io/nvidia/tritonserver:\S+ AS triton-base", DOCKERFILE.read_text(), re.M
    )
    assert _dockerfile_stage("triton").splitlines()[0].startswith("triton-base AS triton")
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", stage, re.M) for p in line.split()}
    assert exposed == set(DEFAULT_PORTS.values())
    (check,) = re.findall(r"^HEALTHCHECK .*\n\s+CMD (.+)$", stage, flags=re.M)
    assert f"127.0.0.1:{DEFAULT_PORTS['health']}/live" in check
    cmd = json.loads(re.findall(r"^CMD (\[.+\])$", stage, flags=re.M)[-1])
    assert cmd[:2] == ["mmtriton", "serve"]


# --------------------------------------------------------------------------- Triton's args
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_args_parse_to_the_overlays_settings(rendered, overlay, tmp_path):
    """The container runs `mmtriton serve` with options that give exactly this overlay's settings.

    Parsed by the real parser of `mmtriton serve`, with the pod's volumes as temp dirs.
    """
    pod, triton = _serving(overlay, rendered[overlay])
    args = triton["args"]
    assert args[:2] == ["mmtriton", "serve"]
    mounts = triton["volumeMounts"]
    local = remap_args(args[2:], mounts, tmp_path)
    key_file = tmp_path / generate.ADMIN_KEY_FILE.lstrip("/")
    key_file.parent.mkdir(parents=True)
    key_file.write_text("from-the-secret\n")
    repo = tmp_path / generate.MODEL_REPOSITORY.lstrip("/")
    for model in spec.ENCODERS.values():  # what stage-repository puts there
        (repo / model.name / "1").mkdir(parents=True)
        (repo / model.name / "1" / "model.onnx").write_bytes(b"onnx")
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    parsed = parser.parse_args(local)
    assert parsed.log == "-", "logs go to stdout: the root file system is read-only"
    settings = settings_from_args(parsed)
    expected = generate.OVERLAY_SETTINGS[overlay]
    expected = dataclasses.replace(
        expected,
        model_repository=str(repo.resolve()),
        admin_key="from-the-secret",
        **{
            f: remap_args([getattr(expected, f)], mounts, tmp_path)[0]
            for f in ("tls_cert", "tls_key", "tls_root_cert")
            if getattr(expected, f)
        },
    )
    assert settings == expected
    assert settings.profile == ("cpu" if overlay == "cpu" else "gpu")
    # Every file the args name is on a volume of this pod, and the key comes from the Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_path = {m["mountPath"]: m for m in mounts}
    admin = by_path[str(Path(generate.ADMIN_KEY_FILE).parent)]
    assert admin.get("readOnly") is True
    assert volumes[admin["name"]]["secret"]["secretName"] == "triton-admin"
    assert {"key": "key", "path": Path(generate.ADMIN_KEY_FILE).name} in volumes[admin["name"]][
        "secret"
    ]["items"]
    if expected.tls_cert:
        tls = by_path[generate.TLS_DIR]
        items = {i["path"] for i in volumes[tls["name"]]["secret"]["items"]}
        assert {"tls.crt", "tls.key"} <= items
    assert not any("valueFrom" in e for e in triton.get("env", [])), "no Secret in env"


def test_generated_files_are_current():
    stale = generate.stale()
    assert not stale, f"run .venv/bin/python k8s/generate.py; stale: {stale}"


# --------------------------------------------------------------------------- probes & shutdown
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_supervisors_health_port_and_shutdown_fits_the_grace(rendered, overlay):
    pod, triton = _serving(overlay, rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports["health"] == DEFAULT_PORTS["health"]
    assert f"--health-port={ports['health']}" in triton["args"]
    for probe, path in (
        ("startupProbe", "/ready"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/live"),
    ):
        assert triton[probe]["httpGet"] == {"path": path, "port": "health"}, probe
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "allow model load"
    # Issue 13: the pod leaves the endpoints within 5 s of the supervisor seeing a broken step.
    ready = triton["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] + ready["timeoutSeconds"] <= 5
    # A container that failed liveness is stuck: it is killed sooner than a draining one.
    live = triton["livenessProbe"]
    assert live["terminationGracePeriodSeconds"] < pod["terminationGracePeriodSeconds"]
    script = triton["lifecycle"]["preStop"]["exec"]["command"][-1]
    sleep_s = int(re.search(r"sleep (\d+)", script).group(1))
    drain = re.search(r"mmtriton drain --metrics-url (\S+) --timeout (\d+)", script)
    assert drain and drain.group(1) == f"http://localhost:{ports['metrics']}/metrics"
    assert pod["terminationGracePeriodSeconds"] > sleep_s + int(drain.group(2)) + EXIT_TIMEOUT_S


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dev_shm_is_a_sized_memory_volume(rendered, overlay):
    pod, triton = _serving(overlay, rendered[overlay])
    (mount,) = [m for m in triton["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered, overlay):
    for where, pod in pod_specs(rendered[overlay]):
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "requests" in c["resources"] and "limits" in c["resources"], (where, c["name"])
    for sa in (o for o in rendered[overlay] if o["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


# --------------------------------------------------------------------------- the engine step
@pytest.mark.parametrize("overlay", ("gpu", "kserve"))
def test_engine_step_runs_the_images_trtexec_on_the_pods_gpu(rendered, overlay):
    pod, triton = _serving(overlay, rendered[overlay])
    assert [c["name"] for c in pod["initContainers"]] == ["stage-repository", "build-engines"]
    engines = container(pod, "build-engines", init=True)
    assert engines["args"][:2] == ["mmtriton", "engines"]
    assert f"--trtexec={IMAGE_TRTEXEC}" in engines["args"]
    assert engines["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The plan links written into the repository resolve in Triton's container too.
    cache = {m["name"]: m for m in triton["volumeMounts"]}["engine-cache"]
    assert cache.get("readOnly") is True
    build_mounts = {m["name"]: m["mountPath"] for m in engines["volumeMounts"]}
    assert build_mounts["engine-cache"] == cache["mountPath"]
    assert f"--cache-dir={cache['mountPath']}" in engines["args"]
    repo = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}["repository"]
    assert build_mounts["repository"] == repo and f"--repository={repo}" in engines["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["engine-cache"]["persistentVolumeClaim"]["claimName"] == "mmtriton-engine-cache"


@pytest.mark.parametrize("overlay", ("gpu", "kserve"))
def test_engine_init_container_on_a_node_without_gpu_names_the_missing_gpu(
    rendered, overlay, tmp_path
):
    """The init container's exact command line, run here (no GPU): one line, exit 1.

    Its volumes become temp dirs; the repository is staged as stage-repository would.
    """
    pod, _ = _serving(overlay, rendered[overlay])
    engines = container(pod, "build-engines", init=True)
    args = remap_args(engines["args"], engines["volumeMounts"], tmp_path)
    assert args[0] == "mmtriton"
    env = {e["name"]: e["value"] for e in engines.get("env", [])}
    env["HOME"] = env["XDG_CACHE_HOME"] = str(tmp_path)
    env["PATH"] = f"{MMTRITON.parent}:/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=env["PATH"]):
        pytest.skip("this machine has nvidia-smi: the no-GPU path cannot be shown here")
    result = subprocess.run(
        [str(MMTRITON), *args[1:]], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: no NVIDIA GPU visible (nvidia-smi not found): {NO_GPU_HINT}"]


def test_gpu_pods_are_scheduled_by_their_gpu_request_alone(rendered):
    """No node selector that only the GPU Operator provides; nothing GPU-less on GPU nodes."""
    for overlay in OVERLAYS:
        for where, pod in pod_specs(rendered[overlay]):
            text = json.dumps({k: pod.get(k) for k in ("nodeSelector", "affinity")})
            asks_gpu = any(
                "nvidia.com/gpu" in c["resources"].get("limits", {}) for c in containers(pod)
            )
            assert "nvidia.com" not in text, f"{overlay} {where}: GPU node selector"
            tolerates = any(t["key"].startswith("nvidia.com") for t in pod.get("tolerations", []))
            assert asks_gpu or not tolerates, f"{overlay} {where} tolerates GPU nodes, asks none"
    pod = _triton_pod(rendered["gpu"])
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_optional_gpu_node_selector_patch_applies(tmp_path):
    """The documented opt-in selector is a valid patch of the gpu overlay, and not in it."""
    patch = K8S / "overlays" / "gpu" / "optional" / "gpu-feature-discovery-selector.yaml"
    assert "optional/" not in (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()
    (tmp_path / "selector.yaml").write_text(patch.read_text())
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "gpu", tmp_path)],
                "patches": [{"path": "selector.yaml"}],
            }
        )
    )
    pod = _triton_pod(objects(render(tmp_path)))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_cpu_overlay_needs_no_gpu(rendered):
    assert "nvidia.com/gpu" not in json.dumps(rendered["cpu"])
    pod = _triton_pod(rendered["cpu"])
    assert [c["name"] for c in pod["initContainers"]] == ["stage-repository"]


# --------------------------------------------------------------------------- the model repository
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_repository_comes_from_the_image_only(rendered, overlay):
    """One source per pod: the image's repository, copied into the pod's own emptyDir."""
    objs = rendered[overlay]
    assert not [o for o in objs if o["kind"] == "Job"], "no model-store Job"
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    assert claims <= {"mmtriton-engine-cache"}, claims
    assert "MODEL_VERSION" not in json.dumps(objs)
    pod, triton = _serving(overlay, objs)
    stage = container(pod, "stage-repository", init=True)
    copied = re.search(r"^COPY model_repository (\S+)$", _dockerfile_stage("triton"), re.M)
    assert copied and copied.group(1) == generate.IMAGE_REPOSITORY
    assert stage["args"] == [
        "cp",
        "-R",
        f"{generate.IMAGE_REPOSITORY}/.",
        f"{generate.MODEL_REPOSITORY}/",
    ]
    (dest,) = [m for m in stage["volumeMounts"] if m["mountPath"] == generate.MODEL_REPOSITORY]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[dest["name"]], "pod-local: nothing shared to go stale"
    served = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    assert served[generate.MODEL_REPOSITORY] == dest["name"]


def test_stage_repository_copy_gives_triton_the_images_repository(rendered, tmp_path):
    """The init container's args, run here with the image path mapped to model_repository/."""
    stage = container(_triton_pod(rendered["cpu"]), "stage-repository", init=True)
    dest = tmp_path / "repository"
    dest.mkdir()
    args = [
        a.replace(generate.IMAGE_REPOSITORY, str(ROOT / "model_repository")).replace(
            generate.MODEL_REPOSITORY, str(dest)
        )
        for a in stage["args"]
    ]
    subprocess.run(args, check=True, timeout=120)
    for model in spec.ALL_MODELS:
        assert (dest / model.name / "config.pbtxt").is_file(), model.name


# --------------------------------------------------------------------------- KServe
def test_kserve_runtime_is_the_gpu_deployments_pod(rendered):
    """ServingRuntime + InferenceService carry the gpu Deployment's probes, steps and volumes."""
    gpu_pod, gpu_triton = _serving("gpu", rendered["gpu"])
    pod, runtime_container = _serving("kserve", rendered["kserve"])
    for key in (
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "lifecycle",
        "env",
        "securityContext",
    ):
        assert runtime_container[key] == gpu_triton[key], key
    assert runtime_container["resources"] == gpu_triton["resources"]
    assert pod["initContainers"] == gpu_pod["initContainers"]
    assert pod["terminationGracePeriodSeconds"] == gpu_pod["terminationGracePeriodSeconds"]
    runtime = find(rendered["kserve"], "ServingRuntime", generate.KSERVE_RUNTIME)
    isvc = find(rendered["kserve"], "InferenceService", generate.KSERVE_NAME)
    model = isvc["spec"]["predictor"]["model"]
    assert (
        model["protocolVersion"] == "grpc-v2" and "grpc-v2" in runtime["spec"]["protocolVersions"]
    )
    assert "storageUri" not in model and "storageUri" not in json.dumps(isvc), (
        "no storage-initializer"
    )
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats and model["runtime"] == generate.KSERVE_RUNTIME
    # KServe's Service targets the first port: it must be gRPC.
    first = runtime_container["ports"][0]
    assert first["containerPort"] == DEFAULT_PORTS["grpc"] and "grpc" in first["name"]
    notes = runtime["metadata"]["annotations"]
    assert notes["prometheus.kserve.io/port"] == str(DEFAULT_PORTS["metrics"])
    assert notes["prometheus.kserve.io/path"] == "/metrics"
    isvc_notes = isvc["metadata"]["annotations"]
    assert isvc_notes["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert isvc_notes["serving.kserve.io/deploymentMode"] == "RawDeployment"
    hpa = find(rendered["kserve"], "HorizontalPodAutoscaler", f"{generate.KSERVE_NAME}-predictor")
    assert isvc_notes["serving.kserve.io/autoscalerClass"] == "external"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{generate.KSERVE_NAME}-predictor"


# --------------------------------------------------------------------------- scaling & monitoring
def test_hpa_metrics_are_served_by_the_adapter(rendered):
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    rules = values["rules"]["custom"]
    served = {r["name"]["as"] for r in rules}
    for overlay, name in (("gpu", "triton"), ("kserve", f"{generate.KSERVE_NAME}-predictor")):
        hpa = find(rendered[overlay], "HorizontalPodAutoscaler", name)["spec"]
        wanted = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
        assert wanted and wanted <= served, wanted - served
        assert hpa["minReplicas"] >= 2, "the PodDisruptionBudget needs a second replica"
    queries = " ".join(r["metricsQuery"] for r in rules)
    assert f'model="{spec.ENSEMBLE.name}"' in queries


def test_prometheus_rules_and_dashboards_match_monitoring(rendered):
    """PrometheusRule and dashboard ConfigMap carry monitoring/ unchanged (k8s/generate.py)."""
    files = generate.rule_files()
    assert files, "monitoring/rules/*.yml is missing"
    for overlay in DEPLOYMENT_OVERLAYS:
        objs = rendered[overlay]
        rules = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PrometheusRule"}
        for path in files:
            name = generate._k8s_name(path.stem)
            expected = yaml.safe_load(path.read_text())["groups"]
            assert rules[name]["spec"]["groups"] == expected, path
        dashboards = find(objs, "ConfigMap", generate.DASHBOARDS_CONFIGMAP)
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
    serving = _pins(ROOT / "k8s" / "images" / "requirements-serving.txt")
    lock = _pins(ROOT / "requirements.lock")
    for name in ("numpy", "pillow", "soundfile", "scipy", "onnxruntime", "tokenizers"):
        assert name in serving, f"{name} missing from k8s/images/requirements-serving.txt"
    assert "torch" not in serving and "onnxruntime-gpu" not in serving
    mismatched = {n: (v, lock.get(n)) for n, v in serving.items() if lock.get(n) != v}
    assert not mismatched, f"serving pin != requirements.lock: {mismatched}"


def test_dockerfile_installs_pinned_deps_and_runs_unprivileged():
    text = DOCKERFILE.read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS" in text
    assert (
        "-c /tmp/requirements/requirements.lock -r /tmp/requirements/requirements-serving.txt"
        in text
    )
    assert text.count("pip install --no-deps /src") == 2
    for name in ("triton", "web"):
        users = re.findall(r"^USER (\S+)", _dockerfile_stage(name), flags=re.M)
        assert users and users[-1] == "10001:10001", name


@pytest.mark.parametrize("overlay", DEPLOYMENT_OVERLAYS)
def test_web_page_balances_over_every_triton_pod(rendered, overlay):
    """Defect 9: a ClusterIP channel pins a page replica to one Triton pod. The page must dial
    the headless Service with round robin; parsed by the real `mmtriton web` parser."""
    from mmtriton_client.cli import channel_options
    from mmtriton_client.web import command as web_command

    objs = rendered[overlay]
    pod = find(objs, "Deployment", "mmtriton-web")["spec"]["template"]["spec"]
    web = container(pod, "web")
    assert "command" not in web, "keep the image's entrypoint (mmtriton)"
    assert web["args"][0] == "web"
    parser = argparse.ArgumentParser()
    web_command.add_arguments(parser)
    args = parser.parse_args(web["args"][1:])
    target = args.triton_url
    assert target.startswith("dns:///"), target
    host, port = target.removeprefix("dns:///").rsplit(":", 1)
    headless = find(objs, "Service", host.split(".")[0])
    assert headless["spec"].get("clusterIP") == "None", "dial the headless Service"
    assert int(port) in {p["port"] for p in headless["spec"]["ports"]}
    assert channel_options(args).lb_policy == "round_robin"
