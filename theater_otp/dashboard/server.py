"""The dashboard's HTTP side (aiohttp): the page, its assets, the JSON and Server-Sent Events API.

Every request needs the token (`?token=` or the `X-Dashboard-Token` header), else 403. Routes:

| route | what |
|---|---|
| `GET /` | the page (static/index.html, with the token in its asset links) |
| `GET /static/{app.js,app.css}` | its assets, served from the package (no CDN) |
| `GET /api/tree` | the node's `tree` answer and the restart latencies, JSON |
| `GET /api/stream` | SSE: `tree` (the tree, each time a supervisor chain records something, and at least every `TREE_EVERY_S`), `latency` (each restart) |
| `GET /api/actor/{actor_id}/events` | SSE: `event` per event of that chain, the last `ACTOR_BACKLOG` first, then each as it is stored |
| `POST /api/restart`, `POST /api/stop` | `{"target": path}`: the CLI's `restart_target` / `stop_target` |
| `POST /api/start` | `{"manifest": path}`: the CLI's `start_target` (under the root) |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..chain.event import ChainEvent
from ..errors import NodeNotRunning, TheaterError
from ..home import Home
from .feeds import ChainFeed, LatencyTracker, event_json

log = logging.getLogger("theater_otp.dashboard")

#: The tree is sent again at least this often (uptimes, mailboxes), even when no supervisor reports.
TREE_EVERY_S = 2.0
#: Events of an actor's chain sent when its page opens.
ACTOR_BACKLOG = 500
#: Batches queued for one stream; past that the stream ends and the page's EventSource reconnects
#: (and gets a fresh backlog) rather than this process holding a slow reader's backlog.
STREAM_QUEUE = 1000
#: The assets `GET /static/` serves.
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
TOKEN_HEADER = "X-Dashboard-Token"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text("utf-8")


class Dashboard:
    """The server's state. Owns the supervisor-chain feed (for the tree and the latencies) and every
    stream's actor feed; `close()` closes them all."""

    def __init__(self, home: Home, token: str) -> None:
        self.home = home
        self.token = token
        self.latencies = LatencyTracker()
        self.tree: dict[str, Any] | None = None
        self._streams: set[asyncio.Queue[tuple[str, Any] | None]] = set()
        self._changed = asyncio.Event()
        self._sup_feed: ChainFeed | None = None
        self._followed: set[str] = set()
        self._actor_feeds: set[ChainFeed] = set()
        self._pump: asyncio.Task[None] | None = None

    # ---- the app ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/tree", self.get_tree)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/actor/{actor_id}/events", self.actor_events)
        app.router.add_post("/api/restart", self.restart)
        app.router.add_post("/api/stop", self.stop)
        app.router.add_post("/api/start", self.start)
        app.on_response_prepare.append(self._headers)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._cleanup)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        given = request.query.get("token") or request.headers.get(TOKEN_HEADER) or ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=403, text="403: this dashboard needs its token (the URL `up` printed)\n")
        return await handler(request)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL: never send it on
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'")

    async def _start(self, app: web.Application) -> None:
        self._sup_feed = ChainFeed(self.home, asyncio.get_running_loop(), self._on_supervisor_events)
        self._pump = asyncio.create_task(self._tree_pump())

    async def _cleanup(self, app: web.Application) -> None:
        self.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    def close(self) -> None:
        for q in list(self._streams):
            q.put_nowait(None)
        for feed in list(self._actor_feeds):
            feed.close()
        self._actor_feeds.clear()
        if self._sup_feed is not None:
            self._sup_feed.close()
            self._sup_feed = None

    # ---- pages ------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        html = _asset("index.html").replace("__TOKEN__", self.token)  # token_urlsafe: [A-Za-z0-9_-] only
        return web.Response(text=html, content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(text=_asset(name), content_type=ASSETS[name])

    # ---- the tree ---------------------------------------------------------------------------

    async def _call(self, kind: str, body: dict[str, Any] | None = None) -> Any:
        from ..client import ControlClient

        def call() -> Any:
            with ControlClient(self.home) as c:
                return c.call(kind, body)
        return await asyncio.to_thread(call)

    async def _refresh(self) -> dict[str, Any] | None:
        try:
            self.tree = await self._call("tree")
        except TheaterError as exc:
            log.warning("tree: %s", exc)
            return None
        self._follow_supervisors(self.tree)
        return self.tree

    def _follow_supervisors(self, node: dict[str, Any]) -> None:
        if node.get("kind") == "supervisor" and node["path"] not in self._followed and self._sup_feed is not None:
            self._followed.add(node["path"])
            self._sup_feed.follow(f"supervisor:{node['path']}")
        for child in node.get("children", []):
            self._follow_supervisors(child)

    def _on_supervisor_events(self, batch: list[ChainEvent]) -> None:
        for e in batch:
            got = self.latencies.take(e)
            if got is not None:
                self._broadcast("latency", got.to_json())
        self._changed.set()

    async def _tree_pump(self) -> None:
        """Send the tree to every stream when a supervisor chain records something, and at least every
        TREE_EVERY_S while anyone watches. (The node pushes no tree changes; its supervisors' chain
        events are the wake-up, the deadline keeps uptimes and mailboxes fresh.)"""
        await self._refresh()  # follows the supervisor chains from the start: the latency history
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), TREE_EVERY_S)
            self._changed.clear()
            if self._streams and await self._refresh() is not None:
                self._broadcast("tree", self.tree)

    def _broadcast(self, kind: str, data: Any) -> None:
        for q in list(self._streams):
            self._offer(q, (kind, data))

    def _offer(self, q: asyncio.Queue[tuple[str, Any] | None], item: tuple[str, Any]) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:
            self._streams.discard(q)  # a reader this slow starts again: its stream ends
            with contextlib.suppress(asyncio.QueueFull):
                q.get_nowait()
                q.put_nowait(None)

    async def get_tree(self, request: web.Request) -> web.Response:
        tree = await self._refresh()
        if tree is None:
            return web.json_response({"error": "the node does not answer"}, status=503)
        return web.json_response({"tree": tree, "latencies": [x.to_json() for x in self.latencies.seen]})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        q: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)
        self._streams.add(q)
        try:
            resp = await _sse(request)
            tree = self.tree or await self._refresh()
            await _send(resp, "hello", {"latencies": [x.to_json() for x in self.latencies.seen], "tree": tree})
            async for kind, data in _drain(q):
                await _send(resp, kind, data)
        finally:
            self._streams.discard(q)
        return resp

    # ---- an actor ---------------------------------------------------------------------------

    async def actor_events(self, request: web.Request) -> web.StreamResponse:
        actor_id = request.match_info["actor_id"]
        q: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)

        def deliver(batch: list[ChainEvent]) -> None:
            self._offer(q, ("events", [event_json(e) for e in batch]))

        resp = await _sse(request)
        feed = ChainFeed(self.home, asyncio.get_running_loop(), deliver, backlog=ACTOR_BACKLOG)
        self._actor_feeds.add(feed)
        try:
            feed.follow(actor_id)
            async for kind, data in _drain(q):
                await _send(resp, kind, data)
        finally:
            self._actor_feeds.discard(feed)
            await asyncio.to_thread(feed.close)
        return resp

    # ---- buttons ----------------------------------------------------------------------------

    async def restart(self, request: web.Request) -> web.Response:
        from ..cli import restart_target
        return await self._act(request, "restarted", restart_target)

    async def stop(self, request: web.Request) -> web.Response:
        from ..cli import stop_target
        return await self._act(request, "stopped", stop_target)

    async def start(self, request: web.Request) -> web.Response:
        """`{"manifest": path}`: the CLI's `start_target` under the root."""
        from pathlib import Path

        from ..cli import start_target
        return await self._act(request, "started", lambda c, manifest: start_target(c, Path(manifest)),
                               key="manifest")

    async def _act(self, request: web.Request, what: str, fn: Callable[[Any, str], dict[str, Any]],
                   key: str = "target") -> web.Response:
        from ..client import ControlClient

        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        target = body.get(key) if isinstance(body, dict) else None
        if not isinstance(target, str) or not target or "\0" in target:
            return web.json_response({"error": f'expected a JSON body {{"{key}": "<path>"}}'}, status=400)

        def act() -> dict[str, Any]:
            with ControlClient(self.home) as c:
                return fn(c, target)
        try:
            result = await asyncio.to_thread(act)
        except NodeNotRunning as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except TheaterError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        self._changed.set()
        return web.json_response({what: result.get("path", target), "result": result})


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    return resp


async def _send(resp: web.StreamResponse, kind: str, data: Any) -> None:
    await resp.write(f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode())


async def _drain(q: asyncio.Queue[tuple[str, Any] | None]) -> AsyncIterator[tuple[str, Any]]:
    """What a stream sends, until its queue says None (the dashboard ends, or the reader fell behind)."""
    while (item := await q.get()) is not None:
        yield item


__all__ = ["ACTOR_BACKLOG", "Dashboard", "TOKEN_HEADER", "new_token"]
