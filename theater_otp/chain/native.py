"""The chain's two hot loops, in C when the `_native` extension is built, else in Python.

`record` builds one stored record (u32 len, canonical encoding, SHA-256) and
`scan` passes the good records of a chunk; both versions give the same bytes
and stop at the same record (tests/test_chain_native.py runs them side by
side). The C one (theater_otp/chain/_native.c, OpenSSL's SHA-256) is several
times faster; setup.py builds it when it can, and `THEATER_OTP_PURE_PYTHON=1`
forces the Python one.
"""

from __future__ import annotations

import os
import struct
from typing import Callable

from .event import RECORD_LEN, encode_from_parts, fast_sha256

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_LEN = RECORD_LEN.pack

#: py_record's and the C record's signature.
RecordFn = Callable[[bytes, int, int, "bytes | None", bytes, int, bytes], tuple[bytes, bytes]]
#: py_scan's and the C scan's signature.
ScanFn = Callable[[bytes, int, bytes, int, "bytes | None"], tuple[int, int, "bytes | None"]]


def py_record(actor_part: bytes, seq: int, incarnation: int, parent: bytes | None, type_part: bytes,
              timestamp: int, data: bytes) -> tuple[bytes, bytes]:
    """(record, hash) of one event; `actor_part` = MAGIC + u16 len + actor id, `type_part` =
    u16 len + event type (EventHasher's cached prefixes)."""
    if type(seq) is not int or type(incarnation) is not int or type(timestamp) is not int:
        raise TypeError("seq, incarnation and timestamp must be ints (not bool)")  # as the C one
    enc = encode_from_parts(actor_part, seq, incarnation, parent, type_part, timestamp, data)
    h = fast_sha256(enc).digest()
    return _LEN(len(enc)) + enc + h, h


def py_scan(blob: bytes, offset: int, prefix: bytes, expect: int,
            prev: bytes | None) -> tuple[int, int, bytes | None]:
    """Pass the records of `blob` from `offset` while each is whole, starts with `prefix`, has
    seq `expect` (+1 each), parent `prev`, lengths that add up and a matching hash; return
    where it stopped, the seq expected there and the last good hash. `prev` None (a chain's
    first event) stops at once: the careful path in verify.py takes such records."""
    if type(prev) is not bytes or len(prev) != 32:
        return offset, expect, prev
    pl = len(prefix)
    fixed = pl + 45  # prefix, seq, incarnation, has_parent, parent
    end = len(blob)
    o = offset
    sha, u16, u32, u64 = fast_sha256, _U16, _U32, _U64
    while end - o >= 4:
        (n,) = u32(blob, o)
        s = o + 4
        e = s + n
        if e + 32 > end or n < fixed + 2:
            break
        if (not blob.startswith(prefix, s) or u64(blob, s + pl)[0] != expect or blob[s + pl + 12] != 1
                or not blob.startswith(prev, s + pl + 13)):
            break
        (tl,) = u16(blob, s + fixed)
        if n - fixed - 2 - tl < 12:
            break
        d = fixed + 2 + tl + 8
        if u32(blob, s + d)[0] != n - d - 4:
            break
        h = sha(blob[s:e]).digest()
        if not blob.startswith(h, e):
            break
        prev = h
        expect += 1
        o = e + 32
    return o, expect, prev


c_record: RecordFn | None
c_scan: ScanFn | None
try:
    from ._native import record as _c_record
    from ._native import scan as _c_scan
except ImportError:  # not built (no compiler or OpenSSL headers at install time)
    c_record = c_scan = None
else:
    c_record, c_scan = _c_record, _c_scan

record: RecordFn
scan: ScanFn
if c_record is not None and c_scan is not None and os.environ.get("THEATER_OTP_PURE_PYTHON") != "1":
    record, scan, IMPLEMENTATION = c_record, c_scan, "C (OpenSSL SHA-256)"
else:
    record, scan, IMPLEMENTATION = py_record, py_scan, "Python"
