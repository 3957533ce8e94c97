"""The node's side of the chain: the chain-writer process, the node's own events, registrations, syncs.

The writer is a child of the root supervisor in all but name: it is started
again when it ends (after a growing pause when it fails to start), and its
restarts count against the root's intensity; one too many ends the node.
Registrations (which chain is whose, which producer may write which chain)
are kept and told again to a restarted writer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack
import zmq

from ..chain.producer import ChainProducer
from ..chain.store import Durability
from ..chain.writer import EXIT_CANNOT_OPEN
from ..config.model import Backoff, SupFlags
from ..home import Home
from ..protocol import Envelope, ProtocolError, decode, encode
from ..protocol.trust import RunSecrets, same
from ..supervision.intensity import add_restart
from .launcher import ChildProcess, Launcher
from .loop import Loop, Timer
from .registry import WorkerHandle

log = logging.getLogger("theater_otp.node")

#: A chain-writer that ends within this long of its start counts as failing to start; the pause
#: before the next start doubles from 0.1 s up to 5 s (the supervisors' Backoff record).
WRITER_STABLE_S = 2.0
WRITER_BACKOFF = Backoff(initial_ms=100, max_ms=5_000)
#: How long a `sync` waits for a worker to say its events are durable (then reads without it).
SYNC_WORKER_TIMEOUT_S = 2.0


@dataclass
class Sync:
    """A `sync` from the CLI: answered once the node's batches up to `batch` are acknowledged and
    every worker in `workers` (router identity -> tree path) said its own events are."""

    answer: Callable[[int], None]
    batch: int
    workers: dict[bytes, str] = field(default_factory=dict)
    timer: Timer | None = None


class ChainLink:
    """The writer process, the node's DEALER to it, its producer and what the writer must be told."""

    def __init__(self, ctx: zmq.Context, loop: Loop, home: Home, secrets: RunSecrets, durability: Durability,
                 launcher: Launcher, root_flags: SupFlags, give_up: Callable[[str], None]):
        self.loop = loop
        self.home = home
        self.secrets = secrets
        #: what the chain-writer's acks promise (chain/store.py Durability)
        self.durability = durability
        self.launcher = launcher
        self.root_flags = root_flags
        self.give_up = give_up
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, secrets.node)
        self.sock.setsockopt(zmq.LINGER, 2000)
        # never refused while the writer is away: what waits here is the node's own batches (kept
        # until acknowledged anyway) and one registration per chain and per worker; a writer away
        # for long stops the node (its restarts count against the root's intensity)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.connect(home.chain_endpoint)
        loop.watch(self.sock)
        self.producer = ChainProducer(self.sock, f"node/{os.getpid()}/{time.time_ns()}")
        self.registrations: dict[str, dict] = {}  # chain id -> its `register` body
        #: identity -> its `producer` body: every process the node started that may write (workers,
        #: spares waiting for their turn, forks under way), told again to a restarted writer
        self.producers: dict[bytes, dict] = {}
        self.writer: ChildProcess | None = None
        self.started = 0.0
        #: exits in a row, each soon after its start (backoff before the next start)
        self.failures = 0
        #: when the writer was restarted (whole monotonic seconds), against the root's intensity
        self.restarts: tuple[int, ...] = ()
        self.syncs: dict[int, Sync] = {}  # by the corr the node sent its workers
        #: `stats` asked of the writer (its commit latency histogram): corr -> who hears the answer
        self.stats_waiters: dict[int, Callable[[dict], None]] = {}

    # ---- the writer process -------------------------------------------------------------------

    def start_writer(self) -> None:
        self.writer = self.launcher.start_writer(self.home, self.secrets, self.durability)
        self.started = time.monotonic()
        self.loop.watch(self.writer.sentinel)

    def on_writer_exit(self, stopping: bool, workers: Callable[[], Iterable[WorkerHandle]],
                       tell: Callable[[WorkerHandle, Envelope], object]) -> None:
        """Start the writer again and tell it every chain and producer the node registered; every
        producer sends again what it has not had acknowledged.
        One that keeps exiting with an error soon after it starts (chain.db cannot be opened) is
        started after a growing pause (WRITER_BACKOFF), with one log line each time. More restarts
        than the root's intensity within its period end the node, naming chain.db and the cause."""
        assert self.writer is not None
        code = self.writer.exitcode()
        self.loop.unwatch(self.writer.sentinel)
        self.writer.release()
        self.writer = None
        if stopping:
            return
        flags = self.root_flags
        self.restarts, within = add_restart(self.restarts, int(time.monotonic()), flags.intensity, flags.period)
        if not within:
            cause = ("it could not open the chain database (its own line above says why)" if code == EXIT_CANNOT_OPEN
                     else f"it was killed by signal {-code}" if code is not None and code < 0
                     else f"it exited with code {code}")
            self.give_up(f"the chain-writer ended {len(self.restarts)} times within {flags.period} s, more "
                         f"than the root supervisor's intensity ({flags.intensity}); the last time {cause}. "
                         f"Chain database: {self.home.chain_db}")
            return
        # failing to start: an error exit (not a signal: a killed writer is started again at once)
        # soon after its start, like chain.db that cannot be opened (exit 3)
        failed = code is not None and code > 0 and time.monotonic() - self.started < WRITER_STABLE_S
        self.failures = self.failures + 1 if failed else 0
        restart = lambda: self._restart(workers, tell)  # noqa: E731 - one callback, two uses below
        if self.failures:
            delay = WRITER_BACKOFF.delay_s(self.failures - 1)
            log.error("chain-writer exited (%s), %d time(s) in a row within %.0f s of starting (see its line "
                      "above): starting it again in %.1f s", code, self.failures, WRITER_STABLE_S, delay)
            self.loop.after(delay, restart)
            return
        log.error("chain-writer exited (%s): starting a new one", code)
        restart()

    def _restart(self, workers: Callable[[], Iterable[WorkerHandle]],
                 tell: Callable[[WorkerHandle, Envelope], object]) -> None:
        if self.writer is not None:
            return
        self.start_writer()
        for body in self.registrations.values():
            self.send(Envelope("register", "node", "chain", 0, body))
        for body in self.producers.values():  # every process that may write: workers, spares, forks
            self.send(Envelope("producer", "node", "chain", 0, body))
        self.producer.resend()
        for handle in list(workers()):
            if handle.ready:
                tell(handle, Envelope("chain_restarted", "node", handle.actor_id, 0))

    def stop_writer(self) -> None:
        """Make the node's last events durable, ask the chain-writer to exit; kill it after 5 s."""
        self.producer.flush()
        deadline = time.monotonic() + 5
        while self.producer.unacked and time.monotonic() < deadline:
            if self.sock.poll(500):
                self.take_replies()
            else:
                self.producer.resend()
        try:
            self.sock.send(encode(Envelope("stop", "node", "chain", self.loop.next_corr())), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        while time.monotonic() < deadline and self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            if any(env.kind == "stopped" for env in self.take_replies()):
                break
        writer = self.writer
        assert writer is not None
        writer.proc.join(5)
        if writer.exitcode() is None:
            log.error("chain-writer did not stop in time: killing it")
            writer.kill()
            writer.proc.join(1)
        writer.release()
        self.writer = None

    # ---- what the writer is told ---------------------------------------------------------------

    def send(self, env: Envelope) -> None:
        """A registration for the writer: queued while it is away (SNDHWM 0), never dropped."""
        self.sock.send(encode(env), zmq.NOBLOCK)

    def register_chain(self, chain_id: str, path: str, name: str) -> None:
        """Tell the writer a chain's path and name (kept, to tell a restarted writer again)."""
        body = {"actor_id": chain_id, "path": path, "name": name}
        self.registrations[chain_id] = body
        self.send(Envelope("register", "node", "chain", 0, body))

    def registered(self, chain_id: str) -> bool:
        return chain_id in self.registrations

    def register_producer(self, identity: bytes, actor_id: str, incarnation: int) -> None:
        """Tell the writer that `identity` may write `actor_id`'s chain for `incarnation`, and nothing
        else (kept until unregistered, to tell a restarted writer again)."""
        body = {"identity": identity, "actor_id": actor_id, "incarnation": incarnation}
        self.producers[identity] = body
        self.send(Envelope("producer", "node", "chain", 0, body))

    def unregister_producer(self, identity: bytes, actor_id: str, incarnation: int) -> None:
        self.producers.pop(identity, None)
        self.send(Envelope("unproducer", "node", "chain", 0,
                           {"identity": identity, "actor_id": actor_id, "incarnation": incarnation}))

    def ask_stats(self, answer: Callable[[dict], None]) -> int:
        """Ask the writer for its commit latency histogram; `answer(body)` runs when it replies
        (never, if it does not: the caller keeps its own deadline). Returns the request's corr."""
        corr = self.loop.next_corr()
        self.stats_waiters[corr] = answer
        self.send(Envelope("stats", "node", "chain", corr))
        return corr

    def record(self, actor_id: str, incarnation: int, event_type: str, data: dict) -> None:
        """Buffer one of the node's events; flushed as a batch before the loop waits, kept until acknowledged."""
        self.producer.add([actor_id, incarnation, event_type, time.time_ns(), msgpack.packb(data, use_bin_type=True)])

    def take_replies(self) -> list[Envelope]:
        """Take acks (and return the writer's other replies) from the chain socket."""
        others: list[Envelope] = []
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return others
            try:
                env = decode(frame, peer="chain-writer")
            except ProtocolError as exc:
                log.error("dropped frame from the chain-writer: %s", exc)
                continue
            body = env.body if isinstance(env.body, dict) else {}
            if not same(body.get("proof"), self.secrets.writer_proof):
                log.error("ignored %r on the chain socket: it does not carry the chain-writer's proof", env.kind)
            elif env.kind == "ack":
                self.producer.on_ack(env.corr)
            elif env.kind == "stats" and (asked := self.stats_waiters.pop(env.corr, None)) is not None:
                asked(body)
            else:
                others.append(env)

    # ---- syncs: "everything emitted so far is durable" ------------------------------------------

    def sync(self, answer: Callable[[int], None], ask: Callable[[int], dict[bytes, str]]) -> None:
        """Call `answer(batch)` once every event emitted so far, by this node and by the workers
        `ask(sid)` asked (it returns their identities and paths), is durable. A worker that does not answer
        within SYNC_WORKER_TIMEOUT_S (busy in a long call, paused) is not waited for any longer;
        the node's own events always are."""
        self.producer.flush()
        sid = self.loop.next_corr()
        sync = Sync(answer, self.producer.batch_seq, ask(sid))
        self.syncs[sid] = sync
        if sync.workers:
            sync.timer = self.loop.after(SYNC_WORKER_TIMEOUT_S, lambda: self._stop_waiting(sid))
        self.answer_syncs()

    def _stop_waiting(self, sid: int) -> None:
        sync = self.syncs.get(sid)
        if sync is not None and sync.workers:
            log.info("sync: not waiting any longer for %s", ", ".join(sorted(sync.workers.values())))
            sync.workers.clear()
            self.answer_syncs()

    def worker_synced(self, identity: bytes, sid: int | None = None) -> None:
        """A worker's events are durable (sid: for that sync; None: for all, it exited)."""
        for key, sync in self.syncs.items():
            if sid is None or key == sid:
                sync.workers.pop(identity, None)
        self.answer_syncs()

    def answer_syncs(self) -> None:
        for sid, sync in list(self.syncs.items()):
            if not sync.workers and self.producer.durable_through(sync.batch):
                del self.syncs[sid]
                if sync.timer is not None:
                    sync.timer.cancelled = True
                sync.answer(sync.batch)

    def close(self) -> None:
        self.sock.close(linger=100)


__all__ = ["ChainLink", "SYNC_WORKER_TIMEOUT_S", "Sync", "WRITER_BACKOFF", "WRITER_STABLE_S"]
