"""One actor instance inside wasmtime: the store, the linked host interfaces, the export calls.

`Actor` owns the Store, Linker and Instance (closed together by `close()`).
Host functions never let a Python exception unwind through wasm: a failure
that is the caller's fault becomes an `err` result, anything else is logged
and becomes `err("internal error")`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import wasmtime
import wasmtime.component as wc

from . import fastabi
from .component import ACTOR_EXPORT, MESSAGE_CLIENT_EXPORT, PACKAGE

SUPERVISOR_HANDLERS_EXPORT = f"{PACKAGE}/supervisor-handlers"

fastabi.install()

log = logging.getLogger("theater_otp.worker")


class HostAbort(Exception):
    """Raised by a host implementation to abandon the whole export call (replay does, on a mismatch).

    wasmtime-py traps the guest and re-raises it after the call, so it never unwinds through wasm.
    """


class ActorCrash(Exception):
    """The actor returned `err`, trapped, or ran out of its CPU budget: a crash of the actor."""


class HostServices(Protocol):
    """What host functions need from the worker loop (sockets, clock, recording)."""

    def record(self, event_type: str, data: dict) -> None: ...
    def log_line(self, msg: str) -> None: ...
    def request_shutdown(self, data: bytes | None) -> None: ...
    def send(self, target: str, msg: bytes) -> str | None: ...
    def request(self, target: str, msg: bytes) -> bytes | str: ...
    def respond(self, request_id: str, msg: bytes) -> str | None: ...
    def outstanding(self) -> list[str]: ...
    def sleep(self, ms: int) -> str | None: ...
    def now_ms(self) -> int: ...
    def perf_ns(self) -> int: ...
    def renew_budget(self) -> None: ...
    def supervise(self, op: str, args: dict) -> dict: ...
    def wall_clock(self) -> wc.Record: ...
    def monotonic_clock(self) -> int: ...
    def cancel_request(self, request_id: str) -> str | None: ...
    def own_events(self) -> list[dict]: ...
    def random_bytes(self, n: int) -> bytes: ...
    def random_u64(self) -> int: ...


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024 * 1024
    cpu_budget_ms: int = 5000
    epoch_tick_ms: int = 10


#: How much of what the guest printed to stderr during a call that trapped goes into the crash reason.
STDERR_IN_CRASH = 4000


def state_digest(state: bytes | None) -> str | None:
    return hashlib.sha256(state).hexdigest() if state is not None else None


class Actor:
    """A live actor instance. Invariant: `state` is the state returned by the last successful export call."""

    def __init__(self, engine: wasmtime.Engine, component: wc.Component, services: HostServices,
                 granted: set[str], limits: Limits, imports: tuple[str, ...] = ()):
        self.services = services
        self.limits = limits
        self.store = wasmtime.Store(engine)
        self.store.set_limits(memory_size=limits.memory_bytes)
        self.state: bytes | None = None
        #: what the guest wrote to stderr during the current export call (a toolchain's traceback)
        self._stderr_during_call = bytearray()
        self.linker = wc.Linker(engine)
        wasi_imports = [name for name in imports if name.startswith("wasi:")]
        if wasi_imports:
            self._link_wasi(wasi_imports)
        self._link(granted, {name.split("@", 1)[0] for name in imports} if imports else None)
        self._renew()
        try:
            self.instance = self.linker.instantiate(self.store, component)
        except wasmtime.WasmtimeError as exc:
            raise ActorCrash(f"instantiation failed: {_first_line(exc)}") from None
        self.funcs: dict[tuple[str, str], fastabi.TypedFunc] = {}
        for iface, name in ((ACTOR_EXPORT, "init"), (MESSAGE_CLIENT_EXPORT, "handle-send"),
                            (MESSAGE_CLIENT_EXPORT, "handle-request"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-error"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-exit"),
                            (SUPERVISOR_HANDLERS_EXPORT, "handle-child-external-stop")):
            iface_idx = component.get_export_index(iface)
            func_idx = component.get_export_index(name, iface_idx) if iface_idx is not None else None
            func = self.instance.get_func(self.store, func_idx) if func_idx is not None else None
            if func is not None:
                self.funcs[(iface, name)] = fastabi.TypedFunc(func, self.store)

    def close(self) -> None:
        self.funcs.clear()
        self.linker.close()
        self.store.close()

    def exports(self, iface: str, name: str) -> bool:
        return (iface, name) in self.funcs

    # ---- linking host interfaces ------------------------------------------------------

    def _link(self, granted: set[str], imported: set[str] | None) -> None:
        """Define the host interfaces this actor may use: granted ones, and (when the component's
        imports are known) only those it imports, so a start links no more than it needs."""
        s = self.services

        def wanted(iface: str) -> bool:
            return imported is None or f"{PACKAGE}/{iface}" in imported

        with self.linker.root() as root:
            if wanted("runtime"):
                with root.add_instance(f"{PACKAGE}/runtime") as i:
                    i.add_func("log", self._host("runtime", "log", lambda msg: s.log_line(msg), record_result=False))
                    i.add_func("shutdown", self._host("runtime", "shutdown", s.request_shutdown))
                    i.add_func("get-chain", self._host("runtime", "get-chain", self._get_chain, record_result=False))
            if wanted("message-server-host"):
                self._link_message_server(root)
            if "supervisor" in granted and wanted("supervisor"):
                with root.add_instance(f"{PACKAGE}/supervisor") as i:
                    for name, impl in _supervisor_host(s).items():
                        i.add_func(name, self._host("supervisor", name, impl))
            if "timing" in granted and wanted("timing"):
                with root.add_instance(f"{PACKAGE}/timing") as i:
                    i.add_func("sleep", self._host("timing", "sleep", s.sleep))
                    i.add_func("now", self._host("timing", "now", s.now_ms))
                    i.add_func("performance-now", self._host("timing", "performance-now", s.perf_ns))

    def _link_message_server(self, root: wc.LinkerInstance) -> None:
        s = self.services
        with root.add_instance(f"{PACKAGE}/message-server-host") as i:
            i.add_func("send", self._host("message-server-host", "send", s.send))
            i.add_func("request", self._host("message-server-host", "request", s.request))
            i.add_func("respond-to-request", self._host("message-server-host", "respond-to-request", s.respond))
            i.add_func("list-outstanding-requests",
                       self._host("message-server-host", "list-outstanding-requests", s.outstanding))
            i.add_func("cancel-request", self._host("message-server-host", "cancel-request", s.cancel_request))
            for name in ("open-channel", "send-on-channel", "close-channel"):
                i.add_func(name, self._host("message-server-host", name, _channels_unsupported))

    def _link_wasi(self, wasi_imports: list[str]) -> None:
        """WASI 0.2 with nothing granted; clocks and randomness served (and so recorded) by us.

        No preopened directories, no environment, no arguments, no network;
        stdout and stderr go to the actor's log line by line.
        """
        config = wasmtime.WasiConfig()
        config.stdout_custom = self._output_sink("stdout")
        config.stderr_custom = self._output_sink("stderr")
        self.store.set_wasi(config)
        self.linker.add_wasip2()
        self.linker.allow_shadowing = True
        s = self.services
        with self.linker.root() as root:
            for name in wasi_imports:
                iface = name.split("@", 1)[0]
                # Shadowing replaces a whole instance, so each one here is defined in full.
                # wasi:clocks/monotonic-clock stays WASI's own: its subscribe-* functions return
                # wasi:io pollables, which only the WASI implementation can make.
                if iface == "wasi:clocks/monotonic-clock":
                    with root.add_instance(name) as i:
                        i.add_func("now", self._host("wasi:clocks/monotonic-clock", "now", s.monotonic_clock))
                        i.add_func("resolution", self._host("wasi:clocks/monotonic-clock", "resolution", lambda: 1))
                        for func in ("subscribe-instant", "subscribe-duration"):
                            i.add_func(func, self._host("wasi:clocks/monotonic-clock", func, _no_clock_waits(func)))
                elif iface == "wasi:clocks/wall-clock":
                    with root.add_instance(name) as i:
                        i.add_func("now", self._host("wasi:clocks/wall-clock", "now", s.wall_clock))
                        i.add_func("resolution", self._host("wasi:clocks/wall-clock", "resolution",
                                                            lambda: _datetime(0, 1)))
                elif iface == "wasi:random/random":
                    with root.add_instance(name) as i:
                        i.add_func("get-random-bytes", self._host("wasi:random/random", "get-random-bytes",
                                                                  s.random_bytes))
                        i.add_func("get-random-u64", self._host("wasi:random/random", "get-random-u64",
                                                                s.random_u64))
                elif iface == "wasi:random/insecure":
                    with root.add_instance(name) as i:
                        i.add_func("get-insecure-random-bytes",
                                   self._host("wasi:random/insecure", "get-insecure-random-bytes", s.random_bytes))
                        i.add_func("get-insecure-random-u64",
                                   self._host("wasi:random/insecure", "get-insecure-random-u64", s.random_u64))
                elif iface == "wasi:random/insecure-seed":
                    with root.add_instance(name) as i:
                        i.add_func("insecure-seed", self._host("wasi:random/insecure-seed", "insecure-seed",
                                                               lambda: (s.random_u64(), s.random_u64())))

    def _get_chain(self) -> wc.Record:
        chain = wc.Record()
        chain.events = [_chain_event_record(e) for e in self.services.own_events()]
        return chain

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
                services.log_line(f"{stream}: {line.decode('utf-8', 'replace')}")
        return write

    def _host(self, iface: str, func: str, impl: Callable[..., Any], record_result: bool = True) -> Callable[..., Any]:
        """Wrap a host implementation: record the call and its outcome; renew the CPU budget after it."""
        services = self.services
        event_type = f"host.{iface}.{func}"

        def call(_store, *args):
            try:
                result = impl(*args)
            except (HostAbort, ActorCrash):  # abandon the export call (ActorCrash: as a crash)
                raise
            except Exception as exc:  # host boundary: never unwind through wasm
                log.exception("host function %s.%s failed", iface, func)
                result = f"internal error in {iface}.{func}: {type(exc).__name__}"
            data = {"args": [recordable(a) for a in args]}
            if record_result:
                data["result"] = recordable(result)
            services.record(event_type, data)
            services.renew_budget()
            return result

        return call

    # ---- export calls -------------------------------------------------------------------

    def _renew(self) -> None:
        self.store.set_epoch_deadline(max(1, self.limits.cpu_budget_ms // self.limits.epoch_tick_ms))

    def renew_budget(self) -> None:
        self._renew()

    def _call(self, iface: str, name: str, *args: Any) -> Any:
        func = self.funcs.get((iface, name))
        if func is None:
            raise ActorCrash(f"component does not export {iface}.{name}")
        self._renew()
        self._stderr_during_call.clear()
        try:
            result = func(self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # component traps arrive as WasmtimeError
            reason = f"trap in {iface}.{name}: {_trap_text(exc)}"
            printed = bytes(self._stderr_during_call[-STDERR_IN_CRASH:]).decode("utf-8", "replace").strip()
            if printed:  # e.g. the Python traceback componentize-py prints before it traps
                reason += f"\nstderr:\n{printed}"
            raise ActorCrash(reason) from None
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

    def child_event(self, kind: str, child_id: str, data: bytes | None) -> bool:
        """Tell a supervising actor about its child; False if it does not export that handler."""
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


def _channels_unsupported(*_args: Any) -> str:
    return "channels are not supported by this theater-otp version"


def _datetime(seconds: int, nanoseconds: int) -> wc.Record:
    record = wc.Record()
    record.seconds, record.nanoseconds = seconds, nanoseconds
    return record


def _actor_error(error_type: str, data: bytes | None) -> wc.Record:
    record = wc.Record()
    setattr(record, "error-type", error_type)
    setattr(record, "data", data)
    return record


def _chain_event_record(e: dict) -> wc.Record:
    record = wc.Record()
    for key in ("hash", "parent-hash", "event-type", "data", "timestamp", "description"):
        setattr(record, key, e.get(key))
    return record


def _supervisor_host(s: HostServices) -> dict[str, Callable[..., Any]]:
    """theater:simple/supervisor: each call is a request to the node, answered for this actor's subtree."""

    def call(op: str, **args):
        return s.supervise(op, args)

    def spawn(manifest: str, init: bytes | None):
        r = call("spawn", manifest=manifest, init=init)
        return wc.Variant("ok", r["ok"]) if "ok" in r else wc.Variant("err", r["error"])

    def resume(manifest: str, state: bytes | None):
        r = call("spawn", manifest=manifest, init=state)
        return wc.Variant("ok", r["ok"]) if "ok" in r else wc.Variant("err", r["error"])

    def list_children():
        return list(call("list-children").get("ok", []))

    def stop_child(child: str):
        r = call("stop-child", child=child)
        return None if "ok" in r else r["error"]

    def restart_child(child: str):
        r = call("restart-child", child=child)
        return None if "ok" in r else r["error"]

    def get_child_state(child: str):
        r = call("get-child-state", child=child)
        return fastabi.Ok(r["ok"]) if "ok" in r else fastabi.Err(r["error"])

    def get_child_events(child: str):
        r = call("get-child-events", child=child)
        if "ok" not in r:
            return fastabi.Err(r["error"])
        return fastabi.Ok([_chain_event_record(e) for e in r["ok"]])

    return {"spawn": spawn, "resume": resume, "list-children": list_children, "stop-child": stop_child,
            "restart-child": restart_child, "get-child-state": get_child_state,
            "get-child-events": get_child_events}


def recordable(value: Any) -> Any:
    """A host-call value as plain msgpack data: variants and Ok/Err become {"ok": v} / {"err": v}."""
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trap_text(exc: Exception) -> str:
    """The trap's message without wasmtime's backtrace lines."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "wasm trap:" in line:
            return line.split("wasm trap:", 1)[1].strip()
    return _first_line(exc)


def _no_clock_waits(func: str) -> Callable[..., Any]:
    """wasi:clocks/monotonic-clock.subscribe-*: a pollable only WASI's own clock can make; an
    actor waits with the timing handler instead, so such a call (Python's time.sleep) is a crash."""
    def refuse(*_args: Any) -> Any:
        raise ActorCrash(f"wasi:clocks/monotonic-clock.{func} is not available to actors "
                         f"(waiting on a clock blocks the actor's mailbox); use the timing handler")
    return refuse
