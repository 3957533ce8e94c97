"""http-framework (issue 10): an actor that creates a server, registers handlers, adds routes and
starts the server at run time; real HTTP clients against the port it got. The actor is
actors/wat/httpframe.wat: routes /hello/{name} (GET) and /crash (GET) to one handler, /count (any
method) to another; /crash traps."""

import http.client
import socket
import struct

import pytest

from harness import WAT, Tree, cli, free_port

pytestmark = pytest.mark.integration



def frame_tree(tmp_path, port: int | None, ports: str) -> Tree:
    if port is not None:
        (tmp_path / "port.bin").write_bytes(struct.pack("<H", port))
    state = 'initial_state = { file = "port.bin" }\n' if port is not None else ""
    (tmp_path / "frame.toml").write_text(
        f'name = "frame"\ncomponent = "{WAT / "httpframe.wat"}"\n{state}\n[[handler]]\ntype = "http-framework"\n'
        f"ports = {ports}\n")
    return Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 20
        period = 10
        [[supervisor.children]]
        id = "frame"
        manifest = "frame.toml"
    """)


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def served_port(tree: Tree) -> int:
    """The port the actor's start-server got, from its chain."""
    actor_id = tree.node("root/frame")["actor_id"]
    starts = [e.payload() for e in tree.events(actor_id, "host.http-framework.start-server")]
    return starts[-1]["result"]["ok"]


def test_routes_defined_at_run_time_serve_and_the_rest_is_404_or_405(tmp_path):
    port = free_port()
    with frame_tree(tmp_path, port, f"[{port}]") as tree:
        tree.wait_running()
        tree.wait_for(lambda: _up(port), what="the actor's server")
        assert served_port(tree) == port
        assert get(port, "/hello/bob?x=1") == (200, b"hello /hello/bob?x=1")
        assert get(port, "/count", "DELETE")[0] == 200           # `*`: any method
        status, body = get(port, "/hello/bob", "POST")
        assert status == 405 and b"GET" in body                   # the path matches, the method does not
        assert get(port, "/nowhere")[0] == 404
        assert get(port, "/hello/a/b")[0] == 404                 # {name} is one segment
        actor_id = tree.node("root/frame")["actor_id"]
        handled = [e.payload() for e in tree.events(actor_id, "http.request")]
        assert [h["handler"] for h in handled][-2:] == [handled[-2]["handler"], handled[-1]["handler"]]
        assert handled[-2]["handler"] != handled[-1]["handler"]  # two routes, two handler ids
        unrouted = [e.payload() for e in tree.events(actor_id, "http.unrouted")]
        assert [u["status"] for u in unrouted] == [405, 404, 404]
        assert cli("replay", actor_id, "--home", str(tree.home)).returncode == 0


def _up(port: int) -> bool:
    try:
        return get(port, "/count")[0] == 200
    except OSError:
        return False


def test_the_port_stays_open_through_a_crash_and_the_next_incarnation_takes_it_over(tmp_path):
    with frame_tree(tmp_path, None, "[0]") as tree:        # a free port the system picks
        tree.wait_running()
        tree.wait_for(lambda: tree.node("root/frame")["status"] == "running" and _served(tree), what="a server")
        port = served_port(tree)
        assert _up(port)
        pid = tree.node("root/frame")["pid"]
        assert get(port, "/crash")[0] == 500
        tree.wait_for(lambda: (n := tree.node("root/frame"))["pid"] not in (None, pid) and n["status"] == "running",
                      what="the restarted actor")
        tree.wait_for(lambda: _up(port), what="the same port served again")
        assert served_port(tree) == port                       # the new incarnation got the same port
        actor_id = tree.node("root/frame")["actor_id"]
        crash = [e.payload() for e in tree.events(actor_id, "actor.crash")]
        assert "trap in theater:simple/http-handlers.handle-request" in crash[0]["reason"]


def _served(tree: Tree) -> bool:
    try:
        return bool(served_port(tree))
    except (IndexError, KeyError, TypeError):
        return False


def _up_fails(tree: Tree) -> str:
    """`up` of a tree whose actor cannot start: it exits non-zero; its error line."""
    proc = cli("up", str(tree.config), "--detach", home=tree.home)
    assert proc.returncode != 0, "up should fail"
    cli("down", home=tree.home)
    return proc.stderr


def test_a_port_the_manifest_does_not_allow_fails_init_and_up_says_why(tmp_path):
    port = free_port()
    err = _up_fails(frame_tree(tmp_path, port, "[0]"))
    assert f"init returned err: port {port} is not allowed: the manifest's ports allow a free port" in err


def test_a_port_taken_by_another_process_fails_init_and_up_says_why(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        err = _up_fails(frame_tree(tmp_path, port, f"[{port}]"))
        assert f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err.lower()


def test_bad_http_framework_settings_are_refused_with_file_and_key(tmp_path):
    (tmp_path / "frame.toml").write_text(f'name = "frame"\ncomponent = "{WAT / "httpframe.wat"}"\n\n[[handler]]\n'
                                         f'type = "http-framework"\nports = [70000]\n')
    out = cli("validate", str(tmp_path / "frame.toml"))
    assert out.returncode != 0 and "ports" in out.stderr + out.stdout
