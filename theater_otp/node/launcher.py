"""Starting child processes through a preloaded forkserver.

The forkserver is a fresh interpreter (not a fork of the node) that imports
`theater_otp.worker.preload` once; each worker and the chain-writer is a fork
of it. Its children see the node's death through the forkserver's exit and
their PR_SET_PDEATHSIG, so nothing outlives a SIGKILLed node.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from typing import TYPE_CHECKING

from ..chain.store import Durability
from ..chain.writer import writer_main
from ..home import Home
from ..http.listener import GatewayConfig
from ..proc import FORKSERVER_PRELOAD
from ..protocol.trust import RunSecrets
from ..worker.main import WorkerConfig, worker_main

if TYPE_CHECKING:
    from ..cluster.link import LinkConfig


#: multiprocessing's `start` reaps finished children from a module-wide set while `close` empties
#: a process's handle before it leaves that set: a start on the spawner thread and a close on the
#: loop must not interleave.
_MP_LOCK = threading.Lock()


def forkserver_context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


@dataclass(eq=False)
class ChildProcess:
    """One started OS process. Owns the multiprocessing handle; `release()` closes it once reaped."""

    proc: multiprocessing.process.BaseProcess
    pid: int = field(init=False)
    sentinel: int = field(init=False)

    def __post_init__(self) -> None:
        if self.proc.pid is None:
            raise ValueError(f"{self.proc.name} was never started: no process to own")
        self.pid = self.proc.pid
        self.sentinel = self.proc.sentinel

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def kill_and_reap(self, timeout_s: float = 2.0) -> None:
        """SIGKILL it, wait up to `timeout_s` for its end, release the handle."""
        self.kill()
        self.proc.join(timeout_s)
        self.release()

    def exitcode(self) -> int | None:
        """The exit status once the sentinel is ready (negative = killed by that signal)."""
        return self.proc.exitcode

    def release(self) -> None:
        try:
            with _MP_LOCK:
                self.proc.close()
        except ValueError:
            pass  # still running: left to the interpreter's own cleanup

    def __repr__(self) -> str:
        code = self.proc.exitcode
        state = "running" if code is None else (f"exited with signal {-code}" if code < 0 else f"exited with code {code}")
        return f"<ChildProcess {self.proc.name} {state} with PID {self.pid}>"


class Launcher:
    """Starts the node's child processes from the forkserver: at once (the caller waits for the
    fork, ~5-20 ms), or on the spawner thread (`start_worker_soon`) while the loop goes on."""

    def __init__(self) -> None:
        self.ctx = forkserver_context()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

    def _start(self, proc: multiprocessing.process.BaseProcess) -> ChildProcess:
        with _MP_LOCK:
            proc.start()
            # The node watches and reaps its children itself (sentinels in the loop's poller).
            # multiprocessing's own module-wide set of children is walked, one wait() per live
            # child, by every start(): 12 us per running actor per start, boot O(N^2) (10 ms a
            # start at 665 actors). Kept out of it, a start costs the same at any size.
            multiprocessing.process._children.discard(proc)  # type: ignore[attr-defined]
        return ChildProcess(proc)

    def start_worker(self, cfg: WorkerConfig) -> ChildProcess:
        return self._start(self.ctx.Process(target=worker_main, args=(cfg,), name=f"actor:{cfg.path}", daemon=True))

    def start_worker_soon(self, cfg: WorkerConfig) -> Future[ChildProcess]:
        """Start a worker on the spawner thread; the future holds its process or the OSError."""
        return self._spawner.submit(self.start_worker, cfg)

    def start_writer(self, home: Home, secrets: RunSecrets, durability: Durability) -> ChildProcess:
        return self._start(self.ctx.Process(target=writer_main, args=(home, os.getpid(), secrets, durability),
                                            name="chain-writer", daemon=True))

    def start_gateway(self, cfg: GatewayConfig) -> ChildProcess:
        from ..http.gateway import gateway_main  # aiohttp: loaded only by nodes that serve HTTP

        return self._start(self.ctx.Process(target=gateway_main, args=(cfg,), name="http-gateway", daemon=True))

    def start_link(self, cfg: "LinkConfig") -> ChildProcess:
        from ..cluster.link import link_main  # nats-py: loaded only by nodes in a cluster

        return self._start(self.ctx.Process(target=link_main, args=(cfg,), name="cluster-link", daemon=True))

    def close(self) -> None:
        self._spawner.shutdown(wait=True, cancel_futures=True)
