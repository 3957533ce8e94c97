"""What the chain costs a message: throughput between two actors with recording on vs off, same run.

    python bench/chain_cost.py [--messages 5000] [--rounds 2]

A relay actor forwards every message it gets (message-server-host.send) to a
counter. The bench pipelines MESSAGES `send` envelopes to the relay over the
control socket without waiting, then waits until the counter has counted them
all; messages/s = MESSAGES / elapsed. Each round boots one tree with the chain
on and one with THEATER_OTP_RECORD=0 (workers record nothing), alternating.
With the chain on, each message makes three events (relay: message.send and
host send; counter: message.send), written durably through the chain-writer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from theater_otp.client import ControlClient  # noqa: E402
from theater_otp.home import Home  # noqa: E402
from theater_otp.protocol import Envelope, decode, encode  # noqa: E402


def boot(folder: Path, env: dict[str, str]) -> Home:
    wat = REPO / "actors" / "wat"
    (folder / "counter.toml").write_text(f'name = "counter"\ncomponent = "{wat / "counter.wat"}"\ninitial_state = "0"\n')
    (folder / "relay.toml").write_text(f'name = "relay"\ncomponent = "{wat / "relay.wat"}"\ninitial_state = "counter"\n')
    (folder / "supervision.toml").write_text(
        '[supervisor]\nid = "root"\n[[supervisor.children]]\nid = "counter"\nmanifest = "counter.toml"\n'
        '[[supervisor.children]]\nid = "relay"\nmanifest = "relay.toml"\n')
    home = Home.at(folder / "home")
    env = dict(os.environ, **env)
    subprocess.run([sys.executable, "-m", "theater_otp.cli", "up", str(folder / "supervision.toml"), "--detach",
                    "--home", str(home.root)], check=True, capture_output=True, env=env)
    return home


def measure(home: Home, messages: int) -> float:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(home.control_endpoint)
    try:
        with ControlClient(home) as c:  # what the counter has counted before (0 in a fresh tree)
            counted = int(c.call("request", {"target": "counter", "payload": b"get"})["ok"])
        start = time.perf_counter()
        for i in range(messages):
            sock.send(encode(Envelope("send", "bench", "node", i + 1, {"target": "relay", "payload": b"inc"})))
        for _ in range(messages):  # the node acknowledges each send once it routed it
            decode(sock.recv())
        with ControlClient(home) as c:
            while int(c.call("request", {"target": "counter", "payload": b"get"})["ok"]) < counted + messages:
                time.sleep(0.005)
        return messages / (time.perf_counter() - start)
    finally:
        sock.close()
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for record in (True, False):
            folder = Path(tempfile.mkdtemp(prefix="theater-chain-cost-"))
            home = boot(folder, {"THEATER_OTP_RECORD": "1" if record else "0"})
            try:
                results[record].append(measure(home, args.messages))
            finally:
                subprocess.run([sys.executable, "-m", "theater_otp.cli", "down", "--home", str(home.root)],
                               capture_output=True)
    on, off = max(results[True]), max(results[False])
    print(f"# relay -> counter, {args.messages} messages, best of {args.rounds} rounds each")
    print(f"chain on : {on:9.0f} msg/s   (runs: {', '.join(f'{r:.0f}' for r in results[True])})")
    print(f"chain off: {off:9.0f} msg/s   (runs: {', '.join(f'{r:.0f}' for r in results[False])})")
    print(f"on / off : {on / off:9.2f}   (goal >= 0.70)")


if __name__ == "__main__":
    main()
