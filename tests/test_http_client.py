"""The http-client handler (handlers/http_client.py, httpx) against a real local HTTP server, through a
real component in real trees: actors/wat/httpprobe.wat sends "METHOD URL [NAME:VALUE]...[\\nBODY]" with
theater:simple/http-client.send-http and replies "STATUS\\n" + body ("+METHOD": the response headers
too), or "ERR:" + the host's err.

Every refusal and failure (a host not allowed, nothing allowed, a refused port, a server that never
answers or trickles, a body over either limit, a bad scheme, URL, method or header, a redirect to a
host not allowed) is an err naming the host or the limit, and harms nothing: the actor, the node and a
neighbour keep running. The chain records requests (header values only for non-secret names) and
responses by hash and size; replay serves every response from the chain and the node's store after
the test server is gone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from harness import WAT, Tree, cli, write_manifest
from theater_otp.config.loader import load_manifest
from theater_otp.contentstore import ContentStore
from theater_otp.errors import ConfigError
from theater_otp.home import Home
from theater_otp.worker.handlers import REGISTRY
from theater_otp.worker.handlers.base import MAX_LIST_BYTES
from theater_otp.worker.handlers.http_client import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_MS, HttpClientSettings
from theater_otp.worker.handlers.recorded_bytes import INLINE_MAX

pytestmark = pytest.mark.integration

EVENT = "host.http-client.send-http"


# ---- the test server ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: tuple = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, url.path))
        stopping = self.server.stopping
        try:
            if url.path == "/hello":
                self._send(200, b"hello, actor", (("Content-Type", "text/plain"), ("X-Test", "a"), ("X-Test", "b")))
            elif url.path == "/empty":
                self._send(204)
            elif url.path == "/big":
                data = self.server.big[:int(query.get("n", "0"))]
                if query.get("chunked"):  # no Content-Length: the limit is found while reading
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 16384):
                        part = data[i:i + 16384]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self._send(200, data, (("Content-Type", "application/octet-stream"),))
            elif url.path == "/slow":  # never answers in time
                stopping.wait(10)
                self._send(200, b"too late")
            elif url.path == "/trickle":  # answers at once, then one byte every 100 ms
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.flush()
                for _ in range(100):
                    if stopping.wait(0.1):
                        return
                    self.wfile.write(b".")
                    self.wfile.flush()
            elif url.path == "/redirect-local":
                self._send(302, b"", (("Location", "/hello"),))
            elif url.path == "/redirect-away":
                self._send(302, b"", (("Location", "http://not-allowed.invalid/"),))
            elif url.path == "/redirect-loop":
                self._send(302, b"", (("Location", "/redirect-loop"),))
            elif url.path == "/redirect-post":
                self._send(303, b"", (("Location", "/echo"),))
            elif url.path == "/echo":
                shown = [f"{k.lower()}: {v}" for k, v in self.headers.items()
                         if k.lower().startswith("x-") or k.lower() in ("authorization", "content-type")]
                text = f"{self.command}\nheaders={len(self.headers)}\n" + "\n".join(shown) + "\nbody="
                self._send(200, text.encode() + body, (("Content-Type", "text/plain"),))
            else:
                self._send(404, b"no such route")
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _route


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        self.big = hashlib.sha256(b"seed").digest() * (300_000 // 32)   # distinctive, 9375 x 32 bytes
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)   # a client that hung up early is no error

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- trees --------------------------------------------------------------------------------------


def http_manifest(folder: Path, name: str, settings: str = "", wat: str = "httpprobe.wat") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncomponent = "{WAT / wat}"\n\n[[handler]]\ntype = "http-client"\n'
                    f'{settings}\n')
    return path


def tree_of(*names: str) -> str:
    children = "".join(f'\n[[supervisor.children]]\nid = "{n}"\nmanifest = "{n}.toml"\n' for n in names)
    return f'[supervisor]\nid = "root"\nintensity = 10\nperiod = 10\n{children}'


def ask(tree: Tree, target: str, message: str | bytes) -> bytes:
    payload = message.encode() if isinstance(message, str) else message
    answer = tree.call("request", {"target": target, "payload": payload, "timeout_ms": 15000}, timeout_s=20)
    assert "ok" in answer, answer
    return answer["ok"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PROBES = {
    "probe": 'allowed_hosts = ["127.0.0.1", "*.example.test"]\ntimeout_ms = 3000\nmax_request_bytes = 4096\n'
             'max_response_bytes = 100000',
    "follower": 'allowed_hosts = ["127.0.0.1", "localhost"]\nfollow_redirects = true\ntimeout_ms = 3000',
    "slow": 'allowed_hosts = ["127.0.0.1"]\ntimeout_ms = 500',
    "closed": "",
}


def probe_tree(folder: Path) -> str:
    for name, settings in PROBES.items():
        http_manifest(folder, name, settings)
    write_manifest(folder, "echo", "echo.wat")
    return tree_of(*PROBES, "echo")


# ---- round trips, refusals, failures --------------------------------------------------------------


def test_requests_round_trip_and_every_refusal_or_failure_is_an_err_that_harms_nothing(tmp_path, server):
    base = server.base
    port = server.server_address[1]
    with Tree(tmp_path, probe_tree(tmp_path)) as tree:
        tree.wait_running()
        pids = tree.pids()

        # -- round trips: GET, POST with a body and headers (a name repeated), a 204 without a body
        assert ask(tree, "probe", f"GET {base}/hello") == b"200\nhello, actor"
        dumped = ask(tree, "probe", f"+GET {base}/hello").decode()
        status, _, rest = dumped.partition("\n")
        head, _, body = rest.partition("\n\n")
        assert status == "200" and body == "hello, actor"
        lines = head.split("\n")
        assert "Content-Type: text/plain" in lines and lines.count("X-Test: a") == 1 and "X-Test: b" in lines
        assert lines.index("X-Test: a") < lines.index("X-Test: b")   # in the order the server sent them
        echoed = ask(tree, "probe", f"POST {base}/echo X-Probe:one X-Probe:two Authorization:Bearer-s3cret "
                                    f"Content-Type:text/plain\nsome body").decode()
        assert echoed.startswith("200\nPOST\n") and echoed.endswith("body=some body")
        assert "x-probe: one" in echoed and "x-probe: two" in echoed
        assert "authorization: Bearer-s3cret" in echoed and "content-type: text/plain" in echoed
        assert ask(tree, "probe", f"PUT {base}/echo\n").endswith(b"\nbody=")        # some(empty) body
        assert ask(tree, "probe", f"DELETE {base}/echo").startswith(b"200\nDELETE\n")
        assert ask(tree, "probe", f"GET {base}/empty") == b"204"                    # body none
        assert ask(tree, "probe", f"HEAD {base}/hello") == b"200"
        assert ask(tree, "probe", f"GET {base}/nowhere") == b"404\nno such route"
        big = ask(tree, "probe", f"GET {base}/big?n=50000")
        assert big == b"200\n" + server.big[:50000]

        # -- refusals before any connection: the host, the scheme, the URL, the method, a header
        seen = len(server.seen)
        assert ask(tree, "probe", f"GET http://localhost:{port}/hello") == \
            b"ERR:host 'localhost' is not allowed: allowed_hosts lists 127.0.0.1, *.example.test"
        assert ask(tree, "probe", "GET http://example.test/") == \
            b"ERR:host 'example.test' is not allowed: allowed_hosts lists 127.0.0.1, *.example.test"
        assert ask(tree, "probe", f"GET http://127.0.0.2:{port}/hello").startswith(b"ERR:host '127.0.0.2' is not")
        assert ask(tree, "closed", f"GET {base}/hello") == \
            b"ERR:host '127.0.0.1' is not allowed: this actor's allowed_hosts is empty, so no host is"
        assert ask(tree, "probe", "GET ftp://127.0.0.1/file") == \
            b"ERR:scheme 'ftp' is not supported: only http and https URLs"
        assert ask(tree, "probe", "GET file:///etc/passwd") == \
            b"ERR:scheme 'file' is not supported: only http and https URLs"
        assert ask(tree, "probe", "GET not-a-url").startswith(b"ERR:invalid URL 'not-a-url'")
        assert ask(tree, "probe", "GET http://127.0.0.1:99999/").startswith(b"ERR:invalid URL")
        assert ask(tree, "probe", f"GET http://user:pw@127.0.0.1:{port}/").startswith(b"ERR:URL ")
        assert ask(tree, "probe", f"G(T {base}/hello") == \
            b"ERR:method 'G(T' is not valid: expected an HTTP method such as GET or POST"
        assert ask(tree, "probe", f"CONNECT {base}/hello").startswith(b"ERR:method 'CONNECT' is not offered")
        assert ask(tree, "probe", f"GET {base}/hello Host:evil").startswith(b"ERR:header 'Host' is set by the client")
        assert ask(tree, "probe", f"GET {base}/hello Bad(name:x)").startswith(b"ERR:header name 'Bad(name'")
        assert ask(tree, "probe", f"POST {base}/echo\n" + "B" * 5000) == \
            b"ERR:request body of 5000 bytes is over max_request_bytes = 4096"
        assert len(server.seen) == seen                     # none of these reached the server

        # -- failures: a refused port, a server that never answers, one that trickles, bodies over the limit
        shut = closed_port()
        assert ask(tree, "probe", f"GET http://127.0.0.1:{shut}/") == \
            f"ERR:127.0.0.1: connection to port {shut} refused".encode()
        assert ask(tree, "slow", f"GET {base}/slow") == \
            b"ERR:127.0.0.1: no complete response within timeout_ms = 500 ms"
        assert ask(tree, "slow", f"GET {base}/trickle") == \
            b"ERR:127.0.0.1: no complete response within timeout_ms = 500 ms"
        assert ask(tree, "probe", f"GET {base}/big?n=150000") == \
            b"ERR:127.0.0.1: response body of 150000 bytes is over max_response_bytes = 100000"
        assert ask(tree, "probe", f"GET {base}/big?n=150000&chunked=1").startswith(
            b"ERR:127.0.0.1: response body is over max_response_bytes = 100000 (reading stopped after ")
        assert ask(tree, "probe", f"GET {base}/big?n=90000&chunked=1") == b"200\n" + server.big[:90000]

        # -- redirects: returned as they are by default; followed to allowed hosts when the manifest says so
        assert ask(tree, "probe", f"+GET {base}/redirect-local").startswith(b"302\n")
        assert b"Location: /hello\n" in ask(tree, "probe", f"+GET {base}/redirect-local")
        assert ask(tree, "follower", f"GET {base}/redirect-local") == b"200\nhello, actor"
        assert ask(tree, "follower", f"GET http://localhost:{port}/redirect-local") == b"200\nhello, actor"
        assert ask(tree, "follower", f"GET {base}/redirect-away") == \
            b"ERR:redirect from 127.0.0.1 refused: host 'not-allowed.invalid' is not allowed: allowed_hosts " \
            b"lists 127.0.0.1, localhost"
        assert ask(tree, "follower", f"GET {base}/redirect-loop") == \
            b"ERR:127.0.0.1: too many redirects (at most 5 are followed)"
        after_post = ask(tree, "follower", f"POST {base}/redirect-post Content-Type:text/plain\nform data")
        assert after_post.startswith(b"200\nGET\n") and after_post.endswith(b"body=")   # 303: GET, no body
        assert b"content-type" not in after_post

        # -- nothing died, nothing restarted, everyone still answers
        assert tree.pids() == pids
        assert tree.call("request", {"target": "echo", "payload": b"still here", "timeout_ms": 5000}) == \
            {"ok": b"still here"}
        assert ask(tree, "probe", f"GET {base}/hello") == b"200\nhello, actor"
        assert ask(tree, "slow", f"GET {base}/hello") == b"200\nhello, actor"

        # -- the timeouts held within timeout_ms, by the handler's own measure in the chain
        slow_id = tree.node("root/slow")["actor_id"]
        timed = [e.payload() for e in tree.events(slow_id, EVENT)]
        assert [t["result"]["err"].endswith("timeout_ms = 500 ms") for t in timed[:2]] == [True, True]
        for t in timed[:2]:
            assert 450 <= t["elapsed_ms"] < 1500, t


# ---- the chain, and replay without the network ------------------------------------------------------


def test_the_chain_records_requests_without_secrets_and_bodies_by_hash_and_replay_needs_no_network(tmp_path,
                                                                                                   server):
    base = server.base
    http_manifest(tmp_path, "probe", 'allowed_hosts = ["127.0.0.1"]\nmax_response_bytes = 100000')
    http_manifest(tmp_path, "follower", 'allowed_hosts = ["127.0.0.1"]\nfollow_redirects = true')
    large = server.big[:60000]
    with Tree(tmp_path, tree_of("probe", "follower")) as tree:
        tree.wait_running()
        echoed = ask(tree, "probe", f"POST {base}/echo X-Probe:one Authorization:Bearer-s3cret "
                                    f"Content-Type:text/plain\nsome body")
        assert echoed.endswith(b"body=some body")
        assert ask(tree, "probe", f"#GET {base}/big?n=60000") == b"200\n60000"     # the body never in a message
        assert ask(tree, "probe", f"GET {base}/empty") == b"204"
        assert ask(tree, "probe", f"GET {base}/big?n=150000").startswith(b"ERR:")
        assert ask(tree, "probe", f"GET http://127.0.0.9:{closed_port()}/").startswith(b"ERR:host")
        assert ask(tree, "follower", f"GET {base}/redirect-local") == b"200\nhello, actor"

        probe_id = tree.node("root/probe")["actor_id"]
        events = tree.events(probe_id)
        calls = [e for e in events if e.event_type == EVENT]
        assert len(calls) == 5
        post, got, empty, over, refused = (e.payload() for e in calls)

        # the request: header names in order, values only for non-secret names; the body by hash, inline
        assert post["request"] == {
            "method": "POST", "uri": f"{base}/echo",
            "headers": [["X-Probe", None], ["Authorization", None], ["Content-Type", "text/plain"]],
            "body": {"sha256": sha(b"some body"), "size": 9, "inline": b"some body"}}
        assert "s3cret" not in repr(post["request"])       # (the server echoed it: the response holds it)
        # the response: status, every header pair, the body by hash (small ones inline too)
        ok = post["result"]["ok"]
        assert ok["status"] == 200 and ["Content-Type", "text/plain"] in ok["headers"]
        assert ok["body"]["inline"] == echoed[4:] and ok["body"]["size"] == len(echoed) - 4
        assert isinstance(post["elapsed_ms"], int) and post["redirects"] == []
        # a large body is kept in the node's store, never in the chain
        assert got["request"]["body"] is None
        assert got["result"]["ok"]["body"] == {"sha256": sha(large), "size": 60000}
        for e in events:
            assert large[30000:30064] not in e.data, e.event_type
        with ContentStore(Home.at(tree.home).store_db) as store:
            assert store.blob(sha(large)) == large
        assert empty["result"]["ok"]["body"] is None and empty["result"]["ok"]["status"] == 204
        assert over["result"] == {"err": "127.0.0.1: response body of 150000 bytes is over max_response_bytes "
                                          "= 100000"}
        assert refused["result"]["err"].startswith("host '127.0.0.9' is not allowed")
        follower_id = tree.node("root/follower")["actor_id"]
        (followed,) = [e.payload() for e in tree.events(follower_id, EVENT)]
        assert followed["redirects"] == [f"{base}/hello"]
        assert followed["result"]["ok"]["status"] == 200

        # replay serves every response from the chain and the node's store: the server is gone
        server.stop()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=1).close()
        for name in ("probe", "follower"):
            replay = cli("replay", name, "--json", home=tree.home)
            assert replay.returncode == 0, replay.stdout + replay.stderr
            result = json.loads(replay.stdout)
            assert result["match"] is True and result["replayed"] >= 2, result

        # a large body the node's store no longer holds: replay says so plainly
        db = sqlite3.connect(Home.at(tree.home).store_db, timeout=10)
        with db:
            db.execute("DELETE FROM blobs WHERE hash=?", (sha(large),))
        db.close()
        replay = cli("replay", "probe", home=tree.home)
        assert replay.returncode == 1
        assert f"http-client response body {sha(large)} (60000 bytes) is not in this node's store" in replay.stdout
        assert "replay needs the home the actor ran in" in replay.stdout


# ---- settings -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_settings_are_typed_with_defaults_and_hosts_are_normalised(tmp_path):
    (h,) = load_manifest(http_manifest(tmp_path, "a", "")).handlers
    assert h.settings == HttpClientSettings()
    assert (h.settings.timeout_ms, h.settings.max_request_bytes, h.settings.max_response_bytes,
            h.settings.follow_redirects) == (DEFAULT_TIMEOUT_MS, DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES, False)
    assert DEFAULT_TIMEOUT_MS == 10_000 and DEFAULT_MAX_BYTES == 1024 * 1024 and INLINE_MAX == 256
    (h,) = load_manifest(http_manifest(tmp_path, "b", 'allowed_hosts = ["API.Example.com", "*.example.org", '
                                                      '"10.0.0.1", "[::1]", "localhost."]\ntimeout_ms = 250\n'
                                                      'max_request_bytes = 0\nmax_response_bytes = 2097152\n'
                                                      'follow_redirects = true')).handlers
    s = h.settings
    assert s.hosts == {"api.example.com", "10.0.0.1", "::1", "localhost"} and s.suffixes == (".example.org",)
    assert (s.timeout_ms, s.max_request_bytes, s.max_response_bytes, s.follow_redirects) == \
        (250, 0, MAX_LIST_BYTES, True)
    # exact names, IP literals as listed; `*.domain` matches names under it, never the domain itself
    assert [s.allows(x) for x in ("api.example.com", "www.api.example.com", "10.0.0.1", "10.0.0.2", "::1",
                                  "localhost", "a.example.org", "a.b.example.org", "example.org",
                                  "badexample.org")] == \
        [True, False, True, False, True, True, True, True, False, False]
    seed = tmp_path / "seed.toml"  # the seed's spelling: [[handlers]] with config = { ... }
    seed.write_text(f'name = "s"\ncomponent = "{WAT / "httpprobe.wat"}"\n\n[[handlers]]\ntype = "http-client"\n'
                    'config = { allowed_hosts = ["x.test"] }\n')
    (h,) = load_manifest(seed).handlers
    assert h.settings.allows("x.test") and not HttpClientSettings().allows("x.test")


BAD_SETTINGS = [
    ('allowed_hosts = "x"', "handler[0].allowed_hosts", "'x' is not valid: expected a list of strings"),
    ('allowed_hosts = ["http://api.example.com"]', "handler[0].allowed_hosts", "a host name, not a URL"),
    ('allowed_hosts = ["api.example.com:443"]', "handler[0].allowed_hosts", "a host without a port"),
    ('allowed_hosts = ["*"]', "handler[0].allowed_hosts", "`*` alone would allow every host"),
    ('allowed_hosts = ["api.*.com"]', "handler[0].allowed_hosts", "only allowed at the start"),
    ('allowed_hosts = ["*.0.0.1"]', "handler[0].allowed_hosts", "not part of an IP address"),
    ('allowed_hosts = [""]', "handler[0].allowed_hosts", "an empty host name"),
    ("timeout_ms = -1", "handler[0].timeout_ms", "-1 is not valid: expected an integer >= 1"),
    ("timeout_ms = 0", "handler[0].timeout_ms", "0 is not valid: expected an integer >= 1"),
    ("timeout_ms = 99999999", "handler[0].timeout_ms", "expected an integer <= 600000"),
    ("max_response_bytes = 999999999", "handler[0].max_response_bytes", "expected an integer <= 2097152"),
    ("max_request_bytes = -1", "handler[0].max_request_bytes", "expected an integer >= 0"),
    ('follow_redirects = "yes"', "handler[0].follow_redirects", "expected true or false"),
    ("colour = 1", "handler[0].colour", "unknown setting 'colour': expected allowed_hosts, follow_redirects"),
]


@pytest.mark.unit
@pytest.mark.parametrize("settings,key,message", BAD_SETTINGS, ids=lambda v: str(v)[:24])
def test_bad_settings_are_refused_when_the_manifest_is_read_naming_file_key_and_line(tmp_path, settings, key,
                                                                                    message):
    path = http_manifest(tmp_path, "bad", settings)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 6, key), str(err)
    assert message in err.message, err.message


def test_validate_refuses_bad_settings_and_a_component_without_the_grant_does_not_start(tmp_path):
    for name, settings, text in (("str", 'allowed_hosts = "x"', "expected a list of strings"),
                                 ("neg", "timeout_ms = -1", "expected an integer >= 1"),
                                 ("huge", "max_response_bytes = 999999999", "expected an integer <= 2097152"),
                                 ("unknown", "retries = 3", "unknown setting 'retries'")):
        manifest = http_manifest(tmp_path, name, settings)
        proc = cli("validate", str(manifest))
        assert proc.returncode == 1 and f"{manifest}:6: " in proc.stderr and text in proc.stderr, proc.stderr
    assert cli("validate", str(http_manifest(tmp_path, "good", 'allowed_hosts = ["127.0.0.1"]'))).returncode == 0
    write_manifest(tmp_path, "bare", "httpprobe.wat")    # imports theater:simple/http-client, grants nothing
    proc = cli("validate", str(tmp_path / "bare.toml"))
    assert proc.returncode == 1 and 'add `[[handler]] type = "http-client"` to the manifest' in proc.stderr
    (tmp_path / "supervision.toml").write_text(tree_of("bare"))
    proc = cli("up", str(tmp_path / "supervision.toml"), "--detach", home=tmp_path / "home")
    assert proc.returncode != 0
    assert "component imports theater:simple/http-client but the manifest does not grant it" in proc.stderr
    assert 'add `[[handler]] type = "http-client"` to the manifest' in proc.stderr


# ---- the WIT package's shape ------------------------------------------------------------------------


def test_a_component_that_imports_http_types_as_wit_tools_make_it_starts_with_the_grant(tmp_path, server):
    """Components built from wit/http.wit (componentize-py, cargo-component) import
    theater:simple/http-types, which holds only types: the grant of http-client is enough."""
    text = (WAT / "httpprobe.wat").read_text()
    types_import = ('(import "theater:simple/http-types" (instance $types\n'
                    '    (type $req (record (field "method" string) (field "uri" string)\n'
                    '      (field "headers" (list (tuple string string))) (field "body" (option (list u8)))))\n'
                    '    (export "http-request" (type (eq $req)))))\n  ')
    wat = tmp_path / "typed.wat"
    wat.write_text(text.replace('(import "theater:simple/http-client"', types_import +
                                '(import "theater:simple/http-client"', 1))
    (tmp_path / "typed.toml").write_text(f'name = "typed"\ncomponent = "{wat}"\n\n[[handler]]\n'
                                         f'type = "http-client"\nallowed_hosts = ["127.0.0.1"]\n')
    assert cli("validate", str(tmp_path / "typed.toml")).returncode == 0
    with Tree(tmp_path, tree_of("typed")) as tree:
        tree.wait_running()
        assert ask(tree, "typed", f"GET {server.base}/hello") == b"200\nhello, actor"
    assert REGISTRY["http-client"].interfaces == ("http-client",)


# ---- https -------------------------------------------------------------------------------------------


def test_https_verifies_the_servers_certificate(tmp_path, server):
    """TLS goes through the same deadline-bound sockets; a certificate the system does not trust is an
    err naming the host, never a silent downgrade."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tls = _Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    tls.thread.start()
    port = tls.server_address[1]
    try:
        http_manifest(tmp_path, "probe", 'allowed_hosts = ["127.0.0.1"]\ntimeout_ms = 3000')
        with Tree(tmp_path, tree_of("probe")) as tree:
            tree.wait_running()
            answer = ask(tree, "probe", f"GET https://127.0.0.1:{port}/hello")
            assert answer.startswith(f"ERR:127.0.0.1: cannot connect to port {port}: ".encode()), answer
            assert b"CERTIFICATE_VERIFY_FAILED" in answer, answer
            assert ask(tree, "probe", f"GET {server.base}/hello") == b"200\nhello, actor"   # and the actor goes on
    finally:
        tls.stop()


# ---- the deadline covers DNS ---------------------------------------------------------------------------


@pytest.mark.unit
def test_a_resolver_that_hangs_is_bounded_by_the_deadline_too(monkeypatch):
    """getaddrinfo has no timeout: the handler stops waiting for it at the deadline."""
    from theater_otp.worker.handlers.base import ActorInfo, HostContext, record_of

    release = threading.Event()

    def hanging(*args, **kwargs):
        release.wait(10)
        raise socket.gaierror(-2, "Name or service not known")

    class Services:
        def __getattr__(self, name):
            return lambda *args: None

    settings = HttpClientSettings(hosts=frozenset({"slow-dns.test"}), allowed_hosts=("slow-dns.test",),
                                  timeout_ms=300)
    ctx = HostContext(ActorInfo("id", "name", "root/name", 1), Services(), settings)
    send = REGISTRY["http-client"].functions(ctx)["theater:simple/http-client"]["send-http"]
    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        result = send.call(record_of(method="GET", uri="http://slow-dns.test/", headers=[], body=None))
    finally:
        release.set()
        for cleanup in reversed(ctx.cleanups):
            cleanup()
    assert result.value == "slow-dns.test: no complete response within timeout_ms = 300 ms"
    assert 250 <= send.record((), result)["elapsed_ms"] < 1000
