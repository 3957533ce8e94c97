"""What the dashboard streams, read from the chains: each chain event as JSON, the restart latencies
(from the supervisor chains), and the threads that follow chains through the events socket.

A `ChainFeed` owns one Follower (chain/follow.py) and the thread that waits on it; only that thread
touches the Follower (it is not thread-safe). Batches go to the asyncio loop through
`call_soon_threadsafe`; `close()` wakes the thread through a pipe, the thread closes the Follower.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..chain.event import ChainEvent
from ..chain.follow import Follower
from ..chain.logs import log_line
from ..home import Home

log = logging.getLogger("theater_otp.dashboard")

#: Longest text of an event's payload sent to the page.
SUMMARY_CHARS = 400
#: Restart latencies kept (the chart shows the newest).
LATENCIES_KEPT = 200


def plain(value: Any, depth: int = 0) -> Any:
    """`value` (a decoded payload) as JSON-safe data: bytes as text (or hex), nested at most 6 deep."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value[:256].hex()}
    if depth > 6:
        return "..."
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def event_json(e: ChainEvent) -> dict[str, Any]:
    """One chain event as the page shows it: its place, type, time, a short payload text, and its
    log line (level, text) when it is one (`theater-otp logs` reads the same events)."""
    import json

    try:
        payload = plain(e.payload())
    except Exception:  # noqa: BLE001 - a payload that does not decode is shown as such, never fatal here
        payload = "(payload does not decode)"
    text = json.dumps(payload, default=str)
    line = log_line(e)
    return {"actor_id": e.actor_id, "seq": e.seq, "incarnation": e.incarnation, "timestamp": e.timestamp,
            "type": e.event_type, "summary": text[:SUMMARY_CHARS] + ("…" if len(text) > SUMMARY_CHARS else ""),
            "log": list(line) if line is not None else None}


@dataclass(frozen=True)
class Latency:
    """One restart seen on a supervisor chain: the child went down (`cause`: child_terminated, an
    exit, or child_stopped, stopped by its supervisor or an operator) and was started again
    `seconds` later (its next child_started: restart = true, or a later incarnation)."""

    supervisor: str
    child: str
    cause: str
    seconds: float
    at_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"path": f"{self.supervisor}/{self.child}", "cause": self.cause, "ms": round(self.seconds * 1000, 2),
                "at": self.at_ns}


class LatencyTracker:
    """Pairs each child's going down with its next restart, per supervisor chain.

    Invariant: `down[(supervisor, child)]` is the (context, timestamp) of that child's last
    child_terminated or child_stopped event not yet followed by a restart."""

    def __init__(self) -> None:
        self.down: dict[tuple[str, str], tuple[str, int]] = {}
        self.seen: list[Latency] = []

    def take(self, e: ChainEvent) -> Latency | None:
        if not e.event_type.startswith("supervisor."):
            return None
        data = e.payload()
        if not isinstance(data, dict) or not isinstance(data.get("child"), str):
            return None
        context = e.event_type.removeprefix("supervisor.")
        key = (str(data.get("supervisor")), data["child"])
        if context in ("child_terminated", "child_stopped"):
            self.down[key] = (context, e.timestamp)
        elif context == "child_started" and key in self.down and (data.get("restart") or _int(data.get("incarnation")) > 1):
            # restart_child (the restart button) starts incarnation n + 1 with restart = false
            cause, at = self.down.pop(key)
            got = Latency(key[0], key[1], cause, max(0, e.timestamp - at) / 1e9, e.timestamp)
            self.seen = (self.seen + [got])[-LATENCIES_KEPT:]
            return got
        return None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


class ChainFeed:
    """Follows chains on a thread and hands each non-empty batch of events to `deliver` on `loop`.

    `follow(chain_id)` may be called from any thread (it is passed to the feed's thread); the first
    batch of a chain is its backlog (the last `backlog` events). Owns the Follower, the thread and
    the wake pipe; `close()` is idempotent and returns once the thread has closed the Follower."""

    def __init__(self, home: Home, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[ChainEvent]], None], backlog: int | None = None) -> None:
        self.home = home
        self.loop = loop
        self.deliver = deliver
        self.backlog = backlog
        self._asks: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="chain-feed", daemon=True)
        self._thread.start()

    def follow(self, chain_id: str) -> None:
        self._asks.put(chain_id)
        self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._asks.put(None)
        self._wake()
        self._thread.join(10)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a full pipe wakes the thread all the same

    def _hand(self, batch: list[ChainEvent]) -> None:
        if batch:
            try:
                self.loop.call_soon_threadsafe(self.deliver, batch)
            except RuntimeError:
                pass  # the loop closed: the dashboard is ending

    def _run(self) -> None:
        try:
            with Follower(self.home) as f:
                while True:
                    while True:
                        try:
                            ask = self._asks.get_nowait()
                        except queue.Empty:
                            break
                        if ask is None:
                            return
                        self._hand(f.follow(ask, self.backlog))
                    got, ready = f.next_events(None, [self._wake_r])
                    self._hand(got)
                    if ready:
                        os.read(self._wake_r, 4096)
        except Exception:  # noqa: BLE001 - the feed's thread reports its end; the page sees the stream close
            log.exception("a chain feed stopped")
            self._hand([])


__all__ = ["ChainFeed", "Latency", "LatencyTracker", "event_json", "plain"]
