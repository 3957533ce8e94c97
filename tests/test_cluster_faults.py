"""Clusters under bad input and faults: a server that does not answer, a name taken twice, frames that
are not ours, a partition (the NATS server stopped for seconds and started again)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import msgpack
import pytest

from harness import Tree, cli, free_port, write_manifest
from natsfix import NatsFixture
from theater_otp.client import running_node_pid
from theater_otp.errors import RemoteError
from theater_otp.home import Home

pytestmark = pytest.mark.integration


def _flat(folder: Path, root: str, children: str = "") -> str:
    write_manifest(folder, "counter", "counter.wat", initial_state="0")
    return f"""
        [supervisor]
        id = "{root}"
        strategy = "one_for_one"
        intensity = 20
        period = 5

        [[supervisor.children]]
        id = "c"
        manifest = "{folder / 'counter.toml'}"
        {children}
    """


@pytest.fixture
def nats(tmp_path):
    fixture = NatsFixture(tmp_path / "nats", free_port())
    fixture.start()
    try:
        yield fixture
    finally:
        fixture.stop()


def test_a_cluster_url_that_does_not_answer_fails_up_with_one_line(tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "supervision.toml").write_text(_flat(tmp_path, "r"))
    out = cli("up", str(tmp_path / "supervision.toml"), "--detach", "--cluster", url, "--node-name", "n1",
              home=tmp_path / "home", timeout=30)
    assert out.returncode == 1, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach NATS at {url}" in errors[0], out.stderr
    assert running_node_pid(Home.at(tmp_path / "home")) is None


@pytest.mark.parametrize("args, message", [
    (("--cluster", "http://127.0.0.1:4222"), "expected nats://HOST:PORT"),
    (("--cluster", "nats://127.0.0.1:4222", "--node-name", "Bad Name!"), "--node-name 'Bad Name!'"),
    (("--node-name", "n1"), "--node-name needs --cluster"),
])
def test_bad_cluster_settings_are_refused_before_anything_starts(tmp_path, args, message):
    (tmp_path / "supervision.toml").write_text(_flat(tmp_path, "r"))
    out = cli("up", str(tmp_path / "supervision.toml"), "--detach", *args, home=tmp_path / "home", timeout=30)
    assert out.returncode == 2 and message in out.stderr, out


def test_a_node_name_held_by_a_live_node_is_refused_and_freed_when_it_goes(tmp_path, nats):
    first = tmp_path / "a"
    first.mkdir()
    with Tree(first, _flat(first, "ra"), up_args=("--cluster", nats.url, "--node-name", "twin")) as a:
        second = tmp_path / "b"
        second.mkdir()
        (second / "supervision.toml").write_text(_flat(second, "rb"))
        out = cli("up", str(second / "supervision.toml"), "--detach", "--cluster", nats.url, "--node-name", "twin",
                  home=second / "home", timeout=30)
        assert out.returncode == 1, out
        assert "node name 'twin' is taken by a live node" in out.stderr and f"pid {a.node_pid}" in out.stderr
        # killed, not stopped: no goodbye, the key stays; its heartbeats stop, so the name is free again
        os.kill(a.node_pid, signal.SIGKILL)
        b = Tree(second, _flat(second, "rb"), up_args=("--cluster", nats.url, "--node-name", "twin"))
        with b:
            assert b.tree()["cluster"]["node"] == "twin"


def _publish(url: str, subject: str, frames: list[bytes]) -> list[bytes | None]:
    import nats as nats_py

    async def go() -> list[bytes | None]:
        nc = await nats_py.connect(url)
        answers: list[bytes | None] = []
        try:
            for frame in frames:
                if subject.endswith(".ctl"):
                    try:
                        answers.append((await nc.request(subject, frame, timeout=0.3)).data)
                    except Exception:  # nats.errors.TimeoutError: a frame that is not ours gets no answer
                        answers.append(None)
                else:
                    await nc.publish(subject, frame)
            await nc.flush()
        finally:
            await nc.close()
        return answers

    return asyncio.run(go())


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 2 else 6)
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {str(rng.randrange(9)): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return (None, True, rng.randint(-2**63, 2**64 - 1), rng.random() * 1e308, "x" * rng.randrange(50),
            bytes(rng.randrange(256) for _ in range(rng.randrange(20))))[kind]


def test_frames_that_are_not_ours_are_dropped_and_counted_and_the_node_goes_on(tmp_path, nats):
    with Tree(tmp_path, _flat(tmp_path, "r"), up_args=("--cluster", nats.url, "--node-name", "n1")) as t:
        t.wait_running()
        garbage = [b"", b"\x00\xff garbage", msgpack.packb([1, 2, 3]), msgpack.packb({"no": "kind"}),
                   msgpack.packb({"k": "send", "from": 7}), b"\xc1" * 100]
        _publish(nats.url, "theater.node.n1.in", garbage)
        _publish(nats.url, "theater.node.n1.ctl", [b"\x93", msgpack.packb("tree")])
        # well-formed envelopes with every kind the node takes from other nodes, and random fields
        rng = random.Random(14)
        kinds = ["send", "request", "reply", "undeliverable", "host", "hosted", "hosted_exit", "unhost", "nope"]
        frames = []
        for _ in range(300):
            frame = {key: _random_value(rng) for key in rng.sample(
                ["to", "corr", "sender", "body", "ref", "spec", "supervisor", "kind", "detail", "answer", "pid",
                 "actor_id", "shutdown", "error", "timeout_ms", "restart_start"], rng.randrange(8))}
            frame.update({"k": rng.choice(kinds), "from": rng.choice(["n2", "n1", "ghost"])})
            frames.append(msgpack.packb(frame, use_bin_type=True))
        _publish(nats.url, "theater.node.n1.in", frames)
        counters = t.wait_for(lambda: (c := t.tree()["cluster"])["foreign_frames"] >= 8 and c["dropped_frames"] > 0
                              and c, timeout=10, what="the link's count of foreign frames, the node's of bad ones")
        assert counters["connected"]
        # each bad frame was refused by a check, not by the node's last-resort fault boundary
        assert "failed handling" not in (t.home / "node.log").read_text()
        assert cli("request", "c", "inc", home=t.home, check=True).stdout.strip() == "1"
        # the control subject still answers well-formed requests
        answer = _publish(nats.url, "theater.node.n1.ctl", [msgpack.packb({"kind": "ping"})])[0]
        assert answer is not None and "ok" in msgpack.unpackb(answer)


def test_a_partition_heals_hosted_children_restart_and_both_chains_verify(tmp_path, nats):
    a, b = tmp_path / "n1", tmp_path / "n2"
    a.mkdir()
    b.mkdir()
    with Tree(b, _flat(b, "r2"), up_args=("--cluster", nats.url, "--node-name", "n2")) as n2, \
            Tree(a, _flat(a, "r1", f"""
        [[supervisor.children]]
        id = "away"
        node = "n2"
        manifest = "{a / 'counter.toml'}"
    """), up_args=("--cluster", nats.url, "--node-name", "n1")) as n1:
        n1.wait_running()
        before = n1.node("r1/away")
        assert before["node"] == "n2" and cli("request", "r1/away", "inc", home=n1.home, check=True).stdout.strip() == "1"
        nats.stop()
        # each side declares the other down (heartbeats stop): n1's hosted child exits with
        # noconnection, n2 stops the guest whose owner it lost
        n1.wait_for(lambda: n1.tree()["cluster"]["down_nodes"] == ["n2"], timeout=10, what="n1 sees n2 down")
        n2.wait_for(lambda: n2.tree()["cluster"]["down_nodes"] == ["n1"], timeout=10, what="n2 sees n1 down")
        nats.start()
        after = n1.wait_for(lambda: (c := n1.node("r1/away"))["status"] == "running" and c["pid"] != before["pid"]
                            and c, timeout=30, what="away running again on n2")
        assert after["node"] == "n2"
        assert cli("request", "r1/away", "inc", home=n1.home, check=True).stdout.strip() == "1"
        events = [(e.event_type, e.payload()) for e in n1.events("supervisor:r1")]
        reasons = [str(p.get("reason")) for t, p in events if p.get("child") == "away"]
        assert any("noconnection" in r for r in reasons), events
        for tree in (n1, n2):
            out = cli("verify", home=tree.home)
            assert out.returncode == 0, out.stdout + out.stderr
        # nothing stored during the partition is missing from the copy in JetStream: the links
        # caught up (lag 0) and each node's copy of its counter verifies against its own chain
        for tree, name, path in ((n1, "n1", "r1/c"), (n2, "n2", "r2/c")):
            cli("request", path, "inc", home=tree.home, check=True)
            tree.wait_for(lambda t=tree: (r := t.tree()["cluster"]["replica"]) and r["lag"] == 0
                          and r["acked_events"] > 0, timeout=20, what=f"{name}'s chains copied")
            out = cli("verify-remote", path, "--cluster", nats.url, "--node-name", name, home=tree.home)
            assert out.returncode == 0, out.stdout + out.stderr


def test_a_frame_too_big_for_the_server_is_an_error_to_its_sender_not_a_hang(tmp_path):
    """A NATS server left at its 1 MiB max_payload (not `theater-otp nats`): the link warns when it
    connects, and a request that cannot cross is answered with NATS's refusal at once."""
    import subprocess

    from theater_otp.cluster import devserver

    port = free_port()
    server = subprocess.Popen([str(devserver.find_binary()), "-js", "-sd", str(tmp_path / "js"), "-a", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    try:
        a, b = tmp_path / "n1", tmp_path / "n2"
        a.mkdir()
        b.mkdir()
        write_manifest(b, "echo", "echo.wat")
        with Tree(b, f"""
            [supervisor]
            id = "r2"

            [[supervisor.children]]
            id = "e2"
            manifest = "{b / 'echo.toml'}"
        """, up_args=("--cluster", url, "--node-name", "n2")), \
                Tree(a, _flat(a, "r1"), up_args=("--cluster", url, "--node-name", "n1")) as n1:
            assert "cannot cross" in (n1.home / "node.log").read_text()
            n1.wait_for(lambda: n1.tree()["cluster"]["live_nodes"] == ["n2"], timeout=10, what="n2 heard")
            assert n1.call("request", {"target": "r2/e2", "payload": b"small"})["ok"] == b"small"
            with pytest.raises(RemoteError) as err:
                n1.call("request", {"target": "r2/e2", "payload": b"x" * (1 << 20), "timeout_ms": 60_000},
                        timeout_s=20)
            assert "could not reach node n2" in str(err.value) and "payload" in str(err.value).lower(), err.value
    finally:
        server.kill()
        server.wait()
