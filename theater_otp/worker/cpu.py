"""The CPU budget of an export call: thread CPU time, checked on wasmtime's epoch deadline.

wasmtime interrupts wasm at an epoch deadline; an engine-wide epoch counter
is advanced by an `EpochTicker` thread, but only while export calls run and
for a second after (an idle actor wakes nothing). At each deadline the store's callback (`CpuBudget`)
compares the CPU time the calling thread used since the export call began
with the actor's `cpu_ms`: under it, wasm runs on to the next check; over it,
the call traps and the actor crashes with a reason naming the limit.

What counts: CPU time of the calling thread, so wasm and the host functions it
calls (a log flood burns CPU in the host and is stopped), but not time spent
blocked (a sleep, a request waiting for its reply). Host calls never renew
the budget.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

#: How often the ticker advances the epoch while a call runs.
TICK_S = 0.01
#: Ticks between two checks of the CPU used (50 ms of wall time).
CHECK_TICKS = 5
#: How long the ticker keeps ticking after the last call ended (a busy actor sets its Event once).
LINGER_S = 1.0

_CALLBACK = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1]
_FINALIZER = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]
_NO_FINALIZER = _FINALIZER()  # a null function pointer: the store owns nothing of ours to free
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE


class EpochTicker:
    """Advances `engine`'s epoch every TICK_S while calls run, and up to LINGER_S after the last.

    Owns a daemon thread. `begin()`/`end()` bracket one export call and cost a counter and a
    flag read: the thread's Event is set only by the first call of a burst (setting it takes a
    lock and wakes the thread) and cleared by the thread itself once no call has run for
    LINGER_S, so an idle actor wakes nothing.
    """

    def __init__(self, engine: wasmtime.Engine):
        self.engine = engine
        self._active = threading.Event()
        self._depth = 0
        self._last_end = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="epoch-ticker")
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._active.wait()
            time.sleep(TICK_S)
            self.engine.increment_epoch()
            if self._depth == 0 and time.monotonic() - self._last_end >= LINGER_S:
                self._active.clear()
                # a call may have begun between the check and the clear, seen the flag still set
                # and not set it: look again, so no running call is left without ticks
                if self._depth:
                    self._active.set()

    def begin(self) -> None:
        self._depth += 1
        if not self._active.is_set():
            self._active.set()

    def end(self) -> None:
        self._depth = max(0, self._depth - 1)
        self._last_end = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the thread ticks now (it does whenever a call runs)."""
        return self._active.is_set()


class CpuBudget:
    """The deadline callback of one Store. `start()` at the beginning of each export call;
    `exceeded` then says whether the trap that ended it was this budget."""

    def __init__(self, store: wasmtime.Store, cpu_ms: int):
        self.cpu_ms = cpu_ms
        self.started = time.thread_time()
        self.exceeded: float | None = None  # CPU ms used when the budget stopped the call
        self._store = store
        self._callback = _CALLBACK(self._on_deadline)  # kept alive as long as the store
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback, None, _NO_FINALIZER)

    def start(self) -> None:
        self.started = time.thread_time()
        self.exceeded = None
        self._store.set_epoch_deadline(CHECK_TICKS)

    def used_ms(self) -> float:
        return (time.thread_time() - self.started) * 1000

    def _on_deadline(self, _context: Any, _data: Any, delta: Any, kind: Any) -> int:
        used = self.used_ms()
        if used > self.cpu_ms:
            self.exceeded = used
            error = ffi.wasmtime_error_new(f"CPU budget of {self.cpu_ms} ms exceeded".encode())
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = CHECK_TICKS
        kind[0] = _CONTINUE
        return 0
