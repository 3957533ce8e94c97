"""HTTP served by an actor against the same server library answering directly, same run.

    python bench/http.py [--requests 2000] [--clients 4] [--rounds 3] [--python]

  baseline   aiohttp's low-level server (what the gateway uses) answering in its own process
  actor      a real tree: the node's HTTP gateway -> node -> worker -> actors/wat/httpecho.wat

For each: latency over one keep-alive connection (p50, p99), and requests/s with `--clients`
keep-alive connections in parallel. Then a kill -9 of the serving actor under load: every
response's status, and how long after the replacement's init (its chain timestamp) the first 200
came back.
"""

from __future__ import annotations

import os
import sys

# this file is named http.py: its own folder must not shadow the standard library's http package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import http.client  # noqa: E402
import multiprocessing  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import Tree  # noqa: E402

WAT = REPO / "actors" / "wat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _baseline_server(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        return web.Response(status=200, body=f"{request.method} {request.path}?{request.query_string}\n".encode() + body,
                            headers={"content-type": "text/plain"})

    async def main() -> None:
        server = web.Server(handler)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(main())


def wait_port(port: int) -> None:
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"nothing listens on {port}")


def latencies(port: int, n: int, path: str | None = None) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for i in range(n):
        t = time.perf_counter()
        conn.request("GET", path or f"/bench/{i}?x=1")
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 200, r.status
    conn.close()
    return out


def throughput(port: int, n: int, clients: int, path: str | None = None) -> float:
    per = n // clients

    def run() -> None:
        latencies(port, per, path)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per * clients / (time.perf_counter() - t)


def figures(port: int, n: int, clients: int, path: str | None = None) -> tuple[float, float, float]:
    latencies(port, 100, path)  # warm up
    lat = sorted(latencies(port, n, path))
    return (statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3, throughput(port, n, clients, path))


def kill_under_load(tree: Tree, port: int) -> dict:
    """kill -9 of the serving actor while two clients keep asking: every status, and how long after
    the replacement's init (its chain timestamp) the first request ended with 200."""
    done: list[tuple[int, int]] = []  # (end ns, status)
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while not stop.is_set():
            try:
                conn.request("GET", "/load")
                r = conn.getresponse()
                r.read()
                done.append((time.time_ns(), r.status))
            except (OSError, http.client.HTTPException):
                done.append((time.time_ns(), -1))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.close()

    threads = [threading.Thread(target=load) for _ in range(2)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    pid = tree.node("root/web")["pid"]
    killed_ns = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    tree.wait_for(lambda: (n := tree.node("root/web"))["pid"] not in (None, pid) and n["status"] == "running",
                  what="the replacement")
    time.sleep(0.5)
    stop.set()
    for th in threads:
        th.join(10)
    actor_id = tree.node("root/web")["actor_id"]
    ready_ns = [e for e in tree.events(actor_id, "actor.init") if e.incarnation == 2][0].timestamp
    statuses = [s for _, s in done]
    first_200 = min(t for t, s in done if s == 200 and t > ready_ns)
    return {"responses": len(statuses), "200": statuses.count(200), "503": statuses.count(503),
            "other": len([s for s in statuses if s not in (200, 503)]),
            "kill_to_ready_ms": round((ready_ns - killed_ns) / 1e6, 1),
            "ready_to_first_200_ms": round((first_200 - ready_ns) / 1e6, 1)}


def python_kv(n: int) -> tuple[float, float, float]:
    """The http-demo's kv (a Python actor) on a free port: built if needed (cached after)."""
    demo = REPO / "manifests" / "http-demo"
    subprocess.run([sys.executable, "-m", "theater_otp.cli", "build", str(demo / "supervision.toml")], check=True,
                   capture_output=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-http-kv-"))
    port = free_port()
    text = (demo / "kv.toml").read_text().replace("8088", str(port))
    text = text.replace('component = "build/kv.wasm"', f'component = "{demo / "build" / "kv.wasm"}"')
    text = text.replace('source = "../../actors/python"', f'source = "{REPO / "actors" / "python"}"')
    text = text.replace('wit = "../../wit"', f'wit = "{REPO / "wit"}"')
    (folder / "kv.toml").write_text(text)
    tree = Tree(folder, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "kv"
        manifest = "kv.toml"
    """)
    with tree:
        tree.wait_running(timeout=60)
        wait_port(port)
        return figures(port, n, 4, path="/kv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="baseline/actor alternations")
    parser.add_argument("--python", action="store_true", help="also the http-demo's kv, a Python actor (builds it)")
    parser.add_argument("--durability", choices=["disk", "process"], default="disk",
                        help="the actor tree's `up --durability` (what the chain-writer's ack promises)")
    parser.add_argument("--effects-not-held", action="store_true",
                        help="responses leave before their events are stored (THEATER_OTP_DURABLE_EFFECTS=0: "
                             "the behaviour before durable effects, for comparison only)")
    args = parser.parse_args()

    python_row = python_kv(args.requests // 2) if args.python else None

    base_port = free_port()
    ctx = multiprocessing.get_context("spawn")
    base = ctx.Process(target=_baseline_server, args=(base_port,), daemon=True)
    base.start()
    wait_port(base_port)

    folder = Path(tempfile.mkdtemp(prefix="bench-http-"))
    port = free_port()
    (folder / "web.toml").write_text(f'name = "web"\ncomponent = "{WAT / "httpecho.wat"}"\n\n'
                                     f'[[handler]]\ntype = "http-server"\nport = {port}\n')
    if args.effects_not_held:
        os.environ["THEATER_OTP_DURABLE_EFFECTS"] = "0"  # read by the node `up` starts
    tree = Tree(folder, """
        [supervisor]
        id = "root"
        intensity = 10
        period = 10
        [[supervisor.children]]
        id = "web"
        manifest = "web.toml"
    """, up_args=("--durability", args.durability))
    try:
        with tree:
            tree.wait_running()
            wait_port(port)
            rows = []
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                rows.append(("baseline", *figures(base_port, args.requests, args.clients)))
                rows.append(("actor", *figures(port, args.requests, args.clients)))
            print(f"# actor tree: --durability {args.durability}"
                  + (", effects not held (THEATER_OTP_DURABLE_EFFECTS=0)" if args.effects_not_held else ""))
            print(f"{'':<9} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9}   ({args.requests} requests, "
                  f"{args.clients} clients for req/s)")
            for name, p50, p99, rps in rows:
                print(f"{name:<9} {p50:>8.3f} {p99:>8.3f} {rps:>9,.0f}")
            b = [r for r in rows if r[0] == "baseline"]
            a = [r for r in rows if r[0] == "actor"]
            best_b = min(r[1] for r in b), max(r[3] for r in b)
            best_a = min(r[1] for r in a), max(r[3] for r in a)
            print(f"actor - baseline p50: {best_a[0] - best_b[0]:+.3f} ms (goal <= +1 ms); "
                  f"actor / baseline req/s: {best_a[1] / best_b[1]:.2f} best of each (goal >= 0.50)")
            per_round = sorted(ra[3] / rb[3] for rb, ra in zip(b, a))
            print("actor / baseline req/s per round (each next to its own baseline):",
                  ", ".join(f"{r:.2f}" for r in per_round), f"(median {statistics.median(per_round):.2f})")
            print("kill -9 under load:", kill_under_load(tree, port))
            if python_row is not None:
                p50, p99, rps = python_row
                print(f"python actor (manifests/http-demo kv, GET /kv over the store handler): p50 {p50:.3f} ms, "
                      f"p99 {p99:.3f} ms, {rps:,.0f} req/s")
    finally:
        base.kill()
        base.join()


if __name__ == "__main__":
    main()
