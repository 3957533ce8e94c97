"""Following chains as they grow: the subscriber side of the chain-writer's events socket, shared by
`events --follow`, `subscribe` and `logs -f` (docs/events.md).

chain.db is the source of truth; the events socket (chain/writer.py, Publisher) is the fast path.
A Follower:

1. subscribes (a topic per actor id, or b"" for every actor), then reads what is stored already
   from chain.db in one read transaction (the backlog, and each chain's head);
2. takes each pushed chunk of an actor, [first_seq, last_seq, records or nil, rowid]: events below
   the chain's next expected seq were delivered already and are skipped (no duplicates); a chunk
   that starts above it follows lost messages (PUB drops them for a subscriber that does not
   read; a restarted writer starts with no subscriber), and the chain is read from chain.db from
   the expected seq instead (no gaps); so is a chunk sent without its records (too big) and one
   whose events do not link to the last one delivered (parent hash);
3. whenever the queue runs dry after it took anything, checks the followed chains' heads in
   chain.db (one keyed query per chain; for every chain, one `max(rowid)` unless the pushed
   rowids already skipped one) and reads what it has not seen. That catches what no later
   message would show: the newest messages dropped while the subscriber was stopped, and what
   was committed while its subscription travelled (the writer confirms each subscription with a
   message once it has taken it, so that check comes after it).

Nothing here polls: the Follower sleeps in zmq_poll until a message, or one of the caller's file
descriptors, is ready, and reads chain.db only after a message came.
"""

from __future__ import annotations

import heapq
import sqlite3
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import msgpack
import zmq

from ..home import Home
from .event import ChainEvent, MalformedRecord, decode_record, split_records
from .store import connect, read_events

#: Messages queued for this subscriber in its own process before its side of the socket stops
#: reading (and the writer's side, EVENTS_SNDHWM more later, drops).
RCVHWM = 10_000
#: Up to this many followed chains, the dry-queue check asks chain.db for each head by key; more,
#: and it reads the actors table once.
KEYED_HEADS = 64
#: Most messages one `next_events` call takes off the socket before it hands over what it has.
DRAIN_MAX = 1000
#: A pushed message over this many bytes is not unpacked (the writer sends at most ~32 KiB).
MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class Filter:
    """Which events are delivered. Every event still moves its chain's next expected seq, so a
    filtered-out event is never read again."""

    #: an event type, matched exactly or as a dotted prefix (`message` matches `message.send`)
    event_type: str | None = None
    #: only events from this seq on
    since_seq: int = 0
    #: only events stamped at or after this time (ns since the epoch)
    since_ns: int | None = None
    #: and only those this accepts
    extra: Callable[[ChainEvent], bool] | None = None

    def __call__(self, e: ChainEvent) -> bool:
        t = self.event_type
        return (e.seq >= self.since_seq and (self.since_ns is None or e.timestamp >= self.since_ns)
                and (not t or e.event_type == t or e.event_type.startswith(t + "."))
                and (self.extra is None or self.extra(e)))


class Follower:
    """Follows chains through HOME's events socket, filling from chain.db whatever it missed.

    Owns a zmq Context, its SUB socket and a read-only connection to chain.db; `close()` (or the
    `with` block) closes all three and is idempotent. Invariant: for every followed chain,
    `next_seq[a]` is one past the last event of `a` delivered or filtered out, and `last_hash[a]`
    that event's hash (None before event 0); events are delivered per chain in seq order, each
    once.
    """

    def __init__(self, home: Home, wanted: Filter | None = None, rcvhwm: int = RCVHWM):
        self.home = home
        self.wanted = wanted or Filter()
        self.rcvhwm = max(1, rcvhwm)
        self.next_seq: dict[str, int] = {}
        self.last_hash: dict[str, bytes | None] = {}
        #: following every chain (topic b""): a chain first seen in a push starts at seq 0
        self.every = False
        #: events read from chain.db after the backlog, in place of pushed ones (a count for tests)
        self.filled = 0
        self._topics: set[bytes] = set()
        self._pending: list[ChainEvent] = []
        self._took = False  # a message was read since the queue last ran dry
        #: every chain: the rowid of the last chunk known (pushed or read), and whether a pushed
        #: rowid skipped one since the queue last ran dry
        self._rowid = 0
        self._skipped = False
        self._conn: sqlite3.Connection | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sub: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, self.rcvhwm)
        self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self._sub.connect(home.events_endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        self._fds: set[int] = set()
        self._closed = False

    def __enter__(self) -> "Follower":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sub.close()
        self._ctx.term()
        if self._conn is not None:
            self._conn.close()

    # ---- what to follow ---------------------------------------------------------------------

    def follow(self, actor_id: str, limit: int | None = None) -> list[ChainEvent]:
        """Follow one chain: subscribe, then return its stored events that `wanted` accepts (the
        last `limit` of them), read in one transaction with its head."""
        topic = actor_id.encode("utf-8", "surrogatepass")
        if topic not in self._topics:
            self._topics.add(topic)
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        if actor_id in self.next_seq:
            return []
        conn = self.db()
        conn.execute("BEGIN")
        try:
            head = conn.execute("SELECT head_seq, head_hash FROM actors WHERE actor_id = ?", (actor_id,)).fetchone()
            backlog = self._backlog(conn, actor_id, limit)
        finally:
            conn.execute("COMMIT")
        self._at(actor_id, head)
        return backlog

    def follow_all(self, limit: int | None = None) -> list[ChainEvent]:
        """Follow every chain, those that begin later too: subscribe, then return the stored events
        that `wanted` accepts (the last `limit` of them), all chains merged by timestamp, each
        chain's in seq order."""
        self.every = True
        if b"" not in self._topics:
            self._topics.add(b"")
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        conn = self.db()
        conn.execute("BEGIN")
        try:
            heads = conn.execute("SELECT actor_id, head_seq, head_hash FROM actors").fetchall()
            self._rowid = int(conn.execute("SELECT coalesce(max(rowid), 0) FROM chunks").fetchone()[0])
            chains = [self._backlog(conn, a, limit) for a, seq, _h in heads if seq >= 0 and a not in self.next_seq]
        finally:
            conn.execute("COMMIT")
        for actor_id, seq, h in heads:
            if actor_id not in self.next_seq:
                self._at(actor_id, (seq, h))
        merged = list(heapq.merge(*chains, key=lambda e: e.timestamp))
        return merged[-limit:] if limit else merged

    # ---- waiting ----------------------------------------------------------------------------

    def next_events(self, timeout_ms: int | None = None, fds: Sequence[int] = ()) -> tuple[list[ChainEvent], list[int]]:
        """Wait up to `timeout_ms` (None: no limit) for new events or for one of `fds` to be
        readable; return the events (each chain's in seq order) and the readable `fds`."""
        for fd in set(fds) - self._fds:
            self._poller.register(fd, zmq.POLLIN)
        for fd in self._fds - set(fds):
            self._poller.unregister(fd)
        self._fds = set(fds)
        ready = dict(self._poller.poll(0 if self._pending else timeout_ms))
        if self._sub in ready:
            self._drain()
        out, self._pending = self._pending, []
        return out, [fd for fd in fds if fd in ready]

    def _drain(self) -> None:
        for _ in range(DRAIN_MAX):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                if self._took:
                    self._took = False
                    self._check_heads()
                return
            self._took = True
            self._on_message(frames)

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        topic, body = frames
        try:
            value = msgpack.unpackb(body, raw=False, max_bin_len=MAX_MESSAGE, max_str_len=0, max_array_len=4,
                                    max_map_len=0)
        except (ValueError, msgpack.UnpackException):
            return
        if value is None:  # the writer took a subscription: the dry-queue check reads what came before
            return
        if not (isinstance(value, list) and len(value) == 4 and type(value[0]) is int and type(value[1]) is int
                and (value[2] is None or type(value[2]) is bytes) and type(value[3]) is int):
            return
        first, last, records, rowid = value
        if self.every:
            self._skipped = self._skipped or rowid > self._rowid + 1
            self._rowid = max(self._rowid, rowid)
        try:
            actor_id = topic.decode("utf-8")
        except UnicodeDecodeError:
            return
        if actor_id not in self.next_seq and not self.every:
            return  # a chain not followed whose id has a followed one's as prefix
        expected = self.next_seq.get(actor_id, 0)
        if last < expected:
            return  # delivered already (the backlog or a catch-up read it)
        if records is None or first > expected:
            self._catch_up(actor_id)
            return
        try:
            pushed = [decode_record(enc, h) for _o, enc, h in split_records(records)]
        except (MalformedRecord, ValueError):
            self._catch_up(actor_id)
            return
        for e in pushed:
            if e.seq < expected:
                continue
            if e.seq != expected or e.actor_id != actor_id or e.parent_hash != self.last_hash.get(actor_id):
                self._catch_up(actor_id)  # not the event that comes next: chain.db says what does
                return
            self._deliver(e)
            expected += 1

    # ---- chain.db ---------------------------------------------------------------------------

    def _check_heads(self) -> None:
        """After the queue ran dry: read from chain.db what the pushes left out (see the module)."""
        conn = self.db()
        if self.every:
            newest = int(conn.execute("SELECT coalesce(max(rowid), 0) FROM chunks").fetchone()[0])
            if newest > self._rowid or self._skipped:
                self._skipped = False
                self._rowid = max(self._rowid, newest)
                self.reconcile()
            return
        if len(self.next_seq) <= KEYED_HEADS:
            behind = [a for a, n in self.next_seq.items()
                      if (h := conn.execute("SELECT head_seq FROM actors WHERE actor_id = ?", (a,)).fetchone())
                      and h[0] >= n]
            if behind:
                self._catch_up(*behind)
            return
        self.reconcile()

    def reconcile(self) -> None:
        """Read from chain.db every followed chain's events past what was delivered."""
        rows = self.db().execute("SELECT actor_id, head_seq FROM actors WHERE head_seq >= 0").fetchall()
        self._catch_up(*[a for a, head in rows if head >= self.next_seq.get(a, 0)
                         and (self.every or a in self.next_seq)])

    def _catch_up(self, *actor_ids: str) -> None:
        chains: list[list[ChainEvent]] = []
        conn = self.db()
        for actor_id in actor_ids:
            if actor_id not in self.next_seq and not self.every:
                continue
            chains.append(read_events(conn, actor_id, since_seq=self.next_seq.get(actor_id, 0)))
        for e in heapq.merge(*chains, key=lambda e: e.timestamp):
            self.filled += 1
            self._deliver(e)

    def _deliver(self, e: ChainEvent) -> None:
        self.next_seq[e.actor_id] = e.seq + 1
        self.last_hash[e.actor_id] = e.hash
        if self.wanted(e):
            self._pending.append(e)

    def _at(self, actor_id: str, head: Iterable[object] | None) -> None:
        seq, h = tuple(head) if head is not None else (-1, None)
        self.next_seq[actor_id] = int(seq) + 1 if isinstance(seq, int) else 0
        self.last_hash[actor_id] = bytes(h) if isinstance(h, bytes) else None

    def _backlog(self, conn: sqlite3.Connection, actor_id: str, limit: int | None) -> list[ChainEvent]:
        w = self.wanted
        if w.extra is None:
            return read_events(conn, actor_id, event_type=w.event_type, since_seq=w.since_seq, since_ns=w.since_ns,
                               limit=limit, last=limit is not None)
        got = [e for e in read_events(conn, actor_id, event_type=w.event_type, since_seq=w.since_seq,
                                      since_ns=w.since_ns) if w.extra(e)]
        return got[-limit:] if limit else got

    def db(self) -> sqlite3.Connection:
        """The read-only connection to chain.db (opened on first use)."""
        if self._conn is None:
            self._conn = connect(self.home.chain_db, readonly=True)
        return self._conn
