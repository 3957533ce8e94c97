"""The node's link to the HTTP gateway process: started when a port must be served, told who serves it.

The gateway (http/gateway.py) holds the ports and talks to the serving workers
directly; the node only starts it, restarts it, tells it which worker serves
each tree path (`route` / `unroute`) and asks it to open or close
http-framework ports (`listen` / `unlisten`) for the actors that ask.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import zmq

from ..config.model import Backoff
from ..home import Home
from ..http.listener import GatewayConfig, Listener, ListenerKind
from ..protocol import Envelope, encode
from ..protocol.trust import RunSecrets
from .http import HttpListeners
from .launcher import ChildProcess, Launcher
from .loop import Loop
from .mail import Mail
from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: A gateway that could not bind a port (taken by another process after `up`) is started again
#: after a pause doubling from 0.5 s up to 10 s.
GATEWAY_RETRY = Backoff(initial_ms=500, max_ms=10_000)

#: A worker waiting for a port: (its router identity, the corr its call waits on)
Waiter = tuple[bytes, int]


class GatewayLink:
    """The gateway process, whether it is ready, and the ports asked of it."""

    def __init__(self, loop: Loop, launcher: Launcher, home: Home, secrets: RunSecrets, router: zmq.Socket,
                 registry: Registry, mail: Mail, listeners: HttpListeners,
                 on_change: Callable[[], None], give_up: Callable[[str], None], stopping: Callable[[], bool]):
        self.loop = loop
        self.launcher = launcher
        self.home = home
        self.secrets = secrets
        self.router = router
        self.registry = registry
        self.mail = mail
        #: which port serves which tree path (node/http.py)
        self.http = listeners
        #: called when the gateway becomes ready (`up` may be waiting for it)
        self.on_change = on_change
        #: ends the node with an error (a gateway that cannot bind while `up` waits)
        self.give_up = give_up
        #: whether the node is stopping (nothing is started again then)
        self.stopping = stopping
        self.process: ChildProcess | None = None
        self.ready = False
        #: starts in a row that could not bind the tree's ports (a pause before the next)
        self.failures = 0
        #: `listen`s sent and not answered: corr -> (listener, waiting worker or None); those made
        #: before the gateway is ready wait in `queued`
        self.opening: dict[int, tuple[Listener, Waiter | None]] = {}
        self.queued: list[tuple[Listener, Waiter | None]] = []

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        self.process = self.launcher.start_gateway(GatewayConfig(self.home, os.getpid(), self.http.all(),
                                                                 self.secrets.gateway))
        self.loop.watch(self.process.sentinel)

    def on_exit(self, up_waiting: bool) -> None:
        """A gateway that ended is started again (its ports reopen). One that could not bind exits
        2: while `up` waits, `up` fails with that; after, it is tried again after a growing pause."""
        assert self.process is not None
        self.ready = False
        for lst, waiter in self.opening.values():  # asked of the gateway that ended: asked again
            self.queued.append((lst, waiter))
        self.opening.clear()
        code = self.process.exitcode()
        self.loop.unwatch(self.process.sentinel)
        self.process.release()
        self.process = None
        if self.stopping():
            return
        if code == 2:
            if up_waiting:
                self.give_up("the HTTP gateway could not open the tree's ports (node.log says which and why)")
                return
            self.failures += 1
            delay = GATEWAY_RETRY.delay_s(self.failures - 1)
            log.error("http gateway could not open its ports (%d time(s) in a row; the line above says why): "
                      "trying again in %.1f s", self.failures, delay)
            self.loop.after(delay, self._restart)
            return
        log.error("http gateway exited (%s): starting a new one", code)
        self.start()

    def _restart(self) -> None:
        if self.process is None and not self.stopping():
            self.start()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill_and_reap()
            self.process = None

    def send(self, env: Envelope) -> None:
        if not self.ready:  # it learns every route when it says it is ready
            return
        try:
            self.router.send_multipart([self.secrets.gateway, encode(env)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the gateway is gone: its clients' connections went with it
            log.warning("could not answer the http gateway: %s", exc)

    def on_message(self, env: Envelope) -> None:
        """The gateway is up (a new one after a crash too): it learns which worker serves each path,
        and the ports asked for meanwhile are opened. Or: it opened (or could not open) a port."""
        if env.kind == "listened":
            self._listened(env)
            return
        if env.kind != "http_ready":
            log.error("dropped %r from the http gateway", env.kind)
            return
        log.info("http gateway ready: ports %s", (env.body or {}).get("ports") if isinstance(env.body, dict) else "?")
        self.ready = True
        self.failures = 0
        for path in self.http.targets:
            handle = self.registry.workers.get(path)
            if handle is not None and handle.ready:
                self.route(handle)
        queued, self.queued = self.queued, []
        for lst, waiter in queued:
            self.open(lst, waiter)
        self.on_change()

    # ---- routes --------------------------------------------------------------------------------

    def serves(self, path: str) -> bool:
        return path in self.http.targets

    def route(self, handle: WorkerHandle) -> None:
        """Tell the gateway that `handle`'s worker serves requests for its tree path now."""
        self.send(Envelope("route", "node", "gateway", 0, {"target": handle.path, "identity": handle.identity}))

    def unroute(self, handle: WorkerHandle, exit_kind: str, reason: str) -> None:
        """`handle` exited: the requests it held are answered (503 while restarting, 500 for a crash)."""
        self.send(Envelope("unroute", "node", "gateway", 0, {"target": handle.path, "identity": handle.identity,
                                                              "exit": exit_kind, "reason": f"exited ({reason})"}))

    # ---- ports ---------------------------------------------------------------------------------

    def open(self, lst: Listener, waiter: Waiter | None) -> None:
        """Ask the gateway to open `lst` (started first if none runs); `waiter` hears the port or the error."""
        if self.process is None:
            self.start()
        if not self.ready:
            self.queued.append((lst, waiter))
            return
        corr = self.loop.next_corr()
        self.opening[corr] = (lst, waiter)
        self.send(Envelope("listen", "node", "gateway", corr, lst.to_plain()))

    def _listened(self, env: Envelope) -> None:
        opening = self.opening.pop(env.corr, None)
        if opening is None:
            return
        lst, waiter = opening
        body = env.body if isinstance(env.body, dict) else {}
        port = body.get("port")
        handle = self.registry.by_identity.get(waiter[0]) if waiter is not None else self.registry.workers.get(lst.target)
        if not isinstance(port, int):
            why = f"cannot listen on {lst.host}:{lst.asked_port or lst.port}: {body.get('error', 'no answer')}"
            log.error("%s: %s", lst.target, why)
            if waiter is not None and handle is not None:
                self.mail.reply(handle, waiter[1], {"error": why})
            return
        lst = dataclasses.replace(lst, port=port)
        self.http.add(lst, waiter[0] if waiter is not None else None)
        log.info("%s serves %s on %s:%d", lst.target, lst.kind.value, lst.host, port)
        if handle is not None and handle.ready:
            self.route(handle)
        if waiter is not None and handle is not None:
            self.mail.reply(handle, waiter[1], {"ok": port})

    def on_listen(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """An http-framework start-server: a port kept for this path, a new one, or why not."""
        body = env.body if isinstance(env.body, dict) else {}
        try:
            asked = body["port"]
            if not isinstance(asked, int) or not 0 <= asked <= 65535 or not isinstance(body["host"], str):
                raise TypeError("port and host")
            lst = Listener(port=asked, host=body["host"], target=handle.path, manifest=str(handle.spec.manifest.source
                           if handle.spec.manifest else handle.path), max_body_bytes=int(body["max_body_bytes"]),
                           max_header_bytes=int(body["max_header_bytes"]), timeout_ms=int(body["timeout_ms"]),
                           max_connections=int(body["max_connections"]), hold_ms=int(body["hold_ms"]),
                           kind=ListenerKind.FRAMEWORK, asked_port=asked)
        except (KeyError, TypeError, ValueError) as exc:
            self.mail.reply(handle, env.corr, {"error": f"malformed http_listen: {exc}"})
            return
        kept = self.http.framework_port(handle.path, handle.identity, asked,
                                        running=lambda p: p in self.registry.workers,
                                        alive=lambda ident: ident in self.registry.by_identity)
        if isinstance(kept, str):
            self.mail.reply(handle, env.corr, {"error": kept})
        elif kept is not None:
            if handle.ready:
                self.route(handle)
            self.mail.reply(handle, env.corr, {"ok": kept.port})
        else:
            self.open(lst, (handle.identity, env.corr))

    def on_unlisten(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """An http-framework stop-server: the port closes (only the path that serves it may)."""
        port = env.body.get("port") if isinstance(env.body, dict) else None
        lst = self.http.by_port.get(port) if isinstance(port, int) else None
        if lst is None or lst.target != handle.path or lst.kind is not ListenerKind.FRAMEWORK:
            answer: dict = {"error": f"this actor serves no http-framework port {port}"}
        else:
            self.http.remove(lst.port)
            self.send(Envelope("unlisten", "node", "gateway", 0, {"port": lst.port}))
            answer = {"ok": lst.port}
        self.mail.reply(handle, env.corr, answer)


__all__ = ["GATEWAY_RETRY", "GatewayLink", "Waiter"]
