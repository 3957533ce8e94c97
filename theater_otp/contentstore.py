"""The persistent content-addressed store behind the actors' `store` handler (docs/store.md).

One SQLite file, HOME/store.db, holds every store of a node. Content is addressed
by the SHA-256 hex of its bytes and kept once per node (`blobs`), whichever stores
hold it; a store is a set of hashes (`members`) plus labels, each an ordered list
of hashes (`labels`). Several worker processes open the file at once: every write
is one short `BEGIN IMMEDIATE` transaction, and a writer waits up to
BUSY_TIMEOUT_S for another one to finish.

One ContentStore per process. The connection is opened on first use in the
process that uses it; an object that crossed a fork opens a fresh connection in
the child and never touches (nor closes) the one it inherited.

Every caller error raises StoreError with a message naming the store, label or
hash and the rule broken; an SQLite failure (disk full, lock still held after
the timeout, ...) is turned into a StoreError naming the file, never leaked raw.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

from .errors import TheaterError

#: Largest content accepted by put/store_at_label/replace_content_at_label/put_blob.
#: One value is read and written whole (in memory and in one transaction), so this
#: bounds a call's memory and how long it holds the write lock.
MAX_CONTENT_BYTES = 64 << 20  # 64 MiB
#: Longest store id or label, in characters.
MAX_NAME_CHARS = 256
#: How long a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_S = 10.0

_HASH_RE = re.compile(r"[0-9a-f]{64}")

SCHEMA = (
    # Content, once per node. Also holds node-level blobs (put_blob) that belong to no store.
    """CREATE TABLE IF NOT EXISTS blobs (
        hash  TEXT    PRIMARY KEY,
        size  INTEGER NOT NULL,
        data  BLOB    NOT NULL
    )""",
    # size = bytes of the distinct content of the store, kept in the same transaction as members.
    """CREATE TABLE IF NOT EXISTS stores (
        store_id  TEXT    PRIMARY KEY,
        size      INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS members (
        store_id  TEXT NOT NULL,
        hash      TEXT NOT NULL,
        PRIMARY KEY (store_id, hash)
    ) WITHOUT ROWID""",
    # A label is the ordered list of its rows by seq; the last one is the label's current ref.
    """CREATE TABLE IF NOT EXISTS labels (
        store_id  TEXT    NOT NULL,
        label     TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        hash      TEXT    NOT NULL,
        PRIMARY KEY (store_id, label, seq)
    ) WITHOUT ROWID""",
)

T = TypeVar("T")

#: Connections inherited across a fork: kept referenced so the child never closes
#: (and so never checkpoints or unlocks) a connection that belongs to its parent.
_inherited: list[sqlite3.Connection] = []


class StoreError(TheaterError):
    """A store call the backend refuses (bad argument, unknown store/content/label, quota)
    or could not carry out (the database file failed)."""


def content_hash(data: bytes) -> str:
    """The address of `data`: SHA-256, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{kind} must be a str, not {type(value).__name__}: {_show(value)}")
    if not value:
        raise StoreError(f"{kind} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise StoreError(f"{kind} {_show(value)} is {len(value)} characters long; at most {MAX_NAME_CHARS} are allowed")
    if "\x00" in value:
        raise StoreError(f"{kind} {_show(value)} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"{kind} {_show(value)} is not valid Unicode text (lone surrogate)") from None
    return value


def _check_store_id(store_id: object) -> str:
    return _check_name("store id", store_id)


def _check_label(label: object) -> str:
    return _check_name("label", label)


def _check_hash(h: object) -> str:
    if not isinstance(h, str) or not _HASH_RE.fullmatch(h):
        raise StoreError(f"not a content hash: {_show(h)} (a content hash is the SHA-256 of the content "
                         f"as 64 lowercase hex digits)")
    return h


def _check_data(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise StoreError(f"content must be bytes, not {type(data).__name__}")
    if len(data) > MAX_CONTENT_BYTES:
        raise StoreError(f"content of {len(data)} bytes is larger than the limit of {MAX_CONTENT_BYTES} bytes")
    return data


def _check_quota(quota_bytes: object) -> int | None:
    if quota_bytes is None:
        return None
    if isinstance(quota_bytes, bool) or not isinstance(quota_bytes, int) or quota_bytes < 0:
        raise StoreError(f"quota must be a non-negative int of bytes or None, not {_show(quota_bytes)}")
    return quota_bytes


class ContentStore:
    """All stores of one node, in one SQLite file. Owns its connection: `close()` (idempotent)
    or use it as a context manager. Thread-safe within a process (one lock around the connection)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"content store {self.path} is closed")
        if self._conn is not None and self._pid != os.getpid():
            _inherited.append(self._conn)  # the parent's: never used nor closed here
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        """Pragmas and schema. Switching a new file to WAL takes an exclusive lock for which SQLite
        does not call the busy handler: processes opening a fresh file together get "database is
        locked" at once. So this step retries by itself, within the same BUSY_TIMEOUT_S."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                # page_size only takes on a new file and must precede WAL; 16 KiB pages suit blobs.
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: every commit fsyncs the WAL, so a put that returned survives power loss
                # too, as chain.db's events do (an event naming a hash never outlives its content).
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
                conn.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                busy = getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                else:
                    _inherited.append(self._conn)
            self._conn = None

    def __enter__(self) -> "ContentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._connection())
            except sqlite3.Error as e:
                raise StoreError(f"content store {self.path}: {what} failed: {e}") from e

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one BEGIN IMMEDIATE transaction: committed if it returns, rolled back if it raises."""
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                if self._conn is not None and self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise StoreError(f"content store {self.path}: {what} failed: {e}") from e

    # -- helpers run inside a transaction ----------------------------------------------------

    @staticmethod
    def _require_store(conn: sqlite3.Connection, store_id: str) -> int:
        row = conn.execute("SELECT size FROM stores WHERE store_id=?", (store_id,)).fetchone()
        if row is None:
            raise StoreError(f"no store {store_id!r}: make one with `new`, or name a shared one in the manifest's `stores`")
        return row[0]

    @staticmethod
    def _is_member(conn: sqlite3.Connection, store_id: str, h: str) -> bool:
        return conn.execute("SELECT 1 FROM members WHERE store_id=? AND hash=?", (store_id, h)).fetchone() is not None

    def _require_member(self, conn: sqlite3.Connection, store_id: str, h: str) -> None:
        if not self._is_member(conn, store_id, h):
            raise StoreError(f"no content {h} in store {store_id!r}")

    @staticmethod
    def _insert_blob(conn: sqlite3.Connection, h: str, data: bytes) -> None:
        if conn.execute("SELECT 1 FROM blobs WHERE hash=?", (h,)).fetchone() is None:
            conn.execute("INSERT INTO blobs(hash, size, data) VALUES (?, ?, ?)", (h, len(data), data))

    def _put_in(self, conn: sqlite3.Connection, store_id: str, h: str, data: bytes, quota: int | None) -> None:
        size = self._require_store(conn, store_id)
        if self._is_member(conn, store_id, h):
            return  # already there: costs nothing
        if quota is not None and size + len(data) > quota:
            raise StoreError(f"store {store_id!r} is over its quota of {quota} bytes: it holds {size} bytes "
                             f"and storing {len(data)} more would make {size + len(data)}")
        self._insert_blob(conn, h, data)
        conn.execute("INSERT INTO members(store_id, hash) VALUES (?, ?)", (store_id, h))
        conn.execute("UPDATE stores SET size=size+? WHERE store_id=?", (len(data), store_id))

    @staticmethod
    def _attach(conn: sqlite3.Connection, store_id: str, label: str, h: str) -> None:
        """Append h to the label (moving it to the end if the label already holds it)."""
        conn.execute("DELETE FROM labels WHERE store_id=? AND label=? AND hash=?", (store_id, label, h))
        (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM labels WHERE store_id=? AND label=?",
                               (store_id, label)).fetchone()
        conn.execute("INSERT INTO labels(store_id, label, seq, hash) VALUES (?, ?, ?, ?)",
                     (store_id, label, last + 1, h))

    # -- stores ---------------------------------------------------------------------------------

    def new_store(self) -> str:
        """Create a store with a fresh id (uuid4 text) and return the id."""
        store_id = str(uuid.uuid4())
        self._write("new_store", lambda c: c.execute("INSERT INTO stores(store_id) VALUES (?)", (store_id,)))
        return store_id

    def ensure_store(self, store_id: str) -> None:
        """Create the store if it does not exist yet (a manifest naming a shared store id)."""
        _check_store_id(store_id)
        self._write(f"ensure_store {store_id!r}", lambda c: c.execute(
            "INSERT INTO stores(store_id) VALUES (?) ON CONFLICT(store_id) DO NOTHING", (store_id,)))

    def store_exists(self, store_id: str) -> bool:
        _check_store_id(store_id)
        return self._read("store_exists", lambda c: c.execute(
            "SELECT 1 FROM stores WHERE store_id=?", (store_id,)).fetchone() is not None)

    # -- content --------------------------------------------------------------------------------

    def put(self, store_id: str, data: bytes, quota_bytes: int | None = None) -> str:
        """Store `data` in the store and return its hash. Content the store already holds is not
        stored again and costs nothing against `quota_bytes`."""
        _check_store_id(store_id)
        data = _check_data(data)
        quota = _check_quota(quota_bytes)
        h = content_hash(data)  # outside the transaction: hashing 64 MiB takes a while
        self._write(f"put into store {store_id!r}", lambda c: self._put_in(c, store_id, h, data, quota))
        return h

    def get(self, store_id: str, hash: str) -> bytes:
        _check_store_id(store_id)
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> bytes:
            row = c.execute("SELECT b.data FROM members m JOIN blobs b ON b.hash = m.hash "
                            "WHERE m.store_id=? AND m.hash=?", (store_id, hash)).fetchone()
            if row is None:
                self._require_store(c, store_id)
                raise StoreError(f"no content {hash} in store {store_id!r}")
            return bytes(row[0])

        return self._read(f"get from store {store_id!r}", run)

    def exists(self, store_id: str, hash: str) -> bool:
        _check_store_id(store_id)
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> bool:
            self._require_store(c, store_id)
            return self._is_member(c, store_id, hash)

        return self._read(f"exists in store {store_id!r}", run)

    def list_all_content(self, store_id: str) -> list[str]:
        """Every hash the store holds, sorted."""
        _check_store_id(store_id)

        def run(c: sqlite3.Connection) -> list[str]:
            self._require_store(c, store_id)
            return [h for (h,) in c.execute("SELECT hash FROM members WHERE store_id=? ORDER BY hash", (store_id,))]

        return self._read(f"list content of store {store_id!r}", run)

    def calculate_total_size(self, store_id: str) -> int:
        """Bytes of the distinct content the store holds (each value counted once)."""
        _check_store_id(store_id)
        return self._read(f"size of store {store_id!r}", lambda c: self._require_store(c, store_id))

    # -- labels ---------------------------------------------------------------------------------

    def label(self, store_id: str, label: str, hash: str) -> None:
        """Attach content the store holds to the label, as its most recent ref (a ref the label
        already holds moves to the end; a label holds each hash at most once)."""
        _check_store_id(store_id)
        _check_label(label)
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> None:
            self._require_store(c, store_id)
            if not self._is_member(c, store_id, hash):
                raise StoreError(f"no content {hash} in store {store_id!r}: label {label!r} can only hold "
                                 f"content of its own store")
            self._attach(c, store_id, label, hash)

        self._write(f"label {label!r} in store {store_id!r}", run)

    def get_by_label(self, store_id: str, label: str) -> str | None:
        """The label's most recently attached ref, or None when the store has no such label."""
        _check_store_id(store_id)
        _check_label(label)

        def run(c: sqlite3.Connection) -> str | None:
            self._require_store(c, store_id)
            row = c.execute("SELECT hash FROM labels WHERE store_id=? AND label=? ORDER BY seq DESC LIMIT 1",
                            (store_id, label)).fetchone()
            return row[0] if row else None

        return self._read(f"get label {label!r} of store {store_id!r}", run)

    def refs_at_label(self, store_id: str, label: str) -> list[str]:
        """Every ref the label holds, oldest first ([] when there is no such label)."""
        _check_store_id(store_id)
        _check_label(label)

        def run(c: sqlite3.Connection) -> list[str]:
            self._require_store(c, store_id)
            return [h for (h,) in c.execute("SELECT hash FROM labels WHERE store_id=? AND label=? ORDER BY seq",
                                            (store_id, label))]

        return self._read(f"refs at label {label!r} of store {store_id!r}", run)

    def remove_label(self, store_id: str, label: str) -> None:
        """Drop the label and all its refs (the content stays in the store)."""
        _check_store_id(store_id)
        _check_label(label)

        def run(c: sqlite3.Connection) -> None:
            self._require_store(c, store_id)
            if c.execute("DELETE FROM labels WHERE store_id=? AND label=?", (store_id, label)).rowcount == 0:
                raise StoreError(f"no label {label!r} in store {store_id!r}")

        self._write(f"remove label {label!r} from store {store_id!r}", run)

    def remove_from_label(self, store_id: str, label: str, hash: str) -> None:
        """Take one ref off the label; a label left with no ref no longer exists."""
        _check_store_id(store_id)
        _check_label(label)
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> None:
            self._require_store(c, store_id)
            if c.execute("DELETE FROM labels WHERE store_id=? AND label=? AND hash=?",
                         (store_id, label, hash)).rowcount == 0:
                raise StoreError(f"label {label!r} in store {store_id!r} does not hold content {hash}")

        self._write(f"remove from label {label!r} in store {store_id!r}", run)

    def store_at_label(self, store_id: str, label: str, data: bytes, quota_bytes: int | None = None) -> str:
        """put + label, in one transaction."""
        _check_store_id(store_id)
        _check_label(label)
        data = _check_data(data)
        quota = _check_quota(quota_bytes)
        h = content_hash(data)

        def run(c: sqlite3.Connection) -> None:
            self._put_in(c, store_id, h, data, quota)
            self._attach(c, store_id, label, h)

        self._write(f"store at label {label!r} in store {store_id!r}", run)
        return h

    def replace_content_at_label(self, store_id: str, label: str, data: bytes,
                                 quota_bytes: int | None = None) -> str:
        """put, then the label holds exactly this ref; one transaction."""
        _check_store_id(store_id)
        _check_label(label)
        data = _check_data(data)
        quota = _check_quota(quota_bytes)
        h = content_hash(data)

        def run(c: sqlite3.Connection) -> None:
            self._put_in(c, store_id, h, data, quota)
            c.execute("DELETE FROM labels WHERE store_id=? AND label=?", (store_id, label))
            self._attach(c, store_id, label, h)

        self._write(f"replace content at label {label!r} in store {store_id!r}", run)
        return h

    def replace_at_label(self, store_id: str, label: str, hash: str) -> None:
        """The label now holds exactly `hash`, which the store must hold (creates the label if missing)."""
        _check_store_id(store_id)
        _check_label(label)
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> None:
            self._require_store(c, store_id)
            self._require_member(c, store_id, hash)
            c.execute("DELETE FROM labels WHERE store_id=? AND label=?", (store_id, label))
            self._attach(c, store_id, label, hash)

        self._write(f"replace at label {label!r} in store {store_id!r}", run)

    def list_labels(self, store_id: str) -> list[str]:
        _check_store_id(store_id)

        def run(c: sqlite3.Connection) -> list[str]:
            self._require_store(c, store_id)
            return sorted(lb for (lb,) in c.execute("SELECT DISTINCT label FROM labels WHERE store_id=?",
                                                    (store_id,)))

        return self._read(f"list labels of store {store_id!r}", run)

    # -- node level -----------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Keep `data` once at node level, in no store (large recorded payloads); return its hash."""
        data = _check_data(data)
        h = content_hash(data)
        self._write("put_blob", lambda c: self._insert_blob(c, h, data))
        return h

    def blob(self, hash: str) -> bytes | None:
        """Content by hash whichever store holds it (or put_blob kept it); None if the node has none.
        Replay serves a recorded `get` from this."""
        _check_hash(hash)

        def run(c: sqlite3.Connection) -> bytes | None:
            row = c.execute("SELECT data FROM blobs WHERE hash=?", (hash,)).fetchone()
            return bytes(row[0]) if row else None

        return self._read("blob", run)
