"""Chain events and the exact bytes SHA-256 covers (docs/chain-format.md).

Canonical encoding, all integers big-endian:

    b"TOTP-EVENT-1"                      12-byte magic
    u16 len(actor_id)  actor_id (UTF-8)
    u64 seq                              0 for an actor's first event
    u32 incarnation                      1 for the first start, +1 per restart
    u8  has_parent (0|1) [32 bytes parent hash if 1]
    u16 len(event_type) event_type (UTF-8)
    u64 timestamp                        nanoseconds since the Unix epoch
    u32 len(data)  data                  opaque bytes (msgpack by convention)

hash = SHA-256(encoding). Event 0 has no parent; event n's parent is event n-1's hash.

Stored, each event is one record: u32 len(encoding), encoding, 32-byte hash;
consecutive events of one actor are concatenated into a chunk (store.py).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, TypedDict

import msgpack

MAGIC = b"TOTP-EVENT-1"

#: The fields of WIT `chain-event` (names with hyphens, as the component sees them).
WitChainEvent = TypedDict("WitChainEvent", {"hash": bytes, "parent-hash": "bytes | None", "event-type": str,
                                            "data": bytes, "timestamp": int, "description": "str | None"})


@dataclass(frozen=True, slots=True)
class ChainEvent:
    actor_id: str
    seq: int
    incarnation: int
    parent_hash: bytes | None
    event_type: str
    timestamp: int
    data: bytes
    hash: bytes

    def payload(self) -> object:
        """The decoded data (msgpack), or the raw bytes if it is not msgpack."""
        try:
            return msgpack.unpackb(self.data, raw=False, strict_map_key=False)
        except Exception:
            return self.data

    def wit_fields(self) -> WitChainEvent:
        """The fields of WIT `chain-event` (what runtime.get-chain and get-child-events return)."""
        return {"hash": self.hash, "parent-hash": self.parent_hash, "event-type": self.event_type,
                "data": self.data, "timestamp": self.timestamp, "description": None}

    def to_plain(self) -> dict[str, object]:
        return {
            "actor_id": self.actor_id, "seq": self.seq, "incarnation": self.incarnation,
            "parent_hash": self.parent_hash.hex() if self.parent_hash else None,
            "event_type": self.event_type, "timestamp": self.timestamp,
            "data": _jsonable(self.payload()), "hash": self.hash.hex(),
        }


def canonical_bytes(actor_id: str, seq: int, incarnation: int, parent_hash: bytes | None,
                    event_type: str, timestamp: int, data: bytes) -> bytes:
    aid = actor_id.encode("utf-8")
    et = event_type.encode("utf-8")
    if parent_hash is not None and len(parent_hash) != 32:
        raise ValueError("parent hash must be 32 bytes")
    parts = [
        MAGIC,
        struct.pack(">H", len(aid)), aid,
        struct.pack(">QI", seq, incarnation),
        b"\x01" + parent_hash if parent_hash is not None else b"\x00",
        struct.pack(">H", len(et)), et,
        struct.pack(">QI", timestamp, len(data)), data,
    ]
    return b"".join(parts)


def event_hash(actor_id: str, seq: int, incarnation: int, parent_hash: bytes | None,
               event_type: str, timestamp: int, data: bytes) -> bytes:
    return hashlib.sha256(canonical_bytes(actor_id, seq, incarnation, parent_hash, event_type, timestamp, data)).digest()


class Digest(Protocol):
    """What the hot loops use of a hash object."""

    def digest(self) -> bytes: ...


fast_sha256: Callable[[bytes], Digest]
try:  # CPython's built-in SHA-256: same digest, no OpenSSL context set-up (~10% faster for small inputs)
    # typeshed has no stub for the private _sha256 module (only hashlib's public names)
    from _sha256 import sha256 as _builtin_sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - other interpreters / versions
    fast_sha256 = hashlib.sha256
else:
    fast_sha256 = _builtin_sha256

_U16 = struct.Struct(">H").pack
#: The fixed-width middle and tail of the encoding, as precompiled packers.
SEQ_INC_PARENT = struct.Struct(">QIB32s").pack   # seq, incarnation, has_parent=1, parent hash
SEQ_INC_ROOT = struct.Struct(">QIB").pack        # seq, incarnation, has_parent=0
TS_LEN = struct.Struct(">QI").pack               # timestamp, len(data)


def encode_from_parts(actor_part: bytes, seq: int, incarnation: int, parent_hash: bytes | None,
                      type_part: bytes, timestamp: int, data: bytes) -> bytes:
    """The canonical encoding from its prebuilt variable parts: `actor_part` = MAGIC + u16 len +
    actor id, `type_part` = u16 len + event type (what EventHasher caches)."""
    if parent_hash is None:
        middle = SEQ_INC_ROOT(seq, incarnation, 0)
    elif len(parent_hash) == 32:  # "32s" would silently pad or cut anything else
        middle = SEQ_INC_PARENT(seq, incarnation, 1, parent_hash)
    else:
        raise ValueError("parent hash must be 32 bytes")
    return b"".join((actor_part, middle, type_part, TS_LEN(timestamp, len(data)), data))


class EventHasher:
    """`canonical_bytes` for a stream of events (the chain-writer's hot path).

    The actor-id and event-type parts of the encoding are built once per distinct
    value and cached (`actor_parts`, `type_parts`, which native.record takes); each
    `encode` then costs two struct packs and one join. Raises what `canonical_bytes`
    raises (struct.error / ValueError) for values the layout cannot hold.
    """

    MAX_CACHED = 65536

    def __init__(self) -> None:
        self.actor_parts: dict[str, bytes] = {}   # actor_id -> MAGIC + u16 len + UTF-8
        self.type_parts: dict[str, bytes] = {}    # event_type -> u16 len + UTF-8

    def encode(self, actor_id: str, seq: int, incarnation: int, parent_hash: bytes | None,
               event_type: str, timestamp: int, data: bytes) -> bytes:
        return encode_from_parts(self.actor_parts.get(actor_id) or self.actor_part(actor_id), seq, incarnation,
                                 parent_hash, self.type_parts.get(event_type) or self.type_part(event_type),
                                 timestamp, data)

    def actor_part(self, actor_id: str) -> bytes:
        return self._cache(self.actor_parts, actor_id, MAGIC)

    def type_part(self, event_type: str) -> bytes:
        return self._cache(self.type_parts, event_type, b"")

    @staticmethod
    def _cache(cache: dict[str, bytes], text: str, lead: bytes) -> bytes:
        raw = text.encode("utf-8")
        part = lead + _U16(len(raw)) + raw
        if len(cache) >= EventHasher.MAX_CACHED:
            cache.clear()
        cache[text] = part
        return part


def make_event(actor_id: str, seq: int, incarnation: int, parent_hash: bytes | None,
               event_type: str, timestamp: int, data: bytes) -> ChainEvent:
    h = event_hash(actor_id, seq, incarnation, parent_hash, event_type, timestamp, data)
    return ChainEvent(actor_id, seq, incarnation, parent_hash, event_type, timestamp, data, h)


# ---------------------------------------------------------------------------
# stored records: u32 len(encoding) || encoding || hash
# ---------------------------------------------------------------------------

RECORD_LEN = struct.Struct(">I")
HASH_SIZE = 32


class MalformedRecord(ValueError):
    """Bytes that are not a record or not a canonical encoding; the message says what is wrong."""


def record_bytes(encoding: bytes, h: bytes) -> bytes:
    return RECORD_LEN.pack(len(encoding)) + encoding + h


def split_records(blob: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset, encoding, hash) for each record of a chunk; MalformedRecord at a truncated one."""
    end = len(blob)
    o = 0
    unpack = RECORD_LEN.unpack_from
    while o < end:
        if o + 4 > end:
            raise MalformedRecord(f"truncated record: {end - o} byte(s) where a 4-byte length belongs")
        (n,) = unpack(blob, o)
        if o + 4 + n + HASH_SIZE > end:
            raise MalformedRecord(f"truncated record: it says {n} + 32 bytes, {end - o - 4} remain")
        yield o, blob[o + 4:o + 4 + n], blob[o + 4 + n:o + 4 + n + HASH_SIZE]
        o += 4 + n + HASH_SIZE


def parse_encoding(enc: bytes) -> tuple[str, int, int, bytes | None, str, int, bytes]:
    """The fields of a canonical encoding (the inverse of `canonical_bytes`), strictly:
    every length must fit and nothing may follow `data`."""
    try:
        if enc[:12] != MAGIC:
            raise MalformedRecord("no TOTP-EVENT-1 magic")
        (alen,) = struct.unpack_from(">H", enc, 12)
        o = 14 + alen
        actor_id = enc[14:o].decode("utf-8")
        seq, incarnation, has_parent = struct.unpack_from(">QIB", enc, o)
        o += 13
        if has_parent == 1:
            parent: bytes | None = enc[o:o + 32]
            o += 32
        elif has_parent == 0:
            parent = None
        else:
            raise MalformedRecord(f"has_parent byte is {has_parent}, not 0 or 1")
        (tlen,) = struct.unpack_from(">H", enc, o)
        event_type = enc[o + 2:o + 2 + tlen].decode("utf-8")
        o += 2 + tlen
        timestamp, dlen = struct.unpack_from(">QI", enc, o)
        o += 12
    except struct.error:
        raise MalformedRecord("encoding ends inside a field") from None
    except UnicodeDecodeError:
        raise MalformedRecord("actor id or event type is not UTF-8") from None
    if o + dlen != len(enc):
        raise MalformedRecord(f"data length {dlen} does not fill the encoding ({len(enc) - o} bytes left)")
    if parent is not None and len(parent) != 32:
        raise MalformedRecord("encoding ends inside the parent hash")
    return actor_id, seq, incarnation, parent, event_type, timestamp, bytes(enc[o:])


def decode_record(enc: bytes, h: bytes) -> ChainEvent:
    return ChainEvent(*parse_encoding(enc), bytes(h))


def _jsonable(value: object) -> object:
    """Bytes become UTF-8 text where they decode, else {"hex": ...}; containers recurse."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
