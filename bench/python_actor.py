"""A Python actor (componentize-py) against a WAT actor: build, compile, restart, per-message cost.

    python bench/python_actor.py [--kills 30] [--requests 2000]

Method:
  * cold build   = `theater-otp build` of a fresh project (no stamp) with an empty component cache
                   (THEATER_OTP_CACHE pointed at a new temporary folder): componentize-py seconds,
                   then wasmtime compile seconds (what the build reports);
  * deserialize  = Component.deserialize_file of the cached artifact (what a worker does at start);
  * warm start   = restart latency with the artifact cached, as bench/restart.py measures it: SIGKILL the
                   worker, then the supervisor's `child_started` event of the next incarnation (stamped
                   when the worker ran actor.init and said ready) minus the kill time; for the Python
                   actor and for actors/wat/echo.wat in the same tree;
  * per message  = N requests through the control socket (theater_otp.client.ControlClient: CLI ->
                   node -> worker -> node -> CLI) to each target, and N requests actor-to-actor: a
                   Python driver actor calls message-server-host.request N times in one handle-request
                   and times the loop with timing.performance-now.
The bench actor (echo + driver) is written below; the same component serves as target and driver.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCH_APP = '''
import json

import theater_sdk as sdk
from wit_world import exports
from wit_world.imports import message_server_host, timing


class Actor(exports.Actor):
    def init(self, state):
        return (state,)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        return (state,)

    def handle_request(self, state, params):
        request_id, msg = params
        if msg.startswith(b"drive "):
            _, n, target = msg.decode().split(" ", 2)
            n = int(n)
            payload = b"hello"
            t0 = timing.performance_now()
            for _ in range(n):
                message_server_host.request(target, payload)
            ns = timing.performance_now() - t0
            return (state, (json.dumps({"n": n, "ns": ns}).encode(),))
        return (state, (msg,))

'''


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(name: str, ms: list[float], unit: str = "ms") -> str:
    return (f"{name:<44} n={len(ms):<5} p50={pct(ms, 50):8.3f} {unit}  p90={pct(ms, 90):8.3f} {unit}  "
            f"p99={pct(ms, 99):8.3f} {unit}  mean={statistics.fmean(ms):8.3f} {unit}")


def cold_build(folder: Path) -> dict:
    from theater_otp.pyactor.build import build
    from theater_otp.pyactor.scaffold import create_project

    create_project("pybench", "basic", folder)
    (folder / "app.py").write_text(BENCH_APP)
    result = build(folder, say=lambda line: print(f"    {line}", file=sys.stderr, flush=True))
    return result.to_plain()


def deserialize_ms(artifact: Path, rounds: int = 5) -> list[float]:
    from theater_otp.worker.component import load_artifact, new_engine

    engine = new_engine(parallel_compilation=False)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        component = load_artifact(engine, artifact)
        out.append((time.perf_counter_ns() - t0) / 1e6)
        del component
    return out


def run_tree(folder: Path, py_manifest: Path, kills: int, requests: int) -> dict:
    from theater_otp.chain.store import connect, read_events
    from theater_otp.client import ControlClient
    from theater_otp.home import Home

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "echo.toml").write_text(f'name = "echo"\ncomponent = "{REPO / "actors/wat/echo.wat"}"\n')
    (folder / "supervision.toml").write_text(
        '[supervisor]\nid = "root"\nintensity = 100000\nperiod = 1\n'
        f'[[supervisor.children]]\nid = "py"\nmanifest = "{py_manifest}"\n'
        f'[[supervisor.children]]\nid = "driver"\nmanifest = "{py_manifest}"\n'
        '[[supervisor.children]]\nid = "echo"\nmanifest = "echo.toml"\n')
    home = Home.at(folder / "home")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "theater_otp.cli", "up", str(folder / "supervision.toml"), "--detach",
                    "--home", str(home.root)], check=True, capture_output=True)
    up_s = time.perf_counter() - t0
    out: dict = {"up_s": up_s}
    try:
        with ControlClient(home) as c:
            def child(cid: str) -> dict:
                return next(n for n in c.call("tree")["children"] if n["id"] == cid)

            for cid in ("py", "driver", "echo"):
                while child(cid)["status"] != "running":
                    time.sleep(0.01)

            # per message through the control socket
            for cid in ("echo", "py"):
                for _ in range(50):  # warm up
                    c.call("request", {"target": cid, "payload": b"hello", "timeout_ms": 10_000})
                lat = []
                for _ in range(requests):
                    t = time.perf_counter_ns()
                    c.call("request", {"target": cid, "payload": b"hello", "timeout_ms": 10_000})
                    lat.append((time.perf_counter_ns() - t) / 1e3)
                out[f"control_{cid}_us"] = lat

            # actor to actor: the Python driver requests each target N times in one call
            for cid in ("echo", "py"):
                c.call("request", {"target": "driver", "payload": f"drive 50 {cid}".encode(), "timeout_ms": 60_000},
                       timeout_s=70)
                reply = c.call("request", {"target": "driver", "payload": f"drive {requests} {cid}".encode(),
                                           "timeout_ms": 600_000}, timeout_s=610)
                r = json.loads(reply["ok"])
                out[f"a2a_{cid}_us_per_request"] = r["ns"] / r["n"] / 1e3

            # warm start: SIGKILL -> ready, for the Python actor and the WAT echo
            kill_times: dict[str, list[tuple[int, int]]] = {"py": [], "echo": []}
            ids = {}
            for cid in ("py", "echo"):
                w = child(cid)
                for _ in range(kills):
                    pid, inc = w["pid"], w["incarnation"]
                    t_kill = time.time_ns()
                    os.kill(pid, signal.SIGKILL)
                    kill_times[cid].append((t_kill, inc))
                    while True:
                        w = child(cid)
                        if w["status"] == "running" and w["pid"] and w["pid"] != pid:
                            break
                        time.sleep(0.002)
                ids[cid] = w["actor_id"]
            c.call("down", timeout_s=60)
    finally:
        subprocess.run([sys.executable, "-m", "theater_otp.cli", "down", "--home", str(home.root)],
                       capture_output=True)
    conn = connect(home.chain_db, readonly=True)
    for cid in ("py", "echo"):
        started = {e.payload()["incarnation"]: e.timestamp
                   for e in read_events(conn, "supervisor:root", "supervisor.child_started")
                   if e.payload().get("child") == cid}
        out[f"restart_{cid}_ms"] = [(started[inc + 1] - t) / 1e6 for t, inc in kill_times[cid] if inc + 1 in started]
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="theater-pybench-"))
    os.environ["THEATER_OTP_CACHE"] = str(work / "component-cache")  # empty: a cold compile
    print(f"# python actor bench on {os.cpu_count()} cores, python {sys.version.split()[0]}, work dir {work}")
    print("  cold build (componentize-py, then wasmtime compile) ...", file=sys.stderr)
    built = cold_build(work / "pybench")
    print(f"cold build: componentize-py {built['componentize_s']:.1f} s, wasmtime compile {built['compile_s']:.1f} s "
          f"({built['bytes'] / 1e6:.1f} MB wasm, {Path(built['artifact']).stat().st_size / 1e6:.1f} MB artifact)")
    t0 = time.perf_counter()
    from theater_otp.pyactor.build import build
    again = build(work / "pybench", say=lambda line: None)
    print(f"second build (nothing changed): {(time.perf_counter() - t0) * 1000:.1f} ms (skipped={again.skipped})")
    print(summary("deserialize cached artifact (worker start)", deserialize_ms(Path(built["artifact"]))))
    r = run_tree(work / "tree", Path(built["manifest"]), args.kills, args.requests)
    print(f"`up --detach` of py + driver + echo (artifacts cached): {r['up_s']:.2f} s")
    print(summary("restart SIGKILL -> ready: python actor", r["restart_py_ms"]))
    print(summary("restart SIGKILL -> ready: wat echo", r["restart_echo_ms"]))
    print(summary("control-socket request: python actor", r["control_py_us"], "us"))
    print(summary("control-socket request: wat echo", r["control_echo_us"], "us"))
    print(f"actor-to-actor request (python driver, {args.requests}x): python actor "
          f"{r['a2a_py_us_per_request']:.1f} us, wat echo {r['a2a_echo_us_per_request']:.1f} us per request")


if __name__ == "__main__":
    main()
