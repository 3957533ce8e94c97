"""Chain verification: an independent verifier written from docs/chain-format.md alone,
the doc's worked example against the code, and every tampering kind caught at the right seq."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import struct
from pathlib import Path

import msgpack
import pytest

from harness import REPO, Tree, cli, write_manifest
from theater_otp.chain import event as event_module
from theater_otp.chain.event import canonical_bytes, make_event
from theater_otp.chain.store import ChainStore, iter_chain
from theater_otp.chain.verify import Problem, _partition, verify_chain, verify_store

DOC = REPO / "docs" / "chain-format.md"


# ---------------------------------------------------------------------------
# (a) the independent verifier: written from docs/chain-format.md only
#     (hashlib, struct, sqlite3; nothing from theater_otp)
# ---------------------------------------------------------------------------

def independent_verify(db: Path) -> list[tuple[str, int]]:
    """(actor_id, first bad seq) for every chain in chain.db that breaks a rule of the doc."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    bad = []
    for (actor,) in conn.execute("SELECT actor_id FROM actors UNION SELECT actor_id FROM events").fetchall():
        aid, prev, n = actor.encode(), None, 0
        for seq, inc, parent, etype, ts, data, h in conn.execute(
                "SELECT seq, incarnation, parent_hash, event_type, timestamp, data, hash FROM events "
                "WHERE actor_id = ? ORDER BY seq", (actor,)):
            ok = seq == n and parent == prev and isinstance(data, bytes)
            if ok:
                et = etype.encode()
                enc = (b"TOTP-EVENT-1" + struct.pack(">H", len(aid)) + aid + struct.pack(">QI", seq, inc)
                       + (b"\x01" + parent if parent is not None else b"\x00") + struct.pack(">H", len(et)) + et
                       + struct.pack(">QI", ts, len(data)) + data)
                ok = hashlib.sha256(enc).digest() == h
            if not ok:
                bad.append((actor, n))
                break
            prev, n = h, n + 1
        else:
            if conn.execute("SELECT head_seq, head_hash FROM actors WHERE actor_id = ?", (actor,)).fetchone() != (n - 1, prev):
                bad.append((actor, n))
    conn.close()
    return bad


TREE = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
"""


def test_independent_verifier_accepts_the_chains_of_a_real_tree(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        for i in range(4):
            proc = cli("request", "counter", "inc", home=tree.home)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == str(i + 1)
        assert cli("send", "counter", "inc", home=tree.home).returncode == 0
        pid = tree.kill("root/counter")  # a restart: a second incarnation and a node-written exit record
        tree.wait_for(lambda: tree.pids().get("root/counter") not in (None, pid), what="the counter restarted")
        assert cli("request", "counter", "get", home=tree.home).returncode == 0
        tree.close()
    db = tree.home / "chain.db"
    conn = sqlite3.connect(db)
    try:
        chains = dict(conn.execute("SELECT actor_id, count(*) FROM events GROUP BY actor_id").fetchall())
        incarnations = {r[0] for r in conn.execute("SELECT DISTINCT incarnation FROM events")}
        assert independent_verify(db) == []
        assert verify_store(conn) == []
        for actor_id in chains:
            assert verify_chain(iter_chain(conn, actor_id)) is None
    finally:
        conn.close()
    assert "supervisor:root" in chains and len(chains) >= 2
    assert max(chains.values()) >= 8  # start, init, 4 requests, a send, exit records, ...
    assert incarnations >= {1, 2}


# ---------------------------------------------------------------------------
# (b) the worked example in the doc is what the code computes
# ---------------------------------------------------------------------------

def _doc_examples() -> list[dict]:
    text = DOC.read_text()
    sections = re.split(r"^### Event (\d+)\n", text, flags=re.M)
    examples = []
    for number, body in zip(sections[1::2], sections[2::2]):
        body = body.split("\n## ")[0]
        values = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", re.search(r"```text\n(.*?)```", body, re.S).group(1), re.M))
        fields = re.findall(r"^\| ([\w()]+) \| (\d+) \| `([0-9a-f]+)` \|$", body, re.M)
        all_hex = re.sub(r"\s", "", re.search(r"```hex\n(.*?)```", body, re.S).group(1))
        examples.append({
            "number": int(number), "values": values, "fields": fields,
            "length": int(re.search(r"All (\d+) bytes", body).group(1)),
            "bytes": bytes.fromhex(all_hex),
            "sha256": bytes.fromhex(re.search(r"SHA-256: `([0-9a-f]{64})`", body).group(1)),
        })
    return examples


def test_the_docs_worked_example_matches_the_code():
    examples = _doc_examples()
    assert [e["number"] for e in examples] == [0, 1]
    events = []
    for ex in examples:
        v = ex["values"]
        parent = None if v["parent_hash"] == "none" else bytes.fromhex(v["parent_hash"])
        args = (json_str(v["actor_id"]), int(v["seq"]), int(v["incarnation"]), parent,
                json_str(v["event_type"]), int(v["timestamp"]), bytes.fromhex(v["data"]))
        encoded = canonical_bytes(*args)
        assert encoded == ex["bytes"], f"event {ex['number']}: the doc's bytes differ from canonical_bytes"
        assert len(encoded) == ex["length"]
        assert b"".join(bytes.fromhex(h) for _, _, h in ex["fields"]) == encoded
        assert all(int(n) == len(bytes.fromhex(h)) for _, n, h in ex["fields"])
        assert hashlib.sha256(ex["bytes"]).digest() == ex["sha256"]
        ev = make_event(*args)
        assert ev.hash == ex["sha256"]
        events.append(ev)
    assert events[1].parent_hash == events[0].hash
    assert verify_chain(events) is None
    assert msgpack.unpackb(events[0].data) == {"incarnation": 1, "restart": False, "pid": 4242}


def json_str(token: str) -> str:
    assert token.startswith('"') and token.endswith('"'), token
    return token[1:-1]


def test_the_docs_encoding_block_is_the_event_module_docstring():
    doc_block = re.search(r"```\n(    b\"TOTP-EVENT-1\".*?)```", DOC.read_text(), re.S).group(1)
    code_block = event_module.__doc__.split("big-endian:\n\n")[1].split("\n\nhash =")[0] + "\n"
    assert doc_block == code_block


def test_the_independent_verifier_accepts_the_docs_example_stored_as_the_doc_says(tmp_path):
    db = tmp_path / "chain.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE events (actor_id TEXT NOT NULL, seq INTEGER NOT NULL, incarnation INTEGER NOT NULL,
            parent_hash BLOB, event_type TEXT NOT NULL, timestamp INTEGER NOT NULL, data BLOB NOT NULL,
            hash BLOB NOT NULL, PRIMARY KEY (actor_id, seq)) WITHOUT ROWID;
        CREATE TABLE actors (actor_id TEXT PRIMARY KEY, path TEXT, name TEXT,
            incarnation INTEGER NOT NULL DEFAULT 0, head_seq INTEGER NOT NULL DEFAULT -1, head_hash BLOB);
    """)
    for ex in _doc_examples():
        v = ex["values"]
        parent = None if v["parent_hash"] == "none" else bytes.fromhex(v["parent_hash"])
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (json_str(v["actor_id"]), int(v["seq"]), int(v["incarnation"]), parent,
                      json_str(v["event_type"]), int(v["timestamp"]), bytes.fromhex(v["data"]), ex["sha256"]))
        conn.execute("INSERT OR REPLACE INTO actors(actor_id, incarnation, head_seq, head_hash) VALUES (?, 1, ?, ?)",
                     (json_str(v["actor_id"]), int(v["seq"]), ex["sha256"]))
    conn.commit()
    assert independent_verify(db) == []
    assert verify_store(conn) == []
    conn.close()


# ---------------------------------------------------------------------------
# (c) tampering
# ---------------------------------------------------------------------------

ACTOR = "9d0c8f7e-0000-4000-8000-00000000abcd"
OTHER = "supervisor:root"
N = 50


def build_store(tmp_path: Path) -> Path:
    """50 events for ACTOR (two incarnations, a node-written exit among them), 10 for OTHER."""
    db = tmp_path / "chain.db"
    store = ChainStore(db)
    store.register(ACTOR, "root/counter", "counter")
    ts = 1_767_225_600_000_000_000
    items = []
    for i in range(N):
        inc = 1 if i < 30 else 2
        etype = "message.request" if i % 3 else "message.send"
        items.append((ACTOR, inc, etype, ts + i, msgpack.packb({"i": i, "params": [b"x" * (i % 7)]}), False))
        if i == 32:  # the node's record of incarnation 1's exit, arriving after incarnation 2 began
            items[-1] = (ACTOR, 1, "lifecycle.exited", ts + i, msgpack.packb({"exit_code": 1}), True)
    for i in range(10):
        items.append((OTHER, 1, "supervisor.child_started", ts + 100 + i, msgpack.packb({"child": i}), False))
    store.append_batch(items[:25])
    store.append_batch(items[25:])
    store.close()
    return db


def rows(conn, actor=ACTOR):
    return conn.execute("SELECT * FROM events WHERE actor_id=? ORDER BY seq", (actor,)).fetchall()


def edit_data_byte(conn, seq=17):
    (data,) = conn.execute("SELECT data FROM events WHERE actor_id=? AND seq=?", (ACTOR, seq)).fetchone()
    edited = data[:3] + bytes([data[3] ^ 0x01]) + data[4:]
    conn.execute("UPDATE events SET data=? WHERE actor_id=? AND seq=?", (edited, ACTOR, seq))


def drop(conn, seq=17):
    conn.execute("DELETE FROM events WHERE actor_id=? AND seq=?", (ACTOR, seq))


def _shift_up_from(conn, seq):
    """Renumber seq >= `seq` to seq + 1 (two steps: the primary key forbids a transient duplicate)."""
    conn.execute("UPDATE events SET seq = -(seq + 1) WHERE actor_id=? AND seq>=?", (ACTOR, seq))
    conn.execute("UPDATE events SET seq = -seq WHERE actor_id=? AND seq<0", (ACTOR,))
    conn.execute("UPDATE actors SET head_seq = head_seq + 1 WHERE actor_id=?", (ACTOR,))


def insert_forged(conn, seq=17):
    """A forger who knows the format: a well-hashed event linked to seq-1, the rest renumbered."""
    before = rows(conn)[seq - 1]
    forged = make_event(ACTOR, seq, 1, before[7], "message.send", before[5] + 1, msgpack.packb({"forged": True}))
    _shift_up_from(conn, seq)
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (forged.actor_id, forged.seq, forged.incarnation, forged.parent_hash, forged.event_type,
                  forged.timestamp, forged.data, forged.hash))


def insert_naive(conn, seq=17):
    """An inserted row whose hash was not (or could not be) recomputed."""
    r = list(rows(conn)[seq])
    _shift_up_from(conn, seq)
    r[6] = msgpack.packb({"forged": True})
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", r)


def swap(conn, seq=17):
    """Events seq and seq+1 change places (each keeps its content, the seq numbers are exchanged)."""
    conn.execute("UPDATE events SET seq = -1 WHERE actor_id=? AND seq=?", (ACTOR, seq))
    conn.execute("UPDATE events SET seq = ? WHERE actor_id=? AND seq=?", (seq, ACTOR, seq + 1))
    conn.execute("UPDATE events SET seq = ? WHERE actor_id=? AND seq=-1", (seq + 1, ACTOR))


def truncate_data(conn, seq=17):
    conn.execute("UPDATE events SET data = substr(data, 1, length(data) - 3) WHERE actor_id=? AND seq=?", (ACTOR, seq))


def truncate_hash(conn, seq=17):
    conn.execute("UPDATE events SET hash = substr(hash, 1, 20) WHERE actor_id=? AND seq=?", (ACTOR, seq))


def truncate_parent(conn, seq=17):
    conn.execute("UPDATE events SET parent_hash = substr(parent_hash, 1, 31) WHERE actor_id=? AND seq=?", (ACTOR, seq))


def drop_last(conn, seq=None):
    conn.execute("DELETE FROM events WHERE actor_id=? AND seq=?", (ACTOR, N - 1))


def edit_incarnation(conn, seq=17):
    conn.execute("UPDATE events SET incarnation = 7 WHERE actor_id=? AND seq=?", (ACTOR, seq))


# kind -> (tamper, first bad seq, what verify_store says)
KINDS = {
    "edit a byte of data": (edit_data_byte, 17, "hash mismatch"),
    "drop an event": (drop, 17, "missing event"),
    "insert a well-hashed forgery": (insert_forged, 18, "parent mismatch"),
    "insert an unhashed forgery": (insert_naive, 17, "hash mismatch"),
    "swap two events": (swap, 17, "parent mismatch"),
    "truncate the data blob": (truncate_data, 17, "hash mismatch"),
    "truncate the hash blob": (truncate_hash, 17, "truncated hash"),
    "truncate the parent blob": (truncate_parent, 17, "parent mismatch"),
    "drop the last event": (drop_last, N - 1, "missing event"),
    "edit the incarnation": (edit_incarnation, 17, "hash mismatch"),
}


def tampered(tmp_path, tamper, seq=17) -> Path:
    db = build_store(tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    tamper(conn, seq)
    conn.execute("COMMIT")
    conn.close()
    return db


def test_untampered_chains_verify_clean(tmp_path):
    db = build_store(tmp_path)
    conn = sqlite3.connect(db)
    assert verify_store(conn) == []
    assert verify_store(conn, jobs=2) == []
    assert verify_store(conn, ACTOR) == []
    assert verify_chain(iter_chain(conn, ACTOR)) is None
    # the node-written exit of incarnation 1 sits after incarnation 2's events: allowed
    assert [r[2] for r in rows(conn)][29:34] == [1, 2, 2, 1, 2]
    conn.close()
    assert independent_verify(db) == []


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("jobs", [1, 2])
def test_each_tampering_kind_is_reported_at_the_first_bad_seq(tmp_path, kind, jobs):
    tamper, bad_seq, what = KINDS[kind]
    db = tampered(tmp_path, tamper)
    conn = sqlite3.connect(db)
    try:
        problems = verify_store(conn, jobs=jobs)
        assert [(p.actor_id, p.seq, p.what) for p in problems] == [(ACTOR, bad_seq, what)], problems
        assert verify_store(conn, ACTOR, jobs=jobs) == problems
        assert verify_store(conn, OTHER, jobs=jobs) == []
        if kind != "drop the last event":  # only the head record knows where a chain ends
            chain_problem = verify_chain(iter_chain(conn, ACTOR))
            assert chain_problem is not None and chain_problem.seq == bad_seq
    finally:
        conn.close()
    assert independent_verify(db) == [(ACTOR, bad_seq)]


@pytest.mark.parametrize("seq", [0, 1, 29, 30, 31, 48])
@pytest.mark.parametrize("tamper", [edit_data_byte, drop, swap], ids=lambda f: f.__name__)
def test_tampering_anywhere_is_found_in_process_and_across_processes(tmp_path, tamper, seq):
    """jobs=2 cuts ACTOR's 50 events at seq 30: the cut must not hide or move a problem."""
    assert _partition([(ACTOR, N), (OTHER, 10)], 2) == [[(ACTOR, None, 30)], [(ACTOR, 30, None), (OTHER, None, None)]]
    db = tampered(tmp_path, tamper, seq)
    conn = sqlite3.connect(db)
    try:
        one, two = verify_store(conn, jobs=1), verify_store(conn, jobs=2)
    finally:
        conn.close()
    assert one == two
    assert [(p.actor_id, p.seq) for p in one] == [(ACTOR, seq)]
    assert independent_verify(db) == [(ACTOR, seq)]


def test_problem_reads_as_one_sentence(tmp_path):
    db = tampered(tmp_path, edit_data_byte)
    conn = sqlite3.connect(db)
    (p,) = verify_store(conn)
    conn.close()
    assert len(p.expected) == 64 and len(p.found) == 64 and p.expected != p.found
    assert str(p) == f"actor {ACTOR} event 17: hash mismatch: expected {p.expected[:16]}…, found {p.found[:16]}…"
    dropped = Problem("a", 5, "missing event", "seq 5", "seq 6")
    assert str(dropped) == "actor a event 5: missing event: expected seq 5, found seq 6"


def test_verify_chain_checks_links_and_ownership():
    e0 = make_event("a", 0, 1, None, "t", 1, b"x")
    e1 = make_event("a", 1, 1, e0.hash, "t", 2, b"y")
    e2 = make_event("a", 2, 1, e1.hash, "t", 3, b"z")
    assert verify_chain([]) is None
    assert verify_chain([e0, e1, e2]) is None
    assert verify_chain([e1, e2]).what == "missing event"
    p = verify_chain([e0, e2])
    assert (p.seq, p.what) == (1, "missing event")
    p = verify_chain([e0, make_event("a", 1, 1, e2.hash, "t", 2, b"y")])
    assert (p.seq, p.what, p.expected, p.found) == (1, "parent mismatch", e0.hash.hex(), e2.hash.hex())
    p = verify_chain([e0, e1, make_event("b", 2, 1, e1.hash, "t", 3, b"z")])
    assert (p.seq, p.what, p.found) == (2, "event of another actor", "b")
    forged_first = make_event("a", 0, 1, e2.hash, "t", 1, b"x")
    assert verify_chain([forged_first]).what == "parent mismatch"


def test_an_empty_or_unknown_actor_has_nothing_to_report(tmp_path):
    db = tmp_path / "chain.db"
    store = ChainStore(db)
    store.register("idle", "root/idle", "idle")
    store.close()
    conn = sqlite3.connect(db)
    assert verify_store(conn) == []
    assert verify_store(conn, "nobody") == []
    conn.close()
    assert independent_verify(db) == []
