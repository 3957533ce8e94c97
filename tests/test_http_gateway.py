"""The HTTP gateway (theater_otp/http/gateway.py) against a stand-in node: real HTTP clients, a
real ROUTER socket telling it routes as the node would and a real DEALER answering as the worker would. The real node and actors are in test_http_server.py."""

import asyncio
import http.client
import socket
import threading

import pytest
import zmq

from theater_otp.home import Home
from theater_otp.http.gateway import GatewayConfig, Listener, serve
from theater_otp.protocol import Envelope, decode, encode

pytestmark = pytest.mark.integration


class StandIn:
    """The node and the serving worker, stood in for: a ROUTER on the home's router endpoint (the
    gateway's `http_ready` in, `route`/`unroute` out) and a DEALER with the worker's identity on the
    gateway's endpoint, answering http_request envelopes by path."""

    IDENTITY = b"actor-1/1"

    def __init__(self, home: Home):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(home.router_endpoint)
        self.worker = self.ctx.socket(zmq.DEALER)
        self.worker.setsockopt(zmq.IDENTITY, self.IDENTITY)
        self.worker.connect(home.gateway_endpoint)
        self.seen: list[dict] = []
        self.gateway_ident: bytes | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def answer(self, b: dict) -> dict | None:
        if b["path"] == "/killed":  # the worker dies holding it: the node says so
            self.tell("unroute", {"target": "root/web", "identity": self.IDENTITY, "exit": "killed",
                                  "reason": "exited (killed)"})
            self.tell("route", {"target": "root/web", "identity": self.IDENTITY})  # and its replacement is up
            return None
        if b["path"] == "/silent":  # held by the worker past the listener's timeout
            return None
        if b["path"] == "/crash":
            return {"error": "trap in handle-request: unreachable", "exit": "abnormal"}
        if b["path"] == "/bad-status":
            return {"ok": {"status": 999, "headers": [], "body": b""}}
        if b["path"] == "/bad-header":
            return {"ok": {"status": 200, "headers": [["x", "a\r\nSet-Cookie: evil"]], "body": b""}}
        return {"ok": {"status": 201, "headers": [["content-type", "text/plain"], ["x-seen", "1"]],
                       "body": f"{b['method']} {b['uri']} {b['path']} {b['query']}|".encode() + (b["body"] or b"")}}

    def tell(self, kind: str, body: dict) -> None:
        assert self.gateway_ident is not None
        self.router.send_multipart([self.gateway_ident, encode(Envelope(kind, "node", "gateway", 0, body))])

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.worker, zmq.POLLIN)
        while not self.stopping.is_set():
            ready = dict(poller.poll(50))
            if self.router in ready:
                ident, frame = self.router.recv_multipart()
                if decode(frame).kind == "http_ready":
                    self.gateway_ident = ident
                    self.tell("route", {"target": "root/web", "identity": self.IDENTITY})
            if self.worker in ready:
                env = decode(self.worker.recv())
                if env.kind == "http_request":
                    self.seen.append(env.body)
                    answer = self.answer(env.body)
                    if answer is not None:
                        self.worker.send(encode(Envelope("reply", "actor-1", "gateway", env.corr, answer)))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.router.close(linger=0)
        self.worker.close(linger=0)
        self.ctx.term()


@pytest.fixture
def gateway(tmp_path):
    home = Home(tmp_path / "home")
    home.prepare()
    node = StandIn(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listener = Listener(port, "127.0.0.1", "root/web", "web.toml", max_body_bytes=1000, max_header_bytes=2048,
                        timeout_ms=600, max_connections=4, hold_ms=300)
    loop = asyncio.new_event_loop()

    async def run() -> None:
        try:
            await serve(GatewayConfig(home, 0, (listener,), b"http-gateway/test"))
        except asyncio.CancelledError:
            pass  # the fixture's teardown

    task = loop.create_task(run())
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    for _ in range(200):
        if up():
            break
        threading.Event().wait(0.01)
    yield port, node
    loop.call_soon_threadsafe(task.cancel)
    thread.join(5)
    loop.close()
    node.close()


def call(port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), r
    finally:
        c.close()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_a_request_is_handed_over_whole_and_the_answer_comes_back(gateway):
    port, node = gateway
    status, body, r = call(port, "/a%20b/c?x=1&y=%20", "POST", b"payload", {"X-One": "1"})
    assert status == 201 and body == b"POST /a%20b/c?x=1&y=%20 /a b/c x=1&y=%20|payload"
    assert r.getheader("x-seen") == "1"
    assert ["X-One", "1"] in node.seen[-1]["headers"]


def test_keep_alive_serves_several_requests_on_one_connection(gateway):
    port, _ = gateway
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for i in range(5):
        c.request("GET", f"/n{i}")
        r = c.getresponse()
        assert r.status == 201 and r.read().startswith(f"GET /n{i}".encode())
    c.close()


def test_client_limits(gateway):
    port, node = gateway
    before = len(node.seen)
    assert call(port, "/big", "POST", b"x" * 1001)[0] == 413
    assert call(port, "/h", headers={"X-Big": "v" * 3000})[0] == 431
    assert raw(port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab").startswith(b"HTTP/1.1 408")
    assert raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408")
    first = raw(port, b"NOT HTTP AT ALL\r\n\r\n").split(b"\r\n")[0]
    assert first.startswith(b"HTTP/1.") and b" 400 " in first
    assert len(node.seen) == before  # none of it reached the node


def test_what_the_worker_answers_becomes_the_right_status(gateway):
    port, node = gateway
    status, body, r = call(port, "/killed")           # the worker ended holding it
    assert status == 503 and r.getheader("Retry-After") == "1"
    status, body, _ = call(port, "/crash")
    assert status == 500 and b"unreachable" in body
    status, body, _ = call(port, "/bad-status")
    assert status == 500 and b"invalid status 999" in body
    status, body, _ = call(port, "/bad-header")
    assert status == 500 and b"invalid header" in body


def test_a_keep_alive_connection_that_sent_its_body_later_is_not_cut_by_the_header_timeout(gateway):
    """The slow-header guard watches only the first header block: a body in a later packet and an
    idle pause under the keep-alive timeout do not earn an unsolicited 408."""
    port, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        threading.Event().wait(0.1)
        s.sendall(b"body")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 201") and first.endswith(b"|body")
        threading.Event().wait(0.8)  # past the 600 ms header timeout, under the 1 s keep-alive
        s.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        second = s.recv(65536)
        assert second.startswith(b"HTTP/1.1 201") and b"GET /two" in second


def test_a_path_no_worker_serves_is_held_then_answered_503(gateway):
    """Between a worker's end and its replacement's route the request is held (hold_ms = 300), and
    then answered: 503 + Retry-After if nobody came, the new worker's answer if one did."""
    port, node = gateway
    assert call(port, "/a")[0] == 201
    node.tell("unroute", {"target": "root/web", "identity": node.IDENTITY, "exit": "killed", "reason": "killed"})
    # the unroute travels on the node's socket, the request on HTTP: until the gateway has read the
    # unroute a request still reaches the worker (201); after, none does
    for _ in range(200):
        status, body, r = call(port, "/held")
        if status != 201:
            break
    assert status == 503 and r.getheader("Retry-After") == "1" and b"restarting" in body
    timer = threading.Timer(0.1, node.tell, ("route", {"target": "root/web", "identity": node.IDENTITY}))
    timer.start()
    status, body, _ = call(port, "/held-then-served")
    timer.join()
    assert status == 201 and body.startswith(b"GET /held-then-served")


def test_a_route_to_a_worker_that_is_not_connected_is_held_not_lost(gateway):
    """The node names a worker the gateway has no connection from (ROUTER_MANDATORY: EHOSTUNREACH):
    the request is held like one for a restarting actor, then served when the route is right."""
    port, node = gateway
    assert call(port, "/first")[0] == 201
    node.tell("route", {"target": "root/web", "identity": b"nobody/9"})
    timer = threading.Timer(0.1, node.tell, ("route", {"target": "root/web", "identity": node.IDENTITY}))
    timer.start()
    status, body, _ = call(port, "/x")
    timer.join()
    assert status == 201


def test_frames_that_are_not_ours_are_dropped_and_the_gateway_serves_on(gateway):
    port, node = gateway
    assert call(port, "/first")[0] == 201  # the gateway said it is ready and has its route
    node.router.send_multipart([node.gateway_ident, b"\xc1garbage"])
    node.tell("route", {"target": 7})
    node.tell("teleport", {"target": "root/web", "identity": node.IDENTITY})
    node.worker.send(b"not msgpack")
    node.worker.send(encode(Envelope("reply", "actor-1", "gateway", 999_999, {"ok": {}})))  # nobody waits for it
    assert call(port, "/still")[0] == 201


def test_an_answer_from_any_identity_but_the_serving_workers_is_ignored(gateway):
    """A process that connects to gateway.sock and answers every request number it can guess does not
    answer anyone's request: the gateway takes an answer only from the worker it asked."""
    port, node = gateway
    assert call(port, "/first")[0] == 201
    home_endpoint = node.worker.getsockopt(zmq.LAST_ENDPOINT).decode()
    rogue = node.ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.IDENTITY, b"rogue/1")
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(home_endpoint)
    forged = {"ok": {"status": 200, "headers": [], "body": b"forged"}}
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            for corr in range(1, 200):
                rogue.send(encode(Envelope("reply", "actor-1", "gateway", corr, forged)))
            stop.wait(0.01)

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        status, body, _ = call(port, "/silent")
    finally:
        stop.set()
        flooder.join()
        rogue.close(0)
    assert (status, b"forged" in body) == (504, False)
    assert call(port, "/after")[0] == 201
