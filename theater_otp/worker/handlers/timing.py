"""timing: sleep, wall-clock milliseconds, a monotonic nanosecond counter.

Settings: `min_sleep_duration` and `max_sleep_duration` (ms; the seed's
names): a sleep outside them is an `err` to the actor, not a crash. Every call
is recorded with its result, and replay serves the recorded clock readings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ...config.fields import Fields
from .base import FunctionTable, Handler, HostContext, HostFunction, same_functions


@dataclass(frozen=True)
class TimingSettings:
    min_sleep_ms: int = 1
    max_sleep_ms: int = 3_600_000


class Timing(Handler):
    type = "timing"
    interfaces = ("timing",)
    summary = "sleep within the manifest's bounds, wall-clock and monotonic time"

    def parse_settings(self, fields: Fields) -> TimingSettings:
        default = TimingSettings()
        low = fields.int("min_sleep_duration", default.min_sleep_ms, minimum=0)
        high = fields.int("max_sleep_duration", default.max_sleep_ms, minimum=0)
        assert low is not None and high is not None
        if high < low:
            raise fields.error("max_sleep_duration", f"{high} is not valid: expected at least "
                                                     f"min_sleep_duration ({low})", high)
        fields.done()
        return TimingSettings(low, high)

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings: TimingSettings = ctx.settings or TimingSettings()
        s = ctx.services

        def sleep(ms: int) -> str | None:
            if not settings.min_sleep_ms <= ms <= settings.max_sleep_ms:
                return (f"sleep of {ms} ms is outside the allowed {settings.min_sleep_ms}.."
                        f"{settings.max_sleep_ms} ms")
            return s.sleep(ms)

        table = {
            "sleep": HostFunction(sleep),
            "now": HostFunction(lambda: time.time_ns() // 1_000_000),
            "performance-now": HostFunction(time.perf_counter_ns),
        }
        return same_functions(table, *self.provides())


HANDLER = Timing()
