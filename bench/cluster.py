"""The cluster (docs/cluster.md) against raw nats-py, one nats-server, same run.

    python bench/cluster.py [--rounds 3] [--requests 2000] [--messages 100000] [--size 64]
                            [--product-requests 300] [--burst 2000] [--deaths 3] [--json] [--keep]

Starts its own nats-server with JetStream (theater_otp/cluster/devserver.py, a temporary store,
a free loopback port) unless --url names one. Rounds alternate: raw baseline, product with
`up --durability disk`, product with `--durability process`, raw baseline, ...

Raw nats-py (`raw_baselines`), against a peer: this script again (`--peer URL`), a separate
process with its own nats-py connection, like another node's link would be.

  request/reply   REQUESTS nc.request() round trips, one at a time, to the peer's responder
                  (it answers with the request's own bytes): p50/p99/mean in ms, after 200 warm-up
  one-way         MESSAGES publishes of SIZE bytes from this process to the peer's subscription,
                  then a flush: msgs/s from the first publish until the peer reports (on a subject
                  we subscribe to) that it received all of them, so nothing still in a buffer counts

The product (`product_round`): two nodes booted for the round (tests/harness.py's Tree, `up
--detach --cluster URL --node-name n1|n2`). n2 runs echo.wat as r2/e2; n1 runs relay.wat as
r1/relay (its state: "r2/e2", so its request and send go to n2), relay.wat as r1/relay-local
(state "r1/e1") and echo.wat as r1/e1. The bench speaks to n1's control socket in-process.

  request RTT     PRODUCT_REQUESTS rounds of three control `request`s, interleaved, after 100
                  warm-up each: to r1/relay (relay -> e2 on n2: the cross-node actor -> actor
                  request inside it), to r1/relay-local (the same relay, its echo on n1: the
                  same-node figure) and to r2/e2 straight from n1's control socket (no actor on
                  n1). Every reply is checked to be the request's bytes (the relay turns an error
                  into its reply text). The cross-node cost is cross - same-node.
  one-way         BURST sends of SIZE bytes pipelined on one DEALER to n1's control socket for
                  r1/relay (each forwarded with message-server send to e2 on n2), every ack read,
                  timed until e2's chain in n2's chain.db holds all of them (a message.send from
                  the relay carrying this burst's tag: read incrementally, as Tree.events reads);
                  the same to r1/relay-local -> r1/e1 for the same-node rate.

Node death (`node_death`, after the rounds, `--durability disk`): n2 and n3 run an echo each, n1 a
supervisor r1 (intensity 20 in 5 s) with a `node = "any"` counter child r1/roam. Each round reads
where roam runs in n1's tree, SIGKILLs that node's node process (its link, writer and workers die
with it), and times from the kill to (a) n1's supervisor chain: child_restarting for roam
(`noconnection`: the node was declared down) and child_started for roam (running on the other
node), by the events' own timestamps, and (b) n1's `tree` showing roam running on the other node,
polled every 20 ms. The killed node is then started again in its own home with the same
--node-name, and the next round waits until n1 lists it among live_nodes.

`--json` prints every figure; the text output is a table of medians and ranges over the rounds.
Timings on a shared 2-core machine are noisy: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # harness.Tree: a real node in a private home

import nats  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402

from harness import WAT, Tree, walk  # noqa: E402
from theater_otp.chain.store import connect, read_events  # noqa: E402
from theater_otp.client import ControlClient  # noqa: E402
from theater_otp.cluster import devserver  # noqa: E402
from theater_otp.home import Home  # noqa: E402
from theater_otp.protocol import Envelope, decode, encode  # noqa: E402

WARMUP = 200


def ms(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1e3


# ---- the peer: a separate process ---------------------------------------------------------------

async def _peer(url: str, prefix: str) -> None:
    """Answer `<prefix>.echo` requests with their own bytes; count `<prefix>.oneway` messages and,
    once a `<prefix>.expect N` request set N and N arrived, publish N on `<prefix>.done`. Runs
    until stdin closes (the bench that started it ended)."""
    nc = await nats.connect(url, connect_timeout=5)
    state = {"expect": -1, "got": 0}

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    async def expect(msg: Any) -> None:
        state["expect"], state["got"] = int(msg.data), 0
        await msg.respond(b"ok")

    async def oneway(_msg: Any) -> None:
        state["got"] += 1
        if state["got"] == state["expect"]:
            await nc.publish(f"{prefix}.done", str(state["got"]).encode())
            await nc.flush()

    await nc.subscribe(f"{prefix}.echo", cb=echo)
    await nc.subscribe(f"{prefix}.expect", cb=expect)
    # a large pending limit: the count must see every message, never a slow-consumer drop
    await nc.subscribe(f"{prefix}.oneway", cb=oneway, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await nc.flush()  # the subscriptions are at the server before we say ready
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(closed.set)), daemon=True).start()
    await closed.wait()
    await nc.close()


def _start_peer(url: str, prefix: str) -> subprocess.Popen[str]:
    peer = subprocess.Popen([sys.executable, __file__, "--peer", url, "--prefix", prefix],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    line = peer.stdout.readline()
    if line.strip() != "ready":
        peer.kill()
        peer.wait()
        raise RuntimeError(f"the peer did not start (it said {line!r})")
    return peer


def _stop_peer(peer: subprocess.Popen[str]) -> None:
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.close()
    try:
        peer.wait(10)
    except subprocess.TimeoutExpired:
        peer.kill()
        peer.wait()
    peer.stdout.close()


# ---- the measurements ---------------------------------------------------------------------------

async def _measure(url: str, prefix: str, n: int, messages: int, size: int) -> dict[str, Any]:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        payload = secrets.token_bytes(size)
        for _ in range(WARMUP):
            await nc.request(f"{prefix}.echo", payload, timeout=5)
        rtts = []
        for _ in range(n):
            t = time.perf_counter()
            reply = await nc.request(f"{prefix}.echo", payload, timeout=5)
            rtts.append(time.perf_counter() - t)
            assert reply.data == payload
        rtts.sort()

        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_done(msg: Any) -> None:
            if not done.done():
                done.set_result(msg.data)

        await nc.subscribe(f"{prefix}.done", cb=on_done)
        await nc.request(f"{prefix}.expect", str(messages).encode(), timeout=5)
        subject = f"{prefix}.oneway"
        t0 = time.perf_counter()
        for _ in range(messages):
            await nc.publish(subject, payload)
        await nc.flush(timeout=60)
        t_flushed = time.perf_counter()
        got = int(await asyncio.wait_for(done, 120))
        t1 = time.perf_counter()
        assert got == messages
    finally:
        await nc.close()
    return {
        "requests": n,
        "rtt_p50_ms": ms(rtts, 0.5),
        "rtt_p99_ms": ms(rtts, 0.99),
        "rtt_mean_ms": sum(rtts) / len(rtts) * 1e3,
        "oneway_messages": messages,
        "oneway_bytes": size,
        "oneway_msgs_per_s": messages / (t1 - t0),
        "publish_msgs_per_s": messages / (t_flushed - t0),
    }


def raw_baselines(url: str, n: int, messages: int = 100_000, size: int = 64) -> dict[str, Any]:
    """Raw nats-py figures against the server at `url`: `n` request/reply round trips to a
    responder in a separate process (p50/p99/mean ms) and `messages` one-way publishes of `size`
    bytes to a subscriber in that process (msgs/s until it received them all; publish_msgs_per_s
    is the publisher's own rate, up to the flush)."""
    prefix = f"bench.{secrets.token_hex(4)}"
    peer = _start_peer(url, prefix)
    try:
        figures = asyncio.run(_measure(url, prefix, n, messages, size))
    finally:
        _stop_peer(peer)
    return {"what": "raw nats-py", "responder": "separate process, own connection", **figures}


# ---- the product: nodes joined over the same server ---------------------------------------------

#: control requests to each target before the timed ones, per round
PRODUCT_WARMUP = 100
DURABILITIES = ("disk", "process")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manifests(folder: Path) -> dict[str, Path]:
    """The manifests every node of the run uses, written once in `folder`."""
    out = {}
    for name, wat, state in (("echo", "echo.wat", None), ("echo-local", "echo.wat", None),
                             ("relay", "relay.wat", "r2/e2"), ("relay-local", "relay.wat", "r1/e1"),
                             ("counter", "counter.wat", "0")):
        lines = [f'name = "{name}"', f'component = "{WAT / wat}"']
        if state is not None:
            lines.append(f'initial_state = "{state}"')
        out[name] = folder / f"{name}.toml"
        out[name].write_text("\n".join(lines) + "\n")
    return out


def _supervision(root: str, children: list[tuple[str, Path, str | None]], intensity: int = 1) -> str:
    """A one_for_one supervisor `root` with (id, manifest, node or None) children."""
    lines = ["[supervisor]", f'id = "{root}"', 'strategy = "one_for_one"', f"intensity = {intensity}", "period = 5"]
    for child, manifest, node in children:
        lines += ["", "[[supervisor.children]]", f'id = "{child}"', f'manifest = "{manifest}"']
        if node is not None:
            lines.append(f'node = "{node}"')
    return "\n".join(lines) + "\n"


class Cluster:
    """Nodes booted in `folder` (a home each: folder/<name>/home), joined to the server at `url`."""

    def __init__(self, folder: Path, url: str):
        self.folder = folder
        self.url = url
        self.trees: dict[str, Tree] = {}
        self._specs: dict[str, tuple[str, str]] = {}

    def up(self, name: str, supervision: str, durability: str = "disk") -> Tree:
        where = self.folder / name
        where.mkdir(parents=True, exist_ok=True)
        tree = Tree(where, supervision, up_args=("--cluster", self.url, "--node-name", name,
                                                 "--durability", durability))
        tree.__enter__()
        self.trees[name] = tree
        self._specs[name] = (supervision, durability)
        return tree

    def restart(self, name: str) -> Tree:
        """Start `name` again in its own home, with its supervision, durability and --node-name."""
        supervision, durability = self._specs[name]
        return self.up(name, supervision, durability)

    def kill(self, name: str) -> tuple[int, list[psutil.Process]]:
        """SIGKILL `name`'s node process: (the time of the kill in ns, its processes just before)."""
        tree = self.trees[name]
        assert tree.node_pid is not None
        procs = tree.processes()
        killed_ns = time.time_ns()
        os.kill(tree.node_pid, signal.SIGKILL)
        tree.node_pid = None  # its close() is a no-op now: what outlives it is the caller's
        return killed_ns, procs

    def close(self) -> None:
        for tree in reversed(list(self.trees.values())):  # n1 (the owner of hosted children) first
            tree.close()


def _live(tree: Tree) -> set[str]:
    cluster = tree.tree().get("cluster") or {}
    return set(cluster.get("live_nodes", ())) - set(cluster.get("down_nodes", ()))


def _wait_live(tree: Tree, names: set[str], timeout: float = 20) -> float:
    """Wait until `tree`'s node lists every one of `names` as live; the seconds it took."""
    t = time.perf_counter()
    tree.wait_for(lambda: names <= _live(tree), timeout, f"{sorted(names)} live")
    return time.perf_counter() - t


def _ask(client: ControlClient, target: str, payload: bytes) -> None:
    reply = client.call("request", {"target": target, "payload": payload})
    got = reply.get("ok") if isinstance(reply, dict) else None
    if got != payload:  # relay.wat answers an error of its own request with the error's text
        raise RuntimeError(f"request to {target} answered {reply!r:.300}")


def _answers(client: ControlClient, target: str, payload: bytes) -> bool:
    try:
        _ask(client, target, payload)
        return True
    except Exception:
        return False


def _rtts(client: ControlClient, targets: dict[str, str], n: int, payload: bytes) -> dict[str, list[float]]:
    """`n` rounds of one request to each target in turn (interleaved: the same noise for each),
    after PRODUCT_WARMUP each; sorted seconds per label."""
    for target in targets.values():
        for _ in range(PRODUCT_WARMUP):
            _ask(client, target, payload)
    out: dict[str, list[float]] = {label: [] for label in targets}
    for _ in range(n):
        for label, target in targets.items():
            t = time.perf_counter()
            _ask(client, target, payload)
            out[label].append(time.perf_counter() - t)
    return {label: sorted(values) for label, values in out.items()}


def _oneway(sender: Home, target: str, receiver: Home, receiver_id: str, relay_id: str,
            burst: int, size: int) -> dict[str, Any]:
    """`burst` sends pipelined to `target` on `sender`'s control socket, timed until the chain of
    `receiver_id` in `receiver`'s chain.db holds all of them (message.send from `relay_id`)."""
    tag = secrets.token_hex(4).encode()
    payloads = [(tag + b"%08d" % i).ljust(size, b".") for i in range(burst)]
    with ControlClient(receiver) as c:
        c.call("sync")  # what the chain holds before, durable: the scan starts after it
    conn = connect(receiver.chain_db, readonly=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(sender.control_endpoint)
    try:
        row = conn.execute("SELECT head_seq FROM actors WHERE actor_id=?", (receiver_id,)).fetchone()
        since = (row[0] if row else -1) + 1
        seen: list[int] = []
        t0 = time.perf_counter()
        for i, payload in enumerate(payloads):
            sock.send(encode(Envelope("send", "bench", "node", i + 1, {"target": target, "payload": payload})))
        for _ in range(burst):  # the node acknowledges each send once it routed it
            ack = decode(sock.recv())
            if ack.kind == "error":
                raise RuntimeError(f"send to {target} refused: {ack.body!r:.300}")
        t_acked = time.perf_counter()
        deadline = t0 + 120
        while len(seen) < burst:
            for e in read_events(conn, receiver_id, "message.send", since_seq=since):
                since = e.seq + 1
                p = e.payload()
                if isinstance(p, dict) and p.get("from") == relay_id:
                    data = bytes(p["params"][0])
                    if data.startswith(tag):
                        seen.append(int(data[len(tag):len(tag) + 8]))
            if len(seen) >= burst:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{receiver_id}'s chain holds {len(seen)} of {burst} after 120 s")
            time.sleep(0.005)
        t1 = time.perf_counter()
    finally:
        sock.close()
        ctx.term()
        conn.close()
    return {"messages": burst, "msgs_per_s": burst / (t1 - t0), "acked_msgs_per_s": burst / (t_acked - t0),
            "in_order": seen == list(range(burst))}


def product_round(folder: Path, url: str, manifests: dict[str, Path], durability: str, requests: int,
                  burst: int, size: int) -> dict[str, Any]:
    """Boot n2 and n1 with `--durability durability`, measure request RTTs and one-way rates
    through n1's control socket (module docstring), shut both down."""
    cluster = Cluster(folder, url)
    try:
        n2 = cluster.up("n2", _supervision("r2", [("e2", manifests["echo"], None)]), durability)
        n1 = cluster.up("n1", _supervision("r1", [("e1", manifests["echo-local"], None),
                                                  ("relay", manifests["relay"], None),
                                                  ("relay-local", manifests["relay-local"], None)]), durability)
        n1.wait_running()
        _wait_live(n1, {"n2"})
        payload = secrets.token_bytes(size)
        targets = {"cross": "r1/relay", "local": "r1/relay-local", "direct": "r2/e2"}
        with ControlClient(Home.at(n1.home)) as client:  # relay's target comes through the names mirror
            n1.wait_for(lambda: _answers(client, targets["cross"], payload), 20, "r1/relay -> r2/e2 answering")
            rtt = _rtts(client, targets, requests, payload)
        ids = {path: n1.node(path)["actor_id"] for path in ("r1/relay", "r1/relay-local", "r1/e1")}
        e2 = n2.node("r2/e2")["actor_id"]
        h1, h2 = Home.at(n1.home), Home.at(n2.home)
        cross = _oneway(h1, "r1/relay", h2, e2, ids["r1/relay"], burst, size)
        local = _oneway(h1, "r1/relay-local", h1, ids["r1/e1"], ids["r1/relay-local"], burst, size)
        refused = sum(n.get("refused", 0) for t in (n1, n2) for n in walk(t.tree()) if n["kind"] == "actor")
    finally:
        cluster.close()
    row: dict[str, Any] = {"what": "product", "durability": durability, "requests": requests}
    for label, values in rtt.items():
        row[f"{label}_p50_ms"], row[f"{label}_p99_ms"] = ms(values, 0.5), ms(values, 0.99)
        row[f"{label}_mean_ms"] = sum(values) / len(values) * 1e3
    row["cross_minus_local_p50_ms"] = row["cross_p50_ms"] - row["local_p50_ms"]
    row["oneway_cross"], row["oneway_local"] = cross, local
    row["refused"] = refused
    return row


# ---- node death ---------------------------------------------------------------------------------

def _roam(tree: Tree) -> dict[str, Any]:
    return tree.node("r1/roam")


def node_death(folder: Path, url: str, manifests: dict[str, Path], rounds: int) -> dict[str, Any]:
    """n1's `node = "any"` child r1/roam: SIGKILL the node that runs it, `rounds` times (module
    docstring); every round's timings, and what was noticed on the way."""
    cluster = Cluster(folder, url)
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for name in ("n2", "n3"):
            cluster.up(name, _supervision(f"r{name[1]}", [(f"e{name[1]}", manifests["echo"], None)]))
        n1 = cluster.up("n1", _supervision("r1", [("roam", manifests["counter"], "any")], intensity=20))
        n1.wait_running(20)
        _wait_live(n1, {"n2", "n3"})
        first = _roam(n1)
        if first["node"] == "n1":
            # placed while n1 had heard no other node yet: placed again, now that it has
            notes.append(f"r1/roam was placed on n1 at boot (n1 heard no other node yet; live now: "
                         f"{sorted(_live(n1))}); terminate_child + restart_child placed it again")
            n1.call("terminate_child", {"supervisor": "r1", "id": "roam"})
            n1.call("restart_child", {"supervisor": "r1", "id": "roam"})
        for r in range(rounds):
            _wait_live(n1, {"n2", "n3"}, 30)
            before = n1.wait_for(lambda: (c := _roam(n1))["status"] == "running" and c["pid"] and
                                 c["node"] in ("n2", "n3") and c, 30, "r1/roam running on n2 or n3")
            victim = before["node"]
            survivor = "n3" if victim == "n2" else "n2"
            killed_ns, procs = cluster.kill(victim)
            t_kill = time.perf_counter()
            after = n1.wait_for(lambda: (c := _roam(n1))["status"] == "running" and c["node"] == survivor
                                and c["pid"] != before["pid"] and c, 30, f"r1/roam running on {survivor}")
            seen_s = time.perf_counter() - t_kill
            deadline = time.monotonic() + 10  # its link, writer and workers die with it (PDEATHSIG)
            while (alive := [p for p in procs if _running(p)]) and time.monotonic() < deadline:
                time.sleep(0.02)
            for p in alive:
                notes.append(f"round {r}: {victim}'s pid {p.pid} ({' '.join(p.cmdline())[:120]}) outlived its "
                             f"node by 10 s: killed")
                p.kill()
            events = [(e.event_type, e.timestamp, e.payload()) for e in n1.events("supervisor:r1")
                      if e.timestamp >= killed_ns]
            mine = [(t, ts, p) for t, ts, p in events if isinstance(p, dict) and p.get("child") == "roam"]
            restarting = next((ts for t, ts, _ in mine if t == "supervisor.child_restarting"), None)
            started = next((ts for t, ts, _ in mine if t == "supervisor.child_started"), None)
            reasons = sorted({_reason(p["reason"]) for _, _, p in mine if p.get("reason") is not None})
            t_restart = time.perf_counter()
            cluster.restart(victim)  # `up --detach` in its home again, then n1 must hear it
            _wait_live(n1, {victim}, 30)
            rejoin_s = time.perf_counter() - t_restart
            out.append({"round": r, "killed": victim, "moved_to": after["node"], "restart_to_live_s": rejoin_s,
                        "kill_to_restarting_s": None if restarting is None else (restarting - killed_ns) / 1e9,
                        "kill_to_started_s": None if started is None else (started - killed_ns) / 1e9,
                        "kill_to_seen_running_s": seen_s, "reasons": reasons,
                        "events": [t for t, _, _ in mine]})
    finally:
        cluster.close()
    return {"rounds": out, "notes": notes}


def _reason(reason: Any) -> str:
    if isinstance(reason, dict):
        return f"{reason.get('kind')}" + (f": {reason['detail']}" if reason.get("detail") else "")
    return str(reason)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- figures ------------------------------------------------------------------------------------

def _spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def summarize(rows: list[dict[str, Any]], death: dict[str, Any] | None) -> dict[str, Any]:
    """Medians and ranges over the rounds, and each goal's verdict on the medians."""
    raw = [r for r in rows if r["what"] == "raw nats-py"]
    out: dict[str, Any] = {"raw": {k: _spread([r[k] for r in raw]) for k in
                                   ("rtt_p50_ms", "rtt_p99_ms", "oneway_msgs_per_s", "publish_msgs_per_s")}}
    by_round = {r["round"]: r for r in raw}
    for d in DURABILITIES:
        mine = [r for r in rows if r["what"] == "product" and r["durability"] == d]
        if not mine:
            continue
        s: dict[str, Any] = {k: _spread([r[k] for r in mine]) for k in
                             ("cross_p50_ms", "cross_p99_ms", "local_p50_ms", "local_p99_ms", "direct_p50_ms",
                              "direct_p99_ms", "cross_minus_local_p50_ms")}
        s["oneway_cross_msgs_per_s"] = _spread([r["oneway_cross"]["msgs_per_s"] for r in mine])
        s["oneway_local_msgs_per_s"] = _spread([r["oneway_local"]["msgs_per_s"] for r in mine])
        # each round's product against the raw baseline measured just before it
        s["rtt_ratio_to_raw_p50"] = _spread([r["cross_p50_ms"] / by_round[r["round"]]["rtt_p50_ms"] for r in mine])
        s["cross_minus_local_ratio_to_raw_p50"] = _spread([r["cross_minus_local_p50_ms"] /
                                                          by_round[r["round"]]["rtt_p50_ms"] for r in mine])
        s["oneway_ratio_to_raw"] = _spread([r["oneway_cross"]["msgs_per_s"] / by_round[r["round"]]["oneway_msgs_per_s"]
                                            for r in mine])
        s["goal_rtt_le_2x_raw"] = s["rtt_ratio_to_raw_p50"]["median"] <= 2.0
        s["goal_oneway_ge_half_raw"] = s["oneway_ratio_to_raw"]["median"] >= 0.5
        s["all_in_order"] = all(r["oneway_cross"]["in_order"] and r["oneway_local"]["in_order"] for r in mine)
        s["refused"] = sum(r["refused"] for r in mine)
        out[d] = s
    if death and death["rounds"]:
        started = [r["kill_to_started_s"] for r in death["rounds"] if r["kill_to_started_s"] is not None]
        out["node_death"] = {
            "kill_to_restarting_s": _spread([r["kill_to_restarting_s"] for r in death["rounds"]
                                             if r["kill_to_restarting_s"] is not None]),
            "kill_to_started_s": _spread(started),
            "kill_to_seen_running_s": _spread([r["kill_to_seen_running_s"] for r in death["rounds"]]),
            "restart_to_live_s": _spread([r["restart_to_live_s"] for r in death["rounds"]]),
            "goal_le_2s_every_round": bool(started) and len(started) == len(death["rounds"]) and max(started) <= 2.0,
        }
    return out


def _range(s: dict[str, Any] | None, fmt: str) -> str:
    if s is None:
        return "-"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def report(args: argparse.Namespace, url: str, rows: list[dict[str, Any]], death: dict[str, Any] | None,
           summary: dict[str, Any]) -> None:
    raw = summary["raw"]
    modes = " / ".join(["raw nats-py", *(f"product --durability {d}" for d in args.durability)])
    print(f"# nats-server at {url}; {args.rounds} rounds alternating {modes}; medians (min–max over the rounds)")
    print(f"# raw: {args.requests} requests after {WARMUP} warm-up, {args.messages} one-way of {args.size} B; "
          f"product: {args.product_requests} requests per target after {PRODUCT_WARMUP}, bursts of {args.burst}")
    print(f"{'':<40} {'p50 ms':>24} {'p99 ms':>24}")
    print(f"{'raw nats-py request/reply':<40} {_range(raw['rtt_p50_ms'], '.3f'):>24} "
          f"{_range(raw['rtt_p99_ms'], '.3f'):>24}")
    labels = (("cross", "control -> n1 relay -> n2 echo"), ("local", "control -> n1 relay -> n1 echo"),
              ("direct", "control -> n2 echo (no actor on n1)"))
    for d in args.durability:
        if d not in summary:
            continue
        s = summary[d]
        for key, label in labels:
            print(f"{d + ': ' + label:<40} {_range(s[key + '_p50_ms'], '.3f'):>24} "
                  f"{_range(s[key + '_p99_ms'], '.3f'):>24}")
        print(f"{d + ': cross - local (p50)':<40} {_range(s['cross_minus_local_p50_ms'], '.3f'):>24}")
    print()
    print(f"{'one-way':<40} {'msg/s':>24}")
    print(f"{'raw nats-py publish -> subscribe':<40} {_range(raw['oneway_msgs_per_s'], ',.0f'):>24}")
    for d in args.durability:
        if d in summary:
            s = summary[d]
            print(f"{d + ': n1 relay -> n2 echo (in chain)':<40} {_range(s['oneway_cross_msgs_per_s'], ',.0f'):>24}")
            print(f"{d + ': n1 relay -> n1 echo (in chain)':<40} {_range(s['oneway_local_msgs_per_s'], ',.0f'):>24}")
    print()
    for d in args.durability:
        if d in summary:
            s = summary[d]
            print(f"{d}: cross-node RTT p50 / raw p50 = {_range(s['rtt_ratio_to_raw_p50'], '.1f')}x (goal <= 2x: "
                  f"{'met' if s['goal_rtt_le_2x_raw'] else 'not met'}); (cross - local) / raw = "
                  f"{_range(s['cross_minus_local_ratio_to_raw_p50'], '.1f')}x; one-way / raw = "
                  f"{_range(s['oneway_ratio_to_raw'], '.1%')} (goal >= 50%: "
                  f"{'met' if s['goal_oneway_ge_half_raw'] else 'not met'}); in order: {s['all_in_order']}; "
                  f"refused: {s['refused']}")
    if death is not None and "node_death" in summary:
        nd = summary["node_death"]
        print()
        print(f"node death, {len(death['rounds'])} rounds: kill -> child_restarting "
              f"{_range(nd['kill_to_restarting_s'], '.2f')} s, kill -> child_started "
              f"{_range(nd['kill_to_started_s'], '.2f')} s (chain), kill -> seen running in n1's tree "
              f"{_range(nd['kill_to_seen_running_s'], '.2f')} s (goal <= 2 s every round: "
              f"{'met' if nd['goal_le_2s_every_round'] else 'not met'})")
        for r in death["rounds"]:
            print(f"  round {r['round']}: killed {r['killed']}, roam -> {r['moved_to']}: restarting "
                  f"{_secs(r['kill_to_restarting_s'])}, started {_secs(r['kill_to_started_s'])}, seen "
                  f"{_secs(r['kill_to_seen_running_s'])}; {', '.join(r['reasons'])}; killed node back and "
                  f"live at n1 after {_secs(r['restart_to_live_s'])}")
    for note in (death or {}).get("notes", ()):
        print(f"note: {note}")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of raw and product (default 3)")
    parser.add_argument("--requests", type=int, default=2000, help="raw nats-py request/reply round trips")
    parser.add_argument("--messages", type=int, default=100_000, help="raw nats-py one-way messages")
    parser.add_argument("--size", type=int, default=64, help="one-way payload bytes (requests carry the same)")
    parser.add_argument("--product-requests", type=int, default=300, help="timed requests per product target")
    parser.add_argument("--burst", type=int, default=2000, help="product one-way sends per burst")
    parser.add_argument("--durability", default="disk,process",
                        type=lambda v: [d for d in v.split(",") if d],
                        help="comma-separated `up --durability` values for the product rows (default disk,process)")
    parser.add_argument("--deaths", type=int, default=3, help="node death rounds (0: none)")
    parser.add_argument("--raw-only", action="store_true", help="only the raw nats-py rows")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' homes (node.log, chain.db) after")
    parser.add_argument("--url", help="use this NATS server instead of starting one")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--peer", help=argparse.SUPPRESS)    # run as the peer process against this URL
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        asyncio.run(_peer(args.peer, args.prefix))
        return
    for d in args.durability:
        if d not in DURABILITIES:
            parser.error(f"--durability {d!r}: expected one of {', '.join(DURABILITIES)}")
    if args.raw_only:
        args.durability, args.deaths = [], 0

    server = None
    url = args.url
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    rows: list[dict[str, Any]] = []
    death = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-nats-") as store:  # the server's store, removed after
            if url is None:
                server = devserver.start(Path(store), port=_free_port())
                url = server.url
            try:
                manifests = _manifests(work)
                for r in range(args.rounds):
                    _progress(args, f"round {r}: raw nats-py")
                    rows.append({**raw_baselines(url, args.requests, args.messages, args.size), "round": r})
                    for d in args.durability:
                        _progress(args, f"round {r}: product, --durability {d}")
                        rows.append({**product_round(work / f"round{r}-{d}", url, manifests, d,
                                                     args.product_requests, args.burst, args.size), "round": r})
                if args.deaths:
                    _progress(args, f"node death: {args.deaths} rounds")
                    death = node_death(work / "death", url, manifests, args.deaths)
            finally:
                if server is not None:
                    devserver.stop(server)
    finally:
        if args.keep:
            print(f"# homes kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(rows, death)
    if args.json:
        print(json.dumps({"url": url, "server": "started by the bench" if server else "given",
                          "rounds": args.rounds, "rows": rows, "node_death": death, "summary": summary}, indent=2))
        return
    report(args, url, rows, death, summary)


def _progress(args: argparse.Namespace, what: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
