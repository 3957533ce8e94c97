"""`theater-otp top` and `tree --watch`: live views over the node's `tree` answer.

`top` samples, per refresh: one `tree` call (status, pid, restarts, mailbox depth), psutil per
worker pid (CPU %, RSS, USS), and one SQLite query on chain.db, read-only (WAL: the writer is
never blocked): the chunk rows stored since the previous refresh (`rowid >` the last one seen,
as the chain-writer publishes them, docs/events.md). Messages per second come from those rows:
`message.send` and `message.request` events are messages an actor took in, its
`message-server-host` `send` and `request` host calls the messages it sent out (the node's
`tree` answer carries no message counters). The last crash reason is the node's newest
`lifecycle.exited` event with an abnormal reason in the actor's chain; an actor that shows
restarts when first seen has its chain read backwards once, at most BACKFILL_CHUNKS rows.

The pure parts (`scan_chunk`, `tally`, `rate`, `build_rows`, `watch_marks`) take plain values
and are what the unit tests pin; `Sampler` owns the I/O. This module imports rich and psutil
at its top: `cli.py` imports it only from the verbs that use it.
"""

from __future__ import annotations

import select
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import msgpack
import psutil

from .chain.event import HASH_SIZE, MAGIC, MalformedRecord
from .home import Home

#: Events that are a message an actor took in (an export call of a message).
IN_TYPES = frozenset({"message.send", "message.request"})
#: Events that are a message an actor sent (its message-server host calls).
OUT_TYPES = frozenset({"host.message-server-host.send", "host.message-server-host.request"})
EXITED = "lifecycle.exited"
#: Exit reason kinds that are not crashes (asked for, or the actor returned).
CLEAN_EXITS = frozenset({"normal", "shutdown"})
#: How many of an actor's newest chunk rows are read to find a crash from before `top` started.
BACKFILL_CHUNKS = 16
#: A worker's USS is read again every this many refreshes (smaps is the costly part of a refresh).
USS_EVERY = 5
#: How long `tree --watch` shows an actor as restarted after its pid or restarts changed.
HIGHLIGHT_S = 3.0
#: The marker `tree --watch` puts after a restarted actor's line (also without colour).
RESTART_MARK = "↻"

_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">QIB")
_U16 = struct.Struct(">H")
_TAIL = struct.Struct(">QI")


# ---- the chain: cheap counting ------------------------------------------------------------------

def scan_chunk(blob: bytes) -> Iterator[tuple[str, int, int]]:
    """(event type, offset of data, data length) of each record of a chunk row, without copying
    or hashing anything: the canonical layout of docs/chain-format.md read at offsets.
    MalformedRecord where a record does not fit."""
    end = len(blob)
    o = 0
    try:
        while o < end:
            (n,) = _LEN.unpack_from(blob, o)
            enc = o + 4
            if enc + n + HASH_SIZE > end or blob[enc:enc + len(MAGIC)] != MAGIC:
                raise MalformedRecord(f"no record at offset {o} of a chunk")
            (alen,) = _U16.unpack_from(blob, enc + 12)
            p = enc + 14 + alen
            _seq, _inc, has_parent = _HEAD.unpack_from(blob, p)
            p += 13 + (32 if has_parent else 0)
            (tlen,) = _U16.unpack_from(blob, p)
            event_type = blob[p + 2:p + 2 + tlen].decode("utf-8")
            p += 2 + tlen
            _ts, dlen = _TAIL.unpack_from(blob, p)
            yield event_type, p + 12, dlen
            o = enc + n + HASH_SIZE
    except (struct.error, UnicodeDecodeError):
        raise MalformedRecord(f"a record at offset {o} of a chunk ends inside a field") from None


def crash_reason(data: bytes) -> str | None:
    """The reason of a `lifecycle.exited` event's data as text (`killed: ...`), or None for a
    clean exit (normal, shutdown) or data of another shape."""
    try:
        plain = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - data this view does not understand is no crash reason
        return None
    reason = plain.get("reason") if isinstance(plain, dict) else None
    if not isinstance(reason, dict) or reason.get("kind") in CLEAN_EXITS or not reason.get("kind"):
        return None
    detail = reason.get("detail")
    return f"{reason['kind']}: {detail}" if detail else str(reason["kind"])


@dataclass
class Tally:
    """What one actor's chain gained between two samples."""

    msgs_in: int = 0
    msgs_out: int = 0
    last_crash: str | None = None


def tally(rows: Iterable[tuple[str, bytes]]) -> dict[str, Tally]:
    """Per actor id, the messages in and out and the newest crash reason in `rows` of
    (actor id, chunk records), given in storage order."""
    out: dict[str, Tally] = {}
    for actor_id, blob in rows:
        t = out.get(actor_id)
        if t is None:
            t = out[actor_id] = Tally()
        for event_type, at, n in scan_chunk(blob):
            if event_type in IN_TYPES:
                t.msgs_in += 1
            elif event_type in OUT_TYPES:
                t.msgs_out += 1
            elif event_type == EXITED:
                reason = crash_reason(blob[at:at + n])
                if reason is not None:
                    t.last_crash = reason
    return out


def rate(count: int, elapsed: float | None) -> float | None:
    """Events per second over `elapsed` seconds; None without a previous sample."""
    if elapsed is None or elapsed <= 0:
        return None
    return round(max(count, 0) / elapsed, 2)


# ---- rows ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcStat:
    """What psutil said of a worker pid. `cpu` is None on a pid's first sample; `uss` None where
    the kernel does not tell (no smaps access)."""

    cpu: float | None
    rss: int | None
    uss: int | None


@dataclass(frozen=True)
class TopRow:
    """One actor in `top`: the table's row and the JSON object alike."""

    path: str
    name: str | None
    actor_id: str | None
    pid: int | None
    status: str
    cpu_percent: float | None
    rss: int | None
    uss: int | None
    mailbox: int | None
    msgs_in_per_s: float | None
    msgs_out_per_s: float | None
    restarts: int
    last_crash: str | None

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)


def actors(snapshot: dict) -> Iterator[dict]:
    """The actor nodes of a `tree` answer, in tree order."""
    stack = [snapshot]
    while stack:
        node = stack.pop()
        if node.get("kind") == "actor":
            yield node
        stack.extend(reversed(node.get("children", [])))


def build_rows(snapshot: dict, procs: dict[int, ProcStat], tallies: dict[str, Tally], elapsed: float | None,
               crashes: dict[str, str]) -> list[TopRow]:
    """One row per actor of `snapshot`, in tree order. `tallies`: per actor id, what its chain
    gained over the `elapsed` seconds since the previous sample (None: no previous sample, no
    rates); `crashes`: per actor id, its last crash reason known so far."""
    rows = []
    for node in actors(snapshot):
        pid = node.get("pid")
        stat = procs.get(pid) if pid else None
        actor_id = node.get("actor_id")
        t = tallies.get(actor_id or "", Tally())
        rows.append(TopRow(
            path=node["path"], name=node.get("name"), actor_id=actor_id, pid=pid, status=node.get("status", "?"),
            cpu_percent=stat.cpu if stat else None, rss=stat.rss if stat else None, uss=stat.uss if stat else None,
            mailbox=node.get("mailbox"), msgs_in_per_s=rate(t.msgs_in, elapsed),
            msgs_out_per_s=rate(t.msgs_out, elapsed), restarts=node.get("restarts", 0),
            last_crash=crashes.get(actor_id or "")))
    return rows


# ---- sampling -----------------------------------------------------------------------------------

@dataclass
class Frame:
    rows: list[TopRow]
    node_pid: int | None
    elapsed: float | None  # seconds since the previous sample, None for the first


@dataclass
class Sampler:
    """Samples a running node for `top`. Owns a read-only connection to chain.db (opened when the
    store exists) and one psutil.Process per worker pid (cpu_percent measures between two calls on
    the same object); `close()` is idempotent. Invariant: every chunk row with rowid <= `last_rowid`
    has been counted, or was stored before the first sample."""

    home: Home
    call_tree: Callable[[], dict]
    clock: Callable[[], float] = time.monotonic
    conn: sqlite3.Connection | None = None
    last_rowid: int | None = None
    last_at: float | None = None
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)
    backfilled: set[str] = field(default_factory=set)
    uss: dict[int, int | None] = field(default_factory=dict)
    refreshes: int = 0

    def sample(self) -> Frame:
        snapshot = self.call_tree()
        now = self.clock()
        elapsed = None if self.last_at is None else now - self.last_at
        self.last_at = now
        tallies = self._chain()
        for actor_id, t in tallies.items():
            if t.last_crash is not None:
                self.crashes[actor_id] = t.last_crash
        self._backfill(snapshot)
        procs = self._procs(snapshot)
        return Frame(build_rows(snapshot, procs, tallies, elapsed, self.crashes), snapshot.get("node_pid"), elapsed)

    def _connect(self) -> sqlite3.Connection | None:
        if self.conn is None and self.home.chain_db.exists():
            from .chain.store import connect
            self.conn = connect(self.home.chain_db, readonly=True)
        return self.conn

    def _chain(self) -> dict[str, Tally]:
        """The one query of a refresh: the chunk rows stored since the previous one."""
        conn = self._connect()
        if conn is None:
            return {}
        if self.last_rowid is None:
            self.last_rowid = conn.execute("SELECT coalesce(max(rowid), 0) FROM chunks").fetchone()[0]
            return {}
        rows = conn.execute("SELECT rowid, actor_id, records FROM chunks WHERE rowid > ? ORDER BY rowid",
                            (self.last_rowid,)).fetchall()
        if rows:
            self.last_rowid = rows[-1][0]
        return tally((actor_id, bytes(blob)) for _rowid, actor_id, blob in rows)

    def _backfill(self, snapshot: dict) -> None:
        """Once per actor that has restarted and whose crash we have not seen: read its newest rows."""
        conn = self._connect()
        if conn is None:
            return
        for node in actors(snapshot):
            actor_id = node.get("actor_id")
            if not actor_id or not node.get("restarts") or actor_id in self.crashes or actor_id in self.backfilled:
                continue
            self.backfilled.add(actor_id)
            blobs = conn.execute("SELECT records FROM chunks WHERE actor_id = ? ORDER BY first_seq DESC LIMIT ?",
                                 (actor_id, BACKFILL_CHUNKS)).fetchall()
            for (blob,) in blobs:  # newest row first: the first crash found is the last one
                crash = tally([(actor_id, bytes(blob))])[actor_id].last_crash
                if crash is not None:
                    self.crashes[actor_id] = crash
                    break

    def _procs(self, snapshot: dict) -> dict[int, ProcStat]:
        """CPU % and RSS of every worker pid; its USS (smaps, ~0.35 ms a pid, ten times RSS's cost) when
        the pid is new and then on every USS_EVERY-th refresh, staggered by pid, kept in between."""
        self.refreshes += 1
        out: dict[int, ProcStat] = {}
        live: dict[int, psutil.Process] = {}
        uss_kept: dict[int, int | None] = {}
        for node in actors(snapshot):
            pid = node.get("pid")
            if not pid:
                continue
            first = pid not in self.procs
            try:
                proc = self.procs.get(pid) or psutil.Process(pid)
                cpu = proc.cpu_percent(None)
                if first or (pid + self.refreshes) % USS_EVERY == 0:
                    try:
                        mem = proc.memory_full_info()
                        rss, uss = mem.rss, getattr(mem, "uss", None)
                    except psutil.AccessDenied:  # no smaps: RSS alone
                        rss, uss = proc.memory_info().rss, None
                else:
                    rss, uss = proc.memory_info().rss, self.uss.get(pid)
            except psutil.Error:  # it ended between the tree answer and now
                continue
            live[pid] = proc
            uss_kept[pid] = uss
            out[pid] = ProcStat(None if first else round(cpu, 1), rss, uss)
        self.procs = live
        self.uss = uss_kept
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---- rendering ----------------------------------------------------------------------------------

def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}M"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def top_table(frame: Frame, title: str) -> Any:
    """A rich Table of `frame`, busiest first (CPU %, then path)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for name, justify in (("PATH", "left"), ("NAME", "left"), ("PID", "right"), ("STATUS", "left"),
                          ("CPU%", "right"), ("RSS", "right"), ("USS", "right"), ("MBOX", "right"),
                          ("IN/s", "right"), ("OUT/s", "right"), ("RESTARTS", "right"), ("LAST CRASH", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "LAST CRASH", overflow="ellipsis")  # type: ignore[arg-type]
    rows = sorted(frame.rows, key=lambda r: (-(r.cpu_percent or 0.0), r.path))
    for r in rows:
        style = "yellow" if r.status != "running" else None
        table.add_row(r.path, r.name or "-", str(r.pid or "-"), r.status, _num(r.cpu_percent), _mib(r.rss),
                      _mib(r.uss), _num(r.mailbox, "{}"), _num(r.msgs_in_per_s), _num(r.msgs_out_per_s),
                      str(r.restarts), r.last_crash or "-", style=style)
    return table


def frame_title(frame: Frame, interval: float) -> str:
    running = sum(r.status == "running" for r in frame.rows)
    return (f"theater-otp top: node pid {frame.node_pid}, {len(frame.rows)} actors ({running} running), "
            f"every {interval:g}s; Ctrl-C quits")


# ---- tree --watch -------------------------------------------------------------------------------

def watch_marks(previous: dict[str, tuple[int | None, int]] | None, snapshot: dict, now: float,
                until: dict[str, float], hold: float = HIGHLIGHT_S) -> tuple[dict[str, tuple[int | None, int]], set[str]]:
    """(the actors' (last pid, restarts) by path, the paths to highlight) for a new `snapshot` seen
    at `now`. An actor whose restarts changed, or which runs with another pid than the last one seen
    (a pid gone while it restarts is remembered, not forgotten), is highlighted until `now + hold`;
    `until` (path -> deadline) is updated in place. `previous`: what the last call returned, None at first."""
    seen: dict[str, tuple[int | None, int]] = {}
    for node in actors(snapshot):
        path, pid, restarts = node["path"], node.get("pid"), node.get("restarts", 0)
        before = previous.get(path) if previous is not None else None
        if pid is None and before is not None:
            pid = before[0]
        seen[path] = (pid, restarts)
        if before is not None and (before[1] != restarts or (before[0] is not None and pid != before[0])):
            until[path] = now + hold
    for path in [p for p, deadline in until.items() if deadline <= now or p not in seen]:
        del until[path]
    return seen, set(until)


def marked_tree(text: str, order: list[str], marked: set[str]) -> Any:
    """rich Text of `text` (a rendered tree, one line per path of `order`) with the `marked` paths'
    lines in bold yellow and ending with RESTART_MARK."""
    from rich.text import Text

    out = Text()
    for line, path in zip(text.splitlines(), order, strict=False):
        if path in marked:
            out.append(f"{line}  {RESTART_MARK} restarted", style="bold yellow")
        else:
            out.append(line)
        out.append("\n")
    return out


def tree_order(top: dict) -> list[str]:
    """The paths of `top` in the order the renderer draws them (depth first, parents first)."""
    out: list[str] = []
    stack = [top]
    while stack:
        node = stack.pop()
        out.append(node["path"])
        stack.extend(reversed(node.get("children", [])))
    return out


# ---- the refresh loop ---------------------------------------------------------------------------

class Stop(Protocol):
    stopped: bool

    def fileno(self) -> int: ...

    def clear(self) -> None: ...


def wait(stop: Stop, seconds: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Sleep until `seconds` pass or `stop` is signalled (woken by its fd, not by polling);
    True if it was."""
    deadline = clock() + seconds
    while not stop.stopped:
        left = deadline - clock()
        if left <= 0:
            return False
        ready, _, _ = select.select([stop.fileno()], [], [], left)
        if ready:
            stop.clear()
    return True


__all__ = ["Frame", "ProcStat", "Sampler", "Tally", "TopRow", "build_rows", "crash_reason", "marked_tree", "rate",
           "scan_chunk", "tally", "top_table", "tree_order", "wait", "watch_marks"]
