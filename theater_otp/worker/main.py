"""The worker process: the wasmtime host loop around one actor.

Life of a worker (each step an event in the actor's chain):
  start → load the cached component → actor.init → `ready` to the node →
  serve `send` / `request` / `state` envelopes one at a time → exit.
Exit codes (classified by supervision.reasons.classify_exit):
  0 the actor called runtime.shutdown; 3 stopped politely (SIGTERM or `stop`);
  1 crash (err, trap, CPU budget), with a crash report file for the node.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq

from ..chain.event import WitChainEvent
from ..chain.producer import MAX_UNACKED_EVENTS, ChainProducer
from ..config.model import ActorLimits, HandlerConfig
from ..home import Home
from ..proc import child_signals, die_with_parent, flush_and_exit, setup_child_logging
from ..protocol import MAILBOX_KINDS, NOBLOCK, Envelope, ProtocolError, decode, encode, message_size
from ..protocol.trust import same, worker_identity
from ..supervision.reasons import EXIT_CRASH, EXIT_NORMAL, EXIT_SHUTDOWN
from .calls import ExportCall, perform
from .component import load_artifact, new_engine
from .cpu import EpochTicker
from .effects import HeldEffects
from .fastabi import Err
from .handlers import REGISTRY, granted_types, grants
from .handlers.base import ActorInfo
from .handlers.http_framework import SHARED_KEY as FRAMEWORK_KEY
from .handlers.message_server import DEFAULT_REQUEST_TIMEOUT_MS
from .host import Actor, ActorCrash
from .lograte import LogRate

log = logging.getLogger("theater_otp.worker")

#: How long a crashing or stopping worker waits for the chain-writer's ack of its last events.
FINAL_FLUSH_TIMEOUT_MS = 3000
#: Most queued envelopes handled in one turn of the serve loop before its events are flushed.
MAX_ENVELOPES_PER_TURN = 256
#: Longest turn: an actor that sleeps and sends itself the next tick must not hold its events back
#: (they are flushed, and acks and syncs answered, between turns).
MAX_TURN_S = 0.05
_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}
#: How long a supervisor-interface call waits for the node's answer.
SUPERVISE_TIMEOUT_MS = 30_000
#: How long a send waits for the node to say the message is in the target's mailbox.
SEND_ANSWER_TIMEOUT_MS = 10_000
#: How long http-framework's start-server and stop-server wait for the node to open or close a port
#: (the node may have to start its HTTP gateway first).
HTTP_LISTEN_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, pickled to it by the node."""

    home: Home
    node_pid: int
    actor_id: str
    path: str
    name: str
    incarnation: int
    artifact: Path
    component_hash: str
    initial_state: bytes | None
    #: the manifest's handler entries, each with its typed settings (the registry's `grants` reads them)
    handlers: tuple[HandlerConfig, ...]
    imports: tuple[str, ...] = ()
    component_path: str = ""
    max_unacked_events: int = MAX_UNACKED_EVENTS
    #: this incarnation's secret: the end of its identity on every socket (protocol/trust.py)
    token: str = ""
    #: what the chain-writer's acks carry: an ack without it is not the writer's
    writer_proof: bytes = b""
    #: False only for benchmarks that measure what recording costs (THEATER_OTP_RECORD=0)
    record: bool = True
    #: False only for benchmarks that measure what durable effects cost (THEATER_OTP_DURABLE_EFFECTS=0):
    #: replies and sends then leave before their events are stored (worker/effects.py)
    durable_effects: bool = True
    limits: ActorLimits = field(default_factory=ActorLimits)

    @property
    def granted(self) -> frozenset[str]:
        return granted_types(self.handlers)

    @property
    def identity(self) -> bytes:
        return worker_identity(self.actor_id, self.incarnation, self.token)

    @property
    def holds_effects(self) -> bool:
        """Whether this worker's effects wait for their events (nothing to wait for when nothing is
        recorded); the node holds its sends when it does."""
        return self.durable_effects and self.record


class _Stop(Exception):
    """Raised inside the loop to leave it with an exit code."""

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason


class Worker:
    """Owns the zmq context, both sockets, the epoch ticker and the Actor."""

    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.ctx = zmq.Context()
        self.node = self.ctx.socket(zmq.DEALER)
        self.node.setsockopt(zmq.IDENTITY, cfg.identity)
        self.node.setsockopt(zmq.RCVHWM, 0)  # the node never has a message refused by a busy actor
        self.node.setsockopt(zmq.SNDHWM, 0)
        self.node.setsockopt(zmq.LINGER, 1000)
        self.node.connect(cfg.home.router_endpoint)
        self.chain = self.ctx.socket(zmq.DEALER)
        self.chain.setsockopt(zmq.IDENTITY, cfg.identity)  # the node registered it as this actor's producer
        self.chain.setsockopt(zmq.LINGER, 2000)
        self.chain.connect(cfg.home.chain_endpoint)
        self.producer = ChainProducer(self.chain, f"{cfg.actor_id}/{cfg.incarnation}", cfg.max_unacked_events)
        #: an HTTP or WebSocket serving actor's link to the HTTP gateway: requests come straight from
        #: it, answers go straight back (http/gateway.py); the node only tells the gateway which worker
        #: serves a path
        self.http: zmq.Socket | None = None
        if any(REGISTRY[t].via_gateway for t in cfg.granted if t in REGISTRY):
            self.http = self.ctx.socket(zmq.DEALER)
            self.http.setsockopt(zmq.IDENTITY, cfg.identity)
            self.http.setsockopt(zmq.LINGER, 1000)
            self.http.connect(cfg.home.gateway_endpoint)
        self.wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.stop_requested = False
        self.shutdown_requested = False
        self.inbox: deque[Envelope] = deque()
        #: [messages, bytes] taken out of the mailbox since the node was last told
        self.took = [0, 0]
        self.syncs: list[tuple[int, int]] = []  # (node's sync corr, batch seq it waits for)
        #: replies, responses and answers waiting for the events before them to be acknowledged
        self.held = HeldEffects()
        self.corr = itertools.count(1)
        self.outstanding_requests: dict[str, tuple[str, int]] = {}  # request-id -> (origin, corr)
        self.request_ids = itertools.count(1)
        self.actor: Actor | None = None
        self.engine = new_engine(parallel_compilation=False)
        self.ticker = EpochTicker(self.engine)
        self.log_rate = LogRate(cfg.limits.log_bytes_per_s)

    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True

    # ---- recording ----------------------------------------------------------------------

    def record(self, event_type: str, data: dict) -> None:
        if not self.cfg.record:
            return
        self.producer.add([self.cfg.actor_id, self.cfg.incarnation, event_type, time.time_ns(),
                           msgpack.packb(data, use_bin_type=True)])

    def flush_events(self, wait_ack: bool = False, timeout_ms: int = FINAL_FLUSH_TIMEOUT_MS) -> bool:
        """Send the recorded events as one batch; with `wait_ack`, wait until every batch is durable
        (and the effects held for them have left): False if that took longer than `timeout_ms`."""
        self.producer.flush()
        if not wait_ack:
            return True
        deadline = time.monotonic() + timeout_ms / 1000
        while self.producer.unacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("%s: %d event(s) not acknowledged by the chain-writer within %d ms",
                            self.cfg.path, self.producer.unacked_events, timeout_ms)
                return False
            if self.chain.poll(int(min(remaining, 0.5) * 1000)):  # ms, as pyzmq would truncate a float
                self._drain_acks()
            else:
                self.producer.resend()
        return True

    def _drain_acks(self) -> None:
        while True:
            try:
                frame = self.chain.recv(NOBLOCK)
            except zmq.Again:
                break
            try:
                env = decode(frame, peer="chain")
            except ProtocolError as exc:
                log.error("%s: dropped frame from the chain-writer: %s", self.cfg.path, exc)
                continue
            if env.kind == "ack":
                body = env.body if isinstance(env.body, dict) else {}
                if same(body.get("proof"), self.cfg.writer_proof):
                    self.producer.on_ack(env.corr)
                else:
                    log.error("%s: ignored an ack that does not carry the chain-writer's proof", self.cfg.path)
        if self.held:
            self.held.release(self.producer.durable_through)
        self._answer_syncs()

    def _emit(self, sock: zmq.Socket, frame: bytes) -> None:
        """Send an effect (a reply, a response, an answer): now if every event recorded before it
        is durable and nothing is held before it, else once the writer has acknowledged them."""
        producer = self.producer
        batch = producer.batch_seq + (1 if producer.pending else 0)
        if not self.cfg.holds_effects or (not self.held and producer.durable_through(batch)):
            sock.send(frame)
        else:
            self.held.hold(batch, sock, frame)

    def _settle(self, what: str, timeout_ms: int) -> str | None:
        """Before an effect made during an export call (a send, a request, a supervisor call): make
        every event recorded so far durable and let what waited for them leave. The refusal for the
        actor when the writer did not acknowledge within `timeout_ms`, else None."""
        if not self.cfg.holds_effects or self.flush_events(wait_ack=True, timeout_ms=timeout_ms):
            return None
        return (f"{what}: not sent: this actor's earlier events were not stored within {timeout_ms} ms "
                f"(the chain-writer is not acknowledging)")

    def _answer_syncs(self) -> None:
        waiting = []
        for sid, batch in self.syncs:
            if self.producer.durable_through(batch):
                self.node.send(encode(Envelope("synced", self.cfg.actor_id, "node", sid)))
            else:
                waiting.append((sid, batch))
        self.syncs = waiting

    # ---- host services (HostServices protocol) -------------------------------------------

    def log_line(self, msg: str) -> bool:
        return self.log_at("info", msg)

    def output_line(self, stream: str, line: str) -> bool:
        """A line the actor printed on WASI stdout or stderr: in the log, and in the chain as a
        `log.output` event (what `theater-otp logs` shows), within the same `log_bytes_per_s`."""
        kept = self.log_at("info", f"{stream}: {line}")
        if kept:
            self.record("log.output", {"stream": stream, "line": line})
        return kept

    def log_at(self, level: str, msg: str) -> bool:
        """A line of the actor's log, within its `log_bytes_per_s`; the excess is dropped (False)
        and counted once per second in a `log.truncated` event."""
        dropped = self.log_rate.take(len(msg), time.monotonic())
        if dropped:
            self.record("log.truncated", {"dropped_lines": dropped[0], "dropped_bytes": dropped[1],
                                          "limit_bytes_per_s": self.cfg.limits.log_bytes_per_s})
            log.warning("[%s] log truncated: %d line(s), %d byte(s) over log_bytes_per_s = %d", self.cfg.path,
                        dropped[0], dropped[1], self.cfg.limits.log_bytes_per_s)
        if self.log_rate.allowed:
            log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", self.cfg.path, msg)
        return self.log_rate.allowed

    def request_shutdown(self, data: bytes | None) -> None:
        self.shutdown_requested = True
        return None

    def _too_big(self, what: str, msg: bytes) -> str | None:
        limit = self.cfg.limits.message_bytes
        if len(msg) > limit:
            return f"{what} of {len(msg)} bytes is over this actor's limit message_bytes = {limit}"
        return None

    def _report_took(self) -> None:
        """Tell the node what left the mailbox: once a turn, and before each call that sends, so the
        node's count is exact when another message asks to be admitted."""
        if self.took[0]:
            self.node.send(encode(Envelope("took", self.cfg.actor_id, "node", 0, self.took)))
            self.took = [0, 0]

    def _await(self, kind: str, corr: int, timeout_ms: int) -> Envelope | None:
        """Wait for the node's `kind` answer to our call `corr`; what else arrives meanwhile waits
        in the inbox, served after the current export call. None when `timeout_ms` passes."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self.node.poll(int(remaining * 1000) + 1):
                continue
            env = self._recv()
            if env is None:
                continue
            if env.kind == kind and env.corr == corr:
                return env
            self.inbox.append(env)

    def _ask_node(self, kind: str, to: str, body: object, answer: str, timeout_ms: int) -> dict | None:
        """Make the events recorded so far durable (`_settle`), then `_call_node`: the answer's body,
        {"error": ...} if the events were not stored in time, None without an answer."""
        refusal = self._settle(kind.replace("_", "-"), timeout_ms)
        if refusal is not None:
            return {"error": refusal}
        return self._call_node(kind, to, body, answer, timeout_ms)[1]

    def _call_node(self, kind: str, to: str, body: object, answer: str, timeout_ms: int) -> tuple[int, dict | None]:
        """Send `kind` to the node and wait for its `answer` envelope: (the corr it went with, the
        answer's body as a dict, or None when none came within `timeout_ms`). What left the mailbox
        is reported first."""
        corr = next(self.corr)
        self._report_took()
        self.node.send(encode(Envelope(kind, self.cfg.actor_id, to, corr, body)))
        env = self._await(answer, corr, timeout_ms)
        if env is None:
            return corr, None
        return corr, env.body if isinstance(env.body, dict) else {}

    def send(self, target: str, msg: bytes) -> str | None:
        """One-way message: returns once the node has admitted it for the target's mailbox, or with the
        reason it could not (no such actor, over a message_bytes limit, a full mailbox). With durable
        effects (the default) the node holds it until the events of the current call are stored."""
        refusal = self._too_big("message", msg)
        if refusal:
            return refusal
        # no _settle: a held send waits for this call's own events instead (node/outbox.py)
        corr, sent = self._call_node("send", target, msg, "sent", SEND_ANSWER_TIMEOUT_MS)
        if sent is None:
            return f"send to {target}: the node did not answer within {SEND_ANSWER_TIMEOUT_MS} ms"
        if "error" in sent:
            return str(sent["error"])
        if self.cfg.holds_effects:  # admitted and held by the node: released once this call's events are stored
            self.held.hold(self.producer.batch_seq + 1, self.node,
                           encode(Envelope("release", self.cfg.actor_id, "node", 0, corr)))
        return None

    def request(self, target: str, msg: bytes, timeout_ms: int) -> bytes | str:
        refusal = self._too_big("request", msg)
        if refusal:
            return refusal
        body = self._ask_node("request", target, msg, "reply", timeout_ms)
        if body is None:
            return f"request to {target} timed out after {timeout_ms} ms"
        if "error" in body:
            return str(body["error"])
        return bytes(body.get("ok") or b"")

    def supervise(self, op: str, args: dict) -> dict:
        """A supervisor-interface call: ask the node, wait for its answer like a request."""
        refusal = self._settle(f"supervisor call {op}", SUPERVISE_TIMEOUT_MS)
        if refusal is not None:
            return {"error": refusal}
        corr = next(self.corr)
        self.node.send(encode(Envelope("supervise", self.cfg.actor_id, op, corr, args)))
        env = self._await("reply", corr, SUPERVISE_TIMEOUT_MS)
        if env is None:
            return {"error": f"supervisor call {op} timed out"}
        return env.body if isinstance(env.body, dict) else {"error": "malformed reply"}

    def respond(self, request_id: str, msg: bytes) -> str | None:
        origin = self.outstanding_requests.pop(request_id, None)
        if origin is None:
            return f"no outstanding request {request_id!r}"
        self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, origin[0], origin[1], {"ok": msg})))
        return None

    def http_listen(self, listener: dict) -> int | str:
        """Ask the node for an HTTP listener (http-framework's start-server): the port it listens
        on, or why not."""
        body = self._ask_node("http_listen", "node", listener, "reply", HTTP_LISTEN_TIMEOUT_MS)
        if body is None:
            return f"the node did not open the port within {HTTP_LISTEN_TIMEOUT_MS} ms"
        return int(body["ok"]) if isinstance(body.get("ok"), int) else str(body.get("error", "malformed answer"))

    def http_unlisten(self, port: int) -> str | None:
        body = self._ask_node("http_unlisten", "node", {"port": port}, "reply", HTTP_LISTEN_TIMEOUT_MS)
        if body is None:
            return f"the node did not close the port within {HTTP_LISTEN_TIMEOUT_MS} ms"
        return None if "ok" in body else str(body.get("error", "malformed answer"))

    def outstanding(self) -> list[str]:
        return list(self.outstanding_requests)

    def cancel_request(self, request_id: str) -> str | None:
        origin = self.outstanding_requests.pop(request_id, None)
        if origin is None:
            return f"no outstanding request {request_id!r}"
        self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, origin[0], origin[1],
                                              {"error": "the actor cancelled the request"})))
        return None

    def own_events(self) -> list[WitChainEvent]:
        """This actor's chain as committed so far (the current call's events are not in it yet)."""
        from ..chain.store import connect, read_events
        self.flush_events(wait_ack=True)
        conn = connect(self.cfg.home.chain_db, readonly=True)
        try:
            rows = read_events(conn, self.cfg.actor_id)
        finally:
            conn.close()
        return [e.wit_fields() for e in rows]

    def sleep(self, ms: int) -> str | None:
        deadline = time.monotonic() + ms / 1000
        while not self.stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # wakes early on SIGTERM (the wakeup fd) so a polite stop is not delayed by a sleep
            if select.select([self.wake_r], [], [], remaining)[0]:
                self.wake_r.recv(4096)
        return "sleep interrupted: the actor is shutting down"

    # ---- the loop -------------------------------------------------------------------------

    def _recv(self) -> Envelope | None:
        return self._decode(self.node.recv())

    def _decode(self, frame: bytes) -> Envelope | None:
        try:
            return decode(frame, peer="node")
        except ProtocolError as exc:
            log.error("%s: dropped frame: %s", self.cfg.path, exc)
            return None

    def start(self) -> None:
        """Instantiate the actor, say `loaded`, and wait for the node's `init` (its turn in the
        supervisor's start order: the node may start a worker ahead of it, node/workers.py); only
        then is anything recorded and init run. `ready` to the node when init returned."""
        cfg = self.cfg
        self._instantiate()
        self.node.send(encode(Envelope("loaded", cfg.actor_id, "node", 0)))
        restart = self._await_init()
        self.record("actor.start", {"incarnation": cfg.incarnation, "restart": restart, "pid": os.getpid(),
                                    "name": cfg.name, "path": cfg.path, "component": cfg.component_hash,
                                    "component_path": cfg.component_path, "granted": sorted(cfg.granted),
                                    "limits": cfg.limits.to_plain()})
        self._call(ExportCall("init", [cfg.initial_state]))
        self.flush_events()
        self.node.send(encode(Envelope("ready", cfg.actor_id, "node", 0, {"pid": os.getpid()})))

    def _instantiate(self) -> None:
        cfg = self.cfg
        component = load_artifact(self.engine, cfg.artifact)
        info = ActorInfo(cfg.actor_id, cfg.name, cfg.path, cfg.incarnation, cfg.home)
        self.actor = Actor(self.engine, component, self, grants(cfg.handlers), cfg.limits, cfg.imports, info,
                           self.ticker)

    def _await_init(self) -> bool:
        """Wait for the node's `init` (whether this start is a restart); a SIGTERM meanwhile stops
        the worker. Anything else the node sends first is kept for after init, in order."""
        poller = zmq.Poller()
        poller.register(self.wake_r, zmq.POLLIN)
        poller.register(self.node, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self.wake_r in ready or self.wake_r.fileno() in ready:
                self.wake_r.recv(4096)
            self._check_stop()
            while True:
                try:
                    frame = self.node.recv(NOBLOCK)
                except zmq.Again:
                    break
                env = self._decode(frame)
                if env is None:
                    continue
                if env.kind == "init":
                    return bool(env.body.get("restart")) if isinstance(env.body, dict) else False
                self.inbox.append(env)

    def serve(self) -> None:
        """Serve one envelope at a time. While too many events wait for the chain-writer's
        acknowledgement the actor is paused: no message is taken until acks arrive."""
        poller = zmq.Poller()
        poller.register(self.wake_r, zmq.POLLIN)
        poller.register(self.chain, zmq.POLLIN)
        listening = False
        while True:
            self._check_stop()
            turn_ends = time.monotonic() + MAX_TURN_S
            while self.inbox and not self.producer.full and time.monotonic() < turn_ends:
                self._handle(self.inbox.popleft())
                self._check_stop()
            paused = self.producer.full
            if paused and listening:        # too many events wait for the writer: take no message
                poller.unregister(self.node)
                if self.http is not None:
                    poller.unregister(self.http)
                listening = False
                log.warning("%s: paused: %d events wait for the chain-writer", self.cfg.path,
                            self.producer.unacked_events)
            elif not paused and not listening:
                poller.register(self.node, zmq.POLLIN)
                if self.http is not None:
                    poller.register(self.http, zmq.POLLIN)
                listening = True
            self.flush_events()  # what this turn recorded, as one batch, before we wait
            self._report_took()
            deadline = self.producer.resend_deadline()
            timeout = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000) + 1)
            if self.inbox and not paused:
                timeout = 0  # the turn ended with envelopes still waiting: only look, then serve them
            ready = dict(poller.poll(timeout))
            if self.wake_r in ready or self.wake_r.fileno() in ready:
                self.wake_r.recv(4096)
            if self.chain in ready:
                self._drain_acks()
            elif deadline is not None and time.monotonic() >= deadline:
                self.producer.resend()
            if self.node in ready:
                self._take_queued(self.node)
            if self.http is not None and self.http in ready:
                self._take_queued(self.http)

    def _take_queued(self, sock: zmq.Socket) -> None:
        """Handle the envelopes already queued on `sock` (up to MAX_ENVELOPES_PER_TURN), so their
        events go to the chain-writer as one batch: one frame, one commit slot and one ack for many
        messages when they arrive faster than one at a time."""
        turn_ends = time.monotonic() + MAX_TURN_S
        for _ in range(MAX_ENVELOPES_PER_TURN):
            if self.inbox and sock is self.node:  # older frames from the node wait there: they go first
                return
            try:
                frame = sock.recv(NOBLOCK)
            except zmq.Again:
                return
            env = self._decode(frame)
            if env is not None:
                self._handle(env)
                self._check_stop()
            if self.producer.full or time.monotonic() >= turn_ends:
                return

    def _http_request(self, env: Envelope) -> None:
        """A request from the HTTP gateway: the actor's response goes back; a crash answers the
        gateway first (the client gets 500) and then ends the actor."""
        if self.http is None:
            log.error("%s: dropped an HTTP request: this actor does not serve HTTP", self.cfg.path)
            return
        request = env.body if isinstance(env.body, dict) else {}
        meta: dict = {}
        if "port" in request:  # an http-framework server's request: the actor's routes pick the handler
            servers = self.actor.shared.get(FRAMEWORK_KEY) if self.actor is not None else None
            routed = (servers.route(int(request["port"]), str(request.get("method", "")), str(request.get("path", "")))
                      if servers is not None else (503, "this actor has no http-framework server"))
            if isinstance(routed, tuple):
                status, why = routed
                self.record("http.unrouted", {"method": request.get("method"), "path": request.get("path"),
                                              "port": request["port"], "status": status})
                self._to_gateway(env, {"ok": {"status": status, "headers": [["content-type", "text/plain"]],
                                              "body": f"{why}\n".encode()}})
                return
            meta["handler"] = routed
        self._gateway_call(env, ExportCall("http-request", [request], meta))

    def _ws_message(self, env: Envelope) -> None:
        """A WebSocket event from the HTTP gateway: the messages the actor sends back go to it; a
        crash answers the gateway first (the connection is closed with 1011) and then ends the actor."""
        if self.http is None:
            log.error("%s: dropped a WebSocket message: this actor does not serve WebSocket", self.cfg.path)
            return
        self._gateway_call(env, ExportCall("websocket-message", [env.body if isinstance(env.body, dict) else {}]))

    def _gateway_call(self, env: Envelope, call: ExportCall) -> None:
        """Run `call` for the gateway's `env`, record it, answer the gateway with its result or, for
        a crash, with the crash (before the crash ends the actor)."""
        outcome = perform(self._live_actor(), call)
        self.record(outcome.event_type, outcome.data)
        if outcome.crash is not None:
            self._to_gateway(env, {"error": str(outcome.crash), "exit": "abnormal"})
            raise outcome.crash
        self._to_gateway(env, {"ok": outcome.reply})

    def _to_gateway(self, env: Envelope, answer: dict) -> None:
        assert self.http is not None
        self._emit(self.http, encode(Envelope("reply", self.cfg.actor_id, env.sender, env.corr, answer)))

    def _channel_event(self, env: Envelope) -> None:
        """A channel opened to this actor, a message on one, or its close; an open is answered to
        the node with the actor's accept (or refusal)."""
        body = env.body if isinstance(env.body, dict) else {}
        meta = {"channel": str(body.get("channel", "")), "from": env.sender}
        if env.kind == "channel_open":
            msg = body.get("msg") if isinstance(body.get("msg"), bytes) else b""
            outcome = perform(self._live_actor(), ExportCall("channel-open", [msg], meta))
            self.record(outcome.event_type, outcome.data)
            if outcome.crash is not None:
                self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, env.sender, env.corr,
                                                      {"error": f"{self.cfg.path} crashed opening the channel"})))
                raise outcome.crash
            accept = {"accepted": bool(outcome.data.get("accepted")), "message": outcome.data.get("message")}
            self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, env.sender, env.corr, {"ok": accept})))
        elif env.kind == "channel_message":
            msg = body.get("msg") if isinstance(body.get("msg"), bytes) else b""
            self._call(ExportCall("channel-message", [msg], meta))
        else:
            self._call(ExportCall("channel-close", [], {**meta, "reason": body.get("reason")}))

    def open_channel(self, target: str, msg: bytes) -> str | Err:
        """Ask `target` to open a channel: its id once the target accepted, else the refusal."""
        refusal = self._too_big("initial message", msg)
        if refusal:
            return Err(refusal)
        body = self._ask_node("channel_open", target, {"msg": msg}, "reply", DEFAULT_REQUEST_TIMEOUT_MS + 1000)
        if body is None:
            return Err(f"open-channel to {target}: no answer")
        return str(body["ok"]) if "ok" in body else Err(str(body.get("error", "malformed answer")))

    def send_on_channel(self, channel_id: str, msg: bytes) -> str | None:
        refusal = self._too_big("channel message", msg)
        if refusal:
            return refusal
        return self._channel_call("channel_send", {"channel": channel_id, "msg": msg})

    def close_channel(self, channel_id: str) -> str | None:
        return self._channel_call("channel_close", {"channel": channel_id})

    def _channel_call(self, kind: str, body: dict) -> str | None:
        answer = self._ask_node(kind, "node", body, "sent", SEND_ANSWER_TIMEOUT_MS)
        if answer is None:
            return f"{kind.replace('_', '-')}: the node did not answer within {SEND_ANSWER_TIMEOUT_MS} ms"
        return str(answer["error"]) if "error" in answer else None

    def _check_stop(self) -> None:
        if self.shutdown_requested:
            raise _Stop(EXIT_NORMAL, "the actor called runtime.shutdown")
        if self.stop_requested:
            raise _Stop(EXIT_SHUTDOWN, "stopped by its supervisor")

    def _live_actor(self) -> Actor:
        """The actor instance: calls are served only after `start` made it."""
        if self.actor is None:
            raise RuntimeError(f"{self.cfg.path}: an export call before the actor was instantiated")
        return self.actor

    def _call(self, call: ExportCall) -> bytes | None:
        """Run one export call, record it, and raise its crash (after recording it)."""
        outcome = perform(self._live_actor(), call)
        self.record(outcome.event_type, outcome.data)
        if outcome.crash is not None:
            raise outcome.crash
        return outcome.reply

    def _handle(self, env: Envelope) -> None:
        actor = self.actor
        assert actor is not None
        kind = env.kind
        if kind in MAILBOX_KINDS:  # out of the mailbox: the node hears it with the turn's `took`
            self.took[0] += 1
            self.took[1] += message_size(env)
        if kind == "send":
            self._call(ExportCall("send", [env.body], {"from": env.sender}))
        elif kind == "request":
            request_id = f"{self.cfg.incarnation}-{next(self.request_ids)}"
            self.outstanding_requests[request_id] = (env.sender, env.corr)
            reply = self._call(ExportCall("request", [env.body], {"from": env.sender, "request_id": request_id}))
            if reply is not None and self.outstanding_requests.pop(request_id, None) is not None:
                self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, env.sender, env.corr, {"ok": reply})))
        elif kind == "state":
            self._emit(self.node, encode(Envelope("reply", self.cfg.actor_id, env.sender, env.corr,
                                                  {"ok": actor.state, "has_state": actor.state is not None})))
            return
        elif kind == "child_event":
            body = env.body if isinstance(env.body, dict) else {}
            self._call(ExportCall(f"child-{body.get('kind', 'error')}", [],
                                  {"child": str(body.get("child", "")), "reason": str(body.get("reason", ""))}))
        elif kind in ("channel_open", "channel_message", "channel_close"):
            self._channel_event(env)
        elif kind == "http_request":
            self._http_request(env)
        elif kind == "ws_message":
            self._ws_message(env)
        elif kind == "undeliverable":
            body = env.body if isinstance(env.body, dict) else {}
            log.warning("%s: a message to %s was not delivered: %s", self.cfg.path, body.get("to"), body.get("error"))
            self.record("message.undeliverable", body)
        elif kind == "stop":
            self.stop_requested = True
        elif kind == "sync":  # tell the node once what was recorded so far is durable
            self.flush_events()
            self.syncs.append((env.corr, self.producer.batch_seq))
            self._answer_syncs()
        elif kind == "chain_restarted":
            self.producer.resend()
            return
        else:
            log.error("%s: dropped unknown envelope kind %r", self.cfg.path, kind)


def worker_main(cfg: WorkerConfig) -> None:
    """Entry point of a worker process (run in a child of the node's forkserver)."""
    die_with_parent(cfg.node_pid)
    child_signals()
    setup_child_logging(cfg.home.log_file, f"worker:{cfg.path}")
    worker = Worker(cfg)
    code, reason, crash = EXIT_CRASH, "", None
    try:
        worker.start()
        worker.serve()
    except _Stop as stop:
        code, reason = stop.code, stop.reason
    except ActorCrash as exc:
        code, reason, crash = EXIT_CRASH, str(exc), str(exc)
    except Exception as exc:  # the host itself failed: still a crash of this actor, reported
        log.exception("%s: worker failed", cfg.path)
        code, reason, crash = EXIT_CRASH, f"host error: {type(exc).__name__}: {exc}", f"host error: {exc}"
    event = "actor.crash" if code == EXIT_CRASH else "actor.exit"
    worker.record(event, {"reason": reason, "code": code})
    if crash is not None:
        _write_crash_report(cfg, crash)
        log.error("%s crashed: %s", cfg.path, crash)
    if not worker.flush_events(wait_ack=True) and worker.held:
        log.warning("%s: %d repl(ies) not sent: their events were not stored", cfg.path, len(worker.held))
    flush_and_exit(code)


def _write_crash_report(cfg: WorkerConfig, reason: str) -> None:
    path = cfg.home.crash_dir / f"{os.getpid()}.msgpack"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb({"actor_id": cfg.actor_id, "incarnation": cfg.incarnation, "reason": reason}))
    os.replace(tmp, path)
