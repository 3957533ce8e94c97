"""`theater-otp top [--json]` and `tree --watch`: the chain scan, the rates, the rows and the restart
marks on synthetic data; then the verbs on a real tree, an actor SIGKILLed and restarted by its supervisor."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import msgpack
import pytest

from harness import CLI, REPO, Tree, cli, write_manifest
from theater_otp.chain.event import MalformedRecord, canonical_bytes, make_event, record_bytes
from theater_otp.cli_top import (
    RESTART_MARK,
    Frame,
    ProcStat,
    Tally,
    build_rows,
    marked_tree,
    rate,
    scan_chunk,
    tally,
    top_table,
    tree_order,
    watch_marks,
)

# ---- synthetic chunks and trees ----------------------------------------------------------------


def chunk(actor_id: str, *events: tuple[str, object]) -> bytes:
    """A chunk row's records: one event per (type, data), chained from seq 0."""
    out, parent = b"", None
    for seq, (event_type, data) in enumerate(events):
        raw = msgpack.packb(data)
        e = make_event(actor_id, seq, 1, parent, event_type, 1_000 + seq, raw)
        out += record_bytes(canonical_bytes(actor_id, seq, 1, parent, event_type, 1_000 + seq, raw), e.hash)
        parent = e.hash
    return out


def exited(kind: str, detail: str = "") -> tuple[str, object]:
    return "lifecycle.exited", {"pid": 7, "exit_code": -9, "reason": {"kind": kind, "detail": detail}}


def actor(path: str, pid: int | None = 100, restarts: int = 0, status: str = "running") -> dict:
    return {"id": path.rsplit("/", 1)[-1], "kind": "actor", "path": path, "pid": pid, "status": status,
            "restarts": restarts, "actor_id": f"id-{path}", "name": path.rsplit("/", 1)[-1], "mailbox": 3,
            "children": []}


def root(*children: dict) -> dict:
    return {"id": "root", "kind": "supervisor", "path": "root", "pid": None, "status": "running", "restarts": 0,
            "strategy": "one_for_one", "node_pid": 1, "children": list(children)}


# ---- the chain scan and the rates ----------------------------------------------------------------

@pytest.mark.unit
def test_scan_reads_each_records_type_and_data_as_the_decoder_does():
    blob = chunk("a", ("message.send", {"from": "x"}), ("host.message-server-host.send", [1]), exited("killed"))
    seen = [(t, msgpack.unpackb(blob[at:at + n])) for t, at, n in scan_chunk(blob)]
    assert [t for t, _ in seen] == ["message.send", "host.message-server-host.send", "lifecycle.exited"]
    assert seen[0][1] == {"from": "x"} and seen[2][1]["reason"]["kind"] == "killed"


@pytest.mark.unit
def test_scan_refuses_a_truncated_chunk():
    blob = chunk("a", ("message.send", {}))
    with pytest.raises(MalformedRecord):
        list(scan_chunk(blob[:-40]))


@pytest.mark.unit
def test_tally_counts_messages_in_and_out_per_actor_and_keeps_the_newest_crash():
    rows = [("a", chunk("a", ("message.send", {}), ("message.request", {}), ("host.message-server-host.request", []),
                        ("host.store.get", []), exited("killed", "killed by SIGKILL"))),
            ("b", chunk("b", ("host.message-server-host.send", []))),
            ("a", chunk("a", ("message.send", {}), exited("abnormal", "trap")))]
    got = tally(rows)
    assert (got["a"].msgs_in, got["a"].msgs_out, got["a"].last_crash) == (3, 1, "abnormal: trap")
    assert (got["b"].msgs_in, got["b"].msgs_out, got["b"].last_crash) == (0, 1, None)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["normal", "shutdown"])
def test_a_clean_exit_is_not_a_crash(kind):
    assert tally([("a", chunk("a", exited(kind)))])["a"].last_crash is None


@pytest.mark.unit
def test_rates_need_a_previous_sample_and_are_never_negative():
    assert rate(10, None) is None and rate(10, 0.0) is None
    assert rate(10, 2.0) == 5.0 and rate(0, 2.0) == 0.0 and rate(-3, 1.0) == 0.0


# ---- rows ----------------------------------------------------------------------------------------

@pytest.mark.unit
def test_rows_are_one_per_actor_in_tree_order_with_every_field():
    team = {**root(actor("root/team/b", pid=12), actor("root/team/c", pid=None, status="restarting", restarts=2)),
            "path": "root/team", "id": "team"}
    snapshot = root(actor("root/a", pid=11), team)
    rows = build_rows(snapshot, {11: ProcStat(12.5, 40 << 20, 8 << 20), 12: ProcStat(None, 41 << 20, None)},
                      {"id-root/a": Tally(msgs_in=20, msgs_out=4)}, 2.0, {"id-root/team/c": "killed: SIGKILL"})
    assert [r.path for r in rows] == ["root/a", "root/team/b", "root/team/c"]
    a, b, c = (r.to_plain() for r in rows)
    assert set(a) == {"path", "name", "actor_id", "pid", "status", "cpu_percent", "rss", "uss", "mailbox",
                      "msgs_in_per_s", "msgs_out_per_s", "restarts", "last_crash"}
    assert (a["cpu_percent"], a["uss"], a["msgs_in_per_s"], a["msgs_out_per_s"], a["mailbox"]) == (12.5, 8 << 20,
                                                                                                     10.0, 2.0, 3)
    assert (b["uss"], b["rss"], b["msgs_in_per_s"]) == (None, 41 << 20, 0.0)  # no USS: RSS alone
    assert (c["pid"], c["rss"], c["restarts"], c["last_crash"]) == (None, None, 2, "killed: SIGKILL")


@pytest.mark.unit
def test_the_first_sample_has_no_rates():
    rows = build_rows(root(actor("root/a")), {}, {}, None, {})
    assert rows[0].msgs_in_per_s is None and rows[0].cpu_percent is None


@pytest.mark.unit
def test_the_table_renders_missing_values_as_dashes():
    from rich.console import Console

    rows = build_rows(root(actor("root/a", pid=None, status="restarting", restarts=1)), {}, {}, None,
                      {"id-root/a": "killed: SIGKILL"})
    with open(os.devnull, "w") as sink:
        console = Console(width=200, record=True, file=sink)
        console.print(top_table(Frame(rows, 1, None), "top"))
        text = console.export_text()
    assert "root/a" in text and "restarting" in text and "killed: SIGKILL" in text and " - " in text


# ---- tree --watch marks ---------------------------------------------------------------------------

@pytest.mark.unit
def test_an_actor_whose_restarts_change_is_marked_until_the_hold_ends():
    until: dict[str, float] = {}
    seen, marked = watch_marks(None, root(actor("root/a", pid=1), actor("root/b", pid=2)), 0.0, until)
    assert marked == set()
    seen, marked = watch_marks(seen, root(actor("root/a", pid=None, status="restarting"), actor("root/b", pid=2)),
                               1.0, until)
    assert marked == set()  # gone, not yet back: nothing to say yet
    seen, marked = watch_marks(seen, root(actor("root/a", pid=5, restarts=1), actor("root/b", pid=2)), 2.0, until)
    assert marked == {"root/a"}
    seen, marked = watch_marks(seen, root(actor("root/a", pid=5, restarts=1), actor("root/b", pid=2)), 4.9, until)
    assert marked == {"root/a"}
    assert watch_marks(seen, root(actor("root/a", pid=5, restarts=1), actor("root/b", pid=2)), 5.0, until)[1] == set()


@pytest.mark.unit
def test_a_new_pid_without_a_restart_count_is_marked_too():
    """`restart ACTOR` (terminate_child + restart_child) gives a new pid, not a restart."""
    seen, _ = watch_marks(None, root(actor("root/a", pid=1)), 0.0, {})
    assert watch_marks(seen, root(actor("root/a", pid=9)), 1.0, {})[1] == {"root/a"}


@pytest.mark.unit
def test_the_marked_line_is_the_restarted_actors_own():
    from theater_otp.cli import _render_tree

    snapshot = root(actor("root/a", pid=1), actor("root/b", pid=2))
    snapshot["children"] = [{**c, "incarnation": 1, "uptime": 1.0} for c in snapshot["children"]]
    text = marked_tree(_render_tree(snapshot), tree_order(snapshot), {"root/b"})
    lines = text.plain.splitlines()
    assert [RESTART_MARK in line for line in lines] == [False, False, True] and lines[2].startswith("└── b ")
    assert any("bold yellow" in str(span.style) for span in text.spans)


# ---- on a real tree -------------------------------------------------------------------------------

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 60

    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"

    [[supervisor.children]]
    id = "relay"
    manifest = "relay.toml"

    [[supervisor.children]]
    id = "crasher"
    manifest = "crasher.toml"
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = tmp_path_factory.mktemp("top")
    write_manifest(folder, "counter", "counter.wat")
    write_manifest(folder, "crasher", "crasher.wat")
    write_manifest(folder, "relay", "relay.wat", initial_state="counter")
    with Tree(folder, TREE) as t:
        t.wait_running()
        yield t


def kill_and_wait(t: Tree, path: str) -> int:
    """SIGKILL `path`'s worker; wait until its supervisor restarted it and its exit is in the chain."""
    old = t.kill(path)
    t.wait_for(lambda: (n := t.node(path))["pid"] not in (None, old) and n["restarts"] >= 1, what=f"{path} restarted")
    t.wait_for(lambda: t.events(t.node(path)["actor_id"], "lifecycle.exited"), what="its lifecycle.exited")
    return old


@pytest.mark.integration
def test_top_json_is_one_row_per_actor_with_rates_and_the_last_crash(real):
    kill_and_wait(real, "root/crasher")
    for _ in range(3):
        assert cli("request", "relay", "inc", home=real.home).returncode == 0
    out = cli("top", "--json", "--interval", "0.3", home=real.home, check=True).stdout
    snap = json.loads(out)
    assert snap["node_pid"] == real.node_pid and snap["interval_s"] > 0
    rows = {r["path"]: r for r in snap["actors"]}
    assert set(rows) == {"root/counter", "root/relay", "root/crasher"}
    for r in rows.values():
        assert r["status"] == "running" and r["pid"] and r["rss"] > 0 and r["mailbox"] is not None
        assert r["cpu_percent"] >= 0 and r["msgs_in_per_s"] >= 0 and r["msgs_out_per_s"] >= 0
        assert r["uss"] is None or 0 < r["uss"] <= r["rss"]
    crasher = rows["root/crasher"]
    assert crasher["restarts"] >= 1 and crasher["last_crash"].startswith("killed")
    assert rows["root/counter"]["last_crash"] is None and rows["root/counter"]["restarts"] == 0


@pytest.mark.integration
def test_top_counts_the_messages_stored_between_its_two_samples(real):
    """The relay takes a request in and sends one out to the counter for each `request relay`."""
    from theater_otp.cli_top import Sampler
    from theater_otp.client import ControlClient
    from theater_otp.home import Home

    home = Home.at(real.home)
    relay_id = real.node("root/relay")["actor_id"]
    before = len(real.events(relay_id, "message.request"))
    with ControlClient(home) as c:
        sampler = Sampler(home, lambda: c.call("tree"))
        try:
            first = sampler.sample()
            assert all(r.msgs_in_per_s is None for r in first.rows)
            for _ in range(3):
                assert cli("request", "relay", "inc", home=real.home).returncode == 0
            real.wait_for(lambda: len(real.events(relay_id, "message.request")) >= before + 3, what="3 requests stored")
            second = sampler.sample()
        finally:
            sampler.close()
    rows = {r.path: r for r in second.rows}
    elapsed = second.elapsed
    assert elapsed is not None and elapsed > 0

    def counted(per_s: float | None) -> int:
        assert per_s is not None
        return round(per_s * elapsed)

    relay, counter = rows["root/relay"], rows["root/counter"]
    assert counted(relay.msgs_in_per_s) >= 3 and counted(relay.msgs_out_per_s) >= 3
    assert counted(counter.msgs_in_per_s) >= 3 and counted(counter.msgs_out_per_s) == 0


def read_until(proc: subprocess.Popen, found, timeout: float = 30.0) -> str:
    """stdout of `proc` read until `found(text so far)`; fails on a timeout or an early exit."""
    assert proc.stdout is not None
    text = ""
    deadline = time.monotonic() + timeout
    while not found(text):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; stdout so far:\n{text}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk_ = os.read(proc.stdout.fileno(), 65536)
            assert chunk_, f"exited {proc.wait()} early; stdout:\n{text}"
            text += chunk_.decode()
    return text


def marked_line(text: str, name: str) -> bool:
    return any(RESTART_MARK in line and f"── {name} " in line for line in text.splitlines())


@pytest.mark.integration
def test_tree_watch_marks_the_restarted_actor_and_ctrl_c_exits_0(real):
    proc = subprocess.Popen([*CLI, "tree", "--watch", "--interval", "0.1", "--frames", "3000",
                             "--home", str(real.home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        first = read_until(proc, lambda text: "── crasher " in text)
        assert first.startswith("root  [one_for_one]  node pid") and RESTART_MARK not in first
        kill_and_wait(real, "root/relay")
        read_until(proc, lambda text: marked_line(text, "relay"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and b"Traceback" not in err, err


@pytest.mark.integration
def test_top_live_prints_a_table_per_refresh_and_ctrl_c_exits_0(real):
    proc = subprocess.Popen([*CLI, "top", "--interval", "0.1", "--home", str(real.home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        text = read_until(proc, lambda text: text.count("root/crasher") >= 2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert "PATH" in text and "LAST CRASH" in text and "theater-otp top: node pid" in text
    assert proc.returncode == 0 and b"Traceback" not in err, err


@pytest.mark.integration
def test_top_and_tree_watch_without_a_node_are_exit_3(tmp_path: Path):
    assert cli("top", "--json", home=tmp_path / "nohome").returncode == 3
    assert cli("tree", "--watch", home=tmp_path / "nohome").returncode == 3


@pytest.mark.unit
def test_plain_tree_stays_on_the_typer_free_path_and_watch_goes_through_typer():
    from theater_otp.cli import _tree_argv

    assert _tree_argv(["tree", "--json"]) is not None
    assert _tree_argv(["tree", "--watch"]) is None
