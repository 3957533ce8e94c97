"""fastabi gives exactly the values wasmtime's stock component calls give.

theater_otp.worker.fastabi replaces byte-list conversion (`install()`, global) and plans
each export's conversions once (`TypedFunc`). For the echo and counter WAT actors every
export is called three ways on the same instance and inputs:

* `TypedFunc(func, store)(store, ...)`                    the fast path the worker uses;
* `func(store, ...)` with wasmtime's original ListType     the truly stock path;
* `func(store, ...)` with fastabi installed               stock Func, patched list conversion;

and the results must be identical to each other AND to the value the actor's header
says it returns (computed here in Python), so a bug shared by the patched stock path
and TypedFunc is still caught. post_return follows every call, as the worker does it.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import given, settings
from hypothesis import strategies as st
from wasmtime.component import _types

from theater_otp.worker import fastabi

pytestmark = pytest.mark.integration

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"
ACTOR = "theater:simple/actor"
MSC = "theater:simple/message-server-client"
U64_MAX = 2**64 - 1

rng = random.Random(20240917)
BIG = rng.randbytes(100 * 1024)                     # 100 KiB
ALL_BYTES = bytes(range(256))
STATES = [None, b"", b"\x00", b"\xff", b"7", ALL_BYTES, BIG]
MESSAGES = [b"", b"\x00", b"a", b"\x80", ALL_BYTES, BIG]
REQUEST_IDS = ["", "r-1", "ünïcødé ☃ 日本語 🎭", "\u0000nul\u0000", "é" * 5000, "id-" + "𝄞" * 1000]


class Loaded:
    """One instantiated component with its exports as raw Funcs and TypedFuncs. Owns store and linker."""

    def __init__(self, wat: str):
        self.engine = wasmtime.Engine()
        self.component = wc.Component(self.engine, (WAT / wat).read_text())
        self.store = wasmtime.Store(self.engine)
        self.linker = wc.Linker(self.engine)
        self.logged: list[str] = []
        with self.linker.root() as r:
            with r.add_instance("theater:simple/runtime") as i:
                i.add_func("log", lambda store, msg: None)
        self.instance = self.linker.instantiate(self.store, self.component)
        self.funcs: dict[str, wc.Func] = {}
        self.typed: dict[str, fastabi.TypedFunc] = {}
        self.pure: dict[str, fastabi.TypedFunc] = {}  # the Python converters only
        for iface, name in ((ACTOR, "init"), (MSC, "handle-send"), (MSC, "handle-request")):
            iface_idx = self.component.get_export_index(iface)
            func_idx = self.component.get_export_index(name, iface_idx)
            func = self.instance.get_func(self.store, func_idx)
            assert func is not None, f"{wat} does not export {iface}.{name}"
            self.funcs[name] = func
            self.typed[name] = fastabi.TypedFunc(func, self.store)
            self.pure[name] = fastabi.TypedFunc(func, self.store, native=False)

    def close(self) -> None:
        self.typed.clear()
        self.funcs.clear()
        self.linker.close()
        self.store.close()

    def fast(self, name: str, *args: Any, pure: bool = False) -> Any:
        f = (self.pure if pure else self.typed)[name]
        result = f(self.store, *args)
        f.post_return(self.store)
        return result

    def stock(self, name: str, *args: Any) -> Any:
        f = self.funcs[name]
        result = f(self.store, *args)
        f.post_return(self.store)
        return result


@contextlib.contextmanager
def original_list_conversion():
    """wasmtime's own ListType conversion for the duration (restores whatever was installed)."""
    saved = (_types.ListType.convert_to_c, _types.ListType.convert_from_c)
    _types.ListType.convert_to_c = fastabi._stock_to_c
    _types.ListType.convert_from_c = fastabi._stock_from_c
    try:
        yield
    finally:
        _types.ListType.convert_to_c, _types.ListType.convert_from_c = saved


@pytest.fixture(scope="module", autouse=True)
def _installed():
    fastabi.install()
    assert _types.ListType.convert_from_c is fastabi._bytes_from_c
    yield


@pytest.fixture(scope="module")
def echo():
    loaded = Loaded("echo.wat")
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def counter():
    loaded = Loaded("counter.wat")
    yield loaded
    loaded.close()


def same_three_ways(actor: Loaded, name: str, args: tuple, expected: Any) -> None:
    """TypedFunc (the C converter where built, and the Python one), truly-stock Func and patched-stock
    Func all return `expected`, exactly."""
    fast = actor.fast(name, *args)
    assert actor.fast(name, *args, pure=True) == fast, f"the C and Python converters differ for {name}"
    with original_list_conversion():
        stock = actor.stock(name, *args)
    patched = actor.stock(name, *args)
    label = f"{name}{tuple(_short(a) for a in args)}"
    assert stock == expected, f"stock wasmtime disagrees with the actor's documented result for {label}"
    assert fast == stock, f"TypedFunc differs from stock wasmtime for {label}"
    assert patched == stock, f"stock Func with fastabi.install() differs from stock wasmtime for {label}"
    assert _types_of(fast) == _types_of(stock), f"value types differ for {label}"


def _types_of(value: Any) -> Any:
    if isinstance(value, tuple):
        return ("tuple", tuple(_types_of(v) for v in value))
    return type(value).__name__


def _short(value: Any) -> Any:
    if isinstance(value, (bytes, str)) and len(value) > 12:
        return f"<{type(value).__name__} len {len(value)}>"
    if isinstance(value, tuple):
        return tuple(_short(v) for v in value)
    return value


# ---- sanity of the comparison itself ---------------------------------------------------------

def test_the_stock_conversion_kept_by_fastabi_is_wasmtimes_own():
    """fastabi._stock_* are wasmtime's ListType methods, so `original_list_conversion` is the stock path."""
    assert fastabi._stock_to_c.__module__ == "wasmtime.component._types"
    assert fastabi._stock_to_c.__qualname__ == "ListType.convert_to_c"
    assert fastabi._stock_from_c.__qualname__ == "ListType.convert_from_c"
    fastabi.install()  # idempotent: a second install keeps the originals
    assert fastabi._stock_to_c.__module__ == "wasmtime.component._types"


# ---- echo ------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", STATES, ids=lambda s: _short(s) if s is not None else "None")
def test_echo_init_matches_stock_and_keeps_state(echo, state):
    """echo init returns ok((state,)) identically on every path."""
    same_three_ways(echo, "init", (state,), (state,))


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: str(_short(m)))
@pytest.mark.parametrize("state", [None, b"", b"s", BIG])
def test_echo_handle_send_matches_stock_and_keeps_state(echo, state, msg):
    """echo handle-send returns ok((state,)) identically on every path."""
    same_three_ways(echo, "handle-send", (state, (msg,)), (state,))


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: str(_short(m)))
@pytest.mark.parametrize("state", [None, b"", ALL_BYTES, BIG], ids=["None", "empty", "all-bytes", "100KiB"])
def test_echo_handle_request_matches_stock_and_echoes_exact_bytes(echo, state, msg):
    """echo handle-request returns ok((state, (some(msg),))): the exact input bytes, on every path."""
    same_three_ways(echo, "handle-request", (state, ("req-1", msg)), (state, (msg,)))


@pytest.mark.parametrize("request_id", REQUEST_IDS, ids=range(len(REQUEST_IDS)))
def test_echo_handle_request_accepts_any_request_id_string(echo, request_id):
    """Non-ASCII, empty, NUL-containing and long request ids lower the same on every path."""
    same_three_ways(echo, "handle-request", (b"st", (request_id, b"hi")), (b"st", (b"hi",)))


def test_echo_every_single_byte_value_round_trips(echo):
    """Each of the 256 one-byte messages (and states) comes back as itself on every path."""
    for value in range(256):
        one = bytes([value])
        same_three_ways(echo, "handle-request", (one, ("id", one)), (one, (one,)))


def test_echo_bytes_subclass_and_bytearray_arrive_as_bytes(echo):
    """TypedFunc lowers bytearray like bytes; lifted values are always plain bytes."""
    reply = echo.fast("handle-request", bytearray(b"st"), ("id", bytearray(ALL_BYTES)))
    assert reply == (b"st", (ALL_BYTES,))
    assert type(reply[0]) is bytes and type(reply[1][0]) is bytes


# ---- counter ---------------------------------------------------------------------------------

@pytest.mark.parametrize("state,expected", [
    (None, (b"0",)),
    (b"", (b"0",)),
    (b"0", (b"0",)),
    (b"42", (b"42",)),
    (b"007", (b"007",)),
    (str(U64_MAX).encode(), (str(U64_MAX).encode(),)),
    (b"fail", "init refused: state is fail"),
    (b"fail\x00", "init refused: state is not a decimal number"),
    (b"x", "init refused: state is not a decimal number"),
    (b"\xff", "init refused: state is not a decimal number"),
    (str(U64_MAX + 1).encode(), "init refused: state is not a decimal number"),
    (ALL_BYTES, "init refused: state is not a decimal number"),
    (BIG, "init refused: state is not a decimal number"),
    (b"1" * 20, (b"1" * 20,)),  # 1.1e19 fits in a u64
    (b"9" * 20, "init refused: state is not a decimal number"),  # 9.9e19 does not
], ids=lambda v: str(_short(v)))
def test_counter_init_matches_stock_including_err_results(counter, state, expected):
    """counter init: ok((state,)) or the err string, identical on every path."""
    same_three_ways(counter, "init", (state,), expected)


@pytest.mark.parametrize("state,expected", [
    (None, (b"1",)),
    (b"", (b"1",)),
    (b"41", (b"42",)),
    (b"9", (b"10",)),
    (str(U64_MAX).encode(), (b"0",)),  # u64 wrap
    (b"nope", "counter: state is not a decimal number"),
    (BIG, "counter: state is not a decimal number"),
])
@pytest.mark.parametrize("msg", [b"", b"x", ALL_BYTES, BIG], ids=["empty", "x", "all-bytes", "100KiB"])
def test_counter_handle_send_matches_stock(counter, state, expected, msg):
    """counter handle-send counts (or returns its err string) identically on every path."""
    same_three_ways(counter, "handle-send", (state, (msg,)), expected)


@pytest.mark.parametrize("state,msg,expected", [
    (b"5", b"get", (b"5", (b"5",))),
    (None, b"get", (None, (b"0",))),
    (b"", b"get", (b"", (b"0",))),
    (b"5", b"inc", (b"6", (b"6",))),
    (None, b"", (b"1", (b"1",))),
    (b"5", b"get\x00", (b"6", (b"6",))),
    (b"5", BIG, (b"6", (b"6",))),
    (b"5", ALL_BYTES, (b"6", (b"6",))),
    (str(U64_MAX).encode(), b"inc", (b"0", (b"0",))),
    (b"-1", b"get", "counter: state is not a decimal number"),
])
@pytest.mark.parametrize("request_id", ["", "r", "ünïcødé ☃ 🎭"], ids=["empty-id", "ascii-id", "unicode-id"])
def test_counter_handle_request_matches_stock(counter, state, msg, expected, request_id):
    """counter handle-request replies (or errs) identically on every path."""
    same_three_ways(counter, "handle-request", (state, (request_id, msg)), expected)


def test_counter_counts_across_many_calls_through_typed_funcs(counter):
    """Threading state through 300 TypedFunc calls counts exactly like Python does."""
    (state,) = counter.fast("init", None)
    for n in range(1, 301):
        (state,) = counter.fast("handle-send", state, (b"tick",))
        assert state == str(n).encode()
    assert counter.fast("handle-request", state, ("id", b"get")) == (b"300", (b"300",))


# ---- wrong argument types --------------------------------------------------------------------

WRONG = [
    # (export, args) — every one of these is a type error for theater:simple's signatures
    ("init", ("text state",)),
    ("init", (1,)),
    ("init", ([1, 2, 3],)),
    ("init", ()),
    ("init", (None, None)),
    ("handle-send", (None, b"msg")),
    ("handle-send", (None, ["msg"])),
    ("handle-send", (None, ("msg",))),
    ("handle-send", (None, (b"a", b"b"))),
    ("handle-send", (None, None)),
    ("handle-request", (None, (b"id", b"msg"))),
    ("handle-request", (None, ("id", "msg"))),
    ("handle-request", (None, ("id",))),
    ("handle-request", (None, (7, b"msg"))),
    ("handle-request", (b"state", ("id", b"msg", b"extra"))),
    ("handle-request", ("state", ("id", b"msg"))),
]


def wrong_type_report() -> list[dict]:
    """Run every WRONG call through TypedFunc on echo and counter; then prove both still work."""
    fastabi.install()
    out = []
    for wat, ok_args, ok_expected in (
            ("echo.wat", (b"s", ("id", b"still alive")), (b"s", (b"still alive",))),
            ("counter.wat", (b"1", ("id", b"get")), (b"1", (b"1",)))):
        actor = Loaded(wat)
        try:
            for name, args in WRONG:
                try:
                    actor.typed[name](actor.store, *args)
                    outcome = "no error"
                except Exception as exc:
                    outcome = type(exc).__name__
                out.append({"wat": wat, "call": f"{name}{args!r}", "raised": outcome})
            after = actor.fast("handle-request", *ok_args)
            out.append({"wat": wat, "call": "afterwards", "raised": "ok" if after == ok_expected else repr(after)})
        finally:
            actor.close()
    return out


def test_wrong_argument_type_raises_type_error_not_a_crash():
    """Every mistyped argument is a TypeError from TypedFunc; the process survives and the instance still works."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_fastabi as t; "
            "print(json.dumps(t.wrong_type_report()))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the process crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * (len(WRONG) + 1)
    bad = [r for r in report if r["raised"] not in ("TypeError", "ok")]
    assert not bad, "calls that did not raise TypeError (or broke the instance):\n" + "\n".join(map(str, bad))


def test_wrong_argument_type_leaves_the_in_process_instance_usable(echo):
    """In this process too: TypeError, then the next call on the same store works."""
    for name, args in WRONG:
        with pytest.raises(TypeError):
            echo.typed[name](echo.store, *args)
    assert echo.fast("handle-request", b"s", ("id", b"ok")) == (b"s", (b"ok",))


# ---- records and lists (httpecho: an http-request record in, an http-response record out) --------

HTTP = "theater:simple/http-server"


@pytest.fixture(scope="module")
def httpecho():
    engine = wasmtime.Engine()
    component = wc.Component(engine, (WAT / "httpecho.wat").read_text())
    store = wasmtime.Store(engine)
    linker = wc.Linker(engine)
    with linker.root() as r:
        with r.add_instance("theater:simple/http-types"):
            pass
    instance = linker.instantiate(store, component)
    func = instance.get_func(store, component.get_export_index(
        "handle-request", component.get_export_index(HTTP)))
    assert func is not None
    yield store, func, fastabi.TypedFunc(func, store)
    linker.close()
    store.close()


def _request(method: str, path: str, query: str, headers: list, body: bytes | None) -> _types.Record:
    rec = _types.Record()
    rec.method, rec.uri, rec.path, rec.query = method, f"{path}?{query}", path, query
    rec.headers, rec.body = headers, body
    return rec


def _plain(value: Any) -> Any:
    """A lifted value with its records as dicts, so two results compare field by field."""
    if isinstance(value, _types.Record):
        return {k: _plain(v) for k, v in sorted(vars(value).items())}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


HEADERS = [[], [("Host", "h")], [("a", ""), ("ünï", "☃ 日本")] * 20, [("x-" + str(i), "v" * i) for i in range(50)]]


@pytest.mark.parametrize("headers", HEADERS, ids=["none", "one", "unicode-40", "fifty"])
@pytest.mark.parametrize("body", [None, b"", ALL_BYTES])
def test_httpecho_record_and_list_conversion_matches_stock(httpecho, headers, body):
    """A record holding a list of tuples of strings goes in, and a record with a list comes out, exactly as the
    stock path converts them; the response echoes method, path, query and body."""
    store, func, typed = httpecho
    req = _request("PUT", "/kv/ünï", "x=1&y=☃", headers, body)
    fast = typed(store, b"\x05\x00\x00\x00", (req,))
    typed.post_return(store)
    stock = func(store, b"\x05\x00\x00\x00", (req,))
    func.post_return(store)
    assert _plain(fast) == _plain(stock)
    state, (response,) = fast
    assert state == b"\x06\x00\x00\x00"  # the count, one more
    assert response.status == 200 and response.headers == [("content-type", "text/plain")]
    assert response.body == "PUT /kv/ünï?x=1&y=☃\n".encode() + (body or b"")


def test_httpecho_mistyped_record_fields_raise_and_leave_the_instance_usable(httpecho):
    store, func, typed = httpecho
    bad = [_request("GET", "/", "", [("a", 1)], None),            # an int where a string goes
           _request("GET", "/", "", [("a", "b", "c")], None),     # a tuple of three
           _request("GET", "/", "", "not a list", None),          # a str where a list goes
           _request(7, "/", "", [], None)]                        # an int method
    for req in bad:
        with pytest.raises(TypeError):
            typed(store, None, (req,))
    missing = _types.Record()
    missing.method = "GET"
    with pytest.raises(AttributeError):
        typed(store, None, (missing,))
    state, (response,) = typed(store, None, (_request("GET", "/count", "", [], None),))
    typed.post_return(store)
    assert state == b"\x01\x00\x00\x00" and response.body == b"1"


# ---- the C converter (theater_otp/worker/_valconv.c) against the Python one ------------------------

needs_native = pytest.mark.skipif(fastabi._native is None, reason="theater_otp.worker._valconv was not built here")


@needs_native
def test_the_c_converter_is_used_where_it_has_a_plan(httpecho):
    store, func, typed = httpecho
    assert typed.lower_plans[0] == (fastabi._OPTION, (fastabi._BYTES,)) and typed.lower_plans[1][0] == fastabi._TUPLE
    assert typed.lift_plan[0] == fastabi._RESULT
    assert fastabi.TypedFunc(func, store, native=False).lift_plan is None


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@needs_native
@settings(max_examples=150, deadline=None)
@given(method=_text, path=_text, query=_text, headers=st.lists(st.tuples(_text, _text), max_size=12),
       body=st.one_of(st.none(), st.binary(max_size=300)), state=st.one_of(st.none(), st.binary(max_size=12)))
def test_c_and_python_converters_agree_on_any_request(httpecho, method, path, query, headers, body, state):
    store, func, typed = httpecho
    pure = fastabi.TypedFunc(func, store, native=False)
    req = _request(method, path, query, headers, body)
    out = []
    for f in (typed, pure):
        result = f(store, state, (req,))
        f.post_return(store)
        out.append(_plain(result))
    assert out[0] == out[1]


@needs_native
def test_the_c_converter_refuses_what_the_python_one_refuses_and_the_instance_lives_on(httpecho):
    store, func, typed = httpecho
    pure = fastabi.TypedFunc(func, store, native=False)
    bad = [(b"s", (_request("GET", "/", "", [("a", 1)], None),)),
           (b"s", (_request("GET", "/", "", [("a",)], None),)),
           (b"s", (_request("GET", "/", "", ("not", "a list"), None),)),
           (b"s", (_request("GET", "/", "", [], "str body"),)),
           ("str state", (_request("GET", "/", "", [], None),)),
           (b"s", ["not a tuple"])]
    for args in bad:
        for f in (typed, pure):
            with pytest.raises(TypeError):
                f(store, *args)
    state, (response,) = typed(store, None, (_request("GET", "/count", "", [], None),))
    typed.post_return(store)
    assert response.body == b"1"
