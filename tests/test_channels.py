"""Channels (message-server-host open-channel / send-on-channel / close-channel and the
handle-channel-* exports) between real workers; both ends' chains record every channel event."""

import json

import pytest

from harness import Tree, cli, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10
    [[supervisor.children]]
    id = "a"
    manifest = "chan.toml"
    [[supervisor.children]]
    id = "b"
    manifest = "chan.toml"
    [[supervisor.children]]
    id = "c"
    manifest = "chan.toml"
    [[supervisor.children]]
    id = "echo"
    manifest = "echo.toml"
"""


def ask(tree: Tree, target: str, payload: bytes) -> str:
    reply = tree.call("request", {"target": target, "payload": payload, "timeout_ms": 10_000}, timeout_s=15)
    return bytes(reply["ok"]).decode()


def log_of(tree: Tree, path: str) -> list[str]:
    return [line for line in ask(tree, path, b"g").splitlines() if line]


def test_open_send_close_and_refusals_reach_both_ends_and_both_chains(tmp_path):
    write_manifest(tmp_path, "chan", "chan.wat")
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        before = tree.wait_running()
        channel = ask(tree, "a", b"ob")
        assert channel.startswith("ch-"), channel
        assert log_of(tree, "b") == [f"open {channel} hello"]
        # both ends send; each message reaches the other end's handle-channel-message
        assert ask(tree, "a", b"s" + channel.encode() + b"\0ping") == "ok"
        assert ask(tree, "b", b"s" + channel.encode() + b"\0pong") == "ok"
        assert log_of(tree, "b")[-1] == f"msg {channel} ping"
        assert log_of(tree, "a") == [f"msg {channel} pong"]
        # an actor that is not on the channel cannot use it
        assert ask(tree, "c", b"s" + channel.encode() + b"\0spy") == f"ERR:channel '{channel}' is not this actor's"
        # the other end is told of a close
        assert ask(tree, "b", b"c" + channel.encode()) == "ok"
        assert log_of(tree, "a")[-1] == f"close {channel}"
        assert ask(tree, "a", b"s" + channel.encode() + b"\0late") == f"ERR:no open channel '{channel}'"
        # refusals come back to the opener as its err
        assert ask(tree, "a", b"rb") == "ERR:root/b refused the channel: not today"
        assert ask(tree, "a", b"oecho") == "ERR:root/echo refused the channel: this actor does not accept channels"
        assert ask(tree, "a", b"onobody").startswith("ERR:no actor")
        assert tree.pids() == before  # none of it was a crash

        a_id, b_id = tree.node("root/a")["actor_id"], tree.node("root/b")["actor_id"]
        a_types = [e.event_type for e in tree.events(a_id)]
        b_types = [e.event_type for e in tree.events(b_id)]
        assert "host.message-server-host.open-channel" in a_types
        assert a_types.count("host.message-server-host.send-on-channel") == 2
        assert "channel.message" in a_types and "channel.close" in a_types
        assert b_types.count("channel.open") == 2  # accepted once, refused once
        assert "channel.message" in b_types and "host.message-server-host.close-channel" in b_types
        refused = [e.payload() for e in tree.events(b_id, "channel.open")][-1]
        assert refused["accepted"] is False and refused["message"] == b"not today"

    for name in ("a", "b"):
        out = cli("replay", name, "--json", home=tree.home)
        assert out.returncode == 0 and json.loads(out.stdout)["match"], out.stdout


def test_when_one_end_dies_the_other_end_gets_handle_channel_close(tmp_path):
    write_manifest(tmp_path, "chan", "chan.wat")
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        channel = ask(tree, "a", b"ob")
        old_b = tree.kill("root/b")
        tree.wait_for(lambda: log_of(tree, "a")[-1:] == [f"close {channel}"], what="a told of the close")
        tree.wait_for(lambda: tree.node("root/b")["pid"] not in (None, old_b), what="b restarted")
        # the channel died with b's incarnation: the new b is not on it
        assert ask(tree, "a", b"s" + channel.encode() + b"\0hello?") == f"ERR:no open channel '{channel}'"
        close = [e.payload() for e in tree.events(tree.node("root/a")["actor_id"], "channel.close")][-1]
        assert close["channel"] == channel and "root/b ended" in close["reason"]
