"""Sends admitted but not released: a worker's message waits here until its events are stored.

With durable effects a worker's `send` is a two-step exchange. The node admits
the message at once (the target exists, the message fits its limits and its
mailbox has room: the sender's call gets that answer) and keeps it here,
counted against the target's mailbox; the worker sends `release` (the corr of
its last send whose events the chain-writer acknowledged) and only then do the
messages up to it go to their targets, in the order they were sent. If the
sender dies first, what it had not released is dropped: those messages are the
effects of calls its chain does not hold (docs/durable-effects.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..protocol import Envelope


class Reservable(Protocol):
    """What a send is held for: a local worker, or an actor on another node (node/cluster.py)."""

    path: str
    actor_id: str
    reserved: int
    reserved_bytes: int


@dataclass(frozen=True)
class HeldSend:
    """One admitted message: `corr` is the sender's, `target` the worker it was admitted for (its
    mailbox counts it as reserved until it is released or dropped)."""

    corr: int
    target: Reservable
    env: Envelope
    size: int


class Outbox:
    """Held sends per sender identity, oldest first (a sender's corrs only grow)."""

    def __init__(self) -> None:
        self._held: dict[bytes, deque[HeldSend]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._held.values())

    def hold(self, sender: bytes, held: HeldSend) -> None:
        """Keep `held` until `sender` releases it; its target's mailbox counts it meanwhile."""
        self._held.setdefault(sender, deque()).append(held)
        held.target.reserved += 1
        held.target.reserved_bytes += held.size

    def release(self, sender: bytes, through: int) -> list[HeldSend]:
        """The sends of `sender` up to corr `through`, in order, no longer reserved."""
        queue = self._held.get(sender)
        out: list[HeldSend] = []
        while queue and queue[0].corr <= through:
            out.append(self._unreserve(queue.popleft()))
        if queue is not None and not queue:
            del self._held[sender]
        return out

    def drop(self, sender: bytes) -> list[HeldSend]:
        """Forget every send `sender` had not released (it exited): the dropped ones."""
        return [self._unreserve(h) for h in self._held.pop(sender, ())]

    @staticmethod
    def _unreserve(held: HeldSend) -> HeldSend:
        held.target.reserved -= 1
        held.target.reserved_bytes -= held.size
        return held


__all__ = ["HeldSend", "Outbox"]
