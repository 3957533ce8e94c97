"""Calls into an actor and the chain events that record them, shared by the worker and by replay.

Each export call is recorded as one event after it returns (its host calls,
recorded as they happen, come before it in the chain). The data of that
event is built here and only here, so a replay that re-runs the same call
produces byte-identical data when the actor behaves the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .host import Actor, ActorCrash, state_digest


@dataclass(frozen=True)
class ExportCall:
    """One call into the actor. `kind`: init | send | request | child-error | child-exit | child-external_stop |
    channel-open | channel-message | channel-close | http-request | websocket-message."""

    kind: str
    params: list
    meta: dict = field(default_factory=dict)  # from, request_id, child, reason, handler (an http-framework route's)

    @property
    def event_type(self) -> str:
        if self.kind == "init":
            return "actor.init"
        if self.kind in ("send", "request"):
            return f"message.{self.kind}"
        if self.kind.startswith("channel-"):
            return f"channel.{self.kind.removeprefix('channel-')}"
        if self.kind == "http-request":
            return "http.request"
        if self.kind == "websocket-message":
            return "websocket.message"
        return f"supervisor.{self.kind}"


@dataclass
class CallOutcome:
    event_type: str
    data: dict
    reply: Any = None  # a request's reply bytes, or an HTTP request's response
    crash: ActorCrash | None = None


def perform(actor: Actor, call: ExportCall) -> CallOutcome:
    """Run `call` and build its event; a crash is returned (with its event), not raised."""
    data: dict[str, Any] = {}
    if call.kind in ("send", "request"):
        data["from"] = call.meta.get("from")
    if call.kind == "request":
        data["request_id"] = call.meta.get("request_id")
    if call.kind.startswith("child-"):
        data["child"] = call.meta.get("child")
        data["reason"] = call.meta.get("reason")
    else:
        data["params"] = list(call.params)
    if call.kind.startswith("channel-"):
        data["channel"] = call.meta.get("channel")
        data["from"] = call.meta.get("from")
    if call.kind == "channel-close":
        data["reason"] = call.meta.get("reason")
    reply: object = None  # a request's reply bytes, an HTTP response, WebSocket messages to send
    try:
        if call.kind == "http-request":
            handler = call.meta.get("handler")
            if handler is not None:
                data["handler"] = handler
            response = actor.handle_http_request(call.params[0] if call.params and isinstance(call.params[0], dict)
                                                 else {}, handler)
            body = response.get("body")
            data["response"] = {"status": response["status"], "headers": response["headers"],
                                "body": None if body is None else {"sha256": hashlib.sha256(body).hexdigest(),
                                                                   "size": len(body)}}
            reply = response
        elif call.kind == "websocket-message":
            event = call.params[0] if call.params and isinstance(call.params[0], dict) else {}
            raw_message = event.get("message")
            ws_message = raw_message if isinstance(raw_message, dict) else {}
            sent = actor.handle_websocket_message(int(event.get("connection") or 0), ws_message)
            data["sent"] = [{"ty": m["ty"], "size": len(m["text"].encode() if m["text"] is not None else
                                                        m["data"] or b"")} for m in sent]
            reply = sent
        elif call.kind == "channel-open":
            accepted, message = actor.handle_channel_open(str(call.meta.get("channel")), _bytes(call.params[0]))
            data["accepted"], data["message"] = accepted, message
            reply = message
        elif call.kind == "channel-message":
            data["handled"] = actor.handle_channel_message(str(call.meta.get("channel")), _bytes(call.params[0]))
        elif call.kind == "channel-close":
            data["handled"] = actor.handle_channel_close(str(call.meta.get("channel")))
        elif call.kind == "init":
            actor.init(call.params[0])
        elif call.kind == "send":
            actor.handle_send(_bytes(call.params[0]))
        elif call.kind == "request":
            reply = actor.handle_request(str(call.meta.get("request_id")), _bytes(call.params[0]))
            data["reply"] = reply
        else:
            reason = call.meta.get("reason")
            data["handled"] = actor.child_event(call.kind.removeprefix("child-"), str(call.meta.get("child")),
                                                reason.encode() if isinstance(reason, str) else None)
    except ActorCrash as crash:
        data["error"] = str(crash)
        return CallOutcome(call.event_type, data, None, crash)
    data["state_sha256"] = state_digest(actor.state)
    return CallOutcome(call.event_type, data, reply)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise ActorCrash(f"message payload must be bytes, got {type(value).__name__}")
