"""websocket-server: the actor serves WebSocket connections on a port and path (the seed's form).

The actor imports nothing for it: it exports `theater:simple/websocket-server`
(`handle-message(state, (connection-id, websocket-message)) -> (state,
(websocket-response,))`). The node's HTTP gateway holds the port, does the
WebSocket handshake and frames, and hands the worker each connection's
`connect`, every text or binary frame, and its `close`; the response's
messages go back to that connection. This module holds the settings;
docs/websocket.md the design.

Settings: `port` (required), `host` (default 127.0.0.1), `path` (default
"/": the one path that accepts the upgrade), `max_message_bytes` (a bigger
frame closes the connection with 1009), `max_connections` (more are refused
with 503), `timeout_ms` (the actor's answer to one event; past it the
connection is closed with 1011), `hold_ms` (how long an event waits for a
restarting actor before its connection is closed with 1012).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config.fields import Fields
from .base import MAX_LIST_BYTES, FunctionTable, Handler, HostContext

#: The export a websocket-server actor implements.
EXPORT = "theater:simple/websocket-server"


@dataclass(frozen=True)
class WebSocketSettings:
    port: int
    host: str = "127.0.0.1"
    path: str = "/"
    max_message_bytes: int = 1024 * 1024
    max_connections: int = 256
    timeout_ms: int = 10_000
    hold_ms: int = 1000


class WebSocketServer(Handler):
    type = "websocket-server"
    interfaces = ()
    exports = ("websocket-server",)
    via_gateway = True
    summary = "serve WebSocket connections on a port: every event reaches websocket-server.handle-message"

    def parse_settings(self, fields: Fields) -> WebSocketSettings:
        port = fields.int("port", None, minimum=1, maximum=65535)
        if port is None:
            raise fields.where.error(f"{fields.key}.type", "the websocket-server handler needs `port = N` (1 to 65535)",
                                     "websocket-server")
        d = WebSocketSettings(port)
        path = fields.str("path", d.path) or d.path
        if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
            raise fields.error("path", "must be a URL path starting with '/' (no query, fragment or spaces)", path)
        settings = WebSocketSettings(
            port=port,
            host=fields.str("host", d.host) or d.host,
            path=path,
            max_message_bytes=fields.int("max_message_bytes", d.max_message_bytes, minimum=1,
                                         maximum=MAX_LIST_BYTES),
            max_connections=fields.int("max_connections", d.max_connections, minimum=1, maximum=100_000),
            timeout_ms=fields.int("timeout_ms", d.timeout_ms, minimum=1, maximum=600_000),
            hold_ms=fields.int("hold_ms", d.hold_ms, minimum=0, maximum=10_000),
        )
        fields.done()
        return settings

    def functions(self, ctx: HostContext) -> FunctionTable:
        return {}


HANDLER = WebSocketServer()
