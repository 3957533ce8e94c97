"""WASI's sources of nondeterminism, served (and so recorded) by the host.

Not a manifest handler: every component that imports WASI gets WASI with
nothing granted (see `host.Actor`), and these functions shadow WASI's own
clocks and randomness so that each reading is in the chain and replay serves
it back. `wasi:clocks/monotonic-clock`'s subscribe-* would hand out pollables
only WASI's own clock can make: an actor waits with the timing handler
instead, so such a call (Python's `time.sleep`) is a crash naming it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import wasmtime.component as wc

from .base import ActorCrash, FunctionTable, Handler, HostContext, HostFunction, record_of

#: The most bytes one get-random-bytes call may ask for.
MAX_RANDOM_BYTES = 1024 * 1024


def datetime_record(seconds: int, nanoseconds: int) -> wc.Record:
    return record_of(seconds=seconds, nanoseconds=nanoseconds)


def _no_clock_waits(func: str) -> Callable[..., Any]:
    def refuse(*_args: Any) -> Any:
        raise ActorCrash(f"wasi:clocks/monotonic-clock.{func} is not available to actors "
                         f"(waiting on a clock blocks the actor's mailbox); use the timing handler")
    return refuse


def random_bytes(n: int) -> bytes:
    if n > MAX_RANDOM_BYTES:
        raise ActorCrash(f"random request of {n} bytes is over the {MAX_RANDOM_BYTES} byte limit")
    return os.urandom(n)


def random_u64() -> int:
    return int.from_bytes(os.urandom(8), "little")


def _replay_datetime(data: dict) -> wc.Record:
    value = data["result"]
    return datetime_record(value["seconds"], value["nanoseconds"])


def _replay_pair(data: dict) -> tuple:
    return tuple(data["result"])


class Wasi(Handler):
    type = "wasi"
    always_granted = True
    in_manifest = False
    packages = ()
    summary = "WASI clocks and randomness, recorded (every component that imports WASI)"

    def provides(self) -> tuple[str, ...]:
        return ("wasi:clocks/monotonic-clock", "wasi:clocks/wall-clock", "wasi:random/random",
                "wasi:random/insecure", "wasi:random/insecure-seed")

    def functions(self, ctx: HostContext) -> FunctionTable:
        monotonic = {
            "now": HostFunction(time.monotonic_ns),
            "resolution": HostFunction(lambda: 1),
        }
        for func in ("subscribe-instant", "subscribe-duration"):
            monotonic[func] = HostFunction(_no_clock_waits(func))
        return {
            "wasi:clocks/monotonic-clock": monotonic,
            "wasi:clocks/wall-clock": {
                "now": HostFunction(lambda: datetime_record(*divmod(time.time_ns(), 1_000_000_000)),
                                    replay=_replay_datetime),
                "resolution": HostFunction(lambda: datetime_record(0, 1), replay=_replay_datetime),
            },
            "wasi:random/random": {
                "get-random-bytes": HostFunction(random_bytes),
                "get-random-u64": HostFunction(random_u64),
            },
            "wasi:random/insecure": {
                "get-insecure-random-bytes": HostFunction(random_bytes),
                "get-insecure-random-u64": HostFunction(random_u64),
            },
            "wasi:random/insecure-seed": {
                "insecure-seed": HostFunction(lambda: (random_u64(), random_u64()), replay=_replay_pair),
            },
        }


HANDLER = Wasi()
