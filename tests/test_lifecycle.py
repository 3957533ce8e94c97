"""Node lifetime: orderly stop, no orphans after a node SIGKILL, a clean `up` afterwards."""

import contextlib
import ctypes
import os
import signal

import psutil
import pytest

from harness import Tree, cli, living, wait_gone, write_manifest

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


PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def adopting_orphans():
    """Make this process the subreaper of what it starts: the detached node, then the processes its
    death orphans, become our children, so their exit statuses can be read (os.waitpid)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_node_sigkill_leaves_no_process_behind_and_none_lingers(tmp_path):
    """Nothing outlives a SIGKILLed node, and nothing lingers: shown by how each process ended, not
    by a clock. The node's own children (forkserver, resource tracker) exit on their own as the
    node's end of their pipe closes; every process forked from the forkserver (chain-writer,
    workers) dies by SIGKILL, the kernel's parent-death signal, delivered as its parent goes,
    rather than noticing later and exiting on its own."""
    write_manifest(tmp_path, "echo", "echo.wat")
    with adopting_orphans(), Tree(tmp_path, TREE) as tree:
        workers = tree.wait_running().values()
        family = tree.processes()
        assert len(family) >= 6  # node, forkserver, chain-writer, three workers
        node = tree.node_pid
        # the node's own children: the forkserver and multiprocessing's resource tracker
        helpers = {p.pid for p in family if p.ppid() == node}
        assert {psutil.Process(pid).ppid() for pid in workers} <= helpers
        ended: dict[int, int] = {}

        def reap() -> bool:
            for p in family:
                if p.pid not in ended:
                    try:
                        pid, status = os.waitpid(p.pid, os.WNOHANG)
                    except ChildProcessError:
                        continue  # not ours yet: its parent is still alive
                    if pid:
                        ended[pid] = status
            return len(ended) == len(family)

        os.kill(tree.node_pid, signal.SIGKILL)
        tree.wait_for(reap, timeout=30, what="every process of the node to end")
        assert living(family) == []
        killed = {pid for pid, status in ended.items()
                  if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL}
        forked = {p.pid for p in family} - {node} - helpers   # chain-writer and workers
        assert node in killed
        assert all(os.WIFEXITED(ended[pid]) for pid in helpers), {pid: ended[pid] for pid in helpers}
        assert forked <= killed, {pid: ended[pid] for pid in forked - killed}
        tree.node_pid = None


def test_up_after_a_node_crash_starts_cleanly(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        family = tree.processes()
        os.kill(tree.node_pid, signal.SIGKILL)
        assert wait_gone(family, timeout=30) == []  # a hang guard: the SIGKILL test above shows how they go
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
        assert wait_gone(family, timeout=30) == []  # a hang guard (`down` answers once stopped)
        assert [e["child"] for e in tree.supervisor_events("root/team", "supervisor.child_stopped")] == ["c", "b"]
        assert [e["child"] for e in tree.supervisor_events("root", "supervisor.child_stopped")] == ["team", "a"]
        for path in pids:
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
