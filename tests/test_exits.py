"""How an actor's end is classified and what its supervisor does (docs/supervision.md, spec §1.4)."""

import pytest

from harness import Tree, cli, write_manifest

pytestmark = pytest.mark.integration


def crasher_tree(tmp_path, restart: str) -> Tree:
    write_manifest(tmp_path, "crasher", "crasher.wat")
    write_manifest(tmp_path, "echo", "echo.wat")
    return Tree(tmp_path, f"""
        [supervisor]
        id = "root"
        intensity = 10
        period = 10
        [[supervisor.children]]
        id = "x"
        manifest = "crasher.toml"
        restart = "{restart}"
        [[supervisor.children]]
        id = "other"
        manifest = "echo.toml"
    """)


def last_exit(tree: Tree, path: str) -> dict:
    actor_id = tree.node(path)["actor_id"]
    return tree.wait_for(lambda: [e.payload() for e in tree.events(actor_id, "lifecycle.exited")],
                         what=f"{path} exit recorded")[-1]


def test_err_from_an_export_is_an_abnormal_exit_and_is_restarted(tmp_path):
    with crasher_tree(tmp_path, "permanent") as tree:
        before = tree.wait_running()
        cli("send", "x", "err", home=tree.home)
        after = tree.wait_for(lambda: (p := tree.wait_running()) and p["root/x"] != before["root/x"] and p,
                              what="x restarted")
        assert after["root/other"] == before["root/other"]
        reason = last_exit(tree, "root/x")["reason"]
        assert reason["kind"] == "abnormal" and "returned err: asked to fail" in reason["detail"]
        crash = [e.payload() for e in tree.events(tree.node("root/x")["actor_id"], "actor.crash")]
        assert "asked to fail" in crash[-1]["reason"]


def test_trap_is_an_abnormal_exit_naming_the_trap(tmp_path):
    with crasher_tree(tmp_path, "permanent") as tree:
        tree.wait_running()
        cli("send", "x", "trap", home=tree.home)
        reason = last_exit(tree, "root/x")["reason"]
        assert reason["kind"] == "abnormal" and "unreachable" in reason["detail"]
        tree.wait_for(lambda: tree.node("root/x")["restarts"] == 1, what="x restarted")


def test_runtime_shutdown_is_a_normal_exit_a_transient_child_stays_down(tmp_path):
    with crasher_tree(tmp_path, "transient") as tree:
        tree.wait_running()
        cli("send", "x", "exit", home=tree.home)
        assert last_exit(tree, "root/x")["reason"]["kind"] == "normal"
        node = tree.wait_for(lambda: (n := tree.node("root/x"))["status"] == "stopped" and n, what="x stopped")
        assert node["pid"] is None and node["restarts"] == 0


def test_transient_child_killed_by_sigkill_is_restarted(tmp_path):
    with crasher_tree(tmp_path, "transient") as tree:
        before = tree.wait_running()
        tree.kill("root/x")
        assert last_exit(tree, "root/x")["reason"]["kind"] == "killed"
        tree.wait_for(lambda: (p := tree.wait_running()) and p["root/x"] != before["root/x"], what="x restarted")


def test_runtime_shutdown_of_a_permanent_child_is_restarted(tmp_path):
    with crasher_tree(tmp_path, "permanent") as tree:
        tree.wait_running()
        cli("send", "x", "exit", home=tree.home)
        tree.wait_for(lambda: tree.node("root/x")["restarts"] == 1 and tree.node("root/x")["status"] == "running",
                      what="x restarted")


def test_temporary_child_is_dropped_from_the_tree_after_it_exits(tmp_path):
    with crasher_tree(tmp_path, "temporary") as tree:
        tree.wait_running()
        cli("send", "x", "err", home=tree.home)
        tree.wait_for(lambda: [c["id"] for c in tree.tree()["children"]] == ["other"], what="x dropped")


def test_infinite_loop_is_stopped_by_the_cpu_budget(tmp_path):
    """An export that never returns is a crash (epoch deadline), not a hung worker."""
    with crasher_tree(tmp_path, "permanent") as tree:
        tree.wait_running()
        cli("send", "x", "loop", home=tree.home)
        # a hang guard, not a time bound: the default budget is 5 s of the thread's CPU, which a
        # loaded 2-core box (three test workers) gives it in ~15-20 s of wall time
        reason = tree.wait_for(lambda: last_exit(tree, "root/x")["reason"], timeout=60, what="loop interrupted")
        assert reason["kind"] == "abnormal" and "CPU budget exceeded" in reason["detail"]
