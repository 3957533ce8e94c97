"""Chain events: the exact bytes the hash covers, and the store's chain invariants.

The canonical layout is the one theater_otp/chain/event.py's docstring documents
(docs/chain-format.md); the expected bytes here are built by hand with `struct`,
independently of the module, so a change to the layout is caught. The store rules
are the ones theater_otp/chain/store.py states: gap-free seq 0..n-1 per actor,
each parent the previous hash, late untrusted events from older incarnations
rejected, heads persisted.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from pathlib import Path

import msgpack
import pytest

from theater_otp.chain.event import MAGIC, canonical_bytes, event_hash, make_event
from theater_otp.chain.store import ChainStore, connect, iter_chain, read_events

pytestmark = pytest.mark.unit

ACTOR = "actor-ß-☃"            # non-ASCII: lengths are UTF-8 byte counts
EVENT_TYPE = "message.request"
PARENT = bytes(range(32))
SEQ = 2**40 + 3
INCARNATION = 70_000
TIMESTAMP = 1_700_000_000_123_456_789
DATA = msgpack.packb({"msg": b"\x00\xffhi", "n": 1}, use_bin_type=True)


def by_hand(actor_id: str, seq: int, incarnation: int, parent: bytes | None,
            event_type: str, timestamp: int, data: bytes) -> bytes:
    """The documented layout, field by field, all integers big-endian."""
    aid = actor_id.encode("utf-8")
    et = event_type.encode("utf-8")
    out = b"TOTP-EVENT-1"
    out += struct.pack(">H", len(aid)) + aid
    out += struct.pack(">Q", seq)
    out += struct.pack(">I", incarnation)
    out += (struct.pack(">B", 1) + parent) if parent is not None else struct.pack(">B", 0)
    out += struct.pack(">H", len(et)) + et
    out += struct.pack(">Q", timestamp)
    out += struct.pack(">I", len(data)) + data
    return out


# ---- canonical bytes -----------------------------------------------------------------------------

def test_canonical_bytes_layout_with_a_parent_matches_the_documented_format():
    """Magic, u16+actor, u64 seq, u32 incarnation, 0x01+32-byte parent, u16+type, u64 ts, u32+data."""
    expected = by_hand(ACTOR, SEQ, INCARNATION, PARENT, EVENT_TYPE, TIMESTAMP, DATA)
    got = canonical_bytes(ACTOR, SEQ, INCARNATION, PARENT, EVENT_TYPE, TIMESTAMP, DATA)
    assert got == expected
    assert MAGIC == b"TOTP-EVENT-1" and len(MAGIC) == 12
    aid_len = len(ACTOR.encode())
    assert aid_len != len(ACTOR)  # the length prefix counts bytes, not characters
    assert got[12:14] == struct.pack(">H", aid_len)
    parent_at = 14 + aid_len + 8 + 4
    assert got[parent_at] == 1 and got[parent_at + 1:parent_at + 33] == PARENT
    assert len(got) == 12 + 2 + aid_len + 8 + 4 + 1 + 32 + 2 + len(EVENT_TYPE) + 8 + 4 + len(DATA)
    digest = hashlib.sha256(expected).digest()
    assert event_hash(ACTOR, SEQ, INCARNATION, PARENT, EVENT_TYPE, TIMESTAMP, DATA) == digest
    ev = make_event(ACTOR, SEQ, INCARNATION, PARENT, EVENT_TYPE, TIMESTAMP, DATA)
    assert ev.hash == digest and len(ev.hash) == 32
    assert (ev.actor_id, ev.seq, ev.incarnation, ev.parent_hash, ev.event_type, ev.timestamp, ev.data) == \
        (ACTOR, SEQ, INCARNATION, PARENT, EVENT_TYPE, TIMESTAMP, DATA)


def test_canonical_bytes_layout_without_a_parent_has_a_single_zero_flag_byte():
    """Event 0: the has_parent byte is 0x00 and no parent bytes follow."""
    expected = by_hand("a", 0, 1, None, "init", 5, b"")
    assert expected == (b"TOTP-EVENT-1" + b"\x00\x01a" + b"\x00" * 8 + b"\x00\x00\x00\x01" + b"\x00"
                        + b"\x00\x04init" + b"\x00" * 7 + b"\x05" + b"\x00\x00\x00\x00")
    assert canonical_bytes("a", 0, 1, None, "init", 5, b"") == expected
    ev = make_event("a", 0, 1, None, "init", 5, b"")
    assert ev.parent_hash is None
    assert ev.hash == hashlib.sha256(expected).digest()
    assert ev.hash.hex() == hashlib.sha256(expected).hexdigest()


def test_canonical_bytes_refuses_a_parent_hash_that_is_not_32_bytes():
    """A parent of any other length cannot be encoded (the layout has no length for it)."""
    for bad in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(ValueError):
            canonical_bytes("a", 1, 1, bad, "t", 0, b"")


BASE = dict(actor_id="actor", seq=4, incarnation=2, parent_hash=b"\x11" * 32,
            event_type="message.send", timestamp=1000, data=b"payload")


@pytest.mark.parametrize("field,value", [
    ("actor_id", "actor2"), ("actor_id", "Actor"), ("actor_id", ""),
    ("seq", 5), ("seq", 2**63),
    ("incarnation", 3), ("incarnation", 0),
    ("parent_hash", None), ("parent_hash", b"\x11" * 31 + b"\x10"),
    ("event_type", "message.sent"), ("event_type", ""),
    ("timestamp", 1001), ("timestamp", 0),
    ("data", b"payloaD"), ("data", b""), ("data", b"payload\x00"),
])
def test_changing_any_field_changes_the_hash(field, value):
    """Every field is covered by the hash: one changed field, a different hash."""
    base = event_hash(**BASE)
    changed = event_hash(**{**BASE, field: value})
    assert changed != base


def test_moving_bytes_between_length_prefixed_fields_changes_the_hash():
    """Length prefixes keep field boundaries: ("ab", "c") and ("a", "bc") hash differently."""
    a = event_hash(**{**BASE, "actor_id": "ab", "event_type": "c"})
    b = event_hash(**{**BASE, "actor_id": "a", "event_type": "bc"})
    assert a != b
    c = event_hash(**{**BASE, "event_type": "t1", "data": b"x"})
    d = event_hash(**{**BASE, "event_type": "t", "data": b"1x"})
    assert c != d


# ---- the store ---------------------------------------------------------------------------------

@contextlib.contextmanager
def opened(path: Path):
    store = ChainStore(path)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def reader(path: Path):
    conn = connect(path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def assert_chain_valid(events: list, actor_id: str) -> None:
    """seq 0..n-1 without gaps, each parent the previous hash, each hash recomputable."""
    assert [e.seq for e in events] == list(range(len(events)))
    parent = None
    for e in events:
        assert e.actor_id == actor_id
        assert e.parent_hash == parent
        assert e.hash == event_hash(e.actor_id, e.seq, e.incarnation, e.parent_hash, e.event_type,
                                    e.timestamp, e.data)
        parent = e.hash


def test_store_appends_gap_free_seq_with_parent_links(tmp_path):
    """Per actor, stored events get seq 0..n-1 and each parent is the previous event's hash."""
    db = tmp_path / "chain.db"
    with opened(db) as store:
        stored, rejected = store.append_batch(
            [("a", 1, f"t.{i}", 100 + i, bytes([i]), False) for i in range(3)]
            + [("b", 1, "t.b", 7, b"b0", False)])
        assert rejected == 0
        assert [(e.actor_id, e.seq) for e in stored] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
        for i in range(3, 10):  # interleaved single-item batches
            store.append_batch([("a", 1, f"t.{i}", 100 + i, bytes([i]), False)])
            store.append_batch([("b", 1, "t.b", 7 + i, b"b%d" % i, False)])
        assert store.heads["a"][0] == 9 and store.heads["b"][0] == 7
    with reader(db) as conn:
        a = list(iter_chain(conn, "a"))
        b = list(iter_chain(conn, "b"))
        assert_chain_valid(a, "a")
        assert_chain_valid(b, "b")
        assert len(a) == 10 and len(b) == 8
        assert [e.data for e in a] == [bytes([i]) for i in range(10)]
        assert [e.timestamp for e in a] == [100 + i for i in range(10)]
        heads = {r[0]: (r[1], bytes(r[2])) for r in conn.execute("SELECT actor_id, head_seq, head_hash FROM actors")}
        assert heads == {"a": (9, a[-1].hash), "b": (7, b[-1].hash)}


def test_store_rejects_untrusted_event_from_older_incarnation_and_counts_it(tmp_path):
    """A late worker event from a dead incarnation is not appended and is counted as rejected."""
    with opened(tmp_path / "chain.db") as store:
        store.append_batch([("a", 1, "init", 1, b"", False), ("a", 2, "init", 2, b"", False)])
        stored, rejected = store.append_batch([
            ("a", 1, "late", 3, b"from incarnation 1", False),
            ("a", 2, "ok", 4, b"current", False),
            ("a", 1, "late", 5, b"again", False),
        ])
        assert rejected == 2
        assert [(e.seq, e.event_type, e.incarnation) for e in stored] == [(2, "ok", 2)]
        assert store.heads["a"][0] == 2 and store.heads["a"][2] == 2
    with reader(tmp_path / "chain.db") as conn:
        events = list(iter_chain(conn, "a"))
        assert_chain_valid(events, "a")
        assert [e.event_type for e in events] == ["init", "init", "ok"]


def test_store_accepts_trusted_event_from_older_incarnation_without_moving_incarnation(tmp_path):
    """A node (trusted) event about an older incarnation is appended at the head; the incarnation stays."""
    db = tmp_path / "chain.db"
    with opened(db) as store:
        store.append_batch([("a", 1, "init", 1, b"", False), ("a", 2, "init", 2, b"", False)])
        stored, rejected = store.append_batch([("a", 1, "exit", 3, b"incarnation 1 exited", True)])
        assert rejected == 0
        assert [(e.seq, e.incarnation, e.event_type) for e in stored] == [(2, 1, "exit")]
        assert store.heads["a"][2] == 2
        # the current incarnation did not move back: untrusted incarnation-1 events still bounce
        stored, rejected = store.append_batch([("a", 1, "late", 4, b"", False), ("a", 2, "next", 5, b"", False)])
        assert rejected == 1 and [e.seq for e in stored] == [3]
    with reader(db) as conn:
        events = list(iter_chain(conn, "a"))
        assert_chain_valid(events, "a")
        assert [(e.incarnation, e.event_type) for e in events] == [(1, "init"), (2, "init"), (1, "exit"), (2, "next")]
        assert conn.execute("SELECT incarnation FROM actors WHERE actor_id='a'").fetchone() == (2,)


def test_store_heads_survive_reopening(tmp_path):
    """After close and reopen, appends continue the same chains and the incarnation is remembered."""
    db = tmp_path / "chain.db"
    with opened(db) as store:
        store.register("reg", "root/reg", "reg")
        store.append_batch([("a", 1, "t", i, b"%d" % i, False) for i in range(4)] + [("a", 3, "t", 9, b"", False)])
        before = dict(store.heads)
    with opened(db) as store:
        assert store.heads["a"] == before["a"]
        assert store.heads["a"][0] == 4 and store.heads["a"][2] == 3
        assert store.heads["reg"] == (-1, None, 0)
        stored, rejected = store.append_batch([("a", 2, "late", 10, b"", False), ("a", 3, "more", 11, b"", False)])
        assert rejected == 1
        assert stored[0].seq == 5 and stored[0].parent_hash == before["a"][1]
        stored, _ = store.append_batch([("reg", 1, "init", 1, b"", False)])
        assert stored[0].seq == 0 and stored[0].parent_hash is None
    with reader(db) as conn:
        assert_chain_valid(list(iter_chain(conn, "a")), "a")
        assert conn.execute("SELECT path, name FROM actors WHERE actor_id='reg'").fetchone() == ("root/reg", "reg")


def test_read_events_filters_by_type_prefix_at_dot_boundaries(tmp_path):
    """event_type "message" matches "message" and "message.*", not "messages" or "messagefoo"."""
    db = tmp_path / "chain.db"
    types = ["init", "message.send", "message", "messages.send", "messagefoo", "message.request",
             "host.message.send", "message.send.ok"]
    with opened(db) as store:
        store.append_batch([("a", 1, t, i, b"", False) for i, t in enumerate(types)])
        store.append_batch([("other", 1, "message.send", 0, b"", False)])
    with reader(db) as conn:
        got = read_events(conn, "a", event_type="message")
        assert [(e.seq, e.event_type) for e in got] == [
            (1, "message.send"), (2, "message"), (5, "message.request"), (7, "message.send.ok")]
        assert [e.event_type for e in read_events(conn, "a", event_type="message.send")] == \
            ["message.send", "message.send.ok"]
        assert [e.event_type for e in read_events(conn, "a", event_type="host")] == ["host.message.send"]
        assert read_events(conn, "a", event_type="mess") == []
        assert len(read_events(conn, "a")) == len(types)
        assert read_events(conn, "nobody") == []


def test_read_events_limit_with_last_returns_the_newest_in_seq_order(tmp_path):
    """limit=N, last=True gives the N newest events, oldest first; without last, the N oldest."""
    db = tmp_path / "chain.db"
    with opened(db) as store:
        store.append_batch([("a", 1, "message.send" if i % 2 else "tick", i, b"%d" % i, False) for i in range(10)])
    with reader(db) as conn:
        assert [e.seq for e in read_events(conn, "a", limit=3, last=True)] == [7, 8, 9]
        assert [e.seq for e in read_events(conn, "a", limit=3)] == [0, 1, 2]
        assert [e.seq for e in read_events(conn, "a", event_type="message", limit=2, last=True)] == [7, 9]
        assert [e.seq for e in read_events(conn, "a", limit=50, last=True)] == list(range(10))
        assert [e.seq for e in read_events(conn, "a", since_seq=8)] == [8, 9]
        assert [e.seq for e in read_events(conn, "a", last=True)] == list(range(10))
