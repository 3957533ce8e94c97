"""message-server: actor-to-actor messages (send, request, deferred replies).

Granted to every actor. Settings: `request_timeout_ms` (how long `request`
waits for the reply; default 30 s). Every call is recorded with its result;
replay serves the recorded results (a replayed `request` gets the reply the
actor got, without the other actor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config.fields import Fields
from .base import PACKAGE, FunctionTable, Handler, HostContext, HostFunction

DEFAULT_REQUEST_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class MessageServerSettings:
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS


def _channels_unsupported(*_args: Any) -> str:
    return "channels are not supported by this theater-otp version"


class MessageServer(Handler):
    type = "message-server"
    always_granted = True
    interfaces = ("message-server-host",)
    packages = (PACKAGE,)
    summary = "send, request and answer messages to other actors (granted to every actor)"

    def parse_settings(self, fields: Fields) -> MessageServerSettings:
        timeout = fields.int("request_timeout_ms", DEFAULT_REQUEST_TIMEOUT_MS, minimum=1)
        fields.done()
        assert timeout is not None
        return MessageServerSettings(timeout)

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings: MessageServerSettings = ctx.settings or MessageServerSettings()
        s = ctx.services
        table = {
            "send": HostFunction(s.send),
            "request": HostFunction(lambda target, msg: s.request(target, msg, settings.request_timeout_ms)),
            "respond-to-request": HostFunction(s.respond),
            "list-outstanding-requests": HostFunction(s.outstanding),
            "cancel-request": HostFunction(s.cancel_request),
        }
        for name in ("open-channel", "send-on-channel", "close-channel"):
            table[name] = HostFunction(_channels_unsupported)
        return {f"{PACKAGE}/message-server-host": table}


HANDLER = MessageServer()
