"""Node lifetime: orderly stop, no orphans after a node SIGKILL, a clean `up` afterwards."""

import os
import signal
import time

import pytest

from harness import Tree, cli, wait_gone, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"

    [[supervisor.children]]
    id = "a"
    manifest = "echo.toml"

    [[supervisor.children]]
    id = "team"
    type = "supervisor"
    strategy = "one_for_all"

      [[supervisor.children.children]]
      id = "b"
      manifest = "echo.toml"

      [[supervisor.children.children]]
      id = "c"
      manifest = "echo.toml"
"""


def test_node_sigkill_leaves_no_process_behind_within_one_second(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        family = tree.processes()
        assert len(family) >= 6  # node, forkserver, chain-writer, three workers
        os.kill(tree.node_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        alive = wait_gone(family, timeout=1.0)
        elapsed = time.monotonic() - killed_at
        assert alive == [], f"still alive {elapsed:.2f} s after the node's SIGKILL: {alive}"


def test_up_after_a_node_crash_starts_cleanly(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        family = tree.processes()
        os.kill(tree.node_pid, signal.SIGKILL)
        assert wait_gone(family, timeout=2) == []
        assert (tree.home / "run" / "node.pid").exists()  # the stale pid file is still there
        again = cli("up", str(tree.config), "--detach", home=tree.home)
        assert again.returncode == 0, again.stderr
        tree.node_pid = tree.tree()["node_pid"]
        assert len(tree.wait_running()) == 3
        assert cli("request", "a", "still here", home=tree.home).stdout == "still here\n"


def test_down_stops_children_in_reverse_start_order(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        pids = tree.wait_running()
        family = tree.processes()
        result = cli("down", home=tree.home)
        assert result.returncode == 0, result.stderr
        assert "tree stopped" in result.stdout
        assert wait_gone(family, timeout=5) == []
        assert [e["child"] for e in tree.supervisor_events("root/team", "supervisor.child_stopped")] == ["c", "b"]
        assert [e["child"] for e in tree.supervisor_events("root", "supervisor.child_stopped")] == ["team", "a"]
        for path, pid in pids.items():
            exits = [e.payload() for e in tree.events(tree_actor_id(tree, path), "lifecycle.exited")]
            assert exits and exits[-1]["reason"]["kind"] == "shutdown", (path, exits)
        tree.node_pid = None


def tree_actor_id(tree: Tree, path: str) -> str:
    from theater_otp.chain.store import connect
    conn = connect(tree.home / "chain.db", readonly=True)
    try:
        return conn.execute("SELECT actor_id FROM actors WHERE path = ? ORDER BY rowid DESC", (path,)).fetchone()[0]
    finally:
        conn.close()


def test_sigterm_to_the_node_stops_the_tree_in_order(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        family = tree.processes()
        os.kill(tree.node_pid, signal.SIGTERM)
        assert wait_gone(family, timeout=10) == []
        assert "node exited with code 0" in (tree.home / "node.log").read_text()
        assert not (tree.home / "run" / "node.pid").exists()
        tree.node_pid = None


def test_cli_without_a_node_exits_3_with_one_line(tmp_path):
    result = cli("tree", home=tmp_path / "nowhere")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no node is running")
