"""Durable effects (hardening issue, defect 2): a reply or a send leaves an actor only after the
events that produced it are stored, so a SIGKILL can never leave the world holding an answer or
a message the actor's chain does not explain.

The reproduction: requests pipelined to one actor run in one turn of its worker, whose events go
to the chain-writer when the turn ends; the last call never ends, and the worker is killed while it
runs. Before the fix the earlier calls' replies and sends had left at once, and their events died
with the worker (THEATER_OTP_DURABLE_EFFECTS=0 still behaves so, for the bench: these tests fail
under it).
"""

import struct

import pytest
import zmq

from harness import WAT, Tree
from theater_otp.home import Home
from theater_otp.node.outbox import HeldSend, Outbox
from theater_otp.node.registry import WorkerHandle
from theater_otp.protocol import Envelope, decode, encode
from theater_otp.worker.effects import HeldEffects

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 30
    [[supervisor.children]]
    id = "hostile"
    manifest = "hostile.toml"
    [[supervisor.children]]
    id = "sink"
    manifest = "sink.toml"
"""
FLOOD_LINE = "hostile: flooding the log with this line"


class _Control:
    """A raw DEALER on the node's control socket: requests pipelined without waiting."""

    def __init__(self, home: Home):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(home.control_endpoint)

    def send(self, corr: int, kind: str, body: dict) -> None:
        self.sock.send(encode(Envelope(kind, "test", "node", corr, body)))

    def answers(self, n: int, timeout_ms: int = 20_000) -> dict[int, object]:
        out = {}
        while len(out) < n:
            assert self.sock.poll(timeout_ms), f"only {len(out)} of {n} answers came"
            env = decode(self.sock.recv())
            out[env.corr] = env.body
        return out

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _boot(tmp_path) -> Tree:
    # hostile.wat: request 'S' u32 N sends N messages to the actor named in its state; request 'L'
    # loops forever calling the log (a call that never ends); anything else is echoed
    for name in ("hostile", "sink"):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\ncomponent = "{WAT / "hostile.wat"}"\n'
                                               'initial_state = "sink"\n')
    return Tree(tmp_path, TREE)


def _pipeline(tree: Tree, *payloads: bytes) -> _Control:
    """Send requests to `hostile` without waiting, then 'L' (the call that never ends), and return
    once that call runs: the ones before it have returned, in the same turn."""
    control = _Control(Home.at(tree.home))
    log = tree.home / "node.log"
    before = log.read_text().count(FLOOD_LINE)
    for corr, payload in enumerate(payloads + (b"L",), start=1):
        control.send(corr, "request", {"target": "hostile", "payload": payload, "timeout_ms": 60_000})
    tree.wait_for(lambda: log.read_text().count(FLOOD_LINE) > before, what="the endless call running")
    return control


def _events(tree: Tree, path: str, event_type: str) -> list:
    return [e for e in tree.events(tree.node(path)["actor_id"], event_type) if e.incarnation == 1]


@pytest.mark.integration
def test_a_reply_leaves_only_after_its_event_is_stored(tmp_path):
    with _boot(tmp_path) as tree:
        tree.wait_running()
        control = _pipeline(tree, b"first", b"second")
        # before the fix both answers were out by now, their events still in the worker's buffer
        tree.kill("root/hostile")
        answers = control.answers(3)
        control.close()
        answered = {bytes(b["ok"]) for b in answers.values() if isinstance(b, dict) and "ok" in b}
        stored = {bytes(e.payload()["reply"]) for e in _events(tree, "root/hostile", "message.request")}
        assert answered <= stored, f"answered {answered} but the chain holds only {stored}"
        tree.wait_running()
        assert tree.call("request", {"target": "hostile", "payload": b"again"})["ok"] == b"again"


@pytest.mark.integration
def test_a_send_reaches_its_target_only_after_the_senders_event_is_stored(tmp_path):
    with _boot(tmp_path) as tree:
        tree.wait_running()
        control = _pipeline(tree, b"S" + struct.pack("<I", 5))
        tree.kill("root/hostile")
        control.answers(2)
        control.close()
        tree.wait_running()
        sends_stored = [e for e in _events(tree, "root/hostile", "message.request")
                        if bytes(e.payload()["params"][0]).startswith(b"S")]
        hostile_id = tree.node("root/hostile")["actor_id"]

        def delivered() -> int:
            return len([e for e in tree.events(tree.node("root/sink")["actor_id"], "message.send")
                        if e.payload().get("from") == hostile_id])

        before = delivered()
        # the sink got no message whose sending call the sender's chain lacks (before the fix: 5 and 0)
        assert before <= 5 * len(sends_stored), (before, len(sends_stored))
        # once the call's events are stored, its sends arrive
        reply = tree.call("request", {"target": "hostile", "payload": b"S" + struct.pack("<I", 3)})["ok"]
        assert struct.unpack("<II", bytes(reply)) == (3, 0)
        tree.wait_for(lambda: delivered() == before + 3, what="the three messages at the sink")


# ---- the two queues, without processes ----------------------------------------------------


class _Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, flags: int = 0) -> None:
        self.sent.append(data)


@pytest.mark.unit
def test_held_effects_leave_in_order_once_their_batch_is_durable():
    a, b = _Sock(), _Sock()
    held = HeldEffects()
    held.hold(1, a, b"reply-1")
    held.hold(2, b, b"response-2")
    held.hold(1, a, b"state-after")  # behind a frame that waits: waits too
    durable = 0
    assert held.release(lambda seq: seq <= durable) == 0 and a.sent == [] and len(held) == 3
    durable = 1
    assert held.release(lambda seq: seq <= durable) == 1 and a.sent == [b"reply-1"] and b.sent == []
    durable = 2
    assert held.release(lambda seq: seq <= durable) == 2
    assert a.sent == [b"reply-1", b"state-after"] and b.sent == [b"response-2"] and len(held) == 0


def _handle(path: str) -> WorkerHandle:
    return WorkerHandle(path=path, supervisor="root", child_id=path, actor_id=path + "-id", incarnation=1,
                        spec=None, process=None, identity=path.encode())  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_outbox_reserves_mailbox_room_until_a_send_is_released_or_dropped():
    target = _handle("root/t")
    box = Outbox()
    for corr in (1, 2, 3):
        box.hold(b"s1", HeldSend(corr, target, Envelope("send", "s1", "t", 0, b"ab"), 2))
    box.hold(b"s2", HeldSend(7, target, Envelope("send", "s2", "t", 0, b"c"), 1))
    assert (target.reserved, target.reserved_bytes, len(box)) == (4, 7, 4)
    assert [h.corr for h in box.release(b"s1", 2)] == [1, 2]
    assert (target.reserved, target.reserved_bytes) == (2, 3)
    assert [h.corr for h in box.drop(b"s1")] == [3]
    assert box.release(b"s1", 99) == [] and (target.reserved, target.reserved_bytes) == (1, 1)
    assert [h.corr for h in box.release(b"s2", 7)] == [7] and target.reserved == target.reserved_bytes == 0
