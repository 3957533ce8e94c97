"""One actor instance inside wasmtime: the store, the linked host interfaces, the export calls.

`Actor` owns the Store, Linker and Instance (closed together by `close()`).
It links, for each interface the component imports, the function table of
the handler that provides it (worker/handlers): live, each call runs the
handler's implementation; in replay (`recorded` given), each call is served
from the chain through the function's `replay`. Either way the call is
recorded the same way, so a replay regenerates the same events.

Host functions never let a Python exception unwind through wasm: a failure
that is the caller's fault becomes an `err` result, anything else is logged
and becomes `err("internal error")`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable

import wasmtime
import wasmtime.component as wc

from ..config.model import ActorLimits
from . import fastabi
from .component import ACTOR_EXPORT, MESSAGE_CLIENT_EXPORT, PACKAGE
from .cpu import CpuBudget, EpochTicker
from .handlers import interface_name, owner_of
from .handlers.base import (
    MAX_LIST_BYTES,
    PACKAGES,
    ActorCrash,
    ActorInfo,
    HostAbort,
    HostContext,
    HostFunction,
    HostServices,
    record_of,
    recordable,
)

SUPERVISOR_HANDLERS_EXPORT = f"{PACKAGE}/supervisor-handlers"
HTTP_SERVER_EXPORT = f"{PACKAGE}/http-server"
WEBSOCKET_EXPORT = f"{PACKAGE}/websocket-server"
HTTP_HANDLERS_EXPORT = f"{PACKAGE}/http-handlers"
#: message-type cases that carry nothing (the payload of `other` is a string)
_WS_TYPES = ("text", "binary", "connect", "close", "ping", "pong")

fastabi.install()

log = logging.getLogger("theater_otp.worker")

#: Serves one host call in replay: (event type, optional) -> the recorded event's data, or None for
#: an optional call the chain does not have next.
Recorded = Callable[[str, bool], "dict | None"]

__all__ = ["Actor", "ActorCrash", "HostAbort", "HostServices", "Recorded", "state_digest"]


#: How much of what the guest printed to stderr during a call that trapped goes into the crash reason.
STDERR_IN_CRASH = 4000


def host_event_type(iface: str, func: str) -> str:
    """The chain's name for a call of `func` of `iface`: `host.store.get` for our interfaces (either
    package: the seed's spelling is the same handler), `host.wasi:random/random.get-random-u64` for WASI."""
    package, _, short = iface.partition("/")
    return f"host.{short}.{func}" if package in PACKAGES else f"host.{iface}.{func}"


def state_digest(state: bytes | None) -> str | None:
    return hashlib.sha256(state).hexdigest() if state is not None else None


class Actor:
    """A live actor instance. Invariant: `state` is the state returned by the last successful export call."""

    def __init__(self, engine: wasmtime.Engine, component: wc.Component, services: HostServices,
                 grants: dict[str, Any], limits: ActorLimits, imports: tuple[str, ...], actor: ActorInfo,
                 ticker: EpochTicker, recorded: Recorded | None = None):
        self.services = services
        self.limits = limits
        self.recorded = recorded
        self.store = wasmtime.Store(engine)
        self.store.set_limits(memory_size=limits.memory_bytes)
        self.ticker = ticker
        self.budget = CpuBudget(self.store, limits.cpu_ms)
        self.state: bytes | None = None
        #: what the guest wrote to stderr during the current export call (a toolchain's traceback)
        self._stderr_during_call = bytearray()
        self.linker = wc.Linker(engine)
        self._contexts: list[HostContext] = []
        #: what handlers keep for the worker loop (HostContext.shared)
        self.shared: dict[str, Any] = {}
        if any(name.startswith("wasi:") for name in imports):
            self._link_wasi_base()
        self._link(grants, imports, actor)
        self.budget.start()  # instantiation runs the component's start functions
        try:
            self.instance = self.linker.instantiate(self.store, component)
        except wasmtime.WasmtimeError as exc:
            raise ActorCrash(f"instantiation failed: {_first_line(exc)}") from None
        #: the exports an actor may have, found now; init's conversions are planned now, each
        #: other's on its first call (planning reads the whole type through the C API, ~2-3 ms an
        #: export; many are never called in a worker's life)
        self._exported: dict[tuple[str, str], wc.Func] = {}
        self.funcs: dict[tuple[str, str], fastabi.TypedFunc] = {}
        for iface, name in ((ACTOR_EXPORT, "init"), (MESSAGE_CLIENT_EXPORT, "handle-send"),
                            (MESSAGE_CLIENT_EXPORT, "handle-request"),
                            (MESSAGE_CLIENT_EXPORT, "handle-channel-open"),
                            (MESSAGE_CLIENT_EXPORT, "handle-channel-message"),
                            (MESSAGE_CLIENT_EXPORT, "handle-channel-close"),
                            (HTTP_SERVER_EXPORT, "handle-request"),
                            (HTTP_HANDLERS_EXPORT, "handle-request"),
                            (WEBSOCKET_EXPORT, "handle-message"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-error"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-exit"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-external-stop")):
            iface_idx = component.get_export_index(iface)
            func_idx = component.get_export_index(name, iface_idx) if iface_idx is not None else None
            func = self.instance.get_func(self.store, func_idx) if func_idx is not None else None
            if func is not None:
                self._exported[(iface, name)] = func
        self._typed(ACTOR_EXPORT, "init")  # every actor calls it first: planned before its turn

    def close(self) -> None:
        """Close the store and linker and what the handlers opened for this instance (idempotent)."""
        contexts, self._contexts = self._contexts, []
        for ctx in contexts:
            for cleanup in reversed(ctx.cleanups):
                cleanup()
        self.funcs.clear()
        self._exported.clear()
        self.linker.close()
        self.store.close()

    def exports(self, iface: str, name: str) -> bool:
        return (iface, name) in self._exported

    def _typed(self, iface: str, name: str) -> fastabi.TypedFunc | None:
        """The export `iface.name` with its conversions planned (on its first call), or None."""
        func = self.funcs.get((iface, name))
        if func is None and (raw := self._exported.get((iface, name))) is not None:
            func = self.funcs[(iface, name)] = fastabi.TypedFunc(raw, self.store)
        return func

    # ---- linking host interfaces ------------------------------------------------------

    def _link(self, grants: dict[str, Any], imports: tuple[str, ...], actor: ActorInfo) -> None:
        """Define each imported interface whose handler this actor holds (WASI always): exactly
        what the component imports, so a start links no more than it needs. An import nobody
        provides is left undefined (`check_actor_abi` refused such a component before start)."""
        tables: dict[str, dict] = {}
        contexts = self._contexts
        with self.linker.root() as root:
            for name in imports:
                handler = owner_of(name)
                if handler is None or (handler.type not in grants and not handler.always_granted):
                    continue
                if handler.type not in tables:
                    ctx = HostContext(actor, self.services, grants.get(handler.type), self.recorded is not None,
                                      grants=grants, shared=self.shared)
                    contexts.append(ctx)
                    tables[handler.type] = handler.functions(ctx)
                iface = interface_name(name)
                functions = tables[handler.type].get(iface)
                if functions is None:
                    continue
                # WASI interfaces carry their version in the instance name; ours are unversioned
                with root.add_instance(name if name.startswith("wasi:") else iface) as instance:
                    for func, fn in functions.items():
                        instance.add_func(func, self._host(iface, func, fn))

    def _link_wasi_base(self) -> None:
        """WASI 0.2 with nothing granted: no preopened directories, no environment, no
        arguments, no network; stdout and stderr go to the actor's log line by line. Its clocks
        and randomness are shadowed by the wasi handler (handlers/wasi.py), so they are recorded."""
        config = wasmtime.WasiConfig()
        config.stdout_custom = self._output_sink("stdout")
        config.stderr_custom = self._output_sink("stderr")
        self.store.set_wasi(config)
        self.linker.add_wasip2()
        self.linker.allow_shadowing = True

    def _output_sink(self, stream: str) -> Callable[[bytes], None]:
        buffer = bytearray()
        services = self.services

        def write(data: bytes) -> None:
            if stream == "stderr":
                self._stderr_during_call.extend(data)
            buffer.extend(data)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                services.output_line(stream, line.decode("utf-8", "replace"))
        return write

    def _host(self, iface: str, func: str, fn: HostFunction) -> Callable[..., Any]:
        """Wrap a host function: run it (or, in replay, serve it from the chain), record the call
        as `host.<interface>.<function>`."""
        services = self.services
        event_type = host_event_type(iface, func)
        recorded = self.recorded
        impl = fn.call

        def call(_store, *args):
            try:
                if recorded is None:
                    result = impl(*args)
                else:
                    data = recorded(event_type, fn.optional)
                    if data is None:  # an optional call the chain does not have: it left no event
                        return None
                    if "crash" in data:
                        raise ActorCrash(str(data["crash"]))
                    result = fn.replay(data)
            except ActorCrash as crash:  # the call ends the export call as a crash: recorded with its reason
                services.record(event_type, {"args": [recordable(a) for a in args], "crash": str(crash)})
                raise
            except HostAbort:  # abandon the export call
                raise
            except Exception as exc:  # host boundary: never unwind through wasm
                log.exception("host function %s.%s failed", iface, func)
                result = f"internal error in {iface}.{func}: {type(exc).__name__}"
            event = fn.record(args, result)
            if event is not None:
                services.record(event_type, event)
            return result

        return call

    # ---- export calls -------------------------------------------------------------------

    def _call(self, iface: str, name: str, *args: Any) -> Any:
        func = self._typed(iface, name)
        if func is None:
            raise ActorCrash(f"component does not export {iface}.{name}")
        self._stderr_during_call.clear()
        self.budget.start()
        self.ticker.begin()
        try:
            result = func(self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # component traps arrive as WasmtimeError
            if self.budget.exceeded is not None:
                raise ActorCrash(f"CPU budget exceeded in {iface}.{name}: {self.budget.exceeded:.0f} ms of CPU "
                                 f"time, over the limit cpu_ms = {self.budget.cpu_ms}") from None
            reason = f"trap in {iface}.{name}: {_trap_text(exc)}"
            printed = bytes(self._stderr_during_call[-STDERR_IN_CRASH:]).decode("utf-8", "replace").strip()
            if printed:  # e.g. the Python traceback componentize-py prints before it traps
                reason += f"\nstderr:\n{printed}"
            raise ActorCrash(reason) from None
        finally:
            self.ticker.end()
        func.post_return(self.store)
        if isinstance(result, str):
            raise ActorCrash(f"{iface}.{name} returned err: {result}")
        return result

    def init(self, state: bytes | None) -> None:
        (self.state,) = self._call(ACTOR_EXPORT, "init", state)

    def handle_send(self, msg: bytes) -> None:
        (self.state,) = self._call(MESSAGE_CLIENT_EXPORT, "handle-send", self.state, (msg,))

    def handle_request(self, request_id: str, msg: bytes) -> bytes | None:
        self.state, (reply,) = self._call(MESSAGE_CLIENT_EXPORT, "handle-request", self.state, (request_id, msg))
        return reply

    def handle_http_request(self, request: dict, handler: int | None = None) -> dict:
        """An HTTP request (the gateway's record) to http-server.handle-request, or with `handler`
        (a route's handler id) to http-handlers.handle-request; the response as plain data:
        {status, headers: [[name, value]], body}."""
        iface = HTTP_SERVER_EXPORT if handler is None else HTTP_HANDLERS_EXPORT
        if not self.exports(iface, "handle-request"):
            raise ActorCrash(f"an HTTP request arrived but the component does not export {iface}.handle-request")
        headers = [(str(k), str(v)) for k, v in request.get("headers") or []]
        if handler is None:
            record = record_of(method=str(request.get("method", "")), uri=str(request.get("uri", "")),
                               path=str(request.get("path", "")), query=str(request.get("query", "")),
                               headers=headers, body=request.get("body"))
            params: tuple = (record,)
        else:
            record = record_of(method=str(request.get("method", "")), uri=str(request.get("uri", "")),
                               headers=headers, body=request.get("body"))
            params = (int(handler), record)
        self.state, (response,) = self._call(iface, "handle-request", self.state, params)
        return {"status": response.status, "body": response.body,
                "headers": [[k, v] for k, v in response.headers]}

    def handle_websocket_message(self, connection: int, message: dict) -> list[dict]:
        """One WebSocket event (the gateway's {ty, text?, data?}) of `connection` to
        websocket-server.handle-message; the messages to send back as plain data."""
        if not self.exports(WEBSOCKET_EXPORT, "handle-message"):
            raise ActorCrash(f"a WebSocket message arrived but the component does not export "
                             f"{WEBSOCKET_EXPORT}.handle-message")
        ty = str(message.get("ty", ""))
        text, data = message.get("text"), message.get("data")
        record = record_of(ty=wc.Variant(ty) if ty in _WS_TYPES else wc.Variant("other", ty),
                           data=data if isinstance(data, bytes) else None,
                           text=text if isinstance(text, str) else None)
        self.state, (response,) = self._call(WEBSOCKET_EXPORT, "handle-message", self.state,
                                             (int(connection), record))
        out = []
        for msg in response.messages:
            variant = msg.ty
            out.append({"ty": variant.tag if variant.tag != "other" else f"other:{variant.payload}",
                        "text": msg.text, "data": msg.data})
        return out

    def handle_channel_open(self, channel_id: str, msg: bytes) -> tuple[bool, bytes | None]:
        """(accepted, message). An actor that does not export handle-channel-open refuses channels."""
        if not self.exports(MESSAGE_CLIENT_EXPORT, "handle-channel-open"):
            return False, b"this actor does not accept channels"
        self.state, (accept,) = self._call(MESSAGE_CLIENT_EXPORT, "handle-channel-open", self.state,
                                           (channel_id, msg))
        return bool(accept.accepted), accept.message

    def handle_channel_message(self, channel_id: str, msg: bytes) -> bool:
        if not self.exports(MESSAGE_CLIENT_EXPORT, "handle-channel-message"):
            raise ActorCrash(f"a message arrived on channel {channel_id} but the component does not export "
                             f"{MESSAGE_CLIENT_EXPORT}.handle-channel-message")
        (self.state,) = self._call(MESSAGE_CLIENT_EXPORT, "handle-channel-message", self.state, (channel_id, msg))
        return True

    def handle_channel_close(self, channel_id: str) -> bool:
        """False when the actor does not export handle-channel-close (the close is then only recorded)."""
        if not self.exports(MESSAGE_CLIENT_EXPORT, "handle-channel-close"):
            return False
        (self.state,) = self._call(MESSAGE_CLIENT_EXPORT, "handle-channel-close", self.state, (channel_id,))
        return True

    def child_event(self, kind: str, child_id: str, data: bytes | None) -> bool:
        """Tell a supervising actor about its child; False if it does not export that handler."""
        params: tuple[object, ...]
        if kind == "error":
            name, params = "handle-child-error", (child_id, _actor_error("internal", data))
        elif kind == "exit":
            name, params = "handle-child-exit", (child_id, data)
        else:
            name, params = "handle-child-external-stop", (child_id,)
        if not self.exports(SUPERVISOR_HANDLERS_EXPORT, name):
            return False
        (self.state,) = self._call(SUPERVISOR_HANDLERS_EXPORT, name, self.state, params)
        return True


def _actor_error(error_type: str, data: bytes | None) -> wc.Record:
    record = wc.Record()
    # set by name: wc.Record declares no fields, and WIT's "error-type" is no Python identifier
    for field_name, value in (("error-type", error_type), ("data", data)):
        setattr(record, field_name, value)
    return record


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trap_text(exc: Exception) -> str:
    """The trap's message without wasmtime's backtrace lines."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "wasm trap:" in line:
            return line.split("wasm trap:", 1)[1].strip()
    if "fuel allocated for hostcalls" in text:
        return (f"too much data in one host call: wasmtime copies at most about 4 MiB of list values per call "
                f"(lists of up to {MAX_LIST_BYTES} bytes are safe)")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip()[0].isdigit() and "backtrace" not in line]
    return lines[-1] if lines else _first_line(exc)


