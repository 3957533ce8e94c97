"""`tree --cluster URL` and `list --cluster URL` (theater_otp/cluster/views.py): every live node of a
real cluster (one nats-server, three real nodes), checked against each node's own `tree` and `list`.

n1's tree holds a child hosted by n2 (`@n2`). The tests that kill nodes come last (the order of
this file is the order they run in): n3 killed with SIGKILL keeps its key in `theater-nodes` and
is shown as `down` (one line, at once: nothing answers on its subject), then every node killed is
exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import msgpack
import pytest

from clusterfix import Cluster, leaf_tree
from harness import Tree, cli, free_port, walk, write_manifest
from natsfix import nats_server  # noqa: F401  (a fixture: taken by name)
from theater_otp import cli as theater_cli
from theater_otp.cluster import names as nm
from theater_otp.cluster.views import ask_all

pytestmark = pytest.mark.integration

NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("views")
    counter = write_manifest(folder, "counter", "counter.wat", initial_state="0")
    echo = write_manifest(folder, "echo", "echo.wat")
    c = Cluster(folder)
    try:
        for n in ("n2", "n3"):
            c.up(n, leaf_tree(n, counter, echo))
        c.up("n1", f"""
            [supervisor]
            id = "r1"
            strategy = "one_for_one"

            [[supervisor.children]]
            id = "local"
            manifest = "{echo}"

            [[supervisor.children]]
            id = "away"
            node = "n2"
            manifest = "{counter}"
        """)
        for tree in c.trees.values():
            tree.wait_running(timeout=20)
        yield c
    finally:
        c.close()


def _view(*args: str) -> subprocess.CompletedProcess:
    """The CLI with no --home (a cluster view needs none), timed in `.elapsed`."""
    started = time.monotonic()
    out = cli(*args, timeout=30)
    out.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return out


def _own(tree: Tree, *args: str) -> str:
    return cli(*args, home=tree.home, check=True).stdout


_UPTIME = re.compile(r"  up \S+")


def _stable(node: dict) -> list[tuple]:
    """What a tree says that does not change from one look to the next (not uptimes or counters)."""
    return [(n["path"], n["kind"], n["pid"], n["status"], n["restarts"], n.get("actor_id"), n.get("node"))
            for n in walk(node)]


def _sections(text: str) -> dict[str, list[str]]:
    """`tree --cluster`'s text: node name -> its section's lines (the header line first)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        head = re.match(r"== (\S+) ==", line)
        if head:
            current = found.setdefault(head.group(1), [])
        if line:
            current.append(line)
    return found


# ---- no cluster: the plain tree stays as fast as it was ------------------------------------------

def test_the_cli_imports_no_nats_and_tree_cluster_goes_to_typer():
    code = ("import sys, theater_otp.cli; "
            "print([m for m in ('nats', 'theater_otp.cluster.views') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert theater_cli._tree_argv(["tree", "--cluster", "nats://127.0.0.1:4222"]) is None
    assert theater_cli._tree_argv(["tree", "--cluster=nats://127.0.0.1:4222", "--json"]) is None


def test_cluster_takes_neither_a_path_nor_watch(cluster):
    for extra in (("r1",), ("--watch",)):
        out = _view("tree", "--cluster", cluster.nats.url, *extra)
        assert out.returncode == 2 and "--cluster" in out.stderr, out


# ---- every node answers ------------------------------------------------------------------------

def test_tree_cluster_json_is_each_nodes_own_tree(cluster):
    out = _view("tree", "--cluster", cluster.nats.url, "--json")
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["nodes"]
    assert sorted(nodes) == list(NODES)
    for name in NODES:
        own = json.loads(_own(cluster.trees[name], "tree", "--json"))
        assert _stable(nodes[name]) == _stable(own), name
        assert nodes[name]["cluster"]["node"] == name
    away = next(n for n in walk(nodes["n1"]) if n["path"] == "r1/away")
    assert away["node"] == "n2" and away["status"] == "running"


def test_tree_cluster_text_is_a_section_per_node_rendered_as_the_local_tree(cluster):
    out = _view("tree", "--cluster", cluster.nats.url)
    assert out.returncode == 0, out.stderr
    sections = _sections(out.stdout)
    assert list(sections) == list(NODES)
    for name in NODES:
        header, *lines = sections[name]
        assert header == f"== {name} =="
        own = _own(cluster.trees[name], "tree").splitlines()
        assert [_UPTIME.sub("", line) for line in lines] == [_UPTIME.sub("", line) for line in own], name
    # the hosted child says where it runs, in the view and in n1's own tree; local actors do not
    away = next(line for line in sections["n1"] if "away" in line)
    local = next(line for line in sections["n1"] if "local" in line)
    assert away.endswith("@n2") and "@" not in local, sections["n1"]
    assert not any("@" in line for line in sections["n2"] + sections["n3"])


def test_tree_cluster_depth_cuts_every_node(cluster):
    out = _view("tree", "--cluster", cluster.nats.url, "--depth", "0")
    assert out.returncode == 0, out.stderr
    sections = _sections(out.stdout)
    assert list(sections) == list(NODES)
    for name in NODES:
        header, root = sections[name]
        assert root.startswith(f"r{name[1]}  [one_for_one]  node pid ") and root.endswith("(2 children below --depth)")
    data = json.loads(_view("tree", "--cluster", cluster.nats.url, "--json", "--depth=1").stdout)["nodes"]
    for name in NODES:
        assert data[name]["children"] and all(c["children"] == [] for c in data[name]["children"])


def test_list_cluster_json_is_each_nodes_own_list_with_where_it_runs(cluster):
    out = _view("list", "--cluster", cluster.nats.url, "--json")
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["nodes"]
    assert sorted(nodes) == list(NODES)
    keep = ("actor_id", "id", "name", "path", "status", "pid", "restarts", "incarnation")
    for name in NODES:
        own = json.loads(_own(cluster.trees[name], "list", "--json"))
        assert [{k: r[k] for k in keep} for r in nodes[name]] == [{k: r[k] for k in keep} for r in own], name
        # every actor runs on this host here, so RSS is read as the local list reads it
        assert all(r["rss"] for r in nodes[name]), nodes[name]
    where = {(name, r["path"]): r["node"] for name, rows in nodes.items() for r in rows}
    assert where[("n1", "r1/away")] == "n2" and where[("n1", "r1/local")] == "n1"
    assert where[("n3", "r3/c3")] == "n3"


def test_list_cluster_text_has_a_node_column(cluster):
    out = _view("list", "--cluster", cluster.nats.url)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["NODE", "ACTOR", "ID", "NAME"]
    cells = {(r.split()[0], r.split()[3]) for r in rows}
    assert cells == {("n1", "r1/local"), ("n1@n2", "r1/away"), ("n2", "r2/c2"), ("n2", "r2/e2"),
                     ("n3", "r3/c3"), ("n3", "r3/e3")}
    # the same rows as each node's own list, NODE column aside
    for name in NODES:
        own = _own(cluster.trees[name], "list").splitlines()[1:]
        mine = [r.split(None, 1)[1] for r in rows if r.split()[0].split("@")[0] == name]
        assert [r.split()[:5] for r in mine] == [r.split()[:5] for r in own], name


# ---- nodes that do not answer ---------------------------------------------------------------------

def test_each_kind_of_answer_from_stand_in_nodes(nats_server):  # noqa: F811
    """Stand-ins for nodes on a server of their own: one that answers, one with the node's error,
    one that answers garbage, one alive (heartbeats) but silent, one silent without heartbeats, one
    with nobody on its subject, and a key that is no node name. Each is answered within the timeout."""
    import nats

    async def main() -> tuple[dict, float]:
        nc = await nats.connect(nats_server.url)
        try:
            kv = await nc.jetstream().create_key_value(bucket=nm.NODES_BUCKET, history=1)
            for name in ("fine", "refuses", "garbled", "slow", "quiet", "gone"):
                await kv.put(name, nm.NodeRecord(name, 1, "here", 0, 250).to_bytes())
            await kv.put("Not.A.Node", b"junk")
            await kv.put("left", b"x")
            await kv.delete("left")  # a node that said goodbye: not listed

            def answer(data: bytes):
                async def cb(msg):
                    await msg.respond(data)
                return cb

            async def ignore(msg):
                pass

            asked: list[Any] = []

            async def fine(msg):
                asked.append(msgpack.unpackb(msg.data))
                await msg.respond(msgpack.packb({"ok": {"children": []}}))

            await nc.subscribe(nm.subject_ctl("fine"), cb=fine)
            await nc.subscribe(nm.subject_ctl("refuses"), cb=answer(msgpack.packb(
                {"error": {"code": "not_found", "message": "no such thing"}})))
            await nc.subscribe(nm.subject_ctl("garbled"), cb=answer(b"\xc1"))
            await nc.subscribe(nm.subject_ctl("slow"), cb=ignore)
            await nc.subscribe(nm.subject_ctl("quiet"), cb=ignore)

            async def beat():
                while True:
                    await nc.publish(nm.subject_hb("slow"), b"")
                    await asyncio.sleep(0.1)

            beating = asyncio.create_task(beat())
            await nc.flush()
            started = time.monotonic()
            answers = await ask_all(nats_server.url, "tree", {"x": 1}, timeout_s=1.0)
            elapsed = time.monotonic() - started
            beating.cancel()
            assert asked == [{"kind": "tree", "body": {"x": 1}}]
            return answers, elapsed
        finally:
            await nc.close()

    answers, elapsed = asyncio.run(main())
    codes = {name: a["error"]["code"] for name, a in answers.items() if "error" in a}
    assert answers["fine"] == {"ok": {"children": []}}
    assert codes == {"refuses": "not_found", "garbled": "bad_reply", "slow": "timeout", "quiet": "down",
                     "gone": "down", "Not.A.Node": "bad_key"}, answers
    assert answers["refuses"]["error"]["message"] == "no such thing"
    assert elapsed < 3, elapsed  # every node asked at once: one timeout, not one per node


def test_an_unreachable_url_is_one_line_and_exit_1_within_5_s():
    url = f"nats://127.0.0.1:{free_port()}"
    for verb in ("tree", "list"):
        out = _view(verb, "--cluster", url)
        assert out.returncode == 1, out
        assert out.stdout == "" and out.stderr.count("\n") == 1 and url in out.stderr, out.stderr
        assert out.elapsed < 6, out.elapsed


def _down(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("error", {}).get("code") == "down"


def test_a_node_killed_shows_as_down_and_never_hangs(cluster):
    n3 = cluster.trees["n3"]
    os.kill(n3.node_pid, signal.SIGKILL)
    # its link may still answer for a moment (it dies with the node's forkserver): each look is
    # bounded by the request timeout either way, and soon the node is down
    deadline = time.monotonic() + 10
    while True:
        out = _view("tree", "--cluster", cluster.nats.url, "--json")
        assert out.returncode == 0 and out.elapsed < 8, (out, out.elapsed)
        nodes = json.loads(out.stdout)["nodes"]
        if _down(nodes.get("n3")):
            break
        assert time.monotonic() < deadline, nodes.get("n3")
        time.sleep(0.2)
    assert "children" in nodes["n1"] and "children" in nodes["n2"]  # the others still answer
    text = _view("tree", "--cluster", cluster.nats.url)
    assert text.returncode == 0
    sections = _sections(text.stdout)
    assert list(sections) == list(NODES)
    assert len(sections["n3"]) == 1 and sections["n3"][0].startswith("== n3 ==  error (down): node n3 is down")
    assert text.elapsed < 5, text.elapsed  # nothing answers on n3's subject: known at once, not waited on
    listed = _view("list", "--cluster", cluster.nats.url)
    assert listed.returncode == 0
    n3_lines = [r for r in listed.stdout.splitlines() if r.startswith("n3")]
    assert len(n3_lines) == 1 and n3_lines[0].startswith("n3  error (down): "), listed.stdout
    assert _down(json.loads(_view("list", "--cluster", cluster.nats.url, "--json").stdout)["nodes"]["n3"])


def test_no_node_answering_is_exit_1(cluster):
    for name in ("n1", "n2"):
        os.kill(cluster.trees[name].node_pid, signal.SIGKILL)

    def all_down() -> subprocess.CompletedProcess | None:
        out = _view("tree", "--cluster", cluster.nats.url, "--json")
        nodes = json.loads(out.stdout)["nodes"]
        return out if all(_down(nodes.get(n)) for n in NODES) else None

    out = cluster.trees["n1"].wait_for(all_down, timeout=15, what="every node down")
    assert out.returncode == 1
    listed = _view("list", "--cluster", cluster.nats.url)
    assert listed.returncode == 1 and len(listed.stdout.splitlines()) == 3, listed.stdout
