"""The one frame format on every socket: a versioned msgpack envelope.

Wire form: a msgpack array `[version, kind, sender, to, corr, body]` where
`kind`, `sender`, `to` are strings, `corr` a non-negative int (0 = no reply
expected) and `body` any msgpack value. The decoder checks size before it
unpacks and shape before it builds the record; anything else is a
`ProtocolError` the caller logs and drops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

VERSION = 1
#: Largest frame any socket accepts (bytes). Actor messages are bounded by it.
MAX_FRAME = 16 * 1024 * 1024


#: Envelope kinds that carry an actor message into a mailbox (what the `mailbox` limit counts).
MAILBOX_KINDS = frozenset({"send", "request", "channel_open", "channel_message"})


def message_size(env: "Envelope") -> int:
    """The bytes of actor message a mailbox envelope carries: its body, or the `msg` of a channel's."""
    body = env.body
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if isinstance(body, dict):
        inner = body.get("msg", body.get("body"))  # a channel's message, an HTTP request's body
        if isinstance(inner, (bytes, bytearray)):
            return len(inner)
    return 0


class ProtocolError(ValueError):
    """A frame that is not a valid envelope; `peer` names who sent it when known."""

    def __init__(self, message: str, peer: str | None = None):
        self.peer = peer
        super().__init__(f"{message} (from {peer})" if peer else message)


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: str
    sender: str = ""
    to: str = ""
    corr: int = 0
    body: Any = None


_packer = msgpack.Packer(use_bin_type=True)


def encode(env: Envelope) -> bytes:
    frame = _packer.pack([VERSION, env.kind, env.sender, env.to, env.corr, env.body])
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"{env.kind} envelope is {len(frame)} bytes, over the {MAX_FRAME}-byte limit")
    return frame


def decode(frame: bytes, peer: str | None = None, max_size: int = MAX_FRAME) -> Envelope:
    if len(frame) > max_size:
        raise ProtocolError(f"oversized frame: {len(frame)} bytes > {max_size}", peer)
    try:
        raw = msgpack.unpackb(
            frame, raw=False, use_list=True, strict_map_key=False,
            max_array_len=1_000_000, max_map_len=1_000_000,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}", peer) from None
    if not isinstance(raw, list) or len(raw) != 6:
        raise ProtocolError("malformed envelope: expected a 6-element array", peer)
    version, kind, sender, to, corr, body = raw
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unsupported envelope version {version!r} (expected {VERSION})", peer)
    if not (isinstance(kind, str) and isinstance(sender, str) and isinstance(to, str)):
        raise ProtocolError("malformed envelope: kind, sender and to must be strings", peer)
    if not isinstance(corr, int) or isinstance(corr, bool) or corr < 0:
        raise ProtocolError("malformed envelope: corr must be a non-negative integer", peer)
    return Envelope(kind, sender, to, corr, body)


# zmq's flags as plain ints for the hot paths (pyzmq's are enum members: an enum operation per use)
NOBLOCK, SNDMORE, _RCVMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE), int(zmq.RCVMORE)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The frames of one message, without blocking (zmq.Again when nothing is queued): plain recv
    with int flags, as recv_multipart's flag handling costs more than small frames."""
    frames = [sock.recv(NOBLOCK)]
    while sock.getsockopt(_RCVMORE):
        frames.append(sock.recv(NOBLOCK))
    return frames


def recv_routed(sock: zmq.Socket[bytes], log: logging.Logger) -> tuple[bytes, Envelope] | None:
    """One message from a ROUTER socket as (peer identity, envelope), without blocking.

    Raises zmq.Again when nothing is queued; returns None for a message that is
    not exactly [identity, envelope] or does not decode (logged and dropped).
    """
    frames = recv_frames(sock)
    if len(frames) != 2:
        log.error("dropped a message with %d frames (expected identity + envelope)", len(frames))
        return None
    ident, frame = frames
    try:
        return ident, decode(frame, peer=ident.decode("utf-8", "replace"))
    except ProtocolError as exc:
        log.error("dropped frame: %s", exc)
        return None
