"""What the node tells the HTTP gateway: its listeners (a light module: no HTTP library)."""

from __future__ import annotations

from dataclasses import dataclass

from ..home import Home

#: The gateway's identity on the node's router.
GATEWAY_IDENTITY = b"http-gateway"


@dataclass(frozen=True)
class Listener:
    """One port and the actor (tree path) that serves it, with the manifest's limits."""

    port: int
    host: str
    target: str
    manifest: str
    max_body_bytes: int
    max_header_bytes: int
    timeout_ms: int
    max_connections: int
    hold_ms: int


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs, pickled to it by the node."""

    home: Home
    node_pid: int
    listeners: tuple[Listener, ...]
