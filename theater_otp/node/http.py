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
from ..http.listener import Listener
from ..worker.handlers.http_server import HttpServerSettings


def _workers(spec: ChildSpec, path: str) -> Iterator[tuple[str, ChildSpec]]:
    if spec.type is ChildType.WORKER:
        yield path, spec
    for child in spec.children:
        yield from _workers(child, f"{path}/{child.id}")


def listeners(tree: ChildSpec) -> tuple[Listener, ...]:
    """A listener per worker of the tree whose manifest grants http-server."""
    found = []
    for path, spec in _workers(tree, tree.id):
        config = spec.manifest.handler("http-server") if spec.manifest else None
        if config is None or not isinstance(config.settings, HttpServerSettings):
            continue
        s = config.settings
        found.append(Listener(port=s.port, host=s.host, target=path, manifest=str(spec.manifest.source),
                              max_body_bytes=s.max_body_bytes, max_header_bytes=s.max_header_bytes,
                              timeout_ms=s.timeout_ms, max_connections=s.max_connections, hold_ms=s.hold_ms))
    return tuple(found)


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
            problems.append(f"{lst.manifest}: http-server port {lst.port} is also served by {seen[lst.port].target} "
                            f"({seen[lst.port].manifest})")
            continue
        seen[lst.port] = lst
        with socket.socket(socket.AF_INET6 if ":" in lst.host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((lst.host, lst.port))
            except OSError as exc:
                why = f"in use by {holder_of(lst.port)}" if exc.errno == errno.EADDRINUSE else exc.strerror
                problems.append(f"{lst.manifest}: http-server cannot listen on {lst.host}:{lst.port}: {why}")
    return problems
