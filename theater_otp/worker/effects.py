"""Durable effects: what an actor does that others can see leaves only after its events are stored.

A reply, an HTTP response, a WebSocket answer, a message sent: each is the
effect of events the actor recorded before it. If the effect left first and
the worker died before the chain-writer stored those events, the world would
have seen something the actor's chain does not explain (and replay could not
reproduce). So every outbound frame that is an effect is tagged with the
producer's batch that will hold the events recorded so far, and waits here
until the writer has acknowledged that batch. Frames leave in the order they
were emitted, whatever socket they go to.

The events of an export call are recorded when it returns, so a reply made
at the end of a call waits for that call's event. An effect made during a
call (a host call to send, request, spawn, ...) waits for every event
recorded before it; the call's own event comes after (docs/durable-effects.md).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol


class _Sendable(Protocol):
    def send(self, data: bytes, flags: int = 0) -> object: ...


class HeldEffects:
    """Frames waiting for a batch acknowledgement, oldest first.

    Frames leave from the front only, so they leave in the order they were held: one behind a
    frame that still waits also waits, even if its own batch is durable already.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[int, _Sendable, bytes]] = deque()
        #: frames that ever had to wait (for inspect and the bench)
        self.held_total = 0

    def __len__(self) -> int:
        return len(self._queue)

    def hold(self, batch_seq: int, sock: _Sendable, frame: bytes) -> None:
        """Send `frame` on `sock` once batch `batch_seq` (and all before it) is acknowledged."""
        self._queue.append((batch_seq, sock, frame))
        self.held_total += 1

    def release(self, durable_through: Callable[[int], bool]) -> int:
        """Send every frame whose batch is durable now, in order; how many left."""
        queue = self._queue
        sent = 0
        while queue and durable_through(queue[0][0]):
            _, sock, frame = queue.popleft()
            sock.send(frame)
            sent += 1
        return sent


__all__ = ["HeldEffects"]
