"""Rewriting a container's strings for this machine: Service names, ports and paths.

A pod here has no network namespace and no mount namespace, so the rehearsal moves each
containerPort to a free host port and each mount path (and image path) to a real directory,
and rewrites every string the spec hands to a process (args, env values, probe and hook
commands) accordingly. Every rewrite is recorded so the log shows what changed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Characters that can continue a path component: a mapped prefix must end at a boundary.
_PATH_CHARS = r"[\w.\-]"


@dataclass
class PathMap:
    """Container paths -> host paths, longest prefix first (a mount shadows the image)."""

    entries: dict[str, str] = field(default_factory=dict)

    def add(self, container_path: str, host_path: str | Path) -> None:
        self.entries[container_path.rstrip("/") or "/"] = str(host_path)

    def host(self, container_path: str) -> str:
        """The host path of one absolute container path (unchanged when nothing maps it)."""
        return self.rewrite(container_path)

    def rewrite(self, text: str) -> str:
        """Replace every mapped path prefix in `text` (paths inside shell scripts too)."""
        if not self.entries:
            return text
        prefixes = sorted(self.entries, key=len, reverse=True)
        # A prefix starts a path (not preceded by a path character or "/") and ends at a
        # component boundary: "/tmp" maps "/tmp/x" and "=/tmp" but not "/tmpfs" or "/a/tmp".
        alternatives = "|".join(re.escape(p) for p in prefixes)
        pattern = re.compile(rf"(?<![\w.\-/])({alternatives})(?!{_PATH_CHARS})")
        return pattern.sub(lambda m: self.entries[m.group(1)], text)


@dataclass
class PortMap:
    """One pod's containerPorts -> host ports (a pod shares one network namespace)."""

    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    names: dict[str, int] = field(default_factory=dict)  # port name -> container port

    def host_port(self, port: int | str) -> int:
        """Host port for a container port number or name (as probes and Services name them)."""
        number = self.names[port] if isinstance(port, str) and not port.isdigit() else int(port)
        return self.ports.get(number, number)

    def rewrite(self, text: str) -> str:
        """Replace each container port number that stands alone (":8001", "=8000", "8003")."""
        if not self.ports:
            return text
        alternatives = "|".join(str(p) for p in sorted(self.ports, reverse=True))
        pattern = re.compile(rf"(?<![\w.\-])({alternatives})(?!\w|\.\d)")
        return pattern.sub(lambda m: str(self.ports[int(m.group(1))]), text)


@dataclass
class ServiceMap:
    """Cluster DNS names of Services -> 127.0.0.1 and the backing pod's host port."""

    namespace: str
    # (service name, service port) -> host port
    targets: dict[tuple[str, int], int] = field(default_factory=dict)

    def rewrite(self, text: str) -> str:
        """`name:port`, `name.ns:port`, `name.ns.svc.cluster.local:port` -> `127.0.0.1:hostport`."""
        for (name, port), host_port in sorted(self.targets.items(), key=lambda t: -len(t[0][0])):
            suffix = rf"(?:\.{re.escape(self.namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
            pattern = re.compile(rf"(?<![\w.\-]){re.escape(name)}{suffix}:{port}(?!\d)")
            text = pattern.sub(f"127.0.0.1:{host_port}", text)
        return text


@dataclass
class Rewriter:
    """All rewrites for one container, applied in order: Services, ports, paths."""

    paths: PathMap
    ports: PortMap
    services: ServiceMap | None = None
    changes: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, text: str) -> str:
        out = text
        if self.services is not None:
            out = self.services.rewrite(out)
        out = self.paths.rewrite(self.ports.rewrite(out))
        if out != text:
            self.changes.append((text, out))
        return out

    def many(self, texts: Iterable[str]) -> list[str]:
        return [self(t) for t in texts]


def free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """`count` distinct free TCP ports, none of them in `avoid` (the manifests' own ports)."""
    avoid = set(avoid)
    out: list[int] = []
    socks = []
    try:
        while len(out) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in avoid and port not in out:
                out.append(port)
    finally:
        for s in socks:
            s.close()
    return out


def pod_port_map(containers: Iterable[Mapping], avoid: Iterable[int] = ()) -> PortMap:
    """A PortMap giving each declared containerPort of the pod its own free host port."""
    numbers: dict[int, None] = {}
    names: dict[str, int] = {}
    for c in containers:
        for p in c.get("ports", []) or []:
            numbers[int(p["containerPort"])] = None
            if p.get("name"):
                names[p["name"]] = int(p["containerPort"])
    host = free_ports(len(numbers), avoid={*numbers, *avoid})
    return PortMap(dict(zip(numbers, host, strict=True)), names)
