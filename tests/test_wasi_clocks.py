"""WASI clocks are served by the host, so they are recorded and replayed (issue 4): a real tree
with actors/wat/clock.wat, which reads wasi:clocks/monotonic-clock and asks it for a pollable."""

from __future__ import annotations

import json
import struct

import pytest

from harness import Tree, cli, write_manifest

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "clock"
    manifest = "clock.toml"
"""


def test_monotonic_clock_reads_are_recorded_and_replayed_and_waiting_on_the_clock_is_a_clear_crash(tmp_path):
    write_manifest(tmp_path, "clock", "clock.wat")
    with Tree(tmp_path, TREE) as tree:
        first = tree.wait_running()["root/clock"]
        reads = [struct.unpack("<Q", tree.call("request", {"target": "clock", "payload": b"now",
                                                          "timeout_ms": 5000})["ok"])[0] for _ in range(3)]
        assert reads == sorted(reads) and len(set(reads)) == 3
        assert cli("request", "clock", "nap", home=tree.home).returncode != 0
        tree.wait_for(lambda: tree.node("root/clock")["pid"] not in (None, first)
                      and tree.node("root/clock")["status"] == "running", what="the restart")
        actor_id = tree.node("root/clock")["actor_id"]
        recorded = [e.payload()["result"] for e in tree.events(actor_id, "host.wasi:clocks/monotonic-clock.now")]
        assert recorded == reads                      # what the actor read is what the chain holds
        (crash,) = [e.payload() for e in tree.events(actor_id, "actor.crash")]
        assert "monotonic-clock.subscribe-duration is not available to actors" in crash["reason"]
        assert "use the timing handler" in crash["reason"]
        replay = cli("replay", "clock", "--json", home=tree.home)
        assert replay.returncode == 0 and json.loads(replay.stdout)["match"] is True, replay.stdout
