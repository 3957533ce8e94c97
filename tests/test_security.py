"""A hostile process of the same user against a running tree's local sockets (hardening issue,
defect 3; docs/security.md). Each attack is a real process-level socket connected to the real
node's endpoints; each test shows the attack no longer works and that it was counted or logged.
"""

import re

import pytest
import zmq

from harness import Tree, cli, write_manifest
from theater_otp.errors import RemoteError
from theater_otp.home import Home
from theater_otp.protocol import Envelope, decode, encode

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 30
    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
"""


class Rogue:
    """Sockets of a process the node did not start."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.socks: list[zmq.Socket] = []

    def dealer(self, endpoint: str, identity: bytes | None = None) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            s.setsockopt(zmq.IDENTITY, identity)
        s.connect(endpoint)
        self.socks.append(s)
        return s

    def close(self) -> None:
        for s in self.socks:
            s.close(0)
        self.ctx.term()


def _tree(tmp_path) -> Tree:
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    return Tree(tmp_path, TREE)


def _inc(tree: Tree) -> int:
    return int(tree.call("request", {"target": "counter", "payload": b"inc"})["ok"])


def _log(tree: Tree) -> str:
    return (tree.home / "node.log").read_text()


def test_a_rogue_cannot_write_forge_incarnations_or_move_batch_counters_in_the_chain(tmp_path):
    with _tree(tmp_path) as tree:
        tree.wait_running()
        actor = tree.node("root/counter")["actor_id"]
        _inc(tree)
        rogue = Rogue()
        try:
            chain = rogue.dealer(Home.at(tree.home).chain_endpoint)
            forged = [
                # events for the counter's chain under its own producer id, batch 1
                Envelope("events", f"{actor}/1", "chain", 1, [[actor, 1, "message.request", 1, b"forged"]]),
                # an incarnation far ahead: before, every later real event was refused as late
                Envelope("events", f"{actor}/1", "chain", 2, [[actor, 4294967295, "actor.start", 1, b"x"]]),
                # the counter's batch counter moved ahead: before, its real batches were dropped as a gap
                Envelope("events", f"{actor}/1", "chain", 1_000_000, [[actor, 1, "t", 1, b"x"]]),
                # and what only the node may send
                Envelope("register", "node", "chain", 0, {"actor_id": actor, "path": "root/evil", "name": "evil"}),
                Envelope("stop", "node", "chain", 9),
            ]
            for env in forged:
                chain.send(encode(env))
            # as the node's old fixed identity, too
            node_like = rogue.dealer(Home.at(tree.home).chain_endpoint, b"node")
            node_like.send(encode(Envelope("events", "node", "chain", 0, [[actor, 1, "message.request", 1, b"n"]])))
            tree.wait_for(lambda: len(re.findall(r"chain-writer\[\d+\] ERROR dropped ", _log(tree))) >= 1,
                          what="the writer's dropped line")
            assert not chain.poll(200), "the writer answered a process the node did not register"
        finally:
            rogue.close()
        # the actor keeps working, and its chain is its own
        assert _inc(tree) == 2
        events = tree.events(actor)
        assert [e.incarnation for e in events] == [1] * len(events)
        assert not [e for e in events if e.data in (b"forged", b"n", b"x")]
        assert [e.event_type for e in events if e.event_type == "message.request"] == ["message.request"] * 2
        assert tree.node("root/counter")["status"] == "running"
        assert "chain-writer ready" in _log(tree) and "stopped" not in tree.tree().get("status", "")
        out = cli("verify", home=tree.home)
        assert out.returncode == 0, out.stdout + out.stderr


def test_a_rogue_cannot_take_a_restarting_workers_identity(tmp_path):
    with _tree(tmp_path) as tree:
        first = tree.wait_running()["root/counter"]
        actor = tree.node("root/counter")["actor_id"]
        rogue = Rogue()
        try:
            router = Home.at(tree.home).router_endpoint
            # the identities a restart would have used before: actor id / incarnation
            squatters = [rogue.dealer(router, f"{actor}/{n}".encode()) for n in (2, 3)]
            for s in squatters:  # and it announces itself as that incarnation
                s.send(encode(Envelope("ready", actor, "node", 0, {"pid": 1})))
            tree.wait_for(lambda: tree.tree()["dropped_frames"] >= 2, what="the squatters' frames counted")
            tree.kill("root/counter")
            tree.wait_for(lambda: tree.node("root/counter")["pid"] not in (None, first)
                          and tree.node("root/counter")["status"] == "running", what="the real restart")
            assert _inc(tree) == 1  # answered by the real worker (a fresh count after the restart)
            assert not any(s.poll(100) for s in squatters), "a request reached the squatter"
        finally:
            rogue.close()
        assert "not a live worker of this node" in _log(tree)


def test_an_ack_without_the_writers_proof_makes_nothing_durable(tmp_path):
    """A process that takes over chain.sock's path can accept a new worker's events, but it cannot
    make that worker believe they are stored: its replies stay held."""
    with _tree(tmp_path) as tree:
        first = tree.wait_running()["root/counter"]
        home = Home.at(tree.home)
        rogue = Rogue()
        try:
            impostor = rogue.ctx.socket(zmq.ROUTER)
            impostor.setsockopt(zmq.LINGER, 0)
            rogue.socks.append(impostor)
            impostor.bind(home.chain_endpoint)  # replaces the path: new connections come here
            tree.kill("root/counter")
            tree.wait_for(lambda: impostor.poll(0) or None, timeout=20, what="the new worker's first batch")

            def fake_acks() -> bool:
                while impostor.poll(0):
                    ident, frame = impostor.recv_multipart()
                    env = decode(frame)
                    if env.kind == "events":
                        impostor.send_multipart([ident, encode(Envelope("ack", "chain", env.sender, env.corr,
                                                                        {"received": len(env.body)}))])
                return "ignored an ack that does not carry the chain-writer's proof" in _log(tree)

            tree.wait_for(fake_acks, timeout=20, what="the worker refusing the impostor's ack")
            assert tree.node("root/counter")["pid"] != first
            with pytest.raises(RemoteError, match="no reply from root/counter"):  # held: its event is not stored
                tree.call("request", {"target": "counter", "payload": b"inc", "timeout_ms": 1500}, timeout_s=10)
        finally:
            rogue.close()
