"""Chains off the box (docs/replication.md): the replicator, `verify-remote` and `restore` with a real
nats-server (JetStream, file store) and a real tree of counters.

Each test replicates the tree's chain.db to its own stream (a node name of its own), so the tests
do not see each other's copies. The rules pinned: every stored event reaches the stream once, in
order, as the exact bytes chain.db holds; a restarted replicator and one that lost NATS for a few
seconds resume without a duplicate or a gap; a rogue publish is refused or detected; restore
rebuilds a lost or damaged chain that `theater-otp verify` passes, and refuses to throw away an
intact local chain; bad input is one error line, quickly."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import CLI, Tree, cli, free_port, write_manifest
from natsfix import NatsFixture, nats_server  # noqa: F401 - the fixture `natsd` takes it by name
from theater_otp.chain.event import make_event, record_bytes, split_records
from theater_otp.chain.store import connect
from theater_otp.cluster import replica
from theater_otp.cluster.replica import actor_of_subject, message_event, subject_for, subject_token

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "a"
    manifest = "a.toml"

    [[supervisor.children]]
    id = "b"
    manifest = "b.toml"
"""


pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------------------
# fixtures: a nats-server (tests/natsfix.py) and a tree of two counters
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def natsd(request) -> NatsFixture:
    """tests/natsfix.py's nats-server (JetStream, a store of its own; stop/start keep port and store)."""
    return request.getfixturevalue("nats_server")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replica-tree")
    write_manifest(folder, "a", "counter.wat", initial_state="0")
    write_manifest(folder, "b", "counter.wat", initial_state="0")
    with Tree(folder, TREE, up_args=("--durability", "process")) as t:
        t.wait_running()
        yield t


class Replica:
    """`python -m theater_otp.cluster.replica` for one node name; its stderr in a file."""

    def __init__(self, home: Path, url: str, node: str, log: Path):
        self.home, self.url, self.node, self.log = home, url, node, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Replica":
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "theater_otp.cluster.replica", "--home", str(self.home),
                                          "--cluster", self.url, "--node-name", self.node, "--stats-every", "0"],
                                         stdout=subprocess.DEVNULL, stderr=err)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def replicas(tmp_path):
    started: list[Replica] = []

    def make(home: Path, url: str, node: str) -> Replica:
        r = Replica(home, url, node, tmp_path / f"replica-{node}-{len(started)}.log")
        started.append(r)
        return r

    yield make
    for r in started:
        r.kill()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def inc(tree: Tree, n: int, target: str = "a") -> None:
    for _ in range(n):
        tree.call("request", {"target": target, "payload": b"inc", "timeout_ms": 10_000})


def local_counts(home: Path) -> dict[str, int]:
    conn = connect(home / "chain.db", readonly=True)
    try:
        return {a: n + 1 for a, n in conn.execute("SELECT actor_id, head_seq FROM actors WHERE head_seq >= 0")}
    finally:
        conn.close()


def local_records(home: Path, actor_id: str) -> list[bytes]:
    conn = connect(home / "chain.db", readonly=True)
    try:
        out = []
        for (blob,) in conn.execute("SELECT records FROM chunks WHERE actor_id=? ORDER BY first_seq", (actor_id,)):
            out += [bytes(blob[o:o + 4 + len(enc) + 32]) for o, enc, _h in split_records(bytes(blob))]
        return out
    finally:
        conn.close()


async def _with_js(url: str, work):
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        return await work(nc, nc.jetstream(timeout=5))
    finally:
        await nc.close()


def remote_counts(url: str, node: str) -> dict[str, int]:
    async def work(nc, js):
        from nats.js.errors import NotFoundError
        try:
            info = await js.stream_info(replica.stream_name(node), subjects_filter=replica.subject_prefix(node) + ">")
        except NotFoundError:
            return {}
        return {actor_of_subject(node, s): n for s, n in (info.state.subjects or {}).items()}
    return asyncio.run(_with_js(url, work))


def remote_messages(url: str, node: str, actor_id: str) -> list:
    """(stream seq, payload, headers) of every message of a chain's subject."""
    async def work(nc, js):
        subject = subject_for(node, actor_id)
        out, at = [], 0
        while True:
            try:
                msg = await js.get_msg(replica.stream_name(node), seq=at + 1, subject=subject, next=True)
            except Exception:
                return out
            out.append((msg.seq, msg.data, msg.headers))
            at = msg.seq
    return asyncio.run(_with_js(url, work))


def wait_replicated(tree: Tree, url: str, node: str, timeout: float = 20) -> dict[str, int]:
    """Wait until the stream holds exactly the events chain.db holds, chain by chain."""
    tree.call("sync")
    want = local_counts(tree.home)
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {}
    while time.monotonic() < deadline:
        got = remote_counts(url, node)
        if got == want:
            return got
        assert all(got.get(a, 0) <= n for a, n in want.items()), f"more messages than events: {got} vs {want}"
        time.sleep(0.1)
    raise AssertionError(f"not replicated within {timeout} s: stream {got}, chain.db {want}")


def actor_id(tree: Tree, name: str) -> str:
    return tree.node(f"root/{name}")["actor_id"]


def verify_remote_cli(url: str, node: str, ref: str, home: Path | None, *extra: str) -> subprocess.CompletedProcess:
    args = ["verify-remote", ref, "--cluster", url, "--node-name", node, *extra]
    return cli(*args, home=home, timeout=60)


def assert_all_verify(tree: Tree, url: str, node: str) -> None:
    for a in local_counts(tree.home):
        proc = verify_remote_cli(url, node, a, tree.home)
        assert proc.returncode == 0, f"{a}: {proc.stdout}{proc.stderr}"
        assert "ok: copy of" in proc.stdout and "agrees with the local chain" in proc.stdout


def assert_no_duplicates(url: str, node: str, actor: str) -> None:
    msgs = remote_messages(url, node, actor)
    seqs = [int(h[replica.SEQ_HEADER]) for _s, _p, h in msgs]
    assert seqs == list(range(len(seqs))), f"seqs on the stream: {seqs[:20]}…"


class Load:
    """Requests to the counters from a thread until stopped; counts what was answered."""

    def __init__(self, tree: Tree, pause: float = 0.002):
        self.tree, self.pause = tree, pause
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            inc(self.tree, 1, "a" if self.done % 2 else "b")
            self.done += 1
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


# ---------------------------------------------------------------------------------------------
# unit: names and messages
# ---------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_subject_tokens_round_trip_and_never_meet():
    ids = ["6bf5cd68-0373-4f43-a967-4450c7d147af", "supervisor:root/team", "supervisor:root/a.b", "x y", "hex",
           "hex.41", "é", ">", "*"]
    tokens = [subject_token(a) for a in ids]
    assert len(set(tokens)) == len(ids)
    for a, t in zip(ids, tokens):
        assert not any(c in t for c in " *>\t\r\n")
        assert all(part for part in t.split("."))
        assert actor_of_subject("n1", f"theater.chain.n1.{t}") == a
    assert subject_token("6bf5cd68-0373-4f43-a967-4450c7d147af") == "6bf5cd68-0373-4f43-a967-4450c7d147af"
    assert actor_of_subject("n1", "theater.chain.n2.abc") is None
    assert actor_of_subject("n1", "theater.chain.n1.hex.zz") is None
    with pytest.raises(replica.ReplicaError):
        replica.stream_name("N.1")


@pytest.mark.unit
def test_a_message_holds_exactly_one_verified_record():
    e = make_event("a1", 0, 1, None, "actor.start", 1, b"\x80")
    from theater_otp.chain.event import canonical_bytes
    rec = record_bytes(canonical_bytes("a1", 0, 1, None, "actor.start", 1, b"\x80"), e.hash)
    assert message_event(rec)[0] == e
    assert message_event(rec + rec)[0] is None
    assert message_event(rec[:-1])[0] is None
    bad = rec[:-32] + bytes(32)
    assert "hash" in (message_event(bad)[1] or "")


# ---------------------------------------------------------------------------------------------
# integration
# ---------------------------------------------------------------------------------------------

def test_every_event_is_replicated_byte_for_byte_and_verifies(tree, natsd, replicas):
    url, node = natsd.url, "all"
    inc(tree, 40, "a")
    rep = replicas(tree.home, url, node).start()
    inc(tree, 40, "b")
    wait_replicated(tree, url, node)
    a = actor_id(tree, "a")
    msgs = remote_messages(url, node, a)
    assert [p for _s, p, _h in msgs] == local_records(tree.home, a)
    for _s, payload, headers in msgs:
        event, why = message_event(payload)
        assert why is None and headers[replica.SEQ_HEADER] == str(event.seq)
        assert headers[replica.HASH_HEADER] == event.hash.hex()
    assert_all_verify(tree, url, node)
    # by path and by name, and as JSON
    proc = verify_remote_cli(url, node, "root/b", tree.home, "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout and actor_id(tree, "b") in proc.stdout
    # without a local chain: the name is resolved from the copy's actor.start
    proc = verify_remote_cli(url, node, "a", tree.folder / "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert "no local chain compared" in proc.stdout and a in proc.stdout
    # and what follows is replicated as it is stored
    inc(tree, 10, "a")
    wait_replicated(tree, url, node)
    assert "STOPPED" not in rep.text() and "ERROR" not in rep.text()


def test_run_in_process_on_a_shared_connection_with_a_lag_to_read(tree, natsd):
    """The way the cluster link runs it: its own loop and connection, `run(stop)`, `lag` read meanwhile;
    the connection is left open and as it was (no subscription of the replicator's left on it)."""
    import nats

    from theater_otp.cluster.replica import Replicator
    from theater_otp.home import Home

    url, node = natsd.url, "inproc"
    tree.call("sync")
    want = sum(local_counts(tree.home).values())

    async def main():
        nc = await nats.connect(url)
        problems = []
        rep = Replicator(Home.at(tree.home), node, nc=nc, on_problem=lambda a, why: problems.append((a, why)))
        assert rep.lag == 0 and rep.status()["chains"] == 0  # readable before it runs
        stop = asyncio.Event()
        task = asyncio.ensure_future(rep.run(stop))
        deadline = time.monotonic() + 20
        while rep.acked_events < want and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert rep.acked_events == want and rep.lag == 0
        await asyncio.to_thread(inc, tree, 5, "a")
        lags = []
        target = want + 5
        while rep.acked_events < target and time.monotonic() < deadline:
            lags.append(rep.lag)
            await asyncio.sleep(0.005)
        status = rep.status()
        assert status["acked_events"] == target and status["lag"] == 0 and status["connected"]
        assert status["stopped"] == {} and not problems and status["chains"] == len(local_counts(tree.home))
        assert status["latency_ms"]["n"] > 0
        stop.set()
        await asyncio.wait_for(task, 15)
        assert nc.is_connected  # and the replicator's reply subscription is gone (nats-py's own request one stays)
        assert not [sub for sub in nc._subs.values() if sub.subject.startswith(rep._inbox + ".")]
        await nc.close()

    asyncio.run(main())
    assert remote_counts(url, node) == local_counts(tree.home)


def test_a_restarted_replicator_resumes_without_duplicates(tree, natsd, replicas):
    url, node = natsd.url, "restart"
    first = replicas(tree.home, url, node).start()
    with Load(tree) as load:
        deadline = time.monotonic() + 10
        while remote_counts(url, node).get(actor_id(tree, "a"), 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.kill()  # SIGKILL in the middle of the load: publishes in flight are lost or stored
        time.sleep(0.3)
        second = replicas(tree.home, url, node).start()
        time.sleep(0.5)
    assert load.done > 20
    wait_replicated(tree, url, node)
    for name in ("a", "b"):
        assert_no_duplicates(url, node, actor_id(tree, name))
    assert "STOPPED" not in first.text() + second.text()
    assert_all_verify(tree, url, node)


def test_nats_going_away_for_seconds_loses_nothing(tree, natsd, replicas):
    url, node = natsd.url, "outage"
    rep = replicas(tree.home, url, node).start()
    inc(tree, 10, "a")
    wait_replicated(tree, url, node)
    with Load(tree) as load:
        time.sleep(0.3)
        os.kill(natsd.pid, signal.SIGKILL)  # no clean shutdown: publishes in flight are lost
        natsd.stop()
        before = load.done
        time.sleep(2.5)  # events keep being stored meanwhile
        stored_in_outage = load.done - before
        natsd.start()  # same port, same store
        time.sleep(0.5)
    assert stored_in_outage > 10
    wait_replicated(tree, url, node, timeout=30)
    for name in ("a", "b"):
        assert_no_duplicates(url, node, actor_id(tree, name))
    assert_all_verify(tree, url, node)
    assert "NATS connection lost" in rep.text() and "STOPPED" not in rep.text()


def test_a_rogue_publish_is_refused_or_detected(tree, natsd, replicas):
    url, node = natsd.url, "rogue"
    rep = replicas(tree.home, url, node).start()
    inc(tree, 5, "a")
    wait_replicated(tree, url, node)
    a, b = actor_id(tree, "a"), actor_id(tree, "b")
    subject = subject_for(node, a)
    last = remote_messages(url, node, a)[-1]
    head, _why = message_event(last[1])
    forged = make_event(a, head.seq + 1, head.incarnation, bytes(32), "message.request", time.time_ns(), b"\x80")
    from theater_otp.chain.event import canonical_bytes
    payload = record_bytes(canonical_bytes(a, forged.seq, forged.incarnation, forged.parent_hash, forged.event_type,
                                           forged.timestamp, forged.data), forged.hash)

    async def rogue(nc, js):
        from nats.js.errors import BadRequestError
        # 1. a second writer that believes it starts the chain: the expected-sequence check refuses it
        with pytest.raises(BadRequestError) as refused:
            await js.publish(subject, payload, headers={replica.EXPECTED_SUBJECT_SEQ: "0"})
        assert refused.value.err_code == replica.WRONG_LAST_SEQUENCE
        # ... and one that guesses the last sequence but not the chain (a fork): refused too
        with pytest.raises(BadRequestError):
            await js.publish(subject, payload, headers={replica.EXPECTED_SUBJECT_SEQ: str(last[0] - 1)})
        # 2. a client that publishes with no expectation at all is stored by the server...
        return await js.publish(subject, payload)

    ack = asyncio.run(_with_js(url, rogue))
    assert ack.seq > last[0]
    # ... verify-remote finds it: the forged event's parent is not the copy's last hash
    proc = verify_remote_cli(url, node, a, tree.home)
    assert proc.returncode == 1
    assert f"FAIL copy: actor {a} event {head.seq + 1}: parent mismatch" in proc.stdout
    # ... and the replicator, whose next publish the server refuses, stops that chain loudly and
    # writes nothing over it, while the other chains go on
    n_messages = len(remote_messages(url, node, a))
    inc(tree, 3, "a")
    inc(tree, 3, "b")
    deadline = time.monotonic() + 10
    while "STOPPED replicating chain " + a not in rep.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "STOPPED replicating chain " + a in rep.text(), rep.text()
    tree.call("sync")
    deadline = time.monotonic() + 10
    while remote_counts(url, node).get(b) != local_counts(tree.home)[b] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remote_counts(url, node).get(b) == local_counts(tree.home)[b]
    assert len(remote_messages(url, node, a)) == n_messages
    assert rep.proc.poll() is None


def _copy_home(tree: Tree, dest: Path) -> Path:
    """A node-less copy of the tree's home: chain.db only, through SQLite's backup (a consistent copy)."""
    tree.call("sync")
    dest.mkdir(parents=True)
    src = sqlite3.connect(tree.home / "chain.db")
    dst = sqlite3.connect(dest / "chain.db")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


def test_restore_rebuilds_a_lost_or_damaged_chain(tree, natsd, replicas, tmp_path):
    url, node = natsd.url, "restore"
    rep = replicas(tree.home, url, node).start()
    inc(tree, 20, "a")
    wait_replicated(tree, url, node)
    a = actor_id(tree, "a")
    want = local_records(tree.home, a)

    # the node is running at the tree's home: restore refuses
    proc = cli("restore", a, "--cluster", url, "--node-name", node, home=tree.home)
    assert proc.returncode == 1 and "a node is running" in proc.stderr

    # chain.db lost: restore by name (resolved from the copy), then `verify` passes
    lost = tmp_path / "lost"
    lost.mkdir()
    proc = cli("restore", "a", "--cluster", url, "--node-name", node, home=lost)
    assert proc.returncode == 0, proc.stderr
    assert f"restored {len(want)} event(s)" in proc.stdout
    assert local_records(lost, a) == want
    proc = cli("verify", "--home", str(lost))
    assert proc.returncode == 0 and "ok:" in proc.stdout, proc.stdout + proc.stderr
    conn = connect(lost / "chain.db", readonly=True)
    assert conn.execute("SELECT path, name FROM actors WHERE actor_id=?", (a,)).fetchone() == ("root/a", "a")
    conn.close()
    again = cli("restore", a, "--cluster", url, "--node-name", node, home=lost)
    assert again.returncode == 0 and "up to date" in again.stdout

    # a damaged local chain (one byte of an event changed): rebuilt without --force
    damaged = _copy_home(tree, tmp_path / "damaged")
    conn = sqlite3.connect(damaged / "chain.db")
    rowid, blob = conn.execute("SELECT rowid, records FROM chunks WHERE actor_id=? ORDER BY first_seq DESC LIMIT 1",
                               (a,)).fetchone()
    blob = bytearray(blob)
    blob[-40] ^= 0xFF
    conn.execute("UPDATE chunks SET records=? WHERE rowid=?", (bytes(blob), rowid))
    conn.commit()
    conn.close()
    assert cli("verify", a, "--home", str(damaged)).returncode == 1
    proc = cli("restore", a, "--cluster", url, "--node-name", node, "--json", home=damaged)
    assert proc.returncode == 0, proc.stderr
    assert cli("verify", "--home", str(damaged)).returncode == 0
    assert local_records(damaged, a)[:len(want)] == want

    # an intact local chain longer than the copy: refused, unless --force
    rep.kill()
    inc(tree, 3, "a")
    longer = _copy_home(tree, tmp_path / "longer")
    proc = cli("restore", a, "--cluster", url, "--node-name", node, home=longer)
    assert proc.returncode == 1 and "intact" in proc.stderr and "--force" in proc.stderr
    assert len(local_records(longer, a)) == len(want) + 3
    proc = cli("restore", a, "--cluster", url, "--node-name", node, "--force", home=longer)
    assert proc.returncode == 0, proc.stderr
    assert local_records(longer, a) == want
    assert cli("verify", "--home", str(longer)).returncode == 0
    conn = connect(longer / "chain.db", readonly=True)
    assert conn.execute("SELECT sum(events) FROM cut_records WHERE actor_id=?", (a,)).fetchone()[0] == 3
    conn.close()


def test_bad_input_is_one_error_line_quickly(tree, natsd):
    url = natsd.url

    async def empty_stream(nc, js):
        await js.add_stream(name=replica.stream_name("badin"), subjects=[replica.subject_prefix("badin") + ">"])
    asyncio.run(_with_js(url, empty_stream))
    cases = [
        (["verify-remote", "nosuch", "--cluster", url, "--node-name", "badin"], "no replicated chain for 'nosuch'"),
        (["verify-remote", "a", "--cluster", f"nats://127.0.0.1:{free_port()}", "--node-name", "all"],
         "cannot reach NATS at"),
        (["restore", "a", "--cluster", f"nats://127.0.0.1:{free_port()}", "--node-name", "all", "--home",
          str(tree.folder / "nohome")], "cannot reach NATS at"),
        (["verify-remote", "a", "--cluster", url, "--node-name", "never"], "no replicated chains of node 'never'"),
        (["verify-remote", "a", "--cluster", url, "--node-name", "Bad.Name"], "node name 'Bad.Name'"),
    ]
    for args, message in cases:
        t0 = time.monotonic()
        proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, proc.stderr)
        assert took < 5, (args, took)
    # the replicator's own entry: a bad node name is one error line
    proc = subprocess.run([sys.executable, "-m", "theater_otp.cluster.replica", "--home", str(tree.home),
                           "--cluster", url, "--node-name", "Bad.Name"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.startswith("error: node name")

