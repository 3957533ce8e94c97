"""message-server: actor-to-actor messages (send, request, deferred replies) and channels.

Granted to every actor. Settings: `request_timeout_ms` (how long `request`
waits for the reply; default 30 s). `send` returns once the message is in the
target's mailbox, or with why it is not (docs/limits.md). Channels: the
target's handle-channel-open accepts or refuses `open-channel`; messages and
the close reach the other end's exports; when either end stops, the other is
told through handle-channel-close (node/channels.py).

Every call is recorded with its result; replay serves the recorded results (a
replayed `request` gets the reply the actor got, without the other actor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config.fields import Fields
from .. import fastabi
from .base import FunctionTable, Handler, HostContext, HostFunction, replay_tagged, same_functions

DEFAULT_REQUEST_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class MessageServerSettings:
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS


def _tagged(value: Any) -> Any:
    """result<channel-id, string>: both sides are strings, so the ok must be explicit."""
    return value if isinstance(value, fastabi.Err) else fastabi.Ok(value)


class MessageServer(Handler):
    type = "message-server"
    always_granted = True
    interfaces = ("message-server-host",)
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
        table["open-channel"] = HostFunction(lambda target, msg: _tagged(s.open_channel(target, msg)),
                                             replay=replay_tagged)
        table["send-on-channel"] = HostFunction(s.send_on_channel)
        table["close-channel"] = HostFunction(s.close_channel)
        return same_functions(table, *self.provides())


HANDLER = MessageServer()
