"""The rendered manifests of one overlay (`kubectl kustomize`), indexed the way pods use them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .volumes import secret_data

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


class RenderError(Exception):
    """The overlay does not render."""


@dataclass
class Manifests:
    """All objects of one render."""

    objects: list[dict]
    source: str

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    @property
    def namespace(self) -> str:
        for o in self.objects:
            ns = (o.get("metadata") or {}).get("namespace")
            if ns:
                return ns
        return "default"

    def config_maps(self) -> dict[str, dict[str, str]]:
        return {o["metadata"]["name"]: dict(o.get("data") or {}) for o in self.of_kind("ConfigMap")}

    def secrets(self) -> dict[str, dict[str, str]]:
        return {o["metadata"]["name"]: secret_data(o) for o in self.of_kind("Secret")}

    def workloads(self) -> Iterator[dict]:
        """Jobs first (they prepare what Deployments read), then the long-running kinds."""
        for kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
            yield from self.of_kind(kind)

    def services_for(self, labels: Mapping[str, str]) -> list[dict]:
        """Services whose selector picks a pod with these labels."""
        out = []
        for svc in self.of_kind("Service"):
            selector = (svc.get("spec") or {}).get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                out.append(svc)
        return out


def load(path: Path) -> Manifests:
    """Objects of an already rendered YAML stream (`kubectl kustomize DIR > FILE`)."""
    return Manifests([o for o in yaml.safe_load_all(path.read_text()) if o], str(path))


def render(overlay: Path) -> Manifests:
    """`kubectl kustomize <overlay>` parsed into objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl is not on PATH (it renders the overlays: kubectl kustomize)")
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay} failed: {done.stderr.strip()}")
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    return Manifests(objects, str(overlay))
