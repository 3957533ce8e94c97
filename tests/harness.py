"""A real node for tests: `up --detach` in a private home, queried over the real control socket.

Every test that uses it gets real processes, real sockets and real signals;
teardown stops the node and SIGKILLs anything left, so no test leaks a process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from theater_otp.chain.store import connect, read_events
from theater_otp.client import ControlClient
from theater_otp.errors import NodeNotRunning, TheaterError
from theater_otp.home import Home

REPO = Path(__file__).resolve().parent.parent
WAT = REPO / "actors" / "wat"
CLI = [sys.executable, "-m", "theater_otp.cli"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, home: Path | None = None, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    cmd = CLI + list(args) + (["--home", str(home)] if home else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def write_manifest(folder: Path, name: str, wat: str, initial_state: str | None = None,
                   handlers: tuple[str, ...] = ()) -> Path:
    path = folder / f"{name}.toml"
    lines = [f'name = "{name}"', f'component = "{WAT / wat}"']
    if initial_state is not None:
        lines.append(f"initial_state = {initial_state!r}".replace("'", '"'))
    for h in handlers:
        lines += ["", "[[handler]]", f'type = "{h}"']
    path.write_text("\n".join(lines) + "\n")
    return path


class Tree:
    """One running node. Use as a context manager; `close()` always leaves no process behind."""

    def __init__(self, folder: Path, supervision: str, up_args: tuple[str, ...] = ()):
        self.up_args = up_args
        self.folder = folder
        self.home = folder / "home"
        self.config = folder / "supervision.toml"
        self.config.write_text(textwrap.dedent(supervision))
        self.node_pid: int | None = None
        self._seen: set[int] = set()

    def __enter__(self) -> "Tree":
        proc = cli("up", str(self.config), "--detach", *self.up_args, home=self.home)
        if proc.returncode != 0:
            raise AssertionError(f"up failed: {proc.stderr}")
        self.node_pid = self.tree()["node_pid"]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, kind: str, body: dict | None = None, timeout_s: float = 10) -> Any:
        with ControlClient(Home.at(self.home)) as c:
            return c.call(kind, body, timeout_s=timeout_s)

    def tree(self) -> dict:
        snap = self.call("tree")
        for n in walk(snap):
            if n.get("pid"):
                self._seen.add(n["pid"])
        return snap

    def node(self, path: str) -> dict:
        for n in walk(self.tree()):
            if n["path"] == path:
                return n
        raise KeyError(path)

    def pids(self) -> dict[str, int | None]:
        return {n["path"]: n["pid"] for n in walk(self.tree()) if n["kind"] == "actor"}

    def kill(self, path: str, sig: int = signal.SIGKILL) -> int:
        pid = self.node(path)["pid"]
        assert pid, f"{path} has no pid"
        os.kill(pid, sig)
        return pid

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def wait_running(self, timeout: float = 10.0) -> dict[str, int]:
        """Wait until every actor runs with a pid; return the pids."""
        def all_up():
            snap = self.tree()
            actors = [n for n in walk(snap) if n["kind"] == "actor"]
            if all(n["status"] == "running" and n["pid"] for n in actors) and not any(
                    n["status"] != "running" for n in walk(snap) if n["kind"] == "supervisor"):
                return {n["path"]: n["pid"] for n in actors}
            return None
        return self.wait_for(all_up, timeout, "every actor running")

    def events(self, chain_id: str, event_type: str | None = None) -> list:
        """Read a chain after the node's own events so far are durable (what `tree` showed is in it)."""
        try:
            self.call("sync")
        except NodeNotRunning:
            pass  # the tree is down: everything it emitted was flushed on the way out
        conn = connect(Home.at(self.home).chain_db, readonly=True)
        try:
            return read_events(conn, chain_id, event_type=event_type)
        finally:
            conn.close()

    def supervisor_events(self, sup_path: str, event_type: str) -> list[dict]:
        return [e.payload() for e in self.events(f"supervisor:{sup_path}", event_type)]

    def processes(self) -> list[psutil.Process]:
        """The node and everything below it (forkserver, writer, workers)."""
        try:
            node = psutil.Process(self.node_pid)
            return [node] + node.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        if self.node_pid is None:
            return
        procs = self.processes()
        if procs:
            # the control command `theater-otp down` sends (the CLI itself is tested in test_lifecycle
            # and test_bad_input); without a CLI interpreter per tree the suite spends ~0.45 s less each
            try:
                self.call("down", timeout_s=60)
            except TheaterError:
                pass  # it stopped on its own, or is stopping already: what is left is killed below
            deadline = time.monotonic() + 10
            while living(procs[:1]) and time.monotonic() < deadline:  # the node, as `down` waits for it
                time.sleep(0.02)
        for p in self.processes() + [psutil.Process(pid) for pid in self._seen if psutil.pid_exists(pid)]:
            try:
                if "theater_otp" in " ".join(p.cmdline()) or "forkserver" in " ".join(p.cmdline()):
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        self.node_pid = None


def living(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `procs` still running (a zombie has exited: only its reaper is missing)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (alive := living(procs)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


def walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from walk(child)


class StandaloneWriter:
    """A real chain-writer process started the way the node starts it, with secrets the test holds:
    the test can speak as the node (`connect(self.secrets.node)`) or as a producer it registered."""

    def __init__(self, folder: Path):
        from theater_otp.protocol.trust import RunSecrets

        self.home = Home.at(folder / "home")
        self.home.prepare()
        self.secrets = RunSecrets.new()
        self._ctx: Any = None
        self._proc: Any = None
        self._socks: list = []

    def __enter__(self) -> "StandaloneWriter":
        import multiprocessing

        import zmq

        from theater_otp.chain.writer import writer_main

        self._ctx = zmq.Context()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=writer_main, args=(self.home, os.getpid(), self.secrets), daemon=True)
        self._proc.start()
        return self

    def connect(self, identity: bytes) -> Any:
        """A DEALER on the writer's socket with this identity."""
        import zmq

        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.home.chain_endpoint)
        self._socks.append(sock)
        return sock

    def register(self, identity: bytes, actor_id: str, incarnation: int) -> None:
        """As the node: `identity` may write `actor_id` for `incarnation`; answered once the writer
        has read it (a sync from the node after it)."""
        from theater_otp.protocol import Envelope, decode, encode

        node = self.connect(self.secrets.node)
        node.send(encode(Envelope("producer", "node", "chain", 0,
                                  {"identity": identity, "actor_id": actor_id, "incarnation": incarnation})))
        node.send(encode(Envelope("sync", "node", "chain", 1)))
        assert node.poll(20_000), "the chain-writer did not answer the node's sync"
        assert decode(node.recv()).kind == "synced"

    def __exit__(self, *exc) -> None:
        for sock in self._socks:
            sock.close()
        self._ctx.term()
        self._proc.kill()
        self._proc.join(5)
