"""The node's side of HTTP serving: which actor serves which port, and the gateway process.

`listeners(tree)` reads the tree once: every worker whose manifest grants
`http-server` serves its port at its tree path (a path outlives restarts, so
the gateway never needs telling about one). `port_problems` is what `up`
checks before starting anything: a port that cannot be bound is refused with
the manifest, the port and the process holding it.
"""

from __future__ import annotations

import errno
import socket
from typing import Iterator

import psutil

from ..config.model import ChildSpec, ChildType
from ..http.listener import Listener, ListenerKind
from ..worker.handlers.http_server import HttpServerSettings
from ..worker.handlers.websocket_server import WebSocketSettings


def _workers(spec: ChildSpec, path: str) -> Iterator[tuple[str, ChildSpec]]:
    if spec.type is ChildType.WORKER:
        yield path, spec
    for child in spec.children:
        yield from _workers(child, f"{path}/{child.id}")


def listeners(tree: ChildSpec) -> tuple[Listener, ...]:
    """A listener per worker of the tree whose manifest grants http-server, and one per
    websocket-server grant."""
    found = []
    for path, spec in _workers(tree, tree.id):
        found.extend(of_manifest(spec, path))
    return tuple(found)


def of_manifest(spec: ChildSpec, path: str) -> list[Listener]:
    """The listeners the manifest of worker `spec` at tree path `path` asks for."""
    if spec.manifest is None:
        return []
    found = []
    config = spec.manifest.handler("http-server")
    if config is not None and isinstance(config.settings, HttpServerSettings):
        s = config.settings
        found.append(Listener(port=s.port, host=s.host, target=path, manifest=str(spec.manifest.source),
                              max_body_bytes=s.max_body_bytes, max_header_bytes=s.max_header_bytes,
                              timeout_ms=s.timeout_ms, max_connections=s.max_connections, hold_ms=s.hold_ms))
    config = spec.manifest.handler("websocket-server")
    if config is not None and isinstance(config.settings, WebSocketSettings):
        w = config.settings
        found.append(Listener(port=w.port, host=w.host, target=path, manifest=str(spec.manifest.source),
                              max_body_bytes=w.max_message_bytes, max_header_bytes=16 * 1024,
                              timeout_ms=w.timeout_ms, max_connections=w.max_connections, hold_ms=w.hold_ms,
                              kind=ListenerKind.WEBSOCKET, ws_path=w.path))
    return found


def holder_of(port: int) -> str:
    """Who listens on `port` (pid and name), as far as this user may see."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    try:
                        return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                    except psutil.Error:
                        return f"pid {conn.pid}"
                return "another process"
    except psutil.Error:
        pass
    return "another process"


def port_problems(found: tuple[Listener, ...]) -> list[str]:
    """Each port that two actors claim or that cannot be bound now, as one sentence."""
    problems = []
    seen: dict[int, Listener] = {}
    for lst in found:
        if lst.port in seen:
            problems.append(f"{lst.manifest}: {lst.kind.value} port {lst.port} is also served by "
                            f"{seen[lst.port].target} ({seen[lst.port].manifest}, {seen[lst.port].kind.value})")
            continue
        seen[lst.port] = lst
        with socket.socket(socket.AF_INET6 if ":" in lst.host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((lst.host, lst.port))
            except OSError as exc:
                why = f"in use by {holder_of(lst.port)}" if exc.errno == errno.EADDRINUSE else exc.strerror
                problems.append(f"{lst.manifest}: {lst.kind.value} cannot listen on {lst.host}:{lst.port}: {why}")
    return problems
