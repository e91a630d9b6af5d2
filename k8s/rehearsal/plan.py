"""From a pod template to what runs here: argv, env, cwd, probes and hooks, all rewritten.

`Node.plan(workload)` is the kubelet's "generate the container config" step: volumes become
temp dirs, Secrets and ConfigMaps feed env and files, every containerPort gets a free host
port, and each string handed to a process is rewritten for this machine (remap.Rewriter).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .expand import EnvSources, command_line, container_env
from .image import ImageConfig, image_config
from .manifests import Manifests
from .probes import ProbeSpec
from .remap import PathMap, PortMap, Rewriter, ServiceMap, free_ports, pod_port_map
from .volumes import (
    PodVolumes,
    SecretStore,
    materialize,
    mount_host_path,
    referenced_secret_keys,
)

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
PROBE_KINDS = ("startup", "readiness", "liveness")


@dataclass
class ContainerPlan:
    """One container, ready to exec here."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    probes: dict[str, ProbeSpec]
    pre_stop: dict | None  # handler with strings already rewritten
    post_start: dict | None
    rewriter: Rewriter
    gpu_request: int
    restart_policy: str | None = None  # an init container with Always is a sidecar
    mounts: dict[str, str] = field(default_factory=dict)  # mount path -> host dir


@dataclass
class PodPlan:
    """One pod of a workload (one replica is played)."""

    name: str
    kind: str
    workload: str
    labels: dict[str, str]
    spec: dict
    ports: PortMap
    volumes: PodVolumes | None = None
    init: list[ContainerPlan] = field(default_factory=list)
    containers: list[ContainerPlan] = field(default_factory=list)
    grace_s: float = 30.0
    restart_policy: str = "Always"
    not_enforced: list[str] = field(default_factory=list)


def _quantity(value: object) -> float:
    """A Kubernetes quantity ("500m", "2", "4Gi") as a number."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def gpu_request(container: Mapping) -> int:
    """GPUs the container asks the device plugin for."""
    res = container.get("resources") or {}
    total = 0
    for section in ("limits", "requests"):
        for name in GPU_RESOURCES:
            if name in (res.get(section) or {}):
                total = max(total, int(_quantity(res[section][name])))
    return total


def _not_enforced(pod_spec: Mapping, workload: Mapping, containers: list[Mapping]) -> list[str]:
    """What the manifest asks for that this machine cannot honour (no namespaces, no
    cgroups, no scheduler, running as the current user)."""
    notes: list[str] = []
    sc = pod_spec.get("securityContext") or {}
    me = f"the rehearsal runs as uid {os.getuid()}, without namespaces"
    for key in ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile"):
        if key in sc:
            notes.append(f"pod securityContext.{key}={sc[key]}: not enforced here ({me})")
    for c in containers:
        csc = c.get("securityContext") or {}
        for key in sorted(csc):
            notes.append(f"{c['name']}: securityContext.{key}={csc[key]}: not enforced here")
        limits = (c.get("resources") or {}).get("limits") or {}
        if "cpu" in limits or "memory" in limits:
            notes.append(
                f"{c['name']}: resources.limits cpu={limits.get('cpu')} "
                f"memory={limits.get('memory')}: not enforced here (no cgroup)"
            )
        if gpu_request(c):
            notes.append(
                f"{c['name']}: requests {gpu_request(c)} GPU; this machine has none, so a "
                "scheduler would keep the pod Pending: played anyway, to reach the first step "
                "that needs the GPU"
            )
        for m in c.get("volumeMounts", []) or []:
            if m.get("readOnly"):
                notes.append(
                    f"{c['name']}: volumeMount {m['mountPath']} readOnly: not enforced here"
                )
            if m["mountPath"] == "/dev/shm":
                notes.append(
                    f"{c['name']}: /dev/shm mount: paths the spec names are remapped, but "
                    "shm_open() (the Python backend's regions) uses the host's /dev/shm"
                )
    for vol in pod_spec.get("volumes", []) or []:
        size = (vol.get("emptyDir") or {}).get("sizeLimit")
        if size:
            notes.append(f"volume {vol['name']}: emptyDir sizeLimit {size}: not enforced here")
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        if pod_spec.get(key):
            notes.append(f"{key}: not evaluated here (no scheduler, one node)")
    replicas = (workload.get("spec") or {}).get("replicas")
    if workload.get("kind") != "Job":
        count = replicas if replicas is not None else "unset (an HPA scales it)"
        notes.append(f"replicas {count}: one pod is played")
    notes.append(
        "programs still see the host's own paths (/tmp, $TMPDIR); only strings in the "
        "spec are remapped"
    )
    return list(dict.fromkeys(notes))


@dataclass
class Node:
    """This machine as a one-node cluster for one overlay's manifests."""

    manifests: Manifests
    root: Path
    secrets: SecretStore = field(init=False)
    claims: dict[str, Path] = field(default_factory=dict)
    pods: list[PodPlan] = field(default_factory=list)
    services: ServiceMap = field(init=False)
    # (Service name, Service port) -> (pod name, the pod's host port for its targetPort)
    backends: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ns = self.manifests.namespace
        dns = []
        for svc in self.manifests.of_kind("Service"):
            n = svc["metadata"]["name"]
            dns += [n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"]
        self.secrets = SecretStore(self.manifests.secrets(), self.root / "secrets", dns)
        self.services = ServiceMap(ns)

    def plan_all(self, names: list[str] | None = None) -> list[PodPlan]:
        """Plan every workload's pod (or those named): ports first, so that Service names
        in any pod resolve to the pod behind them."""
        workloads = [
            w for w in self.manifests.workloads() if not names or w["metadata"]["name"] in names
        ]
        for w in workloads:
            spec = w["spec"]["template"]["spec"]
            containers = [*(spec.get("initContainers") or []), *spec["containers"]]
            avoid = [p for pod in self.pods for p in pod.ports.ports.values()]
            self.pods.append(
                PodPlan(
                    name=f"{w['metadata']['name']}-rehearsal",
                    kind=w["kind"],
                    workload=w["metadata"]["name"],
                    labels=dict((w["spec"]["template"].get("metadata") or {}).get("labels") or {}),
                    spec=spec,
                    ports=pod_port_map(containers, avoid=avoid),
                    grace_s=float(spec.get("terminationGracePeriodSeconds", 30)),
                    restart_policy=spec.get("restartPolicy", "Always"),
                    not_enforced=_not_enforced(spec, w, containers),
                )
            )
        for pod in self.pods:
            if pod.kind == "Job":
                continue
            for svc in self.manifests.services_for(pod.labels):
                for port in svc["spec"].get("ports", []):
                    target = port.get("targetPort", port["port"])
                    try:
                        host = pod.ports.host_port(target)
                    except KeyError:
                        continue
                    key = (svc["metadata"]["name"], int(port["port"]))
                    self.backends.setdefault(key, (pod.name, host))
        # Each Service port gets its own front port (service.ServiceProxy): Service names in
        # the pods' strings resolve to it, never straight to a pod.
        used = [p for pod in self.pods for p in pod.ports.ports.values()]
        fronts = free_ports(len(self.backends), avoid=used)
        self.services.targets = dict(zip(self.backends, fronts, strict=True))
        return self.pods

    def materialize(self, pod: PodPlan) -> None:
        """Create the pod's volumes and plan its containers (the kubelet's sandbox step)."""
        for name, keys in referenced_secret_keys(pod.spec).items():
            self.secrets.ensure(name, keys | self._file_keys(pod.spec, name))
        pod.volumes = materialize(
            pod.name,
            pod.spec,
            self.root / pod.name,
            self.manifests.config_maps(),
            self.secrets,
            self.claims,
        )
        for c in pod.spec.get("initContainers") or []:
            pod.init.append(self._container(pod, c))
        for c in pod.spec["containers"]:
            pod.containers.append(self._container(pod, c))

    def _file_keys(self, pod_spec: Mapping, secret: str) -> set[str]:
        """Keys of a Secret volume without `items`: the file names the containers use under
        its mount path (a TLS pair, a key file), so a generated test Secret has them."""
        vols = {
            v["name"]
            for v in pod_spec.get("volumes", []) or []
            if (v.get("secret") or {}).get("secretName") == secret and not v["secret"].get("items")
        }
        keys: set[str] = set()
        for c in [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]:
            text = " ".join(map(str, [*(c.get("command") or []), *(c.get("args") or [])]))
            text += " " + " ".join(str(e.get("value", "")) for e in c.get("env", []) or [])
            for m in c.get("volumeMounts", []) or []:
                if m["name"] in vols:
                    keys |= set(
                        re.findall(rf"{re.escape(m['mountPath'].rstrip('/'))}/([\w.\-]+)", text)
                    )
        return keys

    def _container(self, pod: PodPlan, c: Mapping) -> ContainerPlan:
        image = image_config(c["image"])
        paths = PathMap()
        for image_path, host in image.files.items():
            paths.add(image_path, host)
        mounts = {}
        assert pod.volumes is not None
        for m in c.get("volumeMounts", []) or []:
            host = mount_host_path(pod.volumes, m)
            paths.add(m["mountPath"], host)
            mounts[m["mountPath"]] = str(host)
        rewrite = Rewriter(paths, pod.ports, self.services)
        sources = EnvSources(
            self.manifests.config_maps(),
            self.secrets.rendered,
            fields={
                "metadata.name": pod.name,
                "metadata.namespace": self.manifests.namespace,
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.nodeName": "rehearsal-node",
                "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
            },
            resources=lambda res, div, c=c: _resource_value(c, res, div),
        )
        spec_env, secret_vars = container_env(c, sources)
        argv = rewrite.many(command_line(c, image.entrypoint, image.cmd, spec_env))
        env = _process_env(image, spec_env, secret_vars, rewrite, pod.name)
        cwd = rewrite(c.get("workingDir") or image.workdir or "/")
        probes = {
            kind: ProbeSpec.from_manifest(kind, c[f"{kind}Probe"])
            for kind in PROBE_KINDS
            if c.get(f"{kind}Probe")
        }
        lifecycle = c.get("lifecycle") or {}
        return ContainerPlan(
            name=c["name"],
            image=c["image"],
            argv=argv,
            env=env,
            cwd=cwd if Path(cwd).is_dir() else "/",
            probes=probes,
            pre_stop=_handler(lifecycle.get("preStop"), rewrite),
            post_start=_handler(lifecycle.get("postStart"), rewrite),
            rewriter=rewrite,
            gpu_request=gpu_request(c),
            restart_policy=c.get("restartPolicy"),
            mounts=mounts,
        )


def _process_env(
    image: ImageConfig,
    spec_env: Mapping[str, str],
    secret_vars: set[str],
    rewrite: Rewriter,
    hostname: str,
) -> dict[str, str]:
    """What the process sees: the image's ENV, overridden by the container's env, plus
    HOSTNAME. Nothing from the host leaks in. Secret values are never rewritten."""
    env = {k: rewrite(v) for k, v in image.env.items()}
    env["HOSTNAME"] = hostname
    for k, v in spec_env.items():
        env[k] = v if k in secret_vars else rewrite(v)
    return env


def _handler(handler: Mapping | None, rewrite: Rewriter) -> dict | None:
    if not handler:
        return None
    out = dict(handler)
    if "exec" in handler:
        out["exec"] = {"command": rewrite.many(handler["exec"]["command"])}
    return out


def _resource_value(container: Mapping, resource: str, divisor: str) -> str:
    section, _, name = resource.partition(".")
    res = (container.get("resources") or {}).get(section) or {}
    if name not in res:
        return "0"
    value = _quantity(res[name]) / _quantity(divisor)
    return str(int(-(-value // 1)))  # the kubelet rounds up
