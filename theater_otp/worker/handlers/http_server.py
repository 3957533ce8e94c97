"""http-server: the actor serves HTTP on a port (the seed's simple form).

The actor imports nothing for it: it exports `theater:simple/http-server`
(`handle-request(state, (incoming-request,)) -> (state, (http-response,))`),
and the node's HTTP gateway (theater_otp/http/gateway.py) holds the port and
hands it every request. This module holds the settings; docs/http.md the
design.

Settings: `port` (required), `host` (default 127.0.0.1), `max_body_bytes`
(413 beyond; at most what one host call can carry), `max_header_bytes` (431),
`timeout_ms` (408 for a slow client, 504 for a slow actor), `max_connections`
(requests served at once; the rest wait), `hold_ms` (how long a request waits
for a restarting actor before 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ...config.fields import Fields
from .base import MAX_LIST_BYTES, FunctionTable, Handler, HostContext

#: The export an http-server actor implements.
EXPORT = "theater:simple/http-server"


@dataclass(frozen=True)
class HttpServerSettings:
    port: int
    host: str = "127.0.0.1"
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    timeout_ms: int = 10_000
    max_connections: int = 256
    hold_ms: int = 1000


class ListenerLimits(Protocol):
    """The defaults `read_listener_limits` takes (the settings records of http-server and http-framework)."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def hold_ms(self) -> int: ...


def read_listener_limits(fields: Fields, defaults: ListenerLimits) -> dict[str, int]:
    """The limits every HTTP listener takes (http-server and http-framework), read from `fields`
    with `defaults`' values: the one place their names and ranges are written."""
    return {
        "max_body_bytes": fields.int("max_body_bytes", defaults.max_body_bytes, minimum=0,
                                     maximum=MAX_LIST_BYTES),
        "max_header_bytes": fields.int("max_header_bytes", defaults.max_header_bytes, minimum=256,
                                       maximum=60 * 1024),
        "timeout_ms": fields.int("timeout_ms", defaults.timeout_ms, minimum=1, maximum=600_000),
        "max_connections": fields.int("max_connections", defaults.max_connections, minimum=1,
                                      maximum=100_000),
        "hold_ms": fields.int("hold_ms", defaults.hold_ms, minimum=0, maximum=10_000),
    }


class HttpServer(Handler):
    type = "http-server"
    interfaces = ()
    exports = ("http-server",)
    via_gateway = True
    summary = "serve HTTP on a port: every request reaches the actor's http-server.handle-request"

    def parse_settings(self, fields: Fields) -> HttpServerSettings:
        port = fields.int("port", None, minimum=1, maximum=65535)
        if port is None:
            raise fields.where.error(f"{fields.key}.type", "the http-server handler needs `port = N` (1 to 65535)",
                                     "http-server")
        d = HttpServerSettings(port)
        settings = HttpServerSettings(port=port, host=fields.str("host", d.host) or d.host,
                                      **read_listener_limits(fields, d))
        fields.done()
        return settings

    def functions(self, ctx: HostContext) -> FunctionTable:
        return {}


HANDLER = HttpServer()
