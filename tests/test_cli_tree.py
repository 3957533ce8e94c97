"""`theater-otp tree [PATH] [--depth N] [--json]`: the renderer and the cut on synthetic trees shaped
like the node's `tree` answer, the typer-free command line `main()` takes, and the verb on a real tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from harness import Tree, cli, write_manifest
from theater_otp import cli as theater_cli
from theater_otp.errors import RemoteError
from theater_otp.home import Home

# ---- synthetic trees, shaped like the node's `tree` answer ---------------------------------------

LIMITS = {"memory_bytes": 268435456, "cpu_ms": 5000, "message_bytes": 1048576, "mailbox": 10000,
          "log_bytes_per_s": 16384}


def actor(path: str, pid: int | None = 100, status: str = "running", restarts: int = 0,
          uptime: float | None = 2.5, children: list[dict] | None = None) -> dict:
    return {"id": path.rsplit("/", 1)[-1], "kind": "actor", "path": path, "pid": pid, "status": status,
            "restarts": restarts, "actor_id": f"id-{path}", "name": path.rsplit("/", 1)[-1],
            "manifest": f"/m/{path}.toml", "version": "0.1.0", "restart": "permanent", "incarnation": 1,
            "uptime": uptime, "mailbox": 0, "refused": 0, "limits": dict(LIMITS), "children": children or []}


def supervisor(path: str, children: list[dict], strategy: str = "one_for_one", status: str = "running",
               restarts: int = 0) -> dict:
    return {"id": path.rsplit("/", 1)[-1], "kind": "supervisor", "path": path, "pid": None, "status": status,
            "restarts": restarts, "strategy": strategy, "intensity": 10, "period": 10, "children": children}


def root(children: list[dict]) -> dict:
    return {**supervisor("root", children), "node_pid": 4242, "dropped_frames": 0}


def small_tree() -> dict:
    return root([
        actor("root/counter", pid=11, uptime=3.25),
        supervisor("root/team", [actor("root/team/echo", pid=12, restarts=2, uptime=75.0),
                                 actor("root/team/crasher", pid=None, status="restarting", uptime=None)],
                   strategy="one_for_all", restarts=1),
        supervisor("root/agents", [supervisor("root/agents/workers", [actor("root/agents/workers/w1", pid=13,
                                                                            uptime=7300.0)])],
                   strategy="rest_for_one"),
    ])


def big_tree(teams: int = 10, per_team: int = 100) -> dict:
    """1,000 actors: `teams` supervisors under the root, `per_team` actors each."""
    return root([supervisor(f"root/t{t}", [actor(f"root/t{t}/a{a}", pid=1000 + t * per_team + a)
                                           for a in range(per_team)]) for t in range(teams)])


def nodes(node: dict):
    yield node
    for child in node["children"]:
        yield from nodes(child)


def height(node: dict) -> int:
    return max((1 + height(c) for c in node["children"]), default=0)


# ---- the renderer ---------------------------------------------------------------------------------

@pytest.mark.unit
def test_render_draws_every_node_on_one_line_with_the_documented_columns():
    assert theater_cli._render_tree(small_tree()) == textwrap.dedent("""\
        root  [one_for_one]  node pid 4242
        ├── counter      running    pid 11     restarts 0  up 3.2s
        ├── team  [one_for_all]  running  restarts 1
        │   ├── echo         running    pid 12     restarts 2  up 1m15s
        │   └── crasher      restarting pid -      restarts 0
        └── agents  [rest_for_one]  running
            └── workers  [one_for_one]  running
                └── w1           running    pid 13     restarts 0  up 2h01m
        """)


@pytest.mark.unit
def test_render_of_a_1000_actor_tree_is_one_string_with_a_line_per_node():
    snapshot = big_tree()
    text = theater_cli._render_tree(snapshot)
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 1 + 10 + 1000 == len(list(nodes(snapshot)))
    assert lines[1] == "├── t0  [one_for_one]  running"
    assert lines[2] == "│   ├── a0           running    pid 1000   restarts 0  up 2.5s"
    assert lines[-1] == "    └── a99          running    pid 1999   restarts 0  up 2.5s"


@pytest.mark.unit
def test_render_of_an_actor_that_supervises_draws_its_children_below_it():
    owner = actor("root/boss", pid=20, children=[actor("root/boss/kid", pid=21)])
    assert theater_cli._render_tree(root([owner])).splitlines()[1:] == [
        "└── boss         running    pid 20     restarts 0  up 2.5s",
        "    └── kid          running    pid 21     restarts 0  up 2.5s"]


@pytest.mark.unit
def test_render_from_a_start_below_the_root_heads_with_its_path():
    team = small_tree()["children"][1]
    assert theater_cli._render_tree(team).splitlines()[0] == "root/team  [one_for_all]  running  restarts 1"
    echo = team["children"][0]
    assert theater_cli._render_tree(echo) == "root/team/echo running    pid 12     restarts 2  up 1m15s\n"


# ---- --depth --------------------------------------------------------------------------------------

@pytest.mark.unit
def test_depth_0_is_the_start_alone_and_says_how_many_children_it_hides():
    cut = theater_cli._cut(small_tree(), 0)
    assert cut["children"] == [] and cut["hidden_children"] == 3
    assert theater_cli._render_tree(cut) == "root  [one_for_one]  node pid 4242  (3 children below --depth)\n"


@pytest.mark.unit
def test_depth_n_keeps_n_levels_below_the_start_and_every_field_of_those_it_keeps():
    snapshot = small_tree()
    cut = theater_cli._cut(snapshot, 1)
    assert [c["path"] for c in cut["children"]] == ["root/counter", "root/team", "root/agents"]
    counter, team, agents = cut["children"]
    assert counter == snapshot["children"][0] and "hidden_children" not in counter  # a leaf hides nothing
    assert team["children"] == [] and team["hidden_children"] == 2
    assert agents["hidden_children"] == 1
    assert {k: v for k, v in team.items() if k not in ("children", "hidden_children")} == \
        {k: v for k, v in snapshot["children"][1].items() if k != "children"}
    assert theater_cli._render_tree(cut).splitlines()[2:] == [
        "├── team  [one_for_all]  running  restarts 1  (2 children below --depth)",
        "└── agents  [rest_for_one]  running  (1 child below --depth)"]
    assert snapshot == small_tree()  # the cut is a copy


@pytest.mark.unit
def test_depth_at_or_beyond_the_height_changes_nothing():
    snapshot = big_tree(3, 5)
    assert height(snapshot) == 2
    assert theater_cli._cut(snapshot, 2) == snapshot == theater_cli._cut(snapshot, 50)
    assert len(list(nodes(theater_cli._cut(big_tree(), 1)))) == 11


@pytest.mark.unit
def test_a_negative_depth_is_refused():
    with pytest.raises(ValueError, match="depth must be 0 or more"):
        theater_cli._cut(small_tree(), -1)


# ---- the start path -------------------------------------------------------------------------------

class FakeClient:
    """The node's `resolve` over a snapshot's actors: by actor id, path, then unique id."""

    def __init__(self, snapshot: dict):
        self.actors = [n for n in nodes(snapshot) if n["kind"] == "actor"]

    def call(self, kind: str, body: dict | None = None, timeout_s: float = 10.0) -> dict:
        assert kind == "resolve" and body is not None
        ref = body["target"]
        hits = [n for n in self.actors if ref in (n["actor_id"], n["path"])] or \
               [n for n in self.actors if n["id"] == ref]
        if len(hits) != 1:
            raise RemoteError("not_found", f"no actor named {ref!r}")
        return {"path": hits[0]["path"], "actor_id": hits[0]["actor_id"], "running": True}


@pytest.mark.unit
@pytest.mark.parametrize(("ref", "expected"), [
    ("root", ("root", None)), ("root/team", ("root/team", None)), ("team", ("root/team", None)),
    ("workers", ("root/agents/workers", None)), ("echo", ("root/team/echo", "id-root/team/echo")),
    ("root/agents/workers/w1", ("root/agents/workers/w1", "id-root/agents/workers/w1")),
    ("id-root/counter", ("root/counter", "id-root/counter")),
])
def test_a_start_is_a_supervisor_by_path_or_id_else_what_the_node_resolves(ref, expected):
    snapshot = small_tree()
    path, actor_id = theater_cli._live_target(FakeClient(snapshot), snapshot, ref)  # type: ignore[arg-type]
    assert (path, actor_id) == expected
    assert theater_cli._find_path(snapshot, path)["path"] == path


@pytest.mark.unit
def test_an_unknown_start_is_the_nodes_not_found():
    snapshot = small_tree()
    with pytest.raises(RemoteError, match="no actor named 'nosuch'") as caught:
        theater_cli._live_target(FakeClient(snapshot), snapshot, "nosuch")  # type: ignore[arg-type]
    assert caught.value.code == "not_found" and caught.value.exit_code == 1


# ---- the command line: main() without typer, typer for the rest ------------------------------------

def typer_args(monkeypatch, argv: list[str]) -> dict | None:
    """What the typer verb passes `_show_tree` for `argv`, or None if typer refuses the line."""
    seen: list[dict] = []
    monkeypatch.setattr(theater_cli, "_show_tree", lambda **kw: seen.append(kw) or 0)
    result = CliRunner().invoke(theater_cli._typer_app(), argv)
    return seen[0] if result.exit_code == 0 and seen else None


PLAIN = [["tree"], ["tree", "--json"], ["tree", "root/team"], ["tree", "--depth", "0"], ["tree", "--depth=12"],
         ["tree", "--home", "/tmp/h"], ["tree", "--home=rel/h"], ["tree", "team", "--json", "--depth", "3"],
         ["tree", "--json", "--home", "/tmp/h", "w1", "--depth=1"], ["tree", "a b", "--home", "~/x"]]


@pytest.mark.unit
@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_main_reads_a_plain_tree_line_as_typer_does(monkeypatch, argv):
    monkeypatch.delenv("THEATER_OTP_HOME", raising=False)
    fast = theater_cli._tree_argv(argv)
    assert fast is not None and fast == typer_args(monkeypatch, argv)


@pytest.mark.unit
def test_main_and_typer_agree_on_the_home_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("THEATER_OTP_HOME", str(tmp_path))
    fast = theater_cli._tree_argv(["tree"])
    slow = typer_args(monkeypatch, ["tree"])
    assert fast is not None and slow is not None
    assert Home.at(fast["home"]) == Home.at(slow["home"]) == Home.at(tmp_path)


@pytest.mark.unit
@pytest.mark.parametrize("argv", [
    ["tree", "--help"], ["tree", "--depth", "-1"], ["tree", "--depth=-1"], ["tree", "--depth", "x"],
    ["tree", "--depth", "1.5"], ["tree", "--depth"], ["tree", "--depth", "007"], ["tree", "a", "b"],
    ["tree", "--json", "--json"], ["tree", "--home"], ["tree", "--home="], ["tree", "--", "a"], ["tree", "-x"],
    ["tree", ""], ["state", "a"], [],
], ids=lambda argv: " ".join(argv) or "(none)")
def test_main_leaves_any_other_line_to_typer(argv):
    assert theater_cli._tree_argv(argv) is None


@pytest.mark.unit
@pytest.mark.parametrize(("args", "why"), [
    (["--depth", "-1"], "greater than or equal to 0"), (["--depth", "x"], "valid integer"),
    (["--depth", "1.5"], "valid integer"), (["a", "b"], "unexpected extra argument"),
])
def test_a_bad_depth_or_a_second_path_is_a_usage_error(args, why):
    result = CliRunner().invoke(theater_cli._typer_app(), ["tree", *args])
    assert result.exit_code == 2 and why in " ".join(result.output.split())  # as wrapped to the width


@pytest.mark.unit
def test_main_runs_a_plain_tree_without_building_the_typer_app(monkeypatch, tmp_path, capsys):
    def no_typer():
        raise AssertionError("the typer app was built")
    monkeypatch.setattr(theater_cli, "_typer_app", no_typer)
    monkeypatch.setattr(sys, "argv", ["theater-otp", "tree", "--home", str(tmp_path)])
    with pytest.raises(SystemExit) as caught:
        theater_cli.main()
    assert caught.value.code == 3
    assert capsys.readouterr().err == f"error: no node is running at {tmp_path} (start one with `theater-otp up`)\n"


@pytest.mark.integration
def test_importing_the_cli_loads_no_typer_pydantic_rich_psutil_or_wasmtime():
    heavy = ["typer", "pydantic", "rich", "psutil", "wasmtime", "theater_otp.node.boot", "theater_otp.chain.store"]
    code = f"import sys, theater_otp.cli, theater_otp.client; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the verb on a real tree ----------------------------------------------------------------------

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
      id = "inner"
      type = "supervisor"
      strategy = "rest_for_one"

        [[supervisor.children.children.children]]
        id = "c"
        manifest = "echo.toml"
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-tree")
    write_manifest(folder, "echo", "echo.wat")
    with Tree(folder, TREE) as t:
        t.wait_running()
        yield t


def tree_json(real: Tree, *args: str) -> dict:
    return json.loads(cli("tree", "--json", *args, home=real.home, check=True).stdout)


def paths(node: dict) -> list[str]:
    return [n["path"] for n in nodes(node)]


@pytest.mark.integration
def test_tree_json_is_the_nodes_answer(real):
    full = tree_json(real)
    assert paths(full) == ["root", "root/a", "root/team", "root/team/b", "root/team/inner", "root/team/inner/c"]
    assert full["node_pid"] == real.node_pid and "hidden_children" not in json.dumps(full)


@pytest.mark.integration
@pytest.mark.parametrize(("ref", "start"), [
    ("root/team", "root/team"), ("team", "root/team"), ("inner", "root/team/inner"),
    ("root/team/b", "root/team/b"), ("c", "root/team/inner/c"), ("inner/c", "root/team/inner/c"),
])
def test_tree_path_starts_at_a_supervisor_or_an_actor(real, ref, start):
    sub = tree_json(real, ref)
    assert sub["path"] == start
    assert paths(sub) == [p for p in paths(tree_json(real)) if p == start or p.startswith(start + "/")]


@pytest.mark.integration
def test_tree_path_takes_an_actor_id(real):
    b = real.node("root/team/b")
    assert tree_json(real, b["actor_id"])["path"] == "root/team/b"


@pytest.mark.integration
def test_tree_depth_limits_text_and_json_from_the_root_or_a_start(real):
    top = cli("tree", "--depth", "0", home=real.home, check=True).stdout
    assert top == f"root  [one_for_one]  node pid {real.node_pid}  (2 children below --depth)\n"
    one = tree_json(real, "--depth", "1")
    assert paths(one) == ["root", "root/a", "root/team"] and one["children"][1]["hidden_children"] == 2
    team = cli("tree", "team", "--depth=1", home=real.home, check=True).stdout.splitlines()
    assert team[0] == "root/team  [one_for_all]  running"
    assert [line.split()[1] for line in team[1:]] == ["b", "inner"]
    assert team[2].endswith("(1 child below --depth)")
    assert paths(tree_json(real, "team", "--depth", "9")) == paths(tree_json(real, "team"))


@pytest.mark.integration
def test_tree_text_draws_the_whole_tree(real):
    lines = cli("tree", home=real.home, check=True).stdout.splitlines()
    assert [line.lstrip("│├└─ ").split()[0] for line in lines] == ["root", "a", "team", "b", "inner", "c"]
    assert lines[5].startswith("        └── c ")


@pytest.mark.integration
def test_tree_of_an_unknown_path_is_one_line_and_exit_1_as_for_other_verbs(real):
    out = cli("tree", "nosuch", home=real.home)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "error: no actor named 'nosuch'\n")
    assert cli("state", "nosuch", home=real.home).returncode == out.returncode


@pytest.mark.integration
@pytest.mark.parametrize("args", [("--depth", "-1"), ("--depth", "two"), ("--depth=1.5",), ("a", "b")])
def test_tree_bad_arguments_are_usage_errors(real, args):
    out = cli("tree", *args, home=real.home)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr


@pytest.mark.integration
def test_tree_without_a_node_is_exit_3(tmp_path):
    out = cli("tree", "team", "--depth", "1", home=tmp_path / "none")
    assert out.returncode == 3 and out.stderr.startswith("error: no node is running at ")


@pytest.mark.integration
def test_tree_through_typer_matches_main(real):
    """The typer verb (what `tree --help`'s neighbours and odd spellings go through) prints what main() does."""
    result = CliRunner().invoke(theater_cli._typer_app(), ["tree", "team", "--json", "--home", str(real.home)])
    assert result.exit_code == 0
    assert paths(json.loads(result.stdout)) == paths(tree_json(real, "team"))


@pytest.mark.integration
def test_tree_help_lists_path_and_depth():
    out = subprocess.run([sys.executable, "-m", "theater_otp.cli", "tree", "--help"], capture_output=True,
                         text=True, check=True, env={**os.environ, "COLUMNS": "120"})
    assert "[PATH]" in out.stdout and "--depth" in out.stdout
