"""`up` refuses bad input with one clear line, and nothing half-starts.

Issue: "A malformed supervision.toml or manifest, a missing or invalid component, a
component without actor.init, duplicate child ids, an unknown strategy: `up` refuses
with one clear line naming the file, the line (or key) and what to change; nothing
half-starts." Each test runs the real CLI (`up CONFIG --detach --home HOME`) in a
subprocess and checks: exit code 1, stderr is exactly one line starting "error: "
that names the offending file (and key/line), no node pid file, no process whose
command line mentions HOME.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import psutil
import pytest

from harness import WAT, Tree, cli
from theater_otp.home import Home

pytestmark = pytest.mark.integration


# ---- helpers ---------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path.resolve()


def line_no(path: Path, needle: str, occurrence: int = 1) -> int:
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not found in {path}"
    return hits[occurrence - 1]


def manifest(folder: Path, name: str, component: str | Path, extra: str = "") -> Path:
    return write(folder / f"{name}.toml", f'name = "{name}"\ncomponent = "{component}"\n{extra}')


def one_worker(folder: Path, manifest_ref: str, flags: str = "") -> Path:
    return write(folder / "supervision.toml", f"""
        [supervisor]
        {flags}

        [[supervisor.children]]
        id = "w"
        manifest = "{manifest_ref}"
    """)


def processes_mentioning(home: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(p.info["cmdline"] or ())
        except psutil.Error:
            continue
        if str(home) in cmdline:
            found.append(f"{p.info['pid']}: {cmdline}")
    return found


def up(config: Path, home: Path):
    return cli("up", str(config), "--detach", home=home)


def assert_refused(proc, home: Path, *names: str) -> str:
    """Exit 1, one `error: ` line on stderr naming every string in `names`, nothing started."""
    report = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 1, report
    assert "Traceback" not in proc.stderr, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not exactly one line\n{report}"
    line = lines[0]
    assert line.startswith("error: "), report
    for name in names:
        assert name in line, f"{name!r} not named\n{report}"
    assert proc.stdout == "", report
    assert not (home / "run" / "node.pid").exists(), f"pid file left behind\n{report}"
    assert not Home.at(home).pidfile.exists(), f"pid file left behind\n{report}"
    leftovers = processes_mentioning(home)
    assert not leftovers, f"processes started for {home}: {leftovers}"
    return line


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return (tmp_path / "home").resolve()


@pytest.fixture
def echo(tmp_path: Path) -> Path:
    return manifest(tmp_path, "echo", WAT / "echo.wat")


# ---- malformed configuration -----------------------------------------------------------------

def test_malformed_supervision_toml_is_refused_naming_file_and_line(tmp_path, home, echo):
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]
        strategy = "one_for_one"

        [[supervisor.children]]
        id = "w
        manifest = "echo.toml"
    """)
    assert_refused(up(cfg, home), home, f"{cfg}:5", "invalid TOML")


def test_malformed_manifest_is_refused_naming_manifest_and_line(tmp_path, home):
    bad = write(tmp_path / "echo.toml", f"""
        name = "echo"
        component = "{WAT / 'echo.wat'}"
        [[handler]
        type = "timing"
    """)
    cfg = one_worker(tmp_path, "echo.toml")
    assert_refused(up(cfg, home), home, f"{bad}:3", "invalid TOML")


def test_unknown_strategy_is_refused_naming_key_line_and_choices(tmp_path, home, echo):
    cfg = one_worker(tmp_path, "echo.toml", flags='strategy = "one_for_none"')
    assert_refused(up(cfg, home), home, f"{cfg}:{line_no(cfg, 'one_for_none')}", "supervisor.strategy",
                   "'one_for_none'", "one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")


def test_duplicate_child_ids_are_refused_naming_key(tmp_path, home, echo):
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]

        [[supervisor.children]]
        id = "twin"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "twin"
        manifest = "echo.toml"
    """)
    assert_refused(up(cfg, home), home, str(cfg), "supervisor.children[1].id", "duplicate", "'twin'")


@pytest.mark.parametrize("flags, child, key, needle, words", [
    ("intensity = -1", "", "supervisor.intensity", "intensity = -1", [">= 0"]),
    ("period = 0", "", "supervisor.period", "period = 0", [">= 1"]),
    ("", 'restart = "always"', "supervisor.children[0].restart", 'restart = "always"',
     ["permanent", "transient", "temporary"]),
    ("", "shutdown = -10", "supervisor.children[0].shutdown", "shutdown = -10", [">= 0"]),
    ('auto_shutdown = "any_significant"', "significant = true", "supervisor.children[0].significant",
     "significant = true", ["permanent"]),
    ("", 'restart = "transient"\nsignificant = true', "supervisor.children[0].significant",
     "significant = true", ["auto_shutdown"]),
], ids=["negative_intensity", "zero_period", "invalid_restart_type", "negative_shutdown",
        "significant_with_permanent", "significant_with_auto_shutdown_never"])
def test_invalid_otp_flag_or_child_spec_is_refused(tmp_path, home, echo, flags, child, key, needle, words):
    cfg = tmp_path / "supervision.toml"
    cfg.write_text(f'[supervisor]\n{flags}\n\n[[supervisor.children]]\nid = "w"\nmanifest = "echo.toml"\n{child}\n')
    cfg = cfg.resolve()
    assert_refused(up(cfg, home), home, f"{cfg}:{line_no(cfg, needle)}", key, *words)


def test_simple_one_for_one_with_two_child_specs_is_refused(tmp_path, home, echo):
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]
        strategy = "simple_one_for_one"

        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "b"
        manifest = "echo.toml"
    """)
    assert_refused(up(cfg, home), home, str(cfg), "supervisor.children", "simple_one_for_one", "exactly one")


def test_unknown_handler_type_is_refused_naming_manifest_key_and_line(tmp_path, home):
    m = manifest(tmp_path, "echo", WAT / "echo.wat", '\n[[handler]]\ntype = "teleport"\n')
    cfg = one_worker(tmp_path, "echo.toml")
    assert_refused(up(cfg, home), home, f"{m}:{line_no(m, 'teleport')}", "handler[0].type", "'teleport'",
                   "timing")


# ---- missing files ---------------------------------------------------------------------------

def test_missing_manifest_is_refused_naming_it_and_the_reference(tmp_path, home):
    cfg = one_worker(tmp_path, "absent.toml")
    missing = str((tmp_path / "absent.toml").resolve())
    # the missing path, and where to change it: supervision.toml's `manifest = ...` (key or line)
    line = assert_refused(up(cfg, home), home, missing, "not found")
    assert str(cfg) in line and "supervisor.children[0].manifest" in line, line


def test_missing_component_is_refused_naming_manifest_key_and_line(tmp_path, home):
    m = manifest(tmp_path, "ghost", "ghost.wasm")
    cfg = one_worker(tmp_path, "ghost.toml")
    assert_refused(up(cfg, home), home, f"{m}:2", "component", str((tmp_path / "ghost.wasm").resolve()),
                   "not found")


# ---- bad components --------------------------------------------------------------------------

def test_component_that_is_not_wasm_is_refused_naming_it(tmp_path, home):
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\x7fELF\x02\x01\x01\x00 definitely not a component\n")
    manifest(tmp_path, "junk", "junk.wasm")
    cfg = one_worker(tmp_path, "junk.toml")
    assert_refused(up(cfg, home), home, str(junk.resolve()), "not a valid WebAssembly component")


def test_component_with_broken_wat_is_refused_naming_it(tmp_path, home):
    broken = tmp_path / "broken.wat"
    broken.write_text("(component\n  (core module $m\n    (func (export \"f\") (result i32) nope)))\n")
    manifest(tmp_path, "broken", "broken.wat")
    cfg = one_worker(tmp_path, "broken.toml")
    assert_refused(up(cfg, home), home, str(broken.resolve()), "not a valid WebAssembly component")


def test_component_without_actor_init_is_refused(tmp_path, home):
    manifest(tmp_path, "noinit", WAT / "noinit.wat")
    cfg = one_worker(tmp_path, "noinit.toml")
    assert_refused(up(cfg, home), home, str((WAT / "noinit.wat").resolve()), "theater:simple/actor", "init")


def test_ungranted_timing_import_is_refused_naming_interface_and_handler_to_add(tmp_path, home):
    m = manifest(tmp_path, "pump", WAT / "pump.wat", 'initial_state = "a\\nb"\n')
    cfg = one_worker(tmp_path, "pump.toml")
    assert_refused(up(cfg, home), home, str(m), "theater:simple/timing", "[[handler]]", 'type = "timing"')


def test_bad_child_after_good_ones_starts_nothing(tmp_path, home, echo):
    # the error is in the last child: nothing of the first children may start
    manifest(tmp_path, "noinit", WAT / "noinit.wat")
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]

        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "team"
        [[supervisor.children.children]]
        id = "b"
        manifest = "echo.toml"
        [[supervisor.children.children]]
        id = "c"
        manifest = "noinit.toml"
    """)
    assert_refused(up(cfg, home), home, "noinit.wat")


# ---- a node already running ------------------------------------------------------------------

GOOD_TREE = """
    [supervisor]
    strategy = "one_for_one"

    [[supervisor.children]]
    id = "echo"
    manifest = "echo.toml"
"""


def test_second_up_on_a_running_home_is_refused_naming_the_pid(tmp_path, echo):
    with Tree(tmp_path, GOOD_TREE) as tree:
        tree.wait_running()
        home = tree.home.resolve()
        pidfile = Home.at(home).pidfile
        before = sorted(processes_mentioning(home))
        proc = up(tree.config, home)
        report = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
        assert proc.returncode == 1, report
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), report
        assert f"pid {tree.node_pid}" in lines[0], report
        assert "already running" in lines[0] and str(home) in lines[0], report
        assert "Traceback" not in proc.stderr, report
        # the running node is untouched and no second node started
        assert pidfile.read_text().strip() == str(tree.node_pid)
        assert psutil.pid_exists(tree.node_pid)
        assert sorted(processes_mentioning(home)) == before
        assert tree.tree()["node_pid"] == tree.node_pid
    assert not processes_mentioning(home)
