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
A failed call raises `HostError` (catch it, or let it crash the actor).

Logging and time: `log(*parts)` (a line in the node's log and an event in the
chain), `now()` (seconds since the epoch, float), `now_ms()`, `sleep(ms)`.

Runtime: `actor_id()`, `actor_name()`, `log_at(level, *parts)`,
`metric(name, value)`, `event(event_type, data)`, `system_info()` (a dict),
`theater_version()`.

Handlers a manifest may grant, each a small namespace over its interface:

    sdk.Store("notes")        store: put/get/has, set/add/get_label/ref/point/unlabel, labels/refs/size
    sdk.fs                    filesystem: read_text/write_text/append_text, *_bytes, *_json, exists,
                              is_file, is_dir, listdir, scandir, stat, mkdir, remove, rmtree
    sdk.env                   environment: get(name, default), all(), has(name)
    sdk.rand                  random: bytes(n), randrange(a, b), randint(a, b), random(), uuid(), choice(seq)

A function of a handler the manifest does not grant raises `NotGranted` (the
generated world imports only the granted interfaces, so the bindings module
is absent). Every `err` the host returns raises `HostError` (`str(exc)` is the
host's message, `exc.call` the WIT function); `CallError` is the same class.

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
from wit_world.imports.types import ChannelAccept

# The world build generates imports only the interfaces the manifest grants: each of these is
# imported here, at build time (nothing can be imported later), and is None when the world lacks it.
try:
    from wit_world.imports import timing
except ImportError:
    timing = None
try:
    from wit_world.imports import store as _wit_store
except ImportError:
    _wit_store = None
try:
    from wit_world.imports import filesystem as _wit_filesystem
except ImportError:
    _wit_filesystem = None
try:
    from wit_world.imports import environment as _wit_environment
except ImportError:
    _wit_environment = None
try:
    from wit_world.imports import random as _wit_random
except ImportError:
    _wit_random = None

__all__ = [
    "CallError", "HostError", "NotGranted", "Guard", "NoChannels", "Err", "load", "dump", "text", "to_bytes", "send",
    "request", "request_json", "respond", "outstanding", "log", "log_at", "now", "now_ms", "sleep", "shutdown",
    "actor_id", "actor_name", "metric", "event", "system_info", "theater_version", "format_exception",
    "Store", "fs", "env", "rand", "open_channel", "send_on_channel", "close_channel",
]

#: Longest traceback put into an Err (the chain stores it; the end of a traceback matters most).
MAX_ERROR_CHARS = 8000
PACKAGE = "theater:simple"


class HostError(Exception):
    """A host call returned `err` (an unknown target, a failed request, a refused path, a full store ...).

    `str(exc)` is the host's message; `exc.call` names the WIT function (`filesystem.read-file`), when known.
    """

    def __init__(self, message: str, call: str | None = None):
        super().__init__(message)
        self.message = message
        self.call = call


#: The older name of HostError (the messaging helpers raised it first); the same class.
CallError = HostError


class NotGranted(HostError):
    """The component does not import the interface a helper needs: its manifest does not grant the
    handler (or the WIT it was built against predates the function). Grant it and rebuild."""


def _host(module: Any, interface: str, function: str, *args: Any) -> Any:
    """Call `function` of the bindings `module` of `interface`; `err` becomes HostError."""
    wit_name = f"{interface}.{function.replace('_', '-')}"
    if module is None:
        handler = {"message-server-host": "message-server"}.get(interface, interface)
        raise NotGranted(f"this actor does not import {PACKAGE}/{interface}: grant it in the manifest "
                         f"(`[[handler]] type = \"{handler}\"`) and rebuild", wit_name)
    fn = getattr(module, function, None)
    if fn is None:
        raise NotGranted(f"{PACKAGE}/{interface} has no {function.replace('_', '-')} in the WIT this actor was "
                         f"built against: update the project's wit/ from theater-otp and rebuild", wit_name)
    try:
        return fn(*args)
    except Err as exc:
        raise HostError(str(exc.value), wit_name) from None


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
    """One-way message. Returns once it is in the target's mailbox; HostError says why it is not
    (no such actor, over a message_bytes limit, a full mailbox)."""
    _host(message_server_host, "message-server-host", "send", target, to_bytes(msg))


def open_channel(target: str, msg: Any = b"") -> str:
    """Open a channel to `target` (its handle_channel_open decides); the channel id, or HostError
    with the refusal."""
    return _host(message_server_host, "message-server-host", "open_channel", target, to_bytes(msg))


def send_on_channel(channel_id: str, msg: Any) -> None:
    """A message to the other end of an open channel (its handle_channel_message)."""
    _host(message_server_host, "message-server-host", "send_on_channel", channel_id, to_bytes(msg))


def close_channel(channel_id: str) -> None:
    """Close a channel; the other end's handle_channel_close is told."""
    _host(message_server_host, "message-server-host", "close_channel", channel_id)


def request(target: str, msg: Any) -> bytes:
    """Request and wait for the reply (up to the manifest's request_timeout_ms)."""
    return _host(message_server_host, "message-server-host", "request", target, to_bytes(msg))


def request_json(target: str, msg: Any) -> Any:
    """`request`, with the reply decoded as JSON."""
    return json.loads(request(target, msg).decode("utf-8"))


def respond(request_id: str, msg: Any) -> None:
    """Answer a request this actor deferred (its handle_request returned a None reply)."""
    _host(message_server_host, "message-server-host", "respond_to_request", request_id, to_bytes(msg))


def outstanding() -> list[str]:
    """Ids of the requests this actor received and has not answered yet."""
    return list(message_server_host.list_outstanding_requests())


# ---- runtime and time ----------------------------------------------------------------------------

def _line(parts: tuple) -> str:
    return " ".join(p if isinstance(p, str) else repr(p) for p in parts)


def log(*parts: Any) -> None:
    """A line in the node's log, recorded in the actor's chain (host.runtime.log)."""
    runtime.log(_line(parts))


def log_at(level: str, *parts: Any) -> None:
    """A line at a level: trace, debug, info, warn or error (recorded in the chain; trace and debug
    only there, not in the node's log). Another level raises HostError."""
    _host(runtime, "runtime", "log_at", level, _line(parts))


def actor_id() -> str:
    """This actor's id (the same across its restarts in one node run)."""
    return _host(runtime, "runtime", "get_actor_id")


def actor_name() -> str:
    """This actor's name (its manifest's `name`)."""
    return _host(runtime, "runtime", "get_actor_name")


def metric(name: str, value: float) -> None:
    """Record a metric in the chain (host.runtime.record-metric); NaN or infinity raises HostError."""
    _host(runtime, "runtime", "record_metric", name, float(value))


def event(event_type: str, data: Any = b"") -> None:
    """Record a custom event in the chain (bytes, str or a JSON value; at most 64 KiB)."""
    _host(runtime, "runtime", "record_event", event_type, to_bytes(data))


def system_info() -> dict:
    """About the host: hostname, os_type, os_release, cpu_count, memory_total, memory_available (bytes),
    uptime (seconds)."""
    info = _host(runtime, "runtime", "get_system_info")
    return {k: getattr(info, k) for k in ("hostname", "os_type", "os_release", "cpu_count", "memory_total",
                                          "memory_available", "uptime")}


def theater_version() -> str:
    """The version of theater-otp running this actor."""
    return _host(runtime, "runtime", "get_theater_version")


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (recorded in the chain): timing's clock when the
    actor has the timing handler, else the runtime's."""
    if timing is None:
        return _host(runtime, "runtime", "get_current_time")
    return timing.now()


def now() -> float:
    """Wall-clock seconds since the Unix epoch, like time.time() (recorded in the chain)."""
    return now_ms() / 1000.0


def sleep(ms: int) -> None:
    """Sleep `ms` milliseconds (the actor handles nothing else meanwhile). Needs the timing handler."""
    _host(timing, "timing", "sleep", int(ms))


def shutdown(data: Any = None) -> None:
    """End this actor normally (exit reason `normal`) once the current call returns."""
    _host(runtime, "runtime", "shutdown", None if data is None else to_bytes(data))


# ---- store ---------------------------------------------------------------------------------------

class Store:
    """A store of the store handler: content-addressed bytes (a reference is the hex SHA-256) with
    labels, kept in the node's home across restarts.

    `Store("notes")` reaches a store the manifest names (`[[handler]] type = "store"`,
    `stores = ["notes"]`): the same store after every restart, shared with every actor naming it.
    `Store.new()` makes a private store; only its id (`.id`) reaches it, so keep that in the state
    (a restart begins again from initial_state: a store made by `new` is then out of reach).

    Data given to put/set/add may be bytes, str (UTF-8) or a JSON value (see `to_bytes`).
    """

    def __init__(self, store_id: str):
        self.id = store_id

    def __repr__(self) -> str:
        return f"Store({self.id!r})"

    def _call(self, function: str, *args: Any) -> Any:
        return _host(_wit_store, "store", function, self.id, *args)

    @staticmethod
    def _ref(ref: str) -> Any:
        if _wit_store is None:
            _host(None, "store", "get")  # raises NotGranted
        return _wit_store.ContentRef(hash=ref)

    @classmethod
    def new(cls) -> "Store":
        """A new, empty store of this actor's (its id is the capability)."""
        return cls(_host(_wit_store, "store", "new"))

    def put(self, data: Any) -> str:
        """Store bytes; their reference (hex SHA-256). The same bytes twice cost nothing."""
        return self._call("store", to_bytes(data)).hash

    def get(self, ref: str) -> bytes:
        """The bytes behind a reference (HostError when the store does not hold them)."""
        return self._call("get", self._ref(ref))

    def has(self, ref: str) -> bool:
        return self._call("exists", self._ref(ref))

    def label(self, label: str, ref: str) -> None:
        """Add a stored reference to a label (a label holds references, newest last)."""
        self._call("label", label, self._ref(ref))

    def add(self, label: str, data: Any) -> str:
        """Store bytes and add them to a label; their reference."""
        return self._call("store_at_label", label, to_bytes(data)).hash

    def set(self, label: str, data: Any) -> str:
        """Store bytes and make them the only reference under a label; their reference."""
        return self._call("replace_content_at_label", label, to_bytes(data)).hash

    def point(self, label: str, ref: str) -> None:
        """Make a stored reference the only one under a label."""
        self._call("replace_at_label", label, self._ref(ref))

    def ref(self, label: str) -> str | None:
        """The newest reference under a label (None: no such label)."""
        found = self._call("get_by_label", label)
        return None if found is None else found.hash

    def get_label(self, label: str, default: Any = None) -> Any:
        """The bytes of the newest reference under a label, or `default`."""
        ref = self.ref(label)
        return default if ref is None else self.get(ref)

    def get_json(self, label: str, default: Any = None) -> Any:
        """The newest content under a label decoded as JSON, or a copy of `default`."""
        data = self.get_label(label)
        return copy.deepcopy(default) if data is None else json.loads(data.decode("utf-8"))

    def set_json(self, label: str, value: Any) -> str:
        """`set` with `dump(value)`."""
        return self.set(label, dump(value))

    def unlabel(self, label: str, ref: str | None = None) -> None:
        """Remove a label, or only one reference from it (the content stays)."""
        if ref is None:
            self._call("remove_label", label)
        else:
            self._call("remove_from_label", label, self._ref(ref))

    def labels(self) -> list[str]:
        """Every label, sorted."""
        return list(self._call("list_labels"))

    def refs(self) -> list[str]:
        """Every reference the store holds, sorted."""
        return [r.hash for r in self._call("list_all_content")]

    def size(self) -> int:
        """Bytes of distinct content the store holds."""
        return self._call("calculate_total_size")


# ---- filesystem ----------------------------------------------------------------------------------

class Filesystem:
    """The filesystem handler's directory (`sdk.fs`): every path is relative to it; leaving it,
    a symbolic link, a read_only or quota breach is a HostError naming the path and the rule."""

    @staticmethod
    def _call(function: str, *args: Any) -> Any:
        return _host(_wit_filesystem, "filesystem", function, *args)

    def read_bytes(self, path: str) -> bytes:
        return self._call("read_file", path)

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path).decode("utf-8"))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Replace a file's content atomically (its folder must exist: `mkdir` it first)."""
        self._call("write_file", path, bytes(data))

    def write_text(self, path: str, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(path, text.encode(encoding))

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, dump(value))

    def append_bytes(self, path: str, data: bytes) -> None:
        """Add bytes at the end of a file, creating it."""
        self._call("append_file", path, bytes(data))

    def append_text(self, path: str, text: str, encoding: str = "utf-8") -> None:
        self.append_bytes(path, text.encode(encoding))

    def exists(self, path: str) -> bool:
        return self._call("exists", path)

    def is_file(self, path: str) -> bool:
        return self._call("is_file", path)

    def is_dir(self, path: str) -> bool:
        return self._call("is_dir", path)

    def mkdir(self, path: str) -> None:
        """Create a folder and any missing parents (no error when it exists)."""
        self._call("create_dir", path)

    def remove(self, path: str) -> None:
        """Remove a file."""
        self._call("remove_file", path)

    def rmtree(self, path: str) -> None:
        """Remove a folder and everything in it."""
        self._call("remove_dir", path)

    def scandir(self, path: str = ".") -> list[dict]:
        """The entries of a folder, sorted by name: [{"name", "is_file", "is_dir"}, ...]."""
        return [{"name": e.name, "is_file": e.is_file, "is_dir": e.is_dir} for e in self._call("list_dir", path)]

    def listdir(self, path: str = ".") -> list[str]:
        """The names in a folder, sorted."""
        return [e.name for e in self._call("list_dir", path)]

    def stat(self, path: str) -> dict:
        """name, path, size, is_file, is_dir, created/modified/accessed (ms since the epoch, or None)."""
        m = self._call("metadata", path)
        return {k: getattr(m, k) for k in ("name", "path", "size", "is_file", "is_dir", "created", "modified",
                                           "accessed")}


fs = Filesystem()


# ---- environment ---------------------------------------------------------------------------------

class Environment:
    """The variables the environment handler lets this actor see (`sdk.env`): the manifest's `vars`
    and the node's own variables it lists in `allowed_vars`; nothing else."""

    @staticmethod
    def _call(function: str, *args: Any) -> Any:
        return _host(_wit_environment, "environment", function, *args)

    def get(self, name: str, default: str | None = None) -> str | None:
        """A variable's value, or `default`. Without the environment handler every name is unset
        (read through runtime.get-env)."""
        if _wit_environment is None:
            value = _host(runtime, "runtime", "get_env", name)
        else:
            value = self._call("get_var", name)
        return default if value is None else value

    def has(self, name: str) -> bool:
        return self._call("exists", name)

    def all(self) -> dict[str, str]:
        """Every visible variable."""
        return dict(self._call("list_vars"))


env = Environment()


# ---- random --------------------------------------------------------------------------------------

class Random:
    """The random handler (`sdk.rand`): every value recorded in the chain (seeded when the manifest
    sets `seed`), so replay reproduces it. Python's own `random` module works too (WASI randomness,
    recorded as well); this one needs the handler but follows its seed."""

    @staticmethod
    def _call(function: str, *args: Any) -> Any:
        return _host(_wit_random, "random", function, *args)

    def bytes(self, n: int) -> bytes:
        return self._call("random_bytes", int(n))

    def randrange(self, start: int, stop: int | None = None) -> int:
        """An integer in [start, stop) (or [0, start)), like random.randrange; the span below 2**64."""
        if stop is None:
            start, stop = 0, start
        start, stop = int(start), int(stop)
        if stop <= start:
            raise ValueError(f"empty range for randrange({start}, {stop})")
        return start + self._call("random_range", 0, stop - start)

    def randint(self, a: int, b: int) -> int:
        """An integer in [a, b]."""
        return self.randrange(a, int(b) + 1)

    def random(self) -> float:
        """A float in [0, 1)."""
        return self._call("random_float")

    def uuid(self) -> str:
        """A version 4 UUID as text."""
        return self._call("generate_uuid")

    def choice(self, seq: Any) -> Any:
        if not seq:
            raise IndexError("cannot choose from an empty sequence")
        return seq[self.randrange(len(seq))]


rand = Random()


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
    """The channel methods message-server-client requires, for actors that take no channels: an
    open is refused (the opener's open-channel returns that refusal), messages and closes keep
    the state. List it after `Guard`:
    `class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient)`.
    """

    def handle_channel_open(self, state, params):
        return (state, (ChannelAccept(accepted=False, message=b"this actor takes no channels"),))

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
