"""The environment, random and (complete) runtime handlers, against real trees.

actors/wat/rtprobe.wat calls every function of theater:simple/environment, /random and /runtime
from handle-request (first byte: the call; see the .wat); actors/wat/rtseed.wat imports the
seed's ntwk:theater/runtime (log with a level, get-actor-name). Each test checks what the actor
got, what the chain holds and that `replay` reproduces the run.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import struct
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness import WAT, Tree, cli
from theater_otp.config.loader import load_manifest
from theater_otp.errors import ConfigError
from theater_otp.home import Home
from theater_otp.worker.handlers import check_imports
from theater_otp.worker.handlers.base import ActorInfo, HostContext
from theater_otp.worker.handlers.environment import HANDLER as ENVIRONMENT
from theater_otp.worker.handlers.environment import EnvironmentSettings
from theater_otp.worker.handlers.random_ import HANDLER as RANDOM
from theater_otp.worker.handlers.random_ import RandomSettings
from theater_otp.worker.handlers.runtime import HANDLER as RUNTIME

pytestmark = pytest.mark.integration

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 10

    [[supervisor.children]]
    id = "probe"
    manifest = "probe.toml"
"""

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path.resolve()


def probe_manifest(folder: Path, environment: str = "", random: str = "", name: str = "probe",
                   wat: str = "rtprobe.wat") -> Path:
    return write(folder / f"{name}.toml", f"""
        name = "{name}"
        component = "{WAT / wat}"

        [[handler]]
        type = "environment"
        {environment}

        [[handler]]
        type = "random"
        {random}
    """)


def ask(tree: Tree, payload: bytes, target: str = "probe") -> bytes:
    answer = tree.call("request", {"target": target, "payload": payload, "timeout_ms": 5000})
    assert "ok" in answer, answer
    return answer["ok"]


def with_len(first: bytes, rest: bytes) -> bytes:
    return struct.pack("<I", len(first)) + first + rest


def assert_replays(tree: Tree, name: str = "probe") -> dict:
    replay = cli("replay", name, "--json", home=tree.home)
    assert replay.returncode == 0, replay.stderr
    out = json.loads(replay.stdout)
    assert out["match"] is True and out["replayed"] > 0, replay.stdout
    return out


def line_no(path: Path, needle: str) -> int:
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


# ---- settings ------------------------------------------------------------------------------------

@pytest.mark.unit
def test_settings_are_read_into_typed_records(tmp_path):
    path = probe_manifest(tmp_path, 'allowed_vars = ["HOME", "LOG_LEVEL"]\nvars = { MODE = "test", _X1 = "" }',
                          "seed = 7\nmax_bytes = 100")
    handlers = {h.type: h.settings for h in load_manifest(path).handlers}
    assert handlers["environment"] == EnvironmentSettings(("HOME", "LOG_LEVEL"), {"MODE": "test", "_X1": ""})
    assert handlers["random"] == RandomSettings(seed=7, max_bytes=100)
    path = probe_manifest(tmp_path, "", "")
    handlers = {h.type: h.settings for h in load_manifest(path).handlers}
    assert handlers["environment"] == EnvironmentSettings()
    assert handlers["random"] == RandomSettings(seed=None, max_bytes=1024 * 1024)


BAD_SETTINGS = [
    # (environment settings, random settings, the key, the line's text, words of the message)
    ('allowed_vars = "X"', "", "handler[0].allowed_vars", "allowed_vars", "expected a list of variable names"),
    ('allowed_vars = ["OK", "1BAD"]', "", "handler[0].allowed_vars", "allowed_vars", "'1BAD' is not a valid"),
    ('allowed_vars = ["A-B"]', "", "handler[0].allowed_vars", "allowed_vars", "'A-B' is not a valid"),
    ("vars = { A = 1 }", "", "handler[0].vars", "vars", "A = 1 is not valid: expected a string"),
    ('vars = "A=1"', "", "handler[0].vars", "vars", "expected a table of strings"),
    ('vars = { "NOT OK" = "x" }', "", "handler[0].vars", "vars", "'NOT OK' is not a valid variable name"),
    ('colour = "red"', "", "handler[0].colour", "colour", "unknown setting 'colour': expected allowed_vars, vars"),
    ("", "seed = -1", "handler[1].seed", "seed", "-1 is not valid: expected an integer >= 0"),
    ("", 'seed = "x"', "handler[1].seed", "seed", "'x' is not valid: expected an integer >= 0"),
    ("", "seed = 1.5", "handler[1].seed", "seed", "expected an integer"),
    ("", "max_bytes = -5", "handler[1].max_bytes", "max_bytes", "expected an integer >= 0"),
    ("", "sead = 3", "handler[1].sead", "sead", "unknown setting 'sead': expected max_bytes, seed"),
]


@pytest.mark.unit
@pytest.mark.parametrize("env, rnd, key, needle, words", BAD_SETTINGS)
def test_bad_settings_are_refused_with_file_key_and_line(tmp_path, env, rnd, key, needle, words):
    path = probe_manifest(tmp_path, env, rnd)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    err = info.value
    assert err.file == str(path) and err.key == key, err
    assert err.line == line_no(path, needle + " ="), err
    assert words in err.message, err
    assert str(err).startswith(f"{path}:{err.line}: "), err
    assert "\n" not in str(err)


@pytest.mark.unit
def test_a_bad_vars_entry_in_a_sub_table_is_refused_at_its_own_line(tmp_path):
    path = write(tmp_path / "probe.toml", f"""
        name = "probe"
        component = "{WAT / 'rtprobe.wat'}"

        [[handler]]
        type = "environment"

        [handler.vars]
        GOOD = "x"
        BAD = 3
    """)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    assert info.value.key == "handler[0].vars.BAD"
    assert info.value.line == line_no(path, "BAD = 3")


def test_validate_lists_each_bad_setting_with_file_and_line(tmp_path):
    cases = BAD_SETTINGS[0], BAD_SETTINGS[3], BAD_SETTINGS[7], BAD_SETTINGS[8], BAD_SETTINGS[6]
    children = []
    for i, (env, rnd, _key, _needle, _words) in enumerate(cases):
        probe_manifest(tmp_path, env, rnd, name=f"bad{i}")
        children.append(f'[[supervisor.children]]\nid = "bad{i}"\nmanifest = "bad{i}.toml"\n')
    config = write(tmp_path / "supervision.toml", "[supervisor]\n\n" + "\n".join(children))
    result = cli("validate", str(config), "--json")
    assert result.returncode == 1, result.stderr
    problems = json.loads(result.stdout)["problems"]
    for i, (_env, _rnd, key, needle, words) in enumerate(cases):
        path = tmp_path / f"bad{i}.toml"
        # (validate then also reports the import the refused handler no longer grants)
        (found,) = [p for p in problems if p["file"] == str(path) and p["key"] == key]
        assert found["key"] == key and found["line"] == line_no(path, needle + " ="), found
        assert words in found["message"], found


@pytest.mark.unit
def test_imports_of_environment_and_random_need_their_handlers():
    imports = ("theater:simple/environment", "theater:simple/random", "ntwk:theater/runtime",
               "theater:simple/runtime")
    problems = check_imports(imports, {"runtime", "message-server", "random"})
    assert [str(p) for p in problems] == [
        "component imports theater:simple/environment but the manifest does not grant it: "
        "add `[[handler]] type = \"environment\"` to the manifest"]
    assert check_imports(("ntwk:theater/random", "ntwk:theater/environment"), {"environment", "random"}) == []


def test_a_component_importing_environment_without_the_handler_does_not_start(tmp_path):
    write(tmp_path / "probe.toml", f"""
        name = "probe"
        component = "{WAT / 'rtprobe.wat'}"

        [[handler]]
        type = "random"
    """)
    config = write(tmp_path / "supervision.toml", textwrap.dedent(TREE))
    home = tmp_path / "home"
    proc = cli("up", str(config), "--detach", home=home)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "theater:simple/environment" in proc.stderr, proc.stderr
    assert '[[handler]] type = "environment"' in proc.stderr, proc.stderr
    assert not (home / "run" / "node.pid").exists()


# ---- host functions built without a worker -------------------------------------------------------

class _Services:
    """Services a table may take when it is built; the tested calls may only log."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def log_at(self, level: str, msg: str) -> None:
        self.lines.append((level, msg))

    def __getattr__(self, name):
        def used(*_args):
            raise AssertionError(f"service {name} used")
        return used


def _table(handler, settings=None, grants=None, iface="theater:simple/runtime", path="root/a", incarnation=1,
           services=None):
    ctx = HostContext(ActorInfo("id-1", "a", path, incarnation), services or _Services(), settings,
                      grants=grants or {})
    return handler.functions(ctx)[iface]


@pytest.mark.unit
def test_runtime_get_env_sees_nothing_without_the_environment_handler(monkeypatch):
    monkeypatch.setenv("THEATER_TEST_SEEN", "1")
    assert _table(RUNTIME, grants={})["get-env"].call("THEATER_TEST_SEEN") is None
    assert _table(RUNTIME, grants={"environment": None})["get-env"].call("THEATER_TEST_SEEN") is None
    held = {"environment": EnvironmentSettings(("THEATER_TEST_SEEN",), {"MODE": "x"})}
    for iface in ("theater:simple/runtime", "ntwk:theater/runtime"):
        table = _table(RUNTIME, grants=held, iface=iface)
        assert table["get-env"].call("THEATER_TEST_SEEN") == "1"
        assert table["get-env"].call("MODE") == "x"
        assert table["get-env"].call("PATH") is None


@pytest.mark.unit
def test_runtime_serves_both_spellings_with_their_own_function_lists():
    services = _Services()
    simple = _table(RUNTIME, services=services)
    seed = _table(RUNTIME, iface="ntwk:theater/runtime", services=services)
    common = {"get-actor-id", "get-actor-name", "get-current-time", "get-env", "record-metric", "record-event",
              "get-theater-version", "get-system-info"}
    assert set(simple) == common | {"log", "log-at", "get-chain", "shutdown"}
    assert set(seed) == common | {"log"}
    assert seed["log"].call("info", "x") is None                # log(level, message) -> result<_, string>
    assert "expected trace, debug, info, warn or error" in seed["log"].call("verbose", "x")
    assert simple["log-at"].call("warn", "y") is None
    assert services.lines == [("info", "x"), ("warn", "y")]    # the worker's log_at: levels, rate limit
    assert RUNTIME.provides() == ("theater:simple/runtime", "ntwk:theater/runtime")


@pytest.mark.unit
def test_replayed_values_have_the_guest_types():
    pairs = _table(ENVIRONMENT, EnvironmentSettings(), iface="theater:simple/environment")["list-vars"]
    recorded = pairs.record((), [("A", "1"), ("B", "2")])
    assert recorded == {"args": [], "result": [["A", "1"], ["B", "2"]]}
    assert pairs.replay(recorded) == [("A", "1"), ("B", "2")]
    info = _table(RUNTIME)["get-system-info"]
    live = info.call()
    again = info.replay(info.record((), live))
    assert vars(again) == vars(live) and isinstance(getattr(again, "cpu-count"), int)


@pytest.mark.unit
def test_a_seeded_stream_depends_on_seed_path_and_incarnation():
    def draw(seed, path="root/a", incarnation=1):
        table = _table(RANDOM, RandomSettings(seed=seed), iface="theater:simple/random", path=path,
                       incarnation=incarnation)
        return [table["random-bytes"].call(8).value, table["random-range"].call(0, 10**9).value,
                table["random-float"].call().value, table["generate-uuid"].call().value]
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert draw(1) != draw(1, path="root/b")
    assert draw(1) != draw(1, incarnation=2)
    assert draw(None) != draw(None)


# ---- environment ---------------------------------------------------------------------------------

def test_only_allowed_and_manifest_vars_are_visible(tmp_path, monkeypatch):
    monkeypatch.setenv("THEATER_TEST_ALLOWED", "yes")
    monkeypatch.setenv("THEATER_TEST_SECRET", "hidden")
    monkeypatch.setenv("THEATER_TEST_OVERRIDDEN", "from-host")
    monkeypatch.delenv("THEATER_TEST_UNSET", raising=False)
    probe_manifest(tmp_path, 'allowed_vars = ["THEATER_TEST_ALLOWED", "THEATER_TEST_OVERRIDDEN", '
                             '"THEATER_TEST_UNSET"]\n'
                             'vars = { THEATER_TEST_OVERRIDDEN = "from-manifest", MODE = "test" }')
    with Tree(tmp_path, TREE) as tree:
        pid = tree.wait_running()["root/probe"]
        # the secret is in the worker's environment: it is hidden by the handler, not absent
        assert psutil.Process(pid).environ()["THEATER_TEST_SECRET"] == "hidden"
        expected = {
            b"gTHEATER_TEST_ALLOWED": b"+yes", b"gTHEATER_TEST_OVERRIDDEN": b"+from-manifest",
            b"gMODE": b"+test", b"gTHEATER_TEST_SECRET": b"-", b"gTHEATER_TEST_UNSET": b"-", b"gPATH": b"-",
            b"g": b"-", b"gA=B": b"-",
            b"eTHEATER_TEST_ALLOWED": b"1", b"eMODE": b"1", b"eTHEATER_TEST_SECRET": b"0",
            b"eTHEATER_TEST_UNSET": b"0",
            b"l": b"MODE=test\nTHEATER_TEST_ALLOWED=yes\nTHEATER_TEST_OVERRIDDEN=from-manifest\n",
            b"VTHEATER_TEST_ALLOWED": b"+yes", b"VMODE": b"+test", b"VTHEATER_TEST_SECRET": b"-",
            b"VTHEATER_TEST_UNSET": b"-",
        }
        got = {payload: ask(tree, payload) for payload in expected}
        assert got == expected
        actor_id = tree.node("root/probe")["actor_id"]
        (listed,) = [e.payload() for e in tree.events(actor_id, "host.environment.list-vars")]
        assert listed["result"] == [["MODE", "test"], ["THEATER_TEST_ALLOWED", "yes"],
                                    ["THEATER_TEST_OVERRIDDEN", "from-manifest"]]
        gets = [e.payload() for e in tree.events(actor_id, "host.environment.get-var")]
        assert {"args": ["THEATER_TEST_SECRET"], "result": None} in gets
        envs = [e.payload() for e in tree.events(actor_id, "host.runtime.get-env")]
        assert {"args": ["THEATER_TEST_ALLOWED"], "result": "yes"} in envs
        assert_replays(tree)


# ---- random --------------------------------------------------------------------------------------

RANDOM_CALLS = [b"b" + struct.pack("<I", 16), b"r" + struct.pack("<QQ", 0, 10**12), b"f", b"u",
                b"b" + struct.pack("<I", 3), b"r" + struct.pack("<QQ", 2**63, 2**64 - 1)]


def _draws(tree: Tree) -> list[bytes]:
    out = [ask(tree, call) for call in RANDOM_CALLS]
    assert all(v.startswith(b"+") for v in out), out
    return out


def test_a_seed_gives_the_same_values_in_two_trees_and_none_gives_different(tmp_path):
    runs = {}
    for name, settings in (("a", "seed = 12345"), ("b", "seed = 12345"), ("c", ""), ("d", "")):
        folder = tmp_path / name
        probe_manifest(folder, random=settings)
        with Tree(folder, TREE) as tree:
            tree.wait_running()
            runs[name] = _draws(tree)
            if name == "a":  # a restarted incarnation draws a new (still reproducible) sequence
                actor_id = tree.node("root/probe")["actor_id"]
                assert len(tree.events(actor_id, "host.random")) == 6   # durable before the kill
                first = tree.kill("root/probe")
                tree.wait_for(lambda: tree.node("root/probe")["pid"] not in (None, first)
                              and tree.node("root/probe")["status"] == "running", what="the restart")
                runs["a2"] = _draws(tree)
                recorded = [e.payload()["result"]["ok"] for e in tree.events(actor_id, "host.random.random-bytes")]
                assert recorded[0] == runs["a"][0][1:] and len(recorded) == 4
                assert_replays(tree)
    assert runs["a"] == runs["b"]
    assert runs["c"] != runs["a"] and runs["d"] != runs["a"] and runs["c"] != runs["d"]
    assert runs["a2"] != runs["a"]
    for values in runs.values():
        assert UUID4.match(values[3][1:].decode()), values[3]


def test_random_values_keep_their_bounds_and_bad_requests_are_errors(tmp_path):
    probe_manifest(tmp_path, random="max_bytes = 64")
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        ranged = [struct.unpack("<Q", ask(tree, b"r" + struct.pack("<QQ", 10, 13))[1:])[0] for _ in range(60)]
        assert set(ranged) == {10, 11, 12}
        assert struct.unpack("<Q", ask(tree, b"r" + struct.pack("<QQ", 7, 8))[1:])[0] == 7
        big = struct.unpack("<Q", ask(tree, b"r" + struct.pack("<QQ", 2**64 - 2, 2**64 - 1))[1:])[0]
        assert big == 2**64 - 2
        for low, high in ((5, 5), (9, 3)):
            err = ask(tree, b"r" + struct.pack("<QQ", low, high)).decode()
            assert err == f"!random-range needs min < max: min is {low}, max is {high}"
        floats = [struct.unpack("<d", ask(tree, b"f")[1:])[0] for _ in range(20)]
        assert all(0.0 <= f < 1.0 for f in floats) and len(set(floats)) == 20
        assert len(ask(tree, b"b" + struct.pack("<I", 64))) == 65
        assert ask(tree, b"b" + struct.pack("<I", 0)) == b"+"
        err = ask(tree, b"b" + struct.pack("<I", 65)).decode()
        assert err.startswith("!") and "65 bytes" in err and "64" in err and "max_bytes" in err
        err = ask(tree, b"b" + struct.pack("<I", 2**32 - 1)).decode()   # refused, never allocated
        assert err.startswith("!random-bytes of 4294967295 bytes")
        uuids = {ask(tree, b"u")[1:].decode() for _ in range(5)}
        assert len(uuids) == 5 and all(UUID4.match(u) for u in uuids)
        assert tree.node("root/probe")["restarts"] == 0          # errors, not crashes
        actor_id = tree.node("root/probe")["actor_id"]
        recorded = [e.payload() for e in tree.events(actor_id, "host.random.random-float")]
        assert [r["result"]["ok"] for r in recorded] == floats    # f64 as recorded
        ranges = [e.payload() for e in tree.events(actor_id, "host.random.random-range")]
        assert {"args": [5, 5], "result": {"err": "random-range needs min < max: min is 5, max is 5"}} in ranges
        assert_replays(tree)


# ---- runtime -------------------------------------------------------------------------------------

def test_runtime_reports_who_and_where_the_actor_is(tmp_path):
    probe_manifest(tmp_path)
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        node = tree.node("root/probe")
        assert ask(tree, b"i").decode() == node["actor_id"]
        assert ask(tree, b"n") == b"probe"
        assert ask(tree, b"v").decode() == importlib.metadata.version("theater-otp")
        before = time.time_ns() // 1_000_000
        now = struct.unpack("<Q", ask(tree, b"t"))[0]
        assert before <= now <= time.time_ns() // 1_000_000
        info = ask(tree, b"s")
        cpus, total, available, uptime = struct.unpack("<IQQQ", info[:28])
        hostname, os_type, os_release = info[28:].decode().split("\n")
        assert cpus == os.cpu_count()
        assert total == psutil.virtual_memory().total and 0 < available <= total
        assert abs(uptime - (time.time() - psutil.boot_time())) < 60
        assert (hostname, os_type, os_release) == (socket.gethostname(), platform.system(), platform.release())
        (recorded,) = [e.payload() for e in tree.events(node["actor_id"], "host.runtime.get-system-info")]
        assert recorded["result"]["cpu-count"] == cpus and recorded["result"]["hostname"] == hostname
        assert_replays(tree)


def test_log_levels_metrics_and_custom_events(tmp_path):
    probe_manifest(tmp_path)
    with Tree(tmp_path, TREE) as tree:
        tree.wait_running()
        for level in ("trace", "debug", "info", "warn", "error"):
            assert ask(tree, b"L" + with_len(level.encode(), f"a {level} line from the probe".encode())) == b"+"
        err = ask(tree, b"L" + with_len(b"loud", b"x")).decode()
        assert err == "!unknown log level 'loud': expected trace, debug, info, warn or error"
        assert ask(tree, b"m" + struct.pack("<d", 42.5) + b"request_duration_ms") == b"+"
        for bad in (math.nan, math.inf, -math.inf):
            err = ask(tree, b"m" + struct.pack("<d", bad) + b"broken").decode()
            assert err.startswith("!metric 'broken'") and "not a finite number" in err
        assert ask(tree, b"m" + struct.pack("<d", 1.0)).decode().startswith("!a metric name is 1 to 128")
        assert ask(tree, b"E" + with_len(b"user_login", b"alice\x00\xff")) == b"+"
        assert ask(tree, b"E" + with_len(b"t" * 128, b"")) == b"+"
        assert ask(tree, b"E" + with_len(b"t" * 129, b"")).decode().startswith("!an event type is 1 to 128")
        assert ask(tree, b"E" + with_len(b"", b"x")).decode().startswith("!an event type is 1 to 128")
        assert ask(tree, b"E" + with_len(b"big", b"x" * 65536)) == b"+"
        err = ask(tree, b"E" + with_len(b"big", b"x" * 65537)).decode()
        assert err == "!event 'big': 65537 bytes of data is over the limit of 65536"
        assert tree.node("root/probe")["restarts"] == 0

        log = Home.at(tree.home).log_file.read_text()
        # (trace and debug are below the node log's INFO level: the chain has them)
        for level, shown in (("info", "INFO"), ("warn", "WARNING"), ("error", "ERROR")):
            assert re.search(rf" {shown} \[root/probe\] a {level} line from the probe$", log, re.M), (level, log)
        actor_id = tree.node("root/probe")["actor_id"]
        logs = [e.payload() for e in tree.events(actor_id, "host.runtime.log-at")]
        assert [entry["args"][0] for entry in logs] == ["trace", "debug", "info", "warn", "error", "loud"]
        assert logs[1] == {"args": ["debug", "a debug line from the probe"], "result": None}
        assert logs[-1]["result"].startswith("unknown log level")
        metrics = [e.payload() for e in tree.events(actor_id, "host.runtime.record-metric")]
        assert metrics[0] == {"args": ["request_duration_ms", 42.5], "result": None}
        assert math.isnan(metrics[1]["args"][1]) and "not a finite number" in metrics[1]["result"]
        events = [e.payload() for e in tree.events(actor_id, "host.runtime.record-event")]
        assert events[0] == {"args": ["user_login", b"alice\x00\xff"], "result": None}
        assert events[2]["args"][0] == "t" * 128 + "…"                       # refused: cut in the chain
        assert events[4]["args"][1] == b"x" * 65536
        assert events[5]["args"][1]["size"] == 65537 and len(events[5]["args"][1]["sha256"]) == 64
        assert_replays(tree)


def test_the_seeds_runtime_spelling_logs_with_a_level(tmp_path):
    write(tmp_path / "seed.toml", f"""
        name = "seedrt"
        component = "{WAT / 'rtseed.wat'}"
    """)
    tree_text = TREE.replace('id = "probe"', 'id = "seedrt"').replace("probe.toml", "seed.toml")
    with Tree(tmp_path, tree_text) as tree:
        tree.wait_running()
        assert ask(tree, b"n", "seedrt") == b"seedrt"
        assert ask(tree, b"L" + with_len(b"warn", b"hello from the seed's runtime"), "seedrt") == b"+"
        err = ask(tree, b"L" + with_len(b"shout", b"x"), "seedrt").decode()
        assert err == "!unknown log level 'shout': expected trace, debug, info, warn or error"
        log = Home.at(tree.home).log_file.read_text()
        assert re.search(r" WARNING \[root/seedrt\] hello from the seed's runtime$", log, re.M), log
        actor_id = tree.node("root/seedrt")["actor_id"]
        logs = [e.payload() for e in tree.events(actor_id, "host.runtime.log")]
        assert logs[0] == {"args": ["warn", "hello from the seed's runtime"], "result": None}
        assert [e.payload()["result"] for e in tree.events(actor_id, "host.runtime.get-actor-name")] == ["seedrt"]
        assert_replays(tree, "seedrt")
