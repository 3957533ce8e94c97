"""actors/wat/boss.wat: a supervising actor behaves as its header says.

Same pattern as test_wat_actors.py: the component is linked against a fake host that
records every import call (here runtime.log and the theater:simple/supervisor functions)
and driven through its exports the way the host drives them (call, then post_return).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc

from theater_otp.worker import fastabi

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
WAT = ROOT / "actors" / "wat" / "boss.wat"
ACTOR = "theater:simple/actor"
MSC = "theater:simple/message-server-client"
HANDLERS = "theater:simple/supervisor-handlers"
SUPERVISOR = "theater:simple/supervisor"
RUNTIME = "theater:simple/runtime"
PAGE = 65536

STATE = b"child.toml"


class FakeSupervisorHost:
    """runtime.log and theater:simple/supervisor; records calls in order.

    spawn_result: ("ok", id) or ("err", text); children: what list-children returns;
    stop_result / restart_result: None (ok) or a str (err);
    state_result: bytes / None (ok) or a fastabi.Err.
    """

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.spawn_result: tuple[str, str] = ("ok", "child-1")
        self.children: list[str] = []
        self.stop_result: str | None = None
        self.restart_result: str | None = None
        self.state_result: bytes | None | fastabi.Err = None

    def logs(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "log"]

    def without_logs(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "log"]

    def link(self, linker: wc.Linker) -> None:
        with linker.root() as root:
            with root.add_instance(RUNTIME) as rt:
                rt.add_func("log", self._log)
            with root.add_instance(SUPERVISOR) as sup:
                sup.add_func("spawn", self._spawn)
                sup.add_func("list-children", self._list_children)
                sup.add_func("stop-child", self._stop_child)
                sup.add_func("restart-child", self._restart_child)
                sup.add_func("get-child-state", self._get_child_state)

    def _log(self, store, msg: str) -> None:
        self.calls.append(("log", msg))

    def _spawn(self, store, manifest: str, init: bytes | None):
        self.calls.append(("spawn", manifest, init))
        return wc.Variant(*self.spawn_result)

    def _list_children(self, store) -> list[str]:
        self.calls.append(("list-children",))
        return list(self.children)

    def _stop_child(self, store, child_id: str) -> str | None:
        self.calls.append(("stop-child", child_id))
        return self.stop_result

    def _restart_child(self, store, child_id: str) -> str | None:
        self.calls.append(("restart-child", child_id))
        return self.restart_result

    def _get_child_state(self, store, child_id: str):
        self.calls.append(("get-child-state", child_id))
        return self.state_result


class Boss:
    def __init__(self, memory_limit: int | None = None) -> None:
        self.engine = wasmtime.Engine()
        self.component = wc.Component(self.engine, WAT.read_text())
        self.host = FakeSupervisorHost()
        linker = wc.Linker(self.engine)
        self.host.link(linker)
        self.store = wasmtime.Store(self.engine)
        if memory_limit is not None:
            self.store.set_limits(memory_size=memory_limit)
        self.instance = linker.instantiate(self.store, self.component)
        self._funcs: dict[tuple[str, str], wc.Func] = {}

    def func(self, interface: str, name: str) -> wc.Func:
        if (interface, name) not in self._funcs:
            iface = self.component.get_export_index(interface)
            assert iface is not None, f"{interface} is not exported"
            idx = self.component.get_export_index(name, iface)
            assert idx is not None, f"{interface}#{name} is not exported"
            f = self.instance.get_func(self.store, idx)
            assert f is not None
            self._funcs[interface, name] = f
        return self._funcs[interface, name]

    def _call(self, interface: str, name: str, *args):
        f = self.func(interface, name)
        result = f(self.store, *args)
        f.post_return(self.store)
        return result

    def init(self, state):
        return self._call(ACTOR, "init", state)

    def send(self, state, msg: bytes):
        return self._call(MSC, "handle-send", state, (msg,))

    def request(self, state, msg: bytes, request_id: str = "req-1"):
        return self._call(MSC, "handle-request", state, (request_id, msg))

    def reply(self, state, msg: bytes) -> bytes | None:
        """Send a request, check the state came back unchanged, return the reply bytes."""
        result = self.request(state, msg)
        assert isinstance(result, tuple), result
        new_state, (reply,) = result
        assert new_state == state
        return reply

    def child_error(self, state, child_id: str, error_type: str = "internal", data: bytes | None = b"boom"):
        r = wc.Record()
        setattr(r, "error-type", error_type)
        r.data = data
        return self._call(HANDLERS, "handle-child-error", state, (child_id, r))

    def child_exit(self, state, child_id: str, data: bytes | None = None):
        return self._call(HANDLERS, "handle-child-exit", state, (child_id, data))

    def child_external_stop(self, state, child_id: str):
        return self._call(HANDLERS, "handle-child-external-stop", state, (child_id,))


@pytest.fixture(scope="module", autouse=True)
def _fastabi():
    # lets a host function return fastabi.Err for result<option<list<u8>>, string>
    fastabi.install()


# ---------------------------------------------------------------------------- shape

def _wit_block(path: Path, kind: str, name: str) -> str:
    m = re.search(rf"{kind} {name} \{{(.*?)\}}", path.read_text(), re.S)
    assert m, f"{kind} {name} not in {path}"
    return re.sub(r"//.*", "", m.group(1))


def _type():
    engine = wasmtime.Engine()
    comp = wc.Component(engine, WAT.read_text())
    return engine, comp.type


def test_boss_compiles_and_exports_the_three_interfaces():
    engine, ty = _type()
    exports = {name: sorted(ext.ty.exports(engine)) for name, ext in ty.exports(engine).items()}
    assert exports == {
        ACTOR: ["init"],
        MSC: ["handle-request", "handle-send"],
        HANDLERS: sorted(["wit-error-type", "wit-actor-error", "handle-child-error",
                          "handle-child-exit", "handle-child-external-stop"]),
    }


def test_boss_imports_only_log_and_the_supervisor_functions_it_uses():
    engine, ty = _type()
    imports = {name: ext.ty.exports(engine) for name, ext in ty.imports(engine).items()}
    assert sorted(imports) == [RUNTIME, SUPERVISOR]
    assert list(imports[RUNTIME]) == ["log"]
    sup = imports[SUPERVISOR]
    assert sorted(sup) == sorted(["spawn", "list-children", "stop-child", "restart-child", "get-child-state"])
    params = {name: [p for p, _ in ext.ty.params] for name, ext in sup.items()}
    assert params == {"spawn": ["manifest", "init-bytes"], "list-children": [], "stop-child": ["child-id"],
                      "restart-child": ["child-id"], "get-child-state": ["child-id"]}
    # the import is declared with supervisor.wit's own names for these functions
    wit = (ROOT / "wit" / "supervisor.wit").read_text()
    for name in sup:
        assert f"{name}: func(" in wit


def test_boss_error_types_match_wit_types():
    engine, ty = _type()
    h = ty.exports(engine)[HANDLERS].ty.exports(engine)
    types_wit = ROOT / "wit" / "types.wit"
    cases = [c.strip() for c in _wit_block(types_wit, "enum", "wit-error-type").split(",") if c.strip()]
    assert h["wit-error-type"].ty.names == cases
    fields = [f.split(":")[0].strip()
              for f in _wit_block(types_wit, "record", "wit-actor-error").split(",") if f.strip()]
    record = h["wit-actor-error"].ty
    assert [name for name, _ in record.fields] == fields == ["error-type", "data"]
    assert record.fields[0][1].names == cases
    # handle-child-error's params are (state, tuple<string, wit-actor-error>) with that very record
    err = h["handle-child-error"].ty
    assert [name for name, _ in err.params] == ["state", "params"]
    elements = err.params[1][1].elements
    assert len(elements) == 2 and isinstance(elements[1], type(record))
    assert [name for name, _ in elements[1].fields] == fields
    # the three handlers return what init returns: result<tuple<option<list<u8>>>, string>
    init = ty.exports(engine)[ACTOR].ty.exports(engine)["init"].ty
    for name in ("handle-child-error", "handle-child-exit", "handle-child-external-stop"):
        f = h[name].ty
        assert f.result == init.result
        assert f.params[0][1] == init.params[0][1]
    assert len(h["handle-child-exit"].ty.params[1][1].elements) == 2
    assert h["handle-child-exit"].ty.params[1][1].elements[1] == init.params[0][1]  # option<list<u8>>
    assert len(h["handle-child-external-stop"].ty.params[1][1].elements) == 1


# ---------------------------------------------------------------------------- init

def test_init_spawns_the_first_line_with_no_init_bytes_and_keeps_state():
    b = Boss()
    b.host.spawn_result = ("ok", "child-7")
    assert b.init(STATE) == (STATE,)
    assert b.host.calls == [("spawn", "child.toml", None), ("log", "boss spawned child-7")]


def test_init_spawns_only_the_first_line_of_a_state_with_a_log():
    b = Boss()
    state = b"kids/child.toml\nexit c1\nerror c2\n"
    assert b.init(state) == (state,)
    assert b.host.without_logs() == [("spawn", "kids/child.toml", None)]


def test_init_logs_a_failed_spawn_and_still_succeeds():
    b = Boss()
    b.host.spawn_result = ("err", "no such manifest")
    assert b.init(STATE) == (STATE,)
    assert b.host.logs() == ["boss spawn failed: no such manifest"]


def test_init_without_state_is_an_error():
    b = Boss()
    assert b.init(None) == "boss needs a manifest path as its state"
    assert b.host.calls == []


# ---------------------------------------------------------------------------- requests

def test_spawn_request_replies_the_child_id():
    b = Boss()
    b.host.spawn_result = ("ok", "child-42")
    assert b.reply(b"child.toml\nexit x\n", b"spawn") == b"child-42"
    assert b.host.calls == [("spawn", "child.toml", None)]


def test_spawn_request_error_replies_err_text():
    b = Boss()
    b.host.spawn_result = ("err", "manifest not found")
    assert b.reply(STATE, b"spawn") == b"err:manifest not found"


@pytest.mark.parametrize("children, reply", [
    ([], b""),
    (["c1"], b"c1"),
    (["c1", "child-22", "x"], b"c1\nchild-22\nx"),
])
def test_list_request_joins_the_children_ids(children, reply):
    b = Boss()
    b.host.children = children
    assert b.reply(STATE, b"list") == reply
    assert b.host.calls == [("list-children",)]


def test_stop_request_stops_the_child():
    b = Boss()
    assert b.reply(STATE, b"stop child-3") == b"ok"
    assert b.host.calls == [("stop-child", "child-3")]


def test_stop_request_error():
    b = Boss()
    b.host.stop_result = "no such child"
    assert b.reply(STATE, b"stop child-3") == b"err:no such child"


def test_restart_request_restarts_the_child():
    b = Boss()
    assert b.reply(STATE, b"restart child-9") == b"ok"
    assert b.host.calls == [("restart-child", "child-9")]


def test_restart_request_error():
    b = Boss()
    b.host.restart_result = "child is stopping"
    assert b.reply(STATE, b"restart child-9") == b"err:child is stopping"
    assert b.host.calls == [("restart-child", "child-9")]


def test_state_request_replies_the_child_state_bytes():
    b = Boss()
    b.host.state_result = b"\x00counter=41\xff"
    assert b.reply(STATE, b"state child-1") == b"\x00counter=41\xff"
    assert b.host.calls == [("get-child-state", "child-1")]


def test_state_request_replies_empty_child_state():
    b = Boss()
    b.host.state_result = b""
    assert b.reply(STATE, b"state child-1") == b""


def test_state_request_replies_none_for_no_state():
    b = Boss()
    b.host.state_result = None
    assert b.reply(STATE, b"state child-1") == b"none"


def test_state_request_error_with_fastabi_err():
    b = Boss()
    b.host.state_result = fastabi.Err("unknown child")
    assert b.reply(STATE, b"state child-1") == b"err:unknown child"
    assert b.host.calls == [("get-child-state", "child-1")]


def test_state_request_with_fastabi_ok_wrapper():
    b = Boss()
    b.host.state_result = fastabi.Ok(b"err:looks like an error")
    assert b.reply(STATE, b"state c") == b"err:looks like an error"
    b.host.state_result = fastabi.Ok(None)
    assert b.reply(STATE, b"state c") == b"none"


@pytest.mark.parametrize("state", [b"child.toml", b"child.toml\n", None])
def test_log_request_without_notifications_is_empty(state):
    assert Boss().reply(state, b"log") == b""


def test_log_request_replies_everything_after_the_first_line():
    state = b"child.toml\nexit a\nerror b\n"
    assert Boss().reply(state, b"log") == b"exit a\nerror b\n"


@pytest.mark.parametrize("msg", [b"hello", b"", b"spawnx", b"lis", b"stop", b"restart", b"state",
                                 b"logs", b"\xff\x00binary"])
def test_other_requests_echo_and_call_nothing(msg):
    b = Boss()
    assert b.reply(STATE, msg) == msg
    assert b.host.calls == []


def test_requests_pass_none_state_through():
    b = Boss()
    assert b.request(None, b"hello") == (None, (b"hello",))
    b.host.children = ["a"]
    assert b.request(None, b"list") == (None, (b"a",))


def test_handle_send_keeps_state_and_calls_nothing():
    b = Boss()
    assert b.send(STATE, b"spawn") == (STATE,)
    assert b.send(None, b"x") == (None,)
    assert b.host.calls == []


# ---------------------------------------------------------------------------- callbacks

def test_child_error_appends_a_line_and_logs_it():
    b = Boss()
    assert b.child_error(b"child.toml", "child-1") == (b"child.toml\nerror child-1\n",)
    assert b.host.logs() == ["error child-1"]
    assert b.host.without_logs() == []


@pytest.mark.parametrize("error_type", ["operation-timeout", "channel-closed", "shutting-down",
                                        "function-not-found", "type-mismatch", "internal",
                                        "serialization-error", "update-component-error", "paused"])
@pytest.mark.parametrize("data", [None, b"", b"details"])
def test_child_error_accepts_every_error_type(error_type, data):
    b = Boss()
    state = b"child.toml\nexit c0\n"
    assert b.child_error(state, "c1", error_type, data) == (state + b"error c1\n",)


def test_child_exit_appends_a_line():
    b = Boss()
    assert b.child_exit(b"child.toml\n", "c2", b"final") == (b"child.toml\nexit c2\n",)
    assert b.child_exit(b"child.toml", "c2", None) == (b"child.toml\nexit c2\n",)


def test_child_external_stop_appends_a_line():
    b = Boss()
    assert b.child_external_stop(b"child.toml", "c3") == (b"child.toml\nexternal-stop c3\n",)


def test_callbacks_on_no_state_start_with_an_empty_manifest_line():
    assert Boss().child_exit(None, "c") == (b"\nexit c\n",)


def test_callbacks_accumulate_and_log_returns_them():
    b = Boss()
    state = STATE
    (state,) = b.child_error(state, "c1")
    (state,) = b.child_exit(state, "c2", b"bye")
    (state,) = b.child_external_stop(state, "c3")
    (state,) = b.child_error(state, "c1", "paused", None)
    assert state == b"child.toml\nerror c1\nexit c2\nexternal-stop c3\nerror c1\n"
    assert b.reply(state, b"log") == b"error c1\nexit c2\nexternal-stop c3\nerror c1\n"
    # the manifest line is still what spawn uses
    b.host.calls.clear()
    b.host.spawn_result = ("ok", "c4")
    assert b.reply(state, b"spawn") == b"c4"
    assert b.host.calls == [("spawn", "child.toml", None)]


# ---------------------------------------------------------------------------- memory

def test_list_5000_times_in_bounded_memory():
    """About 5000 * (ids + join + state) bytes are allocated: far more than 4 pages unless
    post-return resets the allocator."""
    b = Boss(memory_limit=4 * PAGE)
    b.host.children = ["child-" + "a" * 20, "child-" + "b" * 20, "child-" + "c" * 20]
    expected = "\n".join(b.host.children).encode()
    state = b"child.toml\n" + b"exit x\n" * 10
    for _ in range(5000):
        assert b.request(state, b"list") == (state, (expected,))
    assert len(b.host.calls) == 5000


def test_callbacks_grow_the_state_across_many_calls():
    b = Boss(memory_limit=4 * PAGE)
    state = STATE
    for i in range(300):
        (state,) = b.child_exit(state, f"c{i}")
    assert state == b"child.toml\n" + b"".join(f"exit c{i}\n".encode() for i in range(300))
    assert b.reply(state, b"log") == state[len(b"child.toml\n"):]
