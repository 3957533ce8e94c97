"""Restart intensity, exactly as OTP counts it (spec §1.3).

Timestamps are whole seconds of monotonic time. On each restart event drop
the stored stamps older than `now - period`, push `now`; more than
`intensity` stamps left means the supervisor gives up.
"""

from __future__ import annotations


def add_restart(stamps: tuple[int, ...], now: int, intensity: int, period: int) -> tuple[tuple[int, ...], bool]:
    """Record one restart event at `now`; return the new stamps and whether it is within intensity."""
    kept = tuple(t for t in stamps if t >= now - period) + (now,)
    return kept, len(kept) <= intensity
