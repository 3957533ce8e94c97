"""The chain-writer process: receives events, appends them durably, answers syncs.

Socket: a ROUTER bound at HOME's chain endpoint. Frames are envelopes; only the
node (its run identity, protocol/trust.py) may send anything but `events`:
  `register` {actor_id, path, name}            -> no reply
  `producer` {identity, actor_id, incarnation} -> no reply: that socket identity may now
             send events for that actor and incarnation, and nothing else
  `unproducer` {identity, actor_id, incarnation} -> no reply: it may no longer (its
             worker exited), and its batch mark is forgotten
  `events`   [[actor_id, incarnation, type, timestamp_ns, data], ...]
             with corr = the producer's batch number (1, 2, 3, ...; 0 = fire and
             forget) -> `ack` (same corr) once committed, carrying the run's writer
             proof. From the node: its own events (trusted: they may describe ended
             incarnations). From a registered producer: only its own actor and
             incarnation, or the whole batch is refused, counted. From anyone else:
             dropped, counted.
             Batches are applied exactly once and in order per producer: a batch
             already applied is acked again without storing it twice; a batch after
             a gap (an earlier one was lost with a dead writer) is dropped unacked,
             and its producer resends everything unacked from the oldest.
  `sync`     -> `synced` once everything received before it is committed
  `stop`     -> `stopped`, then the process exits
Group commit: each turn drains every frame already queued, appends them in
one SQLite transaction (one fsync), then sends the acks of that turn. It never
waits for more: replies and sends wait for these acks (worker/effects.py), so
a wait would be added to every reply; under load the frames that arrive during
one commit's fsync make the next commit's batch.

Events socket: an XPUB bound at HOME's events endpoint (Publisher). After each commit, and after
that turn's acks, every chunk row the commit stored for an actor someone subscribes to is
published as [topic = actor id (UTF-8), msgpack [first_seq, last_seq, records or nil, rowid]]: the
stored records themselves (docs/chain-format.md), nil when they are over PUSH_RECORDS_MAX, and the
chunk's rowid (consecutive while anyone follows every chain: a subscriber sees what it lost). A new
subscription is confirmed on its topic with [topic, msgpack nil]. Nothing on it is ever waited
for: a subscriber that does not read loses messages beyond EVENTS_SNDHWM (PUB drops) and fills
them from chain.db (chain/follow.py, docs/events.md).
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import struct
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Callable

import msgpack
import zmq

from ..home import Home
from ..proc import child_signals, die_with_parent, flush_and_exit, setup_child_logging
from ..protocol import SNDMORE, Envelope, encode, recv_routed
from ..protocol.trust import RunSecrets
from .store import ChainStore, Durability, EventItem

log = logging.getLogger("theater_otp.chain.writer")

#: The writer's exit code when chain.db cannot be opened (its log line says why).
EXIT_CANNOT_OPEN = 3
#: Most frames one group commit takes before it commits and acks.
MAX_BATCH_FRAMES = 4096


#: How long a producer the node unregistered (its worker exited) may still have its last frames
#: stored: they left the worker before its death but can reach the writer after the node's word.
RETIRE_GRACE_S = 1.0
#: Most event frames (and bytes) kept from identities the node has not registered yet.
PARK_FRAMES = 1024
PARK_BYTES = 32 * 1024 * 1024

#: Most messages the events socket queues for one subscriber; beyond, they are dropped for it.
EVENTS_SNDHWM = 1000
#: A chunk's records travel on the events socket up to this size; a bigger chunk is announced by its
#: seq range alone and subscribers read it from chain.db (a stuck subscriber holds at most
#: EVENTS_SNDHWM such messages in the writer: ~32 MiB).
PUSH_RECORDS_MAX = 32 * 1024
#: Most distinct topics the writer tracks; beyond, it publishes every new chunk and lets the socket
#: filter (a subscriber cannot grow the writer's memory without bound).
MAX_TOPICS = 10_000
#: Most subscription messages taken off the events socket per turn.
MAX_SUBSCRIPTIONS_PER_TURN = 1000


class Publisher:
    """The events socket's side in the writer: which actor ids someone subscribes to, and the
    publishing of the chunk rows each commit stored.

    Owns nothing: the socket and the store belong to writer_main. Invariant: while `topics` is
    not empty (or `every`), `last_rowid` is the rowid of the newest chunk row that was published
    or passed over, so the rows `publish` reads are exactly those committed since. Chunk rows get
    rowids above every existing one (no INTEGER PRIMARY KEY; rows are deleted only at a writer's
    start, in cut_torn_tails, before any commit).
    """

    def __init__(self, sock: zmq.Socket[bytes] | None, store: ChainStore):
        self.sock = sock
        self.store = store
        #: the topics (UTF-8 actor ids; b"" = every actor) with at least one subscriber
        self.topics: set[bytes] = set()
        #: more topics than MAX_TOPICS were asked for: every row is published, the socket filters
        self.every = False
        self.last_rowid: int | None = None

    def take_subscriptions(self) -> None:
        """Read the subscribe and unsubscribe messages queued on the socket (XPUB: b"\x01" or
        b"\x00" + topic); confirm each subscription on its topic."""
        sock = self.sock
        if sock is None:
            return
        for _ in range(MAX_SUBSCRIPTIONS_PER_TURN):
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg or msg[0] not in (0, 1):
                continue  # not a subscription message: nothing else is read from subscribers
            topic = msg[1:]
            if msg[0] == 0:
                self.topics.discard(topic)
                continue
            if not self.topics and not self.every:
                self.last_rowid = self._max_rowid()  # publishing starts with the next commit
            if len(self.topics) < MAX_TOPICS:
                self.topics.add(topic)
            else:
                self.every = True
            # the subscriber now gets everything committed from here on: it reads what came
            # before from chain.db once it sees this (chain/follow.py)
            sock.send_multipart([topic, _SUBSCRIBED], zmq.NOBLOCK)

    def publish(self) -> None:
        """Publish the chunk rows stored since the last call (call it after a commit only)."""
        sock = self.sock
        if sock is None or not (self.topics or self.every):
            return
        if self.last_rowid is None:
            self.last_rowid = self._max_rowid()
            return
        conn = self.store.conn
        every = self.every or b"" in self.topics
        rows = conn.execute("SELECT rowid, actor_id, first_seq, last_seq, "
                            "CASE WHEN length(records) <= ? THEN records END FROM chunks "
                            "WHERE rowid > ? ORDER BY rowid", (PUSH_RECORDS_MAX, self.last_rowid)) if every else \
            conn.execute("SELECT rowid, actor_id, first_seq, last_seq, NULL FROM chunks WHERE rowid > ? "
                         "ORDER BY rowid", (self.last_rowid,))
        topics = self.topics
        for rowid, actor_id, first, last, records in rows.fetchall():
            self.last_rowid = rowid
            topic = actor_id.encode("utf-8", "surrogatepass")
            if not every:
                if topic not in topics:
                    continue
                records = conn.execute("SELECT CASE WHEN length(records) <= ? THEN records END FROM chunks "
                                       "WHERE rowid = ?", (PUSH_RECORDS_MAX, rowid)).fetchone()[0]
            sock.send_multipart([topic, msgpack.packb([first, last, records, rowid])], zmq.NOBLOCK)

    def _max_rowid(self) -> int:
        row = self.store.conn.execute("SELECT coalesce(max(rowid), 0) FROM chunks").fetchone()
        return int(row[0])


#: The confirmation of a subscription: msgpack nil.
_SUBSCRIBED = msgpack.packb(None)


class Gate:
    """What the writer takes from whom (protocol/trust.py): the node's identity, the producers the
    node registered, and the counts of what it refused."""

    def __init__(self, secrets: RunSecrets):
        self.node = secrets.node
        self.proof = secrets.writer_proof
        #: socket identity -> (actor id, incarnation) it may write
        self.producers: dict[bytes, tuple[str, int]] = {}
        #: frames from identities the node did not register (or not the node, for its kinds)
        self.dropped = 0
        #: batches from a registered producer with an event for another actor or incarnation
        self.forged = 0
        #: event frames from identities not registered yet, by identity: a worker's first batch
        #: can overtake the node's `producer` registration (two connections keep no order between
        #: them); taken up when the registration comes, oldest dropped beyond PARK_FRAMES/PARK_BYTES
        self.parked: OrderedDict[bytes, list[tuple[Envelope, int]]] = OrderedDict()
        self.parked_frames = 0
        self.parked_bytes = 0
        #: producers the node unregistered, still taken until their deadline: identity ->
        #: (monotonic deadline, producer key of their batch mark)
        self.retiring: dict[bytes, tuple[float, str]] = {}

    def retire(self, identity: bytes, key: str, now: float) -> bool:
        """Unregister `identity` after RETIRE_GRACE_S; False if it was not registered (nothing to wait for)."""
        if identity not in self.producers:
            return False
        self.retiring[identity] = (now + RETIRE_GRACE_S, key)
        return True

    def expire(self, now: float) -> list[str]:
        """Unregister the producers whose grace is over; their producer keys (batch marks to drop)."""
        over = [(ident, key) for ident, (deadline, key) in self.retiring.items() if now >= deadline]
        for ident, _ in over:
            del self.retiring[ident]
            self.producers.pop(ident, None)
        return [key for _, key in over]

    def park(self, ident: bytes, env: Envelope) -> None:
        """Keep an event frame from an identity the node has not registered (yet)."""
        size = _batch_bytes(env.body)
        self.parked.setdefault(ident, []).append((env, size))
        self.parked_frames += 1
        self.parked_bytes += size
        while self.parked_frames > PARK_FRAMES or self.parked_bytes > PARK_BYTES:
            old_ident, frames = self.parked.popitem(last=False)
            for old, old_size in frames:
                self.parked_frames -= 1
                self.parked_bytes -= old_size
                self.refuse(old_ident, old, "not a producer the node registered")

    def unpark(self, ident: bytes) -> list[Envelope]:
        """The frames kept for `ident`, now registered, in the order they came."""
        frames = self.parked.pop(ident, [])
        self.parked_frames -= len(frames)
        self.parked_bytes -= sum(size for _, size in frames)
        return [env for env, _ in frames]

    def refuse(self, ident: bytes, env: Envelope, why: str) -> None:
        """Count a refused frame; log the first and then every 1000th (a flood must not fill the log)."""
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error("dropped %r from %r: %s (%d frame(s) dropped so far)", env.kind, ident[:64], why, self.dropped)

    def owns(self, owner: tuple[str, int], items: object) -> bool:
        """Whether every event of a batch is the producer's own actor and incarnation."""
        if type(items) is not list:
            return False
        actor_id, incarnation = owner
        return all(type(i) is list and len(i) == 5 and i[0] == actor_id and i[1] == incarnation for i in items)


def _batch_bytes(body: object) -> int:
    """About how many bytes an `events` body holds (its events' data and a little for the rest)."""
    if type(body) is not list:
        return 64
    return sum(64 + (len(i[4]) if type(i) is list and len(i) == 5 and isinstance(i[4], bytes) else 0) for i in body)


def writer_main(home: Home, node_pid: int, secrets: RunSecrets, durability: Durability = Durability.DISK) -> None:
    """Entry point of the chain-writer process (started by the node)."""
    die_with_parent(node_pid)
    child_signals()
    setup_child_logging(home.log_file, "chain-writer")
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    try:
        store = ChainStore(home.chain_db, durability)
    except (sqlite3.Error, OSError) as exc:  # one clear line; the node backs off before the next start
        log.error("chain-writer cannot open %s: %s", home.chain_db, exc)
        flush_and_exit(EXIT_CANNOT_OPEN)
        return
    for actor_id, seq, n, why in store.cut_torn_tails():
        log.error("torn tail in chain %s: cut %d event(s) from seq %d (%s)", actor_id, n, seq, why)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.bind(home.chain_endpoint)
    events = _bind_events(ctx, home)
    log.info("chain-writer ready at %s (durability: %s)", home.chain_endpoint, durability.value)
    code = 0
    try:
        code = _serve(sock, store, wake_r, lambda: stopping, Gate(secrets), Publisher(events, store))
    finally:
        sock.close()
        if events is not None:
            events.close()
        ctx.term()
        store.close()
    flush_and_exit(code)


def _bind_events(ctx: zmq.Context[zmq.Socket[bytes]], home: Home) -> zmq.Socket[bytes] | None:
    """The events socket (an XPUB that never blocks the writer), or None if it cannot be bound:
    then nothing is published, and followers see new events when they next read chain.db."""
    events: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
    events.setsockopt(zmq.LINGER, 0)
    events.setsockopt(zmq.SNDHWM, EVENTS_SNDHWM)
    events.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription is seen, and confirmed
    try:
        events.bind(home.events_endpoint)
    except zmq.ZMQError as exc:
        log.error("chain-writer cannot bind its events socket %s: %s; nothing will be published",
                  home.events_endpoint, exc)
        events.close()
        return None
    return events


def _serve(sock: zmq.Socket[bytes], store: ChainStore, wake: socket.socket, stopping: Callable[[], bool],
           gate: Gate, publisher: Publisher | None = None) -> int:
    """Serve until a `stop` envelope or SIGTERM (which wakes the poller through `wake`)."""
    proof = gate.proof
    stats = CommitStats()
    publisher = publisher or Publisher(None, store)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(wake, zmq.POLLIN)
    if publisher.sock is not None:
        poller.register(publisher.sock, zmq.POLLIN)
    while not stopping():
        # a producer in its grace is unregistered at its deadline even if nothing else comes
        timeout = None
        if gate.retiring:
            first = min(deadline for deadline, _ in gate.retiring.values())
            timeout = max(0, int((first - time.monotonic()) * 1000) + 1)
        ready = dict(poller.poll(timeout))
        if wake in ready or wake.fileno() in ready:
            wake.recv(4096)
            continue
        if publisher.sock is not None and publisher.sock in ready:
            publisher.take_subscriptions()
        groups: list[tuple[bool, object, str]] = []   # (trusted, body, sender) per applied envelope
        replies: list[tuple[bytes, Envelope, int | None]] = []  # an ack counts its group's stored items
        marks: dict[str, int] = {}   # producer -> batch seq applied in this turn
        # producers whose worker exited (the node's `unproducer`) and whose grace is over
        ended: list[str] = gate.expire(time.monotonic()) if gate.retiring else []
        stop_requested = False
        unparked: deque[tuple[bytes, Envelope]] = deque()  # frames whose producer was registered this turn
        for _ in range(MAX_BATCH_FRAMES):
            if unparked:
                ident, env = unparked.popleft()
            else:
                try:
                    routed = recv_routed(sock, log)
                except zmq.Again:
                    break
                if routed is None:
                    continue
                ident, env = routed
            from_node = ident == gate.node
            if env.kind == "events":
                if from_node:
                    producer = env.sender
                else:
                    owner = gate.producers.get(ident)
                    if owner is None:
                        gate.park(ident, env)
                        continue
                    if not gate.owns(owner, env.body):
                        gate.forged += 1
                        log.error("refused batch %d from %s/%d: an event for another actor or incarnation "
                                  "(%d such batch(es) so far)", env.corr, owner[0], owner[1], gate.forged)
                        continue
                    producer = f"{owner[0]}/{owner[1]}"
                group = (from_node, env.body, producer)
                if env.corr:
                    last = marks.get(producer, store.applied.get(producer, 0))
                    if env.corr > last + 1:
                        log.info("batch %d from %s follows a gap (last applied %d): dropped until resent",
                                 env.corr, producer, last)
                        continue
                    applied = None  # a batch applied before: acked again, stored once
                    if env.corr == last + 1:
                        applied = len(groups)
                        groups.append(group)
                        marks[producer] = env.corr
                    replies.append((ident, Envelope("ack", "chain", producer, env.corr), applied))
                else:
                    groups.append(group)
            elif not from_node:
                gate.refuse(ident, env, "only the node may send it")
            elif env.kind == "producer":
                b = env.body if isinstance(env.body, dict) else {}
                if isinstance(b.get("identity"), bytes) and isinstance(b.get("actor_id"), str) \
                        and isinstance(b.get("incarnation"), int):
                    gate.producers[b["identity"]] = (b["actor_id"], b["incarnation"])
                    unparked.extend((b["identity"], early) for early in gate.unpark(b["identity"]))
            elif env.kind == "unproducer":
                b = env.body if isinstance(env.body, dict) else {}
                identity = b.get("identity")
                if isinstance(b.get("actor_id"), str) and isinstance(b.get("incarnation"), int):
                    key = f"{b['actor_id']}/{b['incarnation']}"
                    # its last frames may still be on their way: it is unregistered (and its batch
                    # mark dropped) after RETIRE_GRACE_S; one this writer never knew, at once
                    if not isinstance(identity, bytes) or not gate.retire(identity, key, time.monotonic()):
                        ended.append(key)
                elif isinstance(identity, bytes):
                    gate.producers.pop(identity, None)
            elif env.kind == "register":
                b = env.body if isinstance(env.body, dict) else {}
                store.register(str(b.get("actor_id")), str(b.get("path", "")), str(b.get("name", "")))
            elif env.kind == "sync":
                replies.append((ident, Envelope("synced", "chain", env.sender, env.corr, {"proof": proof}), None))
            elif env.kind == "stats":
                replies.append((ident, Envelope("stats", "chain", env.sender, env.corr,
                                                {"proof": proof, **stats.to_plain()}), None))
            elif env.kind == "stop":
                replies.append((ident, Envelope("stopped", "chain", env.sender, env.corr, {"proof": proof}), None))
                stop_requested = True
            else:
                log.error("dropped unknown envelope kind %r from %r", env.kind, env.sender)
        counts: list[int] = []
        committed = bool(groups or marks)
        if committed:
            began = time.perf_counter()
            counts, rejected = _append(store, groups, marks)
            stats.observe(time.perf_counter() - began)
            if rejected:
                log.warning("rejected %d late event(s) from dead incarnations", rejected)
        for ident, env, applied in replies:
            if env.kind == "ack":
                env = Envelope("ack", "chain", env.to, env.corr,
                               {"received": counts[applied] if applied is not None else 0, "proof": proof})
            sock.send(ident, SNDMORE)
            sock.send(encode(env))
        if committed:
            publisher.publish()  # after the commit and its acks: never before, never in their way
        if ended:
            store.forget_producers(ended)
        if stop_requested:
            return 0
    return 0


#: Upper bounds (seconds) of the commit latency histogram the writer keeps for the node's metrics.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class CommitStats:
    """Each group commit's duration (append + commit, with its fsync under `disk`), counted into
    COMMIT_BUCKETS (the last count is +Inf); answered to the node's `stats`."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    total_s: float = 0.0
    commits: int = 0

    def observe(self, seconds: float) -> None:
        self.commits += 1
        self.total_s += seconds
        self.counts[next((i for i, b in enumerate(COMMIT_BUCKETS) if seconds <= b), len(COMMIT_BUCKETS))] += 1

    def to_plain(self) -> dict[str, object]:
        return {"bounds": list(COMMIT_BUCKETS), "counts": list(self.counts), "sum": self.total_s,
                "commits": self.commits}


def _append(store: ChainStore, groups: list[tuple[bool, object, str]],
            marks: dict[str, int]) -> tuple[list[int], int]:
    """Store this turn's events in one transaction: (items stored per group, rejected).

    Optimistic: the envelopes' items go to the store as they came off the wire; only if one
    of them cannot be encoded (the store raises before writing anything) is every item
    validated one by one, the bad ones logged and dropped, and the rest stored.
    """
    wire = [(trusted, items) for trusted, items, _ in groups if type(items) is list]
    if len(wire) == len(groups):  # every body is a list
        try:
            _stored, rejected = store.append_groups(wire, marks)
            return [len(items) for _, items in wire], rejected
        except (TypeError, ValueError, AttributeError, struct.error):
            pass
    checked: list[tuple[bool, list[EventItem]]] = []
    counts: list[int] = []
    for trusted, items, sender in groups:
        good: list[EventItem] = []
        counts.append(_collect(items, sender, good))
        checked.append((trusted, good))
    _stored, rejected = store.append_groups(checked, marks)
    return counts, rejected


def _collect(body: object, sender: str, good: list[EventItem]) -> int:
    """Validate an `events` body item by item; append well-formed items to `good`, log and
    skip the rest; return how many were good.

    Well-formed: [actor_id str, incarnation int, event_type str, timestamp int, data bytes]
    with values the canonical encoding can hold (u32 incarnation, u64 timestamp,
    ids of at most 65535 UTF-8 bytes): one bad item must not stop the writer.
    """
    if not isinstance(body, list):
        log.error("dropped events from %r: body is not a list", sender)
        return 0
    n = 0
    for item in body:
        if type(item) is list and len(item) == 5:
            actor_id, incarnation, event_type, timestamp, data = item
            if (type(actor_id) is str and type(incarnation) is int and type(event_type) is str
                    and type(timestamp) is int and type(data) is bytes
                    and 0 <= incarnation <= _U32_MAX and 0 <= timestamp <= _U64_MAX
                    and (len(actor_id) <= _SAFE_CHARS or _fits_u16(actor_id))
                    and (len(event_type) <= _SAFE_CHARS or _fits_u16(event_type))):
                good.append(item)
                n += 1
                continue
        log.error("dropped a malformed event from %r", sender)
    return n


_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
#: A str of at most this many characters is at most 65535 bytes in UTF-8 (4 bytes a character at most).
_SAFE_CHARS = 65535 // 4


def _fits_u16(text: str) -> bool:
    try:
        return len(text.encode("utf-8")) <= 65535
    except UnicodeEncodeError:  # lone surrogates cannot be encoded
        return False
