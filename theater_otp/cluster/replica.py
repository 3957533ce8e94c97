"""Chains off the box: copy every event of one node's chain.db to JetStream (docs/replication.md).

Stream `THEATER_CHAIN_<node>` (file storage, subjects `theater.chain.<node>.>`); each event is one
message on `theater.chain.<node>.<actor token>` (`subject_for`), its payload the event's stored
record (`u32 len ‖ canonical encoding ‖ hash`, docs/chain-format.md) byte for byte, its headers
`Theater-Seq` and `Theater-Hash`.

No fork can be written remotely: every publish carries `Nats-Expected-Last-Subject-Sequence`, the
stream sequence of the chain's previous event as the server acknowledged it (0 for event 0), so a
gap, a duplicate or a second writer for the same chain is refused by the server. A chain that
fell behind (BATCH_MIN events waiting) catches up in atomic batches (nats-server 2.12+,
`allow_atomic`): the expectation rides on the first message, the batch is stored whole or not at
all, and a run of up to BATCH_MAX events costs one round trip. A chain that keeps up goes event
by event: a batch costs the server a few ms whatever its size, and batches do not overlap.

Invariants, per chain (`_Chain`):

- at most one publish (a batch or a single event) is in flight, and it starts right after
  `acked`, the last event the server is known to hold, at stream sequence `stream_seq`;
- `acked` moves only on an ack for exactly the events sent, or on a resync, which reads the
  subject's last message and accepts it only if it is the local chain's event at that seq (same
  hash); anything else stops the chain's replication, loudly, and nothing is ever written over it;
- every event sent links to the one before it (seq + 1, parent hash), the first to the remote
  copy's last: a local chain that no longer extends what was replicated is never published.

Any doubt (a refusal, a timeout, a reconnect, an error) ends in a resync, so after a restart, a
lost ack or a NATS outage the replicator resumes from what the server holds: no duplicate, no gap.

Events come from the chain-writer's events socket through chain/follow.py's Follower, in a
thread (it is synchronous), handed to the asyncio side with call_soon_threadsafe; what the
Follower did not bring (the backlog at start, a dropped buffer) is read from chain.db.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import heapq
import itertools
import json
import logging
import os
import re
import signal
import sqlite3
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..chain import event as chain_event
from ..chain.event import HASH_SIZE, ChainEvent, MalformedRecord, canonical_bytes, decode_record, record_bytes
from ..chain.store import connect
from ..home import Home
from .names import valid_node_name

log = logging.getLogger("theater_otp.cluster.replica")

#: JetStream headers (the server's) and ours.
EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
SEQ_HEADER = "Theater-Seq"
HASH_HEADER = "Theater-Hash"

#: The server's error code for a failed Nats-Expected-Last-Subject-Sequence.
WRONG_LAST_SEQUENCE = 10071

#: Most events in one atomic batch (the server's own limit is 1,000).
BATCH_MAX = 256
#: Fewest events a chain must have waiting for them to go as an atomic batch. A batch costs the
#: server a few ms whatever its size, and batches of different chains do not overlap, while single
#: publishes of different chains do: a chain that keeps up goes event by event, one that fell
#: behind catches up in batches.
BATCH_MIN = 16
#: Most record bytes in one atomic batch (the server stages a batch in memory until its commit).
BATCH_BYTES = 1 << 20
#: Publishes (batches or single events) in flight at once, over every chain (the server takes at
#: most 50 atomic batches in flight per stream by default).
WINDOW = 32
#: A publish not acknowledged within this many seconds, the connection up, is resolved by a resync.
ACK_TIMEOUT_S = 5.0
#: Pushed events kept per chain ahead of what was acknowledged; past it they are read from chain.db.
BUFFER_MAX = 4096
#: Resyncs (one request each) running at once.
RESYNCS = 16
#: Retry delays after a failure, per chain and for the connection: doubling up to the cap.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
#: Headroom for the headers in a message (max_payload counts headers and payload).
HEADER_ROOM = 512

_U64 = struct.Struct(">Q")
#: Actor ids used as one subject token as they are (UUIDs, `supervisor:root/team`).
_PLAIN_TOKEN = re.compile(r"[-_=:/a-zA-Z0-9]{1,200}")


class ReplicaError(Exception):
    """A replication setting or state that cannot be used; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------

def check_node_name(node: str) -> str:
    """`node`, if it is a valid node name (cluster/names.py: 1-32 characters of [a-z0-9_-]); else
    ReplicaError."""
    problem = valid_node_name(node)
    if problem is not None:
        raise ReplicaError(f"node name {node!r}: {problem}")
    return node


def stream_name(node: str) -> str:
    """`THEATER_CHAIN_<node>`: the stream holding `node`'s chains."""
    return f"THEATER_CHAIN_{check_node_name(node)}"


def subject_prefix(node: str) -> str:
    """`theater.chain.<node>.`: what every subject of `node`'s stream starts with."""
    return f"theater.chain.{check_node_name(node)}."


def subject_token(actor_id: str) -> str:
    """The subject tokens of an actor id: the id itself when it is plain (a UUID, or
    `supervisor:<path>` with a plain path), else `hex.<hex of its UTF-8>`. The two forms never
    meet: a plain id is one token, the hex form two."""
    if not actor_id:
        raise ValueError("an empty actor id has no subject")
    if _PLAIN_TOKEN.fullmatch(actor_id):
        return actor_id
    return "hex." + actor_id.encode("utf-8", "surrogatepass").hex()


def subject_for(node: str, actor_id: str) -> str:
    """`theater.chain.<node>.<actor token>`: where `actor_id`'s events are replicated."""
    return subject_prefix(node) + subject_token(actor_id)


def actor_of_subject(node: str, subject: str) -> str | None:
    """The actor id a subject of `node`'s stream stands for (the inverse of `subject_for`), or
    None for a subject that is not one of ours."""
    prefix = subject_prefix(node)
    if not subject.startswith(prefix):
        return None
    token = subject[len(prefix):]
    if token.startswith("hex."):
        try:
            actor_id = bytes.fromhex(token[4:]).decode("utf-8", "surrogatepass")
        except ValueError:
            return None
        return actor_id if actor_id and subject_token(actor_id) == token else None
    return token if _PLAIN_TOKEN.fullmatch(token) else None


def parse_record(payload: bytes) -> ChainEvent:
    """The one event a replicated message holds; MalformedRecord if it holds anything else
    (no record, a truncated one, two)."""
    records = list(chain_event.split_records(bytes(payload)))
    if len(records) != 1:
        raise MalformedRecord(f"a message holds one record, this one {len(records)}")
    _o, enc, h = records[0]
    return decode_record(enc, h)


def message_event(payload: bytes | None) -> tuple[ChainEvent | None, str | None]:
    """(event, None) for a replicated message whose payload is one record whose hash is the
    SHA-256 of its encoding; (None, why not) otherwise."""
    if not payload:
        return None, "an empty message"
    try:
        event = parse_record(payload)
    except MalformedRecord as exc:
        return None, f"not an event record ({exc})"
    enc = payload[4:len(payload) - HASH_SIZE]
    if hashlib.sha256(enc).digest() != event.hash:
        return None, f"event seq {event.seq}: its hash is not the SHA-256 of its encoding"
    return event, None


# ---------------------------------------------------------------------------------------------
# the replicator
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Ev:
    """One event to publish: what the checks need and the exact stored record."""

    seq: int
    parent: bytes | None
    hash: bytes
    timestamp: int
    record: bytes

    @classmethod
    def of(cls, e: ChainEvent) -> "_Ev":
        enc = canonical_bytes(e.actor_id, e.seq, e.incarnation, e.parent_hash, e.event_type, e.timestamp, e.data)
        return cls(e.seq, e.parent_hash, e.hash, e.timestamp, record_bytes(enc, e.hash))


@dataclass(eq=False)
class _Chain:
    """One chain's replication state (see the module's invariants)."""

    actor_id: str
    subject: str
    #: the newest local seq known (-1: none yet)
    head: int = -1
    #: the last event the server holds for this chain (-1: none), its hash and stream sequence
    acked: int = -1
    acked_hash: bytes | None = None
    stream_seq: int = 0
    #: `acked` was read from the server (a resync) or moved by acks since
    known: bool = False
    #: `known` was true once: `acked`/`stream_seq` are what the server held then
    ever_known: bool = False
    #: the last seq handed to a publish (or `acked`): pushed events after it start a buffer
    sent: int = -1
    #: a publish or a resync is running for it
    busy: bool = False
    #: pushed events past `acked`, consecutive (dropped when they are not)
    buf: collections.deque[_Ev] = field(default_factory=collections.deque)
    #: why its replication stopped (None: it goes on)
    stopped: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    #: in the pump's ready queue
    queued: bool = False


@dataclass(eq=False)
class _Flight:
    chain: _Chain
    events: list[_Ev]
    sent_at: float


class Replicator:
    """Copies every chain of `home`'s chain.db to the JetStream stream of `node`.

    Give it `url` (it connects, and reconnects, itself) or `nc`, a connected nats-py client it
    uses and leaves open (the cluster link's). `run(stop)` works until `stop` is set. `lag` and
    `status()` may be read from any thread at any time. `on_problem(actor_id, why)` is called (on
    the loop) when a chain's replication stops.
    """

    def __init__(self, home: Home | str, node: str, url: str | None = None, nc: Any = None, *,
                 on_problem: Callable[[str, str], None] | None = None,
                 batch_max: int = BATCH_MAX, window: int = WINDOW):
        if (url is None) == (nc is None):
            raise ValueError("give a NATS url or a connection, not both")
        self.home = Home.at(home)
        self.node = check_node_name(node)
        self.url = url
        self.stream = stream_name(node)
        self.prefix = subject_prefix(node)
        self.on_problem = on_problem
        self.batch_max = max(1, batch_max)
        self.window = max(1, window)
        self._nc = nc
        self._own_nc = nc is None
        self._js: Any = None
        self._atomic = False
        self.chains: dict[str, _Chain] = {}
        #: actor id -> why its replication stopped
        self.problems: dict[str, str] = {}
        #: events acknowledged by the server since start, and publishes sent
        self.acked_events = 0
        self.published = 0
        self.resyncs = 0
        self.refusals = 0
        #: stored -> acknowledged, in ms, for the last events acknowledged (the newest of each ack)
        self.latencies: collections.deque[float] = collections.deque(maxlen=2048)
        self._heads_total = 0   # sum of (head + 1) over chains that replicate
        self._acked_total = 0   # sum of (acked + 1) over those chains
        self._flights: dict[str, _Flight] = {}
        self._ready: collections.deque[_Chain] = collections.deque()
        #: chains whose state changed since the pump last looked, and those waiting for a retry
        self._dirty: set[_Chain] = set()
        self._later: list[tuple[float, int, _Chain]] = []
        self._closing = False
        self._inbox_sub: Any = None
        self._tokens = itertools.count(1)
        self._run_id = os.urandom(6).hex()
        self._inbox = ""
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resync_gate = asyncio.Semaphore(RESYNCS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-db")
        self._db_local = threading.local()
        self._thread: threading.Thread | None = None
        self._thread_stop = threading.Event()
        self._stop_r, self._stop_w = -1, -1
        self.connected = False
        self.started = False  # the stream exists and the Follower runs
        self._reconnects = 0

    # ---- what others read --------------------------------------------------------------------

    @property
    def lag(self) -> int:
        """Events stored locally (as far as the Follower has told) that JetStream has not
        acknowledged, over the chains that replicate (a stopped chain's are in `status()`)."""
        return max(0, self._heads_total - self._acked_total)

    def status(self) -> dict[str, Any]:
        chains = list(self.chains.values())
        lat = sorted(self.latencies)
        return {
            "node": self.node, "stream": self.stream, "connected": self.connected, "chains": len(chains),
            "lag": self.lag, "acked_events": self.acked_events, "published": self.published,
            "resyncs": self.resyncs, "refusals": self.refusals, "atomic_batches": self._atomic,
            "stopped": dict(self.problems),
            "stopped_lag": sum(max(0, c.head - c.acked) for c in chains if c.stopped),
            "latency_ms": {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99), "n": len(lat)},
        }

    # ---- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Replicate until `stop` is set. Connection trouble is waited out (reconnecting); only a
        setting that cannot work (the stream exists with other subjects) raises ReplicaError."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._resync_gate = asyncio.Semaphore(RESYNCS)
        try:
            if not await self._wait_for_store(stop):
                return
            if not await self._connect(stop):
                return
            if not await self._ensure_stream(stop):
                return
            self._start_follower()
            self.started = True
            log.info("replicating %s to %s on subjects %s>", self.home.chain_db, self.stream, self.prefix)
            await self._pump(stop)
        finally:
            await self._shutdown()

    async def _wait_for_store(self, stop: asyncio.Event) -> bool:
        said = False
        while not self.home.chain_db.exists():
            if not said:
                log.info("waiting for %s to exist", self.home.chain_db)
                said = True
            if await _wait(stop, 0.5):
                return False
        return True

    async def _connect(self, stop: asyncio.Event) -> bool:
        if self._nc is not None:
            self.connected = bool(self._nc.is_connected)
            self._reconnects = int(getattr(self._nc, "stats", {}).get("reconnects", 0))
            await self._subscribe_inbox()
            return True
        import nats

        assert self.url is not None
        delay = RETRY_FIRST_S
        said = False
        while not stop.is_set():
            try:
                self._nc = await nats.connect(
                    self.url, name=f"theater-replica-{self.node}", connect_timeout=2, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.25, ping_interval=5, max_outstanding_pings=2,
                    pending_size=64 << 20, disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error, closed_cb=self._closed)
            except Exception as exc:  # noqa: BLE001 - every way a connect fails is waited out the same way
                if not said:
                    log.warning("cannot reach NATS at %s (%s): trying again", self.url, _why(exc))
                    said = True
                if await _wait(stop, delay):
                    return False
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            self.connected = True
            if said:
                log.info("connected to NATS at %s", self.url)
            await self._subscribe_inbox()
            return True
        return False

    async def _subscribe_inbox(self) -> None:
        self._js = self._nc.jetstream(timeout=5)
        self._inbox = self._nc.new_inbox()
        self._inbox_sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_reply)

    async def _disconnected(self) -> None:
        self._poke()
        if not self._closing:
            log.warning("NATS connection lost: publishing waits for the reconnect")

    async def _reconnected(self) -> None:
        # Whatever was in flight went out before the connection dropped: its ack may never come,
        # or it was stored or not. The pump's _check_connection has each such chain ask the server.
        self._poke()

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", _why(exc))

    async def _closed(self) -> None:
        self._poke()

    async def _ensure_stream(self, stop: asyncio.Event) -> bool:
        from nats.js.api import StorageType
        from nats.js.errors import NotFoundError

        subject = self.prefix + ">"
        delay = RETRY_FIRST_S
        while not stop.is_set():
            try:
                try:
                    info = await self._js.stream_info(self.stream)
                except NotFoundError:
                    info = await self._js.add_stream(name=self.stream, subjects=[subject], storage=StorageType.FILE,
                                                     deny_delete=True, deny_purge=True, allow_atomic=True)
                    log.info("created stream %s (subjects %s, file storage)", self.stream, subject)
                if subject not in (info.config.subjects or []):
                    raise ReplicaError(f"stream {self.stream} exists with subjects {info.config.subjects}, "
                                       f"not {subject}: it is not a theater-otp chain stream")
                if not info.config.allow_atomic:
                    try:
                        cfg = info.config.evolve(allow_atomic=True)
                        info = await self._js.update_stream(cfg)
                    except Exception as exc:  # noqa: BLE001 - an older server: one event per publish
                        log.info("stream %s takes no atomic batches (%s): one event per publish",
                                 self.stream, _why(exc))
                self._atomic = bool(info.config.allow_atomic)
                return True
            except ReplicaError:
                raise
            except Exception as exc:  # noqa: BLE001 - not connected, JetStream not ready, timeouts: retried
                log.warning("stream %s not ready (%s): trying again", self.stream, _why(exc))
                if await _wait(stop, delay):
                    return False
                delay = min(RETRY_MAX_S, delay * 2)
        return False

    async def _shutdown(self) -> None:
        self._stop_follower()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._db_pool.shutdown(wait=True, cancel_futures=True)
        self._closing = True
        if self._inbox_sub is not None and not self._own_nc:
            try:  # a shared connection is left as it was found
                await self._inbox_sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection is gone already
                pass
        if self._own_nc and self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.close(), 5)
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        self.connected = False

    # ---- the pump: publishes, acks, timeouts -------------------------------------------------

    async def _pump(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        while not stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            self._check_connection()
            if self.connected:
                self._expire(now)
                self._schedule(now)
                while self._ready and len(self._flights) < self.window and self.connected:
                    c = self._ready.popleft()
                    c.queued = False
                    if self._can_send(c, now):
                        await self._send(c)
                    elif not c.stopped:
                        self._dirty.add(c)
            await _wait_any(stop, self._wake, self._next_deadline(now))

    def _check_connection(self) -> None:
        """Follow the connection's state (a shared connection's callbacks are its owner's): after
        a reconnect, whatever was in flight is resolved by re-reading the stream."""
        nc = self._nc
        self.connected = bool(nc.is_connected)
        reconnects = int(getattr(nc, "stats", {}).get("reconnects", 0))
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            lost = list(self._flights.values())
            self._flights.clear()
            for flight in lost:
                self._unknown(flight.chain)
            log.info("NATS connection back: %d publish(es) in flight resolved by re-reading the stream", len(lost))

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _free(self, c: _Chain) -> None:
        """`c`'s publish or resync is over: the pump looks at it again."""
        c.busy = False
        self._dirty.add(c)

    def _schedule(self, now: float) -> None:
        """Of the chains whose state changed (and those whose retry is due), queue those that can
        send and start a resync for those that need one."""
        later = self._later
        while later and later[0][0] <= now:
            self._dirty.add(heapq.heappop(later)[2])
        dirty, self._dirty = self._dirty, set()
        for c in dirty:
            if c.stopped or c.busy or c.queued:
                continue
            if now < c.retry_at:
                heapq.heappush(later, (c.retry_at, next(self._tokens), c))
            elif not c.known:
                c.busy = True
                self._spawn(self._resync(c))
            elif c.head > c.acked:
                c.queued = True
                self._ready.append(c)

    def _can_send(self, c: _Chain, now: float) -> bool:
        return c.known and not c.busy and not c.stopped and c.head > c.acked and now >= c.retry_at

    def _next_deadline(self, now: float) -> float:
        """Seconds until something must be looked at without a wake-up: a timeout or a retry."""
        wait = 1.0
        if self._flights:  # the oldest is first (dicts keep insertion order)
            wait = min(wait, next(iter(self._flights.values())).sent_at + ACK_TIMEOUT_S - now)
        if self._later:
            wait = min(wait, self._later[0][0] - now)
        return max(0.005, wait)

    def _expire(self, now: float) -> None:
        for token, flight in list(self._flights.items()):
            if now - flight.sent_at >= ACK_TIMEOUT_S:
                del self._flights[token]
                log.warning("chain %s: no ack for events %d..%d in %.0f s: re-reading what the stream holds",
                            flight.chain.actor_id, flight.events[0].seq, flight.events[-1].seq, ACK_TIMEOUT_S)
                self._unknown(flight.chain, failed=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("replica task failed: %r", task.exception())

    async def _send(self, c: _Chain) -> None:
        c.busy = True
        try:
            events = await self._next_events(c)
        except MalformedRecord as exc:
            self._stop(c, f"the local chain's records are damaged after seq {c.acked} ({exc}); "
                          f"`theater-otp verify` says more")
            return
        except Exception as exc:  # noqa: BLE001 - chain.db unreadable for now: try again later
            log.warning("chain %s: cannot read chain.db (%s): trying again", c.actor_id, _why(exc))
            self._retry_later(c)
            self._free(c)
            return
        if c.stopped:
            return
        if not events:
            self._free(c)
            return
        why = self._unlinked(c, events)
        if why is not None:
            self._stop(c, why)
            return
        limit = int(getattr(self._nc, "max_payload", 1 << 20)) - HEADER_ROOM
        big = next((e for e in events if len(e.record) > limit), None)
        if big is not None:
            self._stop(c, f"event seq {big.seq} is {len(big.record)} bytes, over the NATS server's max_payload "
                          f"({limit + HEADER_ROOM} bytes): raise max_payload (the largest event is a few MiB)")
            return
        if not self.connected:
            self._free(c)
            return
        token = str(next(self._tokens))
        reply = f"{self._inbox}.{token}"
        self._flights[token] = _Flight(c, events, time.monotonic())
        c.sent = events[-1].seq
        try:
            await self._publish(c, events, reply, token)
        except Exception as exc:  # noqa: BLE001 - connection trouble: the reconnect or a timeout resolves it
            log.warning("chain %s: publish failed (%s): re-reading what the stream holds", c.actor_id, _why(exc))
            if self._flights.pop(token, None) is not None:
                self._unknown(c, failed=True)
            return
        self.published += 1

    async def _publish(self, c: _Chain, events: list[_Ev], reply: str, token: str) -> None:
        nc = self._nc
        expected = str(c.stream_seq)
        if len(events) == 1:
            e = events[0]
            await nc.publish(c.subject, e.record, reply=reply,
                             headers={EXPECTED_SUBJECT_SEQ: expected, SEQ_HEADER: str(e.seq), HASH_HEADER: e.hash.hex()})
            return
        batch = f"{self._run_id}-{token}"
        last = len(events) - 1
        for i, e in enumerate(events):
            headers = {BATCH_ID: batch, BATCH_SEQ: str(i + 1), SEQ_HEADER: str(e.seq), HASH_HEADER: e.hash.hex()}
            if i == 0:
                headers[EXPECTED_SUBJECT_SEQ] = expected
            if i == last:
                headers[BATCH_COMMIT] = "1"
                await nc.publish(c.subject, e.record, reply=reply, headers=headers)
            else:
                await nc.publish(c.subject, e.record, headers=headers)

    async def _next_events(self, c: _Chain) -> list[_Ev]:
        """The events to send next for `c`: from acked + 1, consecutive, at most a batch. What the
        buffer lacks is read from chain.db, a batch's worth at once, into the buffer."""
        start = c.acked + 1
        buf = c.buf
        while buf and buf[0].seq < start:
            buf.popleft()
        if not buf or buf[0].seq != start:
            assert self._loop is not None
            want = min(self.batch_max, c.head - c.acked)
            read = await self._loop.run_in_executor(self._db_pool, self._read, c.actor_id, start, want)
            # the Follower may have added to the buffer meanwhile: keep what follows the read on
            end = read[-1].seq if read else start - 1
            while buf and buf[0].seq <= end:
                buf.popleft()
            if buf and buf[0].seq != end + 1:
                buf.clear()
            buf.extendleft(reversed(read))
            while buf and buf[0].seq < c.acked + 1:
                buf.popleft()
            if not buf or buf[0].seq != c.acked + 1:
                return []
        limit = self.batch_max if self._atomic and c.head - c.acked >= BATCH_MIN else 1
        out: list[_Ev] = []
        size = 0
        for e in buf:
            if len(out) >= limit or (out and size + len(e.record) > BATCH_BYTES):
                break
            out.append(e)
            size += len(e.record)
        return out

    def _unlinked(self, c: _Chain, events: list[_Ev]) -> str | None:
        """Why `events` do not extend the replicated copy (None: they do)."""
        prev_seq, prev_hash = c.acked, c.acked_hash
        for e in events:
            if e.seq != prev_seq + 1:
                return f"the local chain gives seq {e.seq} after seq {prev_seq}"
            if e.parent != prev_hash:
                return (f"the local chain's event {e.seq} does not link to the replicated event {prev_seq} "
                        f"(parent {_hex(e.parent)}, the copy's event {prev_seq} is {_hex(prev_hash)}): the local "
                        f"chain was cut or rewritten after it was replicated")
            prev_seq, prev_hash = e.seq, e.hash
        return None

    async def _on_reply(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        flight = self._flights.pop(token, None)
        if flight is None:
            return  # a late ack for a publish given up on: the resync that followed settled it
        c = flight.chain
        status = (msg.headers or {}).get("Status")
        try:
            resp = json.loads(msg.data) if msg.data else {}
        except ValueError:
            resp = {}
        err = resp.get("error") if isinstance(resp, dict) else None
        if status or err or not isinstance(resp, dict) or "seq" not in resp:
            code = err.get("err_code") if isinstance(err, dict) else None
            desc = err.get("description") if isinstance(err, dict) else (f"status {status}" if status else "no ack")
            if code == WRONG_LAST_SEQUENCE:
                self.refusals += 1
                log.warning("chain %s: the server refused events %d..%d (%s): the stream holds something "
                            "else after stream seq %d; re-reading it", c.actor_id, flight.events[0].seq,
                            flight.events[-1].seq, desc, c.stream_seq)
            else:
                log.warning("chain %s: publish of events %d..%d failed (%s): re-reading what the stream holds",
                            c.actor_id, flight.events[0].seq, flight.events[-1].seq, desc)
            self._unknown(c, failed=True)
            self._poke()
            return
        n = len(flight.events)
        count = resp.get("count", 1) if n > 1 else 1
        if resp.get("stream") != self.stream or count != n:
            log.warning("chain %s: odd ack %r for %d event(s): re-reading what the stream holds", c.actor_id, resp, n)
            self._unknown(c, failed=True)
            self._poke()
            return
        last = flight.events[-1]
        self._set_acked(c, last.seq, last.hash, int(resp["seq"]))
        self.acked_events += n
        self.latencies.append(max(0.0, (time.time_ns() - last.timestamp) / 1e6))
        c.failures = 0
        self._free(c)
        self._poke()

    # ---- resync: what does the server hold? --------------------------------------------------

    def _unknown(self, c: _Chain, failed: bool = False) -> None:
        """`c`'s remote state is in doubt: ask the server before sending anything more."""
        c.known = False
        c.sent = c.acked
        if failed:
            self._retry_later(c)
        self._free(c)

    def _retry_later(self, c: _Chain) -> None:
        c.failures += 1
        c.retry_at = time.monotonic() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (c.failures - 1)) \
            if c.failures > 1 else 0.0

    async def _resync(self, c: _Chain) -> None:
        from nats.js.errors import NotFoundError

        async with self._resync_gate:
            try:
                try:
                    msg = await self._js.get_last_msg(self.stream, c.subject)
                except NotFoundError:
                    msg = None
                verdict = await self._judge(c, msg)
            except Exception as exc:  # noqa: BLE001 - not connected, timeouts: tried again
                log.debug("chain %s: resync failed (%s)", c.actor_id, _why(exc))
                self._retry_later(c)
                self._free(c)
                self._poke()
                return
        self.resyncs += 1
        if verdict is not None:
            self._stop(c, verdict)
            return
        c.known = c.ever_known = True
        self._free(c)
        self._poke()

    async def _judge(self, c: _Chain, msg: Any) -> str | None:
        """Take the subject's last message `msg` (None: the subject is empty) as the chain's
        remote state if it is the local chain's event at its seq; else why not."""
        if msg is None:
            if c.ever_known and c.acked >= 0:
                log.warning("chain %s: the stream holds none of its events any more (had up to seq %d): "
                            "replicating it again from seq 0", c.actor_id, c.acked)
            self._set_acked(c, -1, None, 0)
            return None
        event, why = message_event(msg.data)
        if event is None:
            return f"the replicated copy's last message (stream seq {msg.seq}) is {why}"
        if event.actor_id != c.actor_id:
            return (f"the replicated copy's last message (stream seq {msg.seq}) is an event of "
                    f"{event.actor_id!r}, not of this chain")
        if c.ever_known and event.seq == c.acked and msg.seq != c.stream_seq:
            return (f"the replicated copy holds event {event.seq} at stream seq {msg.seq}, but the server "
                    f"acknowledged it at stream seq {c.stream_seq}: another client published to {c.subject}")
        assert self._loop is not None
        local = await self._loop.run_in_executor(self._db_pool, self._read, c.actor_id, event.seq, 1)
        if not local or local[0].seq != event.seq:
            return (f"the replicated copy holds event {event.seq} (stream seq {msg.seq}) but the local chain "
                    f"ends before it (at seq {c.head}): a chain.db older than the copy? (`restore` rebuilds it)")
        if local[0].hash != event.hash:
            return (f"the replicated copy's event {event.seq} (stream seq {msg.seq}) is not the local chain's "
                    f"(hash {event.hash.hex()[:16]}…, local {local[0].hash.hex()[:16]}…): the two chains diverge")
        if c.ever_known and event.seq > c.acked and c.stream_seq < msg.seq:
            why = await self._check_between(c, msg.seq)
            if why is not None:
                return why
        if (event.seq, msg.seq) != (c.acked, c.stream_seq):
            log.info("chain %s: the stream holds up to event %d (stream seq %d): going on from there",
                     c.actor_id, event.seq, msg.seq)
        self._set_acked(c, event.seq, event.hash, int(msg.seq))
        return None

    async def _check_between(self, c: _Chain, last_stream_seq: int) -> str | None:
        """The messages of `c`'s subject after the last one acknowledged up to `last_stream_seq`
        (a publish whose ack was lost) must be the chain's next events, linked."""
        seq, prev = c.acked, c.acked_hash
        at = c.stream_seq
        while at < last_stream_seq:
            msg = await self._js.get_msg(self.stream, seq=at + 1, subject=c.subject, next=True)
            event, why = message_event(msg.data)
            if event is None:
                return f"the replicated copy's message at stream seq {msg.seq} is {why}"
            if event.actor_id != c.actor_id or event.seq != seq + 1 or event.parent_hash != prev:
                return (f"the replicated copy's message at stream seq {msg.seq} (event {event.seq}) does not "
                        f"follow event {seq} there: another client published to {c.subject}")
            seq, prev, at = event.seq, event.hash, int(msg.seq)
        return None

    def _set_acked(self, c: _Chain, seq: int, h: bytes | None, stream_seq: int) -> None:
        if not c.stopped:
            self._acked_total += seq - c.acked
        c.acked, c.acked_hash, c.stream_seq = seq, h, stream_seq
        c.sent = max(c.sent, seq) if c.known else seq
        while c.buf and c.buf[0].seq <= seq:
            c.buf.popleft()

    def _stop(self, c: _Chain, why: str) -> None:
        if c.stopped:
            return
        c.stopped = why
        c.busy = False
        c.buf.clear()
        self._heads_total -= c.head + 1
        self._acked_total -= c.acked + 1
        self.problems[c.actor_id] = why
        log.error("STOPPED replicating chain %s to %s: %s. Nothing was written over the copy; restart the "
                  "replicator once this is resolved", c.actor_id, c.subject, why)
        if self.on_problem is not None:
            try:
                self.on_problem(c.actor_id, why)
            except Exception:  # noqa: BLE001 - a caller's callback never stops replication
                log.exception("on_problem callback failed")

    # ---- the local side: the Follower thread and chain.db ------------------------------------

    def _chain(self, actor_id: str) -> _Chain:
        c = self.chains.get(actor_id)
        if c is None:
            c = self.chains[actor_id] = _Chain(actor_id, self.prefix + subject_token(actor_id))
        return c

    def _local_head(self, c: _Chain, head: int) -> None:
        if head > c.head:
            if not c.stopped:
                self._heads_total += head - c.head
            c.head = head
            self._dirty.add(c)

    def _take_heads(self, heads: dict[str, int]) -> None:
        """On the loop: each chain's head when the Follower began."""
        for actor_id, head in heads.items():
            if head >= 0:
                self._local_head(self._chain(actor_id), head)
        self._poke()

    def _take_events(self, events: list[ChainEvent]) -> None:
        """On the loop: events the Follower delivered (each chain's in seq order, each once)."""
        for e in events:
            c = self._chain(e.actor_id)
            self._local_head(c, e.seq)
            if c.stopped or (c.known and e.seq <= c.acked):
                continue
            buf = c.buf
            if buf and buf[-1].seq + 1 != e.seq:
                buf.clear()  # not consecutive: chain.db gives what is missing
            if len(buf) < BUFFER_MAX and (buf or not c.known or e.seq == max(c.sent, c.acked) + 1):
                buf.append(_Ev.of(e))
            else:
                buf.clear()
        self._poke()

    def _start_follower(self) -> None:
        self._stop_r, self._stop_w = os.pipe()
        self._thread_stop.clear()
        self._thread = threading.Thread(target=self._follow, name=f"replica-follow-{self.node}", daemon=True)
        self._thread.start()

    def _stop_follower(self) -> None:
        if self._thread is None:
            return
        self._thread_stop.set()
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(10)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._thread = None

    def _follow(self) -> None:
        """The Follower's thread: tell the loop every chain's head, then every new event."""
        from ..chain.follow import Follower

        loop = self._loop
        assert loop is not None
        delay = RETRY_FIRST_S
        while not self._thread_stop.is_set():
            try:
                with Follower(self.home) as follower:
                    follower.follow_all(limit=1)
                    heads = {a: n - 1 for a, n in follower.next_seq.items()}
                    loop.call_soon_threadsafe(self._take_heads, heads)
                    delay = RETRY_FIRST_S
                    while not self._thread_stop.is_set():
                        events, ready = follower.next_events(None, fds=(self._stop_r,))
                        if events:
                            loop.call_soon_threadsafe(self._take_events, events)
                        if ready:
                            return
            except Exception as exc:  # noqa: BLE001 - chain.db locked or gone for a moment: follow again
                if self._thread_stop.is_set():
                    return
                log.warning("following %s failed (%s): following again in %.1f s", self.home.chain_db,
                            _why(exc), delay)
                self._thread_stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def _read(self, actor_id: str, since: int, limit: int) -> list[_Ev]:
        """On the chain.db thread: up to `limit` stored events of `actor_id` from seq `since`, with
        their records exactly as stored."""
        conn: sqlite3.Connection | None = getattr(self._db_local, "conn", None)
        if conn is None:
            conn = self._db_local.conn = connect(self.home.chain_db, readonly=True)
        out: list[_Ev] = []
        seq_at = 14 + len(actor_id.encode("utf-8", "surrogatepass"))
        rows = conn.execute(
            "SELECT records FROM chunks WHERE actor_id=?1 AND first_seq >= coalesce((SELECT max(first_seq) FROM "
            "chunks WHERE actor_id=?1 AND first_seq <= ?2), 0) ORDER BY first_seq", (actor_id, since))
        for (blob,) in rows:
            blob = bytes(blob)
            for o, enc, h in chain_event.split_records(blob):
                if len(enc) >= seq_at + 8 and _U64.unpack_from(enc, seq_at)[0] < since:
                    continue  # before the wanted seq: not decoded
                e = decode_record(enc, h)
                if e.seq < since:
                    continue
                out.append(_Ev(e.seq, e.parent_hash, e.hash, e.timestamp, blob[o:o + 4 + len(enc) + HASH_SIZE]))
                if len(out) >= limit:
                    return out
        return out


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    if stop.is_set() or wake.is_set():
        return
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _hex(h: bytes | None) -> str:
    return "none" if h is None else h.hex()[:16] + "…"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


# ---------------------------------------------------------------------------------------------
# python -m theater_otp.cluster.replica
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theater_otp.cluster.replica",
                                     description="Replicate a node's chain.db to JetStream until SIGTERM or Ctrl-C.")
    parser.add_argument("--home", help="the node's state directory (default: $THEATER_OTP_HOME or ~/.theater-otp)")
    parser.add_argument("--cluster", required=True, help="the NATS server, nats://HOST:PORT (JetStream on)")
    parser.add_argument("--node-name", required=True, help="the node's name: the stream is THEATER_CHAIN_<name>")
    parser.add_argument("--stats-every", type=float, default=5.0,
                        help="seconds between status lines on stderr (0: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="replica %(levelname)s %(message)s")
    try:
        rep = Replicator(Home.at(args.home), args.node_name, url=args.cluster)
    except (ReplicaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stats = asyncio.ensure_future(_stats(rep, stop, args.stats_every))
        try:
            await rep.run(stop)
        except ReplicaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            stats.cancel()
        return 0

    return asyncio.run(go())


async def _stats(rep: Replicator, stop: asyncio.Event, every: float) -> None:
    if every <= 0:
        return
    last = None
    while not await _wait(stop, every):
        s = rep.status()
        line = (f"{s['chains']} chain(s), {s['acked_events']} event(s) acknowledged, lag {s['lag']}, "
                f"{len(s['stopped'])} stopped, {'connected' if s['connected'] else 'NOT connected'}")
        if line != last:
            log.info("%s", line)
            last = line


if __name__ == "__main__":
    sys.exit(main())
