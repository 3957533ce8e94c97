"""Restart latency: SIGKILL a worker, measure until the supervisor knows and until the replacement is ready.

    python bench/restart.py [--kills 200]

Method: boot a one-actor tree (echo.wat, one_for_one, high intensity) in a
temporary home; for each round, note time.time_ns(), SIGKILL the worker, wait
for the new pid in `tree`, then read from the chains:
  * notified = the node's `lifecycle.exited` event for the killed incarnation
               (stamped when the node has reaped the exit) - kill time;
  * ready    = the supervisor's `child_started` event for the new incarnation
               (stamped when the worker has run actor.init and said ready) - kill time.
Baselines, run in the same process on the same box:
  * forkserver-bare: multiprocessing forkserver (wasmtime preloaded) start -> child says ready on a pipe;
  * spawn-fresh: a fresh `python -c` that imports wasmtime and zmq -> says ready (what a restart costs
    without a preloaded fork server).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from theater_otp.chain.store import connect, read_events  # noqa: E402
from theater_otp.client import ControlClient  # noqa: E402
from theater_otp.home import Home  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name:<34} n={len(ms):<4} p50={pct(ms, 50):7.2f} ms  p90={pct(ms, 90):7.2f} ms  "
            f"p99={pct(ms, 99):7.2f} ms  max={max(ms):7.2f} ms")


def _ready_child(conn) -> None:
    conn.send(b"r")


def baseline_forkserver(rounds: int) -> list[float]:
    ctx = multiprocessing.get_context("forkserver")
    # The forkserver re-runs this script (as __mp_main__) in every child; preloading what it
    # imports keeps that cheap, as `python -m theater_otp.node` does for the real node.
    ctx.set_forkserver_preload(["wasmtime", "wasmtime.component", "zmq", "theater_otp.client",
                                "theater_otp.chain.store"])
    out = []
    for _ in range(rounds):
        r, w = ctx.Pipe(duplex=False)
        t0 = time.perf_counter_ns()
        p = ctx.Process(target=_ready_child, args=(w,))
        p.start()
        r.recv()
        out.append((time.perf_counter_ns() - t0) / 1e6)
        p.join()
        p.close()
    return out


def _component_child(artifact: str, conn) -> None:
    """The like-for-like baseline's child: what a restart must do at least, with nothing of the
    product: deserialize the same compiled component, instantiate it (imports as traps), run its
    init, say ready; then wait to be killed."""
    import wasmtime
    import wasmtime.component as wc

    from theater_otp.worker.component import load_artifact, new_engine

    engine = new_engine(parallel_compilation=False)
    component = load_artifact(engine, Path(artifact))
    linker = wc.Linker(engine)
    linker.define_unknown_imports_as_traps(component)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 40)
    instance = linker.instantiate(store, component)
    actor = instance.get_export_index(store, "theater:simple/actor")
    init = instance.get_func(store, instance.get_export_index(store, "init", actor))
    init(store, b"state")
    init.post_return(store)
    conn.send(b"r")
    time.sleep(3600)


class LikeForLike:
    """A minimal supervisor of one forkserver child running the same component: SIGKILL it, see
    its exit on the process sentinel, start the replacement, time until it says ready."""

    def __init__(self, artifact: Path):
        self.ctx = multiprocessing.get_context("forkserver")
        self.artifact = str(artifact)
        self.proc, self.conn = self._start()

    def _start(self):
        r, w = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=_component_child, args=(self.artifact, w), daemon=True)
        p.start()
        r.recv()
        return p, r

    def kill_and_restart(self) -> float:
        t0 = time.time_ns()
        os.kill(self.proc.pid, signal.SIGKILL)
        multiprocessing.connection.wait([self.proc.sentinel])
        self.proc.join()
        self.proc.close()
        self.conn.close()
        self.proc, self.conn = self._start()
        return (time.time_ns() - t0) / 1e6

    def close(self) -> None:
        self.proc.kill()
        self.proc.join()


def baseline_spawn(rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "import wasmtime, wasmtime.component, zmq; print('r')"],
                       check=True, capture_output=True)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def measure_tree(kills: int, baseline: LikeForLike | None = None) -> tuple[list[float], list[float], list[float]]:
    """Kill the tree's one worker `kills` times; with `baseline`, a like-for-like kill and restart
    after each, in the same loop (the same load, the same moment)."""
    like: list[float] = []
    folder = Path(tempfile.mkdtemp(prefix="theater-bench-"))
    (folder / "echo.toml").write_text(f'name = "echo"\ncomponent = "{REPO / "actors/wat/echo.wat"}"\n')
    (folder / "supervision.toml").write_text(
        '[supervisor]\nid = "root"\nintensity = 100000\nperiod = 1\n'
        '[[supervisor.children]]\nid = "w"\nmanifest = "echo.toml"\n')
    home = Home.at(folder / "home")
    subprocess.run([sys.executable, "-m", "theater_otp.cli", "up", str(folder / "supervision.toml"), "--detach",
                    "--home", str(home.root)], check=True, capture_output=True)
    kill_times: list[tuple[int, int]] = []  # (time_ns, incarnation killed)
    try:
        with ControlClient(home) as c:
            def worker() -> dict:
                return c.call("tree")["children"][0]
            w = worker()
            for _ in range(kills):
                pid, inc = w["pid"], w["incarnation"]
                t_kill = time.time_ns()
                os.kill(pid, signal.SIGKILL)
                kill_times.append((t_kill, inc))
                while True:
                    w = worker()
                    if w["status"] == "running" and w["pid"] and w["pid"] != pid:
                        break
                    time.sleep(0.002)
                if baseline is not None:
                    like.append(baseline.kill_and_restart())
            actor_id = w["actor_id"]
            c.call("down", timeout_s=30)
    finally:
        subprocess.run([sys.executable, "-m", "theater_otp.cli", "down", "--home", str(home.root)], capture_output=True)
    conn = connect(home.chain_db, readonly=True)
    exited = {e.incarnation: e.timestamp for e in read_events(conn, actor_id, "lifecycle.exited")}
    started = {e.payload()["incarnation"]: e.timestamp
               for e in read_events(conn, "supervisor:root", "supervisor.child_started")}
    conn.close()
    notified = [(exited[inc] - t) / 1e6 for t, inc in kill_times]
    ready = [(started[inc + 1] - t) / 1e6 for t, inc in kill_times]
    return notified, ready, like


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--baseline-rounds", type=int, default=50)
    args = parser.parse_args()
    print(f"# restart latency on {os.cpu_count()} cores, python {sys.version.split()[0]}")
    from theater_otp.worker.component import compile_component, new_engine

    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["wasmtime", "wasmtime.component", "zmq", "theater_otp.client", "theater_otp.chain.store",
         "theater_otp.worker.component"])
    like = LikeForLike(compile_component(REPO / "actors/wat/echo.wat", new_engine()).artifact)
    try:
        notified, ready, like_ready = measure_tree(args.kills, like)
    finally:
        like.close()
    print(summary("theater-otp: SIGKILL -> notified", notified))
    print(summary("theater-otp: SIGKILL -> ready", ready))
    print(summary("baseline like-for-like: SIGKILL -> same component ready (same loop)", like_ready))
    print(f"ratio p50 product / like-for-like: {pct(ready, 50) / pct(like_ready, 50):.2f}")
    print(summary("baseline forkserver-bare start", baseline_forkserver(args.baseline_rounds)))
    print(summary("baseline spawn-fresh start", baseline_spawn(min(args.baseline_rounds, 20))))


if __name__ == "__main__":
    main()
