"""Stored -> printed latency of a followed chain: the push path against the old polling, same run.

    python bench/push.py [--requests 300] [--interval-ms 20] [--durability disk|process]

Boots a tree of one counter actor (`up --detach` in a temporary home) and sends it REQUESTS
requests, one every INTERVAL ms, while two followers of its chain run side by side:

  push   the code `events --follow` runs (chain/follow.py's Follower, fed by the chain-writer's
         events socket), in this process; each event is rendered by the CLI's own printer (into
         a buffer) before its time is taken
  poll   the old `events --follow`: read_events on chain.db every 200 ms, in a process of its own
         (so neither follower takes the other's CPU or GIL)

Latency of an event = the time it was rendered - its chain timestamp (taken by the worker when it
recorded the event; so it includes the worker's batch, the writer's group commit and its fsync,
which are the same for both paths). Goal (issue "Operator experience"): push p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
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

from theater_otp.chain.follow import Follower  # noqa: E402
from theater_otp.chain.store import connect, read_events  # noqa: E402
from theater_otp.cli import _print_event_labelled  # noqa: E402
from theater_otp.client import ControlClient  # noqa: E402
from theater_otp.home import Home  # noqa: E402

POLL_S = 0.2


def boot(folder: Path, durability: str) -> Home:
    wat = REPO / "actors" / "wat"
    (folder / "counter.toml").write_text(f'name = "counter"\ncomponent = "{wat / "counter.wat"}"\ninitial_state = "0"\n')
    (folder / "supervision.toml").write_text(
        '[supervisor]\nid = "root"\n[[supervisor.children]]\nid = "counter"\nmanifest = "counter.toml"\n')
    home = Home.at(folder / "home")
    subprocess.run([sys.executable, "-m", "theater_otp.cli", "up", str(folder / "supervision.toml"), "--detach",
                    "--durability", durability, "--home", str(home.root)], check=True, capture_output=True)
    return home


def rendered_at(e: object) -> int:
    """Render `e` as `events --follow --json` does (into a buffer); the time it was done, in ns."""
    with contextlib.redirect_stdout(io.StringIO()):
        _print_event_labelled(e, True, None)
    return time.time_ns()


def poll_path(root: str, actor_id: str, from_seq: int, until: Any, out: "multiprocessing.Queue[list[float]]") -> None:
    """The old `events --follow` loop: sleep 200 ms, read what is new, print it; until seq `until`."""
    home = Home.at(root)
    conn = connect(home.chain_db, readonly=True)
    lat: list[float] = []
    next_seq = from_seq
    while next_seq <= until.value:
        time.sleep(POLL_S)
        for e in read_events(conn, actor_id, since_seq=next_seq):
            lat.append((rendered_at(e) - e.timestamp) / 1e6)
            next_seq = e.seq + 1
    conn.close()
    out.put(lat)


def drive(home: Home, requests: int, interval_s: float) -> None:
    with ControlClient(home) as c:
        for _ in range(requests):
            c.call("request", {"target": "counter", "payload": b"inc"})
            time.sleep(interval_s)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=20)
    parser.add_argument("--durability", choices=("disk", "process"), default="disk")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-push-"))
    home = boot(folder, args.durability)
    try:
        with ControlClient(home) as c:
            c.call("request", {"target": "counter", "payload": b"get"})
            actor_id = c.call("resolve", {"target": "counter"})["actor_id"]
            c.call("sync")
        with Follower(home) as f:
            f.follow(actor_id)
            start = f.next_seq[actor_id]
            ctx = multiprocessing.get_context("spawn")
            until = ctx.Value("q", 2**62)  # the chain's head once the driver is done: both stop there
            queue: multiprocessing.Queue[list[float]] = ctx.Queue()
            poller = ctx.Process(target=poll_path, args=(str(home.root), actor_id, start, until, queue))
            poller.start()
            time.sleep(0.5)  # the poller's interpreter is up before the first event
            driver = threading.Thread(target=drive, args=(home, args.requests, args.interval_ms / 1000))
            driver.start()
            push: list[float] = []
            while f.next_seq[actor_id] <= until.value:
                got, _ = f.next_events(100 if driver.is_alive() else 10_000)
                push += [(rendered_at(e) - e.timestamp) / 1e6 for e in got]
                if not driver.is_alive() and until.value == 2**62:
                    with ControlClient(home) as c:
                        c.call("sync")
                    conn = f.db()
                    until.value = conn.execute("SELECT head_seq FROM actors WHERE actor_id = ?",
                                               (actor_id,)).fetchone()[0]
            poll = queue.get(timeout=60)
            poller.join(10)
    finally:
        subprocess.run([sys.executable, "-m", "theater_otp.cli", "down", "--home", str(home.root)],
                       capture_output=True)
    print(f"stored -> printed, {args.requests} requests to one counter, one every {args.interval_ms:g} ms, "
          f"durability {args.durability}")
    print(f"{'path':<44} {'events':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, lat in (("push: events.sock -> Follower (events -f)", push),
                      (f"poll: chain.db every {POLL_S * 1000:g} ms (old events -f)", poll)):
        print(f"{name:<44} {len(lat):>6} {statistics.median(lat):>8.2f} {pct(lat, 0.99):>8.2f} {max(lat):>8.2f}")


if __name__ == "__main__":
    main()
