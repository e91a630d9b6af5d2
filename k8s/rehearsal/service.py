"""A Service's port as kube-proxy makes it: a front port that forwards new connections to a
Ready pod behind it and refuses them while no endpoint is Ready.

An established connection keeps flowing when the pod turns unready (kube-proxy's conntrack
entries survive endpoint changes); only new connections see the change. Headless Services get
the same treatment here, standing for DNS that lists Ready pods only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ServiceProxy:
    """127.0.0.1:`listen_port` -> 127.0.0.1:`backend_port` while `ready()` is true."""

    name: str
    port: int  # the Service's own port
    listen_port: int
    backend_port: int
    ready: Callable[[], bool]
    refused: int = 0
    forwarded: int = 0
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ServiceProxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.listen_port))
        sock.listen(64)
        sock.settimeout(0.2)
        self._sock = sock
        threading.Thread(target=self._accept, daemon=True, name=f"svc/{self.name}").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if not self.ready():
                self.refused += 1
                # No Ready endpoint: reset at once, as the REJECT rule of a Service without
                # endpoints does (the client sees the connection fail, not hang).
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backend_port), timeout=2)
            except OSError:
                self.refused += 1
                conn.close()
                continue
            upstream.settimeout(None)
            self.forwarded += 1
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        src.close()
