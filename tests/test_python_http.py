"""HTTP from Python actors: the SDK's `sdk.http` (Router, Request, Response, HttpError, fetch), the
`http` template, and the HTTP demo (manifests/http-demo/) on a real tree.

* The SDK against stub bindings (no build): routes and path parameters, 404 / 405 with Allow,
  OPTIONS and HEAD, HttpError, the state a route uses, fetch's request record and its errors.
* `create NAME --template http`: its manifest and the world build generates (exports http-server).
* The demo: `kv` (actors/python/kv.py) serves GET/PUT/DELETE /kv/{key} and GET /kv from a named
  store; `kvwatch` (actors/python/kvwatch.py) polls GET /kv through the http-client handler,
  sleeping with the timing handler between looks. Real HTTP clients against kv's port, a kill -9
  of kv (the values survive, 200 again), kvwatch's chain (send-http events and its log lines), and
  `theater-otp replay` of both.

The demo's two actors are built once per module and kept between runs the way
tests/test_python_handlers.py keeps its builds, under THEATER_OTP_TEST_BUILDS-http (default
~/.cache/theater-otp-test-builds-http/<sources hash>/): a second run skips componentize-py and
wasmtime. The tree runs copies of the demo's manifests with a free port and a 500 ms poll.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import types
from pathlib import Path

import pytest

from harness import REPO, Tree, cli, free_port
from pybuilds import kept_build
from theater_otp.pyactor.build import read_spec
from theater_otp.pyactor.checks import validate
from theater_otp.pyactor.scaffold import create_project
from theater_otp.pyactor.sdk import SDK_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUILDS = Path(str(Path(os.environ.get("THEATER_OTP_TEST_BUILDS",
                                      Path.home() / ".cache" / "theater-otp-test-builds"))) + "-http")
KEEP_BUILDS = 3
DEMO = "manifests/http-demo"
ACTORS = ("kv", "kvwatch")


# ---- the SDK against stub bindings (no build) ----------------------------------------------------

class _Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


@dataclasses.dataclass
class _HttpRequest:
    method: str
    uri: str
    headers: list
    body: bytes | None


@dataclasses.dataclass
class _HttpResponse:
    status: int
    headers: list
    body: bytes | None


def load_sdk(monkeypatch, **imports: types.ModuleType):
    """theater_sdk.py imported against stub bindings: runtime, messaging and `imports`."""
    def module(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(m, k, v)
        return m

    monkeypatch.setitem(sys.modules, "componentize_py_types", module("componentize_py_types", Err=_Err))
    monkeypatch.setitem(sys.modules, "wit_world", module("wit_world", __path__=[]))
    imp = module("wit_world.imports", __path__=[])
    monkeypatch.setitem(sys.modules, "wit_world.imports", imp)
    base = {"runtime": module("runtime", log=lambda msg: None), "message_server_host": module("message_server_host"),
            "types": module("types", ChannelAccept=lambda accepted, message: (accepted, message))}
    for name, mod in {**base, **imports}.items():
        setattr(imp, name, mod)
        monkeypatch.setitem(sys.modules, f"wit_world.imports.{name}", mod)
    spec = importlib.util.spec_from_file_location("theater_sdk_http_under_test", SDK_FILE)
    sdk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk)
    return sdk


def incoming(method: str, path: str, query: str = "", body: bytes | None = None, headers=()):
    return types.SimpleNamespace(method=method, uri=path + (f"?{query}" if query else ""), path=path, query=query,
                                 headers=list(headers), body=body)


def test_router_routes_params_errors_and_state(monkeypatch):
    http_types = types.ModuleType("http_types")
    http_types.HttpRequest, http_types.HttpResponse = _HttpRequest, _HttpResponse
    sdk = load_sdk(monkeypatch, http_types=http_types)
    router = sdk.http.Router(default={"hits": 0})
    seen = []

    @router.get("/items/{id}")
    def get_item(req, id):
        req.state["hits"] += 1
        seen.append((req.params, req.query, req.query_all, req.header("x-trace"), "X-TRACE" in req.headers))
        return {"id": id}

    @router.put("/items/{id}")
    def put_item(req, id):
        return req.json(), 201, {"X-Id": id}

    @router.get("/n/{n:int}/{rest:path}")
    def numbers(req, n, rest):
        return f"{n + 1} {rest}"

    @router.delete("/items/{id}")
    def delete_item(req, id):
        raise sdk.http.HttpError(404, f"no item {id!r}")

    @router.post("/raw")
    def raw(req):
        return None if not req.body else sdk.http.Response(202, req.body, {"Content-Type": "application/x-raw"})

    def call(method, path, query="", body=None, state=b'{"hits": 5}', headers=()):
        new_state, (resp,) = router.handle(state, (incoming(method, path, query, body, headers),))
        assert isinstance(resp, _HttpResponse) and all(isinstance(p, tuple) for p in resp.headers)
        return new_state, resp

    state, resp = call("GET", "/items/a b", "x=1&x=2&y=%20z", headers=[("X-Trace", "t1")])
    assert resp.status == 200 and resp.body == b'{"id":"a b"}\n' and resp.headers == [("Content-Type", "application/json")]
    assert state == b'{"hits":6}'                                        # the route used the state: saved
    assert seen == [({"id": "a b"}, {"x": "1", "y": " z"}, {"x": ["1", "2"], "y": [" z"]}, "t1", True)]
    assert call("GET", "/items/a/")[1].status == 200                     # a trailing slash is ignored
    state, resp = call("PUT", "/items/7", body=b'{"v": [1]}')
    assert state == b'{"hits": 5}'                                       # untouched: the bytes as they came
    assert (resp.status, resp.body, ("X-Id", "7") in resp.headers) == (201, b'{"v":[1]}\n', True)
    resp = call("PUT", "/items/7", body=b"{not json")[1]
    assert resp.status == 400 and json.loads(resp.body)["error"].startswith("the request body is not valid JSON")
    assert call("GET", "/n/41/a/b")[1].body == b"42 a/b"
    assert call("GET", "/n/x/a")[1].status == 404                       # {n:int} wants digits
    resp = call("DELETE", "/items/q")[1]
    assert (resp.status, json.loads(resp.body)) == (404, {"error": "no item 'q'"})
    resp = call("POST", "/items/1")[1]
    assert resp.status == 405 and ("Allow", "DELETE, GET, HEAD, OPTIONS, PUT") in resp.headers
    assert "method POST not allowed on /items/1" in json.loads(resp.body)["error"]
    resp = call("OPTIONS", "/items/1")[1]
    assert resp.status == 204 and resp.body is None and ("Allow", "DELETE, GET, HEAD, OPTIONS, PUT") in resp.headers
    assert call("HEAD", "/items/1")[1].status == 200                    # HEAD runs the GET route
    resp = call("GET", "/nowhere")[1]
    assert (resp.status, json.loads(resp.body)) == (404, {"error": "not found: GET /nowhere"})
    assert call("POST", "/raw")[1].status == 204
    resp = call("POST", "/raw", body=b"\x00\x01")[1]
    assert (resp.status, resp.body, resp.headers) == (202, b"\x00\x01", [("Content-Type", "application/x-raw")])

    # the export class's shape: `handle_request = router.handler` under sdk.Guard
    class HttpServer(sdk.Guard):
        handle_request = router.handler

    @router.get("/boom")
    def boom(req):
        return 1 / 0

    assert HttpServer().handle_request(None, (incoming("GET", "/items/z"),))[0] == b'{"hits":1}'
    with pytest.raises(_Err, match="ZeroDivisionError"):                # any other exception: a crash (500)
        HttpServer().handle_request(None, (incoming("GET", "/boom"),))

    # Response, Headers and json_response on their own
    r = sdk.http.Response(body="héllo")
    assert r.body == "héllo".encode() and r.header("content-type") == "text/plain; charset=utf-8" and r.ok
    h = sdk.http.Headers({"A": "1"})
    h.append(("a", "2"))
    assert h["A"] == "1" and h.get_all("A") == ["1", "2"] and "a" in h and ("A", "1") in h
    h.set("A", "3")
    assert h == [("A", "3")]
    assert sdk.http.json_response([1], 202).status == 202


def test_fetch_builds_the_request_and_raises_host_errors(monkeypatch):
    sdk = load_sdk(monkeypatch)
    with pytest.raises(sdk.NotGranted, match='`\\[\\[handler\\]\\] type = "http-client"`'):
        sdk.http.fetch("GET", "http://127.0.0.1/")
    sent = []

    def send_http(req):
        sent.append(req)
        if "refused" in req.uri:
            raise _Err("127.0.0.1: connection to port 9 refused")
        return _HttpResponse(200, [("Content-Type", "application/json")], b'{"ok": true}')

    http_types = types.ModuleType("http_types")
    http_types.HttpRequest, http_types.HttpResponse = _HttpRequest, _HttpResponse
    client = types.ModuleType("http_client")
    client.send_http = send_http
    sdk = load_sdk(monkeypatch, http_types=http_types, http_client=client)
    resp = sdk.http.fetch("POST", "http://127.0.0.1:1/x", headers={"Authorization": "k"}, json={"b": 1, "a": 2})
    assert resp.ok and resp.json() == {"ok": True} and resp.header("content-type") == "application/json"
    assert sent[-1] == _HttpRequest("POST", "http://127.0.0.1:1/x",
                                    [("Authorization", "k"), ("Content-Type", "application/json")], b'{"a":2,"b":1}')
    sdk.http.fetch("PUT", "http://127.0.0.1:1/t", body="text")
    assert sent[-1].headers == [("Content-Type", "text/plain; charset=utf-8")] and sent[-1].body == b"text"
    sdk.http.fetch("GET", "http://127.0.0.1:1/")
    assert sent[-1].headers == [] and sent[-1].body is None
    with pytest.raises(sdk.HostError) as err:
        sdk.http.fetch("GET", "http://127.0.0.1:9/refused")
    assert str(err.value) == "127.0.0.1: connection to port 9 refused" and err.value.call == "http-client.send-http"


def test_http_template_grants_http_server_and_store(tmp_path):
    folder = create_project("shop", "http", tmp_path / "shop")
    manifest = (folder / "manifest.toml").read_text()
    assert re.search(r'^type = "http-server"\nport = 8080$', manifest, re.M) and 'stores = ["shop"]' in manifest
    assert "theater:simple/http-server" in manifest and re.search(r"^world\s*=", manifest, re.M) is None
    spec = read_spec(folder / "manifest.toml")
    assert spec.world_exports == ("actor", "message-server-client", "http-server")
    assert set(spec.world_imports) == {"runtime", "message-server-host", "store"}
    app = (folder / "app.py").read_text()
    assert "handle_request = router.handler" in app and '@router.put("/items/{id}")' in app
    assert "curl -s http://127.0.0.1:8080/items" in (folder / "README.md").read_text()


# ---- the demo, built once and kept ----------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """manifests/http-demo built, in a mirror of the repository's layout (no output in the repository)."""
    scratch = tmp_path_factory.mktemp("http-demo") / "src"
    shutil.copytree(REPO / DEMO, scratch / DEMO, ignore=shutil.ignore_patterns("build", "__pycache__"))
    (scratch / "actors" / "python").mkdir(parents=True)
    for actor in ACTORS:
        shutil.copyfile(REPO / "actors" / "python" / f"{actor}.py", scratch / "actors" / "python" / f"{actor}.py")
    shutil.copytree(REPO / "wit", scratch / "wit")
    return kept_build(scratch, [f"{DEMO}/{a}.toml" for a in ACTORS], BUILDS, KEEP_BUILDS) / DEMO



def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), r
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, demo):
    """The demo's tree on a free port, kvwatch polling every 500 ms: copies of its manifests with the
    port and interval rewritten and the component paths made absolute."""
    folder = tmp_path_factory.mktemp("http-tree")
    port = free_port()
    for actor in ACTORS:
        text = (demo / f"{actor}.toml").read_text()
        assert "8088" in text
        text = text.replace("8088", str(port)).replace('"interval_ms": 2000', '"interval_ms": 500')
        text = text.replace(f'component = "build/{actor}.wasm"', f'component = "{demo / "build" / f"{actor}.wasm"}"')
        (folder / f"{actor}.toml").write_text(text)
    supervision = (demo / "supervision.toml").read_text()
    t = Tree(folder, supervision)
    t.port = port
    with t:
        t.wait_running(timeout=60)
        t.wait_for(lambda: _serving(port), timeout=20, what=f"kv serving on {port}")
        yield t


def _serving(port: int) -> bool:
    try:
        return call(port, "GET", "/")[0] == 200
    except OSError:
        return False


def test_demo_validates_and_its_components_export_what_they_serve(demo):
    report = validate(demo / "supervision.toml")
    assert report.ok, [str(p) for p in report.problems]
    kv, kvwatch = (read_spec(demo / f"{a}.toml") for a in ACTORS)
    assert kv.world_exports == ("actor", "message-server-client", "http-server")
    assert set(kv.world_imports) == {"runtime", "message-server-host", "store"}
    assert set(kvwatch.world_imports) == {"runtime", "message-server-host", "http-client", "timing"}


def test_kv_put_get_delete_list_and_errors(tree):
    port = tree.port
    status, body, r = call(port, "PUT", "/kv/colour", b"blue")
    assert status == 201 and json.loads(body) == {"key": "colour", "size": 4,
                                                  "ref": hashlib.sha256(b"blue").hexdigest()}
    assert r.getheader("content-type") == "application/json"            # one Content-Type, the actor's
    assert call(port, "PUT", "/kv/colour", b"green")[0] == 200            # replaced
    assert call(port, "PUT", "/kv/size", b"9")[0] == 201
    assert call(port, "PUT", "/kv/blob", bytes(range(256)))[0] == 201
    status, body, r = call(port, "GET", "/kv/colour")
    assert (status, body, r.getheader("content-type")) == (200, b"green", "text/plain; charset=utf-8")
    status, body, r = call(port, "GET", "/kv/blob")
    assert body == bytes(range(256)) and r.getheader("content-type") == "application/octet-stream"
    assert json.loads(call(port, "GET", "/kv")[1]) == {"keys": ["blob", "colour", "size"]}
    assert json.loads(call(port, "GET", "/kv?prefix=s")[1]) == {"keys": ["size"]}
    assert json.loads(call(port, "GET", "/kv/")[1])["keys"] == ["blob", "colour", "size"]   # trailing slash
    assert call(port, "DELETE", "/kv/blob")[:2] == (200, b'{"deleted":"blob"}\n')
    status, body, _ = call(port, "GET", "/kv/blob")
    assert (status, json.loads(body)) == (404, {"error": "no key 'blob'"})
    assert call(port, "DELETE", "/kv/blob")[0] == 404
    status, body, r = call(port, "POST", "/kv/colour", b"x")
    assert status == 405 and r.getheader("allow") == "DELETE, GET, HEAD, OPTIONS, PUT"
    status, _, r = call(port, "PATCH", "/kv")
    assert status == 405 and r.getheader("allow") == "GET, HEAD, OPTIONS"
    assert call(port, "GET", "/nowhere")[0] == 404
    status, body, r = call(port, "HEAD", "/kv/colour")
    assert status == 200 and body == b"" and r.getheader("content-length") == "5"
    index = json.loads(call(port, "GET", "/")[1])
    assert index["service"] == "kv" and index["keys"] == 2 and index["served"] >= 10
    assert tree.node("root/kv")["restarts"] == 0                          # none of it was a crash
    events = [e.payload() for e in tree.events(tree.node("root/kv")["actor_id"], "http.request")]
    put = next(e for e in events if e["params"][0]["method"] == "PUT" and e["params"][0]["body"] == b"green")
    assert put["params"][0]["path"] == "/kv/colour" and put["response"]["status"] == 200


def test_kill_9_kv_loses_nothing_and_answers_again(tree):
    port = tree.port
    assert call(port, "PUT", "/kv/durable", b"written before the kill")[0] in (200, 201)
    for _ in range(20):
        call(port, "GET", "/kv/durable")
    assert json.loads(call(port, "GET", "/")[1])["served"] > 20
    before = tree.node("root/kv")
    tree.kill("root/kv")
    after = tree.wait_for(lambda: (n := tree.node("root/kv"))["pid"] not in (None, before["pid"])
                          and n["status"] == "running" and n, timeout=30, what="kv restarted")
    assert after["restarts"] == before["restarts"] + 1 and after["actor_id"] == before["actor_id"]
    status, body, _ = call(port, "GET", "/kv/durable")   # held by the gateway while kv restarts, if need be
    assert (status, body) == (200, b"written before the kill")
    assert "durable" in json.loads(call(port, "GET", "/kv")[1])["keys"]
    assert json.loads(call(port, "GET", "/")[1])["served"] < 12         # the state began again, the store not
    assert tree.pids()["root/kvwatch"] is not None and tree.node("root/kvwatch")["restarts"] == 0
    # a crash inside a route: 500 with the traceback, a restart, and the values still there
    status, body, _ = call(port, "GET", "/crash")
    assert status == 500 and b"RuntimeError: kv told to crash" in body
    tree.wait_for(lambda: tree.node("root/kv")["restarts"] == before["restarts"] + 2
                  and tree.node("root/kv")["status"] == "running", timeout=30, what="kv restarted after /crash")
    assert call(port, "GET", "/kv/durable")[:2] == (200, b"written before the kill")


def test_kvwatch_polls_kv_through_the_http_client_and_logs_it(tree):
    port = tree.port
    call(port, "PUT", "/kv/watched", b"1")

    def status() -> dict:   # answered between two looks (a look, then a 500 ms sleep)
        return json.loads(cli("request", "kvwatch", "status", home=tree.home, check=True).stdout)

    last = tree.wait_for(lambda: "watched" in ((s := status())["last"] or "") and s, timeout=15,
                         what="kvwatch seeing the key")
    assert last["looks"] >= 2 and last["url"] == f"http://127.0.0.1:{port}/kv"
    events = tree.events(tree.node("root/kvwatch")["actor_id"])     # read once: each read syncs, ~2 s here
    logs = [" ".join(e.payload()["args"]) for e in events if e.event_type == "host.runtime.log"]
    assert logs[0] == f"kvwatch up: every 500 ms GET http://127.0.0.1:{port}/kv"
    assert any(re.match(r"^kvwatch: kv has \d+ keys?: .*\bwatched\b", line) for line in logs), logs[-3:]
    calls = [e.payload() for e in events if e.event_type == "host.http-client.send-http"]
    assert len(calls) >= 2 and all(c["request"]["uri"] == f"http://127.0.0.1:{port}/kv"
                                   and c["request"]["method"] == "GET" for c in calls)
    ok = [c for c in calls if "ok" in c["result"]]
    assert ok[-1]["result"]["ok"]["status"] == 200 and ok[-1]["request"]["headers"] == [["Accept", "application/json"]]
    assert any(e.event_type == "host.timing.sleep" for e in events)   # sdk.sleep between looks


def test_replay_of_kv_and_kvwatch_matches(tree):
    ids = {a: tree.node(f"root/{a}")["actor_id"] for a in ACTORS}
    kv_restarts = tree.node("root/kv")["restarts"]
    tree.close()
    assert tree.events(ids["kv"], "http.request")                     # kvwatch's looks at least
    sleeps = tree.events(ids["kvwatch"], "host.timing.sleep")
    assert sleeps  # kvwatch slept between looks: replay serves those calls from the record, never sleeps
    for actor in ACTORS:
        out = cli("replay", actor, "--json", home=tree.home, timeout=300)   # timeout: a hang guard only
        result = json.loads(out.stdout)
        assert out.returncode == 0 and result["match"] is True and result["divergence"] is None, out.stdout
        if actor == "kv":                    # every incarnation: the kill -9 and the crash included
            assert result["incarnations"] == list(range(1, kv_restarts + 2))


# ---- a Python actor serving WebSocket (actors/python/wschat.py) ------------------------------------

@pytest.fixture(scope="module")
def wschat(tmp_path_factory) -> Path:
    """actors/python/wschat.py built (kept) with a manifest granting websocket-server on a placeholder
    port; the test rewrites the port."""
    scratch = tmp_path_factory.mktemp("wschat") / "src"
    (scratch / "actor").mkdir(parents=True)
    shutil.copyfile(REPO / "actors" / "python" / "wschat.py", scratch / "actor" / "wschat.py")
    shutil.copyfile(SDK_FILE, scratch / "actor" / "theater_sdk.py")
    shutil.copytree(REPO / "wit", scratch / "wit")
    (scratch / "actor" / "wschat.toml").write_text(
        'name = "wschat"\ncomponent = "build/wschat.wasm"\n\n[build]\nmodule = "wschat"\nwit = "../wit"\n\n'
        '[[handler]]\ntype = "websocket-server"\nport = 1\npath = "/chat"\n')
    return kept_build(scratch, ["actor/wschat.toml"], BUILDS, KEEP_BUILDS) / "actor"


def test_a_python_actor_serves_websocket_and_replays(tmp_path, wschat):
    import asyncio

    import aiohttp

    port = free_port()
    text = (wschat / "wschat.toml").read_text().replace("port = 1\n", f"port = {port}\n")
    (tmp_path / "wschat.toml").write_text(text.replace('component = "build/wschat.wasm"',
                                                       f'component = "{wschat / "build" / "wschat.wasm"}"'))
    tree = Tree(tmp_path, """
        [supervisor]
        id = "root"
        [[supervisor.children]]
        id = "wschat"
        manifest = "wschat.toml"
    """)

    async def session() -> list:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{port}/chat") as ws:
                got = [(await ws.receive()).data]
                for frame in ("hi", b"\x00\x01", "bye"):
                    await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
                    msg = await ws.receive()
                    got.append(msg.data if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
                               else ("closed", ws.close_code))
                return got

    with tree:
        tree.wait_running(timeout=60)
        tree.wait_for(lambda: _ws_up(port), timeout=20, what="wschat serving")
        got = asyncio.run(asyncio.wait_for(session(), 30))
        assert got[0].startswith("hello ") and got[1].startswith("echo: hi (#")
        assert got[2] == b"\x00\x01" and got[3] == ("closed", 1000)
        out = cli("replay", "wschat", "--home", str(tree.home))
        assert out.returncode == 0 and "all match" in out.stdout


def _ws_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
