"""What the node tells the HTTP gateway: its listeners (a light module: no HTTP library)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..home import Home

#: The gateway's identity on the node's router.
GATEWAY_IDENTITY = b"http-gateway"


class ListenerKind(str, Enum):
    """What a port serves, named by the handler that grants it."""

    HTTP = "http-server"            # every request to the actor's http-server.handle-request
    WEBSOCKET = "websocket-server"  # WebSocket connections at one path to websocket-server.handle-message
    FRAMEWORK = "http-framework"    # requests routed by the actor's own routes (http-handlers)


@dataclass(frozen=True)
class Listener:
    """One port and the actor (tree path) that serves it, with the manifest's limits
    (`max_body_bytes` is a WebSocket listener's largest message)."""

    port: int
    host: str
    target: str
    manifest: str
    max_body_bytes: int
    max_header_bytes: int
    timeout_ms: int
    max_connections: int
    hold_ms: int
    kind: ListenerKind = ListenerKind.HTTP
    #: a WebSocket listener's one path
    ws_path: str = "/"


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs, pickled to it by the node."""

    home: Home
    node_pid: int
    listeners: tuple[Listener, ...]
