"""http-framework: HTTP servers an actor creates and routes at run time (Theater's component era).

The actor imports `theater:simple/http-framework` (create-server, start-server,
register-handler, add-route, ...) and exports `theater:simple/http-handlers`
(`handle-request(state, (handler-id, http-request))`). The servers, handlers
and routes of one incarnation live in this module's `Servers` table; a
started server is a listener of the node's HTTP gateway (asked for through the
worker's `http_listen`), so the port stays open while the actor restarts and
its next incarnation's `start-server` on the same port takes it over.
Requests are routed in the worker (`Servers.route`): no match is a 404, a
path that matches with another method a 405, both without calling the actor.
docs/http.md has the design.

Settings: `ports` (the ports `create-server` may ask for; 0 lets it ask for
none, a free port the system picks; default [0]), `host` (default 127.0.0.1;
a server's config may only name this one), `max_servers` (default 4),
`max_routes` (per server, default 64) and the listener limits of
http-server: `max_body_bytes`, `max_header_bytes`, `timeout_ms`,
`max_connections`, `hold_ms`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ...config.fields import Fields
from .. import fastabi
from .base import FunctionTable, Handler, HostContext, HostFunction, record_of, replay_tagged, same_functions
from .http_server import read_listener_limits

#: The export an http-framework actor implements.
EXPORT = "theater:simple/http-handlers"
#: Where the http-framework functions keep an incarnation's servers in `HostContext.shared`.
SHARED_KEY = "http-framework"
#: The longest route path and handler name an actor may give.
MAX_NAME = 1024


@dataclass(frozen=True)
class HttpFrameworkSettings:
    ports: tuple[int, ...] = (0,)
    host: str = "127.0.0.1"
    max_servers: int = 4
    max_routes: int = 64
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    timeout_ms: int = 10_000
    max_connections: int = 256
    hold_ms: int = 1000


@dataclass
class Server:
    """One server of an actor: what it asked for, and the port it listens on once started."""

    id: int
    port: int            # as asked (0: a free port)
    host: str
    listening: int = 0   # the port it listens on, 0 when stopped
    routes: dict[int, tuple[tuple[str, ...], str, int]] = field(default_factory=dict)  # id -> (segments, method, handler)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/")) if path.strip("/") else ()


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    for i, part in enumerate(pattern):
        if part == "*" and i == len(pattern) - 1:
            return True
        if i >= len(path) or (part != path[i] and not (part.startswith("{") and part.endswith("}"))):
            return False
    return len(pattern) == len(path)


class Servers:
    """The servers, handlers and routes of one actor incarnation (live runs only)."""

    def __init__(self, settings: HttpFrameworkSettings, ctx: HostContext):
        self.settings = settings
        self.ctx = ctx
        self.servers: dict[int, Server] = {}
        self.handlers: dict[int, str] = {}
        self.ids = itertools.count(1)

    def route(self, port: int, method: str, path: str) -> int | tuple[int, str]:
        """The handler id for a request to `port`, or (status, why) when no route takes it."""
        server = next((s for s in self.servers.values() if s.listening == port), None)
        if server is None:
            return 503, f"no server of this actor listens on port {port} now"
        parts = _segments(path)
        methods = []
        for pattern, route_method, handler in server.routes.values():
            if _matches(pattern, parts):
                if route_method in ("*", method):
                    return handler
                methods.append(route_method)
        if methods:
            return 405, f"{method} is not allowed here; allowed: {', '.join(sorted(set(methods)))}"
        return 404, f"no route for {path}"

    # ---- the interface -------------------------------------------------------------------

    def create_server(self, config: Any) -> Any:
        s = self.settings
        if len(self.servers) >= s.max_servers:
            return fastabi.Err(f"this actor has {len(self.servers)} servers, its limit max_servers = {s.max_servers}")
        port = getattr(config, "port", None)
        host = getattr(config, "host", None)
        wanted = 0 if port is None else int(port)
        if wanted not in s.ports:
            allowed = ", ".join("a free port (none)" if p == 0 else str(p) for p in s.ports)
            return fastabi.Err(f"port {'none' if port is None else port} is not allowed: the manifest's ports "
                               f"allow {allowed}")
        if host is not None and host != s.host:
            return fastabi.Err(f"host {host!r} is not allowed: this actor serves on {s.host} only")
        server = Server(next(self.ids), wanted, s.host)
        self.servers[server.id] = server
        return fastabi.Ok(server.id)

    def get_server_info(self, server_id: int) -> Any:
        server = self.servers.get(server_id)
        if server is None:
            return fastabi.Err(f"no server {server_id}")
        return fastabi.Ok(record_of(id=server.id, port=server.listening or server.port, host=server.host,
                                    running=bool(server.listening), routes_count=len(server.routes)))

    def start_server(self, server_id: int) -> Any:
        server = self.servers.get(server_id)
        if server is None:
            return fastabi.Err(f"no server {server_id}")
        if server.listening:
            return fastabi.Ok(server.listening)
        s = self.settings
        answer = self.ctx.services.http_listen({
            "port": server.port, "host": server.host, "max_body_bytes": s.max_body_bytes,
            "max_header_bytes": s.max_header_bytes, "timeout_ms": s.timeout_ms,
            "max_connections": s.max_connections, "hold_ms": s.hold_ms})
        if isinstance(answer, str):
            return fastabi.Err(answer)
        server.listening = answer
        return fastabi.Ok(answer)

    def stop_server(self, server_id: int) -> Any:
        server = self.servers.get(server_id)
        if server is None:
            return fastabi.Err(f"no server {server_id}")
        if server.listening:
            error = self.ctx.services.http_unlisten(server.listening)
            if error:
                return fastabi.Err(error)
            server.listening = 0
        return fastabi.Ok(None)

    def destroy_server(self, server_id: int) -> Any:
        stopped = self.stop_server(server_id)
        if isinstance(stopped, fastabi.Err):
            return stopped
        del self.servers[server_id]
        return fastabi.Ok(None)

    def register_handler(self, name: str) -> Any:
        if len(name) > MAX_NAME:
            return fastabi.Err(f"a handler name of {len(name)} characters is over {MAX_NAME}")
        handler_id = next(self.ids)
        self.handlers[handler_id] = name
        return fastabi.Ok(handler_id)

    def add_route(self, server_id: int, path: str, method: str, handler_id: int) -> Any:
        server = self.servers.get(server_id)
        if server is None:
            return fastabi.Err(f"no server {server_id}")
        if handler_id not in self.handlers:
            return fastabi.Err(f"no handler {handler_id}: register-handler gives the ids")
        if not path.startswith("/") or len(path) > MAX_NAME or any(c in path for c in "?# \t\r\n"):
            return fastabi.Err(f"route path {path[:80]!r} must start with '/' and hold no query, fragment or space")
        pattern = _segments(path)
        if "*" in pattern[:-1]:
            return fastabi.Err(f"route path {path!r}: '*' may only be the last segment")
        if method != "*" and (not method or not method.isascii() or not method.isalpha()):
            return fastabi.Err(f"method {method[:40]!r} is not an HTTP method (or * for any)")
        if len(server.routes) >= self.settings.max_routes:
            return fastabi.Err(f"server {server_id} has {len(server.routes)} routes, the limit max_routes = "
                               f"{self.settings.max_routes}")
        route_id = next(self.ids)
        server.routes[route_id] = (pattern, method.upper() if method != "*" else "*", handler_id)
        return fastabi.Ok(route_id)

    def remove_route(self, route_id: int) -> Any:
        for server in self.servers.values():
            if server.routes.pop(route_id, None) is not None:
                return fastabi.Ok(None)
        return fastabi.Err(f"no route {route_id}")


def _replay_info(data: dict) -> Any:
    value = data.get("result")
    if isinstance(value, dict) and isinstance(value.get("ok"), dict):
        info = value["ok"]
        return fastabi.Ok(record_of(id=info.get("id"), port=info.get("port"), host=info.get("host"),
                                    running=info.get("running"), routes_count=info.get("routes-count")))
    return replay_tagged(data)


class HttpFramework(Handler):
    type = "http-framework"
    interfaces = ("http-framework",)
    exports = ("http-handlers",)
    via_gateway = True
    summary = "HTTP servers the actor creates and routes at run time; requests reach http-handlers.handle-request"

    def parse_settings(self, fields: Fields) -> HttpFrameworkSettings:
        d = HttpFrameworkSettings()
        raw_ports = fields.take("ports")
        if raw_ports is None:
            ports = d.ports
        elif (not isinstance(raw_ports, list) or not raw_ports
              or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535 for p in raw_ports)):
            raise fields.error("ports", "must be a non-empty list of ports (0 to 65535; 0 lets the actor ask for "
                                        "a free port)", raw_ports)
        else:
            ports = tuple(dict.fromkeys(raw_ports))
        settings = HttpFrameworkSettings(
            ports=ports,
            host=fields.str("host", d.host) or d.host,
            max_servers=fields.int("max_servers", d.max_servers, minimum=1, maximum=64),
            max_routes=fields.int("max_routes", d.max_routes, minimum=1, maximum=4096),
            **read_listener_limits(fields, d),
        )
        fields.done()
        return settings

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings = ctx.settings if isinstance(ctx.settings, HttpFrameworkSettings) else HttpFrameworkSettings()
        servers = Servers(settings, ctx)
        if not ctx.replaying:
            ctx.shared[SHARED_KEY] = servers
        table = {
            "create-server": HostFunction(servers.create_server, replay=replay_tagged),
            "get-server-info": HostFunction(servers.get_server_info, replay=_replay_info),
            "start-server": HostFunction(servers.start_server, replay=replay_tagged),
            "stop-server": HostFunction(servers.stop_server, replay=replay_tagged),
            "destroy-server": HostFunction(servers.destroy_server, replay=replay_tagged),
            "register-handler": HostFunction(servers.register_handler, replay=replay_tagged),
            "add-route": HostFunction(servers.add_route, replay=replay_tagged),
            "remove-route": HostFunction(servers.remove_route, replay=replay_tagged),
        }
        return same_functions(table, *self.provides())


HANDLER = HttpFramework()
