"""The chain-writer and the store under bad input: an event the canonical layout cannot hold
(negative timestamp or incarnation, incarnation over u32, ids over 65535 bytes; msgpack
itself cannot carry an integer over u64) is dropped and logged, the
well-formed events of the same frame are stored and acknowledged, and the writer keeps running."""

from __future__ import annotations

import sqlite3
import struct

import pytest

from harness import StandaloneWriter
from theater_otp.chain.store import ChainStore, iter_chain
from theater_otp.chain.verify import verify_chain, verify_store
from theater_otp.protocol import Envelope, decode, encode

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"

    [[supervisor.children]]
    id = "echo"
    manifest = "echo.toml"
"""

BAD_ITEMS = [
    ["w", 1, "t", -1, b"negative timestamp"],
    ["w", -1, "t", 5, b"negative incarnation"],
    ["w", 2**32, "t", 5, b"incarnation over u32"],
    ["w" * 70_000, 1, "t", 5, b"actor id over 65535 bytes"],
    ["w", 1, "☃" * 30_000, 5, b"event type over 65535 bytes (90000 in UTF-8)"],
    ["w", True, "t", 5, b"a bool is not an incarnation"],
    ["w", 1, "t", 5, "data must be bytes"],
]


def test_writer_drops_events_the_layout_cannot_hold_and_keeps_the_rest(tmp_path):
    # as the node: its events are not bound to one actor, so each bad item reaches the layout check
    with StandaloneWriter(tmp_path) as writer:
        s = writer.connect(writer.secrets.node)
        items = [["w", 1, "t", 1, b"before"], *BAD_ITEMS, ["w", 1, "t", 2, b"after"]]
        s.send(encode(Envelope("events", "test", "chain", 1, items)))
        assert s.poll(20_000), "no ack: the chain-writer died or hung"
        ack = decode(s.recv())
        assert (ack.kind, ack.corr, ack.body["received"]) == ("ack", 1, 2)
        assert ack.body["proof"] == writer.secrets.writer_proof
        # the writer is still there and still commits
        s.send(encode(Envelope("events", "test", "chain", 2, [["w", 1, "t", 3, b"later"]])))
        assert s.poll(10_000)
        assert decode(s.recv()).body["received"] == 1
        for n, body in ((3, {}), (4, "")):  # not a list, even an empty one
            s.send(encode(Envelope("events", "test", "chain", n, body)))
            assert s.poll(10_000)
            assert decode(s.recv()).body["received"] == 0
        home = writer.home
    log = home.log_file.read_text()
    assert log.count("dropped a malformed event from 'test'") == len(BAD_ITEMS)
    assert log.count("dropped events from 'test': body is not a list") == 2
    assert "Traceback" not in log
    conn = sqlite3.connect(home.root / "chain.db")
    try:
        assert [e.data for e in iter_chain(conn, "w")] == [b"before", b"after", b"later"]
        assert verify_store(conn) == []
    finally:
        conn.close()


@pytest.mark.parametrize("bad", [("a", 1, "t", -1, b"x", False), ("a", 2**32, "t", 1, b"x", True),
                                 ("a", 1, "t" * 70_000, 1, b"x", False)])
def test_append_batch_raises_on_an_unencodable_item_and_changes_nothing(tmp_path, bad):
    db = tmp_path / "chain.db"
    store = ChainStore(db)
    try:
        store.append_batch([("a", 1, "t", 1, b"0", False)])
        heads = dict(store.heads)
        with pytest.raises((struct.error, ValueError)):
            store.append_batch([("a", 1, "t", 2, b"1", False), ("b", 1, "t", 2, b"b", False), bad])
        assert store.heads == heads
        stored, rejected = store.append_batch([("a", 1, "t", 3, b"2", False)])
        assert [e.seq for e in stored] == [1] and rejected == 0
        assert store.append_items([("a", 1, "t", 4, b"3", False), ("a", 0, "t", 5, b"late", False)]) == (1, 1)
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        assert [e.data for e in iter_chain(conn, "a")] == [b"0", b"2", b"3"]
        assert verify_chain(iter_chain(conn, "a")) is None
        assert verify_store(conn) == []
    finally:
        conn.close()


def test_append_items_and_append_batch_write_identical_chains(tmp_path):
    items = [(f"actor-{i % 3}", 1 + i // 40, f"type.{i % 4}", 1_000 + i, bytes([i % 256]) * (i % 9), i % 17 == 0)
             for i in range(120)]
    dbs = []
    for name, method in (("batch", "append_batch"), ("items", "append_items")):
        db = tmp_path / f"{name}.db"
        store = ChainStore(db)
        for k in range(0, len(items), 25):
            getattr(store, method)(items[k:k + 25])
        store.close()
        dbs.append(db)
    rows = []
    for db in dbs:
        conn = sqlite3.connect(db)
        rows.append(conn.execute("SELECT actor_id, first_seq, last_seq, records FROM chunks ORDER BY actor_id, first_seq").fetchall())
        assert verify_store(conn) == []
        conn.close()
    assert rows[0] == rows[1] and sum(r[2] - r[1] + 1 for r in rows[0]) == 120


def test_a_store_with_one_row_per_event_is_converted_to_chunks_verbatim(tmp_path):
    """A chain.db from before chunks: its events move into chunks as stored, so a good chain still
    verifies, a tampered one is still caught, and the writer appends after the old head."""
    import sqlite3

    from theater_otp.chain.event import make_event
    db = tmp_path / "chain.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE events (actor_id TEXT NOT NULL, seq INTEGER NOT NULL, incarnation INTEGER NOT NULL,
            parent_hash BLOB, event_type TEXT NOT NULL, timestamp INTEGER NOT NULL, data BLOB NOT NULL,
            hash BLOB NOT NULL, PRIMARY KEY (actor_id, seq)) WITHOUT ROWID;
        CREATE TABLE actors (actor_id TEXT PRIMARY KEY, path TEXT, name TEXT,
            incarnation INTEGER NOT NULL DEFAULT 0, head_seq INTEGER NOT NULL DEFAULT -1, head_hash BLOB);
    """)
    for actor, tamper in (("good", False), ("bad", True)):
        prev = None
        for seq in range(3):
            e = make_event(actor, seq, 1, prev, "t", 10 + seq, b"d%d" % seq)
            data = b"X" if tamper and seq == 1 else e.data
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (actor, seq, 1, prev, "t", e.timestamp, data, e.hash))
            prev = e.hash
        conn.execute("INSERT INTO actors VALUES (?, NULL, NULL, 1, 2, ?)", (actor, prev))
    conn.commit()
    conn.close()
    store = ChainStore(db)
    store.append_batch([("good", 1, "t", 99, b"after", False)])
    store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='events'").fetchone() is None
        assert [e.data for e in iter_chain(conn, "good")] == [b"d0", b"d1", b"d2", b"after"]
        assert [(p.actor_id, p.seq, p.what) for p in verify_store(conn)] == [("bad", 1, "hash mismatch")]
    finally:
        conn.close()


def test_cut_torn_tails_cuts_inside_a_chunk_at_the_first_bad_event_and_keeps_the_bytes(tmp_path):
    """A damaged event in the newest chunk: that event and the rest go to cut_records, the chunk
    keeps its good prefix, the head moves back, and the chain verifies and grows from there."""
    import sqlite3

    db = tmp_path / "chain.db"
    store = ChainStore(db)
    for k in range(3):  # three chunks of 10
        store.append_batch([("a", 1, "t", 100 * k + i, b"event %d" % (10 * k + i), False) for i in range(10)])
    store.close()
    conn = sqlite3.connect(db)
    rowid, blob = conn.execute("SELECT rowid, records FROM chunks WHERE first_seq = 20").fetchone()
    at = blob.index(b"event 24")
    conn.execute("UPDATE chunks SET records=? WHERE rowid=?", (blob[:at] + b"E" + blob[at + 1:], rowid))
    conn.commit()
    conn.close()
    store = ChainStore(db)
    try:
        (cut,) = store.cut_torn_tails()
        assert cut[:3] == ("a", 24, 6) and cut[3].startswith("hash mismatch")
        assert store.cut_torn_tails() == []
        store.append_batch([("a", 1, "t", 999, b"after the cut", False)])
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        assert [e.data for e in iter_chain(conn, "a")][22:] == [b"event 22", b"event 23", b"after the cut"]
        assert verify_store(conn) == []
        (kept,) = conn.execute("SELECT from_seq, events, records FROM cut_records").fetchall()
        assert kept[:2] == (24, 6) and b"Event 24" in kept[2] and b"event 29" in kept[2]
    finally:
        conn.close()


def test_a_first_batch_that_overtakes_its_producers_registration_is_kept_and_stored(tmp_path):
    """A worker's first events and the node's `producer` registration travel on two connections,
    which keep no order between them. A batch that arrives first is kept (bounded) and stored once
    the registration comes; before, it was dropped and came back only with the 2 s resend."""
    with StandaloneWriter(tmp_path) as writer:
        ident = b"actor-1/1/token"
        worker = writer.connect(ident)
        node = writer.connect(writer.secrets.node)
        worker.send(encode(Envelope("events", "actor-1/1", "chain", 1, [["actor-1", 1, "actor.start", 5, b"early"]])))
        assert not worker.poll(300), "acknowledged before the node registered the producer"
        node.send(encode(Envelope("producer", "node", "chain", 0,
                                  {"identity": ident, "actor_id": "actor-1", "incarnation": 1})))
        assert worker.poll(10_000), "the early batch was not stored once its producer was registered"
        ack = decode(worker.recv())
        assert (ack.kind, ack.corr, ack.body["received"]) == ("ack", 1, 1)
        home = writer.home
    store = ChainStore(home.chain_db)
    try:
        assert [e.data for e in iter_chain(store.conn, "actor-1")] == [b"early"]
    finally:
        store.close()
    assert "not a producer the node registered" not in home.log_file.read_text()


def test_a_producers_last_batch_that_comes_after_the_nodes_unregistration_is_still_stored(tmp_path):
    """A worker's last frames and the node's `unproducer` (sent when it reaps the worker's exit)
    travel on two connections: the frames can come second. They are stored within the grace
    (RETIRE_GRACE_S); after it, the identity is refused like any unknown one."""
    import time

    from theater_otp.chain.writer import RETIRE_GRACE_S

    with StandaloneWriter(tmp_path) as writer:
        ident = b"actor-2/1/token"
        node = writer.connect(writer.secrets.node)  # one socket as the node: a second would be refused
        node.send(encode(Envelope("producer", "node", "chain", 0,
                                  {"identity": ident, "actor_id": "actor-2", "incarnation": 1})))
        worker = writer.connect(ident)
        node.send(encode(Envelope("unproducer", "node", "chain", 0,
                                  {"identity": ident, "actor_id": "actor-2", "incarnation": 1})))
        node.send(encode(Envelope("sync", "node", "chain", 7)))
        assert node.poll(10_000) and decode(node.recv()).kind == "synced"   # the writer has read it
        worker.send(encode(Envelope("events", "actor-2/1", "chain", 1, [["actor-2", 1, "actor.init", 5, b"last"]])))
        assert worker.poll(10_000), "the worker's last batch was not taken after its unregistration"
        assert decode(worker.recv()).body["received"] == 1
        time.sleep(RETIRE_GRACE_S + 0.1)  # let the grace pass (a wait, not a timing assertion)
        node.send(encode(Envelope("sync", "node", "chain", 8)))           # a turn that expires it
        assert node.poll(10_000) and decode(node.recv()).kind == "synced"
        worker.send(encode(Envelope("events", "actor-2/1", "chain", 2, [["actor-2", 1, "late", 6, b"too late"]])))
        assert not worker.poll(500), "an unregistered producer was answered after its grace"
        home = writer.home
    store = ChainStore(home.chain_db)
    try:
        assert [e.data for e in iter_chain(store.conn, "actor-2")] == [b"last"]
    finally:
        store.close()
