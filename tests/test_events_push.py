"""Events pushed by the chain-writer (docs/events.md): `events --follow`, `subscribe` and `logs`
on a real tree through the real CLI, and the Follower (theater_otp/chain/follow.py) in process.

The rules pinned: a follower prints what is stored, then each new event once, in seq order per
chain; what the socket lost is read from chain.db; a subscriber that does not read never holds
the writer up. No test measures time: each reads until the chain's head and checks the order."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import struct
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from harness import CLI, WAT, Tree, cli, write_manifest
from theater_otp.chain.event import canonical_bytes, record_bytes
from theater_otp.chain.follow import Follower
from theater_otp.client import ControlClient
from theater_otp.home import Home

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"

    [[supervisor.children]]
    id = "echo"
    manifest = "echo.toml"

    [[supervisor.children]]
    id = "probe"
    manifest = "probe.toml"
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events-push")
    write_manifest(folder, "counter", "counter.wat", initial_state="0")
    write_manifest(folder, "echo", "echo.wat", initial_state="")
    (folder / "probe.toml").write_text(f'name = "probe"\ncomponent = "{WAT / "rtprobe.wat"}"\n\n'
                                       '[[handler]]\ntype = "environment"\n\n[[handler]]\ntype = "random"\n')
    with Tree(folder, TREE, up_args=("--durability", "process")) as t:
        t.wait_running()
        yield t


def actor_id(tree: Tree, name: str) -> str:
    return tree.node(f"root/{name}")["actor_id"]


def head(tree: Tree, name: str) -> int:
    """The seq of the newest stored event of root/NAME (after a sync)."""
    return tree.events(actor_id(tree, name))[-1].seq


def inc(tree: Tree, n: int = 1, target: str = "counter") -> None:
    for _ in range(n):
        tree.call("request", {"target": target, "payload": b"inc", "timeout_ms": 10_000})


class Lines:
    """The JSON lines a CLI process prints, read as they come (pytest-timeout guards a hang)."""

    def __init__(self, *args: str, home, stdin: bool = False):
        self.proc = subprocess.Popen(CLI + list(args) + ["--home", str(home)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self._buf = b""

    def next(self) -> dict:
        while b"\n" not in self._buf:
            select.select([self.proc.stdout], [], [])
            data = os.read(self.proc.stdout.fileno(), 65536)
            assert data, f"{self.proc.args} ended: {self.proc.stderr.read().decode()}"
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def ready(self) -> None:
        """Wait for the `# following ...` line `subscribe` writes on stderr once it follows."""
        line = self.proc.stderr.readline().decode()
        assert line.startswith("# following"), line

    def upto(self, *marks: tuple[str, int]) -> list[dict]:
        """Lines until each (chain, seq) of `marks` was printed."""
        want = set(marks)
        return self.until(lambda e: not want.difference_update({(e["actor_id"], e["seq"])}) and not want)

    def until(self, done) -> list[dict]:
        """Lines until `done(line)` holds for one (included)."""
        got = []
        while not got or not done(got[-1]):
            got.append(self.next())
        return got

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """End it with `sig`; it exits 0; its stderr."""
        self.proc.send_signal(sig)
        assert self.proc.wait(10) == 0
        err = self.proc.stderr.read().decode()
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream:
                stream.close()
        assert "Traceback" not in err, err
        return err


def seqs(lines: list[dict], chain: str) -> list[int]:
    return [e["seq"] for e in lines if e["actor_id"] == chain]


def test_follow_prints_the_backlog_then_each_new_event_once_in_seq_order(tree):
    inc(tree, 3)
    counter = actor_id(tree, "counter")
    busy = threading.Thread(target=inc, args=(tree, 40))
    busy.start()  # the follower starts while events are being stored: none lost, none twice
    follow = Lines("events", "counter", "--json", "--follow", home=tree.home)
    busy.join()
    inc(tree, 5)
    last = head(tree, "counter")
    try:
        got = follow.until(lambda e: e["seq"] == last)
    finally:
        follow.stop(signal.SIGINT)
    assert seqs(got, counter) == list(range(last + 1))
    assert [e["event_type"] for e in got][:2] == ["actor.start", "actor.init"]
    assert got[1]["parent_hash"] == got[0]["hash"]


def test_follow_all_prints_every_chain_each_in_seq_order(tree):
    follow = Lines("events", "--all", "--json", "--follow", "--type", "message", home=tree.home)
    inc(tree, 3)
    inc(tree, 3, target="echo")
    tree.call("send", {"target": "echo", "payload": b"hello"})
    counter, echo = actor_id(tree, "counter"), actor_id(tree, "echo")
    last = {chain: tree.events(chain, "message")[-1].seq for chain in (counter, echo)}
    try:
        got = follow.upto(*last.items())
    finally:
        follow.stop()
    assert all(e["event_type"].startswith("message.") for e in got)
    for chain in (counter, echo):
        assert seqs(got, chain) == [e.seq for e in tree.events(chain, "message") if e.seq <= last[chain]]


def read_until(f: Follower, chain: str, last: int, delivered: list[int]) -> list[int]:
    """What `f` delivers of `chain` until its seq `last` (a minute at most: then the test fails)."""
    for _ in range(6):
        if delivered and delivered[-1] >= last:
            break
        delivered += [e.seq for e in f.next_events(10_000)[0] if e.actor_id == chain]
    return delivered


@pytest.mark.parametrize("more_after", [True, False], ids=["a-later-push-shows-the-gap", "nothing-after-it"])
def test_a_follower_that_lost_messages_reads_them_from_the_store(tree, more_after):
    """Messages the socket never delivered (here: the follower unsubscribed meanwhile, as a
    subscriber that reconnects does) are read from chain.db, in order, each once: when a later
    push starts past them, and when nothing comes after them (the writer's confirmation of the
    renewed subscription, then the chain head in chain.db, show them)."""
    counter = actor_id(tree, "counter")
    with Follower(Home.at(tree.home)) as f:
        delivered = [e.seq for e in f.follow(counter)]
        inc(tree)
        topic = counter.encode()
        f._sub.setsockopt(zmq.UNSUBSCRIBE, topic)  # from here on this follower takes nothing of it
        inc(tree, 30)
        f._sub.setsockopt(zmq.SUBSCRIBE, topic)
        if more_after:
            inc(tree)
        last = head(tree, "counter")
        assert read_until(f, counter, last, delivered) == list(range(last + 1))
        # an UNSUBSCRIBE reaches the writer asynchronously: on a busy machine a few of the 30 can
        # still be pushed before it takes effect; the rest came from the store
        assert f.filled > 0


def test_a_follower_with_a_tiny_queue_under_a_flood_misses_nothing(tree):
    counter = actor_id(tree, "counter")
    with Follower(Home.at(tree.home), rcvhwm=1) as f:
        delivered = [e.seq for e in f.follow(counter)]
        inc(tree, 200)  # the follower does not read meanwhile
        last = head(tree, "counter")
        assert read_until(f, counter, last, delivered) == list(range(last + 1))


def test_subscribe_follows_ids_from_stdin_new_events_only_and_keeps_following_after_eof(tree):
    counter, echo = actor_id(tree, "counter"), actor_id(tree, "echo")
    before = head(tree, "counter")
    sub = Lines("subscribe", "-", "--json", home=tree.home, stdin=True)
    sub.ready()
    sub.proc.stdin.write(f"root/counter\nnobody\n{echo}\n".encode())
    sub.proc.stdin.flush()
    inc(tree, 2)
    tree.call("send", {"target": "echo", "payload": b"hi"})
    got = sub.until(lambda e: e["actor_id"] == echo and e["event_type"] == "message.send")
    sub.proc.stdin.close()  # subscribe keeps following what stdin named
    inc(tree)
    last = head(tree, "counter")
    got += sub.until(lambda e: e["actor_id"] == counter and e["seq"] == last)
    err = sub.stop()
    assert seqs(got, counter) == list(range(before + 1, last + 1))  # nothing stored before it started
    assert "error: " in err and "'nobody'" in err


def test_subscribe_without_ids_on_stdin_exits_1(tree):
    proc = subprocess.run(CLI + ["subscribe", "-", "--home", str(tree.home)], input=b"\n", capture_output=True,
                          timeout=30)
    assert proc.returncode == 1 and b"no actor ids on stdin" in proc.stderr


def test_subscribe_type_prints_only_that_type(tree):
    sub = Lines("subscribe", "counter", "--type", "message.request", "--json", home=tree.home)
    sub.ready()
    inc(tree)
    first = sub.next()
    tree.call("send", {"target": "counter", "payload": b"inc"})
    inc(tree)
    second = sub.next()
    sub.stop()
    assert first["event_type"] == second["event_type"] == "message.request"
    sent = [e.seq for e in tree.events(actor_id(tree, "counter"), "message.send")]
    assert first["seq"] < sent[-1] < second["seq"]  # the send between them was left out


def with_len(first: bytes, rest: bytes) -> bytes:
    return struct.pack("<I", len(first)) + first + rest


def test_logs_prints_the_actors_log_lines_with_levels_and_follows(tree):
    for level in ("trace", "debug", "info", "warn", "error", "loud"):
        tree.call("request", {"target": "probe", "payload": b"L" + with_len(level.encode(), f"{level} line".encode())})
    lines = [json.loads(line) for line in cli("logs", "probe", "--json", home=tree.home, check=True).stdout.splitlines()]
    assert [(e["level"], e["message"]) for e in lines] == [(lv, f"{lv} line") for lv in
                                                           ("trace", "debug", "info", "warn", "error")]
    text = cli("logs", "probe", "--level", "warning", home=tree.home, check=True).stdout.splitlines()
    assert [line.split()[-2:] for line in text] == [["warn", "line"], ["error", "line"]]
    assert "WARN" in text[0] and "ERROR" in text[1]
    before = cli("logs", "echo", "--json", home=tree.home, check=True).stdout.splitlines()
    follow = Lines("logs", "echo", "-f", "--json", home=tree.home)
    got = [follow.next() for _ in before]  # what is stored first
    tree.call("send", {"target": "echo", "payload": b"one"})
    tree.call("send", {"target": "echo", "payload": b"two"})
    got += [follow.next(), follow.next()]
    follow.stop()
    assert got[:len(before)] == [json.loads(line) for line in before]
    assert [(e["level"], e["message"]) for e in got] == [("info", "echo got message")] * len(got)
    assert [e["seq"] for e in got] == sorted({e["seq"] for e in got})


@pytest.mark.parametrize("verb", [["events", "nobody", "--follow"], ["subscribe", "nobody"], ["logs", "nobody", "-f"]])
def test_an_unknown_actor_is_one_error_line_and_exit_1(tree, verb):
    proc = cli(*verb, home=tree.home, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: no actor or supervisor named 'nobody'") and "Traceback" not in proc.stderr


def test_the_writer_keeps_storing_while_a_subscriber_is_stopped(tree):
    """SIGSTOP a `subscribe --all` while 2,000 events are stored: the actors keep answering, every
    event is stored, and once resumed the subscriber prints them all (what the socket dropped for
    it read from chain.db)."""
    counter = actor_id(tree, "counter")
    sub = Lines("subscribe", "--all", "--json", home=tree.home)
    sub.ready()
    inc(tree)
    sub.until(lambda e: e["actor_id"] == counter and e["event_type"] == "message.request")
    start = head(tree, "counter")
    sub.proc.send_signal(signal.SIGSTOP)
    try:
        with ControlClient(Home.at(tree.home)) as c:
            before = int(c.call("request", {"target": "counter", "payload": b"get"})["ok"])
            for _ in range(2000):
                c.call("send", {"target": "counter", "payload": b"inc"})
            after = int(c.call("request", {"target": "counter", "payload": b"get"})["ok"])
            assert c.call("request", {"target": "echo", "payload": b"ping"})["ok"] == b"ping"
    finally:
        sub.proc.send_signal(signal.SIGCONT)
    assert after - before == 2000
    assert len([e for e in tree.events(counter, "message.send") if e.seq > start]) == 2000
    last = head(tree, "counter")
    got = sub.upto((counter, last))
    sub.stop()
    printed = seqs(got, counter)
    assert printed == list(range(printed[0], last + 1)) and printed[0] <= start + 1


def test_events_and_subscribe_refuse_a_target_with_all(tree):
    assert cli("events", "counter", "--all", home=tree.home).returncode == 2
    assert cli("subscribe", "--all", "counter", home=tree.home).returncode == 2
    assert cli("subscribe", home=tree.home).returncode == 2


@pytest.mark.parametrize("forged", ["unlinked", "garbled"])
def test_a_pushed_chunk_that_does_not_follow_the_chain_is_not_printed(tree, forged):
    """A message whose event does not link to the last one delivered (its parent hash), or whose
    records do not decode, is not delivered: chain.db says what comes next (in process: the
    message is handed to the Follower as its socket would)."""
    counter = actor_id(tree, "counter")
    with Follower(Home.at(tree.home)) as f:
        f.follow(counter)
        seq = f.next_seq[counter]
        enc = canonical_bytes(counter, seq, 1, b"\x11" * 32, "message.send", time.time_ns(), b"\x80")
        records = record_bytes(enc, hashlib.sha256(enc).digest()) if forged == "unlinked" else b"\x00" * 10
        f._on_message([counter.encode(), msgpack.packb([seq, seq, records, 1])])
        assert f.next_events(0)[0] == [] and f.next_seq[counter] == seq  # nothing stored past the head


@pytest.mark.unit
def test_what_an_actor_printed_is_a_log_line_of_its_stream():
    from types import SimpleNamespace

    from theater_otp.chain.logs import log_line

    printed = SimpleNamespace(event_type="log.output", payload=lambda: {"stream": "stdout", "line": "hello"})
    assert log_line(printed) == ("info", "stdout: hello")
    other = SimpleNamespace(event_type="message.send", payload=lambda: {})
    assert log_line(other) is None
