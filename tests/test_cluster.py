"""Three nodes joined over one real nats-server (docs/cluster.md): names, messages and supervision across them.

One module-wide cluster, for the time it takes to boot: n2 and n3 run small trees of their own,
n1 a tree whose children live on the other nodes. Tests that kill a node or the server come last
(the order of this file is the order they run in).
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from clusterfix import Cluster, leaf_tree
from harness import WAT, Tree, cli, write_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    for name, wat, state in (("counter", "counter.wat", "0"), ("echo", "echo.wat", None)):
        write_manifest(folder, name, wat, initial_state=state)
    relay = folder / "relay.toml"
    relay.write_text(f'name = "relay"\ncomponent = "{WAT / "relay.wat"}"\ninitial_state = "r2/e2"\n')
    c = Cluster(folder)
    try:
        for n in ("n2", "n3"):
            c.up(n, leaf_tree(n, folder / 'counter.toml', folder / 'echo.toml'))
        c.up("n1", f"""
            [supervisor]
            id = "r1"
            strategy = "one_for_one"
            intensity = 20
            period = 5

            [[supervisor.children]]
            id = "relay"
            manifest = "{relay}"

            [[supervisor.children]]
            id = "away"
            node = "n2"
            manifest = "{folder / 'counter.toml'}"

            [[supervisor.children]]
            id = "roam"
            node = "any"
            manifest = "{folder / 'counter.toml'}"

            [[supervisor.children]]
            id = "team"
            type = "supervisor"
            node = "n3"
            strategy = "one_for_all"

              [[supervisor.children.children]]
              id = "t1"
              manifest = "{folder / 'counter.toml'}"

              [[supervisor.children.children]]
              id = "t2"
              manifest = "{folder / 'echo.toml'}"
        """)
        c.trees["n1"].wait_running()
        yield c
    finally:
        c.close()


def _child(tree: Tree, path: str) -> dict:
    return tree.node(path)


def test_children_placed_on_other_nodes_run_there_and_show_where(cluster):
    n1, n2 = cluster.trees["n1"], cluster.trees["n2"]
    away = _child(n1, "r1/away")
    assert away["node"] == "n2" and away["status"] == "running"
    # the pid is one of n2's workers, not n1's
    n2_pids = {p.pid for p in psutil.Process(n2.node_pid).children(recursive=True)} | \
        {p.pid for p in n2.processes()}
    assert away["pid"] in n2_pids, (away, n2_pids)
    roam = _child(n1, "r1/roam")
    assert roam["node"] in ("n2", "n3"), roam  # "any" prefers another live node
    # n2 lists what it runs for n1, by the full path it keeps it under
    guests = {h["path"]: h for h in n2.tree()["hosted"]}
    assert guests["n1:r1/away"]["pid"] == away["pid"] and guests["n1:r1/away"]["owner"] == "n1"


def test_requests_cross_nodes_from_the_cli_and_from_an_actor(cluster):
    n1, n3 = cluster.trees["n1"], cluster.trees["n3"]
    # the CLI at n1 and at n3: an actor on n2 by path and by node:path
    first = cli("request", "r2/c2", "inc", home=n1.home, check=True).stdout.strip()
    second = cli("request", "n2:r2/c2", "inc", home=n3.home, check=True).stdout.strip()
    assert int(second) == int(first) + 1
    # the relay actor on n1 asks echo on n2 (its state names r2/e2): the answer comes back through it
    assert cli("request", "relay", "ping-across", home=n1.home, check=True).stdout.strip() == "ping-across"
    # the hosted child answers by its supervisor's path from any node
    assert cli("request", "r1/away", "inc", home=n3.home, check=True).stdout.strip() == "1"


def test_a_name_no_node_holds_is_an_error_at_once(cluster):
    n1 = cluster.trees["n1"]
    out = cli("request", "nobody-anywhere", "x", home=n1.home)
    assert out.returncode == 1 and "no actor named 'nobody-anywhere'" in out.stderr


def test_sends_across_nodes_keep_their_order_and_are_in_both_chains(cluster):
    n1, n2 = cluster.trees["n1"], cluster.trees["n2"]
    words = [f"m{i:03d}".encode() for i in range(60)]
    for w in words:
        n1.call("send", {"target": "relay", "payload": w})
    relay_id = n1.node("r1/relay")["actor_id"]
    e2_id = n2.node("r2/e2")["actor_id"]

    def received() -> list[bytes]:
        return [bytes(p["params"][0]) for e in n2.events(e2_id, "message.send")
                if (p := e.payload()).get("from") == relay_id]

    got = n2.wait_for(lambda: (r := received()) and len(r) >= len(words) and r, timeout=20,
                      what="60 sends relayed to n2")
    assert got == words, " ".join(w.decode() for w in got)
    # and each one's sending is in the relay's own chain on n1, in the same order
    handled = [bytes(p["params"][0]) for e in n1.events(relay_id, "message.send")
               if (p := e.payload()).get("from") == "cli"]
    sends = [e.payload() for e in n1.events(relay_id, "host.message-server-host.send")]
    assert handled[-len(words):] == words and len(sends) >= len(words), sends[-2:]


def test_a_hosted_child_killed_is_restarted_by_its_supervisor_on_the_other_node(cluster):
    n1 = cluster.trees["n1"]
    before = _child(n1, "r1/away")
    os.kill(before["pid"], signal.SIGKILL)
    after = n1.wait_for(lambda: (c := _child(n1, "r1/away"))["status"] == "running" and c["pid"] != before["pid"]
                        and c, timeout=10, what="away restarted")
    assert after["node"] == "n2" and after["restarts"] == before["restarts"] + 1
    restarted = n1.supervisor_events("r1", "supervisor.child_restarting")
    assert any(e.get("child") == "away" for e in restarted)


def test_a_supervisor_and_its_subtree_run_on_another_node(cluster):
    """`node = "n3"` on a supervisor child: n3 runs it and its workers (its restarts are its own
    there); n1's supervisor sees it as one running child; its workers answer by path from anywhere."""
    n1, n3 = cluster.trees["n1"], cluster.trees["n3"]
    team = _child(n1, "r1/team")
    assert team["node"] == "n3" and team["kind"] == "supervisor" and team["status"] == "running"
    hosted = n3.wait_for(lambda: n3.tree().get("hosted"), timeout=10, what="n3 shows the hosted supervisor")
    assert [h["path"] for h in hosted if h["kind"] == "supervisor"] == ["n1:r1/team"]
    hosted = [h for h in hosted if h["kind"] == "supervisor"]
    text = cli("tree", home=n3.home, check=True).stdout
    assert "hosted for other nodes:" in text and "n1:r1/team  [one_for_all]  running" in text, text
    kids = {c["id"]: c for c in hosted[0]["children"]}
    assert set(kids) == {"t1", "t2"} and all(c["status"] == "running" for c in kids.values())
    assert cli("request", "r1/team/t1", "inc", home=n1.home, check=True).stdout.strip() == "1"
    # one_for_all on n3: t1 killed, both restart there; n1's view of team does not change
    os.kill(kids["t1"]["pid"], signal.SIGKILL)

    def team_on_n3() -> dict:
        return [h for h in n3.tree()["hosted"] if h["kind"] == "supervisor"][0]

    def restarted() -> dict | None:
        team_now = team_on_n3()
        return team_now if all(c["status"] == "running" and c["pid"] != kids[c["id"]]["pid"]
                               for c in team_now["children"]) else None

    again = n3.wait_for(restarted, timeout=15, what="t1 and t2 restarted on n3")
    assert {c["id"] for c in again["children"]} == {"t1", "t2"}
    assert _child(n1, "r1/team")["restarts"] == team["restarts"]


def test_a_whole_node_killed_counts_as_noconnection_and_any_children_move(cluster):
    n1 = cluster.trees["n1"]
    roam = _child(n1, "r1/roam")
    victim = cluster.trees[roam["node"]]
    survivor = "n2" if roam["node"] == "n3" else "n3"
    killed_at = time.time_ns()
    victim_procs = victim.processes()
    os.kill(victim.node_pid, signal.SIGKILL)
    moved = n1.wait_for(lambda: (c := _child(n1, "r1/roam"))["status"] == "running" and c["node"] == survivor
                        and c, timeout=15, what=f"roam restarted on {survivor}")
    assert moved["pid"] not in {p.pid for p in victim_procs}
    chain = [(e.event_type, e.timestamp, e.payload()) for e in n1.events("supervisor:r1")
             if e.timestamp > killed_at]
    roam_events = [(t, p) for t, _, p in chain if isinstance(p, dict) and p.get("child") == "roam"]
    # its exit was `noconnection`, then it started again (on the survivor): in that order
    kinds = [t for t, _ in roam_events]
    assert "supervisor.child_restarting" in kinds and "supervisor.child_started" in kinds, roam_events
    assert kinds.index("supervisor.child_restarting") < len(kinds) - 1 - kinds[::-1].index("supervisor.child_started")
    reasons = [str(p.get("reason")) for t, p in roam_events if t != "supervisor.child_started"]
    assert any("noconnection" in r for r in reasons), roam_events
    for p in victim_procs:  # the node's workers went with it (they die with their parent)
        try:
            p.wait(10)
        except psutil.TimeoutExpired:
            raise AssertionError(f"{p} outlived its node") from None
        except psutil.NoSuchProcess:
            pass



def test_a_message_of_the_default_limit_crosses_nodes(cluster):
    """1 MiB there and back (an actor's default message_bytes): over nats-server's default
    max_payload with its envelope, so the development server raises it (cluster/devserver.py)."""
    n1 = cluster.trees["n1"]
    payload = bytes(range(256)) * 4096
    answer = n1.call("request", {"target": "r2/e2", "payload": payload}, timeout_s=30)
    assert answer["ok"] == payload
