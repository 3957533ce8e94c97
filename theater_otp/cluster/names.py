"""The global name table's schema (docs/cluster.md, "What is global"): buckets, keys, records, subjects.

Two JetStream KV buckets:

- `theater-nodes` (NODES_BUCKET): key = the node's name, value = a NodeRecord;
- `theater-names` (NAMES_BUCKET): keys `id.<actor id>`, `name.<hex name>`, `path.<hex path>`,
  each valued with the same NameRecord.

NATS keys allow only `[-/_=.a-zA-Z0-9]`, and a `.` separates tokens (no empty token, none at
either end), so this module owns the encoding:

- a name or path is the lowercase hex of its UTF-8 bytes: `name.<hex>`, `path.<hex>`;
- an actor id that is one plain token (`[-/_=a-zA-Z0-9]+`, as the node's UUIDs are) is used as it
  is, `id.<actor id>`; any other id is hex-encoded as `id.hex.<hex>`. The two forms cannot meet:
  the first has two tokens, the second three.

An empty name, path or actor id has no key (ValueError). Every key is a valid NATS KV key.

Records are msgpack maps with string keys. `from_bytes` is total: whatever the bytes (another
node's bug, a foreign writer, garbage), it returns a record or None, never raises. Keys it does
not know are ignored, so a later version may add fields. A record's own constructor checks its
fields (ValueError), so a record that exists is a valid one and `to_bytes` cannot fail.

Node names are used in subjects and JetStream stream names (`THEATER_CHAIN_<node>`): 1-32
characters of `[a-z0-9-_]` (`valid_node_name`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import msgpack

NODES_BUCKET = "theater-nodes"
NAMES_BUCKET = "theater-names"

#: The longest node name (it is part of subjects and stream names).
MAX_NODE_NAME = 32
#: The largest encoded record from_bytes reads; anything longer is not a record.
MAX_RECORD_BYTES = 64 * 1024
#: Integers in records are 0 <= n < 2**63 (what msgpack and every NATS client carry as int64).
_MAX_INT = 2**63

_NODE_NAME = re.compile(r"[a-z0-9_-]{1,32}")
_PLAIN_ID = re.compile(r"[-/_=a-zA-Z0-9]+")
#: What NATS allows in a KV key.
KEY_ALPHABET = frozenset("-/_=.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def valid_node_name(name: object) -> str | None:
    """None if `name` is a valid node name (1-32 characters of [a-z0-9-_]), else why not."""
    if not isinstance(name, str):
        return f"a node name is a string, not {type(name).__name__}"
    if not 1 <= len(name) <= MAX_NODE_NAME:
        return f"a node name has 1 to {MAX_NODE_NAME} characters, not {len(name)}"
    if not _NODE_NAME.fullmatch(name):
        bad = next(c for c in name if not (c.isascii() and (c.islower() or c.isdigit() or c in "-_")))
        return f"a node name uses only a-z, 0-9, '-' and '_' (not {bad!r})"
    return None


def _node(name: str) -> str:
    reason = valid_node_name(name)
    if reason:
        raise ValueError(f"{name!r}: {reason}")
    return name


def subject_in(node: str) -> str:
    """`theater.node.<node>.in`: frames for `node` (sends, requests, replies, remote children)."""
    return f"theater.node.{_node(node)}.in"


def subject_ctl(node: str) -> str:
    """`theater.node.<node>.ctl`: control requests for `node`, one command each."""
    return f"theater.node.{_node(node)}.ctl"


def subject_hb(node: str) -> str:
    """`theater.hb.<node>`: `node`'s heartbeats."""
    return f"theater.hb.{_node(node)}"


def _hex(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"an empty {what} has no key")
    return text.encode("utf-8", "surrogatepass").hex()


def id_key(actor_id: str) -> str:
    """The `theater-names` key of an actor id: `id.<actor id>` for a plain one, else `id.hex.<hex>`."""
    if _PLAIN_ID.fullmatch(actor_id):
        return f"id.{actor_id}"
    return f"id.hex.{_hex(actor_id, 'actor id')}"


def name_key(name: str) -> str:
    """The `theater-names` key of an actor name: `name.<hex of its UTF-8>`."""
    return f"name.{_hex(name, 'name')}"


def path_key(path: str) -> str:
    """The `theater-names` key of an actor path: `path.<hex of its UTF-8>`."""
    return f"path.{_hex(path, 'path')}"


def node_key(node: str) -> str:
    """The `theater-nodes` key of a node: its name (valid node names are valid keys)."""
    return _node(node)


def _check_str(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{field} is a string, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: msgpack could not carry it
        raise ValueError(f"{field} is not valid Unicode text") from None


def _check_int(value: object, field: str, low: int = 0) -> None:
    # bool is an int in Python, never in a record
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} is an integer, not {type(value).__name__}")
    if not low <= value < _MAX_INT:
        raise ValueError(f"{field} is {value}, outside {low} to 2**63-1")


def _unpack_map(data: object, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The fields `names` of the msgpack map in `data`, or None if it is no such map."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_RECORD_BYTES:
        return None
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=False)
    except Exception:  # noqa: BLE001 - any undecodable input is simply not a record
        return None
    if not isinstance(value, dict):
        return None
    try:
        if not all(name in value for name in names):
            return None
    except TypeError:  # an unhashable key in the map
        return None
    return {name: value[name] for name in names}


_R = TypeVar("_R", bound="_Record")


class _Record:
    """to_bytes / from_bytes for the frozen records below: a msgpack map of their fields."""

    def to_bytes(self) -> bytes:
        """The record as a msgpack map of its fields."""
        return msgpack.packb(asdict(self), use_bin_type=True)  # type: ignore[call-overload]

    @classmethod
    def from_bytes(cls: type[_R], data: object) -> _R | None:
        """The record `data` encodes, or None for anything that is not one (never raises)."""
        found = _unpack_map(data, tuple(f.name for f in fields(cls)))  # type: ignore[arg-type]
        if found is None:
            return None
        try:
            return cls(**found)
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class NameRecord(_Record):
    """Where an actor runs: the value of its `id.`, `name.` and `path.` keys in `theater-names`.

    `node` a valid node name, `actor_id`, `path` and `name` non-empty strings (encodable as UTF-8),
    `incarnation` 0 <= n < 2**63. The constructor raises ValueError otherwise."""

    node: str
    actor_id: str
    path: str
    name: str
    incarnation: int

    def __post_init__(self) -> None:
        reason = valid_node_name(self.node)
        if reason:
            raise ValueError(f"node: {reason}")
        _check_str(self.actor_id, "actor_id")
        _check_str(self.path, "path")
        _check_str(self.name, "name")
        _check_int(self.incarnation, "incarnation")

    def keys(self) -> tuple[str, str, str]:
        """The three `theater-names` keys this record is stored under: id, name, path."""
        return id_key(self.actor_id), name_key(self.name), path_key(self.path)



@dataclass(frozen=True)
class NodeRecord(_Record):
    """A live node: the value of its key in `theater-nodes`.

    `name` a valid node name, `pid` 1 <= n < 2**63, `host` a non-empty string, `started_ns` (wall
    clock, ns since the epoch) 0 <= n < 2**63, `heartbeat_ms` (its heartbeat period)
    1 <= n < 2**63. The constructor raises ValueError otherwise."""

    name: str
    pid: int
    host: str
    started_ns: int
    heartbeat_ms: int

    def __post_init__(self) -> None:
        reason = valid_node_name(self.name)
        if reason:
            raise ValueError(f"name: {reason}")
        _check_int(self.pid, "pid", low=1)
        _check_str(self.host, "host")
        _check_int(self.started_ns, "started_ns")
        _check_int(self.heartbeat_ms, "heartbeat_ms", low=1)



