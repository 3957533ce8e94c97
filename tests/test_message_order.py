"""Order per sender -> receiver holds when the sender is itself an actor busy sending (relay.wat).

While an export call waits for the node's answer to a host call (send, request), the frames that
arrive meanwhile wait in the worker's inbox; they must be served before anything read later.
"""

from __future__ import annotations

import pytest

from harness import WAT, Tree, write_manifest

pytestmark = pytest.mark.integration


def test_an_actor_relaying_a_burst_delivers_it_in_order(tmp_path):
    write_manifest(tmp_path, "echo", "echo.wat")
    (tmp_path / "relay.toml").write_text(f'name = "relay"\ncomponent = "{WAT / "relay.wat"}"\n'
                                         f'initial_state = "echo"\n')
    with Tree(tmp_path, f"""
        [supervisor]
        id = "root"

        [[supervisor.children]]
        id = "echo"
        manifest = "{tmp_path / 'echo.toml'}"

        [[supervisor.children]]
        id = "relay"
        manifest = "{tmp_path / 'relay.toml'}"
    """) as t:
        t.wait_running()
        words = [f"m{i:03d}".encode() for i in range(300)]
        for w in words:
            t.call("send", {"target": "relay", "payload": w})
        relay_id, echo_id = t.node("root/relay")["actor_id"], t.node("root/echo")["actor_id"]

        def received() -> list[bytes]:
            return [bytes(p["params"][0]) for e in t.events(echo_id, "message.send")
                    if (p := e.payload()).get("from") == relay_id]

        got = t.wait_for(lambda: (r := received()) and len(r) >= len(words) and r, timeout=30,
                         what="the burst relayed")
        assert got == words, " ".join(w.decode() for w in got)
