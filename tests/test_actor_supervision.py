"""Actors that supervise (issue 3, item 8): spawn, list, stop, restart, state, callbacks, strategies.

The boss actor (actors/wat/boss.wat) spawns the manifest named by the first
line of its state from init, and answers requests: spawn, list, stop ID,
restart ID, state ID, log (the notifications its supervisor-handlers got).
"""

import pytest

from harness import WAT, Tree, cli, pid_gone

pytestmark = pytest.mark.integration


def boss_tree(tmp_path, strategy: str | None):
    (tmp_path / "child.toml").write_text(f'name = "child"\ncomponent = "{WAT / "crasher.wat"}"\n')
    extra = f'strategy = "{strategy}"\nintensity = 3\nperiod = 30\n' if strategy else ""
    (tmp_path / "boss.toml").write_text(
        f'name = "boss"\ncomponent = "{WAT / "boss.wat"}"\ninitial_state = "child.toml"\n\n'
        f'[[handler]]\ntype = "supervisor"\n{extra}')
    return Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 5
        period = 30
        [[supervisor.children]]
        id = "boss"
        manifest = "boss.toml"
    """)


def ask(tree, text: str) -> str:
    out = cli("request", "boss", text, home=tree.home)
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n")


def children(tree) -> list[dict]:
    return tree.node("root/boss")["children"]


def test_spawned_children_are_nodes_of_the_tree_each_its_own_process(tmp_path):
    with boss_tree(tmp_path, None) as tree:
        tree.wait_running()
        second = ask(tree, "spawn")
        kids = children(tree)
        assert [k["id"] for k in kids] == ["child-1", "child-2"]
        assert all(k["pid"] and k["status"] == "running" for k in kids)
        assert len({k["pid"] for k in kids} | {tree.node("root/boss")["pid"]}) == 3
        assert ask(tree, "list").split("\n") == [k["actor_id"] for k in kids]
        assert second == kids[1]["actor_id"]


def test_stop_child_stops_it_and_get_child_state_reads_a_live_child(tmp_path):
    with boss_tree(tmp_path, None) as tree:
        tree.wait_running()
        kid = children(tree)[0]
        assert ask(tree, f"state {kid['actor_id']}") == "none"
        assert ask(tree, f"stop {kid['actor_id']}") == "ok"
        assert tree.wait_for(lambda: pid_gone(kid["pid"]), what="child stopped")
        assert children(tree) == []          # temporary: its spec is gone
        assert ask(tree, "stop nobody").startswith("err:")


def test_restart_child_gives_the_child_a_new_process(tmp_path):
    """Theater never implemented restart-child; here it stops the child and starts it from its spec."""
    with boss_tree(tmp_path, None) as tree:
        tree.wait_running()
        kid = children(tree)[0]
        assert ask(tree, f"restart {kid['actor_id']}") == "ok"
        again = tree.wait_for(lambda: (c := children(tree)) and c[0]["pid"] not in (None, kid["pid"]) and c[0],
                              what="child restarted")
        assert again["id"] == kid["id"] and again["status"] == "running"


def test_child_crash_calls_handle_child_error_and_without_a_strategy_the_actor_decides(tmp_path):
    with boss_tree(tmp_path, None) as tree:
        tree.wait_running()
        kid = children(tree)[0]
        cli("send", "boss/child-1", "trap", home=tree.home)
        assert tree.wait_for(lambda: ask(tree, "log") == f"error {kid['actor_id']}", what="boss told")
        assert children(tree) == []          # not restarted by the runtime
        handled = [e.payload() for e in tree.events(tree.node("root/boss")["actor_id"], "supervisor.child-error")]
        assert handled and handled[-1]["handled"] is True and "unreachable" in handled[-1]["reason"]


def test_child_normal_exit_and_external_kill_call_their_handlers(tmp_path):
    with boss_tree(tmp_path, None) as tree:
        tree.wait_running()
        first = children(tree)[0]
        cli("send", "boss/child-1", "exit", home=tree.home)
        tree.wait_for(lambda: ask(tree, "log") == f"exit {first['actor_id']}", what="exit told")
        ask(tree, "spawn")
        second = children(tree)[0]
        tree.kill(second["path"])
        tree.wait_for(lambda: ask(tree, "log").endswith(f"external-stop {second['actor_id']}"), what="kill told")


def test_declared_strategy_restarts_failed_children_like_a_declared_supervisor(tmp_path):
    with boss_tree(tmp_path, "one_for_one") as tree:
        tree.wait_running()
        kid = children(tree)[0]
        cli("send", "boss/child-1", "trap", home=tree.home)
        again = tree.wait_for(lambda: (c := children(tree)) and c[0]["pid"] not in (None, kid["pid"]) and c[0],
                              what="runtime restarted the child")
        assert again["restarts"] == 1
        assert tree.wait_for(lambda: ask(tree, "log") == f"error {kid['actor_id']}", what="boss still told")
        decisions = [e.event_type for e in tree.events("supervisor:root/boss")]
        assert "supervisor.child_restarting" in decisions


def test_killing_the_supervising_actor_takes_its_children_down_first(tmp_path):
    with boss_tree(tmp_path, None) as tree:
        pids = tree.wait_running()
        kid = children(tree)[0]
        tree.kill("root/boss")
        tree.wait_for(lambda: (b := tree.node("root/boss"))["pid"] not in (None, pids["root/boss"])
                      and b["status"] == "running", what="boss restarted")
        assert pid_gone(kid["pid"])
        fresh = tree.wait_for(lambda: children(tree), what="the new boss spawned again")
        assert fresh[0]["pid"] != kid["pid"]
        stopped = tree.supervisor_events("root/boss", "supervisor.child_stopped")
        assert [s["child"] for s in stopped] == ["child-1"]


def test_a_spawn_of_a_path_with_a_nul_byte_is_an_error_to_that_actor_not_the_end_of_the_node(tmp_path):
    """Issue 11: `supervisor.spawn("a\\0b")` from an actor raised out of the node's loop and ended
    the node. Now the spawn is answered with an error (the boss logs it and runs on, its header
    says), the rest of the tree is untouched, and the node keeps serving."""
    (tmp_path / "boss.toml").write_text(
        f'name = "boss"\ncomponent = "{WAT / "boss.wat"}"\ninitial_state = "a\\u0000b"\n\n'
        f'[[handler]]\ntype = "supervisor"\n')
    (tmp_path / "echo.toml").write_text(f'name = "echo"\ncomponent = "{WAT / "echo.wat"}"\n')
    tree = Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "echo"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "boss"
        manifest = "boss.toml"
    """)
    with tree:
        tree.wait_running()
        assert children(tree) == []
        out = cli("request", "echo", "still here", home=tree.home)
        assert out.returncode == 0 and out.stdout.strip() == "still here"
        assert ask(tree, "spawn").startswith("err:") and "NUL byte" in ask(tree, "spawn")
        assert cli("request", "echo", "and here", home=tree.home).returncode == 0
