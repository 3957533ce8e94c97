"""NATS baselines for the cluster (docs/cluster.md): what raw nats-py costs, before any theater-otp layer.

    python bench/cluster.py [--requests 2000] [--messages 100000] [--size 64] [--json] [--url nats://...]

Starts its own nats-server with JetStream (theater_otp/cluster/devserver.py, a temporary store,
a free loopback port) unless --url names one, and a peer: this script again (`--peer URL`), a
separate process with its own nats-py connection, like another node's link would be.

  request/reply   REQUESTS nc.request() round trips, one at a time, to the peer's responder
                  (it answers with the request's own bytes): p50/p99/mean in ms, after 200 warm-up
  one-way         MESSAGES publishes of SIZE bytes from this process to the peer's subscription,
                  then a flush: msgs/s from the first publish until the peer reports (on a subject
                  we subscribe to) that it received all of them, so nothing still in a buffer counts

The figures are a dict (`raw_baselines`); `main` prints one row for them. Figures for the product's
own path (node -> link -> NATS -> link -> node) are meant to be added as rows beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nats  # noqa: E402

from theater_otp.cluster import devserver  # noqa: E402

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64, help="one-way payload bytes (requests carry the same)")
    parser.add_argument("--url", help="use this NATS server instead of starting one")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--peer", help=argparse.SUPPRESS)    # run as the peer process against this URL
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        asyncio.run(_peer(args.peer, args.prefix))
        return

    server = None
    url = args.url
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as store:  # the server's store, removed after
        if url is None:
            server = devserver.start(Path(store), port=_free_port())
            url = server.url
        try:
            rows = [raw_baselines(url, args.requests, args.messages, args.size)]
        finally:
            if server is not None:
                devserver.stop(server)
    if args.json:
        print(json.dumps({"url": url, "server": "started by the bench" if server else "given", "rows": rows},
                         indent=2))
        return
    print(f"# nats-server at {url}; {args.requests} requests (after {WARMUP} warm-up), "
          f"{args.messages} one-way messages of {args.size} B")
    print(f"{'':<14} {'request/reply':>22} {'one-way':>12} {'publish':>12}")
    print(f"{'':<14} {'p50 ms':>10} {'p99 ms':>11} {'msg/s':>12} {'msg/s':>12}")
    for row in rows:
        print(f"{row['what']:<14} {row['rtt_p50_ms']:>10.3f} {row['rtt_p99_ms']:>11.3f} "
              f"{row['oneway_msgs_per_s']:>12,.0f} {row['publish_msgs_per_s']:>12,.0f}")
    print("responder and subscriber: a separate process with its own connection; one-way msg/s counts "
          "until it received them all, publish msg/s until the publisher's flush")


if __name__ == "__main__":
    main()
