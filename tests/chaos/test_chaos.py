"""Chaos: random SIGKILLs of worker processes and of the chain-writer while messages flow.

What must hold afterwards (docs/chain-format.md, *Durability*):

* no acknowledged event is lost and no chain forks: after each `sync` the test reads every
  chain's head (seq, hash) from chain.db; at the end each chain still holds an event at that
  seq with that hash (the chain is hash-linked, so the whole prefix is the same);
* no event is stored twice (a resent batch is applied once);
* every chain verifies (`verify_store` and `theater-otp verify --all`), and nothing was cut as a
  torn tail (a SIGKILLed writer leaves committed transactions only);
* the tree converges: every child runs again and answers;
* no process the node started survives `down`;
* the node's RSS stays bounded (under twice its size after warm-up, plus 50 MB).

The run is driven by a seeded `random.Random`; the seed is in every assertion message, and
`THEATER_OTP_CHAOS_SEED=<seed>` replays the same choices (timing differs from run to run).
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil
import pytest

from harness import Tree, cli, wait_gone, write_manifest
from theater_otp.chain.store import connect, iter_chain
from theater_otp.chain.verify import verify_store
from theater_otp.client import ControlClient
from theater_otp.errors import NodeNotRunning, RemoteError
from theater_otp.home import Home

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"
    intensity = 1000
    period = 10

    [[supervisor.children]]
    id = "c1"
    manifest = "counter.toml"

    [[supervisor.children]]
    id = "c2"
    manifest = "counter.toml"

    [[supervisor.children]]
    id = "r1"
    manifest = "relay1.toml"

    [[supervisor.children]]
    id = "team"
    type = "supervisor"
    strategy = "rest_for_one"
    intensity = 1000
    period = 10

      [[supervisor.children.children]]
      id = "c3"
      manifest = "counter.toml"

      [[supervisor.children.children]]
      id = "r3"
      manifest = "relay3.toml"
"""

COUNTERS = ("root/c1", "root/c2", "root/team/c3")
RELAYS = ("root/r1", "root/team/r3")
MB = 1024 * 1024
_WRITER_READY = re.compile(r"chain-writer\[(\d+)\] INFO chain-writer ready")


@dataclass
class Figures:
    seed: int
    worker_kills: int = 0
    writer_kills: int = 0
    syncs: int = 0
    sent_ok: int = 0
    sent_refused: int = 0
    rss_warm: int = 0
    rss_max: int = 0
    acknowledged: int = 0
    lost: int = 0
    #: chain -> {seq: hash} of every head read after a sync
    heads: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"seed {self.seed}: {self.worker_kills} worker kills, {self.writer_kills} writer kills, "
                f"{self.syncs} syncs, {self.sent_ok} messages taken ({self.sent_refused} refused), "
                f"{self.acknowledged} events acknowledged, {self.lost} lost, node RSS "
                f"{self.rss_warm / MB:.1f} MB after warm-up, {self.rss_max / MB:.1f} MB at most")


class Load(threading.Thread):
    """Messages to every actor, one control call at a time: sends to the counters and relays,
    some requests through the relays. Refusals (a target between incarnations, a request whose
    target died) are expected under chaos and counted, never fatal."""

    def __init__(self, home, seed: int):
        super().__init__(daemon=True, name="chaos-load")
        self.home = home
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.ok = 0
        self.refused = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ControlClient(Home.at(self.home)) as c:
                while not self.stop.is_set():
                    target = self.rng.choice(COUNTERS + RELAYS)
                    try:
                        if target in RELAYS and self.rng.random() < 0.2:
                            c.call("request", {"target": target, "payload": b"inc", "timeout_ms": 2000},
                                   timeout_s=10)
                        else:
                            c.call("send", {"target": target, "payload": b"inc"}, timeout_s=10)
                        self.ok += 1
                    except (RemoteError, NodeNotRunning):
                        self.refused += 1
                    # pace the load: a steady stream, not a saturated machine (2 cores, shared)
                    self.stop.wait(0.002)
        except BaseException as exc:  # reported by the test, not swallowed by the thread
            self.error = exc


def descendants(node_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(node_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def writer_ready_pids(tree: Tree) -> list[int]:
    """The chain-writers that reported ready, oldest first (each logs its own line)."""
    return [int(p) for p in _WRITER_READY.findall((tree.home / "node.log").read_text())]


def read_heads(tree: Tree) -> dict[str, tuple[int, bytes]]:
    conn = connect(Home.at(tree.home).chain_db, readonly=True)
    try:
        return {a: (s, bytes(h)) for a, s, h in
                conn.execute("SELECT actor_id, head_seq, head_hash FROM actors WHERE head_seq >= 0")}
    finally:
        conn.close()


def run_chaos(tmp_path, duration_s: float, default_seed: int | None = None) -> Figures:
    seed = int(os.environ.get("THEATER_OTP_CHAOS_SEED") or (default_seed if default_seed is not None
                                                            else random.SystemRandom().randrange(2**32)))
    fig = Figures(seed)
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "relay1", "relay.wat", initial_state="root/c1")
    write_manifest(tmp_path, "relay3", "relay.wat", initial_state="root/team/c3")
    family: dict[tuple[int, float], psutil.Process] = {}

    def note_family() -> list[psutil.Process]:
        procs = descendants(tree.node_pid)
        for p in procs:
            try:
                family[(p.pid, p.create_time())] = p
            except psutil.NoSuchProcess:
                pass
        return procs

    def sync_and_record() -> None:
        tree.call("sync", timeout_s=60)
        fig.syncs += 1
        for actor, (seq, h) in read_heads(tree).items():
            fig.heads.setdefault(actor, {})[seq] = h

    def sample_rss() -> int:
        rss = psutil.Process(tree.node_pid).memory_info().rss
        fig.rss_max = max(fig.rss_max, rss)
        return rss

    with Tree(tmp_path, TREE) as tree:
        tree.wait_running(timeout=30)
        note_family()
        load = Load(tree.home, seed + 1)
        load.start()
        try:
            # warm-up: the load runs, nothing is killed; the node's size then is the reference
            tree.wait_for(lambda: load.ok >= 300 or load.error, timeout=60, what=f"warm-up traffic (seed {seed})")
            for _ in range(3):
                sync_and_record()
            fig.rss_warm = sample_rss()
            fig.rss_max = 0

            killed_writers: set[int] = set()
            killed_workers: set[int] = set()
            deadline = time.monotonic() + duration_s
            while time.monotonic() < deadline and load.error is None:
                time.sleep(rng.uniform(0.05, 0.4))  # pacing between faults, not a wait for a condition
                procs = {p.pid for p in note_family()}
                if rng.random() < 0.25:
                    ready = writer_ready_pids(tree)
                    # only a writer that is up (logged ready) and not already killed, and is ours
                    if ready and ready[-1] not in killed_writers and ready[-1] in procs:
                        try:
                            os.kill(ready[-1], signal.SIGKILL)
                            killed_writers.add(ready[-1])
                            fig.writer_kills += 1
                        except ProcessLookupError:
                            pass
                else:
                    running = [pid for pid in tree.pids().values() if pid and pid in procs]
                    for pid in rng.sample(running, min(len(running), rng.choice((1, 1, 2)))):
                        try:
                            os.kill(pid, signal.SIGKILL)
                            killed_workers.add(pid)
                            fig.worker_kills += 1
                        except ProcessLookupError:
                            pass
                if rng.random() < 0.5:
                    sync_and_record()
                sample_rss()
        finally:
            load.stop.set()
            load.join(60)
        assert load.error is None, f"seed {seed}: the load thread failed: {load.error!r}"
        fig.sent_ok, fig.sent_refused = load.ok, load.refused

        # convergence: every child runs again, none of them an incarnation we killed (the node may not
        # have read the last kill's sentinel yet when the loop ends), and answers
        def converged():
            pids = tree.wait_running(timeout=60)
            return pids if not killed_workers & set(pids.values()) else None
        tree.wait_for(converged, timeout=60, what=f"every child restarted after its kill (seed {seed})")
        for path in COUNTERS + RELAYS:
            reply = tree.call("request", {"target": path, "payload": b"get" if path in COUNTERS else b"inc"},
                              timeout_s=30)
            assert reply is not None, f"seed {seed}: {path} did not answer after the chaos"
        sync_and_record()
        sample_rss()
        note_family()
        node = psutil.Process(tree.node_pid)

        down = cli("down", home=tree.home, timeout=120)
        assert down.returncode == 0, f"seed {seed}: down failed: {down.stderr}"
        left = wait_gone([node] + list(family.values()), timeout=10)
        assert left == [], f"seed {seed}: processes of the node still alive after down: {left}"

    log = (tree.home / "node.log").read_text()
    conn = connect(Home.at(tree.home).chain_db, readonly=True)
    try:
        problems = verify_store(conn)
        assert problems == [], f"seed {seed}: chains do not verify: {[str(p) for p in problems]}"
        cut = conn.execute("SELECT actor_id, from_seq, events, why FROM cut_records").fetchall()
        assert cut == [], f"seed {seed}: the writer cut torn tails: {cut}"
        lost: list[str] = []
        for actor, heads in fig.heads.items():
            stored = {e.seq: e for e in iter_chain(conn, actor)}
            fig.acknowledged += max(heads) + 1
            for seq, h in sorted(heads.items()):
                if seq not in stored:
                    lost.append(f"{actor} seq {seq}: gone")
                elif stored[seq].hash != h:
                    lost.append(f"{actor} seq {seq}: hash {h.hex()[:16]} acknowledged, "
                                f"{stored[seq].hash.hex()[:16]} stored (a fork)")
            seen: dict[tuple, int] = {}
            for e in stored.values():
                key = (e.incarnation, e.event_type, e.timestamp, e.data)
                assert key not in seen, (f"seed {seed}: {actor} stores one event twice, at seq {seen[key]} "
                                         f"and {e.seq} ({e.event_type})")
                seen[key] = e.seq
        fig.lost = len(lost)
        assert lost == [], f"seed {seed}: acknowledged events lost or forked: {lost[:10]}"
    finally:
        conn.close()
    verified = cli("verify", "--all", home=tree.home)
    assert verified.returncode == 0, f"seed {seed}: theater-otp verify --all: {verified.stdout}{verified.stderr}"
    assert "torn tail" not in log, f"seed {seed}: the log reports a torn tail"

    # the faults happened and the node saw each one
    assert fig.worker_kills > 0 and fig.writer_kills > 0, f"no chaos happened: {fig}"
    assert log.count("chain-writer exited (-9): starting a new one") == fig.writer_kills, \
        f"seed {seed}: the node did not restart the writer once per kill: {fig}"
    assert fig.sent_ok > 0 and fig.acknowledged > 0, f"no traffic: {fig}"
    bound = 2 * fig.rss_warm + 50 * MB
    assert fig.rss_max < bound, f"seed {seed}: node RSS grew to {fig.rss_max / MB:.1f} MB (bound " \
                                f"{bound / MB:.1f} MB): {fig}"
    print(f"chaos figures: {fig}")
    return fig


def test_chaos_short(tmp_path):
    """~10 s of kills under load: part of `make test` (the soak runs for minutes: `make soak`)."""
    run_chaos(tmp_path, duration_s=9)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_soak(tmp_path):
    """A few minutes of the same (`make soak`)."""
    run_chaos(tmp_path, duration_s=240)
