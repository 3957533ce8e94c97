"""The message path with durable effects on and off, same run: what waiting for the chain costs.

    python bench/messaging.py [--requests 500] [--messages 3000] [--rounds 2]

Each round boots two trees alternately, one as shipped (every reply and send waits for the
chain-writer's acknowledgement of its events, docs/durable-effects.md) and one with
THEATER_OTP_DURABLE_EFFECTS=0 (effects leave at once, as before). Each tree: a counter and a relay
whose request handler makes a request to the counter (actors/wat/relay.wat), booted and driven one-way
as bench/chain_cost.py does.

  request -> counter          the control socket -> node -> counter -> reply: RTT p50/p99
  request -> relay -> counter  the same through the relay: the relay's request to the counter is an
                              actor -> actor request inside it; its cost is the difference
  relay -> counter, one-way   MESSAGES sends pipelined to the relay, each forwarded with
                              message-server send: messages/s until the counter has them all

Baseline in the same process: a raw pyzmq DEALER -> ROUTER round trip over ipc.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chain_cost import boot, measure  # noqa: E402  (bench/ is this script's folder: the same tree and one-way run)

from theater_otp.client import ControlClient  # noqa: E402


def rtts(client: ControlClient, target: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.call("request", {"target": target, "payload": b"inc"})
        out.append(time.perf_counter() - t)
    return sorted(out)


def raw_zmq_rtt(n: int) -> list[float]:
    ctx = zmq.Context()
    folder = tempfile.mkdtemp(prefix="bench-zmq-")
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{folder}/r.sock")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"ipc://{folder}/r.sock")
    out = []
    try:
        import threading

        def echo() -> None:
            for _ in range(n + 50):
                router.send_multipart(router.recv_multipart())

        th = threading.Thread(target=echo)
        th.start()
        for i in range(n + 50):
            t = time.perf_counter()
            dealer.send(b"x" * 40)
            dealer.recv()
            if i >= 50:
                out.append(time.perf_counter() - t)
        th.join()
    finally:
        router.close(0)
        dealer.close(0)
        ctx.term()
    return sorted(out)


def ms(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows: dict[bool, list[tuple[float, float, float, float, float]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for durable in (True, False):
            folder = Path(tempfile.mkdtemp(prefix="bench-messaging-"))
            home = boot(folder, {"THEATER_OTP_DURABLE_EFFECTS": "1" if durable else "0"})
            try:
                with ControlClient(home) as c:
                    rtts(c, "relay", 50)  # warm up
                    direct = rtts(c, "counter", args.requests)
                    via = rtts(c, "relay", args.requests)
                    rate = measure(home, args.messages)
                rows[durable].append((ms(direct, 0.5), ms(direct, 0.99), ms(via, 0.5), ms(via, 0.99), rate))
            finally:
                subprocess.run([sys.executable, "-m", "theater_otp.cli", "down", "--home", str(home.root)],
                               capture_output=True)
    raw = raw_zmq_rtt(args.requests * 4)
    print(f"# {args.rounds} rounds, alternating; {args.requests} requests each, {args.messages} one-way messages")
    print(f"{'':<22} {'control->counter':>20} {'control->relay->counter':>26} {'actor->actor':>13} {'one-way':>10}")
    print(f"{'':<22} {'p50 ms':>9} {'p99 ms':>10} {'p50 ms':>12} {'p99 ms':>13} {'p50 ms':>13} {'msg/s':>10}")
    for durable in (True, False):
        for d50, d99, v50, v99, rate in rows[durable]:
            name = "durable effects" if durable else "effects not held"
            print(f"{name:<22} {d50:>9.3f} {d99:>10.3f} {v50:>12.3f} {v99:>13.3f} {v50 - d50:>13.3f} {rate:>10,.0f}")
    med = {d: [statistics.median(r[i] for r in rows[d]) for i in range(5)] for d in rows}
    print(f"median: request RTT {med[False][0]:.3f} -> {med[True][0]:.3f} ms; actor->actor "
          f"{med[False][2] - med[False][0]:.3f} -> {med[True][2] - med[True][0]:.3f} ms; one-way "
          f"{med[False][4]:,.0f} -> {med[True][4]:,.0f} msg/s (not held -> durable)")
    print(f"raw pyzmq DEALER->ROUTER round trip on ipc: p50 {ms(raw, 0.5):.3f} ms, p99 {ms(raw, 0.99):.3f} ms")


if __name__ == "__main__":
    main()
