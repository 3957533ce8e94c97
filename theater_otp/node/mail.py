"""The actor message path through the node: admission, delivery, requests in flight, held sends, channels.

Every frame for a worker leaves through `Mail.to_worker`: it waits in the
worker's backlog while the worker starts, counts in its mailbox until the
worker says it took it, and is refused (with a reason for the sender) when the
target's limits say so. Requests through the node are `PendingRequest`s until
the asked worker replies, the timer fires or the worker exits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from ..protocol import MAILBOX_KINDS, Envelope, encode, message_size
from ..worker.handlers.message_server import DEFAULT_REQUEST_TIMEOUT_MS
from .channels import ChannelTable
from .cluster import ClusterLink, RemoteActor
from .loop import Loop, Timer
from .metrics import NodeMetrics
from .outbox import HeldSend, Outbox
from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: Most frames the node holds for a worker that is still starting.
MAX_BACKLOG = 10_000
#: Envelope kinds a worker's call waits on as `sent` (the rest as `reply`).
SENT_KINDS = frozenset({"send", "channel_send", "channel_close"})


@dataclass
class PendingRequest:
    """A request in flight through the node: who asked (a worker's identity, or a control
    client through `answer_cli`) and which worker must answer (here, or on another node)."""

    target: WorkerHandle | RemoteActor
    #: the asking worker's router identity and the corr its call waits on
    origin_ident: bytes = b""
    origin_corr: int = 0
    #: set when a control client asked: called with the answer body instead
    answer_cli: Callable[[dict], None] | None = None
    timer: Timer | None = None
    #: a channel-open in flight: (channel id, the opener's handle)
    channel: tuple[str, WorkerHandle] | None = None


class Mail:
    """Frames to workers over the node's ROUTER socket, and the state of messages in flight."""

    def __init__(self, router: zmq.Socket, registry: Registry, loop: Loop, metrics: NodeMetrics):
        self.router = router
        self.registry = registry
        self.loop = loop
        self.metrics = metrics
        self.pending: dict[int, PendingRequest] = {}
        #: workers' sends admitted and waiting for their events to be stored
        self.outbox = Outbox()
        self.channels: ChannelTable[WorkerHandle] = ChannelTable()
        #: the cluster (node/cluster.py), when this node joined one: targets no local name resolves
        self.remote: ClusterLink | None = None

    def join(self, cluster: ClusterLink) -> None:
        """Take frames from other nodes' message paths, and fail what waits on a node that goes down."""
        self.remote = cluster
        cluster.frame_handlers.update({"send": self._remote_send, "request": self._remote_request,
                                       "reply": self._remote_reply, "undeliverable": self._remote_undeliverable})
        cluster.down_hooks.append(self._node_down)
        cluster.not_carried_hooks.update({"request": self._request_not_carried, "send": self._send_not_carried,
                                          "reply": self._reply_not_carried})

    def route(self, ref: str, from_path: str | None = None) -> tuple[WorkerHandle | RemoteActor | None, str]:
        """The worker `ref` names here or, when no local actor has that name, the actor another node
        runs under it; (None, why not) otherwise."""
        target, why = self.registry.resolve(ref, from_path)
        if target is None and self.remote is not None and why.startswith("no actor named"):
            found = self.remote.resolve(ref)
            if isinstance(found, RemoteActor):
                return found, ""
            if not found.startswith("no actor named"):
                return None, found
        return target, why

    # ---- to a worker --------------------------------------------------------------------------

    def send_now(self, handle: WorkerHandle, env: Envelope) -> bool:
        try:
            self.router.send_multipart([handle.identity, encode(env)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (not connected yet / gone) or full
            log.warning("could not deliver %s to %s: %s", env.kind, handle.path, exc)
            return False

    def to_worker(self, handle: WorkerHandle, env: Envelope) -> bool:
        """Send `env` to `handle`, or keep it in its backlog while it starts; False when it cannot
        be delivered (the backlog is full, the worker is gone)."""
        if not handle.ready and env.kind not in ("reply", "undeliverable", "sent"):
            # frames others send to a starting actor wait (messages bounded by its mailbox, which
            # admit checks); answers to its own calls cannot
            if len(handle.backlog) >= handle.limits.mailbox + MAX_BACKLOG:
                log.warning("dropped %s for %s: it is still starting and %d frames wait", env.kind, handle.path,
                            len(handle.backlog))
                return False
            handle.backlog.append(env)
        elif not self.send_now(handle, env):
            return False
        if env.kind in MAILBOX_KINDS:  # a message in the mailbox until the worker says it took it
            handle.queued += 1
            handle.queued_bytes += message_size(env)
            self.metrics.messages_in[handle.path] += 1
        return True

    def became_ready(self, handle: WorkerHandle) -> None:
        """`handle` said ready: what waited for it goes now, in order (already counted in its mailbox)."""
        backlog, handle.backlog = handle.backlog, []
        for frame in backlog:
            self.send_now(handle, frame)

    def reply(self, handle: WorkerHandle, corr: int, body: dict) -> None:
        self.to_worker(handle, Envelope("reply", "node", handle.actor_id, corr, body))

    def deliver(self, target: WorkerHandle | RemoteActor, message: Envelope) -> str | None:
        """Send an admitted `send` to its target now, here or on its node: None, or why it could not go."""
        if isinstance(target, RemoteActor):
            assert self.remote is not None
            return self.remote.publish(target.node, {"k": "send", "to": target.actor_id, "sender": message.sender,
                                                     "body": message.body})
        return None if self.to_worker(target, message) else f"actor {target.path} is not reachable"

    def undeliverable(self, handle: WorkerHandle, to: str, error: str) -> None:
        """Tell `handle` a message it sent to `to` was not delivered, and why (after its send returned)."""
        self.to_worker(handle, Envelope("undeliverable", "node", handle.actor_id, 0, {"to": to, "error": error}))

    def sent(self, handle: WorkerHandle, corr: int, error: str | None) -> None:
        self.to_worker(handle, Envelope("sent", "node", handle.actor_id, corr,
                                        {"ok": None} if error is None else {"error": error}))

    def admit(self, target: WorkerHandle, body: object) -> str | None:
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

    # ---- from a worker ------------------------------------------------------------------------

    def on_send(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """An actor's one-way message: admitted (or refused) now; delivered now, or held until the
        sender's events are stored (`release`) when the sender holds its effects."""
        self.metrics.messages_out[handle.path] += 1
        target, why = self.route(env.to, handle.path)
        if target is None:
            error: str | None = why
        elif not isinstance(env.body, bytes):
            error = "a message must be bytes"
        else:
            # an actor on another node is admitted by the node that runs it: a refusal comes back
            error = None if isinstance(target, RemoteActor) else self.admit(target, env.body)
            message = Envelope("send", handle.actor_id, target.actor_id, 0, env.body)
            if error is None and handle.durable_effects and env.corr:  # leaves on the sender's `release`
                self.outbox.hold(ident, HeldSend(env.corr, target, message, len(env.body)))
            elif error is None:
                error = self.deliver(target, message)
        if env.corr:  # the sender waits for this answer: its send returns the error
            self.sent(handle, env.corr, error)
        elif error is not None:
            self.undeliverable(handle, env.to, error)

    def on_release(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """`handle`'s events are stored through its send `env.body`: those sends go to their targets
        (the target's current incarnation if it restarted meanwhile)."""
        through = env.body
        if not isinstance(through, int):
            log.error("dropped a malformed release from %s", handle.path)
            return
        for held in self.outbox.release(ident, through):
            target: WorkerHandle | RemoteActor | None = held.target if isinstance(held.target, RemoteActor) \
                else self.registry.workers.get(held.target.path)  # its current incarnation
            error = f"actor {held.target.path} is not reachable" \
                if target is None or target.actor_id != held.target.actor_id else self.deliver(target, held.env)
            if error is not None:
                self.undeliverable(handle, held.target.path, error)

    def on_took(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """The worker took messages out of its mailbox: [count, bytes]."""
        body = env.body
        if isinstance(body, list) and len(body) == 2 and all(isinstance(v, int) for v in body):
            handle.queued = max(0, handle.queued - body[0])
            handle.queued_bytes = max(0, handle.queued_bytes - body[1])

    def on_request(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        self.metrics.messages_out[handle.path] += 1
        target, why = self.route(env.to, handle.path)
        if target is None:
            self.reply(handle, env.corr, {"error": why})
        elif isinstance(target, RemoteActor):
            self.forward(PendingRequest(target, ident, env.corr), handle.actor_id, env.body, None)
        elif (refusal := self.admit(target, env.body)) is not None:
            self.reply(handle, env.corr, {"error": refusal})
        else:
            self.forward(PendingRequest(target, ident, env.corr), handle.actor_id, env.body, None)

    def on_reply(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        answered = self.pending.get(env.corr)
        if answered is None or answered.target is not handle:  # only the asked worker answers it
            return
        self._finish(env.corr)
        body = env.body if isinstance(env.body, dict) else {"error": "malformed reply"}
        if answered.channel is not None:
            body = self._channel_answered(answered, body)
        self.answer(answered, body)

    # ---- requests through the node ------------------------------------------------------------

    def forward(self, pending: PendingRequest, sender: str, body: Any, timeout_ms: int | None,
                kind: str = "request") -> None:
        """Ask `pending.target` (a `request`, `state` or `channel_open`); its reply, its exit or
        `timeout_ms` answers whoever asked."""
        corr = self.loop.next_corr()
        target = pending.target
        if isinstance(target, RemoteActor):
            assert self.remote is not None
            error = self.remote.publish(target.node, {"k": kind, "to": target.actor_id, "corr": corr,
                                                      "sender": sender, "body": body, "timeout_ms": timeout_ms})
            if error is not None:
                self.answer(pending, {"error": error})
                return
        elif not self.to_worker(target, Envelope(kind, sender, target.actor_id, corr, body)):
            self.answer(pending, {"error": f"actor {target.path} is not reachable"})
            return
        self.pending[corr] = pending
        if timeout_ms:
            def expire() -> None:  # the timer is the one firing: nothing to cancel
                p = self.pending.pop(corr, None)
                if p is not None:
                    self.answer(p, {"error": f"no reply from {p.target.path} within {timeout_ms} ms"})
            pending.timer = self.loop.after(timeout_ms / 1000, expire)

    def _finish(self, corr: int) -> PendingRequest | None:
        """The request in flight under `corr`, no longer in flight (its timer cancelled), or None."""
        pending = self.pending.pop(corr, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancelled = True
        return pending

    def answer(self, pending: PendingRequest, body: dict) -> None:
        if pending.answer_cli is not None:
            pending.answer_cli(body)
            return
        origin = self.registry.by_identity.get(pending.origin_ident)
        if origin is not None:
            self.reply(origin, pending.origin_corr, body)

    def worker_exited(self, handle: WorkerHandle, reason: str, exit_kind: str) -> None:
        """What `handle` held in flight: its held sends dropped, its channels closed, the requests
        it was asked answered with its exit."""
        dropped = self.outbox.drop(handle.identity)
        if dropped:
            log.warning("%s: %d message(s) it sent were not delivered: the events of the calls that sent them "
                        "were not stored before it exited", handle.path, len(dropped))
        for channel_id, peer in self.channels.close_all(handle):
            self.to_worker(peer, Envelope("channel_close", "node", peer.actor_id, 0,
                                          {"channel": channel_id, "reason": f"{handle.path} ended"}))
        for corr, pending in list(self.pending.items()):
            if pending.target is handle:
                self._finish(corr)
                self.answer(pending, {"error": f"actor {handle.path} exited before replying ({reason})",
                                      "exit": exit_kind})

    # ---- other nodes (node/cluster.py carries the frames) --------------------------------------

    def _remote_send(self, frame: dict) -> None:
        """A message from an actor on another node: admitted here like a local one; a refusal goes
        back to its sender as `undeliverable`."""
        sender, body = str(frame["sender"]), frame["body"]
        target, why = self.registry.resolve(str(frame["to"]))
        error = why if target is None else (self.admit(target, body) if isinstance(body, bytes)
                                            else "a message must be bytes")
        if target is not None and error is None and \
                not self.to_worker(target, Envelope("send", sender, target.actor_id, 0, body)):
            error = f"actor {target.path} is not reachable"
        if error is not None and self.remote is not None:
            self.remote.publish(str(frame["from"]), {"k": "undeliverable", "sender": sender, "to": str(frame["to"]),
                                                     "error": error})

    def _remote_request(self, frame: dict) -> None:
        """A request (or state read) from another node: asked here, answered there."""
        remote, node, corr = self.remote, str(frame["from"]), int(frame["corr"])
        assert remote is not None

        def answer(body: dict) -> None:
            remote.publish(node, {"k": "reply", "corr": corr, "answer": body, "node_to": node})

        target, why = self.registry.resolve(str(frame["to"]))
        if target is None:
            answer({"error": why})
        elif (refusal := self.admit(target, frame["body"])) is not None:
            answer({"error": refusal})
        else:
            timeout = frame.get("timeout_ms")
            self.forward(PendingRequest(target, answer_cli=answer), str(frame["sender"]), frame["body"],
                         timeout if isinstance(timeout, int) and timeout > 0 else DEFAULT_REQUEST_TIMEOUT_MS)

    def _remote_reply(self, frame: dict) -> None:
        corr = int(frame["corr"])
        pending = self.pending.get(corr)
        if pending is None or not isinstance(pending.target, RemoteActor) or pending.target.node != frame["from"]:
            return  # late (timed out, or its node was declared down), or not from the node asked
        self._finish(corr)
        answer = frame["answer"]
        self.answer(pending, answer if isinstance(answer, dict) else {"error": "malformed reply"})

    def _remote_undeliverable(self, frame: dict) -> None:
        handle, _ = self.registry.resolve(str(frame["sender"]))
        if handle is not None:
            self.undeliverable(handle, str(frame["to"]), str(frame["error"]))

    def _request_not_carried(self, frame: dict, why: str) -> None:
        pending = self._finish(int(frame.get("corr") or 0))
        if pending is not None:
            self.answer(pending, {"error": why})

    def _send_not_carried(self, frame: dict, why: str) -> None:
        handle, _ = self.registry.resolve(str(frame.get("sender")))
        if handle is not None:
            self.undeliverable(handle, str(frame.get("to")), why)

    def _reply_not_carried(self, frame: dict, why: str) -> None:
        """A reply too big to cross: the asking node gets the error in its place (small enough)."""
        node = frame.get("node_to")
        if self.remote is not None and isinstance(node, str):
            self.remote.publish(node, {"k": "reply", "corr": frame.get("corr"), "answer": {"error": why}})

    def _node_down(self, node: str) -> None:
        """`node` stopped answering: every request waiting on it is answered now."""
        for corr, pending in list(self.pending.items()):
            if isinstance(pending.target, RemoteActor) and pending.target.node == node:
                self._finish(corr)
                self.answer(pending, {"error": f"node {node} is down (noconnection)", "exit": "noconnection"})

    # ---- channels (node/channels.py keeps the table) ------------------------------------------

    def on_channel(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """open / send / close from a worker; every one is answered (a `reply` for open, `sent`
        for the others) so the actor's host call returns the outcome."""
        body = env.body if isinstance(env.body, dict) else {}
        msg = body.get("msg", b"")
        if env.kind == "channel_open":
            target, why = self.registry.resolve(env.to, handle.path)
            if target is None or not isinstance(msg, bytes):
                self.reply(handle, env.corr, {"error": why or "an initial message must be bytes"})
            elif (refusal := self.admit(target, msg)) is not None:
                self.reply(handle, env.corr, {"error": refusal})
            else:
                channel_id = self.channels.new_id()
                pending = PendingRequest(target, ident, env.corr, channel=(channel_id, handle))
                self.forward(pending, handle.actor_id, {"channel": channel_id, "msg": msg},
                             DEFAULT_REQUEST_TIMEOUT_MS, kind="channel_open")
            return
        channel_id = body["channel"] if isinstance(body.get("channel"), str) else ""
        peer, error = self.channels.route(channel_id, handle)
        if peer is not None and env.kind == "channel_send":
            if not isinstance(msg, bytes):
                error = "a channel message must be bytes"
            else:
                error = self.admit(peer, msg)
                if error is None and not self.to_worker(peer, Envelope("channel_message", handle.actor_id,
                                                                       peer.actor_id, 0,
                                                                       {"channel": channel_id, "msg": msg})):
                    error = f"actor {peer.path} is not reachable"
        elif peer is not None:  # channel_close
            self.channels.remove(str(channel_id))
            self.to_worker(peer, Envelope("channel_close", handle.actor_id, peer.actor_id, 0,
                                          {"channel": channel_id, "reason": f"closed by {handle.path}"}))
        self.sent(handle, env.corr, error)

    def _channel_answered(self, pending: PendingRequest, body: dict) -> dict:
        """The target answered a channel-open: register the channel if it accepted (and the opener
        still runs); the opener's answer is the channel id or the refusal."""
        assert pending.channel is not None
        channel_id, opener = pending.channel
        target = pending.target
        assert isinstance(target, WorkerHandle)  # channels open between actors of one node
        accept = body.get("ok") if isinstance(body.get("ok"), dict) else None
        if accept is None:
            return {"error": str(body.get("error", "malformed answer to a channel open"))}
        if not accept.get("accepted"):
            message = accept.get("message")
            why = f": {bytes(message).decode('utf-8', 'replace')}" if isinstance(message, bytes) and message else ""
            return {"error": f"{target.path} refused the channel{why}"}
        if self.registry.workers.get(opener.path) is not opener:  # the opener ended meanwhile
            self.to_worker(target, Envelope("channel_close", "node", target.actor_id, 0,
                                            {"channel": channel_id, "reason": f"{opener.path} ended"}))
            return {"error": "the opener ended"}
        self.channels.add(channel_id, opener, target)
        return {"ok": channel_id}


__all__ = ["MAX_BACKLOG", "Mail", "PendingRequest", "SENT_KINDS"]
