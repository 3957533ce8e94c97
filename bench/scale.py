"""Scale: booting, idling, listing and healing a flat tree of N actors, each next to a floor from the same run.

    python bench/scale.py --sizes 100,1000 [--idle-s 10] [--heal-rounds 5] [--json]

The tree: N `actors/wat/counter.wat` actors under one one_for_one root (intensity 1000, period 1),
manifests generated into a temporary folder, booted with `python -m theater_otp.cli up ... --detach
--home H`, stopped with the control command `down` (what `theater-otp down` sends). Sizes are booted
one after the other; each tree is torn down (and any process left SIGKILLed) before the next, also
on Ctrl-C, SIGTERM or an error.

  boot N         wall time of `up --detach` until it returns (it returns once every child has
                 started, one after the other in OTP start order) and per actor; the chain's
                 supervisor.child_started stamps split it into the CLI's and node's fixed cost
                 (until the first child) and the span first -> last child (also over its first
                 and its last tenth: does a start cost more with many running?). Memory once up: the
                 node's RSS, the median USS (psutil memory_full_info) of 20 random idle workers,
                 the drop in the host's available memory per actor.
                 Floor: a bare multiprocessing forkserver child (the node's preload, so the same
                 warm image) started -> says ready on a pipe, FLOOR_ROUNDS of them one after the
                 other (bench/restart.py's baseline_forkserver); median x N. The USS of 20 such
                 children kept alive is the memory floor of one process.
  idle CPU       after boot the tree sits 2 s, then the CPU time of the node, the chain-writer
                 and every worker is summed over --idle-s seconds: % of one core, total and per
                 actor. Two clocks: psutil's user+sys (10 ms ticks: an idle process reads 0) and
                 the run time of every thread in ns (/proc/PID/task/*/schedstat), the figure
                 reported first (the forkserver and resource tracker shown apart; the
                 host's own busy % over the same window shown for context: other work on the
                 box is not the tree's). The floor of an idle process is 0.
  tree CLI       `python -m theater_otp.cli tree --home H` and `tree --json` as subprocesses,
                 median of 5 each (alternated with the first baseline); baselines in the same
                 run: `--help` (the CLI's interpreter and imports, no node) and the `tree`
                 control round trip in-process (ControlClient, one socket), median of 20.
  heal           on the tree of 400 (else the largest size): SIGKILL --heal-kills (10) random
                 workers at once; heal = from time.time_ns() before the kills to the last of the
                 supervisor.child_started events of their new incarnations (chain stamps, read
                 after `tree` shows all of them running with new pids: polled every --poll-ms,
                 20 ms by default, since a `tree` of hundreds of children costs the node a few
                 ms each time and competes with the restarts it would time). --heal-rounds
                 rounds: median and max. Baseline, same tree: one worker killed -> its
                 replacement's child_started, median of --single-kills.

Every subprocess runs in the repository this file sits in, with its code (not the editable install's).
To measure a commit while others edit the working tree:
    git archive HEAD | tar -x -C /tmp/head && cd /tmp/head && python setup.py build_ext --inplace
    python bench/scale.py --sizes 100,400

The bench stops with a report when the host's available memory falls under 3 GB, and records a
boot that does not finish within --boot-timeout (how many workers had started by then, load,
memory, the node log's last lines).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from theater_otp.chain.store import connect, read_events  # noqa: E402
from theater_otp.client import ControlClient  # noqa: E402
from theater_otp.errors import TheaterError  # noqa: E402
from theater_otp.home import Home  # noqa: E402
from theater_otp.node.boot import running_node_pid  # noqa: E402
from theater_otp.proc import FORKSERVER_PRELOAD  # noqa: E402

COUNTER = REPO / "actors" / "wat" / "counter.wat"
#: Run from REPO (cwd) so that a copy of the repository (`git archive HEAD`) runs its own code, not the
#: editable install's; the `theater-otp` console script would import the editable install's.
CLI = [sys.executable, "-m", "theater_otp.cli"]
MIN_AVAILABLE = 3 * 1024**3
FLOOR_ROUNDS = 50
USS_SAMPLE = 20
GB = 1024**3
MB = 1024**2


class LowMemory(Exception):
    pass


def log(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def check_memory(where: str) -> float:
    available = psutil.virtual_memory().available
    if available < MIN_AVAILABLE:
        raise LowMemory(f"available memory {available / GB:.2f} GB < 3 GB during {where}")
    return available


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def host_state() -> dict[str, Any]:
    return {"load": [round(x, 2) for x in os.getloadavg()],
            "available_gb": round(psutil.virtual_memory().available / GB, 2)}


# ---- the floor: bare forkserver children --------------------------------------------------------

def floor_in_this_process(rounds: int) -> dict[str, Any]:
    """bench/restart.py's baseline_forkserver with the node's preload: start a child, it says ready on a
    pipe, it exits. Then USS_SAMPLE children kept alive (blocked reading a pipe) for their USS.

    Run by `forkserver_floor` in a `python -c` process, with library functions as the children's
    targets, so that a child imports nothing: multiprocessing makes every forkserver child re-run a
    main script given by path (the `__main__` preload does not work in 3.11: the forkserver asks for a
    `main_path` key that get_preparation_data does not give, and it ignores the sys_path it is handed),
    while the node, run with `-m theater_otp.node`, is spared that, as is a `-c` main."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    times: list[float] = []
    for i in range(rounds + 1):  # the first starts the forkserver itself (the node's is up before its workers)
        r, w = ctx.Pipe(duplex=False)
        t0 = time.perf_counter_ns()
        p = ctx.Process(target=Connection.send, args=(w, b"r"), daemon=True)
        p.start()
        r.recv()
        if i:
            times.append((time.perf_counter_ns() - t0) / 1e6)
        p.join()
        p.close()
    held: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    uss: list[float] = []
    try:
        for _ in range(USS_SAMPLE):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=Connection.recv_bytes, args=(r,), daemon=True)
            p.start()
            r.close()
            held.append((p, w))
        time.sleep(1.0)  # each has unpickled its target and blocks in its read
        uss = [psutil.Process(c.pid).memory_full_info().uss / MB for c, _ in held if c.pid]
    finally:
        for _, w in held:
            try:
                w.send_bytes(b"go")
            except OSError:
                pass
            w.close()
        for child, _ in held:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join()
    return {"rounds": rounds, "start_ready_ms_median": median(times), "start_ready_ms": times,
            "uss_mb_median": median(uss)}


def forkserver_floor(rounds: int) -> dict[str, Any]:
    # appended to sys.path, never in front of it: bench/http.py would shadow the standard library's http
    code = (f"import json, sys; sys.path.append({str(Path(__file__).resolve().parent)!r}); import scale; "
            f"print(json.dumps(scale.floor_in_this_process({rounds})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"the forkserver floor failed: {proc.stderr[-500:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---- one tree --------------------------------------------------------------------------------------

def write_tree(folder: Path, n: int) -> Path:
    (folder / "counter.toml").write_text(f'name = "counter"\ncomponent = "{COUNTER}"\n')
    lines = ['[supervisor]', 'id = "root"', 'strategy = "one_for_one"', 'intensity = 1000', 'period = 1']
    for i in range(n):
        lines += ["", "[[supervisor.children]]", f'id = "c{i:04d}"', 'manifest = "counter.toml"']
    config = folder / "supervision.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def actors(snapshot: dict) -> list[dict]:
    return [n for n in walk(snapshot) if n["kind"] == "actor"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Tree:
    n: int
    folder: Path
    home: Home = field(init=False)
    node_pid: int | None = None
    seen: set[int] = field(default_factory=set)  # every pid of the tree ever seen: the sweep's list

    def __post_init__(self) -> None:
        self.home = Home.at(self.folder / "home")

    def call(self, kind: str, body: dict | None = None, timeout_s: float = 30) -> Any:
        with ControlClient(self.home) as c:
            return c.call(kind, body, timeout_s=timeout_s)

    def processes(self) -> tuple[psutil.Process | None, list[psutil.Process]]:
        """(the forkserver, its children) as they are now; every pid is remembered for the sweep."""
        if self.node_pid is None:
            return None, []
        try:
            node = psutil.Process(self.node_pid)
            below = node.children(recursive=True)
        except psutil.NoSuchProcess:
            return None, []
        self.seen.update(p.pid for p in below)
        forkserver = None
        for p in node.children():
            try:
                if "forkserver" in " ".join(p.cmdline()):
                    forkserver = p
            except psutil.NoSuchProcess:
                pass
        if forkserver is None:
            return None, []
        try:
            return forkserver, forkserver.children()
        except psutil.NoSuchProcess:
            return None, []

    def close(self) -> dict[str, Any]:
        """`down`, then SIGKILL whatever of the tree is left. Returns how long `down` took and what was swept."""
        out: dict[str, Any] = {}
        if self.node_pid is None:
            self.node_pid = running_node_pid(self.home)
        self.processes()
        if self.node_pid is not None and alive(self.node_pid):
            t0 = time.perf_counter()
            try:
                self.call("down", timeout_s=300)
            except TheaterError as exc:
                out["down_error"] = str(exc)
            deadline = time.monotonic() + 30
            while alive(self.node_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            out["down_s"] = time.perf_counter() - t0
            if alive(self.node_pid):
                out["node_killed"] = True
                os.kill(self.node_pid, signal.SIGKILL)
        swept = 0
        deadline = time.monotonic() + 5
        for pid in sorted(self.seen | ({self.node_pid} if self.node_pid else set())):
            try:
                p = psutil.Process(pid)
                cmd = " ".join(p.cmdline())
                if p.status() == psutil.STATUS_ZOMBIE or not ("theater_otp" in cmd or "multiprocessing" in cmd):
                    continue
                # children die with the node (PDEATHSIG): give them a moment before counting them as left over
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if alive(pid):
                    p.kill()
                    swept += 1
            except psutil.NoSuchProcess:
                pass
        out["left_over_killed"] = swept
        self.node_pid = None
        return out


def boot(tree: Tree, timeout_s: float) -> dict[str, Any]:
    """`up --detach`, timed; progress on stderr every 2 s; a boot past the timeout or low memory is recorded."""
    config = write_tree(tree.folder, tree.n)
    available_before = check_memory("boot")
    t_wall0 = time.time_ns()
    t0 = time.perf_counter()
    up = subprocess.Popen(CLI + ["up", str(config), "--detach", "--home", str(tree.home.root)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    next_line = t0 + 2
    failure = None
    try:
        while up.poll() is None:
            time.sleep(0.05)
            now = time.perf_counter()
            if tree.node_pid is None:
                tree.node_pid = running_node_pid(tree.home)
            check_memory(f"boot of {tree.n}")
            if now >= next_line or now - t0 > timeout_s:
                _, children = tree.processes()
                state = host_state()
                log(f"boot {tree.n}: {now - t0:5.1f} s, {max(0, len(children) - 1)} workers forked, "
                    f"load {state['load'][0]}, available {state['available_gb']} GB")
                next_line = now + 2
                if now - t0 > timeout_s:
                    failure = f"not up after {timeout_s:.0f} s"
                    break
    except LowMemory as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        up.kill()
        up.wait()
        raise
    wall = time.perf_counter() - t0

    def tails() -> dict[str, str]:
        out = {}
        for name, path in (("node_log_tail", tree.home.log_file), ("node_stderr_tail", tree.home.root / "node.stderr")):
            try:
                out[name] = "\n".join(path.read_text(errors="replace").splitlines()[-8:])
            except OSError:
                pass
        return out

    if failure is not None:
        _, children = tree.processes()
        up.kill()
        up.wait()
        return {"n": tree.n, "failed": failure, "after_s": wall, "workers_forked": max(0, len(children) - 1),
                **host_state(), **tails()}
    _, err = up.communicate()
    if up.returncode != 0:
        _, children = tree.processes()
        return {"n": tree.n, "failed": f"up exited {up.returncode}: {err.strip()[-500:]}", "after_s": wall,
                "workers_forked": max(0, len(children) - 1), **host_state(), **tails()}
    tree.node_pid = running_node_pid(tree.home)
    out: dict[str, Any] = {"n": tree.n, "up_wall_s": wall, "up_ms_per_actor": wall * 1e3 / tree.n}
    tree.call("sync")
    conn = connect(tree.home.chain_db, readonly=True)
    try:
        stamps = sorted(e.timestamp for e in read_events(conn, "supervisor:root", "supervisor.child_started"))
    finally:
        conn.close()
    if len(stamps) >= 2:
        out["until_first_child_s"] = (stamps[0] - t_wall0) / 1e9
        out["first_to_last_child_s"] = (stamps[-1] - stamps[0]) / 1e9
        out["span_ms_per_actor"] = (stamps[-1] - stamps[0]) / 1e6 / (len(stamps) - 1)
        tenth = max(1, len(stamps) // 10)  # does a start cost more once many children run?
        out["first_tenth_ms_per_actor"] = (stamps[tenth] - stamps[0]) / 1e6 / tenth
        out["last_tenth_ms_per_actor"] = (stamps[-1] - stamps[-1 - tenth]) / 1e6 / tenth
    out["available_drop_mb_per_actor"] = (available_before - psutil.virtual_memory().available) / MB / tree.n
    return out


def memory(tree: Tree, snapshot: dict, rng: random.Random) -> dict[str, Any]:
    assert tree.node_pid is not None
    node = psutil.Process(tree.node_pid)
    pids = [a["pid"] for a in actors(snapshot) if a["pid"]]
    uss = []
    for pid in rng.sample(pids, min(USS_SAMPLE, len(pids))):
        try:
            uss.append(psutil.Process(pid).memory_full_info().uss / MB)
        except psutil.NoSuchProcess:
            pass
    return {"node_rss_mb": node.memory_info().rss / MB, "node_uss_mb": node.memory_full_info().uss / MB,
            "worker_uss_mb_median": median(uss), "worker_uss_sampled": len(uss)}


def cpu_s(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return None


def run_ns(pid: int) -> int | None:
    """CPU time of every thread of `pid` in ns (/proc/PID/task/*/schedstat, Linux): psutil's user+sys
    comes in 10 ms clock ticks, too coarse for a process that is idle for all but microseconds."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that ended meanwhile
    except (FileNotFoundError, ProcessLookupError):
        return None
    return total


def idle_cpu(tree: Tree, snapshot: dict, settle_s: float, idle_s: float) -> dict[str, Any]:
    time.sleep(settle_s)
    assert tree.node_pid is not None
    node = psutil.Process(tree.node_pid)
    workers = {a["pid"] for a in actors(snapshot) if a["pid"]}
    forkserver, below = tree.processes()
    groups: dict[str, list[psutil.Process]] = {
        "node": [node],
        "writer": [p for p in below if p.pid not in workers],
        "workers": [p for p in below if p.pid in workers],
        "other": [p for p in node.children() if forkserver is None or p.pid != forkserver.pid]
                 + ([forkserver] if forkserver else []),
    }

    def sample() -> dict[str, list[tuple[float | None, int | None]]]:
        return {name: [(cpu_s(p), run_ns(p.pid)) for p in procs] for name, procs in groups.items()}

    before = sample()
    host0 = psutil.cpu_times()
    t0 = time.perf_counter()
    time.sleep(idle_s)
    after = sample()
    host1 = psutil.cpu_times()
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {"window_s": elapsed, "workers_measured": len(groups["workers"])}
    vanished = 0
    for name in groups:
        ticks = 0.0
        ns = 0
        for (b, b_ns), (a, a_ns) in zip(before[name], after[name]):
            if b is None or a is None or b_ns is None or a_ns is None:
                vanished += 1
            else:
                ticks += a - b
                ns += a_ns - b_ns
        out[f"{name}_pct"] = ns / 1e9 / elapsed * 100
        out[f"{name}_pct_psutil"] = ticks / elapsed * 100
    for suffix in ("", "_psutil"):
        out[f"total_pct{suffix}"] = out[f"node_pct{suffix}"] + out[f"writer_pct{suffix}"] + out[f"workers_pct{suffix}"]
        out[f"per_actor_pct{suffix}"] = out[f"total_pct{suffix}"] / tree.n
    busy = (sum(host1) - host1.idle - host1.iowait) - (sum(host0) - host0.idle - host0.iowait)
    out["host_busy_pct_of_one_core"] = busy / elapsed * 100
    out["vanished"] = vanished
    return out


def timed_run(cmd: list[str], times: int) -> tuple[list[float], int]:
    out = []
    size = 0
    for _ in range(times):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, cwd=REPO)
        out.append((time.perf_counter() - t0) * 1e3)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
        size = len(proc.stdout)
    return out, size


def tree_cli(tree: Tree) -> dict[str, Any]:
    cli = CLI
    home = ["--home", str(tree.home.root)]
    plain: list[float] = []
    js: list[float] = []
    helps: list[float] = []
    for _ in range(5):  # alternated, so that a change in the host's load falls on all three alike
        ms, plain_bytes = timed_run(cli + ["tree"] + home, 1)
        plain += ms
        ms, js_bytes = timed_run(cli + ["tree", "--json"] + home, 1)
        js += ms
        helps += timed_run(cli + ["--help"], 1)[0]
    rtt = []
    with ControlClient(tree.home) as c:
        for _ in range(20):
            t0 = time.perf_counter()
            c.call("tree")
            rtt.append((time.perf_counter() - t0) * 1e3)
    return {"cli": " ".join(cli), "tree_ms_median": median(plain), "tree_json_ms_median": median(js),
            "help_ms_median": median(helps), "control_tree_rtt_ms_median": median(rtt),
            "tree_ms": plain, "tree_json_ms": js, "help_ms": helps, "tree_bytes": plain_bytes,
            "tree_json_bytes": js_bytes}


def kill_and_wait(tree: Tree, c: ControlClient, victims: list[dict], poll_s: float,
                  timeout_s: float = 60) -> tuple[int, float]:
    """SIGKILL every victim at once; wait until `tree` shows each running with a new pid.
    Returns (time.time_ns() just before the kills, seconds the wait took as polled)."""
    old = {v["id"]: v["pid"] for v in victims}
    t_kill = time.time_ns()
    t0 = time.perf_counter()
    for v in victims:
        os.kill(v["pid"], signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(poll_s)
        now = {a["id"]: a for a in actors(c.call("tree"))}
        if all(now[i]["status"] == "running" and now[i]["pid"] and now[i]["pid"] != pid for i, pid in old.items()):
            tree.seen.update(now[i]["pid"] for i in old)
            return t_kill, time.perf_counter() - t0
        check_memory("heal")
        if time.monotonic() > deadline:
            waiting = [i for i, pid in old.items() if not (now[i]["status"] == "running" and now[i]["pid"] != pid)]
            raise RuntimeError(f"after {timeout_s:.0f} s, {len(waiting)} of {len(old)} killed workers are not back: "
                               f"{', '.join(waiting[:10])}")


def ready_stamps(tree: Tree, c: ControlClient, since_ns: int, victims: list[dict]) -> list[int]:
    """The child_started stamps of each victim's next incarnation (missing ones left out)."""
    c.call("sync")
    wanted = {(v["id"], v["incarnation"] + 1) for v in victims}
    conn = connect(tree.home.chain_db, readonly=True)
    try:
        events = read_events(conn, "supervisor:root", "supervisor.child_started", since_ns=since_ns)
    finally:
        conn.close()
    stamps = {}
    for e in events:
        payload = e.payload()
        if not isinstance(payload, dict):
            continue
        key = (payload["child"], payload["incarnation"])
        if key in wanted:
            stamps[key] = e.timestamp
    return list(stamps.values())


def heal(tree: Tree, rng: random.Random, kills: int, rounds: int, single: int, poll_s: float) -> dict[str, Any]:
    multi: list[dict[str, Any]] = []
    singles: list[float] = []
    with ControlClient(tree.home) as c:
        for r in range(rounds):
            victims = rng.sample([a for a in actors(c.call("tree")) if a["pid"]], kills)
            t_kill, polled = kill_and_wait(tree, c, victims, poll_s)
            stamps = ready_stamps(tree, c, t_kill, victims)
            row = {"polled_ms": polled * 1e3, "found": len(stamps)}
            if stamps:
                row["first_ready_ms"] = (min(stamps) - t_kill) / 1e6
                row["all_ready_ms"] = (max(stamps) - t_kill) / 1e6
            multi.append(row)
            log(f"heal round {r + 1}/{rounds}: {kills} killed, all ready after "
                f"{row.get('all_ready_ms', float('nan')):.1f} ms (chain), {row['polled_ms']:.0f} ms polled")
            time.sleep(0.3)
        for _ in range(single):
            victim = rng.choice([a for a in actors(c.call("tree")) if a["pid"]])
            t_kill, polled = kill_and_wait(tree, c, [victim], poll_s)
            stamps = ready_stamps(tree, c, t_kill, [victim])
            singles.append((stamps[0] - t_kill) / 1e6 if stamps else polled * 1e3)
            time.sleep(0.1)
    all_ready = [r["all_ready_ms"] for r in multi if "all_ready_ms" in r and r["found"] == kills]
    return {"n": tree.n, "kills": kills, "rounds": multi, "all_ready_ms_median": median(all_ready),
            "all_ready_ms_max": max(all_ready) if all_ready else float("nan"),
            "first_ready_ms_median": median([r["first_ready_ms"] for r in multi if "first_ready_ms" in r]),
            "complete_rounds": len(all_ready),
            "single_ready_ms_median": median(singles), "single_ready_ms": singles}


def run_size(n: int, args: argparse.Namespace, rng: random.Random, do_heal: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"theater-scale-{n}-"))
    tree = Tree(n, folder)
    result: dict[str, Any] = {"n": n}
    try:
        log(f"booting {n} actors in {folder}")
        result["boot"] = b = boot(tree, args.boot_timeout or max(120.0, 0.5 * n))
        if "failed" in b:
            log(f"boot of {n} failed: {b['failed']} after {b['after_s']:.1f} s, {b.get('workers_forked')} forked")
            return result
        log(f"up after {b['up_wall_s']:.1f} s ({b['up_ms_per_actor']:.1f} ms per actor)")
        snapshot = tree.call("tree")
        tree.processes()
        running = sum(1 for a in actors(snapshot) if a["status"] == "running" and a["pid"])
        result["running_after_up"] = running
        result["memory"] = memory(tree, snapshot, rng)
        check_memory("memory sample")
        log(f"idle CPU: settle {args.settle_s} s, measure {args.idle_s} s")
        result["idle"] = idle_cpu(tree, snapshot, args.settle_s, args.idle_s)
        log("tree CLI")
        result["tree_cli"] = tree_cli(tree)
        if do_heal:
            log(f"heal: {args.heal_rounds} rounds of {args.heal_kills} kills, {args.single_kills} single kills")
            result["heal"] = heal(tree, rng, args.heal_kills, args.heal_rounds, args.single_kills, args.poll_ms / 1e3)
    except LowMemory as exc:
        result["failed"] = str(exc)
        result["host"] = host_state()
        log(f"stopping: {exc}")
    except (TheaterError, RuntimeError) as exc:
        result["failed"] = f"{type(exc).__name__}: {exc}"
        result["host"] = host_state()
        log(f"size {n} failed: {result['failed']}")
    finally:
        log(f"stopping the tree of {n}")
        result["close"] = tree.close()
        if "down_s" in result["close"]:
            log(f"down took {result['close']['down_s']:.1f} s; {result['close']['left_over_killed']} left over killed")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


# ---- report ------------------------------------------------------------------------------------------

def f(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def table(report: dict[str, Any]) -> str:
    floor = report["floor"]
    lines = [f"# scale: flat one_for_one tree of N counter.wat actors; {report['cores']} cores, "
             f"python {report['python']}, {report['head']}, load at start {report['host_at_start']['load']}",
             "",
             f"## boot (floor: bare forkserver child start->ready, median of {floor['rounds']} = "
             f"{floor['start_ready_ms_median']:.2f} ms, x N; bare child USS {floor['uss_mb_median']:.2f} MB)",
             f"{'N':>5} {'up s':>7} {'ms/actor':>9} {'floor s':>8} {'up/floor':>9} {'to 1st child s':>15} "
             f"{'span ms/actor':>14} {'1st/last 10%':>13} {'node RSS MB':>12} {'worker USS MB':>14} {'avail drop MB/actor':>20} "
             f"{'down s':>7}"]
    for r in report["sizes"]:
        b = r.get("boot", {})
        if "failed" in b:
            lines.append(f"{r['n']:>5} FAILED: {b['failed']} after {b['after_s']:.1f} s; "
                         f"{b.get('workers_forked')} workers forked; load {b.get('load')}; "
                         f"available {b.get('available_gb')} GB")
            continue
        floor_s = floor["start_ready_ms_median"] * r["n"] / 1e3
        m = r.get("memory", {})
        lines.append(f"{r['n']:>5} {f(b.get('up_wall_s'), '.2f'):>7} {f(b.get('up_ms_per_actor'), '.1f'):>9} "
                     f"{floor_s:>8.2f} {f(b.get('up_wall_s', 0) / floor_s, '.1f'):>9} "
                     f"{f(b.get('until_first_child_s'), '.2f'):>15} {f(b.get('span_ms_per_actor'), '.1f'):>14} "
                     f"{f(b.get('first_tenth_ms_per_actor'), '.0f') + '/' + f(b.get('last_tenth_ms_per_actor'), '.0f'):>13} "
                     f"{f(m.get('node_rss_mb')):>12} {f(m.get('worker_uss_mb_median'), '.2f'):>14} "
                     f"{f(b.get('available_drop_mb_per_actor'), '.2f'):>20} {f(r['close'].get('down_s'), '.1f'):>7}")
    lines += ["", "## idle CPU, % of one core: threads' run time (schedstat, ns); psutil user+sys (10 ms ticks) "
              "beside it; floor of an idle process: 0; host busy = the whole box, for context",
              f"{'N':>5} {'window s':>9} {'total':>7} {'per actor':>10} {'node':>6} {'writer':>7} {'workers':>8} "
              f"{'fs+tracker':>11} {'psutil total':>13} {'host busy':>10}"]
    for r in report["sizes"]:
        i = r.get("idle")
        if i:
            lines.append(f"{r['n']:>5} {i['window_s']:>9.1f} {i['total_pct']:>7.3f} {i['per_actor_pct']:>10.5f} "
                         f"{i['node_pct']:>6.3f} {i['writer_pct']:>7.3f} {i['workers_pct']:>8.3f} "
                         f"{i['other_pct']:>11.3f} {i['total_pct_psutil']:>13.2f} "
                         f"{i['host_busy_pct_of_one_core']:>10.1f}")
    lines += ["", "## tree CLI, wall ms (median of 5; control round trip median of 20)",
              f"{'N':>5} {'tree':>8} {'tree --json':>12} {'--help (base)':>14} {'control tree RTT (base)':>24} "
              f"{'tree bytes':>11} {'json bytes':>11}"]
    for r in report["sizes"]:
        t = r.get("tree_cli")
        if t:
            lines.append(f"{r['n']:>5} {t['tree_ms_median']:>8.1f} {t['tree_json_ms_median']:>12.1f} "
                         f"{t['help_ms_median']:>14.1f} {t['control_tree_rtt_ms_median']:>24.2f} "
                         f"{t['tree_bytes']:>11,} {t['tree_json_bytes']:>11,}")
    for r in report["sizes"]:
        h = r.get("heal")
        if h:
            per_round = ", ".join(f(x.get("all_ready_ms"), ".0f") for x in h["rounds"])
            lines += ["", f"## heal, N = {h['n']}: {h['kills']} workers SIGKILLed at once -> all {h['kills']} "
                      f"ready (chain stamps)",
                      f"all ready: median {f(h['all_ready_ms_median'])} ms, max {f(h['all_ready_ms_max'])} ms "
                      f"over {h['complete_rounds']} rounds ({per_round}); first ready median "
                      f"{f(h['first_ready_ms_median'])} ms",
                      f"baseline, one worker killed -> ready, same tree: median {f(h['single_ready_ms_median'])} ms "
                      f"(n={len(h['single_ready_ms'])}); x{h['kills']} = {f(h['single_ready_ms_median'] * h['kills'])} ms"]
    for r in report["sizes"]:
        if "failed" in r:
            lines.append(f"\nN = {r['n']}: stopped: {r['failed']} (host {r.get('host')})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,400")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--heal-rounds", type=int, default=5)
    parser.add_argument("--heal-kills", type=int, default=10)
    parser.add_argument("--single-kills", type=int, default=10)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--boot-timeout", type=float, default=None, help="seconds (default max(120, 0.5 x N))")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default=None, help="what is measured, for the header (default: git HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (manifests, homes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    heal_size = 400 if 400 in sizes else max(sizes)
    rng = random.Random(args.seed)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    head = args.label or (f"HEAD {sha}" if sha else "(not a git checkout)")
    report: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0], "head": head,
                              "host_at_start": host_state(), "sizes": []}
    check_memory("start")
    log(f"floor: {FLOOR_ROUNDS} bare forkserver children")
    report["floor"] = forkserver_floor(FLOOR_ROUNDS)
    for n in sizes:
        result = run_size(n, args, rng, do_heal=n == heal_size)
        report["sizes"].append(result)
        if "< 3 GB" in str(result.get("failed", "")) + str(result.get("boot", {}).get("failed", "")):
            break  # low memory: stop and report
    report["host_at_end"] = host_state()
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(table(report))


if __name__ == "__main__":
    main()
