"""An actor's log rate: a token bucket over log bytes, with the drops counted per second.

`LogRate(bytes_per_s)` allows a burst of BURST_SECONDS worth of bytes and then
`bytes_per_s` on average. `take(n, now)` charges one line of `n` bytes: it sets
`allowed` (whether this line may be written) and returns, at most once per
second and only when lines were dropped since the last report, the
(lines, bytes) dropped, for one `log.truncated` event. Time is passed in, so
tests need no clock.
"""

from __future__ import annotations

#: Seconds of the rate that may be spent at once.
BURST_SECONDS = 4.0


class LogRate:
    def __init__(self, bytes_per_s: int):
        self.rate = float(bytes_per_s)
        self.capacity = self.rate * BURST_SECONDS
        self.tokens = self.capacity
        self.last: float | None = None
        self.allowed = True
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.reported_at: float | None = None

    def take(self, n: int, now: float) -> tuple[int, int] | None:
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        cost = max(1, n)
        self.allowed = self.tokens >= cost
        if self.allowed:
            self.tokens -= cost
        else:
            self.dropped_lines += 1
            self.dropped_bytes += n
        if self.dropped_lines and (self.reported_at is None or now - self.reported_at >= 1.0):
            report = (self.dropped_lines, self.dropped_bytes)
            self.dropped_lines = self.dropped_bytes = 0
            self.reported_at = now
            return report
        return None
