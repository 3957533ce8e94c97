"""Chain verification: recompute every hash and check the links (docs/chain-format.md).

What is verified, per actor, over its chunks in first_seq order:
  * the records parse: no truncated record, every encoding well-formed and of
    this actor;
  * sequence numbers run 0, 1, 2, ... with no gap (a dropped event is reported
    at the first missing seq), and each chunk's first_seq/last_seq index agrees;
  * event 0 has no parent; event n's parent hash is event n-1's hash;
  * each event's stored hash is SHA-256 of its stored encoding;
  * verify_store only: the `actors` row's head (head_seq, head_hash) names the
    last event, so a chain cut short at its tail is caught too.
Incarnation numbers are covered by the hash but not ordered: the node records
what it saw of an incarnation (its exit) and that event may land after the
next incarnation's first events (ChainStore.append_batch, "trusted" items).

The first problem of each actor is reported; later events are not looked at.

Speed: a record is the very bytes the hash covers, so the hot loop only reads a
few fixed-offset fields and hashes a slice; anything unusual drops to
`_diagnose`, the slow reference check that says exactly what is wrong. With
`jobs` > 1 the chunks are split into ranges verified by that many processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

from . import native
from .event import HASH_SIZE, MAGIC, ChainEvent, MalformedRecord, canonical_bytes, parse_encoding, record_bytes

#: Below this many events (estimated from the actors table) verify_store stays in-process.
PARALLEL_MIN_EVENTS = 200_000

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


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
# the core: one actor's chunks, in first_seq order
# ---------------------------------------------------------------------------

class ChainScan:
    """Walks one actor's records chunk by chunk; `expect` and `prev` carry over between chunks.

    After a problem, `expect`/`prev` describe the last good event and `offset` is where, in
    the chunk just checked, the bad part starts (0 when the chunk as a whole is out of place;
    its length when only its index is wrong). The writer cuts torn tails there.
    """

    def __init__(self, actor_id: str, expect: int = 0, prev: bytes | None = None):
        self.actor_id = actor_id
        aid = actor_id.encode("utf-8")
        self.prefix = MAGIC + _U16.pack(len(aid)) + aid
        self.expect = expect
        self.prev = prev
        self.offset = 0

    def chunk(self, first: object, last: object, blob: object) -> Problem | None:
        self.offset = 0
        if first != self.expect:
            if type(first) is int and first > self.expect:
                return self._problem("missing event", f"seq {self.expect}", f"a chunk starting at seq {first}")
            return self._problem("chunk index mismatch", f"a chunk starting at seq {self.expect}",
                                 f"one starting at {first!r}")
        if not isinstance(blob, bytes):
            return self._problem("malformed chunk", "a blob of records", _describe(blob))
        problem = self.records(blob)
        if problem is None and last != self.expect - 1:
            return self._problem("chunk index mismatch", f"the chunk to end at seq {last!r}",
                                 f"its records end at seq {self.expect - 1}")
        return problem

    def records(self, blob: bytes) -> Problem | None:
        o, end = 0, len(blob)
        while o < end:
            o = self._fast(blob, o)
            self.offset = o
            if o >= end:
                return None
            problem, o = self._diagnose(blob, o)
            if problem is not None:
                return problem
        self.offset = end
        return None

    def _fast(self, blob: bytes, o: int) -> int:
        """Pass the good records from offset `o` (native.scan: C or Python); return the offset
        of the first record it could not pass (or the end)."""
        o, self.expect, self.prev = native.scan(blob, o, self.prefix, self.expect, self.prev)
        return o

    def _diagnose(self, blob: bytes, o: int) -> tuple[Problem | None, int]:
        """The reference check of the record at `o`: (problem or None, offset of the next record)."""
        end = len(blob)
        if o + 4 > end:
            return self._problem("truncated record", "a 4-byte record length", f"{end - o} byte(s)"), end
        (n,) = _U32.unpack_from(blob, o)
        if o + 4 + n + HASH_SIZE > end:
            return self._problem("truncated record", f"{n} + 32 bytes of record", f"{end - o - 4} byte(s)"), end
        enc = blob[o + 4:o + 4 + n]
        h = blob[o + 4 + n:o + 4 + n + HASH_SIZE]
        nxt = o + 4 + n + HASH_SIZE
        try:
            actor_id, seq, _inc, parent, _et, _ts, _data = parse_encoding(enc)
        except MalformedRecord as exc:
            return self._problem("malformed record", "a canonical encoding", str(exc)), nxt
        if actor_id != self.actor_id:
            return self._problem("event of another actor", self.actor_id, actor_id), nxt
        if seq != self.expect:
            if seq > self.expect:
                return self._problem("missing event", f"seq {self.expect}", f"seq {seq}"), nxt
            return self._problem("unexpected sequence number", str(self.expect), str(seq)), nxt
        if parent != self.prev:
            return self._problem("parent mismatch", _hex(self.prev), _hex(parent)), nxt
        computed = hashlib.sha256(enc).digest()
        if computed != h:
            return self._problem("hash mismatch", computed.hex(), h.hex()), nxt
        self.prev = h
        self.expect += 1
        return None, nxt

    def _problem(self, what: str, expected: str, found: str) -> Problem:
        return Problem(self.actor_id, self.expect, what, expected, found)


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
    events = list(events)
    if not events:
        return None
    scan = ChainScan(events[0].actor_id)
    parts = []
    for e in events:
        try:
            enc = canonical_bytes(e.actor_id, e.seq, e.incarnation, e.parent_hash, e.event_type, e.timestamp, e.data)
        except (ValueError, TypeError, OverflowError, struct.error, AttributeError):
            enc = b""  # fields the layout cannot hold: an empty record, reported as malformed
        parts.append(record_bytes(enc, e.hash if isinstance(e.hash, bytes) else b""))
    return scan.records(b"".join(parts))


def verify_store(conn: sqlite3.Connection, actor_id: str | None = None,
                 jobs: int | None = None) -> list[Problem]:
    """Verify the chains in a chain.db connection: one actor, or every actor when None.

    Actors come from the `actors` table plus any actor that has chunks; an actor
    with neither has nothing to verify. Returns the first problem of each bad
    actor, sorted by actor id (empty: everything verifies). All reads happen in
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
            ids = sorted(set(heads) | set(_chunk_actors(conn)))
        else:
            ids = [actor_id]
        sizes = [(a, _size(heads.get(a))) for a in ids]
        path = _db_path(conn)
        n = _choose_jobs(jobs, sum(s for _, s in sizes), path)
        if n <= 1 or path is None:  # _choose_jobs picks 1 when there is no file
            found = _run_ranges(conn, [(a, None, None) for a in ids])
        else:
            tasks = _partition(conn, ids, n)
            found = _run_threads(path, tasks) if native.scan is native.c_scan else _run_parallel(path, tasks)
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


def _chunk_actors(conn: sqlite3.Connection) -> list[str]:
    """Distinct actor ids in `chunks`, one index seek each (no full scan)."""
    out = []
    row = conn.execute("SELECT min(actor_id) FROM chunks").fetchone()
    while row is not None and row[0] is not None:
        out.append(row[0])
        row = conn.execute("SELECT min(actor_id) FROM chunks WHERE actor_id > ?", (row[0],)).fetchone()
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


# A range is (actor_id, lo, hi): the chunks with lo <= first_seq < hi. lo None = from the
# very first chunk (so a negative or otherwise odd first_seq is seen); hi None = to the end
# of the chain, and that range also checks the actor's head record.
Range = tuple[str, "int | None", "int | None"]


def _run_ranges(conn: sqlite3.Connection, ranges: list[Range]) -> list[Problem]:
    problems = []
    for actor_id, lo, hi in ranges:
        p = _check_range(conn, actor_id, lo, hi)
        if p is not None:
            problems.append(p)
    return problems


def _check_range(conn: sqlite3.Connection, actor_id: str, lo: int | None, hi: int | None) -> Problem | None:
    sql = "SELECT first_seq, last_seq, records FROM chunks WHERE actor_id=?"
    args: list[str | int] = [actor_id]
    scan = ChainScan(actor_id)
    if lo is not None:
        sql += " AND first_seq>=?"
        args.append(lo)
        # if the chunk before is damaged, the range before this one reports it, at a lower seq
        scan.expect, scan.prev = lo, hash_before(conn, actor_id, lo)
    if hi is not None:
        sql += " AND first_seq<?"
        args.append(hi)
    sql += " ORDER BY first_seq"
    for first, last, blob in conn.execute(sql, args):
        problem = scan.chunk(first, last, blob)
        if problem is not None:
            return problem
    if hi is not None:
        if scan.expect < hi:  # chunks ran out inside the range
            return scan._problem("missing event", f"seq {scan.expect}", f"a chunk starting at seq {hi}")
        return None
    return _check_head(conn, actor_id, scan.expect - 1, scan.prev)


def hash_before(conn: sqlite3.Connection, actor_id: str, first_seq: int) -> bytes | None:
    """The hash of the last event before the chunk starting at `first_seq`: the last 32 bytes of
    the chunk before it (a record ends with its hash); None when there is none."""
    row = conn.execute("SELECT records FROM chunks WHERE actor_id=? AND first_seq<? ORDER BY first_seq DESC "
                       "LIMIT 1", (actor_id, first_seq)).fetchone()
    return bytes(row[0][-HASH_SIZE:]) if row else None


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

def _partition(conn: sqlite3.Connection, ids: list[str], jobs: int) -> list[list[Range]]:
    """Cut the actors' chunks into `jobs` tasks of about the same number of events
    (ranges start at chunk boundaries, from the chunk index)."""
    index: dict[str, list[tuple[int, int]]] = {a: [] for a in ids}
    for a, first, last in conn.execute("SELECT actor_id, first_seq, last_seq FROM chunks ORDER BY actor_id, first_seq"):
        if a in index and type(first) is int and type(last) is int:
            index[a].append((first, max(0, last - first + 1)))
    total = sum(n for chunks in index.values() for _, n in chunks)
    target = max(1, math.ceil(total / jobs))
    tasks: list[list[Range]] = [[] for _ in range(jobs)]
    t, fill = 0, 0
    for actor_id in ids:
        lo: int | None = None
        for first, n in index[actor_id]:
            if fill >= target and t < jobs - 1:
                if lo is not None or first > 0:
                    tasks[t].append((actor_id, lo, first))
                    lo = first
                t, fill = t + 1, 0
            fill += n
        tasks[t].append((actor_id, lo, None))
    return [task for task in tasks if task]


def _run_task(uri: str, ranges: list[Range]) -> list[Problem]:
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        conn.execute("BEGIN")
        return _run_ranges(conn, ranges)
    finally:
        conn.close()


def _run_threads(path: str, tasks: list[list[Range]]) -> list[Problem]:
    """Run each task on a thread with its own read-only connection: the C scan and SQLite
    both release the GIL while they work, so threads use every core without the start-up
    cost of worker processes."""
    from concurrent.futures import ThreadPoolExecutor

    uri = Path(path).as_uri() + "?mode=ro"
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return [p for found in pool.map(lambda task: _run_task(uri, task), tasks) for p in found]


def _run_parallel(path: str, tasks: list[list[Range]]) -> list[Problem]:
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
            _pipe(proc.stdin).write(json.dumps({"uri": uri, "ranges": task}).encode())
            _pipe(proc.stdin).close()
        problems = []
        for proc in procs:
            out = _pipe(proc.stdout).read()
            if proc.wait() != 0:
                raise RuntimeError(f"chain verify worker exited with status {proc.returncode}")
            problems += [Problem(*p) for p in json.loads(out)]
        return problems
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _pipe(proc.stdout).close()


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """A worker's stdin or stdout: always there, as _run_parallel opens both with PIPE."""
    if stream is None:
        raise RuntimeError("chain verify worker started without a pipe")
    return stream


def _worker() -> None:
    task = json.load(sys.stdin)
    problems = _run_task(task["uri"], [tuple(r) for r in task["ranges"]])
    json.dump([[p.actor_id, p.seq, p.what, p.expected, p.found] for p in problems], sys.stdout)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
