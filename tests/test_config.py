"""supervision.toml and actor manifests: what loads, and how bad input is refused.

Every refusal is a ConfigError that locates the problem (file, dotted key, line when
the parser can know it) and says what is expected instead (issue: "one clear line
naming the file, the line (or key) and what to change"). Flag and child-spec checks
follow OTP (spec/otp-supervisor.md §1.9, §1.10), in OTP's order.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from theater_otp.config import (
    AutoShutdown,
    ChildType,
    HandlerConfig,
    RestartType,
    Shutdown,
    Strategy,
)
from theater_otp.config.loader import load_manifest, load_supervision
from theater_otp.config.model import BRUTAL_KILL, INFINITY, WORKER_DEFAULT_SHUTDOWN
from theater_otp.errors import ConfigError

pytestmark = pytest.mark.unit

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"


# ---- helpers ---------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path.resolve()


def line_no(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle`."""
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not found {occurrence} time(s) in {path}"
    return hits[occurrence - 1]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A valid echo manifest next to the supervision.toml."""
    return write(tmp_path / "echo.toml", f"""
        name = "echo"
        component = "{WAT / 'echo.wat'}"
    """)


def sup(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "supervision.toml", body)


def refuse(path: Path, loader=load_supervision) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader(path)
    err = info.value
    assert "\n" not in str(err), f"error is not one line: {str(err)!r}"
    return err


def assert_located(err: ConfigError, file: Path, key: str | None, line: int | None) -> None:
    assert err.file == str(file), err
    assert err.key == key, err
    assert err.line == line, err
    rendered = str(err)
    assert rendered.startswith(str(file) + (f":{line}" if line else "")), rendered
    if key:
        assert key in rendered, rendered


# ---- valid files give the right records ------------------------------------------------------

def test_defaults_follow_otp(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]

        [[supervisor.children]]
        id = "w"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "team"
        type = "supervisor"
    """)
    root = load_supervision(cfg)
    assert root.id == "root"
    assert root.type is ChildType.SUPERVISOR
    assert root.flags.strategy is Strategy.ONE_FOR_ONE
    assert root.flags.intensity == 1
    assert root.flags.period == 5
    assert root.flags.auto_shutdown is AutoShutdown.NEVER
    worker, team = root.children
    assert worker.id == "w" and worker.type is ChildType.WORKER
    assert worker.restart is RestartType.PERMANENT
    assert worker.shutdown == WORKER_DEFAULT_SHUTDOWN == Shutdown.timeout(5000)
    assert worker.significant is False
    assert worker.manifest.name == "echo"
    assert worker.manifest.component == (WAT / "echo.wat").resolve()
    assert worker.manifest.source == manifest
    assert team.type is ChildType.SUPERVISOR
    assert team.restart is RestartType.PERMANENT
    assert team.shutdown == INFINITY
    assert team.children == ()


def test_supervisor_type_is_inferred_from_children_or_strategy(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "a"
        strategy = "one_for_all"
        [[supervisor.children]]
        id = "b"
        [[supervisor.children.children]]
        id = "w"
        manifest = "echo.toml"
    """)
    a, b = load_supervision(cfg).children
    assert a.type is ChildType.SUPERVISOR and a.flags.strategy is Strategy.ONE_FOR_ALL
    assert b.type is ChildType.SUPERVISOR and [c.id for c in b.children] == ["w"]


def test_explicit_values_are_kept(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        id = "top"
        strategy = "rest_for_one"
        intensity = 0
        period = 30
        auto_shutdown = "any_significant"

        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
        restart = "transient"
        significant = true
        shutdown = 0

        [[supervisor.children]]
        id = "b"
        manifest = "echo.toml"
        restart = "temporary"
        shutdown = "brutal_kill"

        [[supervisor.children]]
        id = "c"
        manifest = "echo.toml"
        shutdown = "infinity"

        [[supervisor.children]]
        id = "d"
        type = "supervisor"
        strategy = "simple_one_for_one"
        shutdown = 2500

        [[supervisor.children.children]]
        id = "tmpl"
        manifest = "echo.toml"
        restart = "temporary"
    """)
    root = load_supervision(cfg)
    assert root.id == "top"
    assert root.flags.strategy is Strategy.REST_FOR_ONE
    assert (root.flags.intensity, root.flags.period) == (0, 30)
    assert root.flags.auto_shutdown is AutoShutdown.ANY_SIGNIFICANT
    a, b, c, d = root.children
    assert a.restart is RestartType.TRANSIENT and a.significant is True and a.shutdown == Shutdown.timeout(0)
    assert b.restart is RestartType.TEMPORARY and b.shutdown == BRUTAL_KILL
    assert c.shutdown == INFINITY
    assert d.type is ChildType.SUPERVISOR and d.flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE
    assert d.shutdown == Shutdown.timeout(2500)
    assert [t.id for t in d.children] == ["tmpl"]


def test_same_id_in_different_subtrees_is_allowed(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "x"
        [[supervisor.children.children]]
        id = "w"
        manifest = "echo.toml"
        [[supervisor.children]]
        id = "w"
        manifest = "echo.toml"
    """)
    assert [c.id for c in load_supervision(cfg).children] == ["x", "w"]


def test_manifest_paths_resolve_against_their_own_folder(tmp_path):
    actors = tmp_path / "actors"
    actors.mkdir()
    (actors / "echo.wat").write_text((WAT / "echo.wat").read_text())
    write(actors / "echo.toml", """
        name = "echo"
        component = "echo.wat"
    """)
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "e"
        manifest = "actors/echo.toml"
    """)
    m = load_supervision(cfg).children[0].manifest
    assert m.source == (actors / "echo.toml").resolve()
    assert m.component == (actors / "echo.wat").resolve()


def test_manifest_fields(tmp_path):
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "counter"
        version = "1.2.3"
        description = "counts"
        component = "{WAT / 'counter.wat'}"
    """))
    assert (m.name, m.version, m.description) == ("counter", "1.2.3", "counts")
    assert m.component == (WAT / "counter.wat").resolve()
    assert m.initial_state is None
    assert m.handlers == ()


def test_component_path_is_accepted(tmp_path):
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "echo"
        component_path = "{WAT / 'echo.wat'}"
    """))
    assert m.component == (WAT / "echo.wat").resolve()


def test_handler_and_handlers_tables_are_both_accepted(tmp_path):
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "pump"
        component = "{WAT / 'pump.wat'}"

        [[handlers]]
        type = "timing"
        config = {{ max_sleep_duration = 1000 }}

        [[handler]]
        type = "supervisor"
        strategy = "one_for_all"

        [[handler]]
        type = "runtime"
    """))
    by_type = {h.type: h for h in m.handlers}
    assert set(by_type) == {"timing", "supervisor", "runtime"}
    assert by_type["timing"] == HandlerConfig("timing", (("max_sleep_duration", 1000),))
    assert by_type["timing"].get("max_sleep_duration") == 1000
    assert by_type["timing"].settings.max_sleep_ms == 1000
    assert by_type["supervisor"].settings.flags.strategy is Strategy.ONE_FOR_ALL
    assert by_type["supervisor"].settings.child_restart is RestartType.PERMANENT
    assert by_type["runtime"].config == ()
    assert m.handler("timing") is by_type["timing"]
    assert m.handler("message-server") is None


def test_unknown_handler_setting_is_refused_with_its_line_and_the_known_ones(tmp_path):
    path = write(tmp_path / "a.toml", f"""
        name = "pump"
        component = "{WAT / 'pump.wat'}"

        [[handler]]
        type = "timing"
        max_sleep_ms = 1000
    """)
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert exc.value.key == "handler[0].max_sleep_ms"
    assert exc.value.line == line_no(path, "max_sleep_ms")
    assert "unknown setting 'max_sleep_ms': expected max_sleep_duration, min_sleep_duration" in exc.value.message


def test_a_handler_setting_of_the_wrong_type_is_refused(tmp_path):
    path = write(tmp_path / "a.toml", f"""
        name = "pump"
        component = "{WAT / 'pump.wat'}"

        [[handler]]
        type = "message-server"
        request_timeout_ms = "soon"
    """)
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert exc.value.key == "handler[0].request_timeout_ms"
    assert exc.value.line == line_no(path, "request_timeout_ms")
    assert "'soon' is not valid: expected an integer >= 1" in exc.value.message


def test_a_handler_listed_twice_is_refused(tmp_path):
    path = write(tmp_path / "a.toml", f"""
        name = "pump"
        component = "{WAT / 'pump.wat'}"

        [[handler]]
        type = "timing"

        [[handlers]]
        type = "timing"
    """)
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert exc.value.key == "handlers[0].type"
    assert "listed twice (first as handler[0])" in exc.value.message


def test_initial_state_as_string(tmp_path):
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "counter"
        component = "{WAT / 'counter.wat'}"
        initial_state = "41"
    """))
    assert m.initial_state == b"41"


def test_initial_state_from_file(tmp_path):
    (tmp_path / "state.bin").write_bytes(b"\x00\x01state\xff")
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "echo"
        component = "{WAT / 'echo.wat'}"
        initial_state = {{ file = "state.bin" }}
    """))
    assert m.initial_state == b"\x00\x01state\xff"


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "too big", "missing"])
def test_an_initial_state_file_that_is_no_small_regular_file_is_refused_at_once(tmp_path, kind):
    """Issue 12: a FIFO as initial_state hung `up`; /dev/zero ended in a MemoryError."""
    import os

    target = {"fifo": "state.fifo", "device": "/dev/zero", "directory": "adir", "too big": "big.bin",
              "missing": "nope.bin"}[kind]
    if kind == "fifo":
        os.mkfifo(tmp_path / target)
    elif kind == "directory":
        (tmp_path / target).mkdir()
    elif kind == "too big":
        (tmp_path / target).write_bytes(b"x" * (2 * 1024 * 1024 + 1))
    path = write(tmp_path / "a.toml", f"""
        name = "echo"
        component = "{WAT / 'echo.wat'}"
        initial_state = {{ file = "{target}" }}
    """)
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert exc.value.key == "initial_state.file"
    why = {"fifo": "not a regular file", "device": "not a regular file", "directory": "not a regular file",
           "too big": "over the 2097152 bytes", "missing": "No such file"}[kind]
    assert why in exc.value.message


def test_seed_state_table_is_accepted(tmp_path):
    m = load_manifest(write(tmp_path / "a.toml", f"""
        name = "counter"
        component = "{WAT / 'counter.wat'}"

        [state]
        initial = "7"
    """))
    assert m.initial_state == b"7"


# ---- malformed TOML --------------------------------------------------------------------------

def test_malformed_supervision_toml_names_file_and_line(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        strategy = "one_for_one"

        [[supervisor.children]]
        id = "a
        manifest = "echo.toml"
    """)
    err = refuse(cfg)
    assert_located(err, cfg, None, 5)
    assert "invalid TOML" in err.message


def test_malformed_manifest_toml_names_manifest_and_line(tmp_path):
    bad = write(tmp_path / "echo.toml", f"""
        name = "echo"
        component = "{WAT / 'echo.wat'}"
        initial_state = = "x"
    """)
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """)
    err = refuse(cfg)
    assert_located(err, bad, None, 3)
    assert "invalid TOML" in err.message


def test_missing_supervisor_table_is_refused(tmp_path):
    cfg = sup(tmp_path, """
        [supervison]
        strategy = "one_for_one"
    """)
    err = refuse(cfg)
    assert err.file == str(cfg) and err.key == "supervisor"
    assert "[supervisor]" in err.message


def test_missing_supervision_file_is_refused(tmp_path):
    missing = (tmp_path / "nope.toml").resolve()
    err = refuse(missing)
    assert err.file == str(missing)
    assert "not found" in err.message


# ---- flags (OTP §1.9, §1.10) -----------------------------------------------------------------

@pytest.mark.parametrize("line, key, expected", [
    ('strategy = "one_for_none"', "supervisor.strategy",
     ["'one_for_none'", "one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]),
    ("intensity = -1", "supervisor.intensity", ["-1", ">= 0"]),
    ('intensity = "3"', "supervisor.intensity", ["'3'", "integer"]),
    ("period = 0", "supervisor.period", ["0", ">= 1"]),
    ('period = "infinity"', "supervisor.period", ["'infinity'", ">= 1"]),
    ("period = 1.5", "supervisor.period", ["1.5", "integer"]),
    ('auto_shutdown = "sometimes"', "supervisor.auto_shutdown",
     ["'sometimes'", "never", "any_significant", "all_significant"]),
], ids=["unknown_strategy", "negative_intensity", "string_intensity", "zero_period",
        "infinity_period", "float_period", "unknown_auto_shutdown"])
def test_invalid_flag_is_refused_with_key_line_and_expectation(tmp_path, line, key, expected):
    cfg = sup(tmp_path, f"""
        [supervisor]
        # the root
        {line}
    """)
    err = refuse(cfg)
    assert_located(err, cfg, key, 3)
    for word in expected:
        assert word in err.message, err.message


def test_nested_supervisor_flags_are_checked(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "team"
        type = "supervisor"
        strategy = "all_for_one"
    """)
    err = refuse(cfg)
    assert_located(err, cfg, "supervisor.children[0].strategy", 5)


def test_strategy_is_checked_before_intensity(tmp_path):
    cfg = sup(tmp_path, """
        [supervisor]
        intensity = -1
        strategy = "bogus"
    """)
    assert refuse(cfg).key == "supervisor.strategy"


def test_intensity_zero_is_valid(tmp_path):
    cfg = sup(tmp_path, """
        [supervisor]
        intensity = 0
    """)
    assert load_supervision(cfg).flags.intensity == 0


# ---- child specs (OTP §1.10) -----------------------------------------------------------------

CHILD_HEAD = """
[supervisor]
auto_shutdown = "{auto}"

[[supervisor.children]]
id = "ok"
manifest = "echo.toml"

[[supervisor.children]]
"""


@pytest.mark.parametrize("fields, key, needle, expected", [
    ('id = "w"\nmanifest = "echo.toml"\nrestart = "sometimes"',
     "supervisor.children[1].restart", 'restart = "sometimes"', ["permanent", "transient", "temporary"]),
    ('id = "w"\nmanifest = "echo.toml"\nshutdown = -1',
     "supervisor.children[1].shutdown", "shutdown = -1", [">= 0", "brutal_kill", "infinity"]),
    ('id = "w"\nmanifest = "echo.toml"\nshutdown = "never"',
     "supervisor.children[1].shutdown", 'shutdown = "never"', [">= 0", "brutal_kill", "infinity"]),
    ('id = "w"\nmanifest = "echo.toml"\ntype = "daemon"',
     "supervisor.children[1].type", 'type = "daemon"', ["worker", "supervisor"]),
    ('id = "w"\nmanifest = "echo.toml"\nrestart = "transient"\nsignificant = "yes"',
     "supervisor.children[1].significant", 'significant = "yes"', ["true or false"]),
    ('id = "w w"\nmanifest = "echo.toml"',
     "supervisor.children[1].id", 'id = "w w"', ["letters, digits"]),
    ('id = "w"\nmanifest = 3',
     "supervisor.children[1].manifest", "manifest = 3", ["path"]),
], ids=["invalid_restart_type", "negative_shutdown", "unknown_shutdown_word", "invalid_child_type",
        "non_bool_significant", "invalid_id", "non_string_manifest"])
def test_invalid_child_field_is_refused_with_key_line_and_expectation(tmp_path, manifest, fields, key,
                                                                      needle, expected):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="any_significant") + fields + "\n")
    err = refuse(cfg)
    assert_located(err, cfg, key, line_no(cfg, needle))
    for word in expected:
        assert word in err.message, err.message


def test_shutdown_zero_is_valid(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never") + 'id = "w"\nmanifest = "echo.toml"\nshutdown = 0\n')
    assert load_supervision(cfg).children[1].shutdown == Shutdown.timeout(0)


def test_significant_with_auto_shutdown_never_is_refused(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never")
              + 'id = "w"\nmanifest = "echo.toml"\nrestart = "transient"\nsignificant = true\n')
    err = refuse(cfg)
    assert_located(err, cfg, "supervisor.children[1].significant", line_no(cfg, "significant = true"))
    assert "auto_shutdown" in err.message
    assert "any_significant" in err.message and "all_significant" in err.message


def test_significant_with_permanent_restart_is_refused(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="any_significant")
              + 'id = "w"\nmanifest = "echo.toml"\nsignificant = true\n')
    err = refuse(cfg)
    assert_located(err, cfg, "supervisor.children[1].significant", line_no(cfg, "significant = true"))
    assert "permanent" in err.message
    assert "transient" in err.message and "temporary" in err.message


def test_auto_shutdown_never_combination_is_reported_before_permanent_one(tmp_path, manifest):
    # OTP checks {auto_shutdown,never} x significant before {restart,permanent} x significant
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never") + 'id = "w"\nmanifest = "echo.toml"\nsignificant = true\n')
    assert "auto_shutdown" in refuse(cfg).message


def test_restart_type_is_checked_before_significant(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never")
              + 'id = "w"\nmanifest = "echo.toml"\nrestart = "bogus"\nsignificant = true\n')
    assert refuse(cfg).key == "supervisor.children[1].restart"


def test_child_without_id_is_refused(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never") + 'manifest = "echo.toml"\n')
    err = refuse(cfg)
    assert err.file == str(cfg) and err.key == "supervisor.children[1]"
    assert "id" in err.message


def test_worker_without_manifest_is_refused(tmp_path, manifest):
    cfg = sup(tmp_path, CHILD_HEAD.format(auto="never") + 'id = "w"\nrestart = "temporary"\n')
    err = refuse(cfg)
    assert err.file == str(cfg) and err.key == "supervisor.children[1]"
    assert "'w'" in err.message and "manifest = " in err.message


def test_duplicate_child_ids_are_refused(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]

        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"

        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """)
    err = refuse(cfg)
    assert err.file == str(cfg)
    assert err.key == "supervisor.children[1].id"
    # the issue asks for "the line (or key)": the key is required, a line if given must be the duplicate's
    assert err.line in (None, line_no(cfg, 'id = "a"', occurrence=2))
    assert "duplicate" in err.message and "'a'" in err.message and "unique" in err.message


def test_duplicate_child_ids_in_a_nested_supervisor_are_refused(tmp_path, manifest):
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "team"
        [[supervisor.children.children]]
        id = "x"
        manifest = "echo.toml"
        [[supervisor.children.children]]
        id = "y"
        manifest = "echo.toml"
        [[supervisor.children.children]]
        id = "x"
        manifest = "echo.toml"
    """)
    err = refuse(cfg)
    assert err.key == "supervisor.children[0].children[2].id"
    assert "duplicate" in err.message


@pytest.mark.parametrize("count", [0, 2])
def test_simple_one_for_one_needs_exactly_one_child_spec(tmp_path, manifest, count):
    children = "".join(f'[[supervisor.children]]\nid = "t{i}"\nmanifest = "echo.toml"\n' for i in range(count))
    cfg = sup(tmp_path, '[supervisor]\nstrategy = "simple_one_for_one"\n' + children)
    err = refuse(cfg)
    assert err.file == str(cfg) and err.key == "supervisor.children"
    assert "simple_one_for_one" in err.message and "exactly one" in err.message
    assert f"found {count}" in err.message


def test_children_must_be_tables(tmp_path):
    cfg = sup(tmp_path, """
        [supervisor]
        children = "a, b"
    """)
    err = refuse(cfg)
    assert err.key == "supervisor.children"
    assert "[[" in err.message


# ---- manifests -------------------------------------------------------------------------------

def test_missing_manifest_file_names_the_reference(tmp_path):
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "a"
        manifest = "nope.toml"
    """)
    err = refuse(cfg)
    missing = str((tmp_path / "nope.toml").resolve())
    rendered = str(err)
    assert missing in rendered and "not found" in rendered
    # what to change is the `manifest = ...` line of supervision.toml: name it like a missing component
    assert err.file == str(cfg), rendered
    assert err.key == "supervisor.children[0].manifest", rendered
    assert err.line == line_no(cfg, 'manifest = "nope.toml"'), rendered


def test_load_manifest_of_a_missing_file(tmp_path):
    missing = (tmp_path / "nope.toml").resolve()
    err = refuse(missing, load_manifest)
    assert err.file == str(missing)
    assert "not found" in err.message


def test_manifest_without_name_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f'component = "{WAT / "echo.wat"}"\n')
    err = refuse(m, load_manifest)
    assert err.file == str(m) and err.key == "name"
    assert "name" in err.message


def test_manifest_without_component_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", 'name = "x"\n')
    err = refuse(m, load_manifest)
    assert err.file == str(m) and err.key == "component"
    assert 'component = "' in err.message and "component_path" in err.message


@pytest.mark.parametrize("field", ["component", "component_path"])
def test_missing_component_file_names_manifest_key_and_line(tmp_path, field):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        {field} = "missing.wasm"
    """)
    err = refuse(m, load_manifest)
    assert_located(err, m, field, 2)
    assert "not found" in err.message
    assert str((tmp_path / "missing.wasm").resolve()) in err.message


def test_unknown_handler_type_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"

        [[handler]]
        type = "teleport"
    """)
    err = refuse(m, load_manifest)
    assert_located(err, m, "handler[0].type", 5)
    assert "'teleport'" in err.message
    for known in ("runtime", "message-server", "timing", "supervisor"):
        assert known in err.message


def test_unknown_handlers_type_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"

        [[handlers]]
        type = "timing"

        [[handlers]]
        type = "carrier-pigeon"
        config = {{}}
    """)
    err = refuse(m, load_manifest)
    assert_located(err, m, "handlers[1].type", 8)


def test_handler_without_type_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"

        [[handler]]
        kind = "timing"
    """)
    err = refuse(m, load_manifest)
    assert err.file == str(m) and err.key == "handler[0]"
    assert 'type = "' in err.message


def test_handler_config_must_be_a_table(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"

        [[handlers]]
        type = "timing"
        config = "fast"
    """)
    err = refuse(m, load_manifest)
    assert_located(err, m, "handlers[0].config", 6)


def test_missing_initial_state_file_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"
        initial_state = {{ file = "gone.json" }}
    """)
    err = refuse(m, load_manifest)
    assert err.file == str(m) and err.key == "initial_state.file"
    assert "gone.json" in err.message


def test_initial_state_of_another_type_is_refused(tmp_path):
    m = write(tmp_path / "a.toml", f"""
        name = "x"
        component = "{WAT / 'echo.wat'}"
        initial_state = 42
    """)
    err = refuse(m, load_manifest)
    assert_located(err, m, "initial_state", 3)
    assert "string" in err.message and "file" in err.message


def test_manifest_errors_surface_through_load_supervision(tmp_path):
    m = write(tmp_path / "echo.toml", """
        name = "x"
        component = "missing.wasm"
    """)
    cfg = sup(tmp_path, """
        [supervisor]
        [[supervisor.children]]
        id = "a"
        manifest = "echo.toml"
    """)
    err = refuse(cfg)
    assert_located(err, m, "component", 2)
