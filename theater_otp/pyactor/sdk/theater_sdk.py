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
    sdk.http                  http-server: Router (routes, path parameters), Request, Response, json_response,
                              HttpError; http-client: fetch(method, url, headers, body, json)

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
import re
import traceback
from typing import Any, Callable
from urllib.parse import parse_qsl

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
try:  # the HTTP records: present when the world imports http-client or exports http-server
    from wit_world.imports import http_types as _wit_http_types
except ImportError:
    _wit_http_types = None
try:
    from wit_world.imports import http_client as _wit_http_client
except ImportError:
    _wit_http_client = None

__all__ = [
    "CallError", "HostError", "NotGranted", "Guard", "NoChannels", "Err", "load", "dump", "text", "to_bytes", "send",
    "request", "request_json", "respond", "outstanding", "log", "log_at", "now", "now_ms", "sleep", "shutdown",
    "actor_id", "actor_name", "metric", "event", "system_info", "theater_version", "format_exception",
    "Store", "fs", "env", "rand", "http", "open_channel", "send_on_channel", "close_channel",
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


# ---- HTTP ----------------------------------------------------------------------------------------

class Headers(list):
    """HTTP header pairs `(name, value)` in order (a name may repeat). Lookups by name ignore case:
    `h.get("content-type")`, `h["Content-Type"]` (KeyError when absent), `"accept" in h`,
    `h.get_all("set-cookie")`; `h.set(name, value)` replaces every pair of that name.
    A dict or any iterable of pairs makes one."""

    def __init__(self, pairs: Any = ()):
        if isinstance(pairs, dict):
            pairs = pairs.items()
        super().__init__((str(name), str(value)) for name, value in (pairs or ()))

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for n, v in self:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        key = name.lower()
        self[:] = [(n, v) for n, v in self if n.lower() != key]
        self.append((str(name), str(value)))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            value = self.get(key)
            if value is None:
                raise KeyError(key)
            return value
        return super().__getitem__(key)

    def __contains__(self, name: Any) -> bool:
        if isinstance(name, str):
            key = name.lower()
            return any(n.lower() == key for n, _ in self)
        return super().__contains__(name)


_UNSET = object()


class HttpError(Exception):
    """Raise it in a route to answer `status` with the JSON body {"error": message}: an answer, not a
    crash (any other exception crashes the actor and the client gets 500)."""

    def __init__(self, status: int, message: str | None = None, headers: Any = None):
        super().__init__(message or f"HTTP {status}")
        self.status = int(status)
        self.message = message or f"HTTP {status}"
        self.headers = headers

    def response(self) -> "Response":
        return Response(self.status, {"error": self.message}, self.headers)


class Request:
    """An HTTP request as a route gets it.

    method ("GET", as the client sent it), uri (the target as sent: "/kv/a?x=1"), path ("/kv/a",
    percent-decoded), query_string ("x=1"), query ({"x": "1"}: decoded, the first value of each name),
    query_all ({"x": ["1"]}), headers (Headers), body (bytes, b"" when none), params (the route's path
    parameters). `text()`, `json()` (HttpError 400 when the body is not JSON), `header(name)`.
    `state`: the actor's state decoded with `load(state, Router(default=...))`, loaded on first use;
    whatever it holds after the route (or a value assigned to it) becomes the new state. A route that
    never touches it keeps the state as it was.
    """

    def __init__(self, method: str, path: str = "/", query: str = "", headers: Any = (), body: bytes | None = None,
                 uri: str | None = None, state: bytes | None = None, default: Any = None):
        self.method = method
        self.path = path or "/"
        self.query_string = query or ""
        self.query_all: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            self.query_all.setdefault(name, []).append(value)
        self.query = {name: values[0] for name, values in self.query_all.items()}
        self.headers = Headers(headers)
        self.body = bytes(body or b"")
        self.uri = uri or (self.path + ("?" + self.query_string if self.query_string else ""))
        self.params: dict[str, Any] = {}
        self._raw_state = state
        self._default = default
        self._state: Any = _UNSET

    @classmethod
    def from_record(cls, record: Any, state: bytes | None = None, default: Any = None) -> "Request":
        """From the http-server export's incoming-request record."""
        return cls(record.method, record.path, record.query, record.headers, record.body, record.uri, state, default)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as exc:
            raise HttpError(400, f"the request body is not valid JSON: {exc}") from None

    @property
    def state(self) -> Any:
        if self._state is _UNSET:
            self._state = load(self._raw_state, self._default)
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        self._state = value

    def new_state(self) -> bytes | None:
        """The state to return: `dump(state)` when a route used it, else the state as it came."""
        return self._raw_state if self._state is _UNSET else dump(self._state)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response:
    """An HTTP response: what a route returns, and what `fetch` gives back.

    `Response(status=200, body=b"", headers=None)`: body bytes as they are; str as UTF-8 (Content-Type
    text/plain; charset=utf-8 unless headers set one); any other value as JSON (application/json).
    `.status`, `.headers` (Headers), `.body` (bytes), `.ok` (2xx), `.text()`, `.json()`, `.header(name)`.
    """

    def __init__(self, status: int = 200, body: Any = b"", headers: Any = None):
        self.status = int(status)
        self.headers = Headers(headers)
        content_type = None
        if body is None:
            data = b""
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        elif isinstance(body, str):
            data, content_type = body.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, content_type = dump(body) + b"\n", "application/json"
        if content_type and "content-type" not in self.headers:
            self.headers.append(("Content-Type", content_type))
        self.body = data

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def to_record(self) -> Any:
        """The WIT http-response record (this object itself when the bindings have no HTTP types)."""
        if _wit_http_types is None:
            return self
        return _wit_http_types.HttpResponse(status=self.status, headers=[(n, v) for n, v in self.headers],
                                            body=self.body or None)

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def json_response(value: Any, status: int = 200, headers: Any = None) -> Response:
    """A JSON response (compact, keys sorted, a newline at the end), Content-Type application/json."""
    hdrs = Headers(headers)
    if "content-type" not in hdrs:
        hdrs.append(("Content-Type", "application/json"))
    return Response(status, dump(value) + b"\n", hdrs)


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|path))?\}")
_CONVERT = {"str": (r"[^/]+", str), "int": (r"-?[0-9]+", int), "path": (r".+", str)}


def _trim(path: str) -> str:
    return path.rstrip("/") or "/"


class _Route:
    def __init__(self, methods: tuple[str, ...], pattern: str, fn: Callable):
        self.methods, self.pattern, self.fn = methods, pattern, fn
        regex, pos, self.converters = "", 0, {}
        for m in _PARAM.finditer(_trim(pattern)):
            kind = m.group(2) or "str"
            regex += re.escape(_trim(pattern)[pos:m.start()]) + f"(?P<{m.group(1)}>{_CONVERT[kind][0]})"
            self.converters[m.group(1)] = _CONVERT[kind][1]
            pos = m.end()
        self.regex = re.compile(regex + re.escape(_trim(pattern)[pos:]))

    def match(self, path: str) -> dict | None:
        m = self.regex.fullmatch(path)
        return None if m is None else {k: self.converters[k](v) for k, v in m.groupdict().items()}


def _as_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(204)
    if isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[1], int):
        return Response(result[1], result[0], result[2] if len(result) == 3 else None)
    return Response(200, result)


class Router:
    """Routes for an actor that serves HTTP (the http-server handler):

        router = sdk.http.Router(default={"hits": 0})      # `default`: the state's default (sdk.load)

        @router.get("/items/{id}")                          # {name}: one path segment; {name:int}, {name:path}
        def item(req, id):
            req.state["hits"] += 1                          # the actor's state, saved after the route
            return {"id": id}                               # dict/list: JSON; str: text; bytes; None: 204;
                                                            # (body, status[, headers]); or a Response
        class HttpServer(sdk.Guard, exports.HttpServer):
            handle_request = router.handler

    A path that no route matches answers 404; one that matches only with other methods 405 with
    `Allow` (OPTIONS answers 204 with it; HEAD runs the GET route). A trailing slash is ignored.
    `raise sdk.http.HttpError(400, "why")` answers {"error": "why"} with that status; any other
    exception crashes the actor (the client gets 500, the supervisor restarts it).
    """

    def __init__(self, default: Any = None):
        self.default = default
        self.routes: list[_Route] = []

    def route(self, methods: Any, pattern: str) -> Callable:
        """Decorator: `fn(req, **params)` answers `methods` ("GET" or ["PUT", "POST"]) on `pattern`."""
        names = (methods,) if isinstance(methods, str) else tuple(methods)

        def add(fn: Callable) -> Callable:
            self.routes.append(_Route(tuple(m.upper() for m in names), pattern, fn))
            return fn
        return add

    def get(self, pattern: str) -> Callable:
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable:
        return self.route("POST", pattern)

    def put(self, pattern: str) -> Callable:
        return self.route("PUT", pattern)

    def patch(self, pattern: str) -> Callable:
        return self.route("PATCH", pattern)

    def delete(self, pattern: str) -> Callable:
        return self.route("DELETE", pattern)

    def dispatch(self, req: Request) -> Response:
        """The response of the route that matches `req` (404, 405 or 204 for OPTIONS otherwise)."""
        path = _trim(req.path)
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if req.method in route.methods or (req.method == "HEAD" and "GET" in route.methods):
                req.params = params
                try:
                    return _as_response(route.fn(req, **params))
                except HttpError as exc:
                    return exc.response()
            allowed.update(route.methods)
        if not allowed:
            return Response(404, {"error": f"not found: {req.method} {req.path}"})
        allow = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set()) | {"OPTIONS"}))
        if req.method == "OPTIONS":
            return Response(204, None, {"Allow": allow})
        return Response(405, {"error": f"method {req.method} not allowed on {req.path}: use {allow}"},
                        {"Allow": allow})

    def handle(self, state: bytes | None, params: tuple) -> tuple:
        """http-server.handle-request: (state, (incoming-request,)) -> (state, (http-response,))."""
        (record,) = params
        req = Request.from_record(record, state, self.default)
        response = self.dispatch(req)
        return (req.new_state(), (response.to_record(),))

    @property
    def handler(self) -> Callable:
        """`handle` as a method for the export class: `handle_request = router.handler`."""
        router = self

        def handle_request(_export: Any, state: bytes | None, params: tuple) -> tuple:
            return router.handle(state, params)
        return handle_request


def fetch(method: str, url: str, headers: Any = None, body: Any = None, json: Any = None) -> Response:
    """Send one HTTP request through the http-client handler and return its Response (any status:
    check `.ok` or `.status`). `body`: bytes, str (text/plain) or a JSON value (application/json);
    or `json=value`. A refusal or failure (a host not in allowed_hosts, a refused connection, a
    timeout, a body over a limit) raises HostError with the host's message."""
    if _wit_http_client is None or _wit_http_types is None:
        _host(None, "http-client", "send_http")             # raises NotGranted
    hdrs = Headers(headers)
    content_type = None
    if json is not None:
        data, content_type = dump(json), "application/json"
    elif body is None:
        data = None
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    elif isinstance(body, str):
        data, content_type = body.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        data, content_type = dump(body), "application/json"
    if content_type and "content-type" not in hdrs:
        hdrs.append(("Content-Type", content_type))
    req = _wit_http_types.HttpRequest(method=method, uri=url, headers=[(n, v) for n, v in hdrs], body=data)
    resp = _host(_wit_http_client, "http-client", "send_http", req)
    return Response(resp.status, resp.body, resp.headers)


class http:  # noqa: N801 - a namespace, used as sdk.http.Router, sdk.http.fetch ...
    """HTTP for actors: serving (the http-server handler: Router, Request, Response, json_response,
    HttpError) and calling out (the http-client handler: fetch). See Router and fetch."""

    Router = Router
    Request = Request
    Response = Response
    Headers = Headers
    HttpError = HttpError
    json_response = staticmethod(json_response)
    fetch = staticmethod(fetch)


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
