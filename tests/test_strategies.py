"""Strategies on real worker processes and real SIGKILLs (otp-supervisor.md §1.2, §1.5).

Each test kills one chosen child and checks exactly which children got new
pids and which kept theirs, and that stops ran in reverse start order and
starts in start order (read from the supervisor's own chain).
"""

import pytest

from harness import Tree, write_manifest

pytestmark = pytest.mark.integration


def three_workers(tmp_path, strategy: str) -> str:
    write_manifest(tmp_path, "echo", "echo.wat")
    children = "".join(f"""
        [[supervisor.children]]
        id = "{cid}"
        manifest = "echo.toml"
        shutdown = 2000
    """ for cid in ("a", "b", "c"))
    return f"""
        [supervisor]
        id = "root"
        strategy = "{strategy}"
        intensity = 10
        period = 10
    """ + children


def restart_events(tree: Tree, sup: str, expected_starts: int) -> tuple[list[str], list[str]]:
    """(children stopped, children started by restarts) in the order the supervisor did it."""
    def collect():
        started = [e["child"] for e in tree.supervisor_events(sup, "supervisor.child_started") if e.get("restart")]
        return started if len(started) >= expected_starts else None
    started = tree.wait_for(collect, what=f"{expected_starts} restart start(s) in {sup}'s chain")
    stopped = [e["child"] for e in tree.supervisor_events(sup, "supervisor.child_stopped")]
    return stopped, started


def test_one_for_one_restarts_only_the_dead_child(tmp_path):
    with Tree(tmp_path, three_workers(tmp_path, "one_for_one")) as tree:
        before = tree.wait_running()
        tree.kill("root/b")
        after = tree.wait_for(lambda: (p := tree.wait_running()) and p["root/b"] != before["root/b"] and p,
                              what="b restarted")
        assert after["root/a"] == before["root/a"]
        assert after["root/c"] == before["root/c"]
        assert after["root/b"] != before["root/b"]
        stopped, started = restart_events(tree, "root", 1)
        assert stopped == [] and started == ["b"]
        assert tree.node("root/b")["restarts"] == 1


def test_one_for_all_stops_others_in_reverse_then_starts_all_in_order(tmp_path):
    with Tree(tmp_path, three_workers(tmp_path, "one_for_all")) as tree:
        before = tree.wait_running()
        tree.kill("root/b")
        stopped, started = restart_events(tree, "root", 3)
        after = tree.wait_running()
        assert all(after[p] != before[p] for p in before), (before, after)
        assert stopped == ["c", "a"]          # the others, reverse start order
        assert started == ["a", "b", "c"]     # everyone, start order


def test_rest_for_one_restarts_the_dead_child_and_those_after_it(tmp_path):
    with Tree(tmp_path, three_workers(tmp_path, "rest_for_one")) as tree:
        before = tree.wait_running()
        tree.kill("root/b")
        stopped, started = restart_events(tree, "root", 2)
        after = tree.wait_running()
        assert after["root/a"] == before["root/a"]
        assert after["root/b"] != before["root/b"]
        assert after["root/c"] != before["root/c"]
        assert stopped == ["c"]
        assert started == ["b", "c"]


def test_rest_for_one_kill_of_last_child_touches_nobody_else(tmp_path):
    with Tree(tmp_path, three_workers(tmp_path, "rest_for_one")) as tree:
        before = tree.wait_running()
        tree.kill("root/c")
        stopped, started = restart_events(tree, "root", 1)
        after = tree.wait_running()
        assert (after["root/a"], after["root/b"]) == (before["root/a"], before["root/b"])
        assert after["root/c"] != before["root/c"]
        assert stopped == [] and started == ["c"]


NESTED = """
    [supervisor]
    id = "root"
    strategy = "one_for_all"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "x"
    manifest = "echo.toml"

    [[supervisor.children]]
    id = "team"
    type = "supervisor"
    strategy = "rest_for_one"
    intensity = 10
    period = 10

      [[supervisor.children.children]]
      id = "a"
      manifest = "echo.toml"

      [[supervisor.children.children]]
      id = "b"
      manifest = "echo.toml"

    [[supervisor.children]]
    id = "y"
    manifest = "echo.toml"
"""


def test_nested_supervisor_handles_its_own_child_without_the_parent(tmp_path):
    """A death inside `team` is team's business: root (one_for_all) must not react."""
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, NESTED) as tree:
        before = tree.wait_running()
        tree.kill("root/team/a")
        stopped, started = restart_events(tree, "root/team", 2)
        after = tree.wait_running()
        assert started == ["a", "b"] and stopped == ["b"]
        assert after["root/x"] == before["root/x"] and after["root/y"] == before["root/y"]
        assert tree.supervisor_events("root", "supervisor.child_restarting") == []


def test_one_for_all_restarts_a_nested_supervisor_subtree(tmp_path):
    """Killing x under a one_for_all root restarts team (a whole subtree) and y: every pid changes."""
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, NESTED) as tree:
        before = tree.wait_running()
        tree.kill("root/x")
        stopped, started = restart_events(tree, "root", 3)
        after = tree.wait_running()
        assert all(after[p] != before[p] for p in before), (before, after)
        assert stopped == ["y", "team"]
        assert started == ["x", "team", "y"]
        assert tree.node("root/team")["restarts"] == 1
