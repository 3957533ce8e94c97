"""The node: runs every supervisor of the tree, starts and reaps worker processes,
routes actor messages and serves the control socket.

One thread, one loop (`Node.run`): a zmq.Poller over the router socket
(workers), the control socket (CLI), every worker's process sentinel and a
signal wakeup fd, with a deadline heap for shutdown and request timers.
Supervisors are pure state machines (supervision.supervisor); the node feeds
them events through `self.queue` and carries out the actions they return.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import zmq

if TYPE_CHECKING:
    from wasmtime import Engine

from ..chain.producer import MAX_UNACKED_EVENTS, ChainProducer
from ..chain.store import Durability
from ..chain.writer import EXIT_CANNOT_OPEN
from ..config.fields import MAX_SETTING
from ..config.model import Backoff, ChildSpec, ChildType
from ..errors import TheaterError
from ..home import Home
from ..http.listener import GatewayConfig, Listener, ListenerKind
from ..protocol import MAILBOX_KINDS, MAX_FRAME, Envelope, ProtocolError, decode, encode, message_size, recv_routed
from ..protocol.trust import RunSecrets, new_token, same
from ..supervision import events as ev
from ..supervision.intensity import add_restart
from ..supervision.reasons import SHUTDOWN, ExitReason, ReasonKind, classify_exit
from ..supervision.supervisor import ChildState, Supervisor
from ..worker.component import CompiledComponent
from ..worker.handlers import granted_types
from ..worker.handlers.message_server import DEFAULT_REQUEST_TIMEOUT_MS
from ..worker.main import WorkerConfig
from . import control
from .actor_supervision import ActorSupervision
from .channels import ChannelTable
from .http import HttpListeners, of_manifest
from .http import listeners as http_listeners
from .launcher import ChildProcess, Launcher
from .outbox import HeldSend, Outbox
from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: A worker that has not sent `ready` this long after it was started has failed to start.
START_TIMEOUT_S = 30.0
#: A chain-writer that ends within this long of its start counts as failing to start; the pause
#: before the next start doubles from 0.1 s up to 5 s (the supervisors' Backoff record).
WRITER_STABLE_S = 2.0
WRITER_BACKOFF = Backoff(initial_ms=100, max_ms=5_000)
#: A gateway that could not bind a port (taken by another process after `up`) is started again
#: after a pause doubling from 0.5 s up to 10 s.
GATEWAY_RETRY = Backoff(initial_ms=500, max_ms=10_000)
#: Most frames the node holds for a worker that is still starting.
MAX_BACKLOG = 10_000
#: How long a `sync` waits for a worker to say its events are durable (then reads without it).
SYNC_WORKER_TIMEOUT_S = 2.0


@dataclass(order=True)
class _Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


@dataclass
class _PendingRequest:
    """A request in flight through the node: who asked (worker or CLI) and who must answer."""

    origin: str           # "worker" | "cli"
    origin_ident: bytes
    origin_corr: int
    target: WorkerHandle
    timer: _Timer | None = None
    #: a channel-open in flight: (channel id, the opener's handle)
    channel: tuple[str, WorkerHandle] | None = None


@dataclass
class _Sync:
    """A `sync` from the CLI: answered once the node's batches up to `batch` are acknowledged and
    every worker in `workers` (router identities) said its own events are."""

    ident: bytes
    corr: int
    batch: int
    workers: set[bytes]
    timer: _Timer | None = None


@dataclass
class _SubSupervisor:
    """A supervisor child: its state machine and the token (incarnation) its parent knows it by."""

    sup: Supervisor
    parent: str | None
    child_id: str
    incarnation: int
    started: bool = False
    stop_timer: _Timer | None = None
    #: set for the supervisor of an actor that supervises: the actor's path (same as the supervisor's)
    owner: str | None = None
    #: runs when an owned supervisor has stopped (deliver the owner's exit, or stop the owner)
    on_exit: Callable[[], None] | None = None


class Node(ActorSupervision):
    def __init__(self, home: Home, tree: ChildSpec, components: dict[Path, CompiledComponent],
                 on_ready: Callable[[str | None], None] | None = None, durability: Durability = Durability.DISK):
        self.home = home
        #: what the chain-writer's acks promise (chain/store.py Durability)
        self.durability = durability
        self.tree = tree
        self.components = components
        self.on_ready = on_ready
        self.registry = Registry()
        self.supervisors: dict[str, _SubSupervisor] = {}
        self.queue: deque[tuple[str, ev.Event]] = deque()
        self.timers: list[_Timer] = []
        self._timer_seq = itertools.count()
        self._corr = itertools.count(1)
        self.pending: dict[int, _PendingRequest] = {}
        #: workers' sends admitted and waiting for their events to be stored
        self.outbox = Outbox()
        self.channels: ChannelTable[WorkerHandle] = ChannelTable()
        #: supervisor API req -> (CLI ident, corr), or a callback taking the Reply (actor supervisors)
        self.api_waiters: dict[int, Any] = {}
        self._api_req = itertools.count(1)
        self._engine: Engine | None = None  # created on first dynamic start-child (compiling needs one)
        self._finished: deque = deque()  # (callback, result) from work done on threads
        self._init_actor_supervision()
        self._registrations: dict[str, dict] = {}  # chain id -> its `register` body
        #: events a worker may have waiting for the chain-writer before it pauses (a tuning knob)
        self.max_unacked_events = int(os.environ.get("THEATER_OTP_MAX_UNACKED_EVENTS", MAX_UNACKED_EVENTS))
        self.started_at = time.time()
        self.exit_code: int | None = None
        self.exit_message = ""
        self.stopping = False
        self.down_waiters: list[tuple[bytes, int]] = []
        self.syncs: dict[int, _Sync] = {}  # by the corr the node sent its workers
        self.launcher = Launcher()
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self.router = self._bind(zmq.ROUTER, home.router_endpoint)
        self.control = self._bind(zmq.ROUTER, home.control_endpoint)
        #: this run's identities and the writer's proof (protocol/trust.py), in memory only
        self.secrets = RunSecrets.new()
        #: frames on the router from identities that are not a live worker or the gateway
        self.dropped_frames = 0
        self.chain = self.ctx.socket(zmq.DEALER)
        self.chain.setsockopt(zmq.IDENTITY, self.secrets.node)
        self.chain.setsockopt(zmq.LINGER, 2000)
        # never refused while the writer is away: what waits here is the node's own batches (kept
        # until acknowledged anyway) and one registration per chain and per worker; a writer away
        # for long stops the node (its restarts count against the root's intensity)
        self.chain.setsockopt(zmq.SNDHWM, 0)
        self.chain.connect(home.chain_endpoint)
        self.poller.register(self.chain, zmq.POLLIN)
        self.producer = ChainProducer(self.chain, f"node/{os.getpid()}/{time.time_ns()}")
        self.wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.signals: deque[int] = deque()
        self.writer: ChildProcess | None = None
        self.writer_started = 0.0
        #: chain-writer exits in a row, each soon after its start (backoff before the next start)
        self.writer_failures = 0
        #: when the writer was restarted (whole monotonic seconds), against the root's intensity
        self.writer_restarts: tuple[int, ...] = ()
        #: the HTTP gateway process (theater_otp/http/gateway.py), when some actor serves HTTP
        self.gateway: ChildProcess | None = None
        self.gateway_ready = False
        #: the root supervisor has started (with the gateway's readiness: what `up` waits for)
        self.root_up = False
        #: gateway starts in a row that could not bind the tree's ports (a pause before the next)
        self.gateway_failures = 0
        #: control command -> its handler, bound once (control.COMMANDS has the arguments of each)
        self.control_handlers: dict[str, Callable[[bytes, int, dict], None]] = {
            name: getattr(self, f"_cmd_{name}") for name in control.COMMANDS}
        #: which port serves which tree path (node/http.py); the gateway is told which worker serves each
        self.http = HttpListeners()
        #: `listen` commands sent to the gateway and not answered yet: corr -> (listener, waiting worker
        #: (identity, corr) or None); those made before the gateway is ready wait in `http_queued`
        self.http_opening: dict[int, tuple[Listener, tuple[bytes, int] | None]] = {}
        self.http_queued: list[tuple[Listener, tuple[bytes, int] | None]] = []

    def _bind(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # No high-water mark: a busy actor's messages queue instead of being refused (and lost);
        # back-pressure comes from each sender waiting on its own calls, not from dropping.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # frames up to twice the limit reach the decoder (and are logged and dropped there);
        # libzmq cuts a connection that sends anything bigger before it is buffered
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_FRAME)
        path = endpoint.removeprefix("ipc://")
        if os.path.exists(path):
            os.unlink(path)  # stale from a node that died; the caller checked none is running
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind {endpoint}: {exc}") from None
        self.poller.register(sock, zmq.POLLIN)
        return sock

    # ---- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda s, f: self.signals.append(s))
        self.writer = self.launcher.start_writer(self.home, self.secrets, self.durability)
        self.writer_started = time.monotonic()
        self.poller.register(self.writer.sentinel, zmq.POLLIN)
        log.info("node %d up at %s (chain-writer pid %d)", os.getpid(), self.home.root, self.writer.pid)
        self.http = HttpListeners(http_listeners(self.tree))
        if self.http.by_port:
            self._start_gateway()
        root = _SubSupervisor(Supervisor(self.tree.id, self.tree), None, self.tree.id, 1)
        self.supervisors[self.tree.id] = root
        self._enqueue(self.tree.id, ev.Start())
        try:
            while self.exit_code is None:
                self._drain()
                if self.exit_code is not None:
                    break
                self._poll_once()
        finally:
            self._close()
        return self.exit_code

    def _close(self) -> None:
        if self.gateway is not None:
            self.gateway.kill()
            self.gateway.proc.join(2)
            self.gateway.release()
            self.gateway = None
        for handle in list(self.registry.workers.values()):
            handle.process.kill()
        if self.writer is not None:
            self._stop_writer()
        for waiter_ident, corr in self.down_waiters:
            self._control_reply(waiter_ident, corr, {"stopped": True, "message": self.exit_message})
        for sock in (self.router, self.control, self.chain):
            sock.close(linger=100)
        self.ctx.term()
        self.wake_r.close()
        self._wake_w.close()

    def _stop_writer(self) -> None:
        """Make the node's last events durable, ask the chain-writer to exit; kill it after 5 s."""
        self.producer.flush()
        deadline = time.monotonic() + 5
        while self.producer.unacked and time.monotonic() < deadline:
            if self.chain.poll(500):
                self._drain_chain_replies()
            else:
                self.producer.resend()
        try:
            self.chain.send(encode(Envelope("stop", "node", "chain", next(self._corr))), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        while time.monotonic() < deadline and self.chain.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            if any(env.kind == "stopped" for env in self._drain_chain_replies()):
                break
        writer = self.writer
        assert writer is not None
        writer.proc.join(5)
        if writer.exitcode() is None:
            log.error("chain-writer did not stop in time: killing it")
            writer.kill()
            writer.proc.join(1)
        writer.release()

    def _poll_once(self) -> None:
        self.producer.flush()
        now = time.monotonic()
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        deadlines = [t for t in (self.timers[0].deadline if self.timers else None,
                                 self.producer.resend_deadline()) if t is not None]
        timeout = min(MAX_SETTING, max(0, int((min(deadlines) - now) * 1000) + 1)) if deadlines else None
        ready = dict(self.poller.poll(timeout))
        if self.chain in ready:
            self._drain_chain_replies()
            self._answer_syncs()
        elif (deadline := self.producer.resend_deadline()) is not None and time.monotonic() >= deadline:
            self.producer.resend()
        if self.wake_r.fileno() in ready or self.wake_r in ready:
            self.wake_r.recv(4096)
            while self.signals:
                self._on_signal(self.signals.popleft())
            self._run_finished()
        if self.writer is not None and self.writer.sentinel in ready:
            self._on_writer_exit()
        if self.gateway is not None and self.gateway.sentinel in ready:
            self._on_gateway_exit()
        exited = [fd for fd in ready if isinstance(fd, int) and fd in self.registry.by_sentinel]
        if self.router in ready or exited:  # first what the exited workers sent before they ended
            self._serve(self.router, self._on_worker_message)
        for fd in exited:
            self._on_worker_exit(self.registry.by_sentinel[fd])
        if self.control in ready:
            self._serve(self.control, self._on_control_message)
        self._run_timers()

    def _serve(self, sock: zmq.Socket, handler: Callable[[bytes, Envelope], None]) -> None:
        for _ in range(1000):
            try:
                routed = recv_routed(sock, log)
            except zmq.Again:
                return
            if routed is None:
                continue
            ident, env = routed
            try:
                handler(ident, env)
            except Exception as exc:  # a fault boundary per inbound message: it costs its sender, never the node
                log.exception("node: failed handling %r from %r", env.kind, ident)
                self._answer_failure(sock, ident, env, f"the node failed handling {env.kind}: "
                                                       f"{type(exc).__name__}: {exc}")

    def _answer_failure(self, sock: zmq.Socket, ident: bytes, env: Envelope, why: str) -> None:
        """Tell whoever waits for an answer to `env` that handling it failed: a CLI gets an error,
        a worker the answer kind its call waits for (`sent` for sends, `reply` for the rest)."""
        if not env.corr:
            return
        if sock is self.control:
            self._control_error(ident, env.corr, "internal_error", why)
            return
        handle = self.registry.by_identity.get(ident)
        if handle is not None:
            kind = "sent" if env.kind in ("send", "channel_send", "channel_close") else "reply"
            self._send_now(handle, Envelope(kind, "node", handle.actor_id, env.corr, {"error": why}))

    def _on_signal(self, signum: int) -> None:
        if self.stopping:
            if signum == signal.SIGINT:
                log.warning("second interrupt: killing every worker now")
                for handle in list(self.registry.workers.values()):
                    handle.process.kill()
            return
        log.info("received %s: stopping the tree", signal.Signals(signum).name)
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        root = self.supervisors.get(self.tree.id)
        if root is None:
            self.exit_code = 0
        else:
            self._enqueue(self.tree.id, ev.Stop(SHUTDOWN))

    def _on_writer_exit(self) -> None:
        """Restart the chain-writer; every producer sends again what it has not had acknowledged.
        A writer that keeps exiting with an error soon after it starts (chain.db cannot be opened)
        is started again after a growing pause (WRITER_BACKOFF),
        with one log line each time, instead of in a hot loop. The writer counts as a child of the
        root supervisor: more restarts than the root's intensity within its period stop the node,
        with an error naming chain.db and the last cause."""
        assert self.writer is not None
        code = self.writer.exitcode()
        self.poller.unregister(self.writer.sentinel)
        self.writer.release()
        self.writer = None
        if self.stopping:
            return
        flags = self.tree.flags
        self.writer_restarts, within = add_restart(self.writer_restarts, int(time.monotonic()), flags.intensity,
                                                   flags.period)
        if not within:
            cause = ("it could not open the chain database (its own line above says why)" if code == EXIT_CANNOT_OPEN
                     else f"it was killed by signal {-code}" if code is not None and code < 0
                     else f"it exited with code {code}")
            self._give_up(f"the chain-writer ended {len(self.writer_restarts)} times within {flags.period} s, more "
                          f"than the root supervisor's intensity ({flags.intensity}); the last time {cause}. "
                          f"Chain database: {self.home.chain_db}")
            return
        # failing to start: an error exit (not a signal: a killed writer is started again at once)
        # soon after its start, like chain.db that cannot be opened (exit 3)
        failed = code is not None and code > 0 and time.monotonic() - self.writer_started < WRITER_STABLE_S
        self.writer_failures = self.writer_failures + 1 if failed else 0
        if self.writer_failures:
            delay = WRITER_BACKOFF.delay_s(self.writer_failures - 1)
            log.error("chain-writer exited (%s), %d time(s) in a row within %.0f s of starting (see its line "
                      "above): starting it again in %.1f s", code, self.writer_failures, WRITER_STABLE_S, delay)
            self._after(delay, self._restart_writer)
            return
        log.error("chain-writer exited (%s): starting a new one", code)
        self._restart_writer()

    def _restart_writer(self) -> None:
        if self.writer is not None:
            return
        self.writer = self.launcher.start_writer(self.home, self.secrets, self.durability)
        self.writer_started = time.monotonic()
        self.poller.register(self.writer.sentinel, zmq.POLLIN)
        for body in self._registrations.values():
            self._send_chain(Envelope("register", "node", "chain", 0, body))
        for handle in list(self.registry.workers.values()):
            self._register_producer(handle.identity, handle.actor_id, handle.incarnation)
        self.producer.resend()
        for handle in list(self.registry.workers.values()):
            if handle.ready:
                self._to_worker(handle, Envelope("chain_restarted", "node", handle.actor_id, 0))

    def _drain_chain_replies(self) -> list[Envelope]:
        """Take acks (and return other replies) from the chain socket."""
        others: list[Envelope] = []
        while True:
            try:
                frame = self.chain.recv(zmq.NOBLOCK)
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
            else:
                others.append(env)

    # ---- work off the loop ------------------------------------------------------------------

    def _compile_then(self, manifests: list, then: Callable[[Exception | None], None]) -> None:
        """Make sure these manifests' components are compiled and fit their grants, then call
        `then(error or None)` in the loop. Compiling a large component takes seconds (a Python
        actor: 10-30 s), so uncached ones compile on a thread while the node keeps serving."""
        from ..worker.component import check_actor_abi, compile_component, new_engine

        def check() -> None:
            for manifest in manifests:
                check_actor_abi(self.components[manifest.component], granted_types(manifest.handlers),
                                manifest.source)

        missing = sorted({m.component for m in manifests if m.component not in self.components})
        if not missing:
            try:
                check()
            except TheaterError as exc:
                then(exc)
                return
            then(None)
            return
        engine = self._engine = self._engine or new_engine()

        def work() -> Callable[[], None]:
            compiled = {path: compile_component(path, engine) for path in missing}

            def finish() -> None:
                self.components.update(compiled)
                check()
            return finish

        def run() -> None:
            result: Callable[[], None] | Exception
            try:
                result = work()
            except Exception as exc:  # handed to the loop, which reports it to whoever asked
                result = exc
            self._finished.append((then, result))
            try:
                self._wake_w.send(b"c")
            except OSError:
                pass

        log.info("compiling %s off the loop", ", ".join(str(p) for p in missing))
        threading.Thread(target=run, name="compile", daemon=True).start()

    def _run_finished(self) -> None:
        while self._finished:
            then, result = self._finished.popleft()
            if isinstance(result, Exception):
                then(result)
                continue
            try:
                result()
            except TheaterError as exc:
                then(exc)
                continue
            then(None)

    # ---- timers -----------------------------------------------------------------------

    def _after(self, seconds: float, callback: Callable[[], None]) -> _Timer:
        """Run `callback` from the loop in `seconds` (clamped to 0 .. MAX_SETTING ms: a poll timeout
        beyond 2**31 ms, or a non-finite one, would stop the loop)."""
        seconds = min(max(seconds, 0.0), MAX_SETTING / 1000) if seconds == seconds else 0.0
        timer = _Timer(time.monotonic() + seconds, next(self._timer_seq), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].deadline <= now:
            timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.callback()

    # ---- supervisors: events in, actions out --------------------------------------------

    def _enqueue(self, sup_path: str, event: ev.Event) -> None:
        self.queue.append((sup_path, event))

    def _drain(self) -> None:
        while self.queue:
            sup_path, event = self.queue.popleft()
            entry = self.supervisors.get(sup_path)
            if entry is None:
                continue
            for action in entry.sup.handle(event, time.monotonic()):
                self._execute(action)

    def _execute(self, action: ev.Action) -> None:
        if isinstance(action, ev.StartChild):
            self._start_child(action)
        elif isinstance(action, ev.StopChild):
            self._stop_child(action)
        elif isinstance(action, ev.Post):
            if action.delay > 0:
                self._after(action.delay, partial(self._enqueue, action.supervisor, action.event))
            else:
                self._enqueue(action.supervisor, action.event)
        elif isinstance(action, ev.Report):
            self._report(action)
        elif isinstance(action, ev.SupervisorStarted):
            self._supervisor_started(action.supervisor)
        elif isinstance(action, ev.SupervisorExited):
            self._supervisor_exited(action)
        elif isinstance(action, ev.Reply):
            self._api_reply(action)

    def _report(self, r: ev.Report) -> None:
        self._notify_owner(r)
        child = f" child={r.child_id}" if r.child_id else ""
        reason = f" reason={r.reason}" if r.reason else ""
        extra = "".join(f" {k}={v}" for k, v in r.data.items())
        level = logging.WARNING if r.context in ("start_error", "reached_max_restart_intensity", "shutdown_error") \
            else logging.INFO
        log.log(level, "supervisor %s: %s%s%s%s", r.supervisor, r.context, child, reason, extra)
        data = {"supervisor": r.supervisor, "child": r.child_id,
                "reason": r.reason.to_plain() if r.reason else None, **r.data}
        if r.child_id:
            handle = self.registry.workers.get(f"{r.supervisor}/{r.child_id}")
            if handle is not None:
                data["pid"] = handle.process.pid
        chain_id = f"supervisor:{r.supervisor}"
        if chain_id not in self._registrations:
            self._register_chain(chain_id, r.supervisor, "supervisor")
        self._record(chain_id, 1, f"supervisor.{r.context}", data)

    def _register_chain(self, chain_id: str, path: str, name: str) -> None:
        """Tell the writer a chain's path and name (kept, to tell a restarted writer again)."""
        body = {"actor_id": chain_id, "path": path, "name": name}
        self._registrations[chain_id] = body
        self._send_chain(Envelope("register", "node", "chain", 0, body))

    def _record(self, actor_id: str, incarnation: int, event_type: str, data: dict) -> None:
        """Buffer one event; the loop flushes a batch before it waits (and keeps it until acknowledged)."""
        self.producer.add([actor_id, incarnation, event_type, time.time_ns(), msgpack.packb(data, use_bin_type=True)])

    def _supervisor_started(self, path: str) -> None:
        entry = self.supervisors[path]
        entry.started = True
        if entry.owner is not None:
            return
        if entry.parent is None:
            log.info("tree %s is up: %d actor(s) running", path, len(self.registry.workers))
            self.root_up = True
            self._tell_ready()
        else:
            self._enqueue(entry.parent, ev.ChildStarted(entry.child_id, entry.incarnation))

    def _supervisor_exited(self, action: ev.SupervisorExited) -> None:
        entry = self.supervisors.pop(action.supervisor)
        if entry.stop_timer is not None:
            entry.stop_timer.cancelled = True
        if entry.owner is not None:
            self._owned_supervisor_exited(entry, action)
            return
        if entry.parent is not None:
            if action.during_start:
                self._enqueue(entry.parent, ev.ChildStartFailed(entry.child_id, action.reason))
            else:
                self._enqueue(entry.parent, ev.ChildExited(entry.child_id, entry.incarnation, action.reason))
            return
        # the root is gone: the node's work is over
        if self.stopping:
            self.exit_code, self.exit_message = 0, "tree stopped"
        else:
            context = action.context
            why = {"reached_max_restart_intensity": "reached its maximum restart intensity "
                   f"({entry.sup.flags.intensity} restarts in {entry.sup.flags.period} s)",
                   "auto_shutdown": "shut down automatically (a significant child ended)"}.get(context, str(action.reason))
            self._give_up(f"root supervisor {action.supervisor!r} gave up: {why}")
            return
        if self.on_ready:
            self.on_ready(self.exit_message)
            self.on_ready = None

    def _give_up(self, why: str) -> None:
        """The node's work is over with an error: the loop ends, `up` (if it still waits) and `down`
        waiters hear `why`, the node exits 1."""
        self.exit_code, self.exit_message = 1, why
        log.error(why)
        if self.on_ready:
            self.on_ready(why)
            self.on_ready = None

    # ---- starting and stopping children -------------------------------------------------

    def _start_child(self, a: ev.StartChild) -> None:
        path = f"{a.supervisor}/{a.child_id}"
        incarnation = self.registry.next_incarnation(path)
        if a.spec.type is ChildType.SUPERVISOR:
            entry = _SubSupervisor(Supervisor(path, a.spec), a.supervisor, a.child_id, incarnation)
            self.supervisors[path] = entry
            self._enqueue(path, ev.Start())
            return
        manifest = a.spec.manifest
        assert manifest is not None  # a worker's spec has one (ChildSpec's invariant)
        compiled = self.components[manifest.component]
        new_ports, port_problem = self.http.for_child(of_manifest(a.spec, path),
                                                      running=lambda p: p in self.registry.workers)
        if port_problem is not None:  # a child started after `up` whose port is taken
            self._enqueue(a.supervisor, ev.ChildStartFailed(a.child_id, ExitReason(ReasonKind.ABNORMAL, port_problem)))
            return
        for lst in new_ports:
            self._http_open(lst, None)
        actor_id = self.registry.actor_id_for(path)
        if incarnation == 1:
            self._register_chain(actor_id, path, manifest.name)
        cfg = WorkerConfig(
            home=self.home, node_pid=os.getpid(), actor_id=actor_id, path=path, name=manifest.name,
            incarnation=incarnation, restart=a.restart, artifact=compiled.artifact,
            component_hash=compiled.content_hash, initial_state=manifest.initial_state, handlers=manifest.handlers,
            imports=compiled.imports, component_path=str(compiled.source),
            max_unacked_events=self.max_unacked_events, token=new_token(), writer_proof=self.secrets.writer_proof,
            record=os.environ.get("THEATER_OTP_RECORD", "1") != "0",
            durable_effects=os.environ.get("THEATER_OTP_DURABLE_EFFECTS", "1") != "0",
            limits=manifest.limits,
        )
        self._register_producer(cfg.identity, actor_id, incarnation)
        try:
            process = self.launcher.start_worker(cfg)
        except OSError as exc:
            self._enqueue(a.supervisor, ev.ChildStartFailed(a.child_id, ExitReason(ReasonKind.ABNORMAL, f"could not start process: {exc}")))
            return
        handle = WorkerHandle(path=path, supervisor=a.supervisor, child_id=a.child_id, actor_id=actor_id,
                              incarnation=incarnation, spec=a.spec, process=process, identity=cfg.identity,
                              durable_effects=cfg.holds_effects)
        self.registry.add(handle)
        self.poller.register(process.sentinel, zmq.POLLIN)
        self._attach_actor_supervisor(handle)  # before init: an actor may spawn children from init
        handle.start_timer = self._after(START_TIMEOUT_S, partial(self._start_timed_out, handle))

    def _start_timed_out(self, handle: WorkerHandle) -> None:
        if not handle.ready and self.registry.workers.get(handle.path) is handle:
            log.error("%s did not become ready within %.0f s: killing it", handle.path, START_TIMEOUT_S)
            handle.process.kill()

    def _register_producer(self, identity: bytes, actor_id: str, incarnation: int) -> None:
        """Tell the writer that `identity` may write `actor_id`'s chain for `incarnation`, and nothing else."""
        self._send_chain(Envelope("producer", "node", "chain", 0,
                                  {"identity": identity, "actor_id": actor_id, "incarnation": incarnation}))

    def _send_chain(self, env: Envelope) -> None:
        """A registration for the writer: queued while it is away (SNDHWM 0), never dropped."""
        self.chain.send(encode(env), zmq.NOBLOCK)

    def _stop_child(self, a: ev.StopChild) -> None:
        path = f"{a.supervisor}/{a.child_id}"
        owned = self.supervisors.get(path)
        if owned is not None and owned.owner is None:
            self._stop_supervisor_child(path, a)
            return
        handle = self.registry.workers.get(path)
        if handle is None or handle.incarnation != a.incarnation:
            # already reaped: its ChildExited is queued or was consumed; nothing to signal
            return
        if owned is not None:
            # an actor that supervises: its children stop first, then the actor itself
            owned.on_exit = lambda: self._signal_stop(handle, a)
            self._enqueue(path, ev.Stop(SHUTDOWN))
            return
        self._signal_stop(handle, a)

    def _signal_stop(self, handle: WorkerHandle, a: ev.StopChild) -> None:
        if self.registry.workers.get(handle.path) is not handle:
            return
        kind = a.shutdown.kind
        if kind == "brutal_kill":
            handle.process.kill()
            return
        handle.process.signal(signal.SIGTERM)
        if kind == "timeout":
            handle.stop_timer = self._after(a.shutdown.ms / 1000, partial(self._stop_timed_out, handle))

    def _stop_timed_out(self, handle: WorkerHandle) -> None:
        if self.registry.workers.get(handle.path) is handle:
            log.warning("%s (pid %d) ignored the polite stop: killing it", handle.path, handle.process.pid)
            handle.process.kill()

    def _stop_supervisor_child(self, path: str, a: ev.StopChild) -> None:
        entry = self.supervisors[path]
        self._enqueue(path, ev.Stop(SHUTDOWN))
        if a.shutdown.kind == "brutal_kill":
            self._kill_subtree(path)
        elif a.shutdown.kind == "timeout":
            entry.stop_timer = self._after(a.shutdown.ms / 1000, lambda: self._kill_subtree(path))

    def _kill_subtree(self, path: str) -> None:
        for handle in list(self.registry.workers.values()):
            if handle.path.startswith(path + "/"):
                handle.process.kill()

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        self.poller.unregister(handle.process.sentinel)
        self.registry.remove(handle)
        for timer in (handle.stop_timer, handle.start_timer):
            if timer is not None:
                timer.cancelled = True
        code = handle.process.exitcode()
        crash = self._take_crash_report(handle.process.pid)
        reason = classify_exit(code, crash)
        handle.process.release()
        log.info("%s (pid %d) exited: %s", handle.path, handle.process.pid, reason)
        self._record(handle.actor_id, handle.incarnation, "lifecycle.exited",
                     {"pid": handle.process.pid, "exit_code": code, "reason": reason.to_plain()})
        self._worker_synced(handle.identity)  # it flushed on its way out, or it died: nothing to wait for
        self._send_chain(Envelope("unproducer", "node", "chain", 0, {"identity": handle.identity,
                                                                     "actor_id": handle.actor_id,
                                                                     "incarnation": handle.incarnation}))
        dropped = self.outbox.drop(handle.identity)
        if dropped:
            log.warning("%s: %d message(s) it sent were not delivered: the events of the calls that sent them "
                        "were not stored before it exited", handle.path, len(dropped))
        self._close_channels_of(handle)
        if handle.ready and handle.path in self.http.targets:  # the requests it held: 503 or 500
            self._send_gateway(Envelope("unroute", "node", "gateway", 0,
                                        {"target": handle.path, "identity": handle.identity,
                                         "exit": reason.kind.value, "reason": f"exited ({reason})"}))
        for corr, pending in list(self.pending.items()):
            if pending.target is handle:
                del self.pending[corr]
                self._answer(pending, {"error": f"actor {handle.path} exited before replying ({reason})",
                                       "exit": reason.kind.value})
        if handle.ready:
            report: ev.Event = ev.ChildExited(handle.child_id, handle.incarnation, reason)
        else:
            report = ev.ChildStartFailed(handle.child_id, reason)
        owned = self.supervisors.get(handle.path)
        if owned is not None and owned.owner == handle.path:
            # its children go down before its parent hears of its exit (OTP: links)
            owned.on_exit = lambda: self._enqueue(handle.supervisor, report)
            self._enqueue(handle.path, ev.Stop(SHUTDOWN))
        else:
            self._enqueue(handle.supervisor, report)

    def _take_crash_report(self, pid: int) -> dict | None:
        path = self.home.crash_dir / f"{pid}.msgpack"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        try:
            report = msgpack.unpackb(data, raw=False)
            return report if isinstance(report, dict) else None
        except Exception:
            log.error("unreadable crash report %s", path)
            return None

    # ---- worker messages ----------------------------------------------------------------

    def _on_worker_message(self, ident: bytes, env: Envelope) -> None:
        handle = self.registry.by_identity.get(ident)
        if handle is None:
            if ident == self.secrets.gateway:
                self._on_gateway(env)
            else:  # a late frame from a reaped incarnation, or a process the node did not start
                self.dropped_frames += 1
                if self.dropped_frames == 1 or self.dropped_frames % 1000 == 0:
                    log.warning("dropped %r from %r: not a live worker of this node (%d frame(s) dropped so far)",
                                env.kind, ident[:64], self.dropped_frames)
            return
        kind = env.kind
        if kind == "ready":
            if not handle.ready:
                handle.ready = True
                if handle.start_timer is not None:
                    handle.start_timer.cancelled = True
                backlog, handle.backlog = handle.backlog, []
                for frame in backlog:  # already counted in its mailbox when it was queued
                    self._send_now(handle, frame)
                if handle.path in self.http.targets:  # requests for its port may go to it now
                    self._route(handle)
                self._enqueue(handle.supervisor, ev.ChildStarted(handle.child_id, handle.incarnation))
        elif kind == "supervise":
            self._on_supervise(handle, env)
        elif kind == "send":
            target, why = self.registry.resolve(env.to, handle.path)
            if target is None:
                error: str | None = why
            elif not isinstance(env.body, bytes):
                error = "a message must be bytes"
            else:
                error = self._admit(target, env.body)
                message = Envelope("send", handle.actor_id, target.actor_id, 0, env.body)
                if error is None and handle.durable_effects and env.corr:  # leaves on the sender's `release`
                    self.outbox.hold(ident, HeldSend(env.corr, target, message, len(env.body)))
                elif error is None and not self._to_worker(target, message):
                    error = f"actor {target.path} is not reachable"
            if env.corr:  # the sender waits for this answer: its send returns the error
                self._to_worker(handle, Envelope("sent", "node", handle.actor_id, env.corr,
                                                 {"ok": None} if error is None else {"error": error}))
            elif error is not None:
                self._to_worker(handle, Envelope("undeliverable", "node", handle.actor_id, 0,
                                                 {"to": env.to, "error": error}))
        elif kind == "release":
            self._release(handle, ident, env.body)
        elif kind == "took":
            self._took(handle, env.body)
        elif kind == "http_listen":
            self._on_http_listen(handle, env)
        elif kind == "http_unlisten":
            self._on_http_unlisten(handle, env)
        elif kind in ("channel_open", "channel_send", "channel_close"):
            self._on_channel(handle, ident, env)
        elif kind == "request":
            target, why = self.registry.resolve(env.to, handle.path)
            pending = _PendingRequest("worker", ident, env.corr, target)  # type: ignore[arg-type]
            if target is None:
                self._answer(pending, {"error": why})
            elif (refusal := self._admit(target, env.body)) is not None:
                self._answer(pending, {"error": refusal})
            else:
                self._forward_request(pending, handle.actor_id, env.body, None)
        elif kind == "synced":
            self._worker_synced(ident, env.corr)
        elif kind == "reply":
            answered = self.pending.get(env.corr)
            if answered is not None and answered.target is handle:  # only the asked worker answers it
                del self.pending[env.corr]
                if answered.timer is not None:
                    answered.timer.cancelled = True
                body = env.body if isinstance(env.body, dict) else {"error": "malformed reply"}
                if answered.channel is not None:
                    body = self._channel_answered(answered, body)
                self._answer(answered, body)
        else:
            log.error("dropped unknown envelope kind %r from %s", kind, handle.path)

    # ---- channels (node/channels.py keeps the table) -----------------------------------------

    def _on_channel(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """open / send / close from a worker; every one is answered (a `reply` for open, `sent`
        for the others) so the actor's host call returns the outcome."""
        body = env.body if isinstance(env.body, dict) else {}
        msg = body.get("msg", b"")
        if env.kind == "channel_open":
            target, why = self.registry.resolve(env.to, handle.path)
            pending = _PendingRequest("worker", ident, env.corr, target)  # type: ignore[arg-type]
            if target is None or not isinstance(msg, bytes):
                self._answer(pending, {"error": why or "an initial message must be bytes"})
            elif (refusal := self._admit(target, msg)) is not None:
                self._answer(pending, {"error": refusal})
            else:
                channel_id = self.channels.new_id()
                pending.channel = (channel_id, handle)
                self._forward_request(pending, handle.actor_id, {"channel": channel_id, "msg": msg},
                                      DEFAULT_REQUEST_TIMEOUT_MS, kind="channel_open")
            return
        channel_id = body["channel"] if isinstance(body.get("channel"), str) else ""
        peer, error = self.channels.route(channel_id, handle)
        if peer is not None and env.kind == "channel_send":
            if not isinstance(msg, bytes):
                error = "a channel message must be bytes"
            else:
                error = self._admit(peer, msg)
                if error is None and not self._to_worker(peer, Envelope("channel_message", handle.actor_id,
                                                                        peer.actor_id, 0,
                                                                        {"channel": channel_id, "msg": msg})):
                    error = f"actor {peer.path} is not reachable"
        elif peer is not None:  # channel_close
            self.channels.remove(str(channel_id))
            self._to_worker(peer, Envelope("channel_close", handle.actor_id, peer.actor_id, 0,
                                           {"channel": channel_id, "reason": f"closed by {handle.path}"}))
        self._to_worker(handle, Envelope("sent", "node", handle.actor_id, env.corr,
                                         {"ok": None} if error is None else {"error": error}))

    def _channel_answered(self, pending: _PendingRequest, body: dict) -> dict:
        """The target answered a channel-open: register the channel if it accepted (and the opener
        still runs); the opener's answer is the channel id or the refusal."""
        assert pending.channel is not None
        channel_id, opener = pending.channel
        target = pending.target
        accept = body.get("ok") if isinstance(body.get("ok"), dict) else None
        if accept is None:
            return {"error": str(body.get("error", "malformed answer to a channel open"))}
        if not accept.get("accepted"):
            message = accept.get("message")
            why = f": {bytes(message).decode('utf-8', 'replace')}" if isinstance(message, bytes) and message else ""
            return {"error": f"{target.path} refused the channel{why}"}
        if self.registry.workers.get(opener.path) is not opener:  # the opener ended meanwhile
            self._to_worker(target, Envelope("channel_close", "node", target.actor_id, 0,
                                             {"channel": channel_id, "reason": f"{opener.path} ended"}))
            return {"error": "the opener ended"}
        self.channels.add(channel_id, opener, target)
        return {"ok": channel_id}

    def _close_channels_of(self, handle: WorkerHandle) -> None:
        for channel_id, peer in self.channels.close_all(handle):
            self._to_worker(peer, Envelope("channel_close", "node", peer.actor_id, 0,
                                           {"channel": channel_id, "reason": f"{handle.path} ended"}))

    # ---- HTTP (the gateway process holds the ports; node/http.py, http/gateway.py) -------------

    def _start_gateway(self) -> None:
        self.gateway = self.launcher.start_gateway(GatewayConfig(self.home, os.getpid(), self.http.all(),
                                                                 self.secrets.gateway))
        self.poller.register(self.gateway.sentinel, zmq.POLLIN)

    def _on_gateway_exit(self) -> None:
        """A gateway that ended is started again (its ports reopen); one that could not bind exits 2
        and is not (the port is someone else's: logged)."""
        assert self.gateway is not None
        self.gateway_ready = False
        for lst, waiter in self.http_opening.values():  # asked of the gateway that ended: asked again
            self.http_queued.append((lst, waiter))
        self.http_opening.clear()
        code = self.gateway.exitcode()
        self.poller.unregister(self.gateway.sentinel)
        self.gateway.release()
        self.gateway = None
        if self.stopping:
            return
        if code == 2:
            if self.on_ready:  # `up` still waits: it fails, naming the cause
                self._give_up("the HTTP gateway could not open the tree's ports (node.log says which and why)")
                return
            # a port taken meanwhile by another process: tried again after a growing pause
            self.gateway_failures += 1
            delay = GATEWAY_RETRY.delay_s(self.gateway_failures - 1)
            log.error("http gateway could not open its ports (%d time(s) in a row; the line above says why): "
                      "trying again in %.1f s", self.gateway_failures, delay)
            self._after(delay, self._restart_gateway)
            return
        log.error("http gateway exited (%s): starting a new one", code)
        self._start_gateway()

    def _restart_gateway(self) -> None:
        if self.gateway is None and not self.stopping:
            self._start_gateway()

    def _send_gateway(self, env: Envelope) -> None:
        if not self.gateway_ready:  # it learns every route when it says it is ready
            return
        try:
            self.router.send_multipart([self.secrets.gateway, encode(env)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the gateway is gone: its clients' connections went with it
            log.warning("could not answer the http gateway: %s", exc)

    def _tell_ready(self) -> None:
        """`up` hears the tree is ready once the root has started and, when the tree serves HTTP,
        the gateway listens on its ports: a client right after `up --detach` is not refused."""
        if self.on_ready and self.root_up and (self.gateway is None or self.gateway_ready):
            self.on_ready(None)
            self.on_ready = None

    def _on_gateway(self, env: Envelope) -> None:
        """The gateway is up (a new one after a crash too): it learns which worker serves each path,
        and the ports asked for meanwhile are opened. Or: it opened (or could not open) a port."""
        if env.kind == "listened":
            self._http_listened(env)
            return
        if env.kind != "http_ready":
            log.error("dropped %r from the http gateway", env.kind)
            return
        log.info("http gateway ready: ports %s", (env.body or {}).get("ports") if isinstance(env.body, dict) else "?")
        self.gateway_ready = True
        self.gateway_failures = 0
        for path in self.http.targets:
            handle = self.registry.workers.get(path)
            if handle is not None and handle.ready:
                self._route(handle)
        queued, self.http_queued = self.http_queued, []
        for lst, waiter in queued:
            self._http_open(lst, waiter)
        self._tell_ready()

    def _route(self, handle: WorkerHandle) -> None:
        """Tell the gateway that `handle`'s worker serves requests for its tree path now."""
        self._send_gateway(Envelope("route", "node", "gateway", 0, {"target": handle.path, "identity": handle.identity}))

    def _http_open(self, lst: Listener, waiter: tuple[bytes, int] | None) -> None:
        """Ask the gateway to open `lst` (started first if none runs); `waiter` (a worker's
        identity and corr) hears the port or the error."""
        if self.gateway is None:
            self._start_gateway()
        if not self.gateway_ready:
            self.http_queued.append((lst, waiter))
            return
        corr = next(self._corr)
        self.http_opening[corr] = (lst, waiter)
        self._send_gateway(Envelope("listen", "node", "gateway", corr, lst.to_plain()))

    def _http_listened(self, env: Envelope) -> None:
        opening = self.http_opening.pop(env.corr, None)
        if opening is None:
            return
        lst, waiter = opening
        body = env.body if isinstance(env.body, dict) else {}
        port = body.get("port")
        handle = self.registry.by_identity.get(waiter[0]) if waiter is not None else self.registry.workers.get(lst.target)
        if not isinstance(port, int):
            why = f"cannot listen on {lst.host}:{lst.asked_port or lst.port}: {body.get('error', 'no answer')}"
            log.error("%s: %s", lst.target, why)
            if waiter is not None and handle is not None:
                self._to_worker(handle, Envelope("reply", "node", handle.actor_id, waiter[1], {"error": why}))
            return
        lst = dataclasses.replace(lst, port=port)
        self.http.add(lst, waiter[0] if waiter is not None else None)
        log.info("%s serves %s on %s:%d", lst.target, lst.kind.value, lst.host, port)
        if handle is not None and handle.ready:
            self._route(handle)
        if waiter is not None and handle is not None:
            self._to_worker(handle, Envelope("reply", "node", handle.actor_id, waiter[1], {"ok": port}))

    def _on_http_listen(self, handle: WorkerHandle, env: Envelope) -> None:
        """An http-framework start-server: a port kept for this path, a new one, or why not."""
        body = env.body if isinstance(env.body, dict) else {}
        try:
            asked = body["port"]
            if not isinstance(asked, int) or not 0 <= asked <= 65535 or not isinstance(body["host"], str):
                raise TypeError("port and host")
            lst = Listener(port=asked, host=body["host"], target=handle.path, manifest=str(handle.spec.manifest.source
                           if handle.spec.manifest else handle.path), max_body_bytes=int(body["max_body_bytes"]),
                           max_header_bytes=int(body["max_header_bytes"]), timeout_ms=int(body["timeout_ms"]),
                           max_connections=int(body["max_connections"]), hold_ms=int(body["hold_ms"]),
                           kind=ListenerKind.FRAMEWORK, asked_port=asked)
        except (KeyError, TypeError, ValueError) as exc:
            self._to_worker(handle, Envelope("reply", "node", handle.actor_id, env.corr,
                                             {"error": f"malformed http_listen: {exc}"}))
            return
        kept = self.http.framework_port(handle.path, handle.identity, asked,
                                        running=lambda p: p in self.registry.workers,
                                        alive=lambda ident: ident in self.registry.by_identity)
        if isinstance(kept, str):
            self._to_worker(handle, Envelope("reply", "node", handle.actor_id, env.corr, {"error": kept}))
        elif kept is not None:
            if handle.ready:
                self._route(handle)
            self._to_worker(handle, Envelope("reply", "node", handle.actor_id, env.corr, {"ok": kept.port}))
        else:
            self._http_open(lst, (handle.identity, env.corr))

    def _on_http_unlisten(self, handle: WorkerHandle, env: Envelope) -> None:
        """An http-framework stop-server: the port closes (only the path that serves it may)."""
        port = env.body.get("port") if isinstance(env.body, dict) else None
        lst = self.http.by_port.get(port) if isinstance(port, int) else None
        if lst is None or lst.target != handle.path or lst.kind is not ListenerKind.FRAMEWORK:
            answer: dict = {"error": f"this actor serves no http-framework port {port}"}
        else:
            self.http.remove(lst.port)
            self._send_gateway(Envelope("unlisten", "node", "gateway", 0, {"port": lst.port}))
            answer = {"ok": lst.port}
        self._to_worker(handle, Envelope("reply", "node", handle.actor_id, env.corr, answer))

    def _send_now(self, handle: WorkerHandle, env: Envelope) -> bool:
        try:
            self.router.send_multipart([handle.identity, encode(env)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (not connected yet / gone) or full
            log.warning("could not deliver %s to %s: %s", env.kind, handle.path, exc)
            return False

    def _admit(self, target: WorkerHandle, body: object) -> str | None:
        """Whether a message may go into `target`'s mailbox: None, or the refusal for its sender
        (the message is over the target's `message_bytes`, or its mailbox is full). Refusals are
        counted on the target."""
        limits = target.limits
        size = len(body) if isinstance(body, (bytes, bytearray)) else 0
        refusal = None
        if size > limits.message_bytes:
            refusal = (f"message of {size} bytes is over {target.path}'s limit message_bytes = "
                       f"{limits.message_bytes}")
        elif target.queued + target.reserved >= limits.mailbox:
            refusal = (f"mailbox of {target.path} is full ({target.queued + target.reserved} messages waiting; "
                       f"limit mailbox = {limits.mailbox})")
        elif target.queued_bytes + target.reserved_bytes + size > limits.inbox_bytes:
            refusal = (f"mailbox of {target.path} is full ({target.queued_bytes + target.reserved_bytes} bytes "
                       f"waiting; limit a quarter of memory_bytes = {limits.inbox_bytes})")
        if refusal is not None:
            target.refused += 1
        return refusal

    def _release(self, handle: WorkerHandle, ident: bytes, through: object) -> None:
        """`handle`'s events are stored through its send `through`: those sends go to their targets
        (the target's current incarnation if it restarted meanwhile)."""
        if not isinstance(through, int):
            log.error("dropped a malformed release from %s", handle.path)
            return
        for held in self.outbox.release(ident, through):
            target = self.registry.workers.get(held.target.path)
            if target is None or target.actor_id != held.target.actor_id or not self._to_worker(target, held.env):
                self._to_worker(handle, Envelope("undeliverable", "node", handle.actor_id, 0,
                                                 {"to": held.target.path,
                                                  "error": f"actor {held.target.path} is not reachable"}))

    def _took(self, handle: WorkerHandle, body: object) -> None:
        """The worker took messages out of its mailbox: [count, bytes]."""
        if isinstance(body, list) and len(body) == 2 and all(isinstance(v, int) for v in body):
            handle.queued = max(0, handle.queued - body[0])
            handle.queued_bytes = max(0, handle.queued_bytes - body[1])

    def _to_worker(self, handle: WorkerHandle, env: Envelope) -> bool:
        if not handle.ready and env.kind not in ("reply", "undeliverable", "sent"):
            # frames others send to a starting actor wait (messages bounded by its mailbox, which
            # _admit checks); answers to its own calls cannot
            if len(handle.backlog) >= handle.limits.mailbox + MAX_BACKLOG:
                log.warning("dropped %s for %s: it is still starting and %d frames wait", env.kind, handle.path,
                            len(handle.backlog))
                return False
            handle.backlog.append(env)
        elif not self._send_now(handle, env):
            return False
        if env.kind in MAILBOX_KINDS:  # a message in the mailbox until the worker says it took it
            handle.queued += 1
            handle.queued_bytes += message_size(env)
        return True

    def _forward_request(self, pending: _PendingRequest, sender: str, body: Any, timeout_ms: int | None,
                         kind: str = "request") -> None:
        corr = next(self._corr)
        if not self._to_worker(pending.target, Envelope(kind, sender, pending.target.actor_id, corr, body)):
            self._answer(pending, {"error": f"actor {pending.target.path} is not reachable"})
            return
        self.pending[corr] = pending
        if timeout_ms:
            def expire(c=corr):
                p = self.pending.pop(c, None)
                if p is not None:
                    self._answer(p, {"error": f"no reply from {p.target.path} within {timeout_ms} ms"})
            pending.timer = self._after(timeout_ms / 1000, expire)

    def _answer(self, pending: _PendingRequest, body: dict) -> None:
        if pending.origin == "cli":
            if "error" in body:
                self._control_error(pending.origin_ident, pending.origin_corr, "request_failed", str(body["error"]))
            else:
                self._control_reply(pending.origin_ident, pending.origin_corr, body)
            return
        origin = self.registry.by_identity.get(pending.origin_ident)
        if origin is not None:
            self._to_worker(origin, Envelope("reply", "node", origin.actor_id, pending.origin_corr, body))

    # ---- control socket (CLI) -------------------------------------------------------------

    def _control_reply(self, ident: bytes, corr: int, result: Any) -> None:
        try:
            self.control.send_multipart([ident, encode(Envelope("ok", "node", "cli", corr, result))], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer a control request: %s", exc)

    def _control_error(self, ident: bytes, corr: int, code: str, message: str) -> None:
        try:
            self.control.send_multipart(
                [ident, encode(Envelope("error", "node", "cli", corr, {"code": code, "message": message}))], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer a control request: %s", exc)

    def _on_control_message(self, ident: bytes, env: Envelope) -> None:
        """One command from the control socket: looked up in control.COMMANDS, its arguments
        checked there, then its handler (`_cmd_<name>`, bound once in __init__) runs. An unknown
        command or bad arguments are answered with an error; a handler that raises is answered
        by the fault boundary in _serve."""
        command = control.COMMANDS.get(control.command_name(env.kind))
        if command is None:
            self._control_error(ident, env.corr, "unknown_command", f"unknown command {env.kind[:80]!r}")
            return
        try:
            args = control.check(command, env.body if env.body is not None else {})
        except control.BadArguments as exc:
            self._control_error(ident, env.corr, "bad_request", str(exc))
            return
        self.control_handlers[command.name](ident, env.corr, args)

    def _cmd_ping(self, ident: bytes, corr: int, body: dict) -> None:
        self._control_reply(ident, corr, {"node_pid": os.getpid(), "home": str(self.home.root),
                                          "started_at": self.started_at, "stopping": self.stopping})

    def _cmd_sync(self, ident: bytes, corr: int, body: dict) -> None:
        """Reply once every event emitted so far, by this node and by every running worker, is
        durable, so a reader that syncs first sees what `tree` or a reply just showed it. A worker
        that does not answer within SYNC_WORKER_TIMEOUT_S (busy in a long call, paused) is not
        waited for any longer; the node's own events always are."""
        self.producer.flush()
        sid = next(self._corr)
        sync = _Sync(ident, corr, self.producer.batch_seq, set())
        for handle in list(self.registry.workers.values()):
            if handle.ready and self._to_worker(handle, Envelope("sync", "node", handle.actor_id, sid)):
                sync.workers.add(handle.identity)
        self.syncs[sid] = sync
        if sync.workers:
            sync.timer = self._after(SYNC_WORKER_TIMEOUT_S, lambda: self._stop_waiting_for_workers(sid))
        self._answer_syncs()

    def _stop_waiting_for_workers(self, sid: int) -> None:
        sync = self.syncs.get(sid)
        if sync is not None and sync.workers:
            late = [h.path for h in self.registry.workers.values() if h.identity in sync.workers]
            log.info("sync: not waiting any longer for %s", ", ".join(late) or "exited workers")
            sync.workers.clear()
            self._answer_syncs()

    def _worker_synced(self, identity: bytes, sid: int | None = None) -> None:
        """A worker's events are durable (sid: for that sync; None: for all, it exited)."""
        for key, sync in self.syncs.items():
            if sid is None or key == sid:
                sync.workers.discard(identity)
        self._answer_syncs()

    def _answer_syncs(self) -> None:
        for sid, sync in list(self.syncs.items()):
            if not sync.workers and self.producer.durable_through(sync.batch):
                del self.syncs[sid]
                if sync.timer is not None:
                    sync.timer.cancelled = True
                self._control_reply(sync.ident, sync.corr, {"batch": sync.batch})

    def _cmd_tree(self, ident: bytes, corr: int, body: dict) -> None:
        self._control_reply(ident, corr, self.tree_snapshot())

    def _cmd_down(self, ident: bytes, corr: int, body: dict) -> None:
        self.down_waiters.append((ident, corr))
        self.begin_shutdown()

    def _cmd_resolve(self, ident: bytes, corr: int, body: dict) -> None:
        path = self.registry.resolve_path(body["target"])
        if isinstance(path, tuple):
            self._control_error(ident, corr, "not_found", path[1])
            return
        handle = self.registry.workers.get(path)
        self._control_reply(ident, corr, {"path": path, "actor_id": self.registry.actor_ids[path],
                                          "running": bool(handle and handle.ready)})

    def _target(self, ident: bytes, corr: int, body: dict) -> WorkerHandle | None:
        target, why = self.registry.resolve(body["target"])
        if target is None:
            self._control_error(ident, corr, "not_found" if "no actor" in why else "not_running", why)
        return target

    def _cmd_send(self, ident: bytes, corr: int, body: dict) -> None:
        target = self._target(ident, corr, body)
        payload = body["payload"]
        if target is None:
            return
        refusal = self._admit(target, payload)
        if refusal is not None:
            self._control_error(ident, corr, "refused", refusal)
        elif self._to_worker(target, Envelope("send", "cli", target.actor_id, 0, payload)):
            self._control_reply(ident, corr, {"delivered_to": target.path})
        else:
            self._control_error(ident, corr, "not_running", f"actor {target.path} is not reachable")

    def _cmd_request(self, ident: bytes, corr: int, body: dict) -> None:
        target = self._target(ident, corr, body)
        if target is None:
            return
        refusal = self._admit(target, body["payload"])
        if refusal is not None:
            self._control_error(ident, corr, "refused", refusal)
            return
        pending = _PendingRequest("cli", ident, corr, target)
        self._forward_request(pending, "cli", body["payload"], body["timeout_ms"])

    def _cmd_state(self, ident: bytes, corr: int, body: dict) -> None:
        target = self._target(ident, corr, body)
        if target is None:
            return
        pending = _PendingRequest("cli", ident, corr, target)
        self._forward_request(pending, "cli", None, 10_000, kind="state")

    # ---- the dynamic child API (§1.7) -----------------------------------------------------------

    def _supervisor_ref(self, ident: bytes, corr: int, ref: str) -> _SubSupervisor | None:
        if ref in self.supervisors:
            return self.supervisors[ref]
        matches = [p for p in self.supervisors if p.endswith("/" + ref)]
        if len(matches) == 1:
            return self.supervisors[matches[0]]
        why = f"{ref!r} is ambiguous: {', '.join(sorted(matches))}" if matches else f"no supervisor named {ref!r}"
        self._control_error(ident, corr, "not_found", why)
        return None

    def _api_request(self, ident: bytes, corr: int, entry: _SubSupervisor, make: Callable[[int], ev.Event]) -> None:
        req = next(self._api_req)
        self.api_waiters[req] = (ident, corr)
        self._enqueue(entry.sup.path, make(req))

    def _api_reply(self, r: ev.Reply) -> None:
        waiter = self.api_waiters.pop(r.req, None)
        if waiter is None:
            return
        if callable(waiter):
            waiter(r)
            return
        ident, corr = waiter
        if r.ok:
            value = r.value
            if isinstance(value, dict) and "id" in value:
                value = {**value, **self._child_view(r.supervisor, value["id"])}
            self._control_reply(ident, corr, {"ok": True, "result": value})
            return
        term = r.value
        code = term[0] if isinstance(term, tuple) else str(term)
        detail = term[1] if isinstance(term, tuple) and len(term) > 1 else None
        message = {"already_started": f"already_started: the child is running (incarnation {detail})",
                   "already_present": "already_present: a child with that id exists (not running); "
                                      "restart-child or delete-child it",
                   "running": "running: stop it first with terminate-child",
                   "restarting": "restarting: the child is between restart attempts",
                   "not_found": "not_found: no such child",
                   "simple_one_for_one": "simple_one_for_one: not supported for simple_one_for_one supervisors",
                   "start_failed": f"start_failed: {detail}"}.get(code, str(term))
        self._control_error(ident, corr, code, message)

    def _child_view(self, sup_path: str, child_id: str) -> dict:
        path = f"{sup_path}/{child_id}"
        handle = self.registry.workers.get(path)
        return {"path": path, "pid": handle.process.pid if handle else None,
                "actor_id": self.registry.actor_ids.get(path)}

    def _cmd_start_child(self, ident: bytes, corr: int, body: dict) -> None:
        from ..config.loader import parse_dynamic_child
        from ..node.boot import iter_workers

        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is None:
            return
        sup = entry.sup
        table = {k: v for k, v in body.items() if k in ("id", "manifest", "restart", "shutdown", "significant", "type")
                 and v is not None}
        try:
            if sup.simple:
                spec = None
                if table.get("manifest"):
                    spec = parse_dynamic_child({"id": "instance", "manifest": table["manifest"]}, "start-child",
                                               sup.flags)
            else:
                spec = parse_dynamic_child(table, "start-child", sup.flags)
        except TheaterError as exc:
            self._control_error(ident, corr, "invalid_child_spec", str(exc))
            return

        def compiled(error: Exception | None) -> None:
            if error is not None:
                self._control_error(ident, corr, "invalid_child_spec", str(error))
            elif entry.sup.path in self.supervisors:
                child = spec or sup.template
                assert child is not None  # a simple_one_for_one supervisor always has its template
                self._api_request(ident, corr, entry, lambda req: ev.StartChildRequest(req, child))
            else:
                self._control_error(ident, corr, "not_found", f"supervisor {entry.sup.path} stopped meanwhile")

        self._compile_then([w.manifest for w in iter_workers(spec)] if spec else [], compiled)

    def _cmd_terminate_child(self, ident: bytes, corr: int, body: dict) -> None:
        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is not None:
            self._api_request(ident, corr, entry, lambda req: ev.TerminateChildRequest(req, str(body["id"])))

    def _cmd_restart_child(self, ident: bytes, corr: int, body: dict) -> None:
        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is not None:
            self._api_request(ident, corr, entry, lambda req: ev.RestartChildRequest(req, str(body["id"])))

    def _cmd_delete_child(self, ident: bytes, corr: int, body: dict) -> None:
        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is not None:
            self._api_request(ident, corr, entry, lambda req: ev.DeleteChildRequest(req, str(body["id"])))

    def _cmd_which_children(self, ident: bytes, corr: int, body: dict) -> None:
        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is not None:
            rows = []
            for row in entry.sup.which_children():
                rows.append({**row, **self._child_view(entry.sup.path, row["id"])})
            self._control_reply(ident, corr, {"supervisor": entry.sup.path, "children": rows})

    def _cmd_count_children(self, ident: bytes, corr: int, body: dict) -> None:
        entry = self._supervisor_ref(ident, corr, str(body["supervisor"]))
        if entry is not None:
            self._control_reply(ident, corr, {"supervisor": entry.sup.path, **entry.sup.count_children()})

    # ---- the tree as data -------------------------------------------------------------------

    def tree_snapshot(self) -> dict:
        root = self.supervisors.get(self.tree.id)
        node = self._sup_node(self.tree.id, root.sup if root else None, self.tree, root, 0)
        node["node_pid"] = os.getpid()
        node["dropped_frames"] = self.dropped_frames
        return node

    def _sup_node(self, path: str, sup: Supervisor | None, spec: ChildSpec, entry: _SubSupervisor | None,
                  restarts: int) -> dict:
        status = "running" if entry and entry.started else ("restarting" if entry else "stopped")
        children = []
        if sup is not None:
            for child in sup.ordered_children():
                cpath = f"{path}/{child.spec.id}"
                if child.spec.type is ChildType.SUPERVISOR:
                    sub = self.supervisors.get(cpath)
                    children.append(self._sup_node(cpath, sub.sup if sub else None, child.spec, sub, child.restarts))
                else:
                    children.append(self._actor_node(cpath, child))
        return {"id": spec.id, "kind": "supervisor", "path": path, "pid": None, "status": status,
                "restarts": restarts, "strategy": spec.flags.strategy.value,
                "intensity": spec.flags.intensity, "period": spec.flags.period, "children": children}

    def _actor_node(self, path: str, child) -> dict:
        found = self.registry.workers.get(path)
        handle = found if found is not None and child.state is ChildState.RUNNING and \
            found.incarnation == child.incarnation else None
        status = {ChildState.RUNNING: "running", ChildState.STOPPING: "running",
                  ChildState.STOPPED: "stopped"}.get(child.state, "restarting")
        owned = self.supervisors.get(path)
        kids = []
        if owned is not None and owned.owner == path:
            kids = [self._actor_node(f"{path}/{c.spec.id}", c) for c in owned.sup.ordered_children()]
        return {"id": child.spec.id, "kind": "actor", "path": path,
                "pid": handle.process.pid if handle else None, "status": status, "restarts": child.restarts,
                "actor_id": self.registry.actor_ids.get(path), "name": child.spec.manifest.name,
                "manifest": str(child.spec.manifest.source), "version": child.spec.manifest.version,
                "restart": child.spec.restart.value, "incarnation": child.incarnation,
                "uptime": round(time.time() - handle.started_at, 3) if handle else None,
                "mailbox": handle.queued if handle else None, "refused": handle.refused if handle else None,
                "limits": child.spec.manifest.limits.to_plain(), "children": kids}
