"""gRPC channel options: load balancing across Triton pods, keepalive, message sizes.

The client's address is any gRPC target: ``HOST:PORT`` (one connection, to whatever the name
resolves to first), ``dns:///triton-grpc-headless.NAMESPACE.svc.cluster.local:8001`` (every
address a headless Service resolves to: one per ready pod) or, for tests, a static list
``ipv4:127.0.0.1:8001,127.0.0.1:9001``. Which of those addresses a request goes to is the
load-balancing policy's choice: gRPC's default ``pick_first`` sends everything to one of them;
``round_robin`` keeps a connection to each and spreads requests over the healthy ones.

A ClusterIP Service does not balance gRPC: it picks a pod per TCP connection, and one channel
is one long-lived connection, so every request of a web replica reaches the same pod. Hence
``dns:///<headless service>`` + ``round_robin``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

LB_POLICIES = ("pick_first", "round_robin")
# tritonclient's own limit for both directions (tritonclient.grpc._client.MAX_GRPC_MESSAGE_SIZE);
# passing channel_args replaces its defaults, so they are restated here.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ChannelOptions:
    """How the gRPC channel to Triton connects and balances (tritonclient ``channel_args``).

    - ``lb_policy``: ``pick_first`` (gRPC's default) or ``round_robin`` (spread requests over
      every address the target resolves to; use it with a ``dns:///`` headless-Service target).
    - ``max_message_bytes``: send and receive limit (tritonclient's default, 2 GiB - 1; requests
      are bounded by the client's own input checks).
    - ``keepalive_time_s``: ping a connection after this long without activity, and drop it when
      no answer comes within ``keepalive_timeout_s`` (finds pods that vanished without closing
      the connection). ``None`` sends no pings (tritonclient's default). Triton refuses pings
      more often than every 5 min while no call is active unless started with its
      ``--grpc-keepalive-*`` flags; ``keepalive_permit_without_calls`` stays False for that.
    - ``max_reconnect_backoff_s``: the longest wait between attempts to reconnect to an address
      (gRPC's default is 120 s, so a restarted pod would get no traffic for up to two minutes).
    - ``dns_min_reresolution_s``: the shortest interval between two DNS resolutions. gRPC
      resolves again when a connection is lost, so pods that went away leave the rotation and a
      replacement pod is found at most this long after.
    """

    lb_policy: str = "pick_first"
    max_message_bytes: int = INT32_MAX
    keepalive_time_s: float | None = None
    keepalive_timeout_s: float = 20.0
    keepalive_permit_without_calls: bool = False
    max_reconnect_backoff_s: float | None = 2.0
    dns_min_reresolution_s: float | None = 5.0

    def __post_init__(self) -> None:
        if self.lb_policy not in LB_POLICIES:
            raise ValueError(
                f"unknown load-balancing policy {self.lb_policy!r}; use one of "
                + ", ".join(LB_POLICIES)
            )
        for name in ("keepalive_time_s", "max_reconnect_backoff_s", "dns_min_reresolution_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (got {value})")

    def service_config(self) -> str:
        """The gRPC service config (JSON) that selects the load-balancing policy."""
        return json.dumps({"loadBalancingConfig": [{self.lb_policy: {}}]})

    def channel_args(self) -> list[tuple[str, int | str]]:
        """The ``(key, value)`` pairs for tritonclient's ``channel_args`` (complete: they
        replace tritonclient's defaults)."""
        keepalive_ms = INT32_MAX if self.keepalive_time_s is None else _ms(self.keepalive_time_s)
        args: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            ("grpc.http2.max_pings_without_data", 2),  # tritonclient's default
            ("grpc.lb_policy_name", self.lb_policy),
            ("grpc.service_config", self.service_config()),
        ]
        if self.max_reconnect_backoff_s is not None:
            backoff_ms = _ms(self.max_reconnect_backoff_s)
            args += [
                ("grpc.initial_reconnect_backoff_ms", min(1000, backoff_ms)),
                ("grpc.max_reconnect_backoff_ms", backoff_ms),
            ]
        if self.dns_min_reresolution_s is not None:
            args.append(
                ("grpc.dns_min_time_between_resolutions_ms", _ms(self.dns_min_reresolution_s))
            )
        return args


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
