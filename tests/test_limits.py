"""Limits that hold (docs/limits.md): hostile actors against real workers.

Each attack gets an error or a crash with its reason; the node and every other
actor keep running, and the node's memory stays flat.
"""

import struct

import psutil
import pytest

from harness import WAT, Tree, cli
from theater_otp.worker.lograte import LogRate

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def manifest(folder, name: str, wat: str, state: str, limits: str = "", extra: str = "") -> None:
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\ncomponent = "{WAT / wat}"\ninitial_state = "{state}"\n{extra}\n'
        + (f"[limits]\n{limits}\n" if limits else ""))


def hostile_tree(tmp_path, limits: str, sink_limits: str = "") -> Tree:
    manifest(tmp_path, "hostile", "hostile.wat", "hostile", limits)
    manifest(tmp_path, "sink", "hostile.wat", "sink", sink_limits)
    manifest(tmp_path, "bystander", "counter.wat", "0")
    manifest(tmp_path, "pusher", "hostile.wat", "sink")
    return Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 20
        period = 10
        [[supervisor.children]]
        id = "hostile"
        manifest = "hostile.toml"
        [[supervisor.children]]
        id = "sink"
        manifest = "sink.toml"
        [[supervisor.children]]
        id = "bystander"
        manifest = "bystander.toml"
        [[supervisor.children]]
        id = "pusher"
        manifest = "pusher.toml"
    """)


def ask(tree: Tree, target: str, payload: bytes, timeout_ms: int = 30_000) -> bytes:
    reply = tree.call("request", {"target": target, "payload": payload, "timeout_ms": timeout_ms},
                      timeout_s=timeout_ms / 1000 + 5)
    return bytes(reply["ok"])


def op(code: str, n: int) -> bytes:
    return code.encode() + struct.pack("<I", n)


def bystander_alive(tree: Tree, before: dict) -> None:
    """The other actors still run in the same processes and answer."""
    now = tree.pids()
    assert now["root/bystander"] == before["root/bystander"]
    assert now["root/sink"] == before["root/sink"]
    assert cli("request", "bystander", "get", home=tree.home).returncode == 0


def crash_reasons(tree: Tree, path: str) -> list[str]:
    actor_id = tree.node(path)["actor_id"]
    return [e.payload()["reason"] for e in tree.events(actor_id, "actor.crash")]


def test_an_endless_loop_of_host_calls_is_stopped_by_the_cpu_budget_and_the_log_by_its_rate(tmp_path):
    """Host calls do not renew the budget: a log flood ends as a crash naming cpu_ms; the log
    lines beyond log_bytes_per_s are dropped and counted in a log.truncated event."""
    with hostile_tree(tmp_path, "cpu_ms = 1500\nlog_bytes_per_s = 2048") as tree:
        before = tree.wait_running()
        node = psutil.Process(tree.node_pid)
        rss_before = node.memory_info().rss
        log_before = (tree.home / "node.log").stat().st_size
        cli("send", "hostile", "L", home=tree.home, check=True)
        reason = tree.wait_for(lambda: crash_reasons(tree, "root/hostile"), timeout=30, what="the flood stopped")[-1]
        assert "CPU budget exceeded in theater:simple/message-server-client.handle-send" in reason
        assert "cpu_ms = 1500" in reason
        tree.wait_for(lambda: tree.node("root/hostile")["status"] == "running", what="hostile restarted")
        bystander_alive(tree, before)
        actor_id = tree.node("root/hostile")["actor_id"]
        truncated = [e.payload() for e in tree.events(actor_id, "log.truncated")]
        assert truncated and truncated[0]["limit_bytes_per_s"] == 2048
        assert sum(t["dropped_lines"] for t in truncated) > 100
        # a dropped line leaves no event of its own: the chain holds the lines written, not the flood
        logged = tree.events(actor_id, "host.runtime.log")
        crashed = tree.events(actor_id, "actor.crash")[0]
        # the flood ran from its first line to the crash (chain timestamps, not the test's clock); at
        # most the burst (4 s of the rate) plus the rate over that time may be written
        seconds = (crashed.timestamp - logged[0].timestamp) / 1e9
        allowed_lines = (2048 * 4 + 2048 * (seconds + 1)) / 40
        assert len(logged) <= allowed_lines
        flood_lines = (tree.home / "node.log").read_text().count("flooding the log with this line")
        assert flood_lines <= allowed_lines
        assert (tree.home / "node.log").stat().st_size - log_before < 200_000
        assert node.memory_info().rss - rss_before < 20 * MiB


def test_a_self_send_flood_meets_a_full_mailbox_as_an_error_to_the_sender(tmp_path):
    with hostile_tree(tmp_path, "mailbox = 100") as tree:
        before = tree.wait_running()
        worker = psutil.Process(before["root/hostile"])
        rss_before = worker.memory_info().rss
        sent_ok, refused = struct.unpack("<II", ask(tree, "hostile", op("S", 20_000)))
        # the actor is busy in this request: its own mailbox fills and every later send is refused
        assert sent_ok == 100 and refused == 19_900
        tree.wait_for(lambda: tree.node("root/hostile")["mailbox"] == 0, what="the 100 messages taken")
        error = ask(tree, "hostile", op("E", 200))
        assert b"mailbox of root/hostile is full" in error and b"limit mailbox = 100" in error
        assert worker.memory_info().rss - rss_before < 30 * MiB
        node_info = tree.node("root/hostile")
        assert node_info["refused"] >= 19_900 + 100
        assert node_info["pid"] == before["root/hostile"]  # an error, not a crash
        inspect = cli("inspect", "hostile", "--json", home=tree.home, check=True).stdout
        assert '"refused"' in inspect and '"mailbox": 100' in inspect
        bystander_alive(tree, before)


def test_a_message_over_message_bytes_is_refused_to_its_sender_naming_the_limit(tmp_path):
    with hostile_tree(tmp_path, "message_bytes = 65536", sink_limits="message_bytes = 1000") as tree:
        before = tree.wait_running()
        # over the sender's own limit
        assert ask(tree, "hostile", op("B", 65_537)) == \
            b"message of 65537 bytes is over this actor's limit message_bytes = 65536"
        # at the limit: delivered (to itself: its own limit is the receiver's too)
        assert ask(tree, "hostile", op("B", 65_536)) == b"ok"
        # a 64 MiB message never leaves the actor: more than wasmtime copies in one host call, so
        # the call itself traps and the actor crashes with that reason
        with pytest.raises(Exception, match="too much data in one host call"):
            ask(tree, "hostile", op("B", 64 * MiB))
        tree.wait_for(lambda: tree.node("root/hostile")["status"] == "running", what="hostile restarted")
        # over the receiver's limit: the pusher (default limits) sends to the sink
        assert ask(tree, "pusher", op("B", 1001)) == \
            b"message of 1001 bytes is over root/sink's limit message_bytes = 1000"
        assert ask(tree, "pusher", op("B", 1000)) == b"ok"
        assert tree.node("root/sink")["refused"] == 1
        # the CLI is a sender too: over the receiver's limit it is refused with the same words
        out = cli("send", "sink", "y" * 1001, home=tree.home)
        assert out.returncode != 0 and "over root/sink's limit message_bytes = 1000" in out.stderr
        assert cli("send", "sink", "y" * 1000, home=tree.home).returncode == 0
        bystander_alive(tree, before)


def test_limits_are_checked_with_file_line(tmp_path):
    def validate(limits: str) -> str:
        manifest(tmp_path, "bad", "counter.wat", "0", limits)
        out = cli("validate", str(tmp_path / "bad.toml"))
        assert out.returncode == 1
        return out.stdout + out.stderr

    assert "bad.toml:6: limits.cpu_ms: 0 is not valid: expected an integer >= 1" in validate("cpu_ms = 0")
    assert "bad.toml:6: limits.message_bytes: 67108864 is not valid: expected an integer <= 2097152" in \
        validate("message_bytes = 67108864")
    assert "bad.toml:6: limits.mailbox: 'lots' is not valid" in validate('mailbox = "lots"')
    assert "bad.toml:6: limits.cpu: unknown setting 'cpu': expected cpu_ms, log_bytes_per_s, mailbox, " \
           "memory_bytes, message_bytes" in validate("cpu = 5")


@pytest.mark.unit
def test_log_rate_allows_a_burst_then_the_rate_and_reports_drops_once_a_second():
    rate = LogRate(100)  # a burst of 400 bytes, then 100 bytes/s
    assert rate.take(400, 0.0) is None and rate.allowed
    assert rate.take(10, 0.0) == (1, 10) and not rate.allowed   # the first drop is reported at once
    assert rate.take(10, 0.05) is None and not rate.allowed     # 5 bytes back: still dropped, reported later
    assert rate.take(10, 0.5) is None and rate.allowed          # 50 bytes back
    assert rate.take(100, 1.2) == (1, 10) and rate.allowed      # a second on: the pending drop reported
    assert rate.take(1000, 100.0) == (1, 1000) and not rate.allowed  # never more than the burst
    assert rate.take(400, 100.0) is None and rate.allowed


def test_sends_to_an_actor_that_is_still_starting_are_delivered_or_refused_never_lost(tmp_path):
    """Hardening issue, defect 8: 15,000 sends to an actor that was still starting vanished without
    a notice. slowinit.wat sleeps 800 ms in init; while its replacement starts, 1,000 sends are
    pipelined to it: each is answered, delivered or refused (its mailbox is 100), and every one
    answered as delivered is in the new incarnation's chain."""
    import zmq

    from theater_otp.home import Home
    from theater_otp.protocol import Envelope, decode, encode

    (tmp_path / "slow.toml").write_text(f'name = "slow"\ncomponent = "{WAT / "slowinit.wat"}"\n'
                                        '[[handler]]\ntype = "timing"\n[limits]\nmailbox = 100\n')
    tree = Tree(tmp_path, """
        [supervisor]
        id = "root"
        intensity = 5
        period = 30
        [[supervisor.children]]
        id = "slow"
        manifest = "slow.toml"
    """)
    with tree:
        first = tree.wait_running()["root/slow"]
        actor = tree.node("root/slow")["actor_id"]
        tree.kill("root/slow")
        tree.wait_for(lambda: tree.node("root/slow")["status"] == "restarting", what="the replacement starting")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(Home.at(tree.home).control_endpoint)
        try:
            for i in range(1, 1001):
                sock.send(encode(Envelope("send", "test", "node", i, {"target": "slow", "payload": b"m"})))
            answers = []
            for _ in range(1000):
                assert sock.poll(20_000), f"only {len(answers)} of 1000 sends were answered"
                answers.append(decode(sock.recv()))
        finally:
            sock.close()
            ctx.term()
        still_starting = tree.node("root/slow")["status"] == "restarting"
        delivered = [a for a in answers if a.kind != "error"]
        refused = [a for a in answers if a.kind == "error"]
        assert all("mailbox of root/slow is full" in a.body["message"] for a in refused)
        assert len(delivered) <= 100 and len(delivered) + len(refused) == 1000
        assert still_starting or len(refused) > 0  # the sends met the starting actor (or its full mailbox)
        tree.wait_for(lambda: tree.node("root/slow")["pid"] not in (None, first)
                      and tree.node("root/slow")["status"] == "running", timeout=20, what="the replacement ready")
        tree.wait_for(lambda: tree.node("root/slow")["mailbox"] == 0, what="the mailbox emptied")
        got = [e for e in tree.events(actor, "message.send") if e.incarnation == 2]
        assert len(got) == len(delivered)
