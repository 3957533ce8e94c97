"""The handler contract: what one capability module declares, and the records it works with.

A handler is one capability an actor's manifest can grant (`[[handler]] type =
"store"`). Its module holds one `Handler` object, which says:

* `type`: the manifest name, and whether every actor has it (`always_granted`);
* `parse_settings(fields)`: its typed settings record, read with `config.fields`
  (defaults, ranges, unknown keys: each error names file, key and line);
* `interfaces`: the WIT interfaces it provides, by name inside each package it
  serves (`theater:simple`, and the seed's `ntwk:theater`);
* `functions(ctx)`: for one actor incarnation, the host functions of each of
  those interfaces (`HostFunction`): the live implementation, what the chain
  records of a call, and how replay turns that record back into the value the
  guest gets.

The worker links `functions(ctx)` into the component linker for the
interfaces the component imports; replay links the very same table and serves
every call from the chain through each function's `replay`. Nothing outside a
handler's module knows its functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import wasmtime.component as wc

from ...chain.event import WitChainEvent
from ...config.fields import Fields
from ...home import Home
from .. import fastabi

#: The package of the theater-otp interfaces, and the seed's name for the same interfaces.
PACKAGE = "theater:simple"
SEED_PACKAGE = "ntwk:theater"
PACKAGES = (PACKAGE, SEED_PACKAGE)

#: The most bytes one list<u8> may carry across the host boundary (a message, a state, a file read,
#: store content). wasmtime's host API copies a list value by value against a budget of about
#: 4 MiB per call ("fuel allocated for hostcalls exhausted" beyond it), shared by the call's
#: parameters and results; 2 MiB leaves room for the state and the reply.
MAX_LIST_BYTES = 2 * 1024 * 1024


class HostAbort(Exception):
    """Raised by a host implementation to abandon the whole export call (replay does, on a mismatch).

    wasmtime-py traps the guest and re-raises it after the call, so it never unwinds through wasm.
    """


class ActorCrash(Exception):
    """The actor returned `err`, trapped, broke a limit, or ran out of its CPU budget: a crash."""


class HostServices(Protocol):
    """What host functions need from the worker loop: sockets, clocks, the chain.

    The worker implements it for live runs. Replay serves host functions from
    the chain instead and calls only `record`, `log_line`, `log_at` and `output_line`.
    """

    def record(self, event_type: str, data: dict) -> None: ...
    def log_line(self, msg: str) -> bool: ...
    def output_line(self, stream: str, line: str) -> bool: ...
    def log_at(self, level: str, msg: str) -> bool: ...
    def request_shutdown(self, data: bytes | None) -> None: ...
    def send(self, target: str, msg: bytes) -> str | None: ...
    def request(self, target: str, msg: bytes, timeout_ms: int) -> bytes | str: ...
    def respond(self, request_id: str, msg: bytes) -> str | None: ...
    def outstanding(self) -> list[str]: ...
    def cancel_request(self, request_id: str) -> str | None: ...
    def http_listen(self, listener: dict) -> int | str: ...
    def http_unlisten(self, port: int) -> str | None: ...
    def open_channel(self, target: str, msg: bytes) -> Any: ...
    def send_on_channel(self, channel_id: str, msg: bytes) -> str | None: ...
    def close_channel(self, channel_id: str) -> str | None: ...
    def sleep(self, ms: int) -> str | None: ...
    def supervise(self, op: str, args: dict) -> dict: ...
    def own_events(self) -> list[WitChainEvent]: ...


@dataclass(frozen=True)
class ActorInfo:
    """Who the host functions serve: one incarnation of one actor."""

    actor_id: str
    name: str
    path: str
    incarnation: int
    home: Home | None = None


@dataclass
class HostContext:
    """What a handler's functions are built from: the actor, the loop's services, its settings.

    `replaying` is true when the functions are built for replay: they are
    then never called live (each call is served by `HostFunction.replay`), so a
    handler must not open live resources (sockets, files) while building them.
    """

    actor: ActorInfo
    services: HostServices
    settings: Any = None
    replaying: bool = False
    #: called (newest first) when the actor instance closes: resources a handler opened for it
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    #: every handler this actor holds: type -> settings (a handler that reads another's settings,
    #: e.g. runtime.get-env reads the environment handler's allow-list)
    grants: dict[str, Any] = field(default_factory=dict)
    #: one dict per actor instance, shared by its handlers' contexts: what a handler keeps for the
    #: worker loop to read (http-framework's routes, under its module's key)
    shared: dict[str, Any] = field(default_factory=dict)

    def on_close(self, cleanup: Callable[[], None]) -> None:
        self.cleanups.append(cleanup)


def recordable(value: Any) -> Any:
    """A host-call value as plain msgpack data: variants and Ok/Err become {"ok": v} / {"err": v},
    records become maps of their fields."""
    if isinstance(value, wc.Variant):
        return {value.tag: recordable(value.payload)}
    if isinstance(value, fastabi.Ok):
        return {"ok": recordable(value.value)}
    if isinstance(value, fastabi.Err):
        return {"err": recordable(value.value)}
    if isinstance(value, wc.Record):
        return {k: recordable(v) for k, v in sorted(vars(value).items())}
    if isinstance(value, (list, tuple)):
        return [recordable(v) for v in value]
    return value


def record_call(args: tuple, result: Any) -> dict:
    """The default chain record of a host call: its arguments and its result."""
    return {"args": [recordable(a) for a in args], "result": recordable(result)}


def record_args(args: tuple, result: Any) -> dict:
    """A chain record of the arguments only (the result says nothing, or is not reproducible)."""
    return {"args": [recordable(a) for a in args]}


def replay_result(data: dict) -> Any:
    """The default replay: the recorded result, as recorded (plain values: int, str, bytes, None)."""
    return data.get("result")


def replay_tagged(data: dict) -> Any:
    """Replay of a `result<T, E>` recorded as {"ok": v} / {"err": e}: an explicit Ok or Err."""
    value = data.get("result")
    if isinstance(value, dict) and len(value) == 1:
        (tag, payload), = value.items()
        return fastabi.Ok(payload) if tag == "ok" else fastabi.Err(payload)
    return value


def record_of(**fields: Any) -> wc.Record:
    """A WIT record value (field names as in WIT, e.g. `is-file`)."""
    record = wc.Record()
    for key, value in fields.items():
        setattr(record, key.replace("_", "-"), value)
    return record


@dataclass(frozen=True)
class HostFunction:
    """One host function: the live implementation (called with the guest's arguments), what
    the chain records of one call, and how replay turns that record back into the result.

    `call` may return an `err` value for the guest (a str, or `fastabi.Err`), raise
    `ActorCrash` to end the export call as a crash, or raise `HostAbort` to abandon it.
    Any other exception is a host bug: the guest gets `err("internal error ...")`.
    """

    call: Callable[..., Any]
    #: the event's data; may return None for a call that leaves no event (only when `optional`)
    record: Callable[[tuple, Any], dict | None] = record_call
    replay: Callable[[dict], Any] = replay_result
    #: a call whose event may be missing (a log line dropped by the log rate): its result must
    #: then be None, and replay serves None when the chain does not have it next
    optional: bool = False


#: interface (full name without version) -> function name -> HostFunction
FunctionTable = dict[str, dict[str, HostFunction]]


class Handler:
    """A capability: its manifest type, settings, interfaces and host functions (see the module doc)."""

    #: the manifest's `[[handler]] type`
    type: ClassVar[str] = ""
    #: granted to every actor whether or not its manifest lists it
    always_granted: ClassVar[bool] = False
    #: False for the host's own interfaces that no manifest names (WASI)
    in_manifest: ClassVar[bool] = True
    #: interface names, inside each package in `packages` (what the actor imports)
    interfaces: ClassVar[tuple[str, ...]] = ()
    #: interfaces an actor holding this handler exports for it (http-server's handle-request):
    #: `build` puts them in the world it generates
    exports: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = PACKAGES
    #: True for handlers whose traffic the node's HTTP gateway brings (http-server, websocket-server,
    #: http-framework): the worker of an actor granted one connects to the gateway
    via_gateway: ClassVar[bool] = False
    #: one line for `validate` and the docs
    summary: ClassVar[str] = ""

    def provides(self) -> tuple[str, ...]:
        """The full interface names this handler serves (`theater:simple/store`, ...)."""
        return tuple(f"{p}/{i}" for p in self.packages for i in self.interfaces)

    def parse_settings(self, fields: Fields) -> Any:
        """Read this handler's settings from its `[[handler]]` table; the default takes none."""
        fields.done()
        return None

    def default_settings(self) -> Any:
        """The settings of an actor whose manifest does not list this (always granted) handler."""
        return self.parse_settings(Fields(_NoWhere(), f"handler.{self.type}", {}))

    def functions(self, ctx: HostContext) -> FunctionTable:
        raise NotImplementedError


class _NoWhere:
    def error(self, key: str, message: str, value: object = None):  # pragma: no cover - defaults are valid
        raise AssertionError(f"default settings of a handler are invalid: {key}: {message}")


def same_functions(table: dict[str, HostFunction], *interfaces: str) -> FunctionTable:
    """The same function table under several interface names (both packages)."""
    return {iface: table for iface in interfaces}
