"""wschat: a Python actor that serves WebSocket (the websocket-server handler).

State: JSON {"messages": N}. A new connection is greeted with `hello N` (its id); a text frame T is
answered `echo: T (#count)`; a binary frame comes back as it is; `bye` closes the connection;
`crash` raises (the connection is closed with 1011 and the actor restarts).
"""

import theater_sdk as sdk
from wit_world import exports
from wit_world.imports import websocket_types as wt

DEFAULT = {"messages": 0}


def _text(text: str) -> wt.WebsocketMessage:
    return wt.WebsocketMessage(wt.MessageType_Text(), None, text)


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        return (sdk.dump(sdk.load(state, DEFAULT)),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        return (state,)

    def handle_request(self, state, params):
        _request_id, msg = params
        return (state, (msg,))


class WebsocketServer(sdk.Guard, exports.WebsocketServer):
    def handle_message(self, state, params):
        connection, msg = params
        s = sdk.load(state, DEFAULT)
        s["messages"] += 1
        if isinstance(msg.ty, wt.MessageType_Connect):
            out = [_text(f"hello {connection}")]
        elif isinstance(msg.ty, wt.MessageType_Text):
            if msg.text == "crash":
                raise RuntimeError("asked to crash")
            if msg.text == "bye":
                out = [wt.WebsocketMessage(wt.MessageType_Close(), None, None)]
            else:
                out = [_text(f"echo: {msg.text} (#{s['messages']})")]
        elif isinstance(msg.ty, wt.MessageType_Binary):
            out = [wt.WebsocketMessage(wt.MessageType_Binary(), msg.data, None)]
        else:
            out = []
        return (sdk.dump(s), (wt.WebsocketResponse(out),))
