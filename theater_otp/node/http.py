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
from typing import Callable, Iterator

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


class HttpListeners:
    """The node's table of HTTP listeners: which port serves which tree path, and which worker
    holds each http-framework port now.

    A port belongs to a tree path, not to a worker: it stays open while the path's actor
    restarts. Another path may take a port only when no worker runs at the owning path.
    """

    def __init__(self, initial: tuple[Listener, ...] = ()):
        self.by_port: dict[int, Listener] = {lst.port: lst for lst in initial}
        #: http-framework port -> identity of the worker whose start-server holds it
        self.claims: dict[int, bytes] = {}
        self.targets: frozenset[str] = frozenset(lst.target for lst in initial)

    def all(self) -> tuple[Listener, ...]:
        return tuple(self.by_port.values())

    def add(self, lst: Listener, identity: bytes | None = None) -> None:
        self.by_port[lst.port] = lst
        if identity is not None:
            self.claims[lst.port] = identity
        self.targets = frozenset(x.target for x in self.by_port.values())

    def remove(self, port: int) -> None:
        self.by_port.pop(port, None)
        self.claims.pop(port, None)
        self.targets = frozenset(x.target for x in self.by_port.values())

    def framework_port(self, path: str, identity: bytes, asked: int, running: Callable[[str], bool],
                       alive: Callable[[bytes], bool]) -> Listener | str | None:
        """For a start-server of the worker `identity` at `path` asking for port `asked` (0: any):
        a listener it takes over (kept from its path's earlier incarnation), why it may not have
        the port, or None when a new listener is to be opened."""
        if asked == 0:
            for kept in self.by_port.values():
                holder = self.claims.get(kept.port)
                if (kept.target == path and kept.kind is ListenerKind.FRAMEWORK and kept.asked_port == 0
                        and (holder is None or not alive(holder))):
                    self.claims[kept.port] = identity
                    return kept
            return None
        lst = self.by_port.get(asked)
        if lst is None:
            return None
        holder = self.claims.get(asked)
        if lst.target == path and lst.kind is ListenerKind.FRAMEWORK:
            if holder is not None and holder != identity and alive(holder):
                return f"port {asked} is already served by another server of this actor"
            self.claims[asked] = identity
            return lst
        if lst.target != path and not running(lst.target):  # its path is gone: the port is free to take
            self.remove(asked)
            return None
        return f"port {asked} is already served by {lst.target} ({lst.kind.value})"

    def for_child(self, found: list[Listener], running: Callable[[str], bool]) -> tuple[list[Listener], str | None]:
        """The listeners a worker started after `up` needs opened (not open for its path yet), or
        why it cannot have its ports."""
        new = []
        for lst in found:
            have = self.by_port.get(lst.port)
            if have is not None and have.target == lst.target:
                continue
            if have is not None and running(have.target):
                return [], f"{lst.manifest}: {lst.kind.value} port {lst.port} is already served by {have.target}"
            problems = port_problems((lst,)) if have is None else []
            if problems:
                return [], problems[0]
            new.append(lst)
        return new, None
