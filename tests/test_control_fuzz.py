"""Random control commands against a real node: every one is answered (a result or an error), and
the node, its tree and its actors keep working (issues 11 and 12: a bad command costs at most the
one who sent it).

hypothesis draws a command from the node's control commands (all but `down`) and a body of
plausible keys with hostile values: huge and negative ints, NaN and infinities, NUL bytes, bytes
where text goes, nested containers. One tree serves every example; after them, `ping` answers,
`tree` shows the actor running with the pid it had, and `request echo` still replies.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import WAT, Tree, cli
from theater_otp.client import ControlClient, RemoteError
from theater_otp.home import Home

pytestmark = pytest.mark.integration

COMMANDS = ["ping", "sync", "tree", "resolve", "send", "request", "state", "start_child", "terminate_child",
            "restart_child", "delete_child", "which_children", "count_children", "no_such_command"]
KEYS = ["target", "path", "payload", "timeout_ms", "supervisor", "child", "id", "spec", "manifest", "name",
        "restart", "shutdown", "type", "since", "limit", "kind"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what msgpack can carry
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -0.0, 2.2e9]),
    st.text(max_size=20), st.sampled_from(["echo", "root", "root/echo", "a\x00b", "../../etc/passwd", "", "*"]),
    st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
                      max_leaves=6)
bodies = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)


def _echo_tree(folder, flags: str = "") -> Tree:
    """A tree of one echo actor under `root` (with extra supervisor `flags`)."""
    (folder / "echo.toml").write_text(f'name = "echo"\ncomponent = "{WAT / "echo.wat"}"\n')
    return Tree(folder, f"""
        [supervisor]
        id = "root"
        {flags}
        [[supervisor.children]]
        id = "echo"
        manifest = "echo.toml"
    """)


@pytest.fixture(scope="module")
def echo_tree(tmp_path_factory):
    with _echo_tree(tmp_path_factory.mktemp("fuzz"), "intensity = 1000\n        period = 1") as tree:
        tree.wait_running()
        yield tree


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), body=bodies)
def test_every_random_command_is_answered_and_the_node_lives_on(echo_tree, command, body):
    with ControlClient(Home.at(echo_tree.home)) as client:
        try:
            client.call(command, body, timeout_s=15)
        except RemoteError:
            pass  # an error answer is an answer
        assert client.call("ping", {}, timeout_s=15)["node_pid"]


def test_after_the_fuzzing_the_tree_and_its_actor_still_work(echo_tree):
    out = cli("request", "echo", "still here", home=echo_tree.home)
    assert out.returncode == 0 and out.stdout.strip() == "still here"
    assert "Traceback" not in (echo_tree.home / "node.stderr").read_text() if (echo_tree.home / "node.stderr").exists() \
        else True


@pytest.mark.parametrize("timeout_ms", [math.inf, -math.inf, math.nan, 1e300, 10**19, 2**64 - 1, -1, 0, "5", None])
def test_a_request_with_any_timeout_is_answered_and_the_node_lives_on(echo_tree, timeout_ms):
    """Issue 12: a `timeout_ms` of inf or 1e300 ended the node (an OverflowError in zmq_poll)."""
    with ControlClient(Home.at(echo_tree.home)) as client:
        try:
            reply = client.call("request", {"target": "echo", "payload": b"x", "timeout_ms": timeout_ms}, timeout_s=15)
            assert reply is not None
        except RemoteError as err:
            assert "`timeout_ms` must be a whole number of milliseconds" in str(err)
        assert client.call("ping", {}, timeout_s=15)["node_pid"]


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "1e300"])
def test_the_cli_refuses_a_timeout_that_is_no_duration_in_one_line(echo_tree, timeout):
    """Issue 12: `request --timeout nan` (or inf) ended in a traceback."""
    out = cli("request", "echo", "hi", "--timeout", timeout, home=echo_tree.home)
    assert out.returncode == 2 and out.stderr.startswith("error: --timeout must be a number of seconds")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("verb", ["send", "request"])
def test_the_cli_refuses_a_file_too_big_for_any_actor_without_reading_it_whole(echo_tree, tmp_path, verb):
    """Issue 12: `send --file` of 50 MiB ended in a traceback."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (3 * 1024 * 1024))
    out = cli(verb, "echo", "--file", str(big), home=echo_tree.home)
    assert out.returncode == 2 and "is over 2097152 bytes, the largest message an actor can take" in out.stderr
    out = cli(verb, "echo", "--file", "/dev/zero", home=echo_tree.home)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_an_existing_home_directory_keeps_its_mode(tmp_path):
    """Issue 12: `up --home DIR` chmodded an existing directory (tried with /tmp) to 0700."""
    import os
    import stat

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    home = Home(shared)
    home.prepare()
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(home.run_dir).st_mode) == 0o700
    fresh = Home(tmp_path / "new" / "home")
    fresh.prepare()
    assert stat.S_IMODE(os.stat(fresh.root).st_mode) == 0o700


def stamp(line: str) -> float:
    """The time of a node.log line ('2026-12-03 14:57:54,458 node[...] ...'), in seconds."""
    import datetime
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def restarts(log: str) -> list[tuple[float, int, float]]:
    """The node's 'chain-writer exited ... N time(s) in a row ...: starting it again in D s' lines:
    (time, N, D)."""
    import re
    return [(stamp(m.group(0)), int(m.group(1)), float(m.group(2))) for m in re.finditer(
        r"^.*chain-writer exited \(\d+\), (\d+) time\(s\) in a row.*starting it again in ([\d.]+) s$", log, re.MULTILINE)]


def test_a_chain_writer_that_cannot_open_chain_db_is_restarted_with_backoff_and_says_why(tmp_path):
    """Issue 12: with chain.db unopenable the writer was restarted in a hot loop (664 times in 10 s).
    Here chain.db turns into a directory under a running tree and its writer is killed: each
    failed start is one clear line and the pause before the next doubles; `down` still works."""
    import os
    import signal

    import psutil

    tree = _echo_tree(tmp_path, "intensity = 20\n        period = 60")  # the writer's restarts count here
    with tree:
        tree.wait_running()
        writer = [p for p in psutil.Process(tree.node("root")["node_pid"]).children(recursive=True)
                  if any(f.path.endswith("chain.db") for f in p.open_files())][0]
        for name in ("chain.db", "chain.db-wal", "chain.db-shm"):
            if (tree.home / name).exists():
                (tree.home / name).rename(tree.home / f"{name}.moved")
        (tree.home / "chain.db").mkdir()  # sqlite cannot open a directory
        os.kill(writer.pid, signal.SIGKILL)
        node_log = tree.home / "node.log"
        tree.wait_for(lambda: len(restarts(node_log.read_text())) >= 4, timeout=60, what="four failed writer starts")
        log = node_log.read_text()
    # the backoff from the node's own records, not the test's clock: each failure is counted and
    # announces a pause twice the one before, and the next writer's start (its 'cannot open' line)
    # comes no sooner than that pause after the announcement (log times are whole ms)
    announced = restarts(log)[:4]
    assert [n for _, n, _ in announced] == [1, 2, 3, 4]
    assert [d for _, _, d in announced] == [0.1, 0.2, 0.4, 0.8]
    opens = [stamp(line) for line in log.splitlines() if "chain-writer cannot open" in line]
    for at, n, pause in announced[:3]:   # the writers started after the first three pauses failed in turn
        next_open = min(t for t in opens if t > at)
        assert next_open - at >= pause - 0.001, (n, pause, next_open - at)
    assert "unable to open database file" in log
    assert "queue full" not in log and "dropped register" not in log  # before: 2,355 such lines


def test_a_chain_writer_restarted_past_the_roots_intensity_stops_the_node_naming_chain_db(tmp_path):
    """Hardening issue, item 4: writer restarts have OTP-style intensity (the root supervisor's);
    past it the node stops with one clear error naming chain.db and the cause."""
    import os
    import signal

    import psutil

    tree = _echo_tree(tmp_path, "intensity = 3\n        period = 60")
    with tree:
        tree.wait_running()
        node = psutil.Process(tree.node("root")["node_pid"])
        writer = [p for p in node.children(recursive=True)
                  if any(f.path.endswith("chain.db") for f in p.open_files())][0]
        for name in ("chain.db", "chain.db-wal", "chain.db-shm"):
            if (tree.home / name).exists():
                (tree.home / name).rename(tree.home / f"{name}.moved")
        (tree.home / "chain.db").mkdir()
        echo = psutil.Process(tree.node("root/echo")["pid"])
        os.kill(writer.pid, signal.SIGKILL)
        node.wait(60)  # the node gives up by itself (psutil.TimeoutExpired if it does not)
    log = (tree.home / "node.log").read_text()
    # three restarts allowed: the one after the kill and two after failed starts; the third failure stops it
    assert "chain-writer exited (-9): starting a new one" in log and len(restarts(log)) == 2
    line = [ln for ln in log.splitlines() if "the chain-writer ended 4 times within 60 s" in ln]
    assert line, log[-3000:]
    assert "more than the root supervisor's intensity (3)" in line[0]
    assert "it could not open the chain database" in line[0] and str(tree.home / "chain.db") in line[0]
    assert not echo.is_running() or echo.status() == psutil.STATUS_ZOMBIE  # and took its workers with it


def test_up_refuses_a_home_whose_chain_db_cannot_be_opened(tmp_path):
    tree = _echo_tree(tmp_path)
    (tree.home / "chain.db").mkdir(parents=True)
    out = cli("up", str(tree.config), "--detach", home=tree.home)
    assert out.returncode != 0 and "cannot open the chain database" in out.stderr
    assert "Traceback" not in out.stderr
