"""The C hot loops (theater_otp/chain/_native.c) against the pure-Python ones, side by side:
same record bytes, same errors, and scans that stop at the same record on good and damaged chunks."""

from __future__ import annotations

import os
import random
import struct

import pytest

from theater_otp.chain import native
from theater_otp.chain.event import MAGIC, EventHasher, canonical_bytes, event_hash

pytestmark = pytest.mark.unit



def test_the_c_extension_is_built_and_chosen():
    assert native.c_record is not None, "theater_otp.chain._native was not built (gcc and OpenSSL headers?)"
    assert native.record is native.c_record and native.scan is native.c_scan


def _fields(rng: random.Random) -> tuple:
    actor = "".join(rng.choice("abcé-0123") for _ in range(rng.randrange(0, 40)))
    etype = rng.choice(["init", "message.send", "wasi:random.get-random-bytes", "ü" * rng.randrange(5)])
    parent = None if rng.random() < 0.2 else os.urandom(32)
    data = os.urandom(rng.choice([0, 1, 31, 200, 5000]))
    return actor, rng.randrange(2**64), rng.randrange(2**32), parent, etype, rng.randrange(2**64), data


def test_record_is_the_same_bytes_in_c_and_python():
    rng = random.Random(7)
    hasher = EventHasher()
    for _ in range(500):
        actor, seq, inc, parent, etype, ts, data = _fields(rng)
        args = (hasher.actor_part(actor), seq, inc, parent, hasher.type_part(etype), ts, data)
        c, py = native.c_record(*args), native.py_record(*args)
        assert c == py
        enc = canonical_bytes(actor, seq, inc, parent, etype, ts, data)
        assert c == (struct.pack(">I", len(enc)) + enc + event_hash(actor, seq, inc, parent, etype, ts, data),
                     event_hash(actor, seq, inc, parent, etype, ts, data))


@pytest.mark.parametrize("bad", [
    dict(seq=-1), dict(seq=2**64), dict(inc=-1), dict(inc=2**32), dict(ts=-5), dict(ts=2**64),
    dict(parent=b"short"), dict(parent=b"x" * 33), dict(inc=True), dict(ts=1.0), dict(seq="1"),
])
def test_record_refuses_what_the_layout_cannot_hold_in_c_and_python(bad):
    args = dict(actor=MAGIC + b"\x00\x01a", seq=1, inc=1, parent=None, etype=b"\x00\x01t", ts=1, data=b"")
    args.update(bad)
    values = (args["actor"], args["seq"], args["inc"], args["parent"], args["etype"], args["ts"], args["data"])
    for fn in (native.c_record, native.py_record):
        with pytest.raises((ValueError, TypeError, struct.error)):
            fn(*values)


def _chain_blob(actor: str, n: int, rng: random.Random) -> tuple[bytes, bytes]:
    """(blob of records 0..n-1, prefix) of one well-formed chain."""
    hasher = EventHasher()
    parts, parent = [], None
    for seq in range(n):
        rec, parent = native.py_record(hasher.actor_part(actor), seq, 1 + seq // 10, parent,
                                       hasher.type_part(rng.choice(["a", "message.request"])), seq * 1000,
                                       os.urandom(rng.randrange(0, 120)))
        parts.append(rec)
    return b"".join(parts), hasher.actor_part(actor)


def test_scan_passes_a_good_chain_to_its_end_in_c_and_python():
    rng = random.Random(3)
    blob, prefix = _chain_blob("actor-1", 60, rng)
    first_len = struct.unpack_from(">I", blob, 0)[0] + 36
    first_hash = blob[first_len - 32:first_len]
    for scan in (native.c_scan, native.py_scan):
        assert scan(blob, 0, prefix, 0, None) == (0, 0, None)            # event 0: the careful path's
        o, expect, prev = scan(blob, first_len, prefix, 1, first_hash)
        assert (o, expect, prev) == (len(blob), 60, blob[-32:])
        assert scan(blob, first_len, prefix, 1, b"odd") == (first_len, 1, b"odd")


def test_scan_stops_at_the_same_record_on_damaged_chunks_in_c_and_python():
    """Random damage (a flipped byte, a cut, bytes inserted or dropped) anywhere in a chunk:
    both scans stop at the same offset, never past the damaged record."""
    rng = random.Random(11)
    blob, prefix = _chain_blob("a-much-longer-actor-id-0123456789", 40, rng)
    first_len = struct.unpack_from(">I", blob, 0)[0] + 36
    start = (first_len, 1, blob[first_len - 32:first_len])
    for trial in range(400):
        damaged = bytearray(blob)
        at = rng.randrange(first_len, len(blob))
        kind = trial % 4
        if kind == 0:
            damaged[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del damaged[at:]
        elif kind == 2:
            damaged[at:at] = os.urandom(rng.randrange(1, 40))
        else:
            del damaged[at:at + rng.randrange(1, 40)]
        damaged = bytes(damaged)
        c = native.c_scan(damaged, *start[:1], prefix, *start[1:])
        py = native.py_scan(damaged, *start[:1], prefix, *start[1:])
        assert c == py, (trial, kind, at)
        assert c[0] <= at  # the record holding the damage is never passed


def test_the_store_writes_the_same_chunks_with_either_record(tmp_path, monkeypatch):
    import sqlite3

    from theater_otp.chain.store import ChainStore
    rng = random.Random(5)
    items = [(f"actor-{rng.randrange(3)}", 1, "message.send", 1000 + i, os.urandom(rng.randrange(50)), False)
             for i in range(300)]
    rows = []
    for impl in (native.c_record, native.py_record):
        monkeypatch.setattr(native, "record", impl)
        store = ChainStore(tmp_path / f"{impl.__name__}.db")
        for k in range(0, len(items), 70):
            store.append_items(items[k:k + 70])
        store.close()
        conn = sqlite3.connect(tmp_path / f"{impl.__name__}.db")
        rows.append(conn.execute("SELECT actor_id, first_seq, last_seq, records FROM chunks ORDER BY rowid").fetchall())
        conn.close()
    assert rows[0] == rows[1] and len(rows[0]) >= 12
