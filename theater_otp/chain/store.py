"""SQLite storage for chains (WAL mode). The writer process is the only writer;
any process may read (the CLI reads directly, even when the node is down).

Invariant: for every actor, rows have seq 0..n-1 with no gap and each row's
parent_hash is the previous row's hash; `actors.head_*` mirrors the last row.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from .event import ChainEvent, EventHasher, make_event  # noqa: F401  (make_event: kept for importers)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    actor_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    parent_hash BLOB,
    event_type  TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    PRIMARY KEY (actor_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actors (
    actor_id    TEXT PRIMARY KEY,
    path        TEXT,
    name        TEXT,
    incarnation INTEGER NOT NULL DEFAULT 0,
    head_seq    INTEGER NOT NULL DEFAULT -1,
    head_hash   BLOB
);
CREATE INDEX IF NOT EXISTS actors_by_path ON actors(path);
CREATE TABLE IF NOT EXISTS cut_events (
    actor_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    parent_hash BLOB,
    event_type  TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    cut_at      INTEGER NOT NULL,
    why         TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS producers (
    producer    TEXT PRIMARY KEY,
    batch_seq   INTEGER NOT NULL
);
"""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
    return conn


class ChainStore:
    """Appends events to per-actor chains. Owns its connection; `close()` is idempotent."""

    def __init__(self, path: Path):
        self.conn = connect(path)
        self.heads: dict[str, tuple[int, bytes | None, int]] = {}  # actor -> (seq, hash, incarnation)
        self._hasher = EventHasher()
        for actor_id, seq, h, inc in self.conn.execute("SELECT actor_id, head_seq, head_hash, incarnation FROM actors"):
            self.heads[actor_id] = (seq, h, inc)
        #: producer id -> the last batch applied from it (for exactly-once appends of resent batches)
        self.applied: dict[str, int] = dict(self.conn.execute("SELECT producer, batch_seq FROM producers"))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def register(self, actor_id: str, path: str, name: str) -> None:
        self.conn.execute(
            "INSERT INTO actors(actor_id, path, name) VALUES (?, ?, ?) "
            "ON CONFLICT(actor_id) DO UPDATE SET path=excluded.path, name=excluded.name",
            (actor_id, path, name))
        self.heads.setdefault(actor_id, (-1, None, 0))

    def append_batch(self, items: Iterable[tuple[str, int, str, int, bytes, bool]]) -> tuple[list[ChainEvent], int]:
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
        _, rejected = self._append(items, stored)
        return stored, rejected

    def append_items(self, items: Iterable[tuple[str, int, str, int, bytes, bool]],
                     marks: dict[str, int] | None = None) -> tuple[int, int]:
        """`append_batch` without building ChainEvent records (the writer's path): (stored, rejected).

        `marks` (producer -> last batch seq) are stored in the same transaction as the events,
        so a batch is applied exactly once however often its producer resends it.
        """
        return self._append(items, None, marks or {})

    def _append(self, items: Iterable[tuple[str, int, str, int, bytes, bool]],
                events: list[ChainEvent] | None, marks: dict[str, int] | None = None) -> tuple[int, int]:
        heads = self.heads
        hasher = self._hasher
        flat: list = []          # the rows' columns, one after the other (see _insert)
        rejected = 0
        touched: set[str] = set()
        try:
            for actor_id, incarnation, event_type, timestamp, data, trusted in items:
                head = heads.get(actor_id)
                seq, parent, current = head if head is not None else (-1, None, 0)
                if incarnation < current and not trusted:
                    rejected += 1
                    continue
                seq += 1
                h = hasher(actor_id, seq, incarnation, parent, event_type, timestamp, data)
                heads[actor_id] = (seq, h, incarnation if incarnation > current else current)
                flat += (actor_id, seq, incarnation, parent, event_type, timestamp, data, h)
                touched.add(actor_id)
                if events is not None:
                    events.append(ChainEvent(actor_id, seq, incarnation, parent, event_type, timestamp, data, h))
        except BaseException:
            self._reload_heads()  # the heads of the items before the bad one moved: undo
            raise
        if not flat and not marks:
            return 0, rejected
        c = self.conn
        c.execute("BEGIN")
        try:
            if flat:
                _insert(c, flat)
            if marks:
                c.executemany("INSERT INTO producers(producer, batch_seq) VALUES (?, ?) "
                              "ON CONFLICT(producer) DO UPDATE SET batch_seq=excluded.batch_seq", marks.items())
            c.executemany(
                "INSERT INTO actors(actor_id, incarnation, head_seq, head_hash) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(actor_id) DO UPDATE SET incarnation=excluded.incarnation, "
                "head_seq=excluded.head_seq, head_hash=excluded.head_hash",
                [(a, heads[a][2], heads[a][0], heads[a][1]) for a in touched])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            # the in-memory heads are ahead of the database now: reload them
            self._reload_heads()
            raise
        if marks:
            self.applied.update(marks)
        return len(flat) // _COLUMNS, rejected

    def cut_torn_tails(self, window: int = 64) -> list[tuple[str, int, int, str]]:
        """Check the newest `window` events of every chain; cut each chain at its first bad one.

        SQLite's WAL already discards a torn, uncommitted write at open; this catches
        what it cannot see (a damaged row in the tail). An event whose seq, parent link
        or hash is wrong is removed with everything after it, and the head moves back.
        The cut rows are kept in `cut_events` (with when and why), never thrown away:
        a damaged tail is evidence. Returns (actor, first cut seq, events cut, why) per
        cut chain, for the log.
        """
        import time
        from .event import event_hash

        cuts = []
        for actor_id, (head_seq, _h, _inc) in list(self.heads.items()):
            lo = max(0, head_seq - window + 1)
            rows = list(self.conn.execute(
                "SELECT seq, incarnation, parent_hash, event_type, timestamp, data, hash FROM events "
                "WHERE actor_id=? AND seq>=? ORDER BY seq", (actor_id, max(0, lo - 1))))
            prev_hash = None
            expect = rows[0][0] if rows else lo
            bad_at, why = None, ""
            for seq, inc, parent, etype, ts, data, h in rows:
                if seq != expect:
                    bad_at, why = expect, f"missing event {expect}"
                    break
                if seq >= lo and (seq > 0 or parent is not None) and parent != prev_hash:
                    bad_at, why = seq, "parent hash does not match the previous event"
                    break
                if seq >= lo and event_hash(actor_id, seq, inc, parent, etype, ts, bytes(data)) != bytes(h):
                    bad_at, why = seq, "hash does not match the event"
                    break
                prev_hash, expect = bytes(h), seq + 1
            if bad_at is None and expect != head_seq + 1 and rows:
                bad_at, why = expect, f"head says seq {head_seq} but the last event is {expect - 1}"
            if bad_at is None:
                continue
            c = self.conn
            c.execute("BEGIN")
            c.execute("INSERT INTO cut_events SELECT *, ?, ? FROM events WHERE actor_id=? AND seq>=?",
                      (time.time_ns(), why, actor_id, bad_at))
            n = c.execute("DELETE FROM events WHERE actor_id=? AND seq>=?", (actor_id, bad_at)).rowcount
            last = c.execute("SELECT seq, hash FROM events WHERE actor_id=? ORDER BY seq DESC LIMIT 1",
                             (actor_id,)).fetchone()
            new_seq, new_hash = (last[0], bytes(last[1])) if last else (-1, None)
            c.execute("UPDATE actors SET head_seq=?, head_hash=? WHERE actor_id=?", (new_seq, new_hash, actor_id))
            c.execute("COMMIT")
            self.heads[actor_id] = (new_seq, new_hash, self.heads[actor_id][2])
            cuts.append((actor_id, bad_at, n, why))
        return cuts

    def _reload_heads(self) -> None:
        self.heads = {a: (s, h, i) for a, s, h, i in
                      self.conn.execute("SELECT actor_id, head_seq, head_hash, incarnation FROM actors")}


_COLUMNS = 8
#: Rows per INSERT statement: binding many rows per statement saves SQLite's per-statement
#: work (reset, VM start) on every row; 16 was the best of 1..1024 measured (bench/chain.py).
_ROWS_PER_INSERT = 16
_INSERT_ONE = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MANY = "INSERT INTO events VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * _ROWS_PER_INSERT)


def _insert(c: sqlite3.Connection, flat: list) -> None:
    """Insert rows given as one flat list of column values (8 per row), in order."""
    step = _COLUMNS * _ROWS_PER_INSERT
    full = len(flat) - len(flat) % step
    if full:
        c.executemany(_INSERT_MANY, [flat[i:i + step] for i in range(0, full, step)])
    if full < len(flat):
        c.executemany(_INSERT_ONE, [flat[i:i + _COLUMNS] for i in range(full, len(flat), _COLUMNS)])


def _row(r: tuple) -> ChainEvent:
    return ChainEvent(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]))


def read_events(conn: sqlite3.Connection, actor_id: str, event_type: str | None = None,
                since_seq: int = 0, limit: int | None = None, last: bool = False) -> list[ChainEvent]:
    """Events of one actor in seq order; `last` keeps the newest `limit` ones."""
    sql = "SELECT actor_id, seq, incarnation, parent_hash, event_type, timestamp, data, hash FROM events WHERE actor_id=? AND seq>=?"
    args: list = [actor_id, since_seq]
    if event_type:
        sql += " AND (event_type=? OR substr(event_type, 1, ?)=?)"  # exact, or a dotted prefix
        args += [event_type, len(event_type) + 1, event_type + "."]
    sql += " ORDER BY seq DESC" if last else " ORDER BY seq"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    rows = [_row(r) for r in conn.execute(sql, args)]
    return rows[::-1] if last else rows


def iter_chain(conn: sqlite3.Connection, actor_id: str) -> Iterator[ChainEvent]:
    yield from (_row(r) for r in conn.execute(
        "SELECT actor_id, seq, incarnation, parent_hash, event_type, timestamp, data, hash "
        "FROM events WHERE actor_id=? ORDER BY seq", (actor_id,)))


def find_actor(conn: sqlite3.Connection, ref: str) -> list[tuple[str, str | None, str | None]]:
    """Actors `ref` names, best kind of match first (id, path, path suffix, manifest name), newest first
    within a kind: (actor_id, path, name)."""
    rows = list(conn.execute("SELECT rowid, actor_id, path, name FROM actors"))
    tests = (lambda a, p, n: a == ref, lambda a, p, n: p == ref,
             lambda a, p, n: bool(p) and p.endswith("/" + ref), lambda a, p, n: n == ref)
    for test in tests:
        hits = sorted((r for r in rows if test(r[1], r[2], r[3])), key=lambda r: -r[0])
        if hits:
            return [(a, p, n) for _, a, p, n in hits]
    return []
