"""Server mode: `server` starts a node with an empty root supervisor; `start`, `stop`, `restart`
and `list` manage its actors one at a time (an `up` node's too). Real processes via the harness."""

import json
from pathlib import Path

import psutil
import pytest

from harness import Tree, cli, pid_gone, wait_gone, walk, write_manifest

pytestmark = pytest.mark.integration


class Server(Tree):
    """A node started with `server --detach` (optionally `--config FILE`) in a private home."""

    def __init__(self, folder: Path, config: str | None = None):
        self.up_args = ()
        self.folder = folder
        self.home = folder / "home"
        self.config = folder / "server.toml"
        if config is not None:
            self.config.write_text(config)
        self.with_config = config is not None
        self.node_pid = None
        self._seen = set()

    def __enter__(self) -> "Server":
        args = ["server", "--detach"] + (["--config", str(self.config)] if self.with_config else [])
        proc = cli(*args, home=self.home)
        if proc.returncode != 0:
            raise AssertionError(f"server failed: {proc.stderr}")
        self.node_pid = self.tree()["node_pid"]
        return self

    def start(self, manifest: Path, *args: str) -> str:
        """`start MANIFEST --id-only`: the actor id it printed (alone on stdout)."""
        proc = cli("start", str(manifest), "--id-only", *args, home=self.home, check=True)
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout
        return lines[0]

    def listed(self) -> list[dict]:
        return json.loads(cli("list", "--json", home=self.home, check=True).stdout)


def by_id(rows: list[dict], actor_id: str) -> dict:
    found = [r for r in rows if r["actor_id"] == actor_id]
    assert len(found) == 1, rows
    return found[0]


def test_server_starts_an_empty_root_and_list_prints_no_rows(tmp_path):
    with Server(tmp_path) as server:
        snap = server.tree()
        assert snap["children"] == [] and snap["strategy"] == "one_for_one" and snap["status"] == "running"
        assert cli("list", home=server.home, check=True).stdout == ""
        assert server.listed() == []


def test_server_takes_the_root_flags_from_a_config_without_children(tmp_path):
    with Server(tmp_path, "[supervisor]\nintensity = 7\nperiod = 11\n") as server:
        snap = server.tree()
        assert (snap["intensity"], snap["period"], snap["children"]) == (7, 11, [])


def test_server_refuses_a_config_with_children_in_one_line(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    config = tmp_path / "server.toml"
    config.write_text('[supervisor]\n[[supervisor.children]]\nid = "a"\nmanifest = "echo.toml"\n')
    proc = cli("server", "--detach", "--config", str(config), home=tmp_path / "home")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "supervisor.children" in lines[0]


def test_start_id_only_prints_an_id_that_list_shows_running(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        actor_id = server.start(echo)
        row = by_id(server.listed(), actor_id)
        assert (row["name"], row["path"], row["status"], row["restarts"]) == ("echo", "root/echo", "running", 0)
        assert row["pid"] and psutil.pid_exists(row["pid"]) and row["rss"] > 0 and row["mailbox"] == 0
        text = cli("list", home=server.home, check=True).stdout.splitlines()
        assert text[0].split()[:3] == ["ACTOR", "ID", "NAME"] and len(text) == 2 and actor_id in text[1]


def test_start_twice_gives_two_actors_with_different_ids(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        first, second = server.start(echo), server.start(echo)
        assert first != second
        rows = server.listed()
        assert sorted(r["path"] for r in rows) == ["root/echo", "root/echo-2"]
        assert all(r["status"] == "running" for r in rows)


def test_a_bad_manifest_is_one_line_and_leaves_the_node_and_its_actors_alone(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    missing_component = tmp_path / "nocomp.toml"
    missing_component.write_text('name = "nocomp"\n')
    (tmp_path / "junk.wasm").write_text("not a component")
    junk = tmp_path / "junk.toml"
    junk.write_text('name = "junk"\ncomponent = "junk.wasm"\n')
    with Server(tmp_path) as server:
        actor_id = server.start(echo)
        pid = by_id(server.listed(), actor_id)["pid"]
        for bad in (missing_component, junk, tmp_path / "absent.toml"):
            proc = cli("start", str(bad), "--id-only", home=server.home)
            assert proc.returncode == 1 and proc.stdout == ""
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {bad}"), proc.stderr
        rows = server.listed()
        assert [(r["actor_id"], r["pid"], r["status"]) for r in rows] == [(actor_id, pid, "running")]
        assert server.start(echo) != actor_id  # the node still starts actors


def test_restart_gives_a_new_pid_and_the_chain_records_it(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        actor_id = server.start(echo)
        before = by_id(server.listed(), actor_id)
        proc = cli("restart", actor_id, home=server.home, check=True)
        assert "restarted root/echo" in proc.stdout
        after = by_id(server.listed(), actor_id)  # the same actor: its id is kept
        assert after["status"] == "running" and after["pid"] not in (None, before["pid"])
        assert after["incarnation"] == before["incarnation"] + 1
        assert server.wait_for(lambda: pid_gone(before["pid"]), what="the old process gone")
        stopped = server.supervisor_events("root", "supervisor.child_stopped")
        started = server.supervisor_events("root", "supervisor.child_started")
        assert [e["child"] for e in stopped] == ["echo"]
        assert [(e["child"], e["incarnation"], e["pid"]) for e in started] == [
            ("echo", before["incarnation"], before["pid"]), ("echo", after["incarnation"], after["pid"])]


def test_stop_removes_the_actor_from_list(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        keep, gone = server.start(echo), server.start(echo)
        pid = by_id(server.listed(), gone)["pid"]
        proc = cli("stop", "root/echo-2", home=server.home, check=True)  # by path; ids and names work too
        assert proc.stdout.strip() == "stopped root/echo-2"
        assert [r["actor_id"] for r in server.listed()] == [keep]
        assert server.wait_for(lambda: pid_gone(pid), what="its process gone")
        assert [c["id"] for c in server.call("which_children", {"supervisor": "root"})["children"]] == ["echo"]
        cli("stop", keep, home=server.home, check=True)
        assert server.listed() == []


@pytest.mark.parametrize("verb", ["stop", "restart"])
def test_an_unknown_id_is_one_line_and_exit_1(tmp_path, verb):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        actor_id = server.start(echo)
        proc = cli(verb, "nosuch", home=server.home)
        assert proc.returncode == 1
        assert proc.stderr.strip() == "error: no actor named 'nosuch'"
        assert by_id(server.listed(), actor_id)["status"] == "running"


def test_the_verbs_without_a_node_exit_3(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    for args in (("start", str(echo)), ("stop", "x"), ("restart", "x"), ("list",)):
        proc = cli(*args, home=tmp_path / "home")
        assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, args


def test_start_stop_restart_work_against_an_up_node(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    supervision = """
        [supervisor]
        id = "root"

        [[supervisor.children]]
        id = "echo"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "team"
        type = "supervisor"
        strategy = "one_for_one"
    """
    with Tree(tmp_path, supervision) as tree:
        tree.wait_running()
        at_root = cli("start", str(echo), "--id-only", home=tree.home, check=True).stdout.strip()
        in_team = cli("start", str(echo), "--id-only", "--parent", "team", "--restart", "transient",
                      home=tree.home, check=True).stdout.strip()
        paths = {r["actor_id"]: r["path"] for r in json.loads(cli("list", "--json", home=tree.home).stdout)}
        assert paths[at_root] == "root/echo-2" and paths[in_team] == "root/team/echo"
        assert {n["path"]: n.get("restart") for n in walk(tree.tree())}["root/team/echo"] == "transient"
        old = tree.node("root/team/echo")["pid"]
        cli("restart", "root/team/echo", home=tree.home, check=True)
        assert tree.node("root/team/echo")["pid"] not in (None, old)
        cli("stop", in_team, home=tree.home, check=True)
        assert tree.node("root/team")["children"] == []


def test_server_detach_then_down_leaves_no_process(tmp_path):
    echo = write_manifest(tmp_path, "echo", "echo.wat")
    home = tmp_path / "home"
    assert cli("server", "--detach", home=home).returncode == 0
    server = Server(tmp_path)
    server.node_pid = server.tree()["node_pid"]
    try:
        server.start(echo)
        server.start(echo)
        procs = server.processes()
        assert len(procs) >= 4  # the node, the forkserver, the chain-writer, the actors
        proc = cli("down", home=home)
        assert proc.returncode == 0 and "stopped" in proc.stdout
        assert wait_gone(procs, 20) == []
    finally:
        server.close()


def test_start_monitor_prints_the_new_actors_events_as_they_are_stored_until_interrupted(tmp_path):
    import signal
    import subprocess

    from harness import CLI

    echo = write_manifest(tmp_path, "echo", "echo.wat")
    with Server(tmp_path) as server:
        proc = subprocess.Popen(CLI + ["start", str(echo), "--monitor", "--home", str(server.home)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:  # the start line, then the actor's events from its start on
                seen.append(line)
                if "actor.init" in line:
                    break
            assert seen[0].startswith("started root/echo")
            assert any("actor.start" in line for line in seen)
            server.call("send", {"target": "echo", "payload": b"watched"})
            for line in proc.stdout:
                if "message.send" in line:
                    assert "watched" in line
                    break
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
            assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
