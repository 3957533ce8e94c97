"""The HTTP gateway: one process per node that holds every HTTP listener of the tree.

An actor whose manifest grants `http-server` serves a port; the gateway (not
the actor's worker) owns that port, so it stays open while the actor
restarts, and untrusted clients are parsed here, outside the node. Each
request goes to the node as an `http_request` envelope addressed to the
actor's tree path; the node routes it to the worker like any message and
answers with the actor's response, or with why there is none:

* the actor is not running (restarting): the gateway asks again every
  RETRY_MS until the listener's `hold_ms`, then answers 503 + Retry-After;
* the actor was killed while serving it: 503 + Retry-After;
* its handle-request trapped or returned err (a crash of the actor): 500;
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
from typing import Any
from urllib.parse import unquote

import zmq
import zmq.asyncio
from aiohttp import web

from ..proc import child_signals, die_with_parent, flush_and_exit, setup_child_logging
from ..home import Home
from ..protocol import Envelope, ProtocolError, decode, encode
from .listener import GATEWAY_IDENTITY, GatewayConfig, Listener

log = logging.getLogger("theater_otp.http")

#: How often a request for an actor that is not running asks again while it is held.
RETRY_MS = 20
#: aiohttp's own line and field limits: far above any max_header_bytes, only against abuse.
PARSER_LIMIT = 64 * 1024


class _Node:
    """The gateway's DEALER to the node's router: one outstanding future per request."""

    def __init__(self, home: Home):
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, GATEWAY_IDENTITY)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(home.router_endpoint)
        self.corr = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()

    async def ask(self, target: str, body: dict, timeout_s: float) -> dict | None:
        corr = next(self.corr)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting[corr] = future
        try:
            await self.sock.send(encode(Envelope("http_request", "gateway", target, corr, body)))
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self.waiting.pop(corr, None)

    async def receive(self) -> None:
        while True:
            frame = await self.sock.recv()
            try:
                env = decode(frame, peer="node")
            except ProtocolError as exc:
                log.error("gateway: dropped a frame from the node: %s", exc)
                continue
            future = self.waiting.get(env.corr)
            if future is not None and not future.done():
                future.set_result(env.body if isinstance(env.body, dict) else {"error": "malformed answer"})


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


class _Front:
    """The request handler of one listener."""

    def __init__(self, listener: Listener, node: _Node):
        self.listener = listener
        self.node = node
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
        try:
            body = await asyncio.wait_for(_read_body(request, lst.max_body_bytes), lst.timeout_ms / 1000)
        except asyncio.TimeoutError:
            return _plain(408, f"the request body did not arrive within {lst.timeout_ms} ms", Connection="close")
        if body is None:
            return _plain(413, f"request body is over the limit of {lst.max_body_bytes} bytes", Connection="close")
        raw_path = request.raw_path
        path, _, query = raw_path.partition("?")
        record = {"method": request.method, "uri": raw_path, "path": unquote(path, errors="replace"),
                  "query": query, "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
                  "body": body if body or request.can_read_body else None}
        async with self.slots:
            return await self._serve(record)

    async def _serve(self, record: dict[str, Any]) -> web.StreamResponse:
        lst = self.listener
        held_until = time.monotonic() + lst.hold_ms / 1000
        while True:
            answer = await self.node.ask(lst.target, record, lst.timeout_ms / 1000)
            if answer is None:
                return _plain(504, f"{lst.target} did not answer within {lst.timeout_ms} ms")
            if "ok" in answer:
                return _response(answer["ok"], lst.target)
            if answer.get("retry") and time.monotonic() < held_until:
                await asyncio.sleep(RETRY_MS / 1000)
                continue
            if answer.get("retry") or answer.get("exit") in ("killed", "shutdown"):
                return _plain(503, f"{lst.target} is restarting", **{"Retry-After": "1"})
            return _plain(500, f"{lst.target} failed to answer: {answer.get('error', 'unknown error')}")


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
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.inner.resume_writing()  # type: ignore[attr-defined]


async def serve(cfg: GatewayConfig) -> None:
    node = _Node(cfg.home)
    loop = asyncio.get_running_loop()
    receiver = asyncio.create_task(node.receive())
    servers = []
    for lst in cfg.listeners:
        server = web.Server(_Front(lst, node), max_line_size=PARSER_LIMIT, max_field_size=PARSER_LIMIT,
                            keepalive_timeout=max(1.0, lst.timeout_ms / 1000), lingering_time=1.0)
        timeout_s = lst.timeout_ms / 1000
        servers.append(await loop.create_server(lambda s=server, t=timeout_s: _HeaderGuard(s(), t),
                                                host=lst.host, port=lst.port, reuse_address=True))
        log.info("http gateway: %s:%d serves %s", lst.host, lst.port, lst.target)
    await node.sock.send(encode(Envelope("http_ready", "gateway", "node", 0,
                                         {"ports": [lst.port for lst in cfg.listeners]})))
    try:
        await receiver
    finally:
        for s in servers:
            s.close()
        receiver.cancel()
        node.close()


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


__all__ = ["GATEWAY_IDENTITY", "GatewayConfig", "Listener", "gateway_main", "serve"]
