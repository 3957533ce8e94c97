"""Properties of the chain verifier (theater_otp/chain/verify.py) over stores ChainStore wrote.

A store of a few chains (random event types, data, incarnations, node-written "trusted" exits and
random batch sizes, so random chunking) verifies clean. Then one tampering of one chain:

* any byte of any stored record flipped (length prefix, encoding or hash),
* any event dropped (its record cut out of its chunk; the chunk index left or fixed up),
* any two events swapped (as stored, or with their seq fields exchanged too),

is reported by `verify_store` as a Problem for that chain at exactly the seq of the first event
touched, and for no other chain. Both scanners (C and Python) are run.
"""

from __future__ import annotations

import struct
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theater_otp.chain import native
from theater_otp.chain.event import HASH_SIZE, MAGIC
from theater_otp.chain.store import ChainStore
from theater_otp.chain.verify import verify_store

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SCANNERS = [pytest.param(native.py_scan, id="python")]
if native.c_scan is not None:
    SCANNERS.append(pytest.param(native.c_scan, id="c"))

ACTORS = ["7f1c0b9e-0000-4000-8000-000000000001", "supervisor:root/team", "é-actor"]
TS = 1_767_225_600_000_000_000

# one event: (actor index, incarnation step, event type, data, trusted)
events = st.tuples(st.integers(0, len(ACTORS) - 1), st.integers(0, 1),
                   st.sampled_from(["actor.start", "message.send", "message.request", "host.x.y", "lifecycle.exited",
                                    ""]),
                   st.binary(max_size=40), st.booleans())
histories = st.tuples(st.lists(events, min_size=6, max_size=60), st.lists(st.integers(1, 12), min_size=1, max_size=20))


@pytest.fixture(params=SCANNERS)
def scanner(request, monkeypatch):
    monkeypatch.setattr(native, "scan", request.param)
    return request.param


def build(history) -> tuple[ChainStore, dict[str, int]]:
    """A store (in memory: no fsync per example) holding `history`, written through ChainStore in
    batches of the drawn sizes; and the events per actor."""
    items_spec, sizes = history
    store = ChainStore(Path(":memory:"))
    incarnation = {a: 1 for a in ACTORS}
    items = []
    for i, (a, step, etype, data, trusted) in enumerate(items_spec):
        actor = ACTORS[a]
        incarnation[actor] += step
        inc = incarnation[actor] - 1 if trusted and incarnation[actor] > 1 else incarnation[actor]
        items.append((actor, inc, etype, TS + i, data, trusted))
    k = 0
    for n in sizes * (len(items) // len(sizes) + 1):
        if k >= len(items):
            break
        _, rejected = store.append_batch(items[k:k + n])
        assert rejected == 0  # incarnations only grow here; a trusted exit may name the one before
        k += n
    counts: dict[str, int] = {}
    for actor, *_ in items:
        counts[actor] = counts.get(actor, 0) + 1
    return store, counts


def load(conn, actor) -> list[list]:
    """[rowid, first_seq, last_seq, [record, ...]] per chunk of `actor`, in first_seq order."""
    out = []
    for rowid, first, last, blob in conn.execute(
            "SELECT rowid, first_seq, last_seq, records FROM chunks WHERE actor_id=? ORDER BY first_seq", (actor,)):
        recs, o = [], 0
        while o < len(blob):
            (n,) = struct.unpack_from(">I", blob, o)
            recs.append(bytes(blob[o:o + 4 + n + HASH_SIZE]))
            o += 4 + n + HASH_SIZE
        out.append([rowid, first, last, recs])
    return out


def save(conn, chunks) -> None:
    """Write chunks back; an emptied chunk's row goes. Highest first_seq first (it is unique)."""
    for rowid, first, last, recs in sorted(chunks, key=lambda c: -c[1]):
        if recs:
            conn.execute("UPDATE chunks SET first_seq=?, last_seq=?, records=? WHERE rowid=?",
                         (first, last, b"".join(recs), rowid))
        else:
            conn.execute("DELETE FROM chunks WHERE rowid=?", (rowid,))


def flat(chunks) -> list[tuple[int, int]]:
    """(chunk index, record index) of every event, in seq order."""
    return [(c, r) for c, chunk in enumerate(chunks) for r in range(len(chunk[3]))]


def seq_offset(actor: str) -> int:
    """Where seq starts in a record: u32 length, magic, u16 actor length, actor id."""
    return 4 + len(MAGIC) + 2 + len(actor.encode())


def with_seq(rec: bytes, actor: str, seq: int) -> bytes:
    at = seq_offset(actor)
    return rec[:at] + struct.pack(">Q", seq) + rec[at + 8:]


def problems_after(store: ChainStore, tamper) -> list:
    conn = store.conn
    try:
        conn.execute("BEGIN")
        tamper(conn)
        conn.execute("COMMIT")
        return verify_store(conn)
    finally:
        store.close()


def only(problems, actor: str, seq: int, seed_info: str):
    assert [(p.actor_id, p.seq) for p in problems] == [(actor, seq)], \
        f"{seed_info}: expected one problem at {actor} seq {seq}, got {[str(p) for p in problems]}"
    return problems[0]


@SETTINGS
@given(histories)
def test_an_untampered_store_verifies(scanner, history):
    store, counts = build(history)
    with closing(store):
        assert verify_store(store.conn) == []
        heads = dict(store.conn.execute("SELECT actor_id, head_seq FROM actors"))
    assert heads == {a: n - 1 for a, n in counts.items()}


@SETTINGS
@given(histories, st.data())
def test_any_flipped_byte_of_any_record_is_found_at_its_seq(scanner, history, data):
    store, counts = build(history)
    actor = data.draw(st.sampled_from(sorted(counts)))
    seq = data.draw(st.integers(0, counts[actor] - 1))
    mask = data.draw(st.integers(1, 255))
    chunks = load(store.conn, actor)
    c, r = flat(chunks)[seq]
    rec = chunks[c][3][r]
    at = data.draw(st.integers(0, len(rec) - 1))

    def flip(conn):
        chunks[c][3][r] = rec[:at] + bytes([rec[at] ^ mask]) + rec[at + 1:]
        save(conn, chunks)
    only(problems_after(store, flip), actor, seq, f"byte {at} of record {seq} ^ {mask:#x}")


@SETTINGS
@given(histories, st.data())
def test_any_dropped_event_is_found_at_its_seq(scanner, history, data):
    store, counts = build(history)
    actor = data.draw(st.sampled_from(sorted(counts)))
    seq = data.draw(st.integers(0, counts[actor] - 1))
    fix_index = data.draw(st.booleans())  # a careful tamperer also fixes the chunk's last_seq
    chunks = load(store.conn, actor)
    c, r = flat(chunks)[seq]

    def drop(conn):
        del chunks[c][3][r]
        if fix_index:
            chunks[c][2] -= 1
        save(conn, chunks)
    problem = only(problems_after(store, drop), actor, seq, f"dropped seq {seq} (index fixed: {fix_index})")
    if seq == counts[actor] - 1 and (fix_index or not chunks[c][3]):
        assert problem.what == "missing event", str(problem)  # a cut tail: the actors row's head says so


@SETTINGS
@given(histories, st.data())
def test_any_two_swapped_events_are_found_at_the_first(scanner, history, data):
    store, counts = build(history)
    actor = data.draw(st.sampled_from(sorted(a for a, n in counts.items() if n >= 2) or [None]))
    if actor is None:
        return  # the drawn history gave no chain two events (rare: min 6 events over 3 chains)
    i = data.draw(st.integers(0, counts[actor] - 2))
    j = data.draw(st.integers(i + 1, counts[actor] - 1))
    renumber = data.draw(st.booleans())  # also exchange the seq fields, so each sits at "its" seq
    chunks = load(store.conn, actor)
    (ci, ri), (cj, rj) = flat(chunks)[i], flat(chunks)[j]
    a, b = chunks[ci][3][ri], chunks[cj][3][rj]
    if renumber:
        a, b = with_seq(a, actor, j), with_seq(b, actor, i)

    def swap(conn):
        chunks[ci][3][ri], chunks[cj][3][rj] = b, a
        save(conn, chunks)
    only(problems_after(store, swap), actor, i, f"swapped seq {i} and {j} (renumbered: {renumber})")
