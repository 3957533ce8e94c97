"""The replicated copy of a chain (docs/replication.md): verify it, and restore a local chain from it.

`verify_remote(url, node, actor_ref, home=None)` reads the copy of one chain from the stream
`THEATER_CHAIN_<node>` (cluster/replica.py writes it) and checks it with chain/verify.py's
ChainScan, the code `theater-otp verify` runs on chain.db: seq 0, 1, 2, … without a gap, parent
links, each hash the SHA-256 of its encoding. Each message must hold exactly one record, and its
`Theater-Seq`/`Theater-Hash` headers must name that record. With a local chain.db, it also checks
the local chain (verify_store) and that the copy and the local chain agree event by event up to
the shorter of their verified parts, and reports the first seq where they diverge.

`restore(url, node, actor_ref, home)` rebuilds a lost or damaged local chain from the copy: the
events go into chain.db through ChainStore.append_batch, which recomputes each hash from the
fields (and the result must equal the copy's). It never discards an intact local event unless
forced: a local chain that verifies and is longer than the copy, or that diverges from it, is
refused without `force`. What it does cut (a damaged tail, or with `force` an intact one) is kept
verbatim in the `cut_records` table, as the chain-writer keeps a torn tail. The node must be down
(the chain-writer is the only writer of a running node's chain.db).

Reads never hang: connecting gives up after a few seconds, and every server request has a
timeout; the copy is read up to its last message when the read began.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

import msgpack

from ..chain import event as chain_event
from ..chain.event import HASH_SIZE, ChainEvent, MalformedRecord
from ..chain.store import ChainStore, connect, count_events, find_actor, iter_chain
from ..chain.verify import ChainScan, Problem, verify_store
from ..errors import TheaterError
from ..home import Home
from . import replica
from .replica import HASH_HEADER, SEQ_HEADER, ReplicaError, actor_of_subject, check_node_name, parse_record

#: Seconds to reach the NATS server, and for each request to it.
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 5.0
#: Events appended to chain.db per transaction while restoring.
RESTORE_BATCH = 4096
#: Seconds between progress lines.
PROGRESS_EVERY_S = 2.0
#: Messages read at the start of each chain to find its actor.start (name, path).
START_SCAN = 8

Say = Callable[[str], None]


class RemoteChainError(TheaterError):
    """The copy cannot be read, the actor is unknown, or a restore is refused; the message says why."""


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------

@dataclass
class LocalSide:
    """The local chain, as compared with the copy."""

    events: int
    #: its first bad event (verify_store), or None
    problem: Problem | None
    #: leading events the local chain and the copy share (same seq, same hash)
    agree: int
    #: the first seq, within both verified parts, where the two differ; None: they agree
    diverged_at: int | None
    local_hash: str | None = None
    copy_hash: str | None = None


@dataclass
class RemoteReport:
    node: str
    stream: str
    subject: str
    actor_id: str
    path: str | None
    name: str | None
    #: messages read from the copy, and the events of it that verify (from seq 0)
    messages: int = 0
    verified: int = 0
    #: the copy's first bad event, or None
    problem: Problem | None = None
    head_hash: str | None = None
    #: None when no local chain was compared
    local: LocalSide | None = None
    #: the largest incarnation among the verified events of the copy
    incarnation: int = 0

    @property
    def ok(self) -> bool:
        """The copy verifies and does not diverge from the local chain."""
        return self.problem is None and (self.local is None or self.local.diverged_at is None)

    def to_plain(self) -> dict[str, Any]:
        local = None
        if self.local is not None:
            loc = self.local
            local = {"events": loc.events, "problem": _problem_plain(loc.problem), "agree": loc.agree,
                     "diverged_at": loc.diverged_at, "local_hash": loc.local_hash, "copy_hash": loc.copy_hash}
        return {"ok": self.ok, "node": self.node, "stream": self.stream, "subject": self.subject,
                "actor_id": self.actor_id, "path": self.path, "name": self.name, "messages": self.messages,
                "verified": self.verified, "head_hash": self.head_hash, "problem": _problem_plain(self.problem),
                "local": local}

    def lines(self) -> list[str]:
        """What `verify-remote` prints: FAIL lines, notes, then the verdict."""
        label = self.path or self.actor_id
        out = []
        if self.problem is not None:
            out.append(f"FAIL copy: {self.problem}")
        loc = self.local
        if loc is not None and loc.diverged_at is not None:
            out.append(f"FAIL the copy and the local chain diverge at seq {loc.diverged_at} "
                       f"(local {(loc.local_hash or '')[:16]}…, copy {(loc.copy_hash or '')[:16]}…)")
        if loc is not None and loc.problem is not None:
            out.append(f"note: the local chain fails verification: {loc.problem} (`restore` can rebuild it)")
        if loc is not None and loc.diverged_at is None:
            if loc.events > self.verified and self.problem is None:
                out.append(f"note: the copy is {loc.events - self.verified} event(s) behind the local chain")
            elif self.verified > loc.events:
                out.append(f"note: the copy holds {self.verified - loc.events} event(s) the local chain does not "
                           f"(`restore` can add them)")
        if self.ok:
            agree = f"; agrees with the local chain ({loc.events} events)" if loc is not None else \
                "; no local chain compared"
            out.append(f"ok: copy of {label} ({self.actor_id}) on {self.stream}: {self.verified} events verify{agree}")
        return out


@dataclass
class RestoreReport:
    actor_id: str
    path: str | None
    #: local events kept, cut (kept in cut_records), and appended from the copy
    kept: int = 0
    cut: int = 0
    appended: int = 0
    head_seq: int = -1
    head_hash: str | None = None
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)

    def to_plain(self) -> dict[str, Any]:
        return {"ok": True, "actor_id": self.actor_id, "path": self.path, "kept": self.kept, "cut": self.cut,
                "appended": self.appended, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "up_to_date": self.up_to_date, "notes": self.notes}


def _problem_plain(p: Problem | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"actor_id": p.actor_id, "seq": p.seq, "what": p.what, "expected": p.expected, "found": p.found}


# ---------------------------------------------------------------------------------------------
# public entry points (synchronous; the coroutines are there for callers that have a loop)
# ---------------------------------------------------------------------------------------------

def verify_remote(url: str, node: str, actor_ref: str, home: "Home | str | None" = None,
                  say: Say | None = None) -> RemoteReport:
    """Verify the replicated copy of `actor_ref`'s chain (and compare it with `home`'s chain.db when
    given and it holds that chain). RemoteChainError when the copy cannot be read."""
    return asyncio.run(averify_remote(url, node, actor_ref, home, say))


def restore(url: str, node: str, actor_ref: str, home: "Home | str | None", force: bool = False,
            say: Say | None = None) -> RestoreReport:
    """Rebuild `actor_ref`'s chain in `home`'s chain.db from the replicated copy (see the module)."""
    return asyncio.run(arestore(url, node, actor_ref, home, force, say))


async def averify_remote(url: str, node: str, actor_ref: str, home: "Home | str | None" = None,
                         say: Say | None = None) -> RemoteReport:
    h = Home.at(home) if home is not None else None
    async with _Remote(url, node) as remote:
        actor_id, path, name = await remote.resolve(actor_ref, h)
        return await remote.verify(actor_id, path, name, h if h is not None and h.chain_db.exists() else None, say)


async def arestore(url: str, node: str, actor_ref: str, home: "Home | str | None", force: bool = False,
                   say: Say | None = None) -> RestoreReport:
    from ..client import running_node_pid

    h = Home.at(home)
    pid = running_node_pid(h)
    if pid is not None:
        raise RemoteChainError(f"a node is running at {h.root} (pid {pid}): stop it (`theater-otp down`) before "
                               f"restoring; its chain-writer must be the only writer of chain.db")
    async with _Remote(url, node) as remote:
        actor_id, path, name = await remote.resolve(actor_ref, h)
        has_db = h.chain_db.exists()
        report = await remote.verify(actor_id, path, name, h if has_db else None, say)
        return await remote.restore(report, h, force, say)


# ---------------------------------------------------------------------------------------------
# the work
# ---------------------------------------------------------------------------------------------

class _Remote:
    """One connection to the NATS server, for one node's stream."""

    def __init__(self, url: str, node: str):
        try:
            self.node = check_node_name(node)
        except ReplicaError as exc:
            raise RemoteChainError(str(exc)) from None
        self.url = url
        self.stream = replica.stream_name(node)
        self.nc: Any = None
        self.js: Any = None

    async def __aenter__(self) -> "_Remote":
        import nats

        seen: list[Exception] = []

        async def keep(exc: Exception) -> None:
            seen.append(exc)

        # max_reconnect_attempts=1: one try (nats-py's 0 means "for ever" on the first connect)
        try:
            self.nc = await asyncio.wait_for(nats.connect(
                self.url, connect_timeout=CONNECT_TIMEOUT_S, allow_reconnect=False, max_reconnect_attempts=1,
                reconnect_time_wait=0.1, error_cb=keep, name="theater-verify-remote"), CONNECT_TIMEOUT_S + 1)
        except Exception as exc:  # noqa: BLE001 - every way a connect fails is the same answer
            cause = seen[-1] if seen else exc
            raise RemoteChainError(f"cannot reach NATS at {self.url}: {_why(cause)}") from None
        self.js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        await self._stream_info()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    async def _stream_info(self, subjects: str | None = None) -> Any:
        from nats.errors import NoRespondersError
        from nats.js.errors import NoStreamResponseError, NotFoundError

        try:
            return await self.js.stream_info(self.stream, subjects_filter=subjects)
        except NotFoundError:
            raise RemoteChainError(f"no replicated chains of node {self.node!r} at {self.url} "
                                   f"(no stream {self.stream})") from None
        except (NoRespondersError, NoStreamResponseError):
            raise RemoteChainError(f"the NATS server at {self.url} has no JetStream (start it with -js)") from None
        except Exception as exc:  # noqa: BLE001 - timeouts, a server going away
            raise RemoteChainError(f"cannot read stream {self.stream} at {self.url}: {_why(exc)}") from None

    async def _last(self, subject: str) -> Any:
        from nats.js.errors import NotFoundError

        try:
            return await self.js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise RemoteChainError(f"cannot read {subject} at {self.url}: {_why(exc)}") from None

    # ---- which chain ---------------------------------------------------------------------

    async def resolve(self, ref: str, home: Home | None) -> tuple[str, str | None, str | None]:
        """(actor id, path, name) of what `ref` names: an actor id or `supervisor:<path>` as it
        is; else the local store's match (id, path, path suffix, name); else the copy's, from each
        replicated chain's actor.start event (same order of preference, newest first)."""
        if not ref:
            raise RemoteChainError("no actor given")
        if home is not None and home.chain_db.exists():
            conn = connect(home.chain_db, readonly=True)
            try:
                rows = find_actor(conn, ref) or find_actor(conn, f"supervisor:{ref}")
            finally:
                conn.close()
            if rows:
                actor_id, path, name = rows[0]
                return actor_id, path, name
        info = await self._stream_info(replica.subject_prefix(self.node) + ">")
        ids = {a: n for s, n in (info.state.subjects or {}).items() if (a := actor_of_subject(self.node, s))}
        for candidate in (ref, f"supervisor:{ref}"):
            if candidate in ids:
                return candidate, _supervisor_path(candidate), "supervisor" if candidate.startswith("supervisor:") \
                    else None
        starts: list[tuple[int, str, str | None, str | None]] = []  # (stream seq, id, path, name)
        for actor_id in ids:
            if actor_id.startswith("supervisor:"):
                continue
            found = await self._start_of(actor_id)
            if found is not None:
                starts.append((found[0], actor_id, found[1], found[2]))
        tests: tuple[Callable[[str | None, str | None], bool], ...] = (
            lambda p, n: p == ref, lambda p, n: p is not None and p.endswith("/" + ref), lambda p, n: n == ref)
        for test in tests:
            hits = sorted((s for s in starts if test(s[2], s[3])), key=lambda s: -s[0])
            if hits:
                return hits[0][1], hits[0][2], hits[0][3]
        raise RemoteChainError(f"no replicated chain for {ref!r} in {self.stream} at {self.url}")

    async def _start_of(self, actor_id: str) -> tuple[int, str | None, str | None] | None:
        """(stream seq, path, name) of the first actor.start among a chain's first messages."""
        subject = replica.subject_for(self.node, actor_id)
        at = 0
        for _ in range(START_SCAN):
            try:
                msg = await self.js.get_msg(self.stream, seq=at + 1, subject=subject, next=True)
            except Exception:  # noqa: BLE001 - NotFound (no more) or trouble: no name for this chain
                return None
            at = int(msg.seq)
            try:
                e = parse_record(msg.data or b"")
            except (MalformedRecord, ValueError):
                continue
            if e.event_type == "actor.start":
                path, name = _start_fields(e)
                return at, path, name
        return None

    # ---- reading the copy ----------------------------------------------------------------

    async def messages(self, subject: str, say: Say | None = None) -> AsyncIterator[tuple[int, bytes, dict]]:
        """(stream seq, payload, headers) of every message of `subject`, in order, up to the last
        one when the read began."""
        from nats.js.api import DeliverPolicy

        last = await self._last(subject)
        if last is None:
            return
        end = int(last.seq)
        try:
            sub = await self.js.subscribe(subject, stream=self.stream, ordered_consumer=True,
                                          deliver_policy=DeliverPolicy.ALL)
        except Exception as exc:  # noqa: BLE001
            raise RemoteChainError(f"cannot read {subject} at {self.url}: {_why(exc)}") from None
        n = 0
        shown = time.monotonic()
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=REQUEST_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - a timeout or a lost connection
                    raise RemoteChainError(f"reading {subject} at {self.url} stopped after {n} message(s): "
                                           f"{_why(exc)}") from None
                seq = int(msg.metadata.sequence.stream)
                n += 1
                yield seq, bytes(msg.data or b""), dict(msg.headers or {})
                if say is not None and time.monotonic() - shown >= PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    say(f"read {n} message(s) of {subject} (stream seq {seq} of {end})")
                if seq >= end:
                    return
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection went: nothing to undo
                pass

    async def verify(self, actor_id: str, path: str | None, name: str | None, home: Home | None,
                     say: Say | None = None) -> RemoteReport:
        subject = replica.subject_for(self.node, actor_id)
        report = RemoteReport(self.node, self.stream, subject, actor_id, path, name)
        last = await self._last(subject)
        if last is None and (home is None or not _local_has(home, actor_id)):
            raise RemoteChainError(f"no replicated chain for {actor_id} in {self.stream} at {self.url}")
        local_iter: Iterator[tuple[int, bytes]] | None = None
        conn = None
        local: LocalSide | None = None
        if home is not None and _local_has(home, actor_id):
            conn = connect(home.chain_db, readonly=True)
            conn.execute("BEGIN")  # one snapshot for the verification and the comparison
            problems = verify_store(conn, actor_id)
            local_problem = problems[0] if problems else None
            events = count_events(conn, actor_id)[0]
            local = LocalSide(events, local_problem, 0, None)
            local_iter = _local_hashes(conn, actor_id, local_problem.seq if local_problem else events)
        scan = ChainScan(actor_id)
        prev_hash: bytes | None = None
        try:
            async for stream_seq, payload, headers in self.messages(subject, say):
                report.messages += 1
                if report.problem is not None:
                    continue
                problem, event = _check_message(scan, actor_id, stream_seq, payload, headers)
                if problem is not None:
                    report.problem = problem
                    continue
                assert event is not None
                prev_hash = event.hash
                report.verified += 1
                report.incarnation = max(report.incarnation, event.incarnation)
                if event.event_type == "actor.start":
                    p, n = _start_fields(event)
                    report.path, report.name = p or report.path, n or report.name
                if local is not None and local_iter is not None and local.diverged_at is None:
                    nxt = next(local_iter, None)
                    if nxt is None:
                        local_iter = None
                    elif nxt[1] == event.hash:
                        local.agree += 1
                    else:
                        local.diverged_at = event.seq
                        local.local_hash, local.copy_hash = nxt[1].hex(), event.hash.hex()
        finally:
            if conn is not None:
                conn.close()
        report.head_hash = prev_hash.hex() if prev_hash is not None else None
        report.local = local
        if actor_id.startswith("supervisor:"):
            report.path, report.name = report.path or _supervisor_path(actor_id), report.name or "supervisor"
        return report

    # ---- restoring -----------------------------------------------------------------------

    async def restore(self, report: RemoteReport, home: Home, force: bool, say: Say | None) -> RestoreReport:
        actor_id = report.actor_id
        usable = report.verified
        if report.problem is not None and not force:
            raise RemoteChainError(f"the copy fails verification ({report.problem}); with --force, restore "
                                   f"takes its first {usable} event(s) only")
        loc = report.local
        local_events = loc.events if loc is not None else 0
        local_ok = (loc.problem.seq if loc.problem is not None else local_events) if loc is not None else 0
        keep = min(loc.agree if loc is not None else 0, usable)
        if local_ok > keep and not force:
            if loc is not None and loc.diverged_at is not None:
                why = f"it diverges from the copy at seq {loc.diverged_at}"
            else:
                why = f"it holds {local_ok - keep} intact event(s) after the copy's last (seq {keep - 1})"
            raise RemoteChainError(f"the local chain of {report.path or actor_id} is intact up to seq {local_ok - 1} "
                                   f"and {why}: restore would discard them; --force replaces it with the copy "
                                   f"(the discarded events are kept in chain.db's cut_records table)")
        out = RestoreReport(actor_id, report.path, kept=keep)
        damaged = loc is not None and loc.problem is not None
        if keep == local_events == usable and not damaged:
            out.up_to_date = True
            out.head_seq = usable - 1
            out.head_hash = report.head_hash
            out.notes.append("the local chain already holds every event of the copy")
            return out
        if usable == 0 and local_events == 0:
            raise RemoteChainError(f"the copy of {actor_id} holds no event that verifies: nothing to restore")
        home.root.mkdir(parents=True, exist_ok=True)
        store = ChainStore(home.chain_db)
        try:
            if local_events > keep or damaged:
                why = (f"restore from {self.stream} at {self.url}: "
                       + (f"local chain damaged ({loc.problem})" if loc is not None and loc.problem is not None
                          else "replaced by the copy (--force)"))
                out.cut = _cut_from(store, actor_id, keep, why)
                store.close()
                store = ChainStore(home.chain_db)
            row = store.conn.execute("SELECT path, name FROM actors WHERE actor_id=?", (actor_id,)).fetchone()
            path = (row[0] if row and row[0] else None) or report.path or _supervisor_path(actor_id) or ""
            name = (row[1] if row and row[1] else None) or report.name or ""
            store.register(actor_id, path, name)
            out.appended = await self._append(store, report.subject, actor_id, keep, usable, say)
            _fix_incarnation(store, actor_id)
            problems = verify_store(store.conn, actor_id)
            if problems:
                raise RemoteChainError(f"the restored chain does not verify: {problems[0]}")
            head = store.conn.execute("SELECT head_seq, head_hash FROM actors WHERE actor_id=?", (actor_id,)).fetchone()
            out.head_seq, out.head_hash = int(head[0]), (bytes(head[1]).hex() if head[1] is not None else None)
        finally:
            store.close()
        if report.problem is not None:
            out.notes.append(f"the copy fails verification at seq {report.problem.seq}: restored its first {usable} "
                             f"event(s) only")
        return out

    async def _append(self, store: ChainStore, subject: str, actor_id: str, start: int, end: int,
                      say: Say | None) -> int:
        """Append the copy's events start..end-1 through the store; each stored hash must be the copy's."""
        pending: list[ChainEvent] = []
        appended = 0
        shown = time.monotonic()

        def flush() -> None:
            nonlocal appended
            stored, rejected = store.append_batch(
                (e.actor_id, e.incarnation, e.event_type, e.timestamp, e.data, True) for e in pending)
            if rejected or len(stored) != len(pending):
                raise RemoteChainError(f"the store refused {rejected} event(s) of the copy")
            for mine, theirs in zip(stored, pending, strict=True):
                if (mine.seq, mine.hash) != (theirs.seq, theirs.hash):
                    raise RemoteChainError(f"event {theirs.seq} stored with hash {mine.hash.hex()[:16]}…, the "
                                           f"copy's is {theirs.hash.hex()[:16]}…: chain.db holds the events "
                                           f"before it (verified) and not this one")
            appended += len(pending)
            pending.clear()

        if start >= end:
            return 0
        async for _seq, payload, _headers in self.messages(subject):
            e = parse_record(payload)
            if e.seq < start:
                continue
            if e.seq >= end:
                break
            pending.append(e)
            if len(pending) >= RESTORE_BATCH:
                flush()
                if say is not None and time.monotonic() - shown >= PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    say(f"restored {start + appended} of {end} event(s)")
        if pending:
            flush()
        if start + appended != end:
            raise RemoteChainError(f"the copy ended at seq {start + appended - 1} while restoring, not {end - 1}")
        return appended


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _check_message(scan: ChainScan, actor_id: str, stream_seq: int, payload: bytes,
                   headers: dict) -> tuple[Problem | None, ChainEvent | None]:
    """Check one replicated message as the next event of the chain `scan` walks."""
    try:
        records = list(chain_event.split_records(payload))
    except MalformedRecord as exc:
        records = []
        why = str(exc)
    else:
        why = f"{len(records)} records"
    if len(records) != 1:
        return Problem(actor_id, scan.expect, "malformed message", "one event record",
                       f"{why} at stream seq {stream_seq}"), None
    problem = scan.records(payload)
    if problem is not None:
        return problem, None
    _o, enc, h = records[0]
    event = chain_event.decode_record(enc, h)
    seq_h, hash_h = headers.get(SEQ_HEADER), headers.get(HASH_HEADER)
    if seq_h != str(event.seq) or hash_h != event.hash.hex():
        return Problem(actor_id, event.seq, "header mismatch", f"{SEQ_HEADER} {event.seq}, {HASH_HEADER} "
                       f"{event.hash.hex()}", f"{seq_h}, {hash_h} at stream seq {stream_seq}"), None
    return None, event


def _local_has(home: Home, actor_id: str) -> bool:
    conn = connect(home.chain_db, readonly=True)
    try:
        return conn.execute("SELECT 1 FROM actors WHERE actor_id=? UNION SELECT 1 FROM chunks WHERE actor_id=?",
                            (actor_id, actor_id)).fetchone() is not None
    finally:
        conn.close()


def _local_hashes(conn: Any, actor_id: str, upto: int) -> Iterator[tuple[int, bytes]]:
    """(seq, hash) of the local chain's first `upto` events (its verified part), in order."""
    n = 0
    for (blob,) in conn.execute("SELECT records FROM chunks WHERE actor_id=? ORDER BY first_seq", (actor_id,)):
        for _o, _enc, h in chain_event.split_records(bytes(blob)):
            if n >= upto:
                return
            yield n, bytes(h)
            n += 1


def _cut_from(store: ChainStore, actor_id: str, keep: int, why: str) -> int:
    """Cut `actor_id`'s chain from seq `keep` on (its events before `keep` verified); the cut bytes
    go to cut_records. Returns the number of records cut (a truncated one counts as one)."""
    c = store.conn
    c.execute("BEGIN IMMEDIATE")
    try:
        chunks = c.execute("SELECT rowid, first_seq, last_seq, records FROM chunks WHERE actor_id=? "
                           "ORDER BY first_seq", (actor_id,)).fetchall()
        cut_parts: list[bytes] = []
        head_hash: bytes | None = None
        for rowid, first, last, blob in chunks:
            blob = bytes(blob)
            if type(first) is int and type(last) is int and last < keep:
                head_hash = blob[-HASH_SIZE:] if keep > 0 else None
                continue
            offset = 0
            if type(first) is int and first < keep:
                n = first
                try:
                    for o, _enc, h in chain_event.split_records(blob):
                        if n >= keep:
                            offset = o
                            break
                        head_hash, n = bytes(h), n + 1
                    else:
                        offset = len(blob)
                except MalformedRecord:
                    offset = len(blob)
            cut_parts.append(blob[offset:])
            if offset > 0:
                c.execute("UPDATE chunks SET records=?, last_seq=? WHERE rowid=?", (blob[:offset], keep - 1, rowid))
            else:
                c.execute("DELETE FROM chunks WHERE rowid=?", (rowid,))
        cut_blob = b"".join(cut_parts)
        n_cut = _count_records(cut_blob)
        if cut_blob:
            c.execute("INSERT INTO cut_records(actor_id, from_seq, events, records, cut_at, why) VALUES (?, ?, ?, ?, ?, ?)",
                      (actor_id, keep, n_cut, cut_blob, time.time_ns(), why))
        c.execute("UPDATE actors SET head_seq=?, head_hash=? WHERE actor_id=?",
                  (keep - 1, head_hash if keep > 0 else None, actor_id))
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return n_cut


def _count_records(blob: bytes) -> int:
    n = 0
    try:
        for _ in chain_event.split_records(blob):
            n += 1
    except MalformedRecord:
        n += 1
    return n


def _fix_incarnation(store: ChainStore, actor_id: str) -> None:
    """The actors row's incarnation: the largest of the chain's events (what the writer keeps)."""
    top = max((e.incarnation for e in iter_chain(store.conn, actor_id)), default=0)
    store.conn.execute("UPDATE actors SET incarnation=? WHERE actor_id=?", (top, actor_id))


def _start_fields(e: ChainEvent) -> tuple[str | None, str | None]:
    try:
        data = msgpack.unpackb(e.data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - data that is not msgpack names nothing
        return None, None
    if not isinstance(data, dict):
        return None, None
    path, name = data.get("path"), data.get("name")
    return (path if isinstance(path, str) else None), (name if isinstance(name, str) else None)


def _supervisor_path(actor_id: str) -> str | None:
    return actor_id[len("supervisor:"):] if actor_id.startswith("supervisor:") else None


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["LocalSide", "RemoteChainError", "RemoteReport", "RestoreReport", "arestore", "averify_remote",
           "restore", "verify_remote"]
