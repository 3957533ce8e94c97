"""http-server (issue 10): real HTTP clients against an actor's port, served by the node's gateway.

The actor is actors/wat/httpecho.wat: it echoes the request, counts requests in its state, and
fails on command (/crash traps, /err returns err, /status answers an invalid status).
"""

import http.client
import json
import socket
import threading

import pytest

from harness import WAT, Tree, cli, free_port

pytestmark = pytest.mark.integration



def http_tree(tmp_path, port: int, settings: str = "") -> Tree:
    (tmp_path / "web.toml").write_text(
        f'name = "web"\ncomponent = "{WAT / "httpecho.wat"}"\n\n[[handler]]\ntype = "http-server"\n'
        f"port = {port}\n{settings}\n")
    (tmp_path / "echo.toml").write_text(f'name = "echo"\ncomponent = "{WAT / "echo.wat"}"\n')
    return Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 20
        period = 10
        [[supervisor.children]]
        id = "web"
        manifest = "web.toml"
        [[supervisor.children]]
        id = "echo"
        manifest = "echo.toml"
    """)


def get(port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
        conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, data, r


def wait_serving(port: int, tree: Tree) -> None:
    def ok():
        try:
            return get(port, "/ping")[0] == 200
        except OSError:
            return False
    tree.wait_for(ok, timeout=15, what=f"port {port} served")


def raw(port: int, data: bytes, wait_s: float = 5) -> bytes:
    """Send raw bytes, return what the server answers before it closes (or wait_s passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
        return out


def test_requests_reach_the_actor_with_keep_alive_and_the_chain_records_them(tmp_path):
    port = free_port()
    with http_tree(tmp_path, port) as tree:
        tree.wait_running()
        wait_serving(port, tree)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, body, r = get(port, "/hello/w%C3%B6rld?x=1&y=2", conn=conn)
        assert status == 200 and body == "GET /hello/wörld?x=1&y=2\n".encode()
        assert r.getheader("content-type") == "text/plain"
        status, body, _ = get(port, "/post", "POST", b"some body", {"X-Test": "yes"}, conn=conn)  # same connection
        assert status == 200 and body == b"POST /post?\nsome body"
        before = int(get(port, "/count", conn=conn)[1])
        assert int(get(port, "/count", conn=conn)[1]) == before + 1  # the state counts requests
        conn.close()
        events = [e.payload() for e in tree.events(tree.node("root/web")["actor_id"], "http.request")]
        post = next(e for e in events if e["params"][0]["path"] == "/post")
        assert post["params"][0]["body"] == b"some body" and ["X-Test", "yes"] in post["params"][0]["headers"]
        assert post["response"]["status"] == 200 and post["response"]["body"]["size"] == len(b"POST /post?\nsome body")
    out = cli("replay", "web", "--json", home=tree.home)
    assert out.returncode == 0 and json.loads(out.stdout)["match"], out.stdout


def test_client_limits_get_their_http_errors_and_nothing_else_is_touched(tmp_path):
    port = free_port()
    settings = "max_body_bytes = 1000\nmax_header_bytes = 2048\ntimeout_ms = 700"
    with http_tree(tmp_path, port, settings) as tree:
        pids = tree.wait_running()
        wait_serving(port, tree)
        assert get(port, "/big", "POST", b"x" * 1001)[0] == 413
        assert get(port, "/fits", "POST", b"x" * 1000)[0] == 200
        assert get(port, "/h", headers={"X-Big": "v" * 3000})[0] == 431
        # a body that never finishes arriving: 408 once timeout_ms passed
        answer = raw(port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        assert answer.startswith(b"HTTP/1.1 408")
        # headers sent a byte at a time and never finished: 408 too
        answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert answer.startswith(b"HTTP/1.1 408")
        # garbage is the library's 400
        garbage = raw(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.") and b" 400 " in garbage.split(b"\r\n")[0]
        assert tree.pids() == pids  # none of it reached an actor
        assert get(port, "/still")[0] == 200


def test_a_failing_actor_answers_500_and_its_supervisor_restarts_it(tmp_path):
    port = free_port()
    with http_tree(tmp_path, port) as tree:
        pids = tree.wait_running()
        wait_serving(port, tree)
        status, body, _ = get(port, "/status")
        assert status == 500 and b"invalid status 999" in body
        assert tree.pids() == pids  # a bad response is the actor's answer, not a crash
        for path, words in (("/crash", b"unreachable"), ("/err", b"asked to fail")):
            before = tree.node("root/web")["pid"]
            status, body, _ = get(port, path)
            assert status == 500 and words in body, body
            tree.wait_for(lambda: tree.node("root/web")["pid"] not in (None, before), what="web restarted")
        wait_serving(port, tree)
        assert tree.node("root/web")["restarts"] == 2
        assert tree.pids()["root/echo"] == pids["root/echo"]


def test_kill_9_under_load_every_request_is_answered_200_or_503(tmp_path):
    port = free_port()
    with http_tree(tmp_path, port) as tree:
        tree.wait_running()
        wait_serving(port, tree)
        statuses: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            while not stop.is_set():
                try:
                    status, body, _ = get(port, "/load", conn=conn)
                    statuses.append(status)
                    if status not in (200, 503):
                        failures.append(f"{status}: {body!r}")
                except (OSError, http.client.HTTPException) as exc:  # a reset or a hang: not allowed
                    failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        tree.wait_for(lambda: len(statuses) > 30, what="load running")
        for _ in range(3):
            before = tree.node("root/web")["pid"]
            tree.kill("root/web")
            tree.wait_for(lambda: tree.node("root/web")["pid"] not in (None, before), what="web restarted")
            seen = len(statuses)
            tree.wait_for(lambda: len(statuses) > seen + 20, what="load answered again")
        stop.set()
        for t in threads:
            t.join(10)
        assert not failures, failures[:5]
        assert set(statuses) <= {200, 503} and statuses.count(200) > 90


def test_up_refuses_a_port_another_process_holds_naming_manifest_port_and_holder(tmp_path):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        tree = http_tree(tmp_path, port)
        out = cli("up", str(tree.config), "--detach", home=tree.home)
        assert out.returncode == 1
        assert f"web.toml: http-server cannot listen on 127.0.0.1:{port}: in use by pid" in out.stderr
        assert "(python" in out.stderr  # the holder is this test's own process


def test_http_server_settings_are_checked_with_file_and_line(tmp_path):
    def validate(settings: str) -> str:
        (tmp_path / "w.toml").write_text(f'name = "w"\ncomponent = "{WAT / "httpecho.wat"}"\n\n'
                                         f'[[handler]]\ntype = "http-server"\n{settings}\n')
        out = cli("validate", str(tmp_path / "w.toml"))
        assert out.returncode == 1
        return out.stdout + out.stderr

    assert "w.toml:5: handler[0].type: the http-server handler needs `port = N`" in validate("")
    assert "w.toml:6: handler[0].port: 70000 is not valid: expected an integer <= 65535" in validate("port = 70000")
    assert "handler[0].max_body_bytes" in validate("port = 8080\nmax_body_bytes = 99999999")
    assert "unknown setting 'portt'" in validate("port = 8080\nportt = 1")



def test_a_component_without_the_http_server_export_is_refused_before_it_starts(tmp_path):
    (tmp_path / "w.toml").write_text(f'name = "w"\ncomponent = "{WAT / "echo.wat"}"\n\n'
                                     f'[[handler]]\ntype = "http-server"\nport = {free_port()}\n')
    out = cli("validate", str(tmp_path / "w.toml"))
    assert out.returncode == 1
    assert "the manifest grants http-server but the component does not export theater:simple/http-server" in out.stderr
    (tmp_path / "s.toml").write_text('[supervisor]\nid = "root"\n[[supervisor.children]]\nid = "w"\nmanifest = "w.toml"\n')
    out = cli("up", str(tmp_path / "s.toml"), "--detach", home=tmp_path / "home")
    assert out.returncode == 1 and "does not export theater:simple/http-server" in out.stderr


def test_a_child_spawned_after_up_serves_its_port_and_a_second_one_on_that_port_fails_to_start(tmp_path):
    """A listener is opened for children started after `up` too (here spawned by a supervising actor,
    actors/wat/boss.wat); a second spawn of the same manifest finds the port served by the first and
    fails to start, naming who serves it; the first keeps serving."""
    port = free_port()
    (tmp_path / "web.toml").write_text(
        f'name = "web"\ncomponent = "{WAT / "httpecho.wat"}"\n\n[[handler]]\ntype = "http-server"\nport = {port}\n')
    (tmp_path / "boss.toml").write_text(
        f'name = "boss"\ncomponent = "{WAT / "boss.wat"}"\ninitial_state = "web.toml"\n\n[[handler]]\ntype = "supervisor"\n')
    tree = Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "boss"
        manifest = "boss.toml"
    """)
    with tree:
        tree.wait_running()
        wait_serving(port, tree)
        status, body, _ = get(port, "/spawned?q=1")
        assert status == 200 and body == b"GET /spawned?q=1\n"
        out = cli("request", "boss", "spawn", home=tree.home)
        assert out.returncode == 0 and out.stdout.startswith("err:") and f"port {port}" in out.stdout
        assert "already served by root/boss/web-1" in out.stdout
        assert get(port, "/still")[0] == 200


def test_up_returns_once_the_tree_serves_its_ports(tmp_path):
    """`up --detach && curl` must not be refused: `up` reports the tree ready only when the root has
    started and the gateway listens (before, the gateway came up ~300 ms after `up` returned)."""
    port = free_port()
    with http_tree(tmp_path, port):
        status, body, _ = get(port, "/first-request")  # no retry, no wait
        assert status == 200


def test_a_killed_gateway_comes_back_and_one_that_finds_its_port_taken_tries_again(tmp_path):
    """The gateway process is restarted after a kill -9. If another process took the port
    meanwhile, the new gateway cannot bind it: the node tries again after a growing pause, once a
    line each, until the port is free, and then serves it again. Before, HTTP was off for good."""
    import os
    import re
    import signal
    import socket as socketlib

    port = free_port()
    tree = http_tree(tmp_path, port)
    with tree:
        assert get(port, "/before")[0] == 200
        log = tree.home / "node.log"

        def gateway_pid() -> int:
            return int(re.findall(r"http-gateway\[(\d+)\] INFO http gateway: ", log.read_text())[-1])

        # the node held still while the gateway dies and another process takes the port
        os.kill(tree.node_pid, signal.SIGSTOP)
        try:
            os.kill(gateway_pid(), signal.SIGKILL)
            taker = socketlib.socket()
            taker.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
            tree.wait_for(lambda: _bound(taker, port), what="the port taken")
            taker.listen()
        finally:
            os.kill(tree.node_pid, signal.SIGCONT)
        try:
            tree.wait_for(lambda: "http gateway could not open its ports (2 time(s) in a row" in log.read_text(),
                          timeout=20, what="two failed gateway starts")
        finally:
            taker.close()
        tree.wait_for(lambda: _serves(port), timeout=30, what="the port served again")
        assert get(port, "/after")[0] == 200
        text = log.read_text()
        assert "http gateway exited (-9): starting a new one" in text
        assert "trying again in 0.5 s" in text and "trying again in 1.0 s" in text


def _bound(sock, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:  # the dead gateway's socket is not released yet
        return False


def _serves(port: int) -> bool:
    try:
        return get(port, "/probe")[0] == 200
    except OSError:
        return False
