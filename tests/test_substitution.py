"""`${VAR}`, `${VAR:-default}`, `${NOW}`, `${UUID}` and `$${` in manifests and supervision.toml.

The pure function (config.substitute) is tested with an injected environment, clock
and UUID source; the loader and `theater-otp validate` are tested on real files, with
the environment set through monkeypatch (and passed explicitly to the subprocess).
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theater_otp.config.loader import load_manifest, load_supervision
from theater_otp.config.substitute import format_now, substitute
from theater_otp.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
WAT = REPO / "actors" / "wat"
CLI = REPO / ".venv" / "bin" / "theater-otp"
FIXED = datetime(2026, 12, 3, 9, 40, 0, tzinfo=timezone.utc)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Bad(Exception):
    """What the test `where` builds: (key, token, message)."""


def where(key: str, token: str, message: str) -> Bad:
    return Bad(key, token, message)


def sub(data: dict, env: dict | None = None, **kw) -> dict:
    kw.setdefault("now", lambda: FIXED)
    return substitute(data, env or {}, where, **kw)


def bad(data: dict, env: dict | None = None) -> tuple[str, str, str]:
    with pytest.raises(Bad) as info:
        sub(data, env)
    return info.value.args


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path.resolve()


def line_no(path: Path, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line)


def refuse(path: Path, loader=load_manifest) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader(path)
    assert "\n" not in str(info.value), str(info.value)
    return info.value


# ---- the pure function -------------------------------------------------------------------------

def test_plain_variable():
    assert sub({"a": "${HOST}", "b": "http://${HOST}:${PORT}/x"}, {"HOST": "h", "PORT": "80"}) == \
        {"a": "h", "b": "http://h:80/x"}


def test_default_when_unset():
    assert sub({"a": "${LEVEL:-info}", "b": "${LEVEL:-}"}) == {"a": "info", "b": ""}


def test_default_when_empty_and_value_when_set():
    assert sub({"a": "${LEVEL:-info}"}, {"LEVEL": ""}) == {"a": "info"}
    assert sub({"a": "${LEVEL:-info}"}, {"LEVEL": "debug"}) == {"a": "debug"}


def test_set_but_empty_without_default_is_empty():
    assert sub({"a": "<${E}>"}, {"E": ""}) == {"a": "<>"}


def test_unset_without_default_is_an_error():
    key, token, message = bad({"handler": [{"type": "timing", "path": "${API_KEY}"}]})
    assert key == "handler[0].path"
    assert token == "${API_KEY}"
    assert message == "${API_KEY} is not set: export API_KEY or write ${API_KEY:-default}"


def test_now_is_iso_utc_and_one_value_per_call():
    calls = []

    def clock():
        calls.append(1)
        return FIXED + timedelta(seconds=len(calls))

    out = substitute({"a": "${NOW}", "b": ["${NOW}", "at ${NOW}"]}, {}, where, now=clock)
    assert out == {"a": "2026-12-03T09:40:01Z", "b": ["2026-12-03T09:40:01Z", "at 2026-12-03T09:40:01Z"]}
    assert len(calls) == 1


def test_now_format():
    assert format_now(FIXED) == "2026-12-03T09:40:00Z"
    assert format_now(datetime(2026, 12, 3, 10, 40, 0, 999, tzinfo=timezone(timedelta(hours=1)))) == \
        "2026-12-03T09:40:00Z"
    assert format_now(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive = UTC
    real = substitute({"t": "${NOW}"}, {}, where)["t"]
    assert ISO_UTC.match(real), real
    moment = datetime.strptime(real, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=1)


def test_uuid_distinct_per_occurrence():
    out = substitute({"a": "${UUID}", "b": ["${UUID} ${UUID}"], "c": {"d": "${UUID}"}}, {}, where)
    values = [out["a"], *out["b"][0].split(" "), out["c"]["d"]]
    assert len(set(values)) == 4
    assert all(uuid.UUID(v).version == 4 for v in values)
    counter = iter(range(10))
    assert sub({"a": "${UUID}-${UUID}"}, new_uuid=lambda: next(counter)) == {"a": "0-1"}


def test_reserved_names_are_not_overridden_by_the_environment():
    env = {"NOW": "yesterday", "UUID": "fixed"}
    out = sub({"a": "${NOW}", "b": "${UUID}", "c": "${NOW:-x}"}, env, new_uuid=lambda: "fresh")
    assert out == {"a": "2026-12-03T09:40:00Z", "b": "fresh", "c": "2026-12-03T09:40:00Z"}


def test_escape():
    env = {"HOME": "/root"}
    assert sub({"a": "$${HOME}", "b": "cost $${X:-1} and ${HOME}"}, env) == \
        {"a": "${HOME}", "b": "cost ${X:-1} and /root"}
    # `$${` is the only escape: every other `$` stays as written
    assert sub({"a": "$HOME $$ a$b $", "b": "$${}"}, env) == {"a": "$HOME $$ a$b $", "b": "${}"}


def test_nested_tables_and_arrays_keys_untouched_non_strings_untouched():
    data = {
        "${A}": "${A}",
        "t": {"u": {"v": ["${A}", ["x${A}", {"w": "${B:-b}"}]]}},
        "n": 3, "f": 1.5, "yes": True, "when": FIXED, "empty": [],
    }
    before = repr(data)
    out = sub(data, {"A": "a"})
    assert out == {
        "${A}": "a",
        "t": {"u": {"v": ["a", ["xa", {"w": "b"}]]}},
        "n": 3, "f": 1.5, "yes": True, "when": FIXED, "empty": [],
    }
    assert repr(data) == before  # the input is not modified
    assert out is not data


def test_keys_in_errors_are_dotted_paths():
    assert bad({"t": {"u": [[0, {"w": "${NOPE}"}]]}})[0] == "t.u[0][1].w"
    assert bad({"supervisor": {"children": [{"id": "a"}, {"manifest": "${NOPE}/x"}]}})[0] == \
        "supervisor.children[1].manifest"


@pytest.mark.parametrize("text, token, words", [
    ("${}", "${}", "is not a valid placeholder"),
    ("a${1X}b", "${1X}", "is not a valid placeholder"),
    ("${A B}", "${A B}", "is not a valid placeholder"),
    ("${A-x}", "${A-x}", "is not a valid placeholder"),
    ("${A:?x}", "${A:?x}", "is not a valid placeholder"),
    ("x ${FOO", "${FOO", "has no closing '}'"),
    ("${FOO\nbar", "${FOO", "has no closing '}'"),
    ("${A:-${B}}", "${A:-${B}", "placeholders do not nest"),
])
def test_malformed_placeholders(text, token, words):
    key, got_token, message = bad({"k": text}, {"A": "a", "FOO": "f"})
    assert (key, got_token) == ("k", token)
    assert words in message
    assert "\n" not in message


# ---- properties ----------------------------------------------------------------------------------

no_dollar = st.text(alphabet=st.characters(blacklist_characters="$"))
toml_like = st.recursive(
    no_dollar | st.integers() | st.booleans(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), toml_like, max_size=5))
def test_property_strings_without_dollar_are_unchanged(data):
    assert sub(data) == data


@settings(max_examples=200, deadline=None)
@given(value=st.text(), prefix=no_dollar, suffix=no_dollar)
def test_property_values_are_never_expanded_again(value, prefix, suffix):
    env = {"V": value, "X": "expanded!", "NOW": "no"}
    assert sub({"k": f"{prefix}${{V}}{suffix}"}, env) == {"k": prefix + value + suffix}
    assert sub({"k": "${MISSING:-" + value.replace("}", "").replace("${", "") + "}"}, env) == \
        {"k": value.replace("}", "").replace("${", "")}


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="${}AX:-"))
def test_property_anything_either_substitutes_or_raises_where(text):
    try:
        out = sub({"k": text}, {"A": "${X}", "X": "x"})
    except Bad as exc:
        assert exc.args[0] == "k" and exc.args[1] in text
    else:
        assert isinstance(out["k"], str)


# ---- through the loader: manifests -----------------------------------------------------------------

def test_manifest_values_and_initial_state(tmp_path, monkeypatch):
    monkeypatch.setenv("WAT_DIR", str(WAT))
    monkeypatch.setenv("START", "42")
    monkeypatch.delenv("DESCR", raising=False)
    path = write(tmp_path / "manifest.toml", """
        name = "counter"
        component = "${WAT_DIR}/counter.wat"
        description = "${DESCR:-a counter} $${not expanded}"
        initial_state = "${START}"
    """)
    m = load_manifest(path)
    assert m.component == WAT / "counter.wat"
    assert m.description == "a counter ${not expanded}"
    assert m.initial_state == b"42"


def test_manifest_handler_tables_are_substituted(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDLER", "supervisor")
    monkeypatch.setenv("STRATEGY", "one_for_all")
    path = write(tmp_path / "manifest.toml", f"""
        name = "n"
        component = "{WAT / 'counter.wat'}"

        [[handler]]
        type = "${{HANDLER}}"
        strategy = "${{STRATEGY:-one_for_one}}"
    """)
    (handler,) = load_manifest(path).handlers
    assert handler.type == "supervisor"
    assert dict(handler.config)["strategy"] == "one_for_all"


def test_unset_variable_names_file_key_line_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("API_KEY", raising=False)
    path = write(tmp_path / "manifest.toml", f"""
        # an actor that needs ${{API_KEY}} to be exported
        name = "n"
        component = "{WAT / 'counter.wat'}"

        [[handler]]
        type = "timing"
        path = "${{API_KEY}}"
    """)
    err = refuse(path)
    line = line_no(path, 'path = "${API_KEY}"')
    assert line == 7
    assert (err.file, err.key, err.line) == (str(path), "handler[0].path", line)
    assert str(err) == (f"{path}:7: handler[0].path: ${{API_KEY}} is not set: "
                        "export API_KEY or write ${API_KEY:-default}")


def test_line_falls_back_to_first_occurrence_when_no_key_matches(tmp_path, monkeypatch):
    monkeypatch.delenv("ARG", raising=False)
    path = write(tmp_path / "manifest.toml", """
        name = "n"
        component = "x.wat"
        args = [
            "--flag",
            "${ARG}",
        ]
        other = "$${ARG}"
    """)
    err = refuse(path)
    assert (err.key, err.line) == ("args[1]", line_no(path, '    "${ARG}"'))


def test_escaped_placeholder_is_not_taken_for_the_line(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKEN", raising=False)
    path = write(tmp_path / "manifest.toml", """
        help = "write $${TOKEN} to read the environment"
        name = "${TOKEN}"
    """)
    err = refuse(path)
    assert (err.key, err.line) == ("name", 2)


@pytest.mark.parametrize("placeholder, words", [
    ("${}", "${} is not a valid placeholder"),
    ("${1X}", "${1X} is not a valid placeholder"),
    ("${FOO", "${FOO has no closing '}'"),
])
def test_malformed_placeholder_in_a_file(tmp_path, placeholder, words):
    path = write(tmp_path / "manifest.toml", f"""
        name = "n"
        component = "{WAT / 'counter.wat'}"
        description = "see {placeholder}"
    """)
    err = refuse(path)
    assert (err.file, err.key, err.line) == (str(path), "description", 3)
    assert str(err).startswith(f"{path}:3: description: {words}")


# ---- through the loader: supervision.toml ----------------------------------------------------------

def test_supervision_child_manifest_path(tmp_path, monkeypatch):
    actors = tmp_path / "actors"
    actors.mkdir()
    write(actors / "x.toml", f"""
        name = "x"
        component = "{WAT / 'counter.wat'}"
    """)
    monkeypatch.setenv("DIR", str(actors))
    monkeypatch.setenv("STRATEGY", "one_for_all")
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]
        strategy = "${STRATEGY}"
        intensity = 2

        [[supervisor.children]]
        id = "x"
        manifest = "${DIR}/x.toml"
    """)
    root = load_supervision(cfg)
    assert root.flags.strategy.value == "one_for_all"
    (child,) = root.children
    assert child.manifest.name == "x"
    assert child.manifest.source == (actors / "x.toml").resolve()


def test_supervision_unset_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DIR", raising=False)
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]

        [[supervisor.children]]
        id = "x"
        manifest = "${DIR}/x.toml"
    """)
    err = refuse(cfg, load_supervision)
    assert (err.file, err.key, err.line) == (str(cfg), "supervisor.children[0].manifest", 5)
    assert "${DIR} is not set: export DIR or write ${DIR:-default}" in str(err)


def test_child_manifest_errors_name_the_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv("NAME_OF_X", raising=False)
    manifest = write(tmp_path / "x.toml", f"""
        name = "${{NAME_OF_X}}"
        component = "{WAT / 'counter.wat'}"
    """)
    cfg = write(tmp_path / "supervision.toml", """
        [supervisor]
        [[supervisor.children]]
        id = "x"
        manifest = "x.toml"
    """)
    err = refuse(cfg, load_supervision)
    assert (err.file, err.key, err.line) == (str(manifest), "name", 1)


# ---- through the real CLI: `theater-otp validate` ----------------------------------------------------

def validate(path: Path, **env: str | None) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    for name, value in env.items():
        environ.pop(name, None)
        if value is not None:
            environ[name] = value
    return subprocess.run([str(CLI), "validate", str(path)], capture_output=True, text=True,
                          timeout=120, env=environ)


def test_validate_reports_unset_variable_with_file_and_line(tmp_path):
    path = write(tmp_path / "manifest.toml", f"""
        name = "counter"
        component = "{WAT / 'counter.wat'}"
        initial_state = "${{START_AT}}"
    """)
    proc = validate(path, START_AT=None)
    report = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 1, report
    assert "Traceback" not in proc.stderr, report
    assert (f"error: {path}:3: initial_state: ${{START_AT}} is not set: "
            "export START_AT or write ${START_AT:-default}") in proc.stderr.splitlines(), report


def test_validate_accepts_the_file_once_the_variable_is_set(tmp_path):
    path = write(tmp_path / "manifest.toml", """
        name = "counter"
        component = "${WAT_DIR}/counter.wat"
        initial_state = "${START_AT:-0}"
    """)
    proc = validate(path, WAT_DIR=str(WAT), START_AT=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {path}"), proc.stdout
