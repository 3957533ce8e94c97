"""What the node tells the HTTP gateway: its listeners (a light module: no HTTP library)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..home import Home


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
    #: an http-framework listener's port as its server asked for it (0: any free port)
    asked_port: int = 0

    def to_plain(self) -> dict:
        """As msgpack data, for the node's `listen` command to the gateway."""
        return {"port": self.port, "host": self.host, "target": self.target, "manifest": self.manifest,
                "max_body_bytes": self.max_body_bytes, "max_header_bytes": self.max_header_bytes,
                "timeout_ms": self.timeout_ms, "max_connections": self.max_connections, "hold_ms": self.hold_ms,
                "kind": self.kind.value, "ws_path": self.ws_path, "asked_port": self.asked_port}

    @classmethod
    def from_plain(cls, data: dict) -> "Listener":
        """The inverse of `to_plain`; KeyError, TypeError or ValueError on anything else."""
        ints = ("port", "max_body_bytes", "max_header_bytes", "timeout_ms", "max_connections", "hold_ms", "asked_port")
        strs = ("host", "target", "manifest", "ws_path")
        if not all(isinstance(data[k], int) for k in ints) or not all(isinstance(data[k], str) for k in strs):
            raise TypeError("a listener's fields have the wrong types")
        return cls(**{k: data[k] for k in ints + strs}, kind=ListenerKind(data["kind"]))


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs, pickled to it by the node."""

    home: Home
    node_pid: int
    listeners: tuple[Listener, ...]
    #: its identity on the node's router (protocol/trust.py: the node listens to no other gateway)
    identity: bytes
