"""Chain verification: recompute every hash and check the links (docs/chain-format.md).

What is verified, per actor:
  * sequence numbers run 0, 1, 2, ... with no gap (a dropped event is reported
    at the first missing seq);
  * event 0 has no parent; event n's parent_hash is event n-1's hash;
  * each event's hash is SHA-256 of its canonical encoding (theater_otp.chain.event);
  * verify_store only: the `actors` row's head (head_seq, head_hash) names the
    last event, so a chain cut short at its tail is caught too.
Incarnation numbers are covered by the hash but not ordered: the node records
what it saw of an incarnation (its exit) and that event may land after the
next incarnation's first events (ChainStore.append_batch, "trusted" items).

The first problem of each actor is reported; later events are not looked at.

Speed: the hot loop works on raw sqlite rows, packs each event's fixed fields
with one precompiled struct and hashes `b"".join(...)` once; anything unusual
(first event, a mismatch, a field of the wrong type) drops to `_diagnose`, the
slow reference check that says exactly what is wrong. With `jobs` > 1 the
events are split into seq ranges verified by that many worker processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .event import MAGIC, SEQ_INC_PARENT, TS_LEN, ChainEvent, fast_sha256

#: Below this many events (estimated from the actors table) verify_store stays in-process.
PARALLEL_MIN_EVENTS = 200_000

_U16 = struct.Struct(">H").pack
_FIXED = SEQ_INC_PARENT   # seq, incarnation, has_parent=1, parent hash (32 bytes: checked first)
_TAIL = TS_LEN            # timestamp, len(data)
_COLUMNS = "seq, incarnation, parent_hash, CAST(event_type AS BLOB), timestamp, data, hash"
_FAST_ERRORS = (TypeError, ValueError, OverflowError, struct.error)


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad event of one actor's chain."""

    actor_id: str
    seq: int
    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return (f"actor {self.actor_id} event {self.seq}: {self.what}: "
                f"expected {_short(self.expected)}, found {_short(self.found)}")


def _short(text: str) -> str:
    """Hashes read better cut to 16 hex digits; the full value stays in the field."""
    if len(text) > 24 and all(c in "0123456789abcdef" for c in text):
        return text[:16] + "…"
    return text


# ---------------------------------------------------------------------------
# the core: one actor's rows, in seq order
# ---------------------------------------------------------------------------
# A row is (seq, incarnation, parent_hash, event_type as UTF-8 bytes, timestamp, data, hash).

def _scan(actor_id: str, rows: Iterator[tuple], expect: int = 0,
          prev: bytes | None = None) -> tuple[Problem | None, int, bytes | None]:
    """Check rows that should carry seq `expect`, `expect+1`, ...; `prev` is the hash before them.

    Returns (first problem or None, the seq after the last good row, the last good hash).
    """
    aid = actor_id.encode("utf-8")
    prefix = MAGIC + _U16(len(aid)) + aid
    sha = fast_sha256
    join = b"".join
    fixed, tail, u16 = _FIXED, _TAIL, _U16
    types: dict[bytes, bytes] = {}
    row = None
    while True:
        if prev is None:
            # first event (no parent) or unknown predecessor: the careful path
            row = next(rows, None)
            if row is None:
                return None, expect, prev
        else:
            try:
                for row in rows:
                    seq, inc, parent, et, ts, data, h = row
                    if seq != expect or parent != prev:
                        break
                    etp = types.get(et)
                    if etp is None:
                        etp = types[et] = u16(len(et)) + et
                    if sha(join((prefix, fixed(seq, inc, 1, parent), etp, tail(ts, len(data)), data))).digest() != h:
                        break
                    prev = h
                    expect += 1
                else:
                    return None, expect, prev
            except _FAST_ERRORS:
                pass
        problem = _diagnose(actor_id, expect, prev, row)
        if problem is not None:
            return problem, expect, prev
        prev = row[6]
        expect += 1


def _diagnose(actor_id: str, expect: int, prev: bytes | None, row: tuple) -> Problem | None:
    """The reference check of one row, field by field; None when the row is good."""
    seq, inc, parent, et, ts, data, h = row

    def problem(what: str, expected: str, found: str) -> Problem:
        return Problem(actor_id, expect, what, expected, found)

    if type(seq) is not int or seq != expect:
        if type(seq) is int and seq > expect:
            return problem("missing event", f"seq {expect}", f"seq {seq}")
        return problem("unexpected sequence number", str(expect), repr(seq))
    if parent != prev:
        if parent is not None and not isinstance(parent, bytes):
            return problem("malformed parent hash", "a 32-byte blob", _describe(parent))
        return problem("parent mismatch", _hex(prev), _hex(parent))
    if type(inc) is not int or not 0 <= inc < 1 << 32:
        return problem("malformed incarnation", "an integer in 0..2^32-1", _describe(inc))
    if not isinstance(et, bytes) or len(et) >= 1 << 16:
        return problem("malformed event type", "text of at most 65535 bytes", _describe(et))
    if type(ts) is not int or not 0 <= ts < 1 << 64:
        return problem("malformed timestamp", "an integer in 0..2^64-1", _describe(ts))
    if not isinstance(data, bytes):
        return problem("malformed data", "a blob", _describe(data))
    if not isinstance(h, bytes) or len(h) != 32:
        return problem("truncated hash" if isinstance(h, bytes) and len(h) < 32 else "malformed hash",
                       "a 32-byte blob", _describe(h))
    aid = actor_id.encode("utf-8")
    encoding = b"".join((
        MAGIC, _U16(len(aid)), aid,
        struct.pack(">QI", seq, inc),
        b"\x01" + parent if parent is not None else b"\x00",
        _U16(len(et)), et,
        _TAIL(ts, len(data)), data,
    ))
    computed = hashlib.sha256(encoding).digest()
    if computed != h:
        return problem("hash mismatch", computed.hex(), h.hex())
    return None


def _hex(value: object) -> str:
    if value is None:
        return "no parent"
    if isinstance(value, bytes):
        return value.hex() if len(value) == 32 else f"{value.hex()} ({len(value)} bytes)"
    return _describe(value)


def _describe(value: object) -> str:
    if isinstance(value, bytes):
        return f"a {len(value)}-byte blob"
    if value is None:
        return "NULL"
    return f"{type(value).__name__} {value!r}"[:80]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------

def verify_chain(events: Iterable[ChainEvent]) -> Problem | None:
    """Verify one actor's events, given in seq order from seq 0; the first problem or None.

    Every event must belong to the first event's actor. No head check (see verify_store).
    """
    it = iter(events)
    first = next(it, None)
    if first is None:
        return None
    actor_id = first.actor_id
    stray: list[ChainEvent] = []

    def rows() -> Iterator[tuple]:
        for e in itertools.chain((first,), it):
            if e.actor_id != actor_id:
                stray.append(e)
                return
            et = e.event_type
            yield (e.seq, e.incarnation, e.parent_hash, et.encode("utf-8") if isinstance(et, str) else et,
                   e.timestamp, e.data, e.hash)

    problem, expect, _ = _scan(actor_id, rows())
    if problem is None and stray:
        problem = Problem(actor_id, expect, "event of another actor", actor_id, stray[0].actor_id)
    return problem


def verify_store(conn: sqlite3.Connection, actor_id: str | None = None,
                 jobs: int | None = None) -> list[Problem]:
    """Verify the chains in a chain.db connection: one actor, or every actor when None.

    Actors come from the `actors` table plus any actor that has rows in `events`;
    an actor with neither has nothing to verify. Returns the first problem of each
    bad actor, sorted by actor id (empty: everything verifies). All reads happen in
    one read transaction, so a writer appending meanwhile does not disturb the check.

    `jobs`: processes to use; None picks 1 for small stores (or in-memory ones)
    and up to the CPU count for large ones.
    """
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")
    try:
        heads = {a: s for a, s in conn.execute("SELECT actor_id, head_seq FROM actors")}
        if actor_id is None:
            ids = sorted(set(heads) | set(_event_actors(conn)))
        else:
            ids = [actor_id]
        sizes = [(a, _size(heads.get(a))) for a in ids]
        path = _db_path(conn)
        n = _choose_jobs(jobs, sum(s for _, s in sizes), path)
        if n <= 1:
            found = _run_chunks(conn, [(a, None, None) for a in ids])
        else:
            found = _run_parallel(path, _partition(sizes, n))
    finally:
        if own_txn:
            conn.execute("ROLLBACK")
    first: dict[str, Problem] = {}
    for p in found:
        if p.actor_id not in first or p.seq < first[p.actor_id].seq:
            first[p.actor_id] = p
    return [first[a] for a in sorted(first)]


def _size(head_seq: object) -> int:
    """Events an actor should have, from its head record (0 when unknown)."""
    return head_seq + 1 if type(head_seq) is int and head_seq >= 0 else 0


def _event_actors(conn: sqlite3.Connection) -> list[str]:
    """Distinct actor ids in `events`, one index seek each (no full scan)."""
    out = []
    row = conn.execute("SELECT min(actor_id) FROM events").fetchone()
    while row is not None and row[0] is not None:
        out.append(row[0])
        row = conn.execute("SELECT min(actor_id) FROM events WHERE actor_id > ?", (row[0],)).fetchone()
    return out


def _db_path(conn: sqlite3.Connection) -> str | None:
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return file or None
    return None


def _choose_jobs(jobs: int | None, total: int, path: str | None) -> int:
    if path is None:
        return 1
    if jobs is not None:
        return max(1, jobs)
    cpus = os.cpu_count() or 1
    if cpus < 2 or total < PARALLEL_MIN_EVENTS:
        return 1
    return min(cpus, 8, max(1, total // (PARALLEL_MIN_EVENTS // 2)))


# A chunk is (actor_id, lo, hi): the rows with lo <= seq < hi. lo None = from the very
# first row (so a negative or otherwise odd seq is seen); hi None = to the end of the
# chain, and that chunk also checks the actor's head record.
Chunk = tuple[str, "int | None", "int | None"]


def _run_chunks(conn: sqlite3.Connection, chunks: list[Chunk]) -> list[Problem]:
    problems = []
    for actor_id, lo, hi in chunks:
        p = _check_chunk(conn, actor_id, lo, hi)
        if p is not None:
            problems.append(p)
    return problems


def _check_chunk(conn: sqlite3.Connection, actor_id: str, lo: int | None, hi: int | None) -> Problem | None:
    sql = f"SELECT {_COLUMNS} FROM events WHERE actor_id=?"
    args: list = [actor_id]
    prev = None
    if lo is not None:
        sql += " AND seq>=?"
        args.append(lo)
        row = conn.execute("SELECT hash FROM events WHERE actor_id=? AND seq=?", (actor_id, lo - 1)).fetchone()
        prev = row[0] if row else None  # missing: the chunk before reports it, at a lower seq
    if hi is not None:
        sql += " AND seq<?"
        args.append(hi)
    sql += " ORDER BY seq"
    problem, expect, last = _scan(actor_id, iter(conn.execute(sql, args)), lo or 0, prev)
    if problem is not None:
        return problem
    if hi is not None:
        if expect < hi:  # rows ran out inside the range
            nxt = conn.execute("SELECT min(seq) FROM events WHERE actor_id=? AND seq>=?", (actor_id, expect)).fetchone()[0]
            return Problem(actor_id, expect, "missing event", f"seq {expect}",
                           f"seq {nxt}" if nxt is not None else "end of chain")
        return None
    return _check_head(conn, actor_id, expect - 1, last)


def _check_head(conn: sqlite3.Connection, actor_id: str, last_seq: int, last_hash: bytes | None) -> Problem | None:
    row = conn.execute("SELECT head_seq, head_hash FROM actors WHERE actor_id=?", (actor_id,)).fetchone()
    if row is None:
        if last_seq < 0:
            return None
        return Problem(actor_id, last_seq, "no head record", f"an actors row with head seq {last_seq}",
                       "no actors row")
    head_seq, head_hash = row
    if head_seq == last_seq and head_hash == last_hash:
        return None
    if type(head_seq) is int and head_seq > last_seq:
        return Problem(actor_id, last_seq + 1, "missing event",
                       f"seq {last_seq + 1} (the actors table's head is seq {head_seq})", "end of chain")
    if type(head_seq) is int and head_seq < last_seq:
        return Problem(actor_id, head_seq + 1, "event beyond the recorded head",
                       f"the chain to end at seq {head_seq}", f"seq {head_seq + 1}")
    return Problem(actor_id, last_seq, "head hash mismatch", _hex(head_hash), _hex(last_hash))


# ---------------------------------------------------------------------------
# parallel verification
# ---------------------------------------------------------------------------

def _partition(sizes: list[tuple[str, int]], jobs: int) -> list[list[Chunk]]:
    """Cut the actors' seq ranges into `jobs` tasks of about the same number of events."""
    total = sum(s for _, s in sizes)
    target = max(1, math.ceil(total / jobs))
    tasks: list[list[Chunk]] = [[] for _ in range(jobs)]
    t, fill = 0, 0
    for actor_id, size in sizes:
        lo = 0
        while True:
            if fill >= target and t < jobs - 1:
                t, fill = t + 1, 0
            room = target - fill
            if t == jobs - 1 or size - lo <= room:
                tasks[t].append((actor_id, lo or None, None))
                fill += size - lo
                break
            tasks[t].append((actor_id, lo or None, lo + room))
            lo += room
            fill += room
    return [task for task in tasks if task]


def _run_task(uri: str, chunks: list[Chunk]) -> list[Problem]:
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        conn.execute("BEGIN")
        return _run_chunks(conn, chunks)
    finally:
        conn.close()


def _run_parallel(path: str, tasks: list[list[Chunk]]) -> list[Problem]:
    """Run each task in a fresh `python -m theater_otp.chain.verify --worker` process.

    Fresh interpreters, not multiprocessing: a forked child would inherit the
    caller's SQLite state (SQLite must not be used across fork), and spawn /
    forkserver re-run the caller's main script. Task in: JSON on stdin; problems
    out: JSON on stdout.
    """
    uri = Path(path).as_uri() + "?mode=ro"
    env = dict(os.environ)  # the workers import this very package, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = [subprocess.Popen([sys.executable, "-m", "theater_otp.chain.verify", "--worker"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) for _ in tasks]
    try:
        for proc, task in zip(procs, tasks):
            proc.stdin.write(json.dumps({"uri": uri, "chunks": task}).encode())
            proc.stdin.close()
        problems = []
        for proc in procs:
            out = proc.stdout.read()
            if proc.wait() != 0:
                raise RuntimeError(f"chain verify worker exited with status {proc.returncode}")
            problems += [Problem(*p) for p in json.loads(out)]
        return problems
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def _worker() -> None:
    task = json.load(sys.stdin)
    problems = _run_task(task["uri"], [tuple(c) for c in task["chunks"]])
    json.dump([[p.actor_id, p.seq, p.what, p.expected, p.found] for p in problems], sys.stdout)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
