"""The node's one thread: a poller over sockets and fds, a deadline heap, signals, work from threads.

Everything else in the node runs from `Loop.poll`'s callers on this thread;
`in_thread` is the one way work leaves it, and its result comes back through
the wakeup fd to run on the loop again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import select
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from ..config.fields import MAX_SETTING

log = logging.getLogger("theater_otp.node")


@dataclass(order=True)
class Timer:
    """A callback due at `deadline` (monotonic seconds); setting `cancelled` keeps it from running."""

    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Loop:
    """Poller, timers, signals and the hand-back of work done on threads, for one thread."""

    def __init__(self) -> None:
        self.poller = zmq.Poller()
        #: process sentinels (one per worker: a thousand and more) live in one epoll set that the
        #: poller watches as a single fd, so a turn costs the same with ten workers or ten thousand
        self._sentinels = select.epoll()
        self.poller.register(self._sentinels.fileno(), zmq.POLLIN)
        self.timers: list[Timer] = []
        self._seq = itertools.count()
        #: correlation ids of everything the node asks (of workers, the gateway, the writer)
        self._corr = itertools.count(1)
        self.wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.signals: deque[int] = deque()
        self._finished: deque[tuple[Callable[[Any], None], Any]] = deque()

    def next_corr(self) -> int:
        return next(self._corr)

    def watch(self, what: zmq.Socket | int) -> None:
        """Report `what` (a socket, or a process sentinel fd) in `poll` when it is readable."""
        if isinstance(what, int):
            self._sentinels.register(what, select.EPOLLIN)
        else:
            self.poller.register(what, zmq.POLLIN)

    def unwatch(self, what: zmq.Socket | int) -> None:
        if isinstance(what, int):
            self._sentinels.unregister(what)
        else:
            self.poller.unregister(what)

    def catch_signals(self, *signums: int) -> None:
        """Queue these signals in `signals` and wake the poll: handled on the loop, never in a handler."""
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in signums:
            signal.signal(signum, lambda s, f: self.signals.append(s))

    # ---- timers -------------------------------------------------------------------------------

    def after(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` from the loop in `seconds` (clamped to 0 .. MAX_SETTING ms: a poll timeout
        beyond 2**31 ms, or a non-finite one, would stop the loop)."""
        seconds = min(max(seconds, 0.0), MAX_SETTING / 1000) if seconds == seconds else 0.0
        timer = Timer(time.monotonic() + seconds, next(self._seq), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].deadline <= now:
            timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.callback()

    def poll(self, other_deadline: float | None = None) -> dict[Any, int]:
        """Wait until a watched socket or fd is ready, the next timer or `other_deadline` is due."""
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        deadlines = [t for t in (self.timers[0].deadline if self.timers else None, other_deadline) if t is not None]
        timeout = None
        if deadlines:
            timeout = min(MAX_SETTING, max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1))
        ready = dict(self.poller.poll(timeout))
        if ready.pop(self._sentinels.fileno(), None) is not None:
            ready.update((fd, zmq.POLLIN) for fd, _ in self._sentinels.poll(0))
        return ready

    def woken(self, ready: dict[Any, int]) -> bool:
        """Whether the wakeup fd is among `ready` (its bytes are then read)."""
        if self.wake_r.fileno() in ready or self.wake_r in ready:
            self.wake_r.recv(4096)
            return True
        return False

    # ---- work off the loop --------------------------------------------------------------------

    def in_thread(self, work: Callable[[], Any], then: Callable[[Any], None], name: str = "work") -> None:
        """Run `work()` on a thread; `then(result)` runs on the loop afterwards, with the exception
        `work` raised as the result if it raised one."""

        def run() -> None:
            result: Any
            try:
                result = work()
            except Exception as exc:  # handed to the loop, which reports it to whoever asked
                result = exc
            self.hand_back(then, result)

        threading.Thread(target=run, name=name, daemon=True).start()

    def hand_back(self, then: Callable[[Any], None], result: Any) -> None:
        """From any thread: `then(result)` runs on the loop at its next turn."""
        self._finished.append((then, result))
        try:
            self._wake_w.send(b"c")
        except OSError:
            pass

    def run_finished(self) -> None:
        while self._finished:
            then, result = self._finished.popleft()
            then(result)

    def close(self) -> None:
        self._sentinels.close()
        self.wake_r.close()
        self._wake_w.close()


__all__ = ["Loop", "Timer"]
