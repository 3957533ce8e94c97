"""OTP supervisor rules (../shared/spec/otp-supervisor.md §1) on real worker processes and real signals.

Each test is named after the rule it pins and cites its section. The pure
state machine has its own exhaustive suite (test_supervisor_machine.py); these
show the same rules hold end to end: processes, signals, timers, the CLI.
"""

import json
import os
import signal
import subprocess

import psutil
import pytest

from harness import CLI, Tree, cli, pid_gone, walk, write_manifest
from theater_otp.home import cache_dir

pytestmark = pytest.mark.integration


def manifests(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    write_manifest(tmp_path, "crasher", "crasher.wat")
    write_manifest(tmp_path, "failing", "crasher.wat", initial_state="fail")


def restart_of(tree, path, old_pid, timeout=10):
    return tree.wait_for(lambda: (n := tree.node(path))["status"] == "running" and n["pid"] not in (None, old_pid)
                         and n, timeout, f"{path} restarted")


# ---- §1.3 intensity and escalation -----------------------------------------------------------

NESTED = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"
    intensity = 5
    period = 30

    [[supervisor.children]]
    id = "bystander"
    manifest = "echo.toml"

    [[supervisor.children]]
    id = "middle"
    type = "supervisor"
    restart = "{restart}"
    strategy = "one_for_one"
    intensity = 1
    period = 30

      [[supervisor.children.children]]
      id = "w"
      manifest = "echo.toml"
"""


def test_intensity_exceeded_in_a_middle_supervisor_escalates_and_root_restarts_it(tmp_path):
    """§1.3: MaxR+1 restarts within MaxT → the supervisor exits `shutdown`; a permanent parent restarts it."""
    manifests(tmp_path)
    with Tree(tmp_path, NESTED.format(restart="permanent")) as tree:
        pids = tree.wait_running()
        tree.kill("root/middle/w")                       # restart 1: within intensity 1
        second = restart_of(tree, "root/middle/w", pids["root/middle/w"])["pid"]
        tree.kill("root/middle/w")                       # restart 2: middle gives up
        third = restart_of(tree, "root/middle/w", second)
        assert tree.node("root/middle")["restarts"] == 1  # root restarted middle once
        assert third["restarts"] == 0                     # a fresh middle: a fresh child record
        assert tree.node("root/bystander")["pid"] == pids["root/bystander"]
        middle = [e.event_type for e in tree.events("supervisor:root/middle")]
        assert "supervisor.reached_max_restart_intensity" in middle
        root = tree.supervisor_events("root", "supervisor.child_terminated")
        assert [(e["child"], e["reason"]["kind"]) for e in root] == [("middle", "shutdown")]
        assert [e["child"] for e in tree.supervisor_events("root", "supervisor.child_restarting")] == ["middle"]


def test_transient_supervisor_that_gave_up_is_not_restarted(tmp_path):
    """§1.3 [src]: `shutdown` is a normal reason, so a transient child supervisor stays down."""
    manifests(tmp_path)
    with Tree(tmp_path, NESTED.format(restart="transient")) as tree:
        pids = tree.wait_running()
        tree.kill("root/middle/w")
        second = restart_of(tree, "root/middle/w", pids["root/middle/w"])["pid"]
        tree.kill("root/middle/w")
        tree.wait_for(lambda: tree.node("root/middle")["status"] == "stopped", what="middle stopped")
        assert tree.supervisor_events("root", "supervisor.child_restarting") == []
        assert tree.node("root/bystander")["pid"] == pids["root/bystander"]
        assert second not in [n["pid"] for n in walk(tree.tree())]


def test_root_giving_up_makes_up_exit_nonzero_naming_the_supervisor(tmp_path):
    """§1.3 at the root: the node exits non-zero and `up` says which supervisor gave up and why."""
    manifests(tmp_path)
    (tmp_path / "supervision.toml").write_text("""
[supervisor]
id = "root"
intensity = 1
period = 30
[[supervisor.children]]
id = "w"
manifest = "echo.toml"
""")
    home = tmp_path / "home"
    up = subprocess.Popen(CLI + ["up", str(tmp_path / "supervision.toml"), "--home", str(home)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tree = Tree.__new__(Tree)
        tree.home, tree._seen, tree.folder = home, set(), tmp_path
        tree.wait_for(lambda: (home / "run" / "node.pid").exists() and _running(tree), what="tree up")
        first = tree.node("root/w")["pid"]
        os.kill(first, signal.SIGKILL)
        second = tree.wait_for(lambda: _pid_other_than(tree, first), what="w restarted")
        os.kill(second, signal.SIGKILL)
        _out, err = up.communicate(timeout=20)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 1
    assert "error: root supervisor 'root' gave up: reached its maximum restart intensity (1 restarts in 30 s)" in err


def _running(tree):
    try:
        return tree.node("root/w")["pid"]
    except Exception:
        return None


def _pid_other_than(tree, pid):
    try:
        n = tree.node("root/w")
    except Exception:
        return None
    return n["pid"] if n["pid"] not in (None, pid) and n["status"] == "running" else None


# ---- §1.4 restart types and §1.2 bystanders ---------------------------------------------------

def test_temporary_bystander_of_one_for_all_is_dropped_not_restarted(tmp_path):
    """§1.4: temporary specs are deleted after being a one_for_all bystander."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        strategy = "one_for_all"
        intensity = 5
        period = 30
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "temp"
        manifest = "echo.toml"
        restart = "temporary"
    """) as tree:
        pids = tree.wait_running()
        tree.kill("root/a")
        restart_of(tree, "root/a", pids["root/a"])
        tree.wait_for(lambda: [c["id"] for c in tree.tree()["children"]] == ["a"], what="temp dropped")
        assert tree.wait_for(lambda: pid_gone(pids["root/temp"]), what="temp's process gone")


# ---- §1.5 shutdown ------------------------------------------------------------------------------

def shutdown_tree(tmp_path, shutdown):
    manifests(tmp_path)
    return Tree(tmp_path, f"""
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "x"
        manifest = "crasher.toml"
        shutdown = {json.dumps(shutdown)}
    """)


def busy_in_wasm(tree, path):
    """Send `loop` to the crasher at `path` and wait until its process has burnt CPU on it (an idle
    worker burns none), so it is in wasm and cannot act on SIGTERM: evidence, not a sleep."""
    proc = psutil.Process(tree.node(path)["pid"])

    def spent() -> float:
        return sum(proc.cpu_times()[:2])  # user + system seconds

    before = spent()
    cli("send", path, "loop", home=tree.home)
    tree.wait_for(lambda: spent() - before >= 0.2, what=f"{path} looping in wasm")


def test_worker_ignoring_the_polite_stop_is_killed_when_the_timeout_runs_out(tmp_path):
    """§1.5: integer T → polite stop, wait T ms, then kill; `killed` after a timeout is a shutdown_error.

    Timed by the node's own records, not the test's clock: x sits under its own supervisor `sup`;
    terminating `sup` makes it record `supervisor.shutting_down` and ask x to stop in the same turn
    of the node's loop, and the node records x's `lifecycle.exited` when it reaps it."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "sup"
        type = "supervisor"
          [[supervisor.children.children]]
          id = "x"
          manifest = "crasher.toml"
          shutdown = 400
    """) as tree:
        pid = tree.wait_running()["root/sup/x"]
        x_id = tree.node("root/sup/x")["actor_id"]
        busy_in_wasm(tree, "root/sup/x")
        assert tree.call("terminate-child", {"supervisor": "root", "id": "sup"})["ok"] is True
        assert pid_gone(pid)
        [stop] = tree.events("supervisor:root/sup", "supervisor.shutting_down")
        [exit_] = tree.events(x_id, "lifecycle.exited")
        assert exit_.payload()["reason"]["kind"] == "killed" and exit_.payload()["exit_code"] == -signal.SIGKILL
        waited_ms = (exit_.timestamp - stop.timestamp) / 1e6
        assert 400 <= waited_ms < 2500, waited_ms   # T = 400 ms, then the kill
        assert f"root/sup/x (pid {pid}) ignored the polite stop: killing it" in (tree.home / "node.log").read_text()
        report = tree.supervisor_events("root/sup", "supervisor.shutdown_error")
        assert [(r["child"], r["reason"]["kind"]) for r in report] == [("x", "killed")]


def test_brutal_kill_kills_at_once_and_is_an_expected_stop(tmp_path):
    """§1.5: brutal_kill → kill immediately; `killed` is the expected reason.

    "At once" from the exit reason, not a clock: x is idle, so a polite stop would have ended it
    `shutdown` (test below); `killed` by SIGKILL means no polite stop was tried, and the node never
    took the timeout path."""
    with shutdown_tree(tmp_path, "brutal_kill") as tree:
        pid = tree.wait_running()["root/x"]
        x_id = tree.node("root/x")["actor_id"]
        assert tree.call("terminate-child", {"supervisor": "root", "id": "x"})["ok"] is True
        [exit_] = tree.events(x_id, "lifecycle.exited")
        assert exit_.payload()["reason"]["kind"] == "killed" and exit_.payload()["exit_code"] == -signal.SIGKILL
        assert "ignored the polite stop" not in (tree.home / "node.log").read_text()
        assert pid_gone(pid)
        stopped = tree.supervisor_events("root", "supervisor.child_stopped")
        assert [(r["child"], r["reason"]["kind"]) for r in stopped] == [("x", "killed")]


def test_polite_stop_of_an_idle_worker_is_a_clean_shutdown(tmp_path):
    """§1.5: the expected exit reason of a polite stop is `shutdown`."""
    with shutdown_tree(tmp_path, 5000) as tree:
        tree.wait_running()
        assert cli("terminate-child", "root", "x", home=tree.home).returncode == 0
        stopped = tree.supervisor_events("root", "supervisor.child_stopped")
        assert [(r["child"], r["reason"]["kind"]) for r in stopped] == [("x", "shutdown")]


# ---- §1.1 start failure -------------------------------------------------------------------------

def test_start_failure_stops_started_children_in_reverse_and_fails_naming_the_child(tmp_path):
    """§1.1: child k fails → children 1..k-1 stopped in reverse, later ones never start, start fails."""
    manifests(tmp_path)
    (tmp_path / "supervision.toml").write_text("""
[supervisor]
id = "root"
[[supervisor.children]]
id = "a"
manifest = "echo.toml"
[[supervisor.children]]
id = "b"
manifest = "echo.toml"
[[supervisor.children]]
id = "bad"
manifest = "failing.toml"
[[supervisor.children]]
id = "never"
manifest = "echo.toml"
""")
    out = cli("up", str(tmp_path / "supervision.toml"), "--detach", home=tmp_path / "home")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: root supervisor 'root' gave up: shutdown: failed_to_start_child bad")
    assert "init refused" in out.stderr
    tree = Tree.__new__(Tree)
    tree.home = tmp_path / "home"
    assert [e["child"] for e in tree.supervisor_events("root", "supervisor.child_stopped")] == ["b", "a"]
    assert "never" not in [e["child"] for e in tree.supervisor_events("root", "supervisor.child_started")]


def test_failed_restart_shows_restarting_and_retries_until_it_starts(tmp_path):
    """§1.3: a failed restart marks the child `restarting`; retries are posted, not looped, and
    the supervisor keeps answering meanwhile. (Backoff spaces the retries so `restarting` is visible.)"""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 100
        period = 30
        backoff = { initial_ms = 300, max_ms = 300, reset_after_s = 60 }
        [[supervisor.children]]
        id = "w"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "other"
        manifest = "crasher.toml"
    """) as tree:
        pids = tree.wait_running()
        artifacts = list((cache_dir() / "components").glob("*.cwasm"))
        echo_artifact = [a for a in artifacts if _is_echo(a)]
        assert len(echo_artifact) == 1
        hidden = echo_artifact[0].with_suffix(".hidden")
        echo_artifact[0].rename(hidden)                  # the next start of w cannot load its component
        try:
            tree.kill("root/w")
            tree.wait_for(lambda: len(tree.supervisor_events("root", "supervisor.start_error")) >= 2,
                          what="two failed restart attempts")
            assert tree.node("root/w")["status"] == "restarting"
            assert cli("request", "other", "still served", home=tree.home).stdout == "still served\n"
            which = json.loads(cli("which-children", "root", "--json", home=tree.home).stdout)
            assert [r["child"] for r in which["children"] if r["id"] == "w"] == ["restarting"]
        finally:
            hidden.rename(echo_artifact[0])
        restart_of(tree, "root/w", pids["root/w"])


def _is_echo(artifact):
    from harness import WAT
    from theater_otp.worker.component import content_hash
    return artifact.name.startswith(content_hash((WAT / "echo.wat").read_bytes()))


# ---- §1.7 the dynamic API -----------------------------------------------------------------------

def api(tree, *args):
    out = cli(*args, "--json", home=tree.home)
    return out.returncode, json.loads(out.stdout)


def test_dynamic_api_results_match_otp(tmp_path):
    """§1.7: start_child, terminate_child, restart_child, delete_child, which_children, count_children."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """) as tree:
        tree.wait_running()
        m = str(tmp_path / "echo.toml")
        code, r = api(tree, "start-child", "root", m, "--id", "b")
        assert code == 0 and r["result"]["pid"] and r["result"]["path"] == "root/b"
        assert api(tree, "start-child", "root", m, "--id", "b")[1]["error"] == "already_started"
        assert api(tree, "restart-child", "root", "b")[1]["error"] == "running"
        assert api(tree, "delete-child", "root", "b")[1]["error"] == "running"
        assert api(tree, "terminate-child", "root", "b") == (0, {"ok": True, "result": None})
        assert api(tree, "terminate-child", "root", "b")[0] == 0          # already stopped: ok
        assert api(tree, "start-child", "root", m, "--id", "b")[1]["error"] == "already_present"
        which = api(tree, "which-children", "root")[1]["children"]
        assert [(w["id"], w["child"]) for w in which] == [("b", None), ("a", 1)]   # newest first
        assert api(tree, "count-children", "root")[1] == {"supervisor": "root", "specs": 2, "active": 1,
                                                          "supervisors": 0, "workers": 2}
        code, r = api(tree, "restart-child", "root", "b")
        assert code == 0 and r["result"]["pid"]
        api(tree, "terminate-child", "root", "b")
        assert api(tree, "delete-child", "root", "b") == (0, {"ok": True, "result": None})
        for verb in ("terminate-child", "restart-child", "delete-child"):
            assert api(tree, verb, "root", "ghost")[1]["error"] == "not_found"
        assert api(tree, "start-child", "nosuch", m)[1]["error"] == "not_found"


def test_dynamic_child_is_appended_last_in_start_order(tmp_path):
    """§1.2: dynamically added children are appended at the end of the start order (rest_for_one)."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        strategy = "rest_for_one"
        intensity = 5
        period = 30
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """) as tree:
        pids = tree.wait_running()
        api(tree, "start-child", "root", str(tmp_path / "echo.toml"), "--id", "late")
        late = tree.node("root/late")["pid"]
        tree.kill("root/a")
        restart_of(tree, "root/a", pids["root/a"])
        restart_of(tree, "root/late", late)


def test_simple_one_for_one_starts_instances_of_its_template_and_drops_them_when_done(tmp_path):
    """§1.2/§1.7: no child at init; start_child adds instances; a terminated instance is gone."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "pool"
        type = "supervisor"
        strategy = "simple_one_for_one"
        intensity = 5
        period = 30
          [[supervisor.children.children]]
          id = "worker"
          manifest = "echo.toml"
    """) as tree:
        assert tree.node("root/pool")["children"] == []
        ids = [api(tree, "start-child", "pool")[1]["result"]["id"] for _ in range(3)]
        assert ids == ["worker-1", "worker-2", "worker-3"]
        assert api(tree, "count-children", "pool")[1]["specs"] == 1
        pid = tree.node("root/pool/worker-2")["pid"]
        tree.kill("root/pool/worker-2")
        restart_of(tree, "root/pool/worker-2", pid)
        assert api(tree, "terminate-child", "pool", "worker-1")[0] == 0
        assert [c["id"] for c in tree.node("root/pool")["children"]] == ["worker-2", "worker-3"]
        # OTP: an instance that is already gone terminates ok again (idempotent); an id that never
        # named an instance of this supervisor is not_found
        assert api(tree, "terminate-child", "pool", "worker-1") == (0, {"ok": True, "result": None})
        code, answer = api(tree, "terminate-child", "pool", "worker-9")
        assert code != 0 and answer["error"] == "not_found"
        code, answer = api(tree, "terminate-child", "pool", "other-1")
        assert code != 0 and answer["error"] == "not_found"
        assert api(tree, "restart-child", "pool", "worker-2")[1]["error"] == "simple_one_for_one"


# ---- §1.6 significant children -------------------------------------------------------------------

def test_any_significant_child_ending_shuts_its_supervisor_down(tmp_path):
    """§1.6: a significant transient child exiting normally → its supervisor terminates the rest and
    exits `shutdown`; as a transient child, the parent does not restart it."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "keep"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "job"
        type = "supervisor"
        restart = "transient"
        auto_shutdown = "any_significant"
          [[supervisor.children.children]]
          id = "helper"
          manifest = "echo.toml"
          [[supervisor.children.children]]
          id = "main"
          manifest = "crasher.toml"
          restart = "transient"
          significant = true
    """) as tree:
        pids = tree.wait_running()
        cli("send", "job/main", "exit", home=tree.home)
        tree.wait_for(lambda: tree.node("root/job")["status"] == "stopped", what="job shut down")
        assert tree.node("root/keep")["pid"] == pids["root/keep"]
        assert [e.event_type for e in tree.events("supervisor:root/job", "supervisor.auto_shutdown")]
        assert [e["child"] for e in tree.supervisor_events("root/job", "supervisor.child_stopped")] == ["helper"]


def test_start_child_compiles_a_new_component_off_the_loop(tmp_path):
    """While start-child waits for a large, uncached component to compile, the node keeps answering."""
    import threading

    from harness import WAT
    manifests(tmp_path)
    big = (WAT / "echo.wat").read_text()
    body = "\n".join(["i32.const 1", "i32.add"] * 60_000)
    anchor = '(func (export "init")'
    big = big.replace(anchor, f"(func $bulk (param i32) (result i32) local.get 0\n{body})\n    {anchor}", 1)
    assert big.count("$bulk") == 1, "echo.wat changed shape: update this test"
    (tmp_path / "big.wat").write_text(big)
    (tmp_path / "big.toml").write_text('name = "big"\ncomponent = "big.wat"\n')
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """) as tree:
        tree.wait_running()
        order = []
        started = threading.Event()

        def start():
            started.set()
            out = cli("start-child", "root", str(tmp_path / "big.toml"), "--id", "big", home=tree.home, timeout=300)
            order.append(("start-child", out.returncode))

        t = threading.Thread(target=start)
        t.start()
        started.wait()
        log = tree.home / "node.log"
        tree.wait_for(lambda: "off the loop" in log.read_text(), timeout=60, what="the compile to begin")
        if not order:                                   # still compiling: the node must answer meanwhile
            assert cli("request", "a", "still served", home=tree.home).stdout == "still served\n"
            order.append(("request", 0))
        t.join(300)
        assert order[-1] == ("start-child", 0), order
        assert len(order) == 2 and order[0] == ("request", 0), f"the compile ended before the check: {order}"
        assert tree.node("root/big")["status"] == "running"


def test_what_the_node_keeps_for_removed_children_goes_with_them(tmp_path):
    """Issue 11: per-path maps shrink when actors go. 30 temporary children are started and
    terminated (OTP deletes a temporary child's spec when it stops): the node's count of known
    paths is back where it was, and the removed paths no longer resolve."""
    manifests(tmp_path)
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """) as tree:
        tree.wait_running()
        baseline = tree.tree()["known_paths"]
        m = str(tmp_path / "echo.toml")
        for i in range(30):
            r = tree.call("start_child", {"supervisor": "root", "id": f"t{i}", "manifest": m, "restart": "temporary"})
            assert r["ok"] and r["result"]["pid"]
            assert tree.tree()["known_paths"] == baseline + 1
            tree.call("terminate_child", {"supervisor": "root", "id": f"t{i}"})
        assert tree.tree()["known_paths"] == baseline
        with pytest.raises(Exception, match="no actor named"):
            tree.call("resolve", {"target": "root/t7"})
        assert tree.call("resolve", {"target": "root/a"})["path"] == "root/a"
