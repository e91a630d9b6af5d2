"""Shared by the Kubernetes tests: render overlays, walk pods, load k8s/generate.py.

Not a test module. Rendering uses kubectl's built-in kustomize (no cluster needed).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "kserve")
DEPLOYMENT_OVERLAYS = ("cpu", "gpu")
KUBECTL = shutil.which("kubectl")


def load_generator():
    """k8s/generate.py as a module (it is a script, not a package)."""
    module_spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def render(path: Path) -> str:
    """`kubectl kustomize path`; fails, saying what to install, when kubectl is absent."""
    if KUBECTL is None:
        pytest.fail("kubectl (with its built-in kustomize) is not on PATH: install it to render")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kustomize {path} failed:\n{result.stderr}"
    return result.stdout


def objects(text: str) -> list[dict[str, Any]]:
    """The objects of a rendered multi-document YAML."""
    return [d for d in yaml.safe_load_all(text) if d]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of this kind and name."""
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload; a KServe InferenceService's predictor is one pod,
    with its ServingRuntime's containers and volumes merged in as KServe does."""
    runtimes = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "ServingRuntime"}
    for o in objs:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, o["spec"]["template"]["spec"]
        elif o["kind"] == "InferenceService":
            yield where, kserve_pod(o, runtimes)


def kserve_pod(isvc: dict[str, Any], runtimes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The predictor pod KServe would create: runtime container + the model's fields."""
    predictor = dict(isvc["spec"]["predictor"])
    model = predictor.pop("model")
    runtime = runtimes[model["runtime"]]
    (container,) = [dict(c) for c in runtime["containers"]]
    for key in ("resources", "env", "args", "volumeMounts"):
        if key in model:
            container[key] = model[key]
    pod = {k: v for k, v in predictor.items() if k not in ("minReplicas", "maxReplicas")}
    pod["containers"] = [container]
    pod["volumes"] = [*runtime.get("volumes", []), *predictor.get("volumes", [])]
    return pod


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers first, then the main containers."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    """The one (init) container of this name."""
    found = [
        c for c in pod.get("initContainers" if init else "containers", []) if c["name"] == name
    ]
    assert len(found) == 1, f"expected one container {name!r}"
    return found[0]


def remap_args(args: list[str], mounts: list[dict[str, Any]], root: Path) -> list[str]:
    """Args with every path under a volume mount moved below `root` (as the pod's volumes)."""
    out = []
    for arg in args:
        for m in sorted(mounts, key=lambda m: -len(m["mountPath"])):
            mount = m["mountPath"]
            if mount in arg:
                arg = arg.replace(mount, str(root / mount.lstrip("/")))
                break
        out.append(arg)
    return out
