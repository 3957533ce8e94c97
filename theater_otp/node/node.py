"""The node: builds its parts, runs the loop, and hands each inbound frame to the part whose job it is.

Module map (each part's own docstring says its job):
  loop.py        the poller, timers, signals, work handed back from threads
  chainlink.py   the chain-writer process, the node's own events, registrations, syncs
  workers.py     worker processes: start, stop, reap (registry.py: paths, ids, names, O(1) lookups)
  mail.py        the actor message path: admission, delivery, requests in flight, held sends, channels
  gateway.py     the HTTP gateway process and the ports it serves (http.py: the listener table)
  tree.py        the supervisors (pure state machines in supervision/) and the actions they return
  actor_supervision.py  supervisors owned by actors, asked through the tree's public api_call
  components.py  compiled components, compiling more off the loop
  control.py / commands.py  the control commands: arguments checked in one table, one handler each

Fault boundary: a frame from a worker or a control client that makes its
handler raise is logged with its origin and answered with an error; the loop
goes on.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from ..chain.producer import MAX_UNACKED_EVENTS
from ..chain.store import Durability
from ..cluster.settings import ClusterSettings
from ..config.model import ChildSpec
from ..home import Home
from ..protocol import MAX_FRAME, Envelope, encode, recv_routed
from ..protocol.trust import RunSecrets
from ..supervision import events as ev
from ..worker.component import CompiledComponent
from . import control
from .actor_supervision import ActorSupervisors
from .chainlink import ChainLink
from .cluster import ClusterLink
from .commands import HANDLERS, Asker, Services
from .components import Components
from .gateway import GatewayLink
from .hosting import Hosting
from .http import HttpListeners
from .http import listeners as http_listeners
from .launcher import Launcher
from .loop import Loop
from .mail import SENT_KINDS, Mail
from .metrics import MetricsEndpoint, NodeMetrics
from .registry import Registry, WorkerHandle
from .tree import SubSupervisor, SupervisionTree
from .workers import WorkerProcesses

log = logging.getLogger("theater_otp.node")

#: Most frames taken from one socket per loop turn (the others get their turn).
FRAMES_PER_TURN = 1000

#: What a worker's frame kind asks of the node -> which part handles it.
WorkerFrame = Callable[[WorkerHandle, bytes, Envelope], None]


class ControlAnswer:
    """An Asker over the control socket: one answer to (identity, corr)."""

    def __init__(self, sock: zmq.Socket, ident: bytes, corr: int):
        self.sock = sock
        self.ident = ident
        self.corr = corr

    def _send(self, env: Envelope) -> None:
        try:
            self.sock.send_multipart([self.ident, encode(env)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer a control request: %s", exc)

    def ok(self, result: Any) -> None:
        self._send(Envelope("ok", "node", "cli", self.corr, result))

    def error(self, code: str, message: str) -> None:
        self._send(Envelope("error", "node", "cli", self.corr, {"code": code, "message": message}))


class Node:
    """One node: a supervision tree of worker processes, the chain-writer, maybe the HTTP gateway."""

    def __init__(self, home: Home, tree: ChildSpec, components: dict[Path, CompiledComponent],
                 on_ready: Callable[[str | None], None] | None = None, durability: Durability = Durability.DISK,
                 metrics_address: tuple[str, int] | None = None, cluster: ClusterSettings | None = None):
        self.home = home
        self.spec = tree
        #: told once: None when the tree is up (and serving its ports), else why it failed
        self.on_ready = on_ready
        self.started_at = time.time()
        self.exit_code: int | None = None
        self.exit_message = ""
        self.stopping = False
        self.down_waiters: list[Asker] = []
        self.root_up = False
        #: frames on the router from identities that are not a live worker or the gateway
        self.dropped_frames = 0
        #: this run's identities and the writer's proof (protocol/trust.py), in memory only
        self.secrets = RunSecrets.new()
        self.loop = Loop()
        self.ctx = zmq.Context()
        self.router = self._bind(zmq.ROUTER, home.router_endpoint)
        self.control = self._bind(zmq.ROUTER, home.control_endpoint)
        self.launcher = Launcher()
        self.registry = Registry()
        self.chain = ChainLink(self.ctx, self.loop, home, self.secrets, durability, self.launcher, tree.flags,
                               self._give_up)
        self.components = Components(self.loop, components)
        #: events a worker may have waiting for the chain-writer before it pauses (a tuning knob)
        max_unacked = int(os.environ.get("THEATER_OTP_MAX_UNACKED_EVENTS", MAX_UNACKED_EVENTS))
        #: what the Prometheus endpoint reports (node/metrics.py), counted whether or not it is served
        self.metrics = NodeMetrics()
        self.metrics_address = metrics_address
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.mail = Mail(self.router, self.registry, self.loop, self.metrics)
        self.workers = WorkerProcesses(self.loop, self.launcher, self.registry, self.chain, home, self.secrets,
                                       self.components, max_unacked, self.mail.send_now)
        self.gateway = GatewayLink(self.loop, self.launcher, home, self.secrets, self.router, self.registry,
                                   self.mail, HttpListeners(http_listeners(tree)), self._tell_ready, self._give_up,
                                   lambda: self.stopping)
        #: the cluster link (node/cluster.py), when this node joined one
        self.cluster: ClusterLink | None = None
        if cluster is not None:
            self.cluster = ClusterLink(self.loop, self.launcher, home, self.secrets, self.router, cluster,
                                       self._give_up, lambda: self.stopping, self._cluster_ready)
            self.mail.join(self.cluster)
        self.tree = SupervisionTree(tree, self.loop, self.registry, self.workers, self.chain, self.gateway, self)
        self.hosting: Hosting | None = None
        if self.cluster is not None:
            self.hosting = Hosting(self.cluster, self.tree, self.registry, self.workers, self.components, self.loop)
            self.tree.hosting = self.hosting
        self.owners = ActorSupervisors(self.tree, self.registry, self.mail, self.components, home)
        self.tree.owners = self.owners
        self.services = Services(home, self.started_at, self.registry, self.chain, self.mail, self.tree,
                                 self.components, lambda: self.stopping, self._shut_down,
                                 self._counters)
        #: worker frame kind -> its handler
        self.worker_frames: dict[str, WorkerFrame] = {
            "ready": self._worker_ready, "loaded": lambda handle, ident, env: self.workers.loaded(handle),
            "supervise": self.owners.on_supervise, "send": self.mail.on_send,
            "release": self.mail.on_release, "took": self.mail.on_took, "request": self.mail.on_request,
            "reply": self.mail.on_reply, "channel_open": self.mail.on_channel, "channel_send": self.mail.on_channel,
            "channel_close": self.mail.on_channel, "http_listen": self.gateway.on_listen,
            "http_unlisten": self.gateway.on_unlisten,
            "synced": lambda handle, ident, env: self.chain.worker_synced(ident, env.corr),
        }

    def _counters(self) -> dict[str, Any]:
        """What `tree` adds about the node itself: frames dropped from unknown identities, tree
        paths it keeps ids for (they shrink when children are removed), spares started ahead."""
        counters: dict[str, Any] = {"dropped_frames": self.dropped_frames,
                                    "known_paths": len(self.registry.actor_ids), "spares": len(self.workers.spares)}
        if self.cluster is not None:
            counters["cluster"] = self.cluster.counters()
        return counters

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
        self.loop.watch(sock)
        return sock

    # ---- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        self.loop.catch_signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        self.chain.start_writer()
        assert self.chain.writer is not None
        log.info("node %d up at %s (chain-writer pid %d)", os.getpid(), self.home.root, self.chain.writer.pid)
        if self.gateway.http.by_port:
            self.gateway.start()
        if self.cluster is not None:
            self.cluster.start()
        if self.metrics_address is not None:
            host, port = self.metrics_address
            try:
                self.metrics_endpoint = MetricsEndpoint(self.loop, self.registry, self.metrics, self.home, host, port,
                                                        self.chain.ask_stats)
            except OSError as exc:
                self._give_up(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
                self._close()
                return 1
            log.info("metrics at http://%s:%d/metrics", host, self.metrics_endpoint.port)
        if self.cluster is None:
            self.tree.start()
        try:
            while self.exit_code is None:
                self.tree.drain()
                if self.exit_code is not None:
                    break
                self._turn()
        finally:
            self._close()
        return self.exit_code

    def _close(self) -> None:
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        self.gateway.kill()
        self.workers.kill_all()
        if self.cluster is not None:
            self.cluster.stop()
        self.launcher.close()
        self.loop.run_finished()  # spares whose fork finished meanwhile get their handles...
        self.workers.kill_all()   # ...and go too
        if self.chain.writer is not None:
            self.chain.stop_writer()
        for ask in self.down_waiters:
            ask.ok({"stopped": True, "message": self.exit_message})
        self.chain.close()
        for sock in (self.router, self.control):
            sock.close(linger=100)
        self.ctx.term()
        self.loop.close()

    def _turn(self) -> None:
        """One poll and what it found ready."""
        producer = self.chain.producer
        producer.flush()
        ready = self.loop.poll(producer.resend_deadline())
        if self.chain.sock in ready:
            self.chain.take_replies()
            self.chain.answer_syncs()
        elif (deadline := producer.resend_deadline()) is not None and time.monotonic() >= deadline:
            producer.resend()
        if self.loop.woken(ready):
            while self.loop.signals:
                self._on_signal(self.loop.signals.popleft())
            self.loop.run_finished()
        writer = self.chain.writer
        if writer is not None and writer.sentinel in ready:
            self.chain.on_writer_exit(self.stopping, lambda: list(self.registry.workers.values()), self.mail.to_worker)
        gateway = self.gateway.process
        if gateway is not None and gateway.sentinel in ready:
            self.gateway.on_exit(up_waiting=self.on_ready is not None)
        link = self.cluster.process if self.cluster is not None else None
        if link is not None and link.sentinel in ready:
            assert self.cluster is not None
            self.cluster.on_exit(up_waiting=self.on_ready is not None)
        exited = self.workers.exited(ready)
        if self.router in ready or exited:  # first what the exited workers sent before they ended
            self._serve(self.router, self._on_worker_frame)
        for handle in exited:
            self._worker_exited(handle)
        if self.control in ready:
            self._serve(self.control, self._on_control_frame)
        self.loop.run_timers()

    def _serve(self, sock: zmq.Socket, handler: Callable[[bytes, Envelope], None]) -> None:
        for _ in range(FRAMES_PER_TURN):
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
                log.exception("node: failed handling %r from %r", env.kind, ident[:64])
                self._answer_failure(sock, ident, env, f"the node failed handling {env.kind[:80]}: "
                                                       f"{type(exc).__name__}: {exc}")

    def _answer_failure(self, sock: zmq.Socket, ident: bytes, env: Envelope, why: str) -> None:
        """Tell whoever waits for an answer to `env` that handling it failed: a control client gets
        an error, a worker the answer kind its call waits for (`sent` for sends, `reply` for the rest)."""
        if not env.corr:
            return
        if sock is self.control:
            ControlAnswer(self.control, ident, env.corr).error("internal_error", why)
            return
        handle = self.registry.by_identity.get(ident)
        if handle is not None:
            kind = "sent" if env.kind in SENT_KINDS else "reply"
            self.mail.send_now(handle, Envelope(kind, "node", handle.actor_id, env.corr, {"error": why}))

    def _on_signal(self, signum: int) -> None:
        if self.stopping:
            if signum == signal.SIGINT:
                log.warning("second interrupt: killing every worker now")
                self.workers.kill_all()
            return
        log.info("received %s: stopping the tree", signal.Signals(signum).name)
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if not self.tree.stop():
            self.exit_code = 0

    def _shut_down(self, ask: Asker) -> None:
        self.down_waiters.append(ask)
        self.begin_shutdown()

    def _give_up(self, why: str) -> None:
        """The node's work is over with an error: the loop ends, `up` (if it still waits) and `down`
        waiters hear `why`, the node exits 1."""
        self.exit_code, self.exit_message = 1, why
        log.error(why)
        if self.on_ready:
            self.on_ready(why)
            self.on_ready = None

    def _tell_ready(self) -> None:
        """`up` hears the tree is ready once the root has started and, when the tree serves HTTP,
        the gateway listens on its ports: a client right after `up --detach` is not refused."""
        if self.on_ready and self.root_up and (not self.gateway.running or self.gateway.ready) and \
                (self.cluster is None or self.cluster.ready):
            self.on_ready(None)
            self.on_ready = None

    def _cluster_ready(self) -> None:
        """The link is connected: the tree starts (its children may live on other nodes) the first
        time; `up` may be waiting for it."""
        if self.tree.root is None and not self.stopping:
            self.tree.start()
        self._tell_ready()

    # ---- tree.TreeHooks -------------------------------------------------------------------------

    def root_started(self) -> None:
        self.root_up = True
        self._tell_ready()

    def child_removed(self, path: str) -> None:
        self.metrics.forget(path)

    def root_exited(self, action: ev.SupervisorExited, entry: SubSupervisor) -> None:
        if not self.stopping:
            why = {"reached_max_restart_intensity": "reached its maximum restart intensity "
                   f"({entry.sup.flags.intensity} restarts in {entry.sup.flags.period} s)",
                   "auto_shutdown": "shut down automatically (a significant child ended)"}.get(action.context,
                                                                                               str(action.reason))
            self._give_up(f"root supervisor {action.supervisor!r} gave up: {why}")
            return
        self.exit_code, self.exit_message = 0, "tree stopped"
        if self.on_ready:
            self.on_ready(self.exit_message)
            self.on_ready = None

    # ---- workers ----------------------------------------------------------------------------------

    def _on_worker_frame(self, ident: bytes, env: Envelope) -> None:
        handle = self.workers.by_identity(ident)
        if handle is None:
            if ident == self.secrets.gateway:
                self.gateway.on_message(env)
            elif ident == self.secrets.link and self.cluster is not None:
                self.cluster.on_message(env)
            else:  # a late frame from a reaped incarnation, or a process the node did not start
                self.dropped_frames += 1
                if self.dropped_frames == 1 or self.dropped_frames % 1000 == 0:
                    log.warning("dropped %r from %r: not a live worker of this node (%d frame(s) dropped so far)",
                                env.kind, ident[:64], self.dropped_frames)
            return
        handler = self.worker_frames.get(env.kind)
        if handler is None:
            log.error("dropped unknown envelope kind %r from %s", env.kind[:80], handle.path)
            return
        handler(handle, ident, env)

    def _worker_ready(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        if not self.workers.ready(handle):
            return
        self.mail.became_ready(handle)
        if self.cluster is not None:
            path = self.hosting.global_path(handle) if self.hosting is not None else handle.path
            self.cluster.names_put(handle.actor_id, handle.name, path, handle.incarnation)
        if self.hosting is not None and self.hosting.is_hosted(handle):
            self.hosting.hosted_ready(handle)
            return
        if self.gateway.serves(handle.path):  # requests for its port may go to it now
            self.gateway.route(handle)
        self.tree.worker_started(handle)
        self.metrics.ready(handle.path, handle.restart)
        if handle.restart and not self.stopping:  # it restarted once: it may again
            self.workers.keep_for_restart(handle)

    def _worker_exited(self, handle: WorkerHandle) -> None:
        if handle.spare:  # started ahead of its turn and never taken: nobody waits for it
            self.workers.reap_spare(handle)
            return
        reason = self.workers.reap(handle)
        self.metrics.exited(handle.path, reason.kind.value)
        self.mail.worker_exited(handle, str(reason), reason.kind.value)
        if self.cluster is not None:
            self.cluster.names_delete(handle.actor_id, handle.name, handle.path)
        if self.hosting is not None and self.hosting.is_hosted(handle):
            self.hosting.hosted_exited(handle, reason)
            return
        if handle.ready and self.gateway.serves(handle.path):  # the requests it held: 503 or 500
            self.gateway.unroute(handle, reason.kind.value, str(reason))
        self.tree.worker_exited(handle, reason)

    # ---- control socket -----------------------------------------------------------------------------

    def _on_control_frame(self, ident: bytes, env: Envelope) -> None:
        """One command: looked up in control.COMMANDS, its arguments checked there, then its handler
        (commands.HANDLERS) runs. An unknown command or bad arguments are answered with an error;
        a handler that raises is answered by the fault boundary in _serve."""
        ask = ControlAnswer(self.control, ident, env.corr)
        command = control.COMMANDS.get(control.command_name(env.kind))
        if command is None:
            ask.error("unknown_command", f"unknown command {env.kind[:80]!r}")
            return
        try:
            args = control.check(command, env.body if env.body is not None else {})
        except control.BadArguments as exc:
            ask.error("bad_request", str(exc))
            return
        HANDLERS[command.name](self.services, ask, args)


__all__ = ["ControlAnswer", "FRAMES_PER_TURN", "Node"]
