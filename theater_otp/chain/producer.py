"""The producer side of the chain: buffer events until the chain-writer has made them durable.

Each flush sends one `events` batch numbered 1, 2, 3, ... for this producer;
the writer acknowledges a batch after its commit and applies each batch
exactly once, in order. Unacknowledged batches stay here and are sent again
when the writer restarts (or has said nothing for a while), so an event is
never lost to a writer crash; when too many wait, the owner pauses its actor
(`full`) instead of dropping anything.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import zmq

from ..protocol import NOBLOCK, Envelope, encode

#: Events that may wait for acknowledgement before the producer's actor is paused.
MAX_UNACKED_EVENTS = 10_000
#: Resend unacknowledged batches if the writer has acknowledged nothing for this long.
RESEND_AFTER_S = 2.0

#: One event as a batch carries it: [actor_id, incarnation, event_type, timestamp_ns, data] (writer.py).
WireEvent = list[str | int | bytes]


@dataclass
class _Batch:
    seq: int
    frame: bytes
    events: int


class ChainProducer:
    """Owns the event buffer only; the caller owns `sock` (a DEALER connected to the writer).

    Invariant: `unacked` holds the batches sent but not acknowledged, oldest first, and
    `unacked_events` is the number of events in them.
    """

    def __init__(self, sock: zmq.Socket[bytes], producer_id: str, max_unacked: int = MAX_UNACKED_EVENTS):
        self.sock = sock
        self.producer_id = producer_id
        self.max_unacked = max_unacked
        self.pending: list[WireEvent] = []
        self.unacked: deque[_Batch] = deque()
        self.unacked_events = 0
        self.batch_seq = 0
        self.last_progress = time.monotonic()

    def add(self, item: WireEvent) -> None:
        self.pending.append(item)

    def flush(self) -> None:
        """Send what was added since the last flush as one batch (kept until acknowledged)."""
        if not self.pending:
            return
        self.batch_seq += 1
        batch = _Batch(self.batch_seq, encode(Envelope("events", self.producer_id, "chain", self.batch_seq,
                                                      self.pending)), len(self.pending))
        self.pending = []
        if not self.unacked:
            self.last_progress = time.monotonic()
        self.unacked.append(batch)
        self.unacked_events += batch.events
        self._send(batch)

    def _send(self, batch: _Batch) -> None:
        try:
            self.sock.send(batch.frame, NOBLOCK)
        except zmq.Again:
            pass  # the writer is away and the socket's queue is full: resent later

    def on_ack(self, corr: int) -> None:
        while self.unacked and self.unacked[0].seq <= corr:
            self.unacked_events -= self.unacked.popleft().events
        self.last_progress = time.monotonic()

    def resend(self) -> None:
        """Send every unacknowledged batch again, oldest first (the writer drops duplicates)."""
        for batch in self.unacked:
            self._send(batch)
        self.last_progress = time.monotonic()

    def durable_through(self, batch_seq: int) -> bool:
        """True once every batch up to `batch_seq` has been sent and acknowledged (a batch not
        flushed yet is not durable)."""
        return batch_seq <= self.batch_seq and (not self.unacked or self.unacked[0].seq > batch_seq)

    @property
    def full(self) -> bool:
        """Too many events wait (sent and unacknowledged, or not sent yet)."""
        return self.unacked_events + len(self.pending) >= self.max_unacked

    def resend_deadline(self) -> float | None:
        """When to resend if nothing is acknowledged (None when nothing waits)."""
        return self.last_progress + RESEND_AFTER_S if self.unacked else None
