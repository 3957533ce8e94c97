"""The component-WAT test actors in actors/wat/ behave as their headers say.

Each actor is compiled with wasmtime's component API, linked against a fake host that
records every import call, and driven through the theater:simple exports exactly as the
host drives them (call, then post_return). The ABI is spec/theater-abi.md.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc

pytestmark = pytest.mark.integration

WAT_DIR = Path(__file__).resolve().parent.parent / "actors" / "wat"
ACTOR = "theater:simple/actor"
MSC = "theater:simple/message-server-client"
PAGE = 65536


class FakeHost:
    """The host side of runtime, message-server-host and timing; records calls in order.

    `send_result`, `request_result`, `sleep_result` and `shutdown_result` are what the
    corresponding import returns: None (ok) or a str (err); for request, bytes (ok) or str.
    """

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.send_result: str | None = None
        self.request_result: bytes | str = b"ok"
        self.sleep_result: str | None = None
        self.shutdown_result: str | None = None

    def logs(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "log"]

    def without_logs(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "log"]

    def link(self, linker: wc.Linker) -> None:
        with linker.root() as root:
            with root.add_instance("theater:simple/runtime") as rt:
                rt.add_func("log", self._log)
                rt.add_func("shutdown", self._shutdown)
            with root.add_instance("theater:simple/message-server-host") as msh:
                msh.add_func("send", self._send)
                msh.add_func("request", self._request)
            with root.add_instance("theater:simple/timing") as tm:
                tm.add_func("sleep", self._sleep)

    def _log(self, store, msg: str) -> None:
        self.calls.append(("log", msg))

    def _shutdown(self, store, data: bytes | None) -> str | None:
        self.calls.append(("shutdown", data))
        return self.shutdown_result

    def _send(self, store, actor_id: str, msg: bytes) -> str | None:
        self.calls.append(("send", actor_id, msg))
        return self.send_result

    def _request(self, store, actor_id: str, msg: bytes) -> bytes | str:
        self.calls.append(("request", actor_id, msg))
        return self.request_result

    def _sleep(self, store, duration_ms: int) -> str | None:
        self.calls.append(("sleep", duration_ms))
        return self.sleep_result


class Actor:
    """One instance of a WAT actor: the export functions, called the way the host calls them."""

    def __init__(self, name: str, engine: wasmtime.Engine | None = None,
                 memory_limit: int | None = None, epoch_deadline: int | None = None) -> None:
        self.engine = engine or wasmtime.Engine()
        self.component = wc.Component(self.engine, (WAT_DIR / f"{name}.wat").read_text())
        self.host = FakeHost()
        linker = wc.Linker(self.engine)
        self.host.link(linker)
        self.store = wasmtime.Store(self.engine)
        if memory_limit is not None:
            self.store.set_limits(memory_size=memory_limit)
        if epoch_deadline is not None:
            # must be set before instantiating: the default deadline has already passed
            self.store.set_epoch_deadline(epoch_deadline)
        self.instance = linker.instantiate(self.store, self.component)
        self._funcs: dict[tuple[str, str], wc.Func] = {}

    def func(self, interface: str, name: str) -> wc.Func:
        if (interface, name) in self._funcs:
            return self._funcs[interface, name]
        iface = self.component.get_export_index(interface)
        assert iface is not None, f"{interface} is not exported"
        idx = self.component.get_export_index(name, iface)
        assert idx is not None, f"{interface}#{name} is not exported"
        f = self.instance.get_func(self.store, idx)
        assert f is not None
        self._funcs[interface, name] = f
        return f

    def _call(self, interface: str, name: str, *args):
        f = self.func(interface, name)
        result = f(self.store, *args)
        f.post_return(self.store)
        return result

    def init(self, state: bytes | None):
        return self._call(ACTOR, "init", state)

    def send(self, state: bytes | None, msg: bytes):
        return self._call(MSC, "handle-send", state, (msg,))

    def request(self, state: bytes | None, msg: bytes, request_id: str = "req-1"):
        return self._call(MSC, "handle-request", state, (request_id, msg))


# ---------------------------------------------------------------------------- all actors

ALL = ["echo", "counter", "crasher", "pump", "relay", "noinit", "clock"]


@pytest.mark.parametrize("name", ALL)
def test_every_wat_actor_compiles_as_a_component(name):
    wc.Component(wasmtime.Engine(), (WAT_DIR / f"{name}.wat").read_text())


@pytest.mark.parametrize("name", ["echo", "counter", "crasher", "pump", "relay"])
def test_actors_export_the_full_theater_simple_interface_names(name):
    comp = wc.Component(wasmtime.Engine(), (WAT_DIR / f"{name}.wat").read_text())
    actor = comp.get_export_index(ACTOR)
    msc = comp.get_export_index(MSC)
    assert actor is not None and msc is not None
    assert comp.get_export_index("init", actor) is not None
    assert comp.get_export_index("handle-send", msc) is not None
    assert comp.get_export_index("handle-request", msc) is not None
    # short names are not exports
    assert comp.get_export_index("actor") is None


# ---------------------------------------------------------------------------- echo

def test_echo_init_keeps_state():
    a = Actor("echo")
    assert a.init(b"abc") == (b"abc",)
    assert a.init(None) == (None,)


def test_echo_handle_send_logs_and_keeps_state():
    a = Actor("echo")
    assert a.send(b"st", b"hello") == (b"st",)
    assert a.host.logs() == ["echo got message"]


def test_echo_handle_request_replies_with_the_message():
    a = Actor("echo")
    assert a.request(b"st", b"ping") == (b"st", (b"ping",))
    assert a.request(None, b"") == (None, (b"",))


def test_echo_takes_a_64_kib_message():
    a = Actor("echo")
    msg = bytes(range(256)) * 256
    assert len(msg) == 64 * 1024
    assert a.request(b"st", msg) == (b"st", (msg,))


def test_realloc_grows_memory_for_a_message_larger_than_the_initial_pages():
    """The component starts with 2 pages (128 KiB); a 200 KiB message needs memory.grow."""
    a = Actor("echo")
    msg = b"z" * (200 * 1024)
    assert a.request(b"s", msg) == (b"s", (msg,))
    # and the memory is reused afterwards
    assert a.request(b"s", b"small") == (b"s", (b"small",))


def test_echo_runs_forever_in_bounded_memory():
    """About 330 KB is allocated over these calls: more than 4 pages unless post-return frees."""
    a = Actor("echo", memory_limit=4 * PAGE)
    msg = b"m" * 100
    for _ in range(3000):
        assert a.request(b"state", msg) == (b"state", (msg,))


# ---------------------------------------------------------------------------- counter

@pytest.mark.parametrize("state", [None, b""])
def test_counter_init_without_state_starts_at_zero(state):
    assert Actor("counter").init(state) == (b"0",)


def test_counter_init_keeps_a_valid_number():
    a = Actor("counter")
    assert a.init(b"42") == (b"42",)
    assert a.init(b"18446744073709551615") == (b"18446744073709551615",)


def test_counter_init_refuses_fail():
    assert Actor("counter").init(b"fail") == "init refused: state is fail"


@pytest.mark.parametrize("state", [b"abc", b"-1", b"4 2", b"18446744073709551616"])
def test_counter_init_refuses_a_state_that_is_not_a_u64(state):
    assert Actor("counter").init(state) == "init refused: state is not a decimal number"


def test_counter_handle_send_increments():
    a = Actor("counter")
    assert a.send(b"41", b"anything") == (b"42",)
    assert a.send(b"9", b"") == (b"10",)
    assert a.send(None, b"x") == (b"1",)


def test_counter_counts_through_u64_sized_values():
    a = Actor("counter")
    assert a.send(b"9999999999999999999", b"x") == (b"10000000000000000000",)
    assert a.send(b"18446744073709551614", b"x") == (b"18446744073709551615",)


def test_counter_get_replies_the_count_without_changing_it():
    a = Actor("counter")
    assert a.request(b"42", b"get") == (b"42", (b"42",))
    assert a.request(None, b"get") == (None, (b"0",))


def test_counter_other_requests_increment_and_reply_the_new_count():
    a = Actor("counter")
    assert a.request(b"42", b"inc") == (b"43", (b"43",))
    assert a.request(b"42", b"getx") == (b"43", (b"43",))


def test_counter_stays_correct_over_20000_sends_in_bounded_memory():
    """The bump allocator is reset by post-return: about 600 KB is allocated over these
    calls, yet memory may not grow past 4 pages."""
    a = Actor("counter", memory_limit=4 * PAGE)
    assert a.init(None) == (b"0",)
    state = b"0"
    for _ in range(20_000):
        (state,) = a.send(state, b"tick")
    assert a.request(state, b"get") == (b"20000", (b"20000",))


def test_counter_takes_a_64_kib_message():
    a = Actor("counter")
    assert a.send(b"1", b"x" * 65536) == (b"2",)


# ---------------------------------------------------------------------------- crasher

def test_crasher_init_keeps_state_and_refuses_fail():
    a = Actor("crasher")
    assert a.init(b"anything") == (b"anything",)
    assert a.init(None) == (None,)
    assert a.init(b"fail") == "init refused: state is fail"


def test_crasher_err_returns_the_error_string():
    a = Actor("crasher")
    assert a.send(b"s", b"err") == "asked to fail"
    assert a.request(b"s", b"err") == "asked to fail"


def test_crasher_err_leaves_the_instance_usable():
    a = Actor("crasher")
    assert a.send(b"s", b"err") == "asked to fail"
    assert a.send(b"s", b"hello") == (b"s",)


@pytest.mark.parametrize("export", ["send", "request"])
def test_crasher_trap_raises_a_wasm_trap(export):
    a = Actor("crasher")
    with pytest.raises(wasmtime.WasmtimeError, match="unreachable"):
        getattr(a, export)(b"s", b"trap")
    # a trapped instance cannot be entered again: the host must start a new one
    with pytest.raises(wasmtime.WasmtimeError, match="cannot enter component instance"):
        a.send(b"s", b"hello")


def test_crasher_exit_calls_shutdown_and_returns_ok():
    a = Actor("crasher")
    assert a.send(b"s", b"exit") == (b"s",)
    assert a.host.without_logs() == [("shutdown", None)]


def test_crasher_exit_by_request_calls_shutdown_and_echoes():
    a = Actor("crasher")
    assert a.request(b"s", b"exit") == (b"s", (b"exit",))
    assert a.host.without_logs() == [("shutdown", None)]


def test_crasher_exit_logs_a_refused_shutdown():
    a = Actor("crasher")
    a.host.shutdown_result = "denied"
    assert a.send(b"s", b"exit") == (b"s",)
    assert "crasher: shutdown failed: denied" in a.host.logs()


def test_crasher_other_messages_keep_state_or_echo():
    a = Actor("crasher")
    assert a.send(b"s", b"hello") == (b"s",)
    assert a.request(b"s", b"hello") == (b"s", (b"hello",))
    assert a.host.without_logs() == []


@pytest.mark.parametrize("export", ["send", "request"])
def test_crasher_loop_is_interrupted_by_the_epoch_deadline(export):
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    engine = wasmtime.Engine(cfg)
    a = Actor("crasher", engine=engine, epoch_deadline=1)
    assert a.send(b"s", b"hello") == (b"s",)
    a.store.set_epoch_deadline(1)
    timer = threading.Timer(0.2, engine.increment_epoch)
    timer.start()
    try:
        with pytest.raises(wasmtime.WasmtimeError, match="interrupt"):
            getattr(a, export)(b"s", b"loop")
    finally:
        timer.cancel()


# ---------------------------------------------------------------------------- pump

PUMP_STATE = b"pump-1\ncounter-1"


def test_pump_init_logs_and_sends_tick_to_itself():
    a = Actor("pump")
    assert a.init(PUMP_STATE) == (PUMP_STATE,)
    assert a.host.calls == [("log", "pump started"), ("send", "pump-1", b"tick")]


def test_pump_init_logs_but_ignores_a_send_error():
    a = Actor("pump")
    a.host.send_result = "no such actor"
    assert a.init(PUMP_STATE) == (PUMP_STATE,)
    assert "pump: send failed: no such actor" in a.host.logs()


@pytest.mark.parametrize("state", [None, b"", b"no-newline"])
def test_pump_init_refuses_a_state_without_two_lines(state):
    result = Actor("pump").init(state)
    assert isinstance(result, str) and result.startswith("init refused")


def test_pump_tick_sleeps_then_requests_inc_then_ticks_itself():
    a = Actor("pump")
    a.host.request_result = b"7"
    assert a.send(PUMP_STATE, b"tick") == (PUMP_STATE,)
    assert a.host.without_logs() == [
        ("sleep", 250),
        ("request", "counter-1", b"inc"),
        ("send", "pump-1", b"tick"),
    ]
    assert a.host.logs() == ["pump: target says 7"]


def test_pump_logs_a_failed_request_and_keeps_going():
    a = Actor("pump")
    a.host.request_result = "target is down"
    assert a.send(PUMP_STATE, b"tick") == (PUMP_STATE,)
    assert a.host.logs() == ["pump: request failed: target is down"]
    assert a.host.without_logs()[-1] == ("send", "pump-1", b"tick")


def test_pump_logs_sleep_and_send_errors_and_keeps_going():
    a = Actor("pump")
    a.host.sleep_result = "too long"
    a.host.send_result = "mailbox full"
    assert a.send(PUMP_STATE, b"tick") == (PUMP_STATE,)
    assert a.host.logs() == [
        "pump: sleep failed: too long",
        "pump: target says ok",
        "pump: send failed: mailbox full",
    ]


def test_pump_request_replies_pump():
    a = Actor("pump")
    assert a.request(PUMP_STATE, b"anything") == (PUMP_STATE, (b"pump",))
    assert a.host.calls == []


def test_pump_runs_forever_in_bounded_memory():
    """About 280 KB is allocated over these calls: more than 4 pages unless post-return frees."""
    a = Actor("pump", memory_limit=4 * PAGE)
    a.host.request_result = b"x" * 50
    for _ in range(2000):
        assert a.send(PUMP_STATE, b"tick") == (PUMP_STATE,)


# ---------------------------------------------------------------------------- relay

def test_relay_init_keeps_state():
    assert Actor("relay").init(b"next-1") == (b"next-1",)


def test_relay_send_forwards_to_next():
    a = Actor("relay")
    assert a.send(b"next-1", b"hello") == (b"next-1",)
    assert a.host.without_logs() == [("send", "next-1", b"hello")]
    assert a.host.logs() == ["relay: forwarding message"]


def test_relay_send_logs_a_send_error_and_keeps_state():
    a = Actor("relay")
    a.host.send_result = "gone"
    assert a.send(b"next-1", b"hello") == (b"next-1",)
    assert "relay: send failed: gone" in a.host.logs()


def test_relay_request_replies_with_the_next_actors_reply():
    a = Actor("relay")
    a.host.request_result = b"pong"
    assert a.request(b"next-1", b"ping") == (b"next-1", (b"pong",))
    assert a.host.without_logs() == [("request", "next-1", b"ping")]


def test_relay_request_error_becomes_the_reply_not_a_crash():
    a = Actor("relay")
    a.host.request_result = "next-1 crashed"
    assert a.request(b"next-1", b"ping") == (b"next-1", (b"next-1 crashed",))


def test_relay_forwards_64_kib_both_ways():
    a = Actor("relay")
    msg = b"r" * 65536
    a.host.request_result = msg[::-1]
    assert a.request(b"next-1", msg) == (b"next-1", (msg[::-1],))
    assert a.host.calls[-1] == ("request", "next-1", msg)


# ---------------------------------------------------------------------------- noinit

def test_noinit_has_no_actor_export():
    comp = wc.Component(wasmtime.Engine(), (WAT_DIR / "noinit.wat").read_text())
    assert comp.get_export_index(ACTOR) is None
    msc = comp.get_export_index(MSC)
    assert msc is not None
    assert comp.get_export_index("handle-send", msc) is not None
    assert comp.get_export_index("handle-request", msc) is None


def test_noinit_handle_send_works():
    engine = wasmtime.Engine()
    comp = wc.Component(engine, (WAT_DIR / "noinit.wat").read_text())
    store = wasmtime.Store(engine)
    inst = wc.Linker(engine).instantiate(store, comp)
    f = inst.get_func(store, comp.get_export_index("handle-send", comp.get_export_index(MSC)))
    assert f(store, b"s", (b"m",)) == (b"s",)
    f.post_return(store)
