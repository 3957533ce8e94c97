"""websocket-server (issue 10): a real WebSocket client (aiohttp's) against an actor's port, served
by the node's gateway. The actor is actors/wat/wsecho.wat: it welcomes a connection, echoes text
and binary frames, counts events in its state, closes on `bye`, and fails on command (`crash`
traps, `err` returns err)."""

import asyncio

import aiohttp
import pytest

from harness import WAT, Tree, cli, free_port

pytestmark = pytest.mark.integration



def ws_tree(tmp_path, port: int, settings: str = "") -> Tree:
    (tmp_path / "ws.toml").write_text(
        f'name = "ws"\ncomponent = "{WAT / "wsecho.wat"}"\n\n[[handler]]\ntype = "websocket-server"\n'
        f'port = {port}\npath = "/live"\n{settings}\n')
    return Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 20
        period = 10
        [[supervisor.children]]
        id = "ws"
        manifest = "ws.toml"
    """)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _session(port: int, steps: list, path: str = "/live") -> list:
    """Connect, then for each step send it (str: text, bytes: binary) and read one answer;
    None as a step reads one frame without sending. Returns what came back, closes included."""
    out: list = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}{path}") as ws:
            out.append((await ws.receive()).data)  # the welcome
            for step in steps:
                if isinstance(step, str):
                    await ws.send_str(step)
                elif isinstance(step, bytes):
                    await ws.send_bytes(step)
                msg = await ws.receive()
                out.append(msg.data if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
                           else ("closed", ws.close_code))
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
    return out


def wait_serving(port: int, tree: Tree) -> None:
    def ok():
        try:
            return run(_session(port, []))[0].startswith("welcome")
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
            return False
    tree.wait_for(ok, timeout=20, what=f"port {port} served")


def test_connect_text_binary_and_close_reach_the_actor_and_its_messages_come_back(tmp_path):
    port = free_port()
    with ws_tree(tmp_path, port) as tree:
        tree.wait_running()
        wait_serving(port, tree)
        got = run(_session(port, ["hello", b"\x00\xff\x01", "count", "bye"]))
        assert got[0].startswith("welcome ")
        assert got[1] == "echo: hello" and got[2] == b"\x00\xff\x01"
        assert got[3].isdigit()
        assert got[4] == ("closed", 1000)  # `bye`: the actor closed the connection
        actor_id = tree.node("root/ws")["actor_id"]
        events = [e.payload() for e in tree.events(actor_id, "websocket.message")]
        kinds = [e["params"][0]["message"]["ty"] for e in events]
        assert kinds[-5:] == ["connect", "text", "binary", "text", "text"]
        assert events[-4]["sent"] == [{"ty": "text", "size": len("echo: hello")}]
        assert events[-1]["sent"] == [{"ty": "close", "size": 0}]
        assert cli("replay", actor_id, "--home", str(tree.home)).returncode == 0


def test_a_crash_closes_that_connection_1011_and_the_actor_restarts_and_serves_again(tmp_path):
    port = free_port()
    with ws_tree(tmp_path, port) as tree:
        tree.wait_running()
        wait_serving(port, tree)
        pid = tree.node("root/ws")["pid"]
        got = run(_session(port, ["crash"]))
        assert got[1] == ("closed", 1011)
        tree.wait_for(lambda: (n := tree.node("root/ws"))["pid"] not in (None, pid) and n["status"] == "running",
                      what="the restarted actor")
        wait_serving(port, tree)
        assert run(_session(port, ["again"]))[1] == "echo: again"
        actor_id = tree.node("root/ws")["actor_id"]
        crash = [e.payload() for e in tree.events(actor_id, "actor.crash")]
        assert crash and "trap in theater:simple/websocket-server.handle-message" in crash[0]["reason"]


def test_a_frame_over_max_message_bytes_closes_1009_and_a_plain_request_gets_426(tmp_path):
    port = free_port()
    with ws_tree(tmp_path, port, "max_message_bytes = 1000") as tree:
        tree.wait_running()
        wait_serving(port, tree)
        got = run(_session(port, ["x" * 2000]))
        assert got[1] == ("closed", 1009)
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/live")
        r = c.getresponse()
        assert r.status == 426 and b"upgrade" in r.read()
        c.request("GET", "/elsewhere")
        r = c.getresponse()
        assert r.status == 404 and b"/live" in r.read()
        c.close()
        assert run(_session(port, ["still"]))[1] == "echo: still"  # the actor never saw the big frame


def test_a_bad_websocket_manifest_is_refused_with_file_and_key(tmp_path):
    (tmp_path / "ws.toml").write_text(f'name = "ws"\ncomponent = "{WAT / "wsecho.wat"}"\n\n[[handler]]\n'
                                      f'type = "websocket-server"\nport = 8000\npath = "no-slash"\n')
    out = cli("validate", str(tmp_path / "ws.toml"))
    assert out.returncode != 0 and "path" in out.stderr + out.stdout and "ws.toml" in out.stderr + out.stdout
