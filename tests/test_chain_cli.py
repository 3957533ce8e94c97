"""The chain from a user's seat: `events` (filters, --since, --follow, --json), `inspect`, `state`
and `verify --json`, on a real tree through the real CLI."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess

import pytest

from harness import CLI, Tree, cli, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain-cli")
    write_manifest(folder, "counter", "counter.wat", initial_state="0")
    with Tree(folder, TREE) as t:
        t.wait_running()
        for _ in range(3):
            cli("request", "counter", "inc", home=t.home, check=True)
        cli("send", "counter", "inc", home=t.home, check=True)
        yield t


def events(tree, *args: str) -> list[dict]:
    out = cli("events", "counter", "--json", *args, home=tree.home, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_events_lists_the_whole_chain_in_seq_order_as_json_lines(tree):
    got = events(tree)
    assert [e["seq"] for e in got] == list(range(len(got)))
    types = [e["event_type"] for e in got]
    assert types[:2] == ["actor.start", "actor.init"]
    assert types.count("message.request") == 3 and types.count("message.send") == 1
    assert all(len(e["hash"]) == 64 for e in got) and got[1]["parent_hash"] == got[0]["hash"]


def test_events_type_limit_and_seq_since_filter_as_documented(tree):
    everything = events(tree)
    messages = events(tree, "--type", "message")
    assert [e["event_type"] for e in messages] == ["message.request"] * 3 + ["message.send"]
    assert events(tree, "--limit", "2") == everything[-2:]
    assert events(tree, "--since", "3") == [e for e in everything if e["seq"] >= 3]
    assert events(tree, "--type", "message", "--limit", "1") == messages[-1:]


def test_events_since_takes_a_duration_or_a_time(tree):
    everything = events(tree)
    assert events(tree, "--since", "1h") == everything
    assert events(tree, "--since", "1d") == everything
    future = (datetime.datetime.now() + datetime.timedelta(minutes=5)).isoformat(timespec="seconds")
    assert events(tree, "--since", future) == []
    # a time halfway into the widest gap between two events (separate CLI calls: many ms apart)
    k = max(range(1, len(everything)), key=lambda i: everything[i]["timestamp"] - everything[i - 1]["timestamp"])
    halfway = (everything[k - 1]["timestamp"] + everything[k]["timestamp"]) / 2e9
    moment = datetime.datetime.fromtimestamp(halfway, tz=datetime.timezone.utc).isoformat()
    assert events(tree, "--since", moment) == everything[k:]
    bad = cli("events", "counter", "--since", "yesterday", home=tree.home)
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr and "Traceback" not in bad.stderr


def test_events_follow_prints_new_events_as_they_are_committed(tree):
    before = len(events(tree))
    proc = subprocess.Popen(CLI + ["events", "counter", "--json", "--follow", "--home", str(tree.home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = [json.loads(proc.stdout.readline()) for _ in range(before)]
        assert [e["seq"] for e in seen] == list(range(before))
        cli("request", "counter", "inc", home=tree.home, check=True)
        new = json.loads(proc.stdout.readline())  # blocks until follow prints it (pytest-timeout guards)
        assert (new["seq"], new["event_type"]) == (before, "message.request")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_inspect_shows_status_restarts_head_and_last_events(tree):
    info = json.loads(cli("inspect", "counter", "--json", home=tree.home, check=True).stdout)
    chain = events(tree)
    assert info["path"] == "root/counter" and info["status"] == "running" and info["restarts"] == 0
    assert info["chain_head"] == {"seq": chain[-1]["seq"], "hash": chain[-1]["hash"]}
    assert info["last_events"] == chain[-5:]
    assert "message-server" in info["granted"] and info["component"]
    assert info["manifest"] == str(tree.folder / "counter.toml") and info["name"] == "counter"


def test_state_and_verify_json(tree):
    assert json.loads(cli("state", "counter", "--json", home=tree.home, check=True).stdout)["state"] \
        == str(len([e for e in events(tree) if e["event_type"].startswith("message.")]))
    report = json.loads(cli("verify", "--json", home=tree.home, check=True).stdout)
    assert report["ok"] is True and report["problems"] == [] and report["chains"] >= 2
    assert report["events"] >= len(events(tree))
