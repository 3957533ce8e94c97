"""The CLI's side of the control socket: one request, one reply, with a deadline."""

from __future__ import annotations

import itertools
from typing import Any

import zmq

from .errors import NodeNotRunning, RemoteError
from .home import Home
from .protocol import Envelope, ProtocolError, decode, encode

_corr = itertools.count(1)


def running_node_pid(home: Home) -> int | None:
    """The pid of a live node at `home`, or None (a stale pid file, a zombie or another program
    that got the pid does not count).

    Every CLI command asks this first, so it reads /proc itself: psutil costs ~30 ms to import, and
    node.boot's copy (for `up`) loads the config loader and wasmtime."""
    try:
        pid = int(home.pidfile.read_text().strip())
        with open(f"/proc/{pid}/stat", "rb") as f:  # "pid (comm) state ...": comm may hold ") "
            state = f.read().rpartition(b")")[2].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError, IndexError):
        return None
    if state in (b"Z", b"X"):
        return None
    return pid if b"theater_otp.node" in cmdline else None


class ControlClient:
    """Owns one DEALER socket to the node's control endpoint; use it in a `with` block."""

    def __init__(self, home: Home):
        self.home = home
        if running_node_pid(home) is None:
            raise NodeNotRunning(f"no node is running at {home.root} (start one with `theater-otp up`)")
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(home.control_endpoint)

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()

    def call(self, kind: str, body: dict | None = None, timeout_s: float = 10.0) -> Any:
        corr = next(_corr)
        self.sock.send(encode(Envelope(kind, "cli", "node", corr, body or {})))
        while True:
            if not self.sock.poll(int(timeout_s * 1000)):
                raise NodeNotRunning(f"the node at {self.home.root} did not answer {kind!r} within {timeout_s:.0f} s")
            try:
                env = decode(self.sock.recv(), peer="node")
            except ProtocolError as exc:
                raise RemoteError("protocol", str(exc)) from None
            if env.corr != corr:
                continue
            if env.kind == "error":
                body = env.body if isinstance(env.body, dict) else {}
                raise RemoteError(str(body.get("code", "error")), str(body.get("message", "unknown error")))
            return env.body
