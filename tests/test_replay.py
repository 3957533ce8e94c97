"""Replay (issue 4): re-run an actor against its recorded chain; host calls come from the record."""

import json

import msgpack
import pytest

from harness import WAT, Tree, cli, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 30
    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
    [[supervisor.children]]
    id = "pump"
    manifest = "pump.toml"
"""


def run_and_stop(tmp_path, kill_counter: bool = True) -> Tree:
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "pump", "pump.wat", initial_state="pump\ncounter", handlers=("timing",))
    tree = Tree(tmp_path, TREE)
    with tree:
        pids = tree.wait_running()
        tree.wait_for(lambda: int(cli("request", "counter", "get", home=tree.home).stdout or 0) >= 3,
                      what="three pumps")
        if kill_counter:
            tree.kill("root/counter")
            tree.wait_for(lambda: (n := tree.node("root/counter"))["pid"] not in (None, pids["root/counter"])
                          and n["status"] == "running", what="counter restarted")
            tree.wait_for(lambda: int(cli("request", "counter", "get", home=tree.home).stdout or 0) >= 2,
                          what="the new counter counting")
    return tree


def replay(tree: Tree, *args: str) -> tuple[int, dict]:
    out = cli("replay", *args, "--json", home=tree.home)
    return out.returncode, json.loads(out.stdout)


def test_replay_of_every_incarnation_matches_event_for_event(tmp_path):
    tree = run_and_stop(tmp_path)
    code, result = replay(tree, "counter")
    assert code == 0 and result["match"] is True, result
    assert result["incarnations"] == [1, 2]
    calls = [e for e in tree.events(result["actor_id"]) if e.event_type in ("actor.init", "message.request")]
    assert result["replayed"] == len(calls)


def test_replay_serves_host_calls_from_the_record(tmp_path):
    """The pump sleeps, requests and sends; on replay none of it happens, the record answers."""
    tree = run_and_stop(tmp_path, kill_counter=False)
    code, result = replay(tree, "pump")
    assert code == 0 and result["match"], result
    host = [e for e in tree.events(result["actor_id"]) if e.event_type.startswith("host.")]
    assert any(e.event_type == "host.timing.sleep" for e in host)
    assert result["replayed"] > len(host)


def test_replay_of_one_incarnation_and_until(tmp_path):
    tree = run_and_stop(tmp_path)
    code, result = replay(tree, "counter", "--incarnation", "2")
    assert code == 0 and result["incarnations"] == [2]
    code, early = replay(tree, "counter", "--until", "3")
    assert code == 0 and early["replayed"] <= 3


def test_replay_of_a_modified_component_reports_the_first_divergence(tmp_path):
    tree = run_and_stop(tmp_path, kill_counter=False)
    out = cli("replay", "counter", "--component", str(WAT / "echo.wat"), home=tree.home)
    assert out.returncode == 1
    first_request = [e for e in tree.events(json.loads(cli("replay", "counter", "--json", home=tree.home).stdout)
                                            ["actor_id"]) if e.event_type == "message.request"][0]
    assert f"diverged at event {first_request.seq} (message.request, incarnation 1)" in out.stdout
    data = msgpack.unpackb(first_request.data)
    # the counter answered with a number; echo answers with the message itself
    assert f'"reply": "{data["reply"].decode()}"' in out.stdout
    assert f'"reply": "{data["params"][0].decode()}"' in out.stdout
