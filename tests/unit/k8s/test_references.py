"""Everything a pod references exists: rendered, or created by a command in docs/kubernetes.md.

A Secret, ConfigMap, PersistentVolumeClaim or ServiceAccount that nothing creates stops the pod
(CreateContainerConfigError, or Pending forever). This collects every reference from each
overlay's render (volumes, env, envFrom, service accounts, image pull secrets, Ingress TLS) and
requires each to be rendered or created by the documented Secret commands, which are executed
here with `kubectl --dry-run=client -o yaml` (no cluster needed) to prove they parse and make
the object, in the namespace, with the keys the pods read.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import textwrap
from collections import defaultdict
from typing import Any
from urllib.parse import urlparse

import pytest

from .k8s_render import K8S, KUBECTL, OVERLAYS, ROOT, containers, objects, pod_specs, render

DOCS = ROOT / "docs" / "kubernetes.md"
MARKER = "<!-- secrets: executed by tests/unit/k8s/test_references.py"
NAMESPACE = "mmtriton"
# kubectl, as the documented block calls it, printing the object instead of creating it.
KUBECTL_SHIM = 'kubectl() { command kubectl "$@" --dry-run=client -o yaml; echo ---; }\n'

Ref = tuple[str, str]  # (kind, name)


def references(objs: list[dict[str, Any]]) -> dict[Ref, set[str]]:
    """Every object the workloads and the Ingress need: (kind, name) -> keys they read."""
    refs: dict[Ref, set[str]] = defaultdict(set)
    runtimes = [o["spec"] for o in objs if o["kind"] == "ServingRuntime"]
    for _, pod in pod_specs(objs):
        refs[("ServiceAccount", pod.get("serviceAccountName") or "default")]
        for secret in pod.get("imagePullSecrets", []):
            refs[("Secret", secret["name"])]
        volumes = list(pod.get("volumes", []))
        for v in volumes:
            if "secret" in v:
                ref = refs[("Secret", v["secret"]["secretName"])]
                ref |= {i["key"] for i in v["secret"].get("items", [])}
            if "configMap" in v:
                ref = refs[("ConfigMap", v["configMap"]["name"])]
                ref |= {i["key"] for i in v["configMap"].get("items", [])}
            if "persistentVolumeClaim" in v:
                refs[("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])]
            for source in v.get("projected", {}).get("sources", []):
                for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    if field in source:
                        ref = refs[(kind, source[field]["name"])]
                        ref |= {i["key"] for i in source[field].get("items", [])}
        for c in containers(pod):
            for e in c.get("env", []):
                source = e.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in source:
                        refs[(kind, source[field]["name"])].add(source[field]["key"])
            for e in c.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in e:
                        refs[(kind, e[field]["name"])]
    for spec in runtimes:  # a runtime's own volumes (KServe merges them into the pod)
        for v in spec.get("volumes", []):
            if "secret" in v:
                refs[("Secret", v["secret"]["secretName"])]
    for ingress in (o for o in objs if o["kind"] == "Ingress"):
        for tls in ingress["spec"].get("tls", []):
            refs[("Secret", tls["secretName"])] |= {"tls.crt", "tls.key"}
    return dict(refs)


def provided(objs: list[dict[str, Any]]) -> dict[Ref, set[str]]:
    """What a set of objects provides: (kind, name) -> data keys."""
    out = {}
    for o in objs:
        keys = {*(o.get("data") or {}), *(o.get("stringData") or {}), *(o.get("binaryData") or {})}
        out[(o["kind"], o["metadata"]["name"])] = keys
    return out


def secrets_block() -> str:
    """The shell block of docs/kubernetes.md that creates the Secrets (after its marker)."""
    text = DOCS.read_text()
    assert MARKER in text, f"docs/kubernetes.md lost its marked Secrets block ({MARKER} -->)"
    after = text[text.index(MARKER) :]
    match = re.search(r"```(?:bash|sh)\n(.*?)```", after, flags=re.S)
    assert match, "no ```bash block after the Secrets marker"
    return textwrap.dedent(match.group(1))  # the block sits in a numbered list


@pytest.fixture(scope="module")
def documented(tmp_path_factory) -> list[dict[str, Any]]:
    """The documented Secret commands, run in a scratch folder with kubectl --dry-run=client."""
    if KUBECTL is None or shutil.which("openssl") is None:
        pytest.fail("kubectl and openssl are needed to run the documented commands: install them")
    work = tmp_path_factory.mktemp("docs-secrets")
    script = "set -euo pipefail\n" + KUBECTL_SHIM + secrets_block()
    result = subprocess.run(
        ["bash", "-c", script], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"documented commands failed:\n{result.stderr[-3000:]}"
    made = objects(result.stdout)
    assert made, "the documented block created nothing"
    return made


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_object_is_rendered_or_created_by_the_docs(documented, overlay):
    objs = objects(render(K8S / "overlays" / overlay))
    available = {**provided(objs), **provided(documented)}
    missing = []
    for (kind, name), keys in sorted(references(objs).items()):
        if (kind, name) not in available:
            missing.append(f"{kind}/{name}: neither rendered nor created in docs/kubernetes.md")
        elif keys - available[(kind, name)]:
            missing.append(f"{kind}/{name}: no key {sorted(keys - available[(kind, name)])}")
    assert not missing, "\n".join(missing)
    assert references(objs), "no reference collected: the collector is broken"


def test_documented_secrets_are_created_in_the_namespace(documented):
    for obj in documented:
        assert obj["kind"] == "Secret", obj["kind"]
        assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]
        for key, value in obj.get("data", {}).items():
            assert base64.b64decode(value), f"{obj['metadata']['name']}/{key} is empty"
    names = {o["metadata"]["name"] for o in documented}
    assert {"triton-admin", "triton-grpc-tls", "mmtriton-web-tls"} <= names


def test_documented_grpc_certificate_names_what_the_web_page_dials(documented, tmp_path):
    """TLS fails unless the certificate names the host the web page's --triton-url dials."""
    (tls,) = [o for o in documented if o["metadata"]["name"] == "triton-grpc-tls"]
    cert = tmp_path / "tls.crt"
    cert.write_bytes(base64.b64decode(tls["data"]["tls.crt"]))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(tls["data"]["ca.crt"]))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    san = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = set(re.findall(r"DNS:([^,\s]+)", san))
    web = next(
        o
        for o in objects(render(K8S / "overlays" / "gpu"))
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "mmtriton-web"
    )
    host = _grpc_host(_web_triton_target(web["spec"]["template"]["spec"]["containers"][0]))
    assert host in names, f"web dials {host}; the documented certificate names {sorted(names)}"


def _web_triton_target(web: dict[str, Any]) -> str:
    """The web container's --triton-url (an arg, or the variable that sets its default)."""
    args = web.get("args", [])
    for i, arg in enumerate(args):
        if arg == "--triton-url":
            return args[i + 1]
        if arg.startswith("--triton-url="):
            return arg.split("=", 1)[1]
    from mmtriton_client.web import command

    env = {e["name"]: e.get("value") for e in web.get("env", [])}
    url_env = getattr(command, "URL_ENV", None)
    assert url_env in env, "the web container names no Triton target"
    return env[url_env]


def _grpc_host(target: str) -> str:
    """The host a gRPC target names (dns:///host:port, dns:host:port or host:port)."""
    if target.startswith("dns:"):
        target = urlparse(target).path.lstrip("/") or target[len("dns:") :]
    return target.rsplit(":", 1)[0]


def test_docs_create_the_secrets_between_the_namespace_and_the_overlay():
    """The order that works: namespace, then Secrets, then the workloads that mount them."""
    text = DOCS.read_text()
    namespace = text.index("kubectl apply -k k8s/base/namespace")
    secrets = text.index(MARKER)
    for overlay in OVERLAYS:
        apply = text.index(f"kubectl apply --server-side -k k8s/overlays/{overlay}")
        assert namespace < secrets < apply, overlay


def test_collector_finds_each_kind_of_reference():
    pod = {
        "serviceAccountName": "sa",
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [
            {"name": "a", "secret": {"secretName": "s", "items": [{"key": "k", "path": "k"}]}},
            {"name": "b", "configMap": {"name": "cm"}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "pvc"}},
        ],
        "containers": [
            {
                "name": "x",
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k2"}}}],
                "envFrom": [{"configMapRef": {"name": "cm2"}}],
            }
        ],
    }
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"spec": pod}},
    }
    assert references([deployment]) == {
        ("ServiceAccount", "sa"): set(),
        ("Secret", "pull"): set(),
        ("Secret", "s"): {"k"},
        ("ConfigMap", "cm"): set(),
        ("PersistentVolumeClaim", "pvc"): set(),
        ("Secret", "s2"): {"k2"},
        ("ConfigMap", "cm2"): set(),
    }
