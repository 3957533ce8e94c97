"""A fault boundary per inbound message and command, as properties against one real tree.

The issue: "any exception while handling one is logged with its origin and answered with an
error; the node's loop never dies from input", and "control commands with wrong types, huge
numbers, NaN, infinity, NUL bytes, unknown names: an error reply, the node unaffected. Names that
do not resolve: an error to the sender, never a silent drop."

One tree serves the whole module: `echo` (a bystander), `supfuzz` (actors/wat/supfuzz.wat: it
hands a request's bytes to theater:simple/supervisor as raw arguments), `lost` (a relay to a name
that does not exist) and `scratch`, an empty supervisor that the control commands which start,
stop or delete children are pointed at. After every example: the node answers `ping`, echo still
replies, and every actor the tree came up with runs with the pid it had then (nothing a bad
command or call did cost one of them its process). At the end, node.log holds no `failed
handling` line: every input was refused by a check, none reached the loop's last-resort boundary.

- control envelopes: known command names, their dash / case / NUL / padded variants, random and
  huge names; bodies of any msgpack shape (nested maps and lists, ints up to 2**64 - 1 and down
  to -2**63, floats with NaN and infinities, bytes, None, bools), sometimes the command's own
  argument names with hostile values. Each is answered: `ok`, or `error` with a string code and
  message (never `internal_error`: the table's checks come first). `down` is left out, and a
  mutating command aimed at root or supfuzz's own supervisor is re-aimed at `scratch`.
- raw frames: non-msgpack bytes, msgpack that is no envelope, envelopes of the wrong shape,
  multi-part messages. They are dropped (logged); the node lives on.
- supervisor calls from an actor: spawn / resume with random manifest paths (NUL bytes, huge,
  missing, directories, /proc and /etc files, other files that are no manifest) and init bytes,
  stop / restart / get-child-state / get-child-events with random child references (including
  the ids and paths of actors that are not the caller's children). Each comes back to the actor
  as ok or err; references to actors that are not its children are always err.

Found on the way (the FIFO test near the end): an actor's spawn of a FIFO path blocked the node's
loop until someone wrote to the FIFO; config/source.py now opens config files without blocking and
reads only regular files.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from harness import WAT, Tree
from theater_otp.home import Home
from theater_otp.node import control
from theater_otp.protocol import Envelope, ProtocolError, decode

pytestmark = pytest.mark.integration

#: How long one command may take to be answered (a start_child compiles nothing new: cached).
ANSWER_S = 15

MUTATING = {"start_child", "terminate_child", "restart_child", "delete_child"}
#: supervisor references that name root or supfuzz's own supervisor (exactly or as a path suffix)
PROTECTED_SUPERVISORS = {"root", "supfuzz", "root/supfuzz"}
#: target references that name supfuzz (its manifest name, path, path suffix); its actor id is added
PROTECTED_TARGETS = {"supfuzz", "root/supfuzz"}


class Raw:
    """A DEALER on the node's control socket that sends anything, frames included."""

    def __init__(self, home: Path):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(Home.at(home).control_endpoint)
        self._corr = 1 << 40   # above what the draws use for `corr` often, below 2**64
        #: answers that came while another was awaited: each command gets one answer, so any
        #: here is a second answer (or one to a frame sent without waiting)
        self.strays: list[Envelope] = []

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()

    def next_corr(self) -> int:
        self._corr += 1
        return self._corr

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def envelope(self, kind: Any, body: Any, corr: int) -> bytes:
        return msgpack.packb([1, kind, "cli", "node", corr, body], use_bin_type=True)

    def await_answer(self, corr: int, timeout_s: float = ANSWER_S) -> Envelope | None:
        """The answer carrying `corr`; earlier answers (to frames that needed none) are skipped."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            try:
                env = decode(self.sock.recv(), peer="node")
            except ProtocolError as exc:
                raise AssertionError(f"the node answered with a frame that is no envelope: {exc}") from None
            if env.corr == corr:
                return env
            self.strays.append(env)
        return None

    def call(self, kind: Any, body: Any, corr: int | None = None, timeout_s: float = ANSWER_S) -> Envelope | None:
        corr = self.next_corr() if corr is None else corr
        self.send(self.envelope(kind, body, corr))
        return self.await_answer(corr, timeout_s)

    def ok(self, kind: str, body: Any = None, timeout_s: float = ANSWER_S) -> Any:
        env = self.call(kind, {} if body is None else body, timeout_s=timeout_s)
        assert env is not None, f"the node did not answer {kind!r} within {timeout_s} s"
        assert env.kind == "ok", f"{kind} failed: {env.body!r}"
        return env.body


class Fixture:
    def __init__(self, tree: Tree, raw: Raw):
        self.tree = tree
        self.raw = raw
        self.folder = tree.folder
        self.pids = tree.wait_running()
        self.echo_id = tree.node("root/echo")["actor_id"]
        self.supfuzz_id = tree.node("root/supfuzz")["actor_id"]

    def ask_supfuzz(self, payload: bytes) -> bytes:
        """supfuzz's reply to `payload`."""
        env = self.raw.call("request", {"target": "supfuzz", "payload": payload, "timeout_ms": 60_000}, timeout_s=60)
        assert env is not None, f"no answer to a request to supfuzz ({payload[:40]!r})"
        assert env.kind == "ok", f"the request to supfuzz failed: {env.body!r}"
        reply = env.body.get("ok") if isinstance(env.body, dict) else None
        assert isinstance(reply, bytes), env.body
        return reply

    def assert_unaffected(self) -> None:
        """The node answers, echo replies, and the actors the tree came up with kept their processes."""
        assert self.raw.ok("ping")["node_pid"] == self.tree.node_pid
        assert self.raw.ok("request", {"target": "echo", "payload": b"still here"}) == {"ok": b"still here"}
        now = self.tree.pids()
        assert {n: now.get(n) for n in self.pids} == self.pids, "an actor lost its process"

    def clear_scratch(self) -> None:
        """Stop and forget whatever the control commands started under scratch."""
        for row in self.raw.ok("which_children", {"supervisor": "root/scratch"})["children"]:
            self.raw.call("terminate_child", {"supervisor": "root/scratch", "id": row["id"]})
            self.raw.call("delete_child", {"supervisor": "root/scratch", "id": row["id"]})

    def clear_supfuzz(self) -> None:
        """Stop every child supfuzz spawned."""
        listed = self.ask_supfuzz(b"l")
        assert listed[:1] == b"o", listed
        for child in filter(None, listed[1:].split(b"\n")):
            assert self.ask_supfuzz(b"x" + child)[:1] == b"o"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    (folder / "echo.toml").write_text(f'name = "echo"\ncomponent = "{WAT / "echo.wat"}"\n')
    (folder / "kid.toml").write_text(f'name = "kid"\ncomponent = "{WAT / "echo.wat"}"\n')
    (folder / "broken.toml").write_text(f'name = "broken"\ncomponent = "{folder / "nowhere.wasm"}"\n')
    (folder / "crasher.toml").write_text(f'name = "crasher"\ncomponent = "{WAT / "crasher.wat"}"\n')
    (folder / "failing.toml").write_text(f'name = "failing"\ncomponent = "{WAT / "crasher.wat"}"\n'
                                         f'initial_state = "fail"\n')
    (folder / "lost.toml").write_text(f'name = "lost"\ncomponent = "{WAT / "relay.wat"}"\n'
                                      f'initial_state = "nobody-here"\n')
    (folder / "supfuzz.toml").write_text(
        f'name = "supfuzz"\ncomponent = "{WAT / "supfuzz.wat"}"\n\n[[handler]]\ntype = "supervisor"\n')
    (folder / "subdir.toml").mkdir()
    tree = Tree(folder, """
        [supervisor]
        id = "root"
        intensity = 1000
        period = 1
        [[supervisor.children]]
        id = "echo"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "supfuzz"
        manifest = "supfuzz.toml"
        [[supervisor.children]]
        id = "scratch"
        type = "supervisor"
        [[supervisor.children]]
        id = "lost"
        manifest = "lost.toml"
    """)
    with tree:
        raw = Raw(tree.home)
        try:
            yield Fixture(tree, raw)
        finally:
            raw.close()


# ---- control envelopes ----------------------------------------------------------------------

NAMES = sorted(n for n in control.COMMANDS if n != "down")
VARIANTS = sorted({v for n in NAMES for v in (n, n.replace("_", "-"), n.upper(), n + "\0", "\0" + n, " " + n,
                                              n + "_", n.replace("_", "__"), n.replace("_", ""))})
ARG_NAMES = sorted({a.name for c in control.COMMANDS.values() for a in c.args})

texts = st.text(max_size=24)
huge_texts = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(control.MAX_TEXT + 1, 100_000))
kinds = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(VARIANTS),
                  texts, st.builds(lambda a, b: a + "\0" + b, texts, texts), huge_texts)

ints = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1),
                 st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]))
floats = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 1.5, 2.2e9]))


def words(folder: Path) -> st.SearchStrategy[str]:
    """Strings that mean something to this tree (names, paths, files) next to ones that do not."""
    return st.sampled_from([
        "echo", "root/echo", "root", "scratch", "root/scratch", "kid", "nope", "root/nope", "", " ", ".", "..",
        "*", "a\0b", "\0", "x" * 4096, "x" * 4097, "../../etc/passwd", "/", "/dev/null", "/etc/passwd",
        str(folder / "kid.toml"), str(folder / "broken.toml"), str(folder / "subdir.toml"),
        str(folder / "missing.toml"), str(folder / "supervision.toml"), str(folder / "home" / "node.log"),
        "kid.toml", "brutal_kill", "infinity", "permanent", "transient", "temporary", "worker", "supervisor",
        "kid-1", "instance-1"])


def scalars(folder: Path) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), ints, floats, texts, words(folder), st.binary(max_size=32))


def values(folder: Path) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(ARG_NAMES + ["x", ""]), texts, st.integers(-5, 5), st.none(), st.binary(max_size=4))
    return st.recursive(scalars(folder), lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(keys, inner, max_size=4)),
                        max_leaves=10)


def hostile(folder: Path, arg: control.Arg) -> st.SearchStrategy[Any]:
    """A value for `arg`: sometimes the right type, often not."""
    right = {control.ArgType.TEXT: st.one_of(words(folder), texts, huge_texts),
             control.ArgType.BYTES: st.one_of(st.binary(max_size=64), st.binary(min_size=4096, max_size=70_000),
                                              st.just(b"\1" * (2 * 1024 * 1024 + 1))),  # over message_bytes
             control.ArgType.MILLIS: st.one_of(ints, st.integers(1, 5000)),
             control.ArgType.FLAG: st.booleans(),
             control.ArgType.ANY: st.one_of(ints, floats, words(folder))}[arg.type]
    return st.one_of(right, right, values(folder))


@st.composite
def envelopes(draw: st.DrawFn, folder: Path) -> tuple[str, Any, int]:
    kind = draw(kinds)
    assume(control.command_name(kind) != "down")
    command = control.COMMANDS.get(control.command_name(kind))
    mode = draw(st.sampled_from(["any", "args", "own", "own"] if command else ["any", "args"]))
    body: Any
    if mode == "any":
        body = draw(values(folder))
    elif mode == "args":
        body = draw(st.dictionaries(st.sampled_from(ARG_NAMES + ["x"]), values(folder), max_size=5))
    else:
        assert command is not None
        body = {}
        for arg in command.args:
            if draw(st.integers(0, 9)) < (9 if arg.required else 5):
                body[arg.name] = draw(hostile(folder, arg))
        if draw(st.integers(0, 9)) == 0:
            body[draw(st.sampled_from(ARG_NAMES + ["x"]))] = draw(values(folder))
    corr = draw(st.one_of(st.integers(1, 2**64 - 1), st.integers(1, 1000)))
    return kind, body, corr


def _protect(fx: Fixture, kind: str, body: Any) -> Any:
    """Aim a mutating command at scratch, a message at echo, when it would reach root or supfuzz."""
    name = control.command_name(kind)
    if not isinstance(body, dict):
        return body
    body = dict(body)
    supervisor, target = body.get("supervisor"), body.get("target")
    if name in MUTATING and isinstance(supervisor, str) and supervisor in PROTECTED_SUPERVISORS:
        body["supervisor"] = "scratch"
    if isinstance(target, str) and target in PROTECTED_TARGETS | {fx.supfuzz_id}:
        body["target"] = "echo"
    return body


def _send_envelope(fx: Fixture, kind: str, body: Any, corr: int, in_hypothesis: bool = False) -> None:
    body = _protect(fx, kind, body)
    fx.raw.strays.clear()
    fx.raw.send(fx.raw.envelope(kind, body, corr))
    env = fx.raw.await_answer(corr)
    assert not fx.raw.strays, f"answers nobody waited for: {fx.raw.strays!r:.500}"
    assert env is not None, f"no answer to {kind[:80]!r} {body!r:.300}"
    assert env.kind in ("ok", "error"), env
    if env.kind == "error":
        assert isinstance(env.body, dict), env.body
        code, message = env.body.get("code"), env.body.get("message")
        assert isinstance(code, str) and code and isinstance(message, str) and message, env.body
        assert code != "internal_error", f"{kind[:80]!r} {body!r:.300} raised in its handler: {message}"
        command = control.COMMANDS.get(control.command_name(kind))
        if command is None:
            assert code == "unknown_command"
        outcome = f"{command.name if command else 'unknown'}: {code}"
    else:
        assert control.COMMANDS.get(control.command_name(kind)) is not None, f"{kind!r} is no command"
        outcome = f"{control.command_name(kind)}: ok"
    if in_hypothesis:
        event(outcome)
    if control.command_name(kind) in MUTATING:
        fx.clear_scratch()
    fx.assert_unaffected()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_control_envelope_is_answered_and_costs_no_actor_its_process(fx, data):
    kind, body, corr = data.draw(envelopes(fx.folder))
    _send_envelope(fx, kind, body, corr, in_hypothesis=True)


@pytest.mark.parametrize("kind,body", [
    ("request", {"target": "echo", "payload": b"x", "timeout_ms": math.nan}),
    ("request", {"target": "echo", "payload": b"x", "timeout_ms": math.inf}),
    ("request", {"target": "echo", "payload": b"x", "timeout_ms": 2**64 - 1}),
    ("request", {"target": "echo", "payload": b"x", "timeout_ms": -(2**63)}),
    ("send", {"target": "a\0b", "payload": b"x"}),
    ("send", {"target": "nobody", "payload": b"x"}),        # a name that does not resolve: an error
    ("request", {"target": "root/nobody", "payload": b"x"}),
    ("state", {"target": "root/scratch"}),                   # a supervisor, no actor
    ("resolve", {"target": "x" * 4097}),
    ("start_child", {"supervisor": "scratch", "id": "k", "manifest": "/dev/null"}),
    ("start_child", {"supervisor": "scratch", "id": "k", "manifest": "/proc/self/status"}),
    ("start_child", {"supervisor": "scratch", "id": "k", "manifest": "a\0b"}),
    ("start_child", {"supervisor": "scratch", "id": "k", "shutdown": math.nan, "manifest": "kid.toml"}),
    ("start_child", {"supervisor": "scratch", "id": "k", "shutdown": [math.inf, {"x": None}]}),
    ("start_child", {"supervisor": "scratch", "id": "k", "type": "supervisor", "significant": True}),
    ("start_child", {"supervisor": "nobody", "id": "k"}),
    ("terminate_child", {"supervisor": "scratch", "id": "\0"}),
    ("restart_child", {"supervisor": "root/scratch", "id": "x" * 4096}),
    ("delete_child", {"supervisor": "scratch", "id": 2**64 - 1}),
    ("which_children", {"supervisor": "root/echo"}),
    ("count_children", {"supervisor": b"root"}),
    ("ping", {"x": 1}), ("ping", [1, 2]), ("ping", 2**64 - 1), ("tree", math.nan), ("sync", b"\0"),
    ("DOWN", {}), ("down\0", {}), ("no_such_command", {}), ("x" * 100_000, {}), ("", None),
    ("start-child", {"supervisor": "scratch", "id": "k", "manifest": "nowhere.toml"}),
])
def test_named_hostile_commands_are_answered_and_cost_no_actor_its_process(fx, kind, body):
    _send_envelope(fx, kind, body, fx.raw.next_corr())


def test_a_start_child_under_scratch_is_a_real_child_and_the_rest_is_untouched(fx):
    """The re-aiming above keeps mutating commands in a place where they do what they say."""
    env = fx.raw.call("start_child", {"supervisor": "scratch", "id": "k", "manifest": str(fx.folder / "kid.toml")})
    assert env is not None and env.kind == "ok" and env.body["result"]["pid"], env
    fx.clear_scratch()
    assert fx.raw.ok("which_children", {"supervisor": "scratch"})["children"] == []
    fx.assert_unaffected()


# ---- raw frames -----------------------------------------------------------------------------

@st.composite
def bad_frames(draw: st.DrawFn, folder: Path) -> list[bytes]:
    pack = lambda v: msgpack.packb(v, use_bin_type=True)  # noqa: E731
    shape = draw(st.sampled_from(["bytes", "value", "list", "parts", "empty"]))
    if shape == "bytes":
        frames = [draw(st.binary(min_size=1, max_size=200))]
    elif shape == "value":
        frames = [pack(draw(values(folder)))]
    elif shape == "list":
        items = draw(st.lists(scalars(folder), min_size=0, max_size=8))
        if len(items) == 6 and draw(st.booleans()):
            items[0] = 1  # a right version and a wrong rest is the likelier mistake
        frames = [pack(items)]
    elif shape == "parts":
        good = pack([1, "ping", "cli", "node", 7, {}])
        frames = draw(st.lists(st.one_of(st.just(good), st.binary(max_size=20)), min_size=2, max_size=4))
    else:
        frames = [b""]
    for frame in frames:   # a frame that happens to be a valid command is the other property's work
        try:
            env = decode(frame)
        except ProtocolError:
            continue
        assume(len(frames) > 1 or control.COMMANDS.get(control.command_name(env.kind)) is None)
    return frames


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_frame_that_is_no_envelope_is_dropped_and_the_node_lives_on(fx, data):
    frames = data.draw(bad_frames(fx.folder))
    fx.raw.send(*frames)
    fx.assert_unaffected()


def test_an_oversized_frame_is_dropped_and_the_node_lives_on(fx):
    fx.raw.send(fx.raw.envelope("ping", {"x": b"\0" * (16 * 1024 * 1024)}, fx.raw.next_corr()))
    fx.assert_unaffected()


def test_an_envelope_with_a_wrong_corr_or_version_is_dropped_and_the_node_lives_on(fx):
    pack = lambda v: msgpack.packb(v, use_bin_type=True)  # noqa: E731
    for frame in [pack([1, "ping", "cli", "node", -1, {}]), pack([1, "ping", "cli", "node", True, {}]),
                  pack([1, "ping", "cli", "node", 1.5, {}]), pack([1, "ping", "cli", "node", "7", {}]),
                  pack([2, "ping", "cli", "node", 7, {}]), pack([1, b"ping", "cli", "node", 7, {}]),
                  pack([1, None, "cli", "node", 7, {}]), pack([1, "ping", 0, "node", 7, {}]),
                  pack({"kind": "ping"}), b"\xc1", b"\x96\x01"]:
        fx.raw.send(frame)
    fx.assert_unaffected()
    log = (fx.tree.home / "node.log").read_text(errors="replace")
    assert "dropped frame: malformed envelope: corr must be a non-negative integer" in log
    assert "dropped frame: unsupported envelope version 2" in log


# ---- supervisor calls from an actor -----------------------------------------------------------

def spawn_payload(op: bytes, manifest: str, init: bytes | None) -> bytes:
    raw = manifest.encode("utf-8")
    return op + (b"\1" if init is not None else b"\0") + struct.pack("<I", len(raw)) + raw + (init or b"")


#: references that never name one of supfuzz's children (filled in with ids at run time)
FOREIGN = ["", "nobody", "echo", "root/echo", "root", "scratch", "root/supfuzz", "supfuzz", "<echo-id>", "<self-id>",
           "a\0b", "\0", "x" * 4097, "kid-999999", "../echo", "root/supfuzz/kid-1/..", "*"]


#: manifest paths for spawn, relative to supfuzz's manifest (the tree's folder); "<kid>" and
#: "<folder>" stand for the absolute paths of kid.toml and of the folder
manifests = st.one_of(
    st.sampled_from([
        "kid.toml", "supfuzz.toml", "broken.toml", "crasher.toml", "failing.toml", "subdir.toml", "missing.toml", "supervision.toml",
        "home/node.log", "home", "", ".", "..", "/", "a\0b", "\0", "/dev/null", "/etc/passwd",
        "/proc/self/status", "/proc/self/cmdline", "x" * 5000, "a/" * 3000, "../" * 50 + "etc/passwd",
        "<kid>", "<folder>", "kid.toml\0.png", "\u00e9\u00e8.toml", "\U0001f600"]),
    st.text(st.characters(codec="utf-8"), max_size=40))


inits = st.one_of(st.none(), st.binary(max_size=64), st.sampled_from([b"", b"fail", b"\0" * 100_000]))
child_refs = st.one_of(st.sampled_from(FOREIGN), st.sampled_from(["<kid>", "<kid-id>"]),
                       st.text(st.characters(codec="utf-8"), max_size=30))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from([b"s", b"r", b"l", b"x", b"R", b"g", b"v"]), manifest=manifests, init=inits,
       ref=child_refs, with_kid=st.booleans())
def test_every_supervisor_call_from_an_actor_comes_back_to_it_as_ok_or_err(fx, op, manifest, init, ref, with_kid):
    manifest = {"<kid>": str(fx.folder / "kid.toml"), "<folder>": str(fx.folder)}.get(manifest, manifest)
    try:
        kid_ref: tuple[str, str] | None = None
        if with_kid:
            spawned = fx.ask_supfuzz(spawn_payload(b"s", "kid.toml", None))
            assert spawned[:1] == b"o", spawned
            kid_id = spawned[1:].decode()
            kid_child = next(n["id"] for n in fx.tree.node("root/supfuzz")["children"] if n["actor_id"] == kid_id)
            kid_ref = (kid_child, kid_id)
        resolved = {"<echo-id>": fx.echo_id, "<self-id>": fx.supfuzz_id,
                    "<kid>": kid_ref[0] if kid_ref else "kid-0", "<kid-id>": kid_ref[1] if kid_ref else "kid-0"}
        ref = resolved.get(ref, ref)
        if op in (b"s", b"r"):
            payload = spawn_payload(op, manifest, init)
        elif op == b"l":
            payload = op
        else:
            payload = op + ref.encode("utf-8")
        reply = fx.ask_supfuzz(payload)
        assert reply[:1] in (b"o", b"e"), f"supfuzz did not understand {payload[:60]!r}: {reply!r}"
        event(f"{op.decode()}: {'ok' if reply[:1] == b'o' else 'err'}")
        names_own_child = kid_ref is not None and ref in kid_ref
        if op in (b"x", b"R", b"g", b"v") and not names_own_child:
            assert reply[:1] == b"e", f"{payload[:60]!r} named no child of supfuzz, yet: {reply[:200]!r}"
        if op in (b"s", b"r") and reply[:1] == b"o":
            assert reply[1:], "a spawn that succeeded names its child"
        fx.assert_unaffected()
    finally:
        fx.clear_supfuzz()


def test_spawn_and_the_calls_on_its_child_work_from_supfuzz(fx):
    """The actor the property drives does what its header says (so an `e` there is the node's)."""
    kid = fx.ask_supfuzz(spawn_payload(b"r", "kid.toml", b"hello"))
    assert kid[:1] == b"o"
    kid_id = kid[1:]
    assert fx.ask_supfuzz(b"l") == b"o" + kid_id
    assert fx.ask_supfuzz(b"g" + kid_id) == b"oshello"
    assert fx.ask_supfuzz(b"v" + kid_id)[:1] == b"o"
    assert fx.ask_supfuzz(b"R" + kid_id) == b"o"
    assert fx.ask_supfuzz(b"x" + kid_id) == b"o"
    assert fx.ask_supfuzz(b"l") == b"o"
    assert fx.ask_supfuzz(b"x" + fx.echo_id.encode())[:1] == b"e"
    fx.assert_unaffected()


# ---- found by the properties -------------------------------------------------------------------

def test_a_spawn_of_a_fifo_is_an_error_to_the_actor_and_never_stops_the_node(fx):
    fifo = fx.folder / "fifo.toml"
    if not fifo.exists():
        os.mkfifo(fifo)
    answer: dict[str, Any] = {}

    def spawn() -> None:
        raw = Raw(fx.tree.home)
        try:
            answer["env"] = raw.call("request", {"target": "supfuzz", "payload": spawn_payload(b"s", "fifo.toml", None)},
                                     timeout_s=60)
        finally:
            raw.close()

    caller = threading.Thread(target=spawn)
    caller.start()
    try:
        time.sleep(0.5)
        env = fx.raw.call("ping", {}, timeout_s=3)
        assert env is not None and env.kind == "ok", "the node stopped answering while an actor spawned a FIFO"
        caller.join(10)
        reply = answer["env"].body["ok"]
        assert reply[:1] == b"e" and b"fifo.toml" in reply, reply
    finally:
        # let a node blocked in open() go on: give the FIFO a writer (and its reader an end)
        deadline = time.monotonic() + 10
        while caller.is_alive() and time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:   # no reader (yet, or any longer)
                time.sleep(0.05)
                continue
            os.write(fd, b"not = [toml")
            os.close(fd)
            caller.join(5)
        caller.join(10)
    fx.assert_unaffected()


def test_a_request_from_an_actor_to_a_name_that_does_not_resolve_comes_back_to_it_as_an_error(fx):
    """`lost` (actors/wat/relay.wat) forwards every request to "nobody-here": what it gets back
    (and replies with) is the node's error naming the target, not a silence until a timeout."""
    started = time.monotonic()
    env = fx.raw.call("request", {"target": "lost", "payload": b"anyone?"})
    assert env is not None and env.kind == "ok", env
    assert b"nobody-here" in env.body["ok"], env.body
    assert time.monotonic() - started < 5
    fx.assert_unaffected()


def test_no_input_reached_a_handler_unchecked(fx):
    """Everything above was refused by a check (an error naming what was wrong) or handled: the
    fault boundary in the node's loop (the `failed handling` log line and `internal_error`) is
    the last resort, and none of these inputs needed it."""
    log = (fx.tree.home / "node.log").read_text(errors="replace")
    assert "failed handling" not in log and "Traceback" not in log, log[-3000:]
