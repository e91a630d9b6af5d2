"""Pod volumes as temp dirs, and the test Secrets a rehearsal needs.

emptyDir -> a fresh dir per pod (under /dev/shm for medium: Memory); configMap and secret ->
the keys written as files (mode from defaultMode/items); persistentVolumeClaim -> one dir per
claim, shared by every pod that mounts it (as a ReadWriteMany volume would be).
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}


class VolumeError(Exception):
    """A volume the pod cannot mount (the kubelet's FailedMount)."""


def secret_data(obj: Mapping) -> dict[str, str]:
    """The decoded data of a rendered Secret (data is base64, stringData plain)."""
    out = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    out.update(obj.get("stringData") or {})
    return out


def self_signed_tls(dns_names: Iterable[str], workdir: Path) -> dict[str, str]:
    """A throwaway CA and a server certificate signed by it (openssl), as Secret keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = ["localhost", *dns_names]
    san = ",".join([*(f"DNS:{n}" for n in names), "IP:127.0.0.1"])

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mmtriton rehearsal CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={names[1] if len(names) > 1 else 'localhost'}",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    )
    (workdir / "san.cnf").write_text(f"subjectAltName={san}\n")
    run(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "tls.crt",
    )
    return {k: (workdir / k).read_text() for k in ("tls.crt", "tls.key", "ca.crt")}


@dataclass
class SecretStore:
    """Rendered Secrets, plus generated test values for the ones a pod needs but nothing renders."""

    rendered: dict[str, dict[str, str]]
    workdir: Path
    dns_names: list[str] = field(default_factory=list)
    generated: dict[str, list[str]] = field(default_factory=dict)  # name -> generated keys

    def ensure(self, name: str, keys: Iterable[str]) -> dict[str, str]:
        """The Secret `name` with at least `keys`: rendered values win; missing keys are made
        (a random token, or a self-signed TLS pair for tls.crt/tls.key/ca.crt)."""
        data = self.rendered.setdefault(name, {})
        missing = [k for k in keys if k not in data]
        if not missing:
            return data
        if TLS_KEYS & set(missing):
            tls = self_signed_tls(self.dns_names, self.workdir / f"tls-{name}")
            for k in TLS_KEYS & set(missing):
                data[k] = tls[k]
        for k in missing:
            data.setdefault(k, secrets.token_urlsafe(24))
        self.generated.setdefault(name, []).extend(sorted(missing))
        return data


def referenced_secret_keys(pod_spec: Mapping) -> dict[str, set[str]]:
    """{secret name: keys} that the pod's env, envFrom and volumes reference."""
    refs: dict[str, set[str]] = {}
    containers = [*(pod_spec.get("initContainers") or []), *pod_spec.get("containers", [])]
    for c in containers:
        for var in c.get("env", []) or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.setdefault(ref["name"], set()).add(ref["key"])
        for source in c.get("envFrom", []) or []:
            if "secretRef" in source:
                refs.setdefault(source["secretRef"]["name"], set())
    for vol in pod_spec.get("volumes", []) or []:
        if "secret" in vol:
            items = vol["secret"].get("items") or []
            refs.setdefault(vol["secret"]["secretName"], set()).update(i["key"] for i in items)
        for source in (vol.get("projected") or {}).get("sources", []) or []:
            if "secret" in source:
                items = source["secret"].get("items") or []
                refs.setdefault(source["secret"]["name"], set()).update(i["key"] for i in items)
    return refs


def _write_keys(
    target: Path, data: Mapping[str, str], items: list | None, mode: int | None
) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    chosen = items or [{"key": k, "path": k} for k in data]
    written = []
    for item in chosen:
        if item["key"] not in data:
            raise VolumeError(f"key {item['key']!r} not found")
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]])
        path.chmod(item.get("mode", mode if mode is not None else 0o644))
        written.append(item["path"])
    return written


@dataclass
class PodVolumes:
    """The host dirs of one pod's volumes."""

    root: Path
    dirs: dict[str, Path] = field(default_factory=dict)  # volume name -> host dir
    notes: list[str] = field(default_factory=list)


def materialize(
    pod_name: str,
    pod_spec: Mapping,
    root: Path,
    config_maps: Mapping[str, Mapping[str, str]],
    secret_store: SecretStore,
    claims: dict[str, Path],
) -> PodVolumes:
    """Create each volume of the pod under `root`; PVC dirs are shared through `claims`."""
    out = PodVolumes(root)
    try:
        for vol in pod_spec.get("volumes", []) or []:
            name = vol["name"]
            if "emptyDir" in vol:
                medium = (vol["emptyDir"] or {}).get("medium")
                if medium == "Memory" and Path("/dev/shm").is_dir():
                    path = Path(
                        tempfile.mkdtemp(prefix=f"rehearsal-{pod_name}-{name}-", dir="/dev/shm")
                    )
                else:
                    path = root / "emptyDir" / name
                    path.mkdir(parents=True)
                out.dirs[name] = path
            elif "configMap" in vol:
                ref = vol["configMap"]
                data = config_maps.get(ref["name"])
                if data is None:
                    raise VolumeError(f"volume {name}: configmap {ref['name']!r} not found")
                path = root / "configMap" / name
                _write_keys(path, data, ref.get("items"), ref.get("defaultMode"))
                out.dirs[name] = path
            elif "secret" in vol:
                ref = vol["secret"]
                keys = [i["key"] for i in ref.get("items") or []]
                data = secret_store.ensure(ref["secretName"], keys)
                path = root / "secret" / name
                _write_keys(path, data, ref.get("items"), ref.get("defaultMode"))
                out.dirs[name] = path
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in claims:
                    claims[claim] = root.parent / "pvc" / claim
                    claims[claim].mkdir(parents=True, exist_ok=True)
                out.dirs[name] = claims[claim]
            else:
                raise VolumeError(
                    f"volume {name}: type {sorted(set(vol) - {'name'})} is not emulated"
                )
    except Exception:
        cleanup_memory_dirs(out)  # no half-made sandbox left in /dev/shm
        raise
    return out


def mount_host_path(volumes: PodVolumes, mount: Mapping) -> Path:
    """The host dir standing for one volumeMount (subPath honoured)."""
    if mount["name"] not in volumes.dirs:
        raise VolumeError(f"volumeMount {mount['name']!r}: no such volume in the pod")
    base = volumes.dirs[mount["name"]]
    sub = mount.get("subPath")
    if sub:
        base = base / sub
        if not base.exists():
            base.mkdir(parents=True)
    return base


def cleanup_memory_dirs(volumes: PodVolumes) -> None:
    """Remove the pod's /dev/shm-backed emptyDirs (others go with the run's temp root)."""
    for path in volumes.dirs.values():
        if str(path).startswith("/dev/shm/rehearsal-"):
            shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "PodVolumes",
    "SecretStore",
    "VolumeError",
    "cleanup_memory_dirs",
    "materialize",
    "mount_host_path",
    "referenced_secret_keys",
    "secret_data",
    "self_signed_tls",
]
