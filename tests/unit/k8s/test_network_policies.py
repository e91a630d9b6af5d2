"""Who can reach whom: the rendered NetworkPolicies evaluated over a matrix of pods and ports.

A small evaluator of the NetworkPolicy semantics (networking.k8s.io/v1) that matter here:
podSelector / namespaceSelector (matchLabels and matchExpressions), named and numbered ports,
protocols, policyTypes, and "a connection needs the source's egress and the destination's
ingress to allow it". The actors are the pods the overlay renders plus the outside parties the
policies name (Prometheus, the ingress controller, DNS) and some that they must keep out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from .k8s_render import DEPLOYMENT_OVERLAYS, K8S, objects, render

NAMESPACE = "mmtriton"


@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: namespace (and its labels), labels, named ports."""

    name: str
    namespace: str
    labels: dict[str, str]
    # (port, protocol) -> port name ("" when unnamed)
    ports: dict[tuple[int, str], str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: every matchLabels pair and matchExpressions requirement holds."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def policy_types(policy: dict[str, Any]) -> set[str]:
    """policyTypes as the API server defaults them."""
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", *(["Egress"] if "egress" in spec else [])}


def peer_matches(peer: dict[str, Any], policy_ns: str, other: Pod) -> bool:
    """One `from`/`to` entry against the pod at the other end."""
    if "ipBlock" in peer:
        return False  # no pod IPs here: CIDR peers are for traffic leaving the cluster
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    in_ns = other.namespace == policy_ns if ns_sel is None else selects(ns_sel, other.ns_labels())
    return in_ns and (pod_sel is None or selects(pod_sel, other.labels))


def port_matches(rule_ports: list[dict[str, Any]] | None, dest: Pod, port: int, proto: str):
    """A rule's ports against the destination port (named ports resolve on the destination)."""
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            if dest.ports.get((port, proto)) == want:
                return True
        elif want <= port <= p.get("endPort", want):
            return True
    return False


def allowed_one_side(
    policies: list[dict[str, Any]], me: Pod, other: Pod, dest: Pod, port: int, proto: str, kind: str
) -> bool:
    """Does `me`'s side (Ingress at the destination, Egress at the source) allow the traffic?"""
    if me.namespace != NAMESPACE:
        return True  # these policies govern only their own namespace
    mine = [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == me.namespace
        and selects(p["spec"]["podSelector"], me.labels)
        and kind in policy_types(p)
    ]
    if not mine:
        return True  # not isolated in this direction
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(x, me.namespace, other) for x in peers)) and (
                port_matches(rule.get("ports"), dest, port, proto)
            ):
                return True
    return False


def allowed(policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int, proto: str) -> bool:
    """A connection from src to dst:port needs src's egress and dst's ingress to allow it."""
    return allowed_one_side(policies, src, dst, dst, port, proto, "Egress") and allowed_one_side(
        policies, dst, src, dst, port, proto, "Ingress"
    )


# --------------------------------------------------------------------------- actors
def _workload_pods(objs: list[dict[str, Any]]) -> dict[str, Pod]:
    pods = {}
    for o in objs:
        if o["kind"] != "Deployment":
            continue
        template = o["spec"]["template"]
        ports = {
            (p["containerPort"], p.get("protocol", "TCP")): p.get("name", "")
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        }
        pods[o["metadata"]["name"]] = Pod(
            o["metadata"]["name"], NAMESPACE, template["metadata"]["labels"], ports
        )
    return pods


OUTSIDERS = {
    "prometheus": Pod(
        "prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, {(9090, "TCP"): "web"}
    ),
    "ingress-nginx": Pod(
        "ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}
    ),
    "kube-dns": Pod(
        "kube-dns",
        "kube-system",
        {"k8s-app": "kube-dns"},
        {(53, "UDP"): "dns", (53, "TCP"): "dns-tcp"},
    ),
    # Pods that must be kept out, and the labelled clients that may call gRPC.
    "other-namespace": Pod("other", "default", {"app": "other"}, {(443, "TCP"): "https"}),
    "unlabelled-here": Pod("debug", NAMESPACE, {"app": "debug"}, {(8080, "TCP"): "http"}),
    "prometheus-elsewhere": Pod("prometheus", "default", {"app.kubernetes.io/name": "prometheus"}),
    "client-here": Pod("client", NAMESPACE, {"mmtriton.io/triton-client": "true"}),
    "client-labelled-ns": Pod(
        "client",
        "my-app",
        {"mmtriton.io/triton-client": "true"},
        namespace_labels={"mmtriton.io/triton-client": "true"},
    ),
    "client-unlabelled-ns": Pod("client", "my-app", {"mmtriton.io/triton-client": "true"}),
}

# Everything allowed where at least one end is in the namespace (the policies' scope), as
# (source, destination, port, protocol). All else must be denied.
EXPECTED = {
    ("prometheus", "triton", 8002, "TCP"),  # Triton's metrics
    ("prometheus", "mmtriton-web", 7860, "TCP"),  # the web page's /metrics
    ("ingress-nginx", "mmtriton-web", 7860, "TCP"),
    ("mmtriton-web", "triton", 8001, "TCP"),  # gRPC
    ("client-here", "triton", 8001, "TCP"),
    ("client-labelled-ns", "triton", 8001, "TCP"),
    # DNS, from every pod of the namespace.
    *{
        (src, "kube-dns", 53, proto)
        for src in ("triton", "mmtriton-web", "unlabelled-here", "client-here")
        for proto in ("UDP", "TCP")
    },
}


@pytest.fixture(scope="module", params=DEPLOYMENT_OVERLAYS)
def matrix(request) -> tuple[dict[str, Pod], set[tuple[str, str, int, str]]]:
    objs = objects(render(K8S / "overlays" / request.param))
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    actors = {**_workload_pods(objs), **OUTSIDERS}
    reached = set()
    for src_name, src in actors.items():
        for dst_name, dst in actors.items():
            if src_name == dst_name or NAMESPACE not in (src.namespace, dst.namespace):
                continue
            for port, proto in dst.ports:
                if allowed(policies, src, dst, port, proto):
                    reached.add((src_name, dst_name, port, proto))
    return actors, reached


def test_reachability_matrix_is_exactly_the_intended_one(matrix):
    actors, reached = matrix
    assert {"triton", "mmtriton-web"} <= actors.keys()
    assert reached - EXPECTED == set(), "allowed but should be denied"
    assert EXPECTED - reached == set(), "denied but should be allowed"


@pytest.mark.parametrize(
    ("src", "dst", "port"),
    [
        ("mmtriton-web", "triton", 8000),  # HTTP admin APIs, no TLS
        ("mmtriton-web", "triton", 8003),  # the supervisor's health port
        ("other-namespace", "triton", 8001),
        ("client-unlabelled-ns", "triton", 8001),
        ("unlabelled-here", "triton", 8001),
        ("prometheus-elsewhere", "triton", 8002),
        ("prometheus", "triton", 8000),
        ("ingress-nginx", "triton", 8001),
        ("triton", "mmtriton-web", 7860),
        ("triton", "other-namespace", 443),  # Triton egress: DNS only
        ("mmtriton-web", "other-namespace", 443),
    ],
)
def test_named_paths_are_denied(matrix, src, dst, port):
    _, reached = matrix
    assert (src, dst, port, "TCP") not in reached


def test_evaluator_follows_the_networkpolicy_rules():
    """The evaluator itself, on hand-made policies whose outcome the API documents."""
    web = Pod("w", NAMESPACE, {"app": "web"}, {(80, "TCP"): "http"})
    db = Pod("d", NAMESPACE, {"app": "db"}, {(5432, "TCP"): "pg"})
    outside = Pod("o", "else", {"app": "web"})
    none: list[dict[str, Any]] = []
    assert allowed(none, web, db, 5432, "TCP"), "no policy: not isolated"
    ingress_named = {
        "metadata": {"name": "p"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "pg"}]}],
        },
    }
    assert allowed([ingress_named], web, db, 5432, "TCP"), "named port, same namespace"
    assert not allowed([ingress_named], outside, db, 5432, "TCP"), "podSelector is namespaced"
    assert not allowed([ingress_named], web, db, 5432, "UDP")
    expr = {
        "metadata": {"name": "e"},
        "spec": {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]
            },
            "policyTypes": ["Ingress"],
        },
    }
    assert not allowed([expr], web, db, 5432, "TCP"), "selected with no rule: deny all"
    assert allowed([expr], db, web, 80, "TCP"), "web is not selected"
