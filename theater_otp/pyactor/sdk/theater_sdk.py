"""theater_sdk: small helpers for theater-otp actors written in Python.

This file runs INSIDE the component: componentize-py bundles it with your app
(`theater-otp build` finds it in your project, or adds the copy that ships with
theater-otp to the Python path). It only wraps the generated bindings
(`wit_world.imports.*`); your classes still subclass the WIT classes
themselves (`class Actor(exports.Actor)`), and everything the bindings offer
stays usable next to these helpers.

    import theater_sdk as sdk
    from wit_world import exports

    class Actor(sdk.Guard, exports.Actor):
        def init(self, state):
            s = sdk.load(state, {"count": 0})
            sdk.log("started at", s["count"])
            return (sdk.dump(s),)

State is bytes in and bytes out (`option<list<u8>>` in WIT); `load`/`dump`
turn it into JSON values or a dataclass and back.

Messaging: `send(target, msg)`, `request(target, msg) -> bytes`,
`request_json(...)`, `respond(request_id, msg)`; a target is an actor path
(root/team/a), a sibling's child id, a unique path suffix, a unique manifest
name or an actor id. `msg` may be bytes, str (UTF-8) or any JSON value.
A failed call raises `CallError` (catch it, or let it crash the actor).

Logging and time: `log(*parts)` (a line in the node's log and an event in the
chain), `now()` (seconds since the epoch, float), `now_ms()`, `sleep(ms)`.

`Guard`: list it first in a class's bases. Any exception escaping `init` or
a `handle_*` method is turned into `Err(traceback)`, so the crash reason the
runtime records (actor.crash, lifecycle.exited, `theater-otp events`) carries
the Python traceback. Without it the actor still crashes, but the reason is
only "wasm `unreachable` instruction executed" (componentize-py prints the
traceback to stderr, which reaches the node's log only).

Call host functions (log, send, now ...) only inside the methods: the module's
top level runs at build time, where every import is a trapping stub.

Import everything you need at the top of your modules: the component has no
file system at run time, so a module first imported inside a handler is not
found.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import traceback
from typing import Any

from componentize_py_types import Err
from wit_world.imports import message_server_host, runtime

try:  # both theater:simple worlds import timing; a custom world may not
    from wit_world.imports import timing
except ImportError:  # pragma: no cover - depends on the world
    timing = None

__all__ = [
    "CallError", "Guard", "NoChannels", "Err", "load", "dump", "text", "to_bytes", "send", "request", "request_json",
    "respond", "outstanding", "log", "now", "now_ms", "sleep", "shutdown", "format_exception",
]

#: Longest traceback put into an Err (the chain stores it; the end of a traceback matters most).
MAX_ERROR_CHARS = 8000


class CallError(Exception):
    """A host call returned `err` (an unknown target, a failed request, a timeout ...)."""


# ---- state ---------------------------------------------------------------------------------------

def load(state: bytes | None, default: Any = None) -> Any:
    """The actor's state bytes as a JSON value.

    No state (None or b"") gives a copy of `default` (or {}). `default` may be
    a dataclass type: then the JSON object becomes an instance of it
    (`load(state, Counter)`), and no state gives `Counter()`.
    """
    is_dc = isinstance(default, type) and dataclasses.is_dataclass(default)
    if not state:
        if is_dc:
            return default()
        return {} if default is None else copy.deepcopy(default)
    value = json.loads(state.decode("utf-8"))
    if is_dc:
        return default(**value)
    if isinstance(default, dict) and isinstance(value, dict):
        merged = copy.deepcopy(default)
        merged.update(value)  # keys added to the default later get their default value
        return merged
    return value


def dump(value: Any) -> bytes:
    """A JSON value (or a dataclass instance) as compact, key-sorted UTF-8 bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def text(data: bytes | None) -> str:
    """Message bytes as text (undecodable bytes become U+FFFD)."""
    return "" if data is None else data.decode("utf-8", "replace")


def to_bytes(msg: Any) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg)
    if isinstance(msg, str):
        return msg.encode("utf-8")
    return dump(msg)


# ---- messaging -----------------------------------------------------------------------------------

def send(target: str, msg: Any) -> None:
    """One-way message. Returns at once; an undeliverable message is recorded in this actor's chain."""
    try:
        message_server_host.send(target, to_bytes(msg))
    except Err as exc:
        raise CallError(str(exc.value)) from None


def request(target: str, msg: Any) -> bytes:
    """Request and wait for the reply (up to the manifest's request_timeout_ms)."""
    try:
        return message_server_host.request(target, to_bytes(msg))
    except Err as exc:
        raise CallError(str(exc.value)) from None


def request_json(target: str, msg: Any) -> Any:
    """`request`, with the reply decoded as JSON."""
    return json.loads(request(target, msg).decode("utf-8"))


def respond(request_id: str, msg: Any) -> None:
    """Answer a request this actor deferred (its handle_request returned a None reply)."""
    try:
        message_server_host.respond_to_request(request_id, to_bytes(msg))
    except Err as exc:
        raise CallError(str(exc.value)) from None


def outstanding() -> list[str]:
    """Ids of the requests this actor received and has not answered yet."""
    return list(message_server_host.list_outstanding_requests())


# ---- runtime and time ----------------------------------------------------------------------------

def log(*parts: Any) -> None:
    """A line in the node's log, recorded in the actor's chain (host.runtime.log)."""
    runtime.log(" ".join(p if isinstance(p, str) else repr(p) for p in parts))


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (recorded in the chain). Needs the timing handler."""
    if timing is None:
        raise CallError("this world does not import theater:simple/timing")
    return timing.now()


def now() -> float:
    """Wall-clock seconds since the Unix epoch, like time.time() (recorded in the chain)."""
    return now_ms() / 1000.0


def sleep(ms: int) -> None:
    """Sleep `ms` milliseconds (the actor handles nothing else meanwhile)."""
    if timing is None:
        raise CallError("this world does not import theater:simple/timing")
    try:
        timing.sleep(int(ms))
    except Err as exc:
        raise CallError(str(exc.value)) from None


def shutdown(data: Any = None) -> None:
    """End this actor normally (exit reason `normal`) once the current call returns."""
    try:
        runtime.shutdown(None if data is None else to_bytes(data))
    except Err as exc:
        raise CallError(str(exc.value)) from None


# ---- crashes that say why -----------------------------------------------------------------------

def format_exception(exc: BaseException) -> str:
    """The traceback of `exc` as text, its end kept when it is very long."""
    out = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(out) > MAX_ERROR_CHARS:
        out = "...\n" + out[-(MAX_ERROR_CHARS - 4):]
    return out


def _guarded(func):
    def call(self, *args):
        try:
            return func(self, *args)
        except Err:
            raise
        except Exception as exc:  # anything else would trap: make it an err that carries the traceback
            tb = exc.__traceback__
            if tb is not None and tb.tb_next is not None:
                exc = exc.with_traceback(tb.tb_next)  # start at the actor's method, not this wrapper
            raise Err(format_exception(exc)) from None

    call.__name__ = func.__name__
    call.__qualname__ = getattr(func, "__qualname__", func.__name__)
    call.__doc__ = func.__doc__
    call.__wrapped__ = func
    return call


class NoChannels:
    """The channel methods message-server-client requires, for actors without channels (theater-otp
    has none yet): opening one is refused with `err`, messages and closes keep the state.
    List it after `Guard`: `class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient)`.
    """

    def handle_channel_open(self, state, params):
        raise Err("channels are not supported")

    def handle_channel_message(self, state, params):
        return (state,)

    def handle_channel_close(self, state, params):
        return (state,)


class Guard:
    """List first in the bases of a WIT export class: `class Actor(sdk.Guard, exports.Actor)`.

    `init` and every `handle_*` method defined in the class body are wrapped
    so that an exception becomes `Err(<traceback>)`: still a crash of the
    actor, but one whose recorded reason is the Python traceback.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if callable(value) and (name == "init" or name.startswith("handle_")):
                setattr(cls, name, _guarded(value))
