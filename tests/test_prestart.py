"""Workers started ahead of their turn (node/workers.py `prestart`): the next children of a start
sequence are forked and load their component while the one before runs its init, but OTP's start
order holds (no init before the previous child has started), and a spare that is not taken leaves
nothing behind: no process, no event, no incarnation number used up."""

from __future__ import annotations

import os
import signal

import msgpack
import psutil
import pytest

from harness import WAT, Tree, write_manifest
from theater_otp.chain.store import connect, read_events

pytestmark = pytest.mark.integration

SLOW_FIRST = """
    [supervisor]
    id = "root"
    [[supervisor.children]]
    id = "slow"
    manifest = "slow.toml"
    [[supervisor.children]]
    id = "a"
    manifest = "counter.toml"
    [[supervisor.children]]
    id = "b"
    manifest = "counter.toml"
"""


def _chain(tree: Tree, actor_id: str) -> list:
    conn = connect(tree.home / "chain.db", readonly=True)
    try:
        return read_events(conn, actor_id)
    finally:
        conn.close()


def test_the_next_children_load_while_the_first_inits_and_init_in_order(tmp_path):
    (tmp_path / "slow.toml").write_text(f'name = "slow"\ncomponent = "{WAT / "slowinit.wat"}"\n'
                                        '[[handler]]\ntype = "timing"\n')
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, SLOW_FIRST) as tree:
        tree.call("sync")
        ids = {p: tree.node(p)["actor_id"] for p in ("root/a", "root/b")}
        a, b = (_chain(tree, ids[p]) for p in ("root/a", "root/b"))
        slow_init_done = next(e.timestamp for e in _chain(tree, "supervisor:root")
                              if e.event_type == "supervisor.child_started"
                              and msgpack.unpackb(e.data)["child"] == "slow")
        # OTP's start order: a's and b's init ran only after slow's init returned
        for events in (a, b):
            assert events[0].event_type == "actor.start" and events[0].timestamp > slow_init_done
        assert a[0].timestamp < b[0].timestamp
        # ...but their processes existed while slow was still in its 800 ms init (process start
        # times compared with each other: psutil's are on the boot clock, not the chain's)
        slow_created = psutil.Process(tree.node("root/slow")["pid"]).create_time()
        for path in ("root/a", "root/b"):
            lead = psutil.Process(tree.node(path)["pid"]).create_time() - slow_created
            assert lead < 0.4, f"{path} was started {lead:.3f} s after slow, not while slow ran its 800 ms init"


def test_a_spare_whose_turn_never_comes_runs_no_init_records_nothing_and_is_gone(tmp_path):
    """`bad` fails its init, so its supervisor's start fails and `up` with it; `next` was forked
    and loaded while `bad` ran init. It must never run init or record anything."""
    (tmp_path / "bad.toml").write_text(f'name = "bad"\ncomponent = "{WAT / "crasher.wat"}"\n'
                                       'initial_state = "fail"\n')
    (tmp_path / "slowbad.toml").write_text(f'name = "slow"\ncomponent = "{WAT / "slowinit.wat"}"\n'
                                           '[[handler]]\ntype = "timing"\n')
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    tree = Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "slow"
        manifest = "slowbad.toml"
        [[supervisor.children]]
        id = "bad"
        manifest = "bad.toml"
        [[supervisor.children]]
        id = "next"
        manifest = "counter.toml"
        [[supervisor.children]]
        id = "last"
        manifest = "counter.toml"
    """)
    with pytest.raises(AssertionError, match="init refused"):
        tree.__enter__()
    conn = connect(tree.home / "chain.db", readonly=True)
    try:
        paths = {path: actor_id for actor_id, path in conn.execute("select actor_id, path from actors")}
        for path in ("root/next", "root/last"):
            if path in paths:
                assert read_events(conn, paths[path]) == [], f"{path} recorded events without its turn"
    finally:
        conn.close()


ONE_ACTOR = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 60
    [[supervisor.children]]
    id = "a"
    manifest = "counter.toml"
"""


def _restart_once(tree: Tree) -> int:
    """Kill root/a once (its events stored first) and wait for its replacement and the spare the
    node then keeps for its next restart; the replacement's pid."""
    first = tree.node("root/a")["pid"]
    tree.call("sync")
    tree.kill("root/a")
    second = tree.wait_for(lambda: (p := tree.node("root/a")["pid"]) not in (None, first) and p,
                           what="the first restart")
    tree.wait_for(lambda: tree.tree()["spares"] == 1, what="a spare for the next restart")
    return int(second)


def _forked(tree: Tree) -> set[int]:
    """The pids of every process the node's forkserver has running now."""
    node = psutil.Process(tree.node_pid)
    server = next(p for p in node.children() if "forkserver" in " ".join(p.cmdline()))
    return {p.pid for p in server.children()}


def test_an_actor_that_restarted_restarts_next_time_from_a_process_already_loaded(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, ONE_ACTOR) as tree:
        assert tree.wait_running() and tree.tree()["spares"] == 0   # a first start keeps nothing aside
        second = _restart_once(tree)
        tree.call("sync")
        before = _forked(tree)
        tree.kill("root/a")
        third = tree.wait_for(lambda: (p := tree.node("root/a")["pid"]) not in (None, second) and p,
                              what="the second restart")
        assert third in before, "the second restart forked a new process instead of taking the spare"
        node = tree.node("root/a")
        assert node["incarnation"] == 3 and node["status"] == "running"
        assert tree.call("request", {"target": "a", "payload": b"inc"})["ok"] == b"1"
        starts = [e for e in _chain(tree, node["actor_id"]) if e.event_type == "actor.start"]
        assert [e.incarnation for e in starts] == [1, 2, 3]


def test_a_spare_made_before_the_chain_writer_restarted_can_write_after_it(tmp_path):
    """A restarted writer is told every producer the node registered, spares waiting for their turn
    included: before, only running workers were, so a spare's events (and the replies held for
    them) waited for ever once it was taken (seen in the chaos test)."""
    import re

    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, ONE_ACTOR) as tree:
        tree.wait_running()
        second = _restart_once(tree)
        ready = re.compile(r"chain-writer\[(\d+)\] INFO chain-writer ready")
        writers = ready.findall((tree.home / "node.log").read_text())
        os.kill(int(writers[-1]), signal.SIGKILL)
        tree.wait_for(lambda: len(ready.findall((tree.home / "node.log").read_text())) > len(writers),
                      what="a new chain-writer")
        tree.kill("root/a")
        tree.wait_for(lambda: tree.node("root/a")["pid"] not in (None, second)
                      and tree.node("root/a")["status"] == "running", what="the second restart")
        assert tree.call("request", {"target": "a", "payload": b"inc"}, timeout_s=20)["ok"] == b"1"
