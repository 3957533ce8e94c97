"""Durability (issue 4): acknowledged events survive a SIGKILLed chain-writer, exactly once, no fork."""

import os
import re
import signal
import threading

import pytest

from harness import StandaloneWriter, Tree, cli, write_manifest
from theater_otp.chain.store import connect, iter_chain, read_events
from theater_otp.chain.verify import verify_store
from theater_otp.client import ControlClient
from theater_otp.errors import NodeNotRunning
from theater_otp.home import Home

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


def writer_pid(tree: Tree) -> int:
    """The newest chain-writer, from its own 'ready' line in the node's log."""
    def ready() -> list[str]:
        return re.findall(r"chain-writer\[(\d+)\] INFO chain-writer ready", (tree.home / "node.log").read_text())
    # the writer logs it from its own process: under load that line can land after `up` returned
    return int(tree.wait_for(ready, what="the chain-writer's ready line")[-1])


def test_sigkill_of_the_writer_during_a_burst_loses_no_event_and_stores_none_twice(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        first_writer = writer_pid(tree)
        sends = 3000
        done = threading.Event()

        def burst():
            with ControlClient(Home.at(tree.home)) as c:
                for i in range(sends):
                    c.call("send", {"target": "counter", "payload": b"inc"})
                    if i == sends // 3:
                        os.kill(first_writer, signal.SIGKILL)
            done.set()

        t = threading.Thread(target=burst)
        t.start()
        t.join(120)
        assert done.is_set()
        assert tree.wait_for(lambda: cli("request", "counter", "get", home=tree.home).stdout == f"{sends}\n",
                             timeout=30, what="every send handled")
        assert writer_pid(tree) != first_writer          # the node started a new writer
        actor_id = tree.node("root/counter")["actor_id"]
        tree.close()                                     # down: every producer waits for its acks
    conn = connect(tmp_path / "home" / "chain.db", readonly=True)
    try:
        n = len(read_events(conn, actor_id, "message.send"))
        seqs = [e.seq for e in iter_chain(conn, actor_id)]
        assert n == sends, f"{n} message.send events recorded for {sends} sends"
        assert seqs == list(range(len(seqs)))
        assert verify_store(conn) == []
    finally:
        conn.close()
    log = (tmp_path / "home" / "node.log").read_text()
    assert "chain-writer exited (-9): starting a new one" in log


def test_writer_applies_each_batch_once_and_in_order_per_producer(tmp_path):
    """A resent batch is acked again but stored once; a batch after a gap waits until the gap is resent."""
    from theater_otp.chain.store import iter_chain
    from theater_otp.protocol import Envelope, decode, encode

    with StandaloneWriter(tmp_path) as writer:
        writer.register(b"x-1-secret", "x", 1)
        s = writer.connect(b"x-1-secret")

        def batch(n: int, payload: bytes):
            s.send(encode(Envelope("events", "producer-x", "chain", n, [["x", 1, "t", n, payload]])))

        def ack(timeout_ms: int = 10_000):
            return decode(s.recv()) if s.poll(timeout_ms) else None

        batch(1, b"one")
        assert ack().corr == 1
        batch(1, b"one again")                       # a resend of batch 1
        again = ack()
        assert (again.corr, again.body["received"]) == (1, 0)
        batch(3, b"three")                           # batch 2 was "lost"
        assert ack(1000) is None                     # not acked: dropped until resent
        batch(2, b"two")
        batch(3, b"three")
        assert [ack().corr, ack().corr] == [2, 3]
    conn = connect(tmp_path / "home" / "chain.db", readonly=True)
    try:
        assert [e.data for e in iter_chain(conn, "x")] == [b"one", b"two", b"three"]
    finally:
        conn.close()


def test_a_torn_tail_is_detected_and_cut_at_writer_startup(tmp_path):
    """A torn last record (the chunk ends mid-record) is cut with a logged line; the chain verifies and grows again."""
    import sqlite3
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        for _ in range(5):
            cli("request", "counter", "inc", home=tree.home)
        actor_id = tree.node("root/counter")["actor_id"]
        tree.close()
    db = tmp_path / "home" / "chain.db"
    conn = sqlite3.connect(db)
    rowid, last_seq, records = conn.execute(
        "SELECT rowid, last_seq, records FROM chunks WHERE actor_id=? ORDER BY first_seq DESC LIMIT 1",
        (actor_id,)).fetchone()
    conn.execute("UPDATE chunks SET records=? WHERE rowid=?", (bytes(records)[:-40], rowid))
    conn.commit()
    conn.close()
    assert cli("verify", home=tmp_path / "home").returncode == 1
    damaged = cli("events", actor_id, home=tmp_path / "home")
    assert damaged.returncode == 1 and "damaged record (truncated record" in damaged.stderr, damaged.stderr
    assert "Traceback" not in damaged.stderr
    with Tree(tmp_path, TREE) as tree:                 # a new node, a new chain-writer: it checks the tails
        log = (tmp_path / "home" / "node.log").read_text()
        assert f"torn tail in chain {actor_id}: cut 1 event(s) from seq {last_seq} (truncated record" in log
        tree.close()
    out = cli("verify", home=tmp_path / "home")
    assert out.returncode == 0, out.stdout
    assert f"note: 1 event(s) of chain {actor_id} from seq {last_seq} were cut" in out.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT events FROM cut_records WHERE actor_id=? AND from_seq=?",
                        (actor_id, last_seq)).fetchone() == (1,)
    conn.close()


def test_a_worker_pauses_when_its_event_buffer_is_full_and_loses_nothing(tmp_path, monkeypatch):
    """Writer frozen (SIGSTOP): the actor stops taking messages at the bound, then catches up."""
    import re as _re
    monkeypatch.setenv("THEATER_OTP_MAX_UNACKED_EVENTS", "100")
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        writer = writer_pid(tree)
        os.kill(writer, signal.SIGSTOP)
        try:
            with ControlClient(Home.at(tree.home)) as c:
                for _ in range(400):
                    c.call("send", {"target": "counter", "payload": b"inc"})
            def log() -> str:
                return (tree.home / "node.log").read_text()

            tree.wait_for(lambda: _re.search(r"root/counter: paused: \d+ events wait for the chain-writer", log()),
                          what="the counter paused")
        finally:
            os.kill(writer, signal.SIGCONT)
        assert tree.wait_for(lambda: cli("request", "counter", "get", home=tree.home).stdout == "400\n",
                             timeout=30, what="the counter caught up")
        actor_id = tree.node("root/counter")["actor_id"]
        tree.close()
    conn = connect(tmp_path / "home" / "chain.db", readonly=True)
    try:
        assert len(read_events(conn, actor_id, "message.send")) == 400
        assert verify_store(conn) == []
    finally:
        conn.close()


def test_sync_answers_only_once_the_nodes_events_so_far_are_durable(tmp_path):
    """`sync` (which events/inspect/verify call first) waits for the writer's acknowledgement:
    with the writer frozen it cannot answer; once thawed, what `tree` showed is in the store."""
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        first = tree.wait_running()["root/counter"]
        writer = writer_pid(tree)
        os.kill(writer, signal.SIGSTOP)
        try:
            tree.kill("root/counter")
            tree.wait_for(lambda: tree.node("root/counter")["pid"] not in (None, first), what="the restart")
            with ControlClient(Home.at(tree.home)) as c:
                try:
                    c.call("sync", timeout_s=0.5)
                    answered_while_frozen = True
                except NodeNotRunning:
                    answered_while_frozen = False
        finally:
            os.kill(writer, signal.SIGCONT)
        assert not answered_while_frozen
        with ControlClient(Home.at(tree.home)) as c:
            c.call("sync")
        conn = connect(tree.home / "chain.db", readonly=True)
        try:
            kinds = [e.event_type for e in iter_chain(conn, "supervisor:root")]
        finally:
            conn.close()
        assert "supervisor.child_restarting" in kinds


def test_sync_waits_for_every_running_worker_and_gives_up_on_a_frozen_one(tmp_path):
    """`sync` is a barrier over the workers too: a worker that cannot answer (SIGSTOPped) holds it
    until SYNC_WORKER_TIMEOUT_S, then the node answers without it and says so in its log."""
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        pid = tree.wait_running()["root/counter"]
        with ControlClient(Home.at(tree.home)) as c:
            c.call("sync", timeout_s=5)                      # all well: answered
        os.kill(pid, signal.SIGSTOP)
        try:
            with ControlClient(Home.at(tree.home)) as c:
                try:
                    c.call("sync", timeout_s=1)
                    answered_at_once = True
                except NodeNotRunning:
                    answered_at_once = False
            with ControlClient(Home.at(tree.home)) as c:
                c.call("sync", timeout_s=10)                 # answered once the node stops waiting
        finally:
            os.kill(pid, signal.SIGCONT)
        assert not answered_at_once
        assert "sync: not waiting any longer for root/counter" in (tree.home / "node.log").read_text()


def test_an_actor_that_keeps_sending_itself_ticks_still_gets_its_events_stored(tmp_path):
    """pump sleeps in handle-send, then sends itself the next tick, which is always queued already:
    a worker turn is bounded in time, so its events reach the store without anyone asking (no sync)."""
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "pump", "pump.wat", initial_state="pump\ncounter", handlers=("timing",))
    with Tree(tmp_path, TREE + """
    [[supervisor.children]]
    id = "pump"
    manifest = "pump.toml"
""") as tree:
        tree.wait_running()
        pump_id = tree.node("root/pump")["actor_id"]

        def stored_ticks() -> int:
            conn = connect(Home.at(tree.home).chain_db, readonly=True)
            try:
                return len(read_events(conn, pump_id, event_type="message.send"))
            finally:
                conn.close()
        tree.wait_for(lambda: stored_ticks() >= 4, timeout=10, what="the pump's ticks stored without a sync")


def test_durability_process_keeps_acknowledged_events_through_a_writer_sigkill(tmp_path):
    """`up --durability process`: commits are not fsynced, but an acknowledged event is in the OS, so
    the death of the writer loses none (a power loss could: docs/chain-format.md)."""
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE, up_args=("--durability", "process")) as tree:
        tree.wait_running()
        assert "(durability: process)" in (tree.home / "node.log").read_text()
        answered = [int(tree.call("request", {"target": "counter", "payload": b"inc"})["ok"]) for _ in range(20)]
        old = writer_pid(tree)
        os.kill(old, signal.SIGKILL)
        tree.wait_for(lambda: writer_pid(tree) != old, what="a new chain-writer")
        answered.append(int(tree.call("request", {"target": "counter", "payload": b"inc"})["ok"]))
        replies = [bytes(e.payload()["reply"]) for e in tree.events(tree.node("root/counter")["actor_id"],
                                                                    "message.request")]
        assert [int(r) for r in replies] == answered == list(range(1, 22))
        assert cli("verify", home=tree.home).returncode == 0
    bad = cli("up", str(tmp_path / "supervision.toml"), "--durability", "maybe", home=tmp_path / "other")
    assert bad.returncode != 0 and "maybe" in bad.stderr and "Traceback" not in bad.stderr


def test_the_writer_keeps_batch_marks_only_for_live_producers(tmp_path):
    """Bounded: each worker incarnation is a producer whose last batch number the writer keeps (for
    exactly-once); once the worker exits the node says so and the mark goes, so restarts do not
    grow the producers table."""
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    with Tree(tmp_path, TREE) as tree:
        for _ in range(5):
            pid = tree.wait_running()["root/counter"]
            tree.call("request", {"target": "counter", "payload": b"inc"})
            tree.kill("root/counter")
            tree.wait_for(lambda: tree.node("root/counter")["pid"] not in (None, pid), what="the restart")
        tree.wait_running()
        actor = tree.node("root/counter")["actor_id"]
        tree.call("request", {"target": "counter", "payload": b"inc"})
        tree.call("sync")

        def marks() -> list[str]:
            conn = connect(tree.home / "chain.db", readonly=True)
            try:
                return [p for (p,) in conn.execute("SELECT producer FROM producers")]
            finally:
                conn.close()
        # the live incarnation's and the node's, not the five that were killed
        tree.wait_for(lambda: [p for p in marks() if p.startswith(actor)] == [f"{actor}/6"],
                      what="only the live incarnation's mark")
        assert len(marks()) == 2, marks()
