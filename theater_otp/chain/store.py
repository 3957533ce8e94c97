"""SQLite storage for chains (WAL mode). The writer process is the only writer;
any process may read (the CLI reads directly, even when the node is down).

Events are stored as chunks: one row holds a run of consecutive events of one
actor (`first_seq`..`last_seq`) as concatenated records, each
`u32 len(encoding) || canonical encoding || 32-byte hash` (docs/chain-format.md).
One row per actor per group commit, not per event, is what lets the writer
pass 100k durable events/s: SQLite's cost is per row, and the record is the
very bytes SHA-256 covers, so storing needs no second encoding and verifying
needs no re-encoding.

Invariant: for every actor, its chunks ordered by first_seq hold seq 0..n-1
with no gap, each event's parent is the previous event's hash, and
`actors.head_*` names the last event.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import native
from .event import RECORD_LEN, ChainEvent, EventHasher, MalformedRecord, decode_record, split_records

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    actor_id    TEXT    NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    records     BLOB    NOT NULL,
    UNIQUE (actor_id, first_seq)
);
CREATE TABLE IF NOT EXISTS actors (
    actor_id    TEXT PRIMARY KEY,
    path        TEXT,
    name        TEXT,
    incarnation INTEGER NOT NULL DEFAULT 0,
    head_seq    INTEGER NOT NULL DEFAULT -1,
    head_hash   BLOB
);
CREATE INDEX IF NOT EXISTS actors_by_path ON actors(path);
CREATE TABLE IF NOT EXISTS cut_records (
    actor_id    TEXT    NOT NULL,
    from_seq    INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    records     BLOB    NOT NULL,
    cut_at      INTEGER NOT NULL,
    why         TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS producers (
    producer    TEXT PRIMARY KEY,
    batch_seq   INTEGER NOT NULL
);
"""

#: Most events one chunk row holds; a longer run in one commit becomes several rows.
MAX_CHUNK_EVENTS = 4096

#: One event as `_append` takes it: (actor_id, incarnation, event_type, timestamp, data). A tuple
#: from append_batch, or a list just as msgpack decoded it off the wire: the writer's hot path hands
#: those over unchecked (append_groups), so the element types are only known once `record` has
#: taken them; one the layout cannot hold raises before anything is written.
EventItem = Sequence[Any]
#: append_batch's and append_items' items: an event item plus whether the node sent it (trusted).
TrustedItem = tuple[str, int, str, int, bytes, bool]


class Durability(str, enum.Enum):
    """What an acknowledgement from the chain-writer promises (`up --durability`)."""

    #: each group commit is fsynced: acknowledged events survive a power loss or a kernel crash
    DISK = "disk"
    #: each group commit is in the OS before the ack (SQLite WAL, synchronous=NORMAL): acknowledged
    #: events survive the death of any process, the chain-writer's included, but a power loss or a
    #: kernel crash may take the last commits (never a torn one: the WAL's checksums drop it)
    PROCESS = "process"


def connect(path: Path, readonly: bool = False, durability: Durability = Durability.DISK) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        # Chunks are large blobs: 16 KiB pages (only takes on a new file) and a checkpoint every
        # ~64 MiB of WAL instead of 4 MiB write them with about half the I/O (bench/chain.py).
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL" if durability is Durability.DISK else "PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=4000")
        conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
        conn.executescript(SCHEMA)
    return conn


class ChainStore:
    """Appends events to per-actor chains. Owns its connection; `close()` is idempotent."""

    def __init__(self, path: Path, durability: Durability = Durability.DISK):
        self.conn = connect(path, durability=durability)
        _migrate_event_rows(self.conn)
        self.heads: dict[str, tuple[int, bytes | None, int]] = {}  # actor -> (seq, hash, incarnation)
        self._hasher = EventHasher()
        for actor_id, seq, h, inc in self.conn.execute("SELECT actor_id, head_seq, head_hash, incarnation FROM actors"):
            self.heads[actor_id] = (seq, h, inc)
        #: producer id -> the last batch applied from it (for exactly-once appends of resent batches)
        self.applied: dict[str, int] = dict(self.conn.execute("SELECT producer, batch_seq FROM producers"))

    def forget_producers(self, producers: list[str]) -> None:
        """Drop the batch marks of producers that will send nothing more (their worker exited), so
        the marks kept are those of live producers and the node's, not one per incarnation ever."""
        for producer in producers:
            self.applied.pop(producer, None)
        self.conn.executemany("DELETE FROM producers WHERE producer=?", [(p,) for p in producers])

    def close(self) -> None:
        self.conn.close()  # sqlite3's close is idempotent

    def register(self, actor_id: str, path: str, name: str) -> None:
        self.conn.execute(
            "INSERT INTO actors(actor_id, path, name) VALUES (?, ?, ?) "
            "ON CONFLICT(actor_id) DO UPDATE SET path=excluded.path, name=excluded.name",
            (actor_id, path, name))
        self.heads.setdefault(actor_id, (-1, None, 0))

    def append_batch(self, items: Iterable[TrustedItem]) -> tuple[list[ChainEvent], int]:
        """Append (actor_id, incarnation, event_type, timestamp, data, trusted) items in one transaction.

        An untrusted item (written by a worker) from an incarnation older than the
        actor's current one is rejected: a late event from a dead incarnation never
        splices into the new chain. Trusted items come from the node, which records
        what it saw of an incarnation (its exit) and may arrive after the next
        incarnation began; they are appended at the head and do not move the
        current incarnation. Returns the stored events and the number rejected.
        An item the canonical layout cannot hold (e.g. a negative timestamp) raises
        before anything is written, and the store stays as it was.
        """
        stored: list[ChainEvent] = []
        _, rejected = self._append(_grouped(items), stored)
        return stored, rejected

    def append_items(self, items: Iterable[TrustedItem],
                     marks: dict[str, int] | None = None) -> tuple[int, int]:
        """`append_batch` without building ChainEvent records: (stored, rejected).

        `marks` (producer -> last batch seq) are stored in the same transaction as the events,
        so a batch is applied exactly once however often its producer resends it.
        """
        return self._append(_grouped(items), None, marks or {})

    def append_groups(self, groups: Iterable[tuple[bool, Iterable[EventItem]]],
                      marks: dict[str, int] | None = None) -> tuple[int, int]:
        """`append_items` for the writer's hot path: (trusted, items) per envelope, each item
        [actor_id, incarnation, event_type, timestamp, data] as it came off the wire. Items are
        not checked first: one the layout cannot hold raises (TypeError, ValueError, ...) before
        anything is written, and the writer then validates item by item (writer._collect)."""
        return self._append(groups, None, marks or {})

    def _append(self, groups: Iterable[tuple[bool, Iterable[EventItem]]],
                events: list[ChainEvent] | None, marks: dict[str, int] | None = None) -> tuple[int, int]:
        heads = self.heads
        hasher = self._hasher
        actor_parts, type_parts = hasher.actor_parts, hasher.type_parts
        record = native.record
        runs: dict[str, tuple[int, list[bytes]]] = {}   # actor -> (first seq, records)
        full: list[tuple[str, int, int, bytes]] = []   # chunk rows closed at MAX_CHUNK_EVENTS
        rejected = 0
        try:
            for trusted, items in groups:
                for actor_id, incarnation, event_type, timestamp, data in items:
                    head = heads.get(actor_id)
                    seq, parent, current = head if head is not None else (-1, None, 0)
                    if incarnation < current and not trusted:
                        rejected += 1
                        continue
                    seq += 1
                    rec, h = record(actor_parts.get(actor_id) or hasher.actor_part(actor_id), seq, incarnation,
                                    parent, type_parts.get(event_type) or hasher.type_part(event_type),
                                    timestamp, data)
                    heads[actor_id] = (seq, h, incarnation if incarnation > current else current)
                    run = runs.get(actor_id)
                    if run is None or len(run[1]) == MAX_CHUNK_EVENTS:
                        if run is not None:
                            full.append((actor_id, run[0], seq - 1, b"".join(run[1])))
                        run = runs[actor_id] = (seq, [])
                    run[1].append(rec)
                    if events is not None:
                        events.append(ChainEvent(actor_id, seq, incarnation, parent, event_type, timestamp, data, h))
        except BaseException:
            self._reload_heads()  # the heads of the items before the bad one moved: undo
            raise
        stored = len(full) * MAX_CHUNK_EVENTS + sum(len(r[1]) for r in runs.values())
        if not stored and not marks:
            return 0, rejected
        full += [(a, r[0], r[0] + len(r[1]) - 1, b"".join(r[1])) for a, r in runs.items()]
        c = self.conn
        c.execute("BEGIN")
        try:
            if full:
                c.executemany("INSERT INTO chunks(actor_id, first_seq, last_seq, records) VALUES (?, ?, ?, ?)", full)
            if marks:
                c.executemany("INSERT INTO producers(producer, batch_seq) VALUES (?, ?) "
                              "ON CONFLICT(producer) DO UPDATE SET batch_seq=excluded.batch_seq", marks.items())
            c.executemany(
                "INSERT INTO actors(actor_id, incarnation, head_seq, head_hash) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(actor_id) DO UPDATE SET incarnation=excluded.incarnation, "
                "head_seq=excluded.head_seq, head_hash=excluded.head_hash",
                [(a, heads[a][2], heads[a][0], heads[a][1]) for a in runs])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            # the in-memory heads are ahead of the database now: reload them
            self._reload_heads()
            raise
        if marks:
            self.applied.update(marks)
        return stored, rejected

    def cut_torn_tails(self, window: int = 64) -> list[tuple[str, int, int, str]]:
        """Check the newest `window` events of every chain; cut each chain at its first bad one.

        SQLite's WAL already discards a torn, uncommitted write at open; this catches
        what it cannot see (a damaged record in the tail). The chunks holding the last
        `window` events are checked as `verify` checks them (ChainScan); the first bad
        event is cut with everything after it, and the head moves back to the last good
        one. The cut bytes are kept verbatim in `cut_records` (with when and why), never
        thrown away: a damaged tail is evidence. Returns (actor, first cut seq, events
        cut, why) per cut chain, for the log.
        """
        from .verify import ChainScan, hash_before

        cuts: list[tuple[str, int, int, str]] = []
        for actor_id, (head_seq, _h, _inc) in list(self.heads.items()):
            lo = max(0, head_seq - window + 1)
            chunks = [(rowid, first, last, bytes(blob))
                      for rowid, first, last, blob in self.conn.execute(_FROM_SEQ, (actor_id, lo))]
            if not chunks:
                continue
            scan = ChainScan(actor_id, chunks[0][1], hash_before(self.conn, actor_id, chunks[0][1]))
            for i, (_rowid, first, last, blob) in enumerate(chunks):
                problem = scan.chunk(first, last, blob)
                if problem is not None:
                    at_chunk, why = i, f"{problem.what}: expected {problem.expected}, found {problem.found}"
                    break
            else:
                if scan.expect - 1 == head_seq:
                    continue
                at_chunk, why = len(chunks) - 1, f"head says seq {head_seq} but the last event is {scan.expect - 1}"
            bad_at, at_offset = scan.expect, scan.offset
            cut_blob = b"".join([chunks[at_chunk][3][at_offset:]] + [c[3] for c in chunks[at_chunk + 1:]])
            n = _count_records(cut_blob)
            new_seq, new_hash = scan.expect - 1, scan.prev
            c = self.conn
            c.execute("BEGIN")
            if cut_blob:
                c.execute("INSERT INTO cut_records VALUES (?, ?, ?, ?, ?, ?)",
                          (actor_id, bad_at, n, cut_blob, time.time_ns(), why))
            for k, (rowid, _first, _last, blob) in enumerate(chunks[at_chunk:]):
                if k == 0 and at_offset > 0:
                    c.execute("UPDATE chunks SET records=?, last_seq=? WHERE rowid=?",
                              (blob[:at_offset], new_seq, rowid))
                else:
                    c.execute("DELETE FROM chunks WHERE rowid=?", (rowid,))
            c.execute("UPDATE actors SET head_seq=?, head_hash=? WHERE actor_id=?", (new_seq, new_hash, actor_id))
            c.execute("COMMIT")
            self.heads[actor_id] = (new_seq, new_hash, self.heads[actor_id][2])
            cuts.append((actor_id, bad_at, n, why))
        return cuts

    def _reload_heads(self) -> None:
        self.heads = {a: (s, h, i) for a, s, h, i in
                      self.conn.execute("SELECT actor_id, head_seq, head_hash, incarnation FROM actors")}


def _grouped(items: Iterable[TrustedItem]) -> Iterator[tuple[bool, tuple[EventItem]]]:
    """(actor_id, incarnation, event_type, timestamp, data, trusted) items as _append's groups."""
    for *item, trusted in items:
        yield trusted, (item,)


def _count_records(blob: bytes) -> int:
    """Records in `blob`, a truncated one at the end counting as one."""
    n = 0
    try:
        for _ in split_records(blob):
            n += 1
    except MalformedRecord:
        n += 1
    return n


def _migrate_event_rows(conn: sqlite3.Connection) -> None:
    """Move a store written before chunks (one `events` row per event) into chunks, verbatim:
    each record holds the encoding of the stored fields and the stored hash, so whatever
    verified (or did not) before still does (or does not)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone():
        return
    from .event import canonical_bytes

    conn.execute("BEGIN")
    rows: list[tuple[str | None, int, int, bytes]] = []
    current: str | None = None
    first = 0
    parts: list[bytes] = []

    def close_run() -> None:
        if parts:
            rows.append((current, first, first + len(parts) // 3 - 1, b"".join(parts)))

    for actor_id, seq, inc, parent, et, ts, data, h in conn.execute(
            "SELECT actor_id, seq, incarnation, parent_hash, event_type, timestamp, data, hash "
            "FROM events ORDER BY actor_id, seq"):
        try:
            enc = canonical_bytes(actor_id, seq, inc, parent, et, ts, bytes(data))
        except Exception:  # noqa: BLE001 - any field the layout cannot hold
            enc = b""  # unencodable fields: an empty encoding, which verify reports
        if actor_id != current or len(parts) // 3 == MAX_CHUNK_EVENTS or seq != first + len(parts) // 3:
            close_run()
            current, first, parts = actor_id, seq, []
        parts += (RECORD_LEN.pack(len(enc)), enc, bytes(h))
    close_run()
    conn.executemany("INSERT INTO chunks(actor_id, first_seq, last_seq, records) VALUES (?, ?, ?, ?)", rows)
    conn.execute("DROP TABLE events")
    conn.execute("COMMIT")


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

#: The chunks of actor ?1 from the one holding seq ?2 on: (rowid, first_seq, last_seq, records).
_FROM_SEQ = ("SELECT rowid, first_seq, last_seq, records FROM chunks WHERE actor_id=?1 AND first_seq >= "
             "coalesce((SELECT max(first_seq) FROM chunks WHERE actor_id=?1 AND first_seq <= ?2), 0) "
             "ORDER BY first_seq")


def _events_in(blob: bytes) -> Iterator[ChainEvent]:
    for _o, enc, h in split_records(bytes(blob)):
        yield decode_record(enc, h)


def read_events(conn: sqlite3.Connection, actor_id: str, event_type: str | None = None,
                since_seq: int = 0, limit: int | None = None, last: bool = False,
                since_ns: int | None = None) -> list[ChainEvent]:
    """Events of one actor in seq order; `event_type` matches exactly or as a dotted prefix
    (`message` matches `message.send`); `since_ns` keeps events stamped at or after it; `last`
    keeps the newest `limit` ones."""
    def wanted(e: ChainEvent) -> bool:
        return (e.seq >= since_seq and (since_ns is None or e.timestamp >= since_ns)
                and (not event_type or e.event_type == event_type or e.event_type.startswith(event_type + ".")))

    if last and limit:
        out: list[ChainEvent] = []
        for _first, blob in conn.execute(
                "SELECT first_seq, records FROM chunks WHERE actor_id=? AND last_seq >= ? ORDER BY first_seq DESC",
                (actor_id, since_seq)):
            out[:0] = [e for e in _events_in(blob) if wanted(e)]
            if len(out) >= limit:
                break
        return out[-limit:]
    out = []
    for _rowid, _first, _last, blob in conn.execute(_FROM_SEQ, (actor_id, since_seq)):
        for e in _events_in(blob):
            if wanted(e):
                out.append(e)
                if limit and len(out) >= limit:
                    return out
    return out


def iter_chain(conn: sqlite3.Connection, actor_id: str) -> Iterator[ChainEvent]:
    for _first, blob in conn.execute(
            "SELECT first_seq, records FROM chunks WHERE actor_id=? ORDER BY first_seq", (actor_id,)):
        yield from _events_in(blob)


def count_events(conn: sqlite3.Connection, actor_id: str | None = None) -> tuple[int, int]:
    """(events, chains) stored, per the chunk index."""
    sql = "SELECT coalesce(sum(last_seq - first_seq + 1), 0), count(DISTINCT actor_id) FROM chunks"
    events, chains = conn.execute(sql + (" WHERE actor_id=?" if actor_id else ""),
                                  (actor_id,) if actor_id else ()).fetchone()
    return events, chains


def find_actor(conn: sqlite3.Connection, ref: str) -> list[tuple[str, str | None, str | None]]:
    """Actors `ref` names, best kind of match first (id, path, path suffix, manifest name), newest first
    within a kind: (actor_id, path, name)."""
    rows = list(conn.execute("SELECT rowid, actor_id, path, name FROM actors"))
    tests: tuple[Callable[[str, str | None, str | None], bool], ...] = (
        lambda a, p, n: a == ref, lambda a, p, n: p == ref,
        lambda a, p, n: p is not None and p.endswith("/" + ref), lambda a, p, n: n == ref)
    for test in tests:
        hits = sorted((r for r in rows if test(r[1], r[2], r[3])), key=lambda r: -r[0])
        if hits:
            return [(a, p, n) for _, a, p, n in hits]
    return []
