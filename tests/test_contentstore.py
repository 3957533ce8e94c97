"""The content-addressed store backend (theater_otp/contentstore.py, docs/store.md): no wasm, no node."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theater_otp import contentstore
from theater_otp.contentstore import MAX_CONTENT_BYTES, ContentStore, StoreError, content_hash
from theater_otp.errors import TheaterError
from theater_otp.home import Home

pytestmark = pytest.mark.unit


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cs(tmp_path):
    with ContentStore(tmp_path / "store.db") as store:
        yield store


@pytest.fixture
def sid(cs):
    return cs.new_store()


def count_blobs(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]


# -- stores ------------------------------------------------------------------------------------

def test_new_store_gives_fresh_uuid4_ids(cs):
    a, b = cs.new_store(), cs.new_store()
    assert a != b
    assert uuid.UUID(a).version == 4 and str(uuid.UUID(a)) == a
    assert cs.store_exists(a) and cs.store_exists(b)
    assert cs.list_all_content(a) == [] and cs.list_labels(a) == [] and cs.calculate_total_size(a) == 0


def test_ensure_store_creates_once_and_keeps_content(cs):
    assert not cs.store_exists("shared")
    cs.ensure_store("shared")
    h = cs.put("shared", b"kept")
    cs.ensure_store("shared")  # a second manifest naming the same store
    assert cs.store_exists("shared")
    assert cs.get("shared", h) == b"kept"


def test_unknown_store_is_a_clear_error_everywhere(cs):
    h = sha(b"x")
    calls = [
        lambda: cs.put("nope", b"x"),
        lambda: cs.get("nope", h),
        lambda: cs.exists("nope", h),
        lambda: cs.label("nope", "l", h),
        lambda: cs.get_by_label("nope", "l"),
        lambda: cs.refs_at_label("nope", "l"),
        lambda: cs.remove_label("nope", "l"),
        lambda: cs.remove_from_label("nope", "l", h),
        lambda: cs.store_at_label("nope", "l", b"x"),
        lambda: cs.replace_content_at_label("nope", "l", b"x"),
        lambda: cs.replace_at_label("nope", "l", h),
        lambda: cs.list_labels("nope"),
        lambda: cs.list_all_content("nope"),
        lambda: cs.calculate_total_size("nope"),
    ]
    for call in calls:
        with pytest.raises(StoreError, match=r"no store 'nope': make one with `new`"):
            call()
    assert cs.blob(h) is None  # nothing was stored by the refused puts


# -- content -----------------------------------------------------------------------------------

def test_put_get_exists_round_trip(cs, sid):
    h = cs.put(sid, b"hello")
    assert h == sha(b"hello") == content_hash(b"hello")
    assert cs.get(sid, h) == b"hello"
    assert cs.exists(sid, h)
    assert not cs.exists(sid, sha(b"other"))
    assert cs.put(sid, b"") == sha(b"")  # empty content is content too
    assert cs.get(sid, sha(b"")) == b""


def test_put_accepts_bytearray_and_memoryview(cs, sid):
    assert cs.put(sid, bytearray(b"ba")) == sha(b"ba")
    assert cs.put(sid, memoryview(b"mv")) == sha(b"mv")
    assert isinstance(cs.get(sid, sha(b"ba")), bytes)


def test_get_unknown_hash_names_hash_and_store(cs, sid):
    h = sha(b"never stored")
    with pytest.raises(StoreError) as e:
        cs.get(sid, h)
    assert str(e.value) == f"no content {h} in store {sid!r}"
    assert isinstance(e.value, TheaterError)


def test_content_of_one_store_is_not_visible_in_another(cs):
    a, b = cs.new_store(), cs.new_store()
    h = cs.put(a, b"private")
    assert not cs.exists(b, h)
    with pytest.raises(StoreError, match=f"no content {h} in store '{b}'"):
        cs.get(b, h)
    assert cs.list_all_content(b) == []


def test_dedup_same_bytes_twice_is_one_blob_counted_once(cs, sid, tmp_path):
    h1 = cs.put(sid, b"twice" * 100)
    h2 = cs.put(sid, b"twice" * 100)
    assert h1 == h2
    assert cs.list_all_content(sid) == [h1]
    assert cs.calculate_total_size(sid) == 500
    assert count_blobs(tmp_path / "store.db") == 1
    # the same bytes in another store: still one blob, counted in each store
    other = cs.new_store()
    cs.put(other, b"twice" * 100)
    assert count_blobs(tmp_path / "store.db") == 1
    assert cs.calculate_total_size(other) == 500 and cs.calculate_total_size(sid) == 500


def test_list_all_content_sorted_and_total_size(cs, sid, tmp_path):
    values = [b"a", b"bb", b"ccc", b"dddd", b"a"]
    hashes = [cs.put(sid, v) for v in values]
    assert cs.list_all_content(sid) == sorted(set(hashes))
    assert cs.calculate_total_size(sid) == 1 + 2 + 3 + 4
    with sqlite3.connect(tmp_path / "store.db") as conn:  # the kept counter agrees with the content
        (joined,) = conn.execute("SELECT SUM(b.size) FROM members m JOIN blobs b ON b.hash=m.hash "
                                 "WHERE m.store_id=?", (sid,)).fetchone()
    assert joined == 10


def test_content_larger_than_the_limit_is_refused(cs, sid):
    assert MAX_CONTENT_BYTES == 64 << 20
    with pytest.raises(StoreError, match=f"content of {MAX_CONTENT_BYTES + 1} bytes is larger than the limit "
                                         f"of {MAX_CONTENT_BYTES} bytes"):
        cs.put(sid, bytes(MAX_CONTENT_BYTES + 1))
    assert cs.list_all_content(sid) == []


def test_content_at_the_limit_is_stored(cs, sid, monkeypatch):
    monkeypatch.setattr(contentstore, "MAX_CONTENT_BYTES", 1024)  # the rule, without 64 MiB of I/O
    assert cs.get(sid, cs.put(sid, bytes(1024))) == bytes(1024)
    with pytest.raises(StoreError, match="larger than the limit of 1024 bytes"):
        cs.put_blob(bytes(1025))


# -- quota -------------------------------------------------------------------------------------

def test_quota_exact_fit_ok_one_byte_over_refused(cs, sid):
    cs.put(sid, b"x" * 60, quota_bytes=100)
    cs.put(sid, b"y" * 40, quota_bytes=100)  # exactly 100
    assert cs.calculate_total_size(sid) == 100
    with pytest.raises(StoreError) as e:
        cs.put(sid, b"z", quota_bytes=100)
    msg = str(e.value)
    assert sid in msg and "quota of 100 bytes" in msg and "holds 100 bytes" in msg and "storing 1 more" in msg
    assert cs.calculate_total_size(sid) == 100
    assert not cs.exists(sid, sha(b"z"))


def test_quota_one_byte_over_on_an_empty_store(cs, sid):
    with pytest.raises(StoreError, match=f"store '{sid}' is over its quota of 10 bytes: it holds 0 bytes "
                                         f"and storing 11 more would make 11"):
        cs.put(sid, b"0123456789A", quota_bytes=10)
    assert cs.put(sid, b"0123456789", quota_bytes=10) == sha(b"0123456789")


def test_quota_dedup_costs_nothing(cs, sid):
    h = cs.put(sid, b"full" * 25, quota_bytes=100)
    assert cs.put(sid, b"full" * 25, quota_bytes=100) == h  # already there: no cost, even when full
    assert cs.store_at_label(sid, "l", b"full" * 25, quota_bytes=100) == h
    assert cs.replace_content_at_label(sid, "l", b"full" * 25, quota_bytes=100) == h
    assert cs.put(sid, b"full" * 25, quota_bytes=0) == h
    # content held by ANOTHER store still costs this one
    other = cs.new_store()
    with pytest.raises(StoreError, match=f"store '{other}' is over its quota"):
        cs.put(other, b"full" * 25, quota_bytes=99)


def test_quota_applies_to_label_writes_and_a_refusal_changes_nothing(cs, sid):
    h = cs.store_at_label(sid, "l", b"12345", quota_bytes=8)
    with pytest.raises(StoreError, match="over its quota of 8 bytes"):
        cs.store_at_label(sid, "l", b"6789", quota_bytes=8)
    with pytest.raises(StoreError, match="over its quota of 8 bytes"):
        cs.replace_content_at_label(sid, "l", b"6789", quota_bytes=8)
    assert cs.refs_at_label(sid, "l") == [h]
    assert cs.list_all_content(sid) == [h]


@pytest.mark.parametrize("quota", [-1, 1.5, "10", True])
def test_bad_quota_is_refused(cs, sid, quota):
    with pytest.raises(StoreError, match="quota must be a non-negative int of bytes or None"):
        cs.put(sid, b"x", quota_bytes=quota)


# -- labels ------------------------------------------------------------------------------------

def test_label_list_semantics(cs, sid):
    a, b, c = (cs.put(sid, v) for v in (b"a", b"b", b"c"))
    assert cs.get_by_label(sid, "l") is None
    cs.label(sid, "l", a)
    cs.label(sid, "l", b)
    assert cs.get_by_label(sid, "l") == b  # the most recently attached
    assert cs.refs_at_label(sid, "l") == [a, b]
    cs.label(sid, "l", a)  # attaching a held ref again moves it to the end
    assert cs.refs_at_label(sid, "l") == [b, a]
    assert cs.get_by_label(sid, "l") == a
    cs.label(sid, "l", c)
    cs.remove_from_label(sid, "l", c)  # removing the newest exposes the one before
    assert cs.get_by_label(sid, "l") == a
    cs.remove_from_label(sid, "l", b)  # removing from the middle keeps the order of the rest
    assert cs.refs_at_label(sid, "l") == [a]
    cs.remove_from_label(sid, "l", a)  # empty label: gone
    assert cs.get_by_label(sid, "l") is None
    assert cs.list_labels(sid) == []
    assert cs.list_all_content(sid) == sorted([a, b, c])  # labels never drop content


def test_remove_from_label_of_a_ref_it_does_not_hold(cs, sid):
    a, b = cs.put(sid, b"a"), cs.put(sid, b"b")
    cs.label(sid, "l", a)
    with pytest.raises(StoreError, match=f"label 'l' in store '{sid}' does not hold content {b}"):
        cs.remove_from_label(sid, "l", b)
    with pytest.raises(StoreError, match=f"label 'missing' in store '{sid}' does not hold content {a}"):
        cs.remove_from_label(sid, "missing", a)


def test_label_needs_content_of_the_same_store(cs, sid):
    other = cs.new_store()
    h = cs.put(other, b"elsewhere")
    with pytest.raises(StoreError, match=f"no content {h} in store '{sid}': label 'l' can only hold"):
        cs.label(sid, "l", h)
    with pytest.raises(StoreError, match=f"no content {h} in store '{sid}'"):
        cs.replace_at_label(sid, "l", h)
    assert cs.list_labels(sid) == []


def test_remove_label(cs, sid):
    a, b = cs.put(sid, b"a"), cs.put(sid, b"b")
    cs.label(sid, "x", a)
    cs.label(sid, "x", b)
    cs.label(sid, "y", a)
    cs.remove_label(sid, "x")
    assert cs.list_labels(sid) == ["y"]
    assert cs.get_by_label(sid, "x") is None
    assert cs.exists(sid, a) and cs.exists(sid, b)
    with pytest.raises(StoreError, match=f"no label 'x' in store '{sid}'"):
        cs.remove_label(sid, "x")


def test_store_at_label_puts_and_attaches(cs, sid):
    h1 = cs.store_at_label(sid, "doc", b"v1")
    h2 = cs.store_at_label(sid, "doc", b"v2")
    assert (h1, h2) == (sha(b"v1"), sha(b"v2"))
    assert cs.get_by_label(sid, "doc") == h2
    assert cs.refs_at_label(sid, "doc") == [h1, h2]
    assert cs.get(sid, h1) == b"v1"


def test_replace_content_at_label_leaves_exactly_one_ref(cs, sid):
    cs.store_at_label(sid, "doc", b"v1")
    cs.store_at_label(sid, "doc", b"v2")
    h3 = cs.replace_content_at_label(sid, "doc", b"v3")
    assert cs.refs_at_label(sid, "doc") == [h3]
    assert cs.get(sid, h3) == b"v3"
    assert cs.replace_content_at_label(sid, "new", b"v3") == h3  # creates the label
    assert cs.refs_at_label(sid, "new") == [h3]
    assert len(cs.list_all_content(sid)) == 3


def test_replace_at_label(cs, sid):
    a, b = cs.put(sid, b"a"), cs.put(sid, b"b")
    cs.replace_at_label(sid, "l", a)  # creates
    assert cs.refs_at_label(sid, "l") == [a]
    cs.label(sid, "l", b)
    cs.replace_at_label(sid, "l", a)
    assert cs.refs_at_label(sid, "l") == [a]
    assert cs.get_by_label(sid, "l") == a


def test_list_labels_sorted_and_per_store(cs, sid):
    h = cs.put(sid, b"x")
    for name in ("zeta", "alpha", "Beta", "émile", "mid"):
        cs.label(sid, name, h)
    assert cs.list_labels(sid) == sorted(["zeta", "alpha", "Beta", "émile", "mid"])
    other = cs.new_store()
    assert cs.list_labels(other) == []
    assert cs.get_by_label(other, "alpha") is None


# -- node-level blobs --------------------------------------------------------------------------

def test_blob_finds_content_of_any_store_and_put_blob_belongs_to_none(cs, sid, tmp_path):
    h = cs.put(sid, b"in a store")
    assert cs.blob(h) == b"in a store"
    assert cs.blob(sha(b"nowhere")) is None
    big = b"recorded payload" * 1000
    hb = cs.put_blob(big)
    assert hb == sha(big) and cs.blob(hb) == big
    assert cs.put_blob(big) == hb and count_blobs(tmp_path / "store.db") == 2  # stored once
    assert not cs.exists(sid, hb) and hb not in cs.list_all_content(sid)
    assert cs.calculate_total_size(sid) == len(b"in a store")
    # a store then putting the same bytes shares the blob, and pays for it
    cs.put(sid, big)
    assert count_blobs(tmp_path / "store.db") == 2
    assert cs.calculate_total_size(sid) == len(b"in a store") + len(big)


# -- bad inputs --------------------------------------------------------------------------------

BAD_HASHES = ["", "abc", sha(b"x").upper(), sha(b"x") + "0", sha(b"x")[:-1] + "g", " " + sha(b"x")[1:],
              b"0" * 64, 12, None]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=range(len(BAD_HASHES)))
def test_bad_hash_is_not_a_content_hash(cs, sid, bad):
    for call in (lambda: cs.get(sid, bad), lambda: cs.exists(sid, bad), lambda: cs.label(sid, "l", bad),
                 lambda: cs.remove_from_label(sid, "l", bad), lambda: cs.replace_at_label(sid, "l", bad),
                 lambda: cs.blob(bad)):
        with pytest.raises(StoreError, match="not a content hash: .*64 lowercase hex digits"):
            call()


@pytest.mark.parametrize("bad, why", [
    ("", "must not be empty"),
    ("x" * 257, "is 257 characters long; at most 256"),
    ("a\x00b", "contains a NUL character"),
    ("\ud800", "not valid Unicode text"),
    (b"bytes", "must be a str, not bytes"),
    (None, "must be a str, not NoneType"),
    (7, "must be a str, not int"),
])
def test_bad_store_id_and_label(cs, sid, bad, why):
    h = cs.put(sid, b"x")
    with pytest.raises(StoreError, match=f"store id .*{why}"):
        cs.ensure_store(bad)
    with pytest.raises(StoreError, match=f"store id .*{why}"):
        cs.put(bad, b"x")
    with pytest.raises(StoreError, match=f"store id .*{why}"):
        cs.list_labels(bad)
    for call in (lambda: cs.label(sid, bad, h), lambda: cs.get_by_label(sid, bad), lambda: cs.remove_label(sid, bad),
                 lambda: cs.store_at_label(sid, bad, b"x"), lambda: cs.replace_at_label(sid, bad, h)):
        with pytest.raises(StoreError, match=f"label .*{why}"):
            call()


def test_names_at_the_length_limit_are_fine(cs):
    name = "s" * 256
    cs.ensure_store(name)
    h = cs.store_at_label(name, "l" * 256, b"x")
    assert cs.get_by_label(name, "l" * 256) == h


@pytest.mark.parametrize("bad", ["text", 5, None, [1, 2]])
def test_non_bytes_data_is_refused(cs, sid, bad):
    for call in (lambda: cs.put(sid, bad), lambda: cs.store_at_label(sid, "l", bad),
                 lambda: cs.replace_content_at_label(sid, "l", bad), lambda: cs.put_blob(bad)):
        with pytest.raises(StoreError, match=f"content must be bytes, not {type(bad).__name__}"):
            call()
    assert cs.list_all_content(sid) == [] and cs.list_labels(sid) == []


def test_closed_store_is_an_error_not_a_reopen(tmp_path):
    cs = ContentStore(tmp_path / "store.db")
    sid = cs.new_store()
    cs.close()
    cs.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        cs.list_labels(sid)


def test_sqlite_failures_become_store_errors(tmp_path):
    with pytest.raises(StoreError, match=r"content store .*missing-dir/store.db: new_store failed: unable to open"):
        ContentStore(tmp_path / "missing-dir" / "store.db").new_store()


def test_a_write_lock_held_past_the_timeout_is_a_store_error(tmp_path, monkeypatch):
    monkeypatch.setattr(contentstore, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "store.db"
    with ContentStore(path) as cs:
        sid = cs.new_store()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
            with pytest.raises(StoreError, match=f"put into store '{sid}' failed: database is locked"):
                cs.put(sid, b"waits")
            assert cs.list_all_content(sid) == []  # readers are not blocked by a writer (WAL)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert cs.get(sid, cs.put(sid, b"waits")) == b"waits"  # the connection is usable afterwards


# -- persistence and several processes ---------------------------------------------------------

def test_content_and_labels_persist_across_close_and_reopen(tmp_path):
    path = tmp_path / "store.db"
    with ContentStore(path) as cs:
        sid = cs.new_store()
        h = cs.store_at_label(sid, "l", b"durable")
        cs.ensure_store("shared")
        cs.put("shared", b"also")
        hb = cs.put_blob(b"node-level")
    with ContentStore(path) as cs:
        assert cs.get(sid, h) == b"durable"
        assert cs.get_by_label(sid, "l") == h
        assert cs.list_all_content("shared") == [sha(b"also")]
        assert cs.calculate_total_size(sid) == 7
        assert cs.blob(hb) == b"node-level"


def test_home_names_the_store_file(tmp_path):
    assert Home.at(tmp_path).store_db == tmp_path.resolve() / "store.db"


def test_two_objects_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "store.db"
    with ContentStore(path) as one, ContentStore(path) as two:
        one.ensure_store("s")
        h = one.put("s", b"from one")
        assert two.get("s", h) == b"from one"
        two.store_at_label("s", "l", b"from two")
        assert one.get_by_label("s", "l") == sha(b"from two")
        one.remove_label("s", "l")
        assert two.list_labels("s") == []
        assert two.calculate_total_size("s") == len(b"from one") + len(b"from two")


def _put_then_die(path: str, store_id: str, conn) -> None:
    cs = ContentStore(path)
    h = cs.store_at_label(store_id, "l", b"acknowledged")
    conn.send(h)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no atexit


def test_a_returned_put_survives_the_process_being_killed(tmp_path):
    path = tmp_path / "store.db"
    with ContentStore(path) as cs:
        sid = cs.new_store()
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_put_then_die, args=(str(path), sid, send))
    p.start()
    h = recv.recv()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    with ContentStore(path) as cs:
        assert cs.get(sid, h) == b"acknowledged"
        assert cs.get_by_label(sid, "l") == h


def _use_inherited(cs: ContentStore, sid: str) -> None:
    # the object crossed a fork: it must open its own connection, not use the parent's
    cs.put(sid, b"from the child")
    assert cs.get(sid, sha(b"from the parent")) == b"from the parent"
    cs.close()


def test_an_object_that_crossed_a_fork_opens_its_own_connection(tmp_path):
    with ContentStore(tmp_path / "store.db") as cs:
        sid = cs.new_store()
        cs.put(sid, b"from the parent")  # the parent's connection is open and used
        p = multiprocessing.get_context("fork").Process(target=_use_inherited, args=(cs, sid))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert cs.get(sid, sha(b"from the child")) == b"from the child"  # parent's connection still fine
        cs.put(sid, b"after the fork")
        assert len(cs.list_all_content(sid)) == 3


WORKERS, ITEMS = 4, 200


def _hammer(path: str, store_id: str, worker: int, barrier, errors) -> None:
    try:
        barrier.wait(60)
        with ContentStore(path) as cs:  # all open a file nobody created yet
            cs.ensure_store(store_id)
            for i in range(ITEMS):
                h = cs.put(store_id, f"worker {worker} item {i}".encode())
                assert cs.get(store_id, h) == f"worker {worker} item {i}".encode()
                if i % 10 == 0:  # the same bytes from every worker: dedup under contention
                    cs.store_at_label(store_id, "shared", f"shared {i}".encode())
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        errors.put(f"worker {worker}: {type(e).__name__}: {e}")
        raise


def test_several_processes_write_one_store_concurrently(tmp_path):
    path = tmp_path / "store.db"
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(path), "busy", w, barrier, errors)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == [] and [p.exitcode for p in procs] == [0] * WORKERS
    expected = {f"worker {w} item {i}".encode() for w in range(WORKERS) for i in range(ITEMS)}
    expected |= {f"shared {i}".encode() for i in range(0, ITEMS, 10)}
    with ContentStore(path) as cs:
        assert cs.list_all_content("busy") == sorted(sha(v) for v in expected)
        assert cs.calculate_total_size("busy") == sum(len(v) for v in expected)
        assert sorted(cs.refs_at_label("busy", "shared")) == sorted(sha(f"shared {i}".encode())
                                                                      for i in range(0, ITEMS, 10))
    assert count_blobs(path) == len(expected)


# -- property ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_cs():
    with tempfile.TemporaryDirectory() as d, ContentStore(Path(d) / "store.db") as store:
        yield store


@settings(max_examples=60, deadline=None, database=None)
@given(values=st.lists(st.binary(max_size=300), max_size=12))
def test_property_put_get_round_trips_and_size_counts_distinct_values(shared_cs, values):
    sid = shared_cs.new_store()
    hashes = [shared_cs.put(sid, v) for v in values]
    for v, h in zip(values, hashes):
        assert h == sha(v)
        assert shared_cs.get(sid, h) == v
        assert shared_cs.blob(h) == v
    assert shared_cs.calculate_total_size(sid) == sum(len(v) for v in set(values))
    assert shared_cs.list_all_content(sid) == sorted({sha(v) for v in values})
