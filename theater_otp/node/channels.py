"""Channels between actors: the node's table of open channels and who is on each end.

A channel is opened by one actor (`open-channel(target, initial-msg)`); the
target's `handle-channel-open` accepts or refuses it. Once open, either end may
send on it (`send-on-channel`) or close it (`close-channel`); messages go to
the other end's `handle-channel-message`, a close to its `handle-channel-close`.
A channel belongs to the two incarnations that opened it: when either ends,
the node closes it and the other end is told.

This module only keeps the table; the node routes the envelopes.
Invariant: `by_worker[h]` holds exactly the ids of channels with `h` on an end.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

W = TypeVar("W")


@dataclass(frozen=True)
class Channel(Generic[W]):
    id: str
    opener: W
    acceptor: W

    def peer_of(self, end: W) -> W | None:
        if end is self.opener:
            return self.acceptor
        if end is self.acceptor:
            return self.opener
        return None


class ChannelTable(Generic[W]):
    def __init__(self) -> None:
        self.channels: dict[str, Channel[W]] = {}
        self.by_worker: dict[W, set[str]] = {}

    @staticmethod
    def new_id() -> str:
        return f"ch-{uuid.uuid4()}"

    def add(self, channel_id: str, opener: W, acceptor: W) -> Channel[W]:
        channel = Channel(channel_id, opener, acceptor)
        self.channels[channel_id] = channel
        for end in (opener, acceptor):
            self.by_worker.setdefault(end, set()).add(channel_id)
        return channel

    def route(self, channel_id: object, sender: W) -> tuple[W | None, str | None]:
        """(the other end, None), or (None, why `sender` may not use `channel_id`)."""
        channel = self.channels.get(channel_id) if isinstance(channel_id, str) else None
        if channel is None:
            return None, f"no open channel {channel_id!r}"
        peer = channel.peer_of(sender)
        if peer is None:
            return None, f"channel {channel_id!r} is not this actor's"
        return peer, None

    def remove(self, channel_id: str) -> Channel[W] | None:
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            for end in (channel.opener, channel.acceptor):
                ids = self.by_worker.get(end)
                if ids is not None:
                    ids.discard(channel_id)
                    if not ids:
                        del self.by_worker[end]
        return channel

    def close_all(self, end: W) -> list[tuple[str, W]]:
        """Remove every channel `end` is on; (channel id, the other end) for each."""
        closed = []
        for channel_id in sorted(self.by_worker.get(end, ())):
            channel = self.remove(channel_id)
            if channel is not None:
                peer = channel.peer_of(end)
                if peer is not None and peer is not end:
                    closed.append((channel_id, peer))
        return closed
