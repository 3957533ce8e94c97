"""Properties of manifest and supervision loading (theater_otp/config/loader.py).

Documents are generated from the real keys (every manifest key, every handler setting, every
supervisor flag and child-spec field) with values of the right type, boundary values and values
of any other type (strings with placeholders, NUL, `~user`, paths to files, directories and
devices; ints at and past every limit; floats, dates, arrays, tables), written out as TOML (with
`[table]` and `[[array]]` headers like a person writes it), then also mangled as text. Whatever
the document, `load_manifest` / `load_supervision` returns a record or raises ConfigError naming
the file: never another exception.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theater_otp.config import ActorManifest, ChildSpec
from theater_otp.config.loader import load_manifest, load_supervision
from theater_otp.errors import ConfigError
from theater_otp.worker.handlers import MANIFEST_TYPES

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- a TOML writer (the documents are built as data, then written as text) -------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    return key if _BARE.match(key) else toml_str(key)


def toml_str(text: str) -> str:
    # JSON's escapes are TOML's (\" \\ \n \t \uXXXX); TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"  # inf, nan, 1e+20, 1.5
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_doc(table: dict, prefix: tuple[str, ...] = ()) -> str:
    """Plain keys first, then `[sub.tables]`, then `[[arrays.of.tables]]`."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in table.items():
        if isinstance(v, dict):
            path = prefix + (k,)
            lines += ["", "[" + ".".join(map(toml_key, path)) + "]", toml_doc(v, path)]
    for k, v in table.items():
        if _is_table_array(v):
            path = prefix + (k,)
            for item in v:
                lines += ["", "[[" + ".".join(map(toml_key, path)) + "]]", toml_doc(item, path)]
    return "\n".join(lines)


# ---- values ------------------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
path_like = st.sampled_from([
    "c.wasm", "m.toml", "state.txt", "dir", "missing.toml", "bad.toml", "supervision.toml", ".", "..", "/",
    "/dev/null", "/dev/zero", "~", "~/x", "~nosuchuser-zz/x", "a\x00b", "dir/../c.wasm", "", " ", "\n",
    "${HOME}", "${NOT_SET_ANYWHERE_ZZ}", "${1X}", "${A-x}", "${UNCLOSED", "$${HOME}", "${NOW}", "${UUID}",
    "${NOT_SET_ANYWHERE_ZZ:-c.wasm}", "x" * 300,
])
strings = path_like | text
ints = st.sampled_from([-(2**63), -1, 0, 1, 2, 1023, 1024 * 1024, 65535, 65536, 100_000, 3_600_000,
                        2**31 - 1, 2**31, 2**32, 2**53, 2**53 + 1, 2**63 - 1]) | st.integers(-(2**63), 2**63 - 1)
scalars = (strings | ints | st.booleans() | st.floats()
           | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)) | st.dates())
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(["file", "initial", "a", "type"]) | text, inner,
                                          max_size=3), max_leaves=8)


def field(good: st.SearchStrategy) -> st.SearchStrategy:
    """A key's value: mostly one of the right kind, sometimes anything at all."""
    return st.one_of(good, good, anything)


ENUMS = ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one", "never", "any_significant",
         "all_significant", "permanent", "transient", "temporary", "worker", "supervisor", "brutal_kill",
         "infinity"]
enum_like = st.sampled_from(ENUMS) | text

SETTING_KEYS = ["allowed_commands", "allowed_hosts", "allowed_vars", "child_restart", "follow_redirects",
                "hold_ms", "host", "max_body_bytes", "max_bytes", "max_connections", "max_header_bytes",
                "max_message_bytes", "max_read_bytes", "max_request_bytes", "max_response_bytes", "max_routes",
                "max_servers", "max_sleep_duration", "min_sleep_duration", "new_dir", "path", "port", "ports",
                "quota_bytes", "read_only", "request_timeout_ms", "seed", "stores", "timeout_ms", "vars",
                "strategy", "intensity", "period", "auto_shutdown", "backoff", "unknown_setting"]
setting_value = field(
    ints | st.booleans() | enum_like | strings
    | st.lists(st.sampled_from(["127.0.0.1", "*.example.com", "example.com:80", "LOG_LEVEL", "1BAD", "notes",
                                "read-file", "ls", "", "*"]) | text, max_size=3)
    | st.lists(ints, min_size=0, max_size=3)
    | st.dictionaries(st.sampled_from(["MODE", "1X", "A B", "initial_ms", "max_ms", "reset_after_s"]) | text,
                      ints | strings, max_size=3))

handler_type = st.sampled_from(MANIFEST_TYPES) | st.sampled_from(["STORE", "Timing", "nope", ""]) | anything
handler_table = st.builds(lambda t, s: {"type": t, **s}, handler_type,
                          st.dictionaries(st.sampled_from(SETTING_KEYS) | text, setting_value, max_size=4))
seed_handler_table = st.builds(lambda t, s: {"type": t, "config": s}, handler_type,
                               field(st.dictionaries(st.sampled_from(SETTING_KEYS), setting_value, max_size=3)))
limits_table = st.dictionaries(
    st.sampled_from(["memory_bytes", "cpu_ms", "message_bytes", "mailbox", "log_bytes_per_s", "nope"]),
    field(ints), max_size=4)
initial_state = field(strings | st.fixed_dictionaries({"file": path_like}) | st.fixed_dictionaries({"file": ints}))

manifests = st.fixed_dictionaries(
    {"name": field(st.sampled_from(["counter", "a"]) | text),
     "component": field(st.sampled_from(["c.wasm"]) | path_like)},
    optional={
        "component_path": field(path_like),
        "version": field(strings),
        "description": field(strings),
        "initial_state": initial_state,
        "init_state": initial_state,
        "state": field(st.fixed_dictionaries({"initial": initial_state})),
        "handler": field(st.lists(handler_table, max_size=3)),
        "handlers": field(st.lists(seed_handler_table, max_size=2)),
        "limits": field(limits_table),
        "interface": field(st.fixed_dictionaries({"implements": field(st.lists(
            st.sampled_from(["actor", "theater:simple/actor@1.0", "http-server", "nope"]), max_size=2))})),
        "build": field(st.dictionaries(st.sampled_from(["source", "module", "world", "wit"]), field(path_like),
                                       max_size=2)),
        "extra": anything,
    })

backoff = field(st.booleans() | st.dictionaries(
    st.sampled_from(["initial_ms", "max_ms", "reset_after_s", "jitter"]), field(ints), max_size=3))
FLAGS = {"strategy": field(enum_like), "intensity": field(ints), "period": field(ints),
         "auto_shutdown": field(enum_like), "backoff": backoff}
CHILD_FIELDS = {"id": field(st.sampled_from(["a", "b", "team", "a.b-c_1"]) | text),
                "manifest": field(path_like), "type": field(enum_like), "restart": field(enum_like),
                "shutdown": field(ints | enum_like), "significant": field(st.booleans())}


def supervisor_table(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={**FLAGS, **CHILD_FIELDS, "children": field(children)})


children = st.recursive(
    st.lists(st.fixed_dictionaries({}, optional=CHILD_FIELDS), max_size=3),
    lambda inner: st.lists(supervisor_table(inner) | st.fixed_dictionaries({}, optional=CHILD_FIELDS), max_size=3),
    max_leaves=6)
supervisions = st.fixed_dictionaries({}, optional={"supervisor": field(supervisor_table(children)),
                                                   "extra": anything})


def mangle(doc: str, data) -> str:
    """Cut a span out, or splice random text in, at random places."""
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(doc)))
        if data.draw(st.booleans()):
            doc = doc[:at] + doc[at + data.draw(st.integers(1, 8)):]
        else:
            doc = doc[:at] + data.draw(st.sampled_from(["[", "]]", "=", "\"", "\n", "{", "}", ",", "#", "'''",
                                                        "[[supervisor.children]]\n", "[handler]\n", "\x00"])
                                       | text) + doc[at:]
    return doc


# ---- the files a document may refer to -----------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("config-props")
    (d / "c.wasm").write_bytes(b"\0asm")  # the loader only checks that the component file exists
    (d / "state.txt").write_text("0")
    (d / "dir").mkdir()
    (d / "bad.toml").write_text("name = \n")
    (d / "m.toml").write_text('name = "m"\ncomponent = "c.wasm"\n')
    return d


def loads_or_refuses(load, path, doc: str):
    """The property: a record, or a ConfigError that names the file (a manifest's own, or for a
    supervision file, it or a manifest it names); any other exception fails."""
    path.write_text(doc, encoding="utf-8")
    try:
        return load(path)
    except ConfigError as exc:
        assert str(exc).startswith(exc.file), f"a ConfigError that does not start with its file: {exc}"
        if load is load_manifest:
            assert exc.file == str(path.resolve()), f"a ConfigError that does not name the manifest: {exc}"
        return None


@SETTINGS
@given(manifests)
def test_a_generated_manifest_loads_or_is_a_config_error(folder, doc):
    result = loads_or_refuses(load_manifest, folder / "manifest.toml", toml_doc(doc))
    assert result is None or isinstance(result, ActorManifest)


@SETTINGS
@given(supervisions)
def test_a_generated_supervision_file_loads_or_is_a_config_error(folder, doc):
    result = loads_or_refuses(load_supervision, folder / "supervision.toml", toml_doc(doc))
    assert result is None or isinstance(result, ChildSpec)


@SETTINGS
@given(st.data())
def test_a_mangled_document_loads_or_is_a_config_error(folder, data):
    if data.draw(st.booleans()):
        loads_or_refuses(load_manifest, folder / "manifest.toml", mangle(toml_doc(data.draw(manifests)), data))
    else:
        loads_or_refuses(load_supervision, folder / "supervision.toml",
                         mangle(toml_doc(data.draw(supervisions)), data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.text(st.sampled_from('[]{}=",.\n #\'abc123_-supervisor'), max_size=80))
def test_random_text_loads_or_is_a_config_error(folder, doc):
    loads_or_refuses(load_manifest, folder / "manifest.toml", doc)
    loads_or_refuses(load_supervision, folder / "supervision.toml", doc)


# every key whose value is a path, in a document otherwise valid, so the path is what gets read
PATH_KEYS = {
    "component": lambda v: {"name": "a", "component": v},
    "component_path": lambda v: {"name": "a", "component_path": v},
    "initial_state.file": lambda v: {"name": "a", "component": "c.wasm", "initial_state": {"file": v}},
    "filesystem path": lambda v: {"name": "a", "component": "c.wasm", "handler": [{"type": "filesystem", "path": v}]},
    "build.source": lambda v: {"name": "a", "component": "c.wasm", "build": {"source": v, "wit": v}},
    "manifest": lambda v: {"supervisor": {"children": [{"id": "a", "manifest": v}]}},
}


@SETTINGS
@given(st.sampled_from(sorted(PATH_KEYS)), path_like | text)
def test_any_string_where_a_path_belongs_loads_or_is_a_config_error(folder, key, value):
    doc = toml_doc(PATH_KEYS[key](value))
    if key == "manifest":
        loads_or_refuses(load_supervision, folder / "supervision.toml", doc)
    else:
        loads_or_refuses(load_manifest, folder / "manifest.toml", doc)


def test_the_writer_writes_what_tomli_reads(folder):
    """The generator's TOML writer is right, so the documents reach the loader as generated."""
    import tomli
    doc = {"name": "a\x7fb\"\\\n", "n": -(2**63), "f": 1e300, "i": float("inf"), "d": dt.date(2024, 2, 29),
           "handler": [{"type": "store", "stores": ["x"], "config": {"k": [1, "a", {"b": True}]}}],
           "limits": {"cpu_ms": 5, "weird key": {"x": []}}, "e": []}
    assert tomli.loads(toml_doc(doc)) == doc
    loaded = loads_or_refuses(load_manifest, folder / "manifest.toml",
                              toml_doc({"name": "m", "component": "c.wasm", "initial_state": {"file": "state.txt"},
                                        "handler": [{"type": "store", "stores": ["notes"]}],
                                        "limits": {"cpu_ms": 10}}))
    assert isinstance(loaded, ActorManifest) and loaded.initial_state == b"0" and loaded.limits.cpu_ms == 10
