"""Messages: CLI send/request, actor-to-actor send and request by name, errors that say why."""

import json

import pytest

from harness import Tree, cli, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    strategy = "one_for_one"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"

    [[supervisor.children]]
    id = "relay"
    manifest = "relay.toml"

    [[supervisor.children]]
    id = "pump"
    manifest = "pump.toml"
"""


def boot(tmp_path, with_pump: bool = False) -> Tree:
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "relay", "relay.wat", initial_state="counter")
    write_manifest(tmp_path, "pump", "pump.wat", initial_state="pump\ncounter", handlers=("timing",))
    tree = TREE if with_pump else TREE.split("[[supervisor.children]]\n    id = \"pump\"")[0]
    return Tree(tmp_path, tree)


def test_cli_request_prints_the_reply_and_send_is_one_way(tmp_path):
    with boot(tmp_path) as tree:
        tree.wait_running()
        for _ in range(3):
            assert cli("send", "counter", "inc", home=tree.home).returncode == 0
        assert tree.wait_for(lambda: cli("request", "counter", "get", home=tree.home).stdout == "3\n",
                             what="three sends counted")
        reply = cli("request", "root/counter", "inc", "--json", home=tree.home)
        assert json.loads(reply.stdout) == {"reply": "4"}


def test_request_accepts_the_actor_id_and_a_file_payload(tmp_path):
    with boot(tmp_path) as tree:
        actor_id = tree.node("root/counter")["actor_id"]
        payload = tmp_path / "msg.bin"
        payload.write_bytes(b"get")
        out = cli("request", actor_id, "--file", str(payload), home=tree.home)
        assert out.returncode == 0 and out.stdout == "0\n"


def test_actor_request_to_another_actor_by_sibling_name(tmp_path):
    """relay forwards the request to `counter` through message-server-host.request."""
    with boot(tmp_path) as tree:
        assert cli("request", "relay", "inc", home=tree.home).stdout == "1\n"
        assert cli("request", "relay", "inc", home=tree.home).stdout == "2\n"
        host_calls = [e.payload() for e in tree.events(tree.node("root/relay")["actor_id"],
                                                       "host.message-server-host.request")]
        assert [c["args"] for c in host_calls] == [["counter", b"inc"], ["counter", b"inc"]]
        assert [c["result"] for c in host_calls] == [b"1", b"2"]


def test_actor_send_to_another_actor(tmp_path):
    with boot(tmp_path) as tree:
        assert cli("send", "relay", "inc", home=tree.home).returncode == 0
        assert tree.wait_for(lambda: cli("request", "counter", "get", home=tree.home).stdout == "1\n",
                             what="relayed send counted")


def test_continuous_traffic_between_actors(tmp_path):
    """The pump asks the counter to count every 250 ms, by itself, forever."""
    with boot(tmp_path, with_pump=True) as tree:
        tree.wait_for(lambda: int(cli("request", "counter", "get", home=tree.home).stdout) >= 3,
                      timeout=10, what="the pump's third tick")


def test_request_to_an_unknown_actor_is_a_clear_error(tmp_path):
    with boot(tmp_path) as tree:
        out = cli("request", "nobody", "hi", home=tree.home)
        assert out.returncode == 1
        assert out.stderr.strip() == "error: no actor named 'nobody'"


def test_actor_request_to_an_unknown_actor_returns_err_to_the_actor(tmp_path):
    """relay's request fails; relay turns the err into its reply (it does not crash)."""
    write_manifest(tmp_path, "relay", "relay.wat", initial_state="ghost")
    with Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "relay"
        manifest = "relay.toml"
    """) as tree:
        out = cli("request", "relay", "hi", home=tree.home)
        assert out.stdout.strip() == "no actor named 'ghost'"
        assert tree.node("root/relay")["restarts"] == 0


def test_state_shows_the_actor_state(tmp_path):
    with boot(tmp_path) as tree:
        cli("request", "counter", "inc", home=tree.home)
        out = cli("state", "counter", "--json", home=tree.home)
        assert json.loads(out.stdout) == {"state": "1", "bytes": 1}
