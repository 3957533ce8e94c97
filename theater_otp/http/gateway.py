"""The HTTP gateway: one process per node that holds every HTTP and WebSocket listener.

An actor whose manifest grants `http-server` or `websocket-server` serves a
port, and one granted `http-framework` opens ports at run time (the node's
`listen` command); the gateway (not the actor's worker) owns each port, so it
stays open while the actor restarts, and untrusted clients are parsed here,
outside the node and the worker. Requests go straight to the serving worker: the gateway binds a
ROUTER (`gateway.sock`) that each http-serving worker connects to, and the
node tells the gateway which worker serves which tree path (`route` when the
worker is ready, `unroute` with its exit when it ends). The node is not on a
request's path. What a client gets when there is no response:

* no worker serves the path now (restarting, not started yet): the gateway
  looks again every RETRY_MS until the listener's `hold_ms`, then answers
  503 + Retry-After;
* the worker ended while the request was with it: 503 + Retry-After if it was
  killed or stopped, 500 if it crashed; a crash in its handle-request answers
  500 itself (the worker answers before it ends);
* no answer within `timeout_ms`: 504.

Client limits, per listener: a body over `max_body_bytes` is 413, headers
over `max_header_bytes` 431, a body or a first request line and headers that
take longer than `timeout_ms` to arrive 408, at most `max_connections`
requests are served at once (the rest wait). aiohttp's low-level server does
the HTTP (keep-alive included).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Callable, Iterator, Mapping, NotRequired, TypedDict, cast
from urllib.parse import unquote

import zmq
from aiohttp import WSCloseCode, WSMsgType, web

from ..home import Home
from ..proc import child_signals, die_with_parent, flush_and_exit, setup_child_logging
from ..protocol import NOBLOCK, SNDMORE, Envelope, ProtocolError, decode, encode, recv_frames
from .listener import GatewayConfig, Listener, ListenerKind

log = logging.getLogger("theater_otp.http")

#: How often a request for a path no worker serves now looks again while it is held.
RETRY_MS = 20
#: aiohttp's own line and field limits: far above any max_header_bytes, only against abuse.
PARSER_LIMIT = 64 * 1024
#: After the node says a worker ended, how long its own last answers may still arrive (a crashing
#: handle-request answers 500 just before the worker exits) before what it held is failed.
LATE_ANSWER_S = 0.05


# plain ints: zmq's enum members cost an enum operation on every use in the hot loop
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_SNDMORE_NOBLOCK = SNDMORE | NOBLOCK


def _settle(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reader(loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes],
            on_frames: Callable[[list[bytes]], None]) -> Callable[[], None]:
    """Call `on_frames` for every message `sock` receives, from the event loop (no zmq.asyncio:
    a plain socket whose descriptor the loop watches costs a fraction of its futures). Returns
    the drain function: zmq's descriptor is edge-triggered and a send can consume the edge, so
    the caller runs it after each send."""

    def drain() -> None:
        # ZMQ_EVENTS is an int option; pyzmq types every getsockopt as int | bytes
        while cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
            on_frames(recv_frames(sock))

    loop.add_reader(sock.fileno(), drain)  # fileno(): ZMQ_FD, typed
    loop.call_soon(drain)
    return drain


class HttpRequest(TypedDict):
    """An HTTP request as the gateway hands it to the serving worker (docs/http.md)."""

    method: str
    uri: str
    path: str
    query: str
    headers: list[list[str]]
    body: bytes | None
    #: an http-framework listener's port, so the worker finds the server
    port: NotRequired[int]


class Links:
    """The gateway's sockets: a DEALER to the node (routes in, `http_ready` out) and the ROUTER the
    serving workers connect to (requests out, answers in). One future per request in flight."""

    def __init__(self, home: Home, identity: bytes):
        self.ctx = zmq.Context()
        self.node = self.ctx.socket(zmq.DEALER)
        self.node.setsockopt(zmq.IDENTITY, identity)
        self.node.setsockopt(zmq.LINGER, 0)
        self.node.connect(home.router_endpoint)
        self.workers = self.ctx.socket(zmq.ROUTER)
        self.workers.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a worker not connected (yet): an error, not a drop
        self.workers.setsockopt(zmq.LINGER, 0)
        self.workers.bind(home.gateway_endpoint)
        self.corr = itertools.count(1)
        #: corr -> (future, worker identity)
        self.waiting: dict[int, tuple[asyncio.Future, bytes]] = {}
        #: tree path -> identity of the worker serving it now
        self.routes: dict[str, bytes] = {}
        #: the node's `listen` / `unlisten` commands (ports opened and closed while running)
        self.on_listen: Callable[[Envelope], None] | None = None
        self._drain_node: Callable[[], None] = lambda: None
        self._drain_workers: Callable[[], None] = lambda: None
        self._drain_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._drain_node = _reader(loop, self.node, self._from_node)
        self._drain_workers = _reader(loop, self.workers, self._from_worker)

    def close(self) -> None:
        self.node.close(linger=0)
        self.workers.close(linger=0)
        self.ctx.term()

    def tell_node(self, env: Envelope) -> None:
        self.node.send(encode(env), zmq.NOBLOCK)
        asyncio.get_running_loop().call_soon(self._drain_node)

    async def ask(self, target: str, body: Mapping[str, object], timeout_s: float, kind: str = "http_request") -> dict | None:
        """The serving worker's answer for `target`: {"ok": response}, {"error", "exit"}, or
        {"retry": True} when no worker serves it now; None after `timeout_s`."""
        ident = self.routes.get(target)
        if ident is None:
            return {"retry": True}
        corr = next(self.corr)
        try:
            frame = encode(Envelope(kind, "gateway", target, corr, body))
            self.workers.send(ident, _SNDMORE_NOBLOCK)  # EHOSTUNREACH here leaves nothing half-sent
            self.workers.send(frame, NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH: not connected yet (or gone); EAGAIN: its queue is full
            return {"retry": True}
        loop = asyncio.get_running_loop()
        self._after_send(loop)
        future: asyncio.Future = loop.create_future()
        self.waiting[corr] = (future, ident)
        timer = loop.call_later(timeout_s, _settle, future, None)  # cheaper than asyncio.wait_for
        try:
            return await future
        finally:
            timer.cancel()
            self.waiting.pop(corr, None)

    async def ask_held(self, target: str, body: Mapping[str, object], timeout_s: float, hold_s: float,
                       kind: str = "http_request") -> dict | None:
        """As `ask`, but while no worker serves `target` (restarting, not started yet) it looks
        again every RETRY_MS for up to `hold_s` before it answers {"retry": True}."""
        held_until = time.monotonic() + hold_s
        while True:
            answer = await self.ask(target, body, timeout_s, kind)
            if answer is None or not answer.get("retry") or time.monotonic() >= held_until:
                return answer
            await asyncio.sleep(RETRY_MS / 1000)

    def _after_send(self, loop: asyncio.AbstractEventLoop) -> None:
        """Look at the workers' socket once more this loop turn (a send can consume zmq's edge)."""
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop.call_soon(self._drain_after_send)

    def _drain_after_send(self) -> None:
        self._drain_scheduled = False
        self._drain_workers()

    def _from_worker(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            log.error("gateway: dropped a %d-part message from a worker", len(frames))
            return
        ident, frame = frames
        try:
            env = decode(frame, peer="worker")
        except ProtocolError as exc:
            log.error("gateway: dropped a frame from a worker: %s", exc)
            return
        waiting = self.waiting.get(env.corr)
        if waiting is not None and waiting[1] == ident and not waiting[0].done():
            waiting[0].set_result(env.body if isinstance(env.body, dict) else {"error": "malformed answer"})

    def _from_node(self, frames: list[bytes]) -> None:
        try:
            env = decode(frames[-1], peer="node")
        except ProtocolError as exc:
            log.error("gateway: dropped a frame from the node: %s", exc)
            return
        body = env.body if isinstance(env.body, dict) else {}
        if env.kind in ("listen", "unlisten"):
            if self.on_listen is not None:
                self.on_listen(env)
            return
        target, ident = body.get("target"), body.get("identity")
        if not isinstance(target, str) or not isinstance(ident, bytes):
            log.error("gateway: dropped %r from the node: no target and identity", env.kind)
        elif env.kind == "route":
            self.routes[target] = ident
        elif env.kind == "unroute":
            if self.routes.get(target) == ident:
                del self.routes[target]
            answer = {"error": f"{target} {body.get('reason', 'ended')} before answering",
                      "exit": str(body.get("exit", "abnormal"))}
            asyncio.get_running_loop().call_later(LATE_ANSWER_S, self._fail, ident, answer)
        else:
            log.error("gateway: dropped unknown %r from the node", env.kind)

    def _fail(self, ident: bytes, answer: dict) -> None:
        """What the ended worker `ident` still held gets `answer`."""
        for future, owner in list(self.waiting.values()):
            if owner == ident and not future.done():
                future.set_result(answer)


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


class _Front:
    """The request handler of one listener."""

    def __init__(self, listener: Listener, links: Links):
        self.listener = listener
        self.links = links
        #: an http-framework listener's port: sent with each request, so the worker finds the server
        self.port: int | None = None
        self.slots = asyncio.Semaphore(listener.max_connections)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        lst = self.listener
        header_bytes = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
        if header_bytes > lst.max_header_bytes:
            return _plain(431, f"request headers are {header_bytes} bytes, over the limit of {lst.max_header_bytes}",
                          Connection="close")
        length = request.content_length
        if length is not None and length > lst.max_body_bytes:
            return _plain(413, f"request body of {length} bytes is over the limit of {lst.max_body_bytes}",
                          Connection="close")
        body: bytes | None = None
        if request.body_exists:  # most requests have none: no read, no timer
            try:
                body = await asyncio.wait_for(_read_body(request, lst.max_body_bytes), lst.timeout_ms / 1000)
            except asyncio.TimeoutError:
                return _plain(408, f"the request body did not arrive within {lst.timeout_ms} ms", Connection="close")
            if body is None:
                return _plain(413, f"request body is over the limit of {lst.max_body_bytes} bytes",
                              Connection="close")
        raw_path = request.raw_path
        path, _, query = raw_path.partition("?")
        record: HttpRequest = {
            "method": request.method, "uri": raw_path, "path": unquote(path, errors="replace"), "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers], "body": body}
        if self.port is not None:
            record["port"] = self.port
        async with self.slots:
            return await self._serve(record)

    async def _serve(self, record: HttpRequest) -> web.StreamResponse:
        lst = self.listener
        answer = await self.links.ask_held(lst.target, record, lst.timeout_ms / 1000, lst.hold_ms / 1000)
        if answer is None:
            return _plain(504, f"{lst.target} did not answer within {lst.timeout_ms} ms")
        if "ok" in answer:
            return _response(answer["ok"], lst.target)
        if answer.get("retry") or answer.get("exit") in ("killed", "shutdown"):
            return _plain(503, f"{lst.target} is restarting", **{"Retry-After": "1"})
        return _plain(500, f"{lst.target} failed to answer: {answer.get('error', 'unknown error')}")


class _WsFront:
    """The handler of one WebSocket listener: the upgrade at its path, then every event of each
    connection to the serving worker, one at a time and in order, and its answer back."""

    def __init__(self, listener: Listener, links: Links, ids: Iterator[int]):
        self.listener = listener
        self.links = links
        self.ids = ids
        self.open = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        lst = self.listener
        if request.path != lst.ws_path:
            return _plain(404, f"this port serves WebSocket at {lst.ws_path} only")
        ws = web.WebSocketResponse(max_msg_size=lst.max_body_bytes, autoping=True)
        if not ws.can_prepare(request).ok:
            return _plain(426, f"{lst.ws_path} is a WebSocket endpoint: upgrade to websocket",
                          Upgrade="websocket", Connection="Upgrade")
        if self.open >= lst.max_connections:
            return _plain(503, f"{lst.target} has {self.open} WebSocket connections, its limit max_connections",
                          **{"Retry-After": "1"})
        self.open += 1
        try:
            await ws.prepare(request)
            conn = next(self.ids)
            if await self._event(ws, conn, {"ty": "connect"}):
                await self._frames(ws, conn)
            if not ws.closed:
                await ws.close()
        finally:
            self.open -= 1
        return ws

    async def _frames(self, ws: web.WebSocketResponse, conn: int) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                event: dict[str, Any] = {"ty": "text", "text": msg.data}
            elif msg.type == WSMsgType.BINARY:
                event = {"ty": "binary", "data": msg.data}
            else:  # aiohttp answers pings itself; errors end the loop
                continue
            if not await self._event(ws, conn, event):
                return
        if ws.close_code != WSCloseCode.MESSAGE_TOO_BIG:  # the client closed: the actor hears it
            await self._event(ws, conn, {"ty": "close"}, answer_back=False)

    async def _event(self, ws: web.WebSocketResponse, conn: int, event: dict, answer_back: bool = True) -> bool:
        """`event` of connection `conn` to the actor and its messages back; False when the
        connection is to end (the actor closed it, crashed, or did not answer)."""
        lst = self.listener
        answer = await self.links.ask_held(lst.target, {"connection": conn, "message": event},
                                           lst.timeout_ms / 1000, lst.hold_ms / 1000, kind="ws_message")
        if not answer_back:
            return False
        if answer is None:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"the actor did not answer in time")
            return False
        if "ok" not in answer:
            restarting = answer.get("retry") or answer.get("exit") in ("killed", "shutdown")
            await ws.close(code=WSCloseCode.SERVICE_RESTART if restarting else WSCloseCode.INTERNAL_ERROR,
                           message=(b"the actor is restarting" if restarting else b"the actor failed"))
            return False
        for out in answer["ok"] if isinstance(answer["ok"], list) else []:
            ty = out.get("ty") if isinstance(out, dict) else None
            if ty == "text" and isinstance(out.get("text"), str):
                await ws.send_str(out["text"])
            elif ty == "binary" and isinstance(out.get("data"), bytes):
                await ws.send_bytes(out["data"])
            elif ty == "ping":
                await ws.ping(out.get("data") or b"")
            elif ty == "pong":
                await ws.pong(out.get("data") or b"")
            elif ty == "close":
                await ws.close()
                return False
        return True


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body (to the end of its Content-Length or chunks), or None past `limit` bytes."""
    chunks, total = [], 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _response(value: Any, target: str) -> web.StreamResponse:
    """The actor's http-response as a real one; anything invalid is the actor's fault: 500."""
    if not isinstance(value, dict):
        return _plain(500, f"{target} answered something that is not an HTTP response")
    status, headers, body = value.get("status"), value.get("headers") or [], value.get("body")
    if not isinstance(status, int) or not 100 <= status <= 599:
        return _plain(500, f"{target} answered with an invalid status {status!r}")
    response = web.Response(status=status, body=body if isinstance(body, bytes) else b"")
    for pair in headers:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair)
                or any(c in pair[0] + pair[1] for c in "\r\n\x00") or not pair[0]):
            return _plain(500, f"{target} answered with an invalid header {pair!r}")
        if pair[0].lower() not in ("content-length", "transfer-encoding", "connection"):
            response.headers.add(pair[0], pair[1])
    return response


class _HeaderGuard(asyncio.Protocol):
    """In front of aiohttp's protocol: a connection whose first request line and headers have not
    all arrived within `timeout_s` of its first byte is answered 408 and closed (a client sending
    one byte a second cannot hold a connection). After that first header block the guard stands
    aside: bodies are timed by the handler, idle keep-alive connections by aiohttp."""

    def __init__(self, inner: asyncio.Protocol, timeout_s: float):
        self.inner = inner
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.tail = b""          # the last bytes seen, to find a header block's end across packets
        self.guarding = True
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.guarding:
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
                self.guarding = False
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
            else:
                self.tail = seen[-3:]
                if self.timer is None:
                    self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._too_slow)
        self.inner.data_received(data)

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Ports:
    """The gateway's open ports: the tree's at start, and those the node opens and closes later
    (http-framework servers, children started after `up`)."""

    def __init__(self, links: Links):
        self.links = links
        self.servers: dict[int, asyncio.AbstractServer] = {}
        self.connection_ids = itertools.count(1)

    async def open(self, lst: Listener) -> int:
        """Listen as `lst` says: the port (the system's pick when `lst.port` is 0). OSError if not."""
        if lst.kind is ListenerKind.WEBSOCKET:
            front: Any = _WsFront(lst, self.links, self.connection_ids)
        else:
            front = _Front(lst, self.links)
        server = web.Server(front, max_line_size=PARSER_LIMIT, max_field_size=PARSER_LIMIT,
                            keepalive_timeout=max(1.0, lst.timeout_ms / 1000), lingering_time=1.0, access_log=None)
        timeout_s = lst.timeout_ms / 1000
        listening = await asyncio.get_running_loop().create_server(
            lambda: _HeaderGuard(server(), timeout_s), host=lst.host, port=lst.port, reuse_address=True)
        port = listening.sockets[0].getsockname()[1]
        if lst.kind is ListenerKind.FRAMEWORK:
            front.port = port
        self.servers[port] = listening
        log.info("http gateway: %s:%d serves %s (%s)", lst.host, port, lst.target, lst.kind.value)
        return port

    def close(self, port: int) -> None:
        server = self.servers.pop(port, None)
        if server is not None:
            server.close()
            log.info("http gateway: %d closed", port)

    def close_all(self) -> None:
        for port in list(self.servers):
            self.close(port)

    def command(self, env: Envelope) -> None:
        """`listen` (answered `listened` with the port or the error) or `unlisten` from the node."""
        body = env.body if isinstance(env.body, dict) else {}
        if env.kind == "unlisten":
            if isinstance(body.get("port"), int):
                self.close(body["port"])
            return
        asyncio.get_running_loop().create_task(self._listen(env.corr, body))

    async def _listen(self, corr: int, body: dict) -> None:
        try:
            lst = Listener.from_plain(body)
        except (KeyError, TypeError, ValueError) as exc:
            self.links.tell_node(Envelope("listened", "gateway", "node", corr, {"error": f"malformed listen: {exc}"}))
            return
        try:
            port = await self.open(lst)
        except OSError as exc:  # in use, not allowed, no such address: the node tells whoever asked
            self.links.tell_node(Envelope("listened", "gateway", "node", corr, {"error": exc.strerror or str(exc)}))
            return
        self.links.tell_node(Envelope("listened", "gateway", "node", corr, {"port": port}))


async def serve(cfg: GatewayConfig) -> None:
    links = Links(cfg.home, cfg.identity)
    loop = asyncio.get_running_loop()
    ports = Ports(links)
    links.on_listen = ports.command
    links.start(loop)
    try:
        for lst in cfg.listeners:
            await ports.open(lst)
        links.tell_node(Envelope("http_ready", "gateway", "node", 0, {"ports": sorted(ports.servers)}))
        await asyncio.Event().wait()  # until cancelled (the tests) or killed (the node)
    finally:
        ports.close_all()
        loop.remove_reader(links.node.fileno())
        loop.remove_reader(links.workers.fileno())
        links.close()


def gateway_main(cfg: GatewayConfig) -> None:
    """Entry point of the gateway process (a child of the node's forkserver)."""
    die_with_parent(cfg.node_pid)
    child_signals()
    setup_child_logging(cfg.home.log_file, "http-gateway")
    code = 0
    try:
        asyncio.run(serve(cfg))
    except OSError as exc:  # a port that cannot be bound: the node logs it and the tree's `up` check names it
        log.error("http gateway: %s", exc)
        code = 2
    except Exception:  # the gateway itself failed: logged, the node starts a new one
        log.exception("http gateway failed")
        code = 1
    flush_and_exit(code)


__all__ = ["GatewayConfig", "Links", "Listener", "Ports", "gateway_main", "serve"]
