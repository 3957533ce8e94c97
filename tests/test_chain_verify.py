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
from theater_otp.chain import native
from theater_otp.chain.event import MalformedRecord, canonical_bytes, make_event
from theater_otp.chain.store import ChainStore, iter_chain
from theater_otp.chain.verify import Problem, _partition, verify_chain, verify_store

pytestmark = pytest.mark.integration

DOC = REPO / "docs" / "chain-format.md"


# ---------------------------------------------------------------------------
# (a) the independent verifier: written from docs/chain-format.md only
#     (hashlib, struct, sqlite3; nothing from theater_otp)
# ---------------------------------------------------------------------------

def independent_verify(db: Path) -> list[tuple[str, int]]:
    """(actor_id, first bad seq) for every chain in chain.db that breaks a rule of the doc."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    bad = []
    for (actor,) in conn.execute("SELECT actor_id FROM actors UNION SELECT actor_id FROM chunks").fetchall():
        blob = b"".join(r[0] for r in conn.execute(
            "SELECT records FROM chunks WHERE actor_id = ? ORDER BY first_seq", (actor,)))
        prefix = b"TOTP-EVENT-1" + struct.pack(">H", len(actor.encode())) + actor.encode()
        o, n, prev = 0, 0, None
        while o < len(blob):
            size = struct.unpack(">I", blob[o:o + 4])[0] if o + 4 <= len(blob) else -1
            enc, h = blob[o + 4:o + 4 + size], blob[o + 4 + size:o + 36 + size]
            k = len(prefix)
            parent = enc[k + 13:k + 45] if enc[k + 12:k + 13] == b"\x01" else None
            if (size < 0 or len(h) != 32 or not enc.startswith(prefix) or enc[k:k + 8] != struct.pack(">Q", n)
                    or parent != prev or hashlib.sha256(enc).digest() != h):
                bad.append((actor, n))
                break
            o, n, prev = o + 36 + size, n + 1, h
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
        chains = dict(conn.execute("SELECT actor_id, sum(last_seq - first_seq + 1) FROM chunks GROUP BY actor_id"))
        incarnations = {e.incarnation for a in chains for e in iter_chain(conn, a)}
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
        CREATE TABLE chunks (actor_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
            records BLOB NOT NULL, UNIQUE (actor_id, first_seq));
        CREATE TABLE actors (actor_id TEXT PRIMARY KEY, path TEXT, name TEXT,
            incarnation INTEGER NOT NULL DEFAULT 0, head_seq INTEGER NOT NULL DEFAULT -1, head_hash BLOB);
    """)
    for ex in _doc_examples():
        v = ex["values"]
        parent = None if v["parent_hash"] == "none" else bytes.fromhex(v["parent_hash"])
        record = struct.pack(">I", len(ex["bytes"])) + ex["bytes"] + ex["sha256"]  # one event per chunk
        conn.execute("INSERT INTO chunks VALUES (?, ?, ?, ?)",
                     (json_str(v["actor_id"]), int(v["seq"]), int(v["seq"]), record))
        assert parent is None or parent == ex["bytes"][14 + len(json_str(v["actor_id"])) + 13:][:32]
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
    """50 events for ACTOR (two incarnations, a node-written exit among them) in chunks of 10,
    then 10 for OTHER."""
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
    for k in range(0, len(items), 10):
        store.append_batch(items[k:k + 10])
    store.close()
    return db


# A tamperer edits the stored records. Chunks are loaded as [rowid, first_seq, last_seq, [record, ...]]
# and written back as they are left; a record is u32 len || encoding || 32-byte hash.
SEQ_AT = 4 + 14 + len(ACTOR)          # seq's offset in a record of ACTOR
PARENT_AT = SEQ_AT + 12               # has_parent's offset


def load(conn, actor=ACTOR) -> list[list]:
    out = []
    for rowid, first, last, blob in conn.execute(
            "SELECT rowid, first_seq, last_seq, records FROM chunks WHERE actor_id=? ORDER BY first_seq", (actor,)):
        recs, o = [], 0
        while o < len(blob):
            n = struct.unpack_from(">I", blob, o)[0]
            recs.append(bytes(blob[o:o + 36 + n]))
            o += 36 + n
        out.append([rowid, first, last, recs])
    return out


def save(conn, chunks: list[list]) -> None:
    for rowid, first, last, recs in sorted(chunks, key=lambda c: -c[1]):  # high first: first_seq is unique
        conn.execute("UPDATE chunks SET first_seq=?, last_seq=?, records=? WHERE rowid=?",
                     (first, last, b"".join(recs), rowid))


def locate(chunks, seq) -> tuple[list, int]:
    for c in chunks:
        if c[1] <= seq <= c[2]:
            return c, seq - c[1]
    raise KeyError(seq)


def with_seq(rec: bytes, seq: int) -> bytes:
    return rec[:SEQ_AT] + struct.pack(">Q", seq) + rec[SEQ_AT + 8:]


def edit_record(conn, seq, edit) -> None:
    chunks = load(conn)
    c, i = locate(chunks, seq)
    c[3][i] = edit(c[3][i])
    save(conn, chunks)


def resized(rec: bytes, enc: bytes) -> bytes:
    """`rec` with its encoding replaced (the length prefix follows; the hash is kept)."""
    return struct.pack(">I", len(enc)) + enc + rec[-32:]


def edit_data_byte(conn, seq=17):
    edit_record(conn, seq, lambda r: r[:-36] + bytes([r[-36] ^ 0x01]) + r[-35:])  # the last data byte


def drop(conn, seq=17):
    chunks = load(conn)
    c, i = locate(chunks, seq)
    del c[3][i]
    save(conn, chunks)


def _insert_at(conn, seq, make) -> None:
    """Insert the record `make(records before it)` at `seq`; renumber the rest and the index."""
    chunks = load(conn)
    c, i = locate(chunks, seq)
    flat = [r for ch in chunks for r in ch[3]]
    c[3].insert(i, make(flat[:seq]))
    c[2] += 1
    for later in chunks[chunks.index(c) + 1:]:
        later[1] += 1
        later[2] += 1
    for ch in chunks:
        for j, r in enumerate(ch[3]):
            if ch[1] + j > seq:
                ch[3][j] = with_seq(r, ch[1] + j)
    save(conn, chunks)
    conn.execute("UPDATE actors SET head_seq = head_seq + 1 WHERE actor_id=?", (ACTOR,))


def insert_forged(conn, seq=17):
    """A forger who knows the format: a well-hashed event linked to seq-1, the rest renumbered."""
    def make(before):
        parent = before[-1][-32:]
        forged = make_event(ACTOR, seq, 1, parent, "message.send", 1_767_225_600_000_000_999,
                            msgpack.packb({"forged": True}))
        enc = canonical_bytes(ACTOR, seq, 1, parent, "message.send", forged.timestamp, forged.data)
        return struct.pack(">I", len(enc)) + enc + forged.hash
    _insert_at(conn, seq, make)


def insert_naive(conn, seq=17):
    """A copy of event `seq` with its last data byte changed, inserted before it; its hash was
    not (or could not be) recomputed."""
    def make(before):
        c, i = locate(load(conn), seq)
        rec = c[3][i]
        return rec[:-33] + bytes([rec[-33] ^ 0xFF]) + rec[-32:]
    _insert_at(conn, seq, make)


def swap(conn, seq=17):
    """Events seq and seq+1 change places (each keeps its content, the seq numbers are exchanged)."""
    chunks = load(conn)
    (a, i), (b, j) = locate(chunks, seq), locate(chunks, seq + 1)
    a[3][i], b[3][j] = with_seq(b[3][j], seq), with_seq(a[3][i], seq + 1)
    save(conn, chunks)


def truncate_mid_record(conn, seq=17):
    """A torn write: the chunk holding `seq` ends in the middle of that record."""
    chunks = load(conn)
    c, i = locate(chunks, seq)
    c[3][i:] = [c[3][i][:len(c[3][i]) // 2]]
    save(conn, chunks)


def truncate_data(conn, seq=17):
    """Three bytes cut from the end of the data, with every length fixed up to match."""
    def edit(r):
        enc, dlen = r[4:-32], _data_len(r)
        at = len(enc) - dlen - 4  # the u32 data length
        return resized(r, enc[:at] + struct.pack(">I", dlen - 3) + enc[at + 4:-3])
    edit_record(conn, seq, edit)


def _data_len(rec: bytes) -> int:
    enc = rec[4:-32]
    k = PARENT_AT - 4 + (33 if enc[PARENT_AT - 4] == 1 else 1)
    tlen = struct.unpack_from(">H", enc, k)[0]
    return struct.unpack_from(">I", enc, k + 2 + tlen + 8)[0]


def truncate_hash(conn, seq=17):
    edit_record(conn, seq, lambda r: r[:-12])


def truncate_parent(conn, seq=17):
    """One byte cut out of the parent hash, the record's length fixed up to match."""
    edit_record(conn, seq, lambda r: resized(r, r[4:PARENT_AT + 1 + 31] + r[PARENT_AT + 33:-32]))


def drop_last(conn, seq=None):
    """A careful tamperer: the last event goes and the chunk index follows (the head does not)."""
    chunks = load(conn)
    del chunks[-1][3][-1]
    chunks[-1][2] -= 1
    save(conn, chunks)


def edit_incarnation(conn, seq=17):
    edit_record(conn, seq, lambda r: r[:SEQ_AT + 8] + struct.pack(">I", 7) + r[SEQ_AT + 12:])


# kind -> (tamper, first bad seq, what verify_store says)
KINDS = {
    "edit a byte of data": (edit_data_byte, 17, "hash mismatch"),
    "drop an event": (drop, 17, "missing event"),
    "insert a well-hashed forgery": (insert_forged, 18, "parent mismatch"),
    "insert an unhashed forgery": (insert_naive, 17, "hash mismatch"),
    "swap two events": (swap, 17, "parent mismatch"),
    "truncate mid-record": (truncate_mid_record, 17, "truncated record"),
    "truncate the data": (truncate_data, 17, "hash mismatch"),
    "truncate the hash": (truncate_hash, 17, "hash mismatch"),
    "truncate the parent hash": (truncate_parent, 17, "malformed record"),
    "drop the last event": (drop_last, N - 1, "missing event"),
    "edit the incarnation": (edit_incarnation, 17, "hash mismatch"),
}


UNREADABLE = {"truncate mid-record", "truncate the hash", "truncate the parent hash"}


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
    assert [e.incarnation for e in iter_chain(conn, ACTOR)][29:34] == [1, 2, 2, 1, 2]
    conn.close()
    assert independent_verify(db) == []


@pytest.fixture(params=["C", "Python"])
def scan_impl(request, monkeypatch):
    """Run a test with the C scan (threads for jobs > 1) and with the Python one (processes)."""
    if request.param == "Python":
        monkeypatch.setattr(native, "scan", native.py_scan)
        monkeypatch.setenv("THEATER_OTP_PURE_PYTHON", "1")  # verify's worker processes
    else:
        monkeypatch.setattr(native, "scan", native.c_scan)
    return request.param


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("jobs", [1, 2])
def test_each_tampering_kind_is_reported_at_the_first_bad_seq(tmp_path, kind, jobs, scan_impl):
    tamper, bad_seq, what = KINDS[kind]
    db = tampered(tmp_path, tamper)
    conn = sqlite3.connect(db)
    try:
        problems = verify_store(conn, jobs=jobs)
        assert [(p.actor_id, p.seq, p.what) for p in problems] == [(ACTOR, bad_seq, what)], problems
        assert verify_store(conn, ACTOR, jobs=jobs) == problems
        assert verify_store(conn, OTHER, jobs=jobs) == []
        if kind in UNREADABLE:  # records that cannot be split or parsed: readers refuse them
            with pytest.raises(MalformedRecord):
                list(iter_chain(conn, ACTOR))
        elif kind != "drop the last event":  # only the head record knows where a chain ends
            chain_problem = verify_chain(iter_chain(conn, ACTOR))
            assert chain_problem is not None and chain_problem.seq == bad_seq
    finally:
        conn.close()
    assert independent_verify(db) == [(ACTOR, bad_seq)]


@pytest.mark.parametrize("seq", [0, 1, 29, 30, 31, 48])
@pytest.mark.parametrize("tamper", [edit_data_byte, drop, swap], ids=lambda f: f.__name__)
def test_tampering_anywhere_is_found_in_process_and_across_processes(tmp_path, tamper, seq, scan_impl):
    """jobs=2 cuts ACTOR's 50 events at seq 30: the cut must not hide or move a problem."""
    db = tampered(tmp_path, tamper, seq)
    conn = sqlite3.connect(db)
    try:
        assert _partition(conn, [ACTOR, OTHER], 2) == [[(ACTOR, None, 30)], [(ACTOR, 30, None), (OTHER, None, None)]]
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
