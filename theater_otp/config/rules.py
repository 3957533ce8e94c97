"""Every rule of supervision.toml and actor manifests, in one place.

Three readers apply these rules, and none has rules of its own:

* the loader (`config.loader`: `up`, `start-child`, the node) builds the
  records and stops at the first broken rule, in OTP's order (flags first,
  then each child spec field by field, then duplicate ids);
* `validate` (`pyactor.checks`) runs the same functions over the same files
  and collects every broken rule, each with its file, key and line;
* `build` (`pyactor.build`) reads the manifest keys it needs (name,
  component, `[build]`, the grant, `[interface]`) through them.

`Problems` is the only difference between them: it raises the first
`ConfigError`, or collects them all and lets reading go on without the
broken value. Two kinds of rule live next door and are only called from
here: each handler's settings, read by its own module through the registry
(`parse_handler_settings`), and supervisor flags (`fields.parse_flags`),
which the supervisor handler reads too and which therefore may not import
the registry.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, TypeVar

import tomli

from ..errors import ConfigError
from ..worker.handlers import ALWAYS_GRANTED, MANIFEST_TYPES, PACKAGE, parse_handler_settings
from ..worker.handlers.base import MAX_LIST_BYTES
from .fields import Fields, Where, parse_flags, read_enum
from .model import (
    BRUTAL_KILL,
    INFINITY,
    WORKER_DEFAULT_SHUTDOWN,
    ActorLimits,
    ActorManifest,
    AutoShutdown,
    ChildSpec,
    ChildType,
    HandlerConfig,
    RestartType,
    Shutdown,
    Strategy,
    SupFlags,
)
from .source import Source, Table

T = TypeVar("T")


class Problems:
    """Where broken rules go.

    `Problems()` (the loader) raises the first one. `Problems(collect=True)`
    (validate, build) keeps each in `found` and the reader goes on without
    the broken value. Invariant: `found` is empty unless `collect`.
    """

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.found: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        if not self.collect:
            raise error
        self.found.append(error)

    def check(self, read: Callable[[], T]) -> T | None:
        """`read()`, or None when it broke a rule (and `found` holds why)."""
        try:
            return read()
        except ConfigError as exc:
            if not self.collect:
                raise
            self.found.append(exc)
            return None


def usable_path(src: Source, key: str, ref: str) -> Path:
    """`ref` (the value at `key`) resolved against the folder of `src`'s file. A path the system
    cannot even look up (a name too long, a NUL byte) breaks the rule; whether it exists is the
    caller's rule."""
    try:
        path = (src.path.parent / ref).resolve()
        path.exists()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise src.error(key, f"{ref!r} is not a usable path: {why}", ref) from None
    return path


# ---- which file is which -------------------------------------------------------------------------

_SUPERVISOR_HEADER = re.compile(r"^\s*\[supervisor\]", re.M)


def is_supervision(path: Path) -> bool:
    """A supervision.toml (it has a `[supervisor]` table) rather than an actor manifest; a file that
    is not valid TOML counts as one when a line opens `[supervisor]`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return isinstance(tomli.loads(text).get("supervisor"), dict)
    except tomli.TOMLDecodeError:
        return _SUPERVISOR_HEADER.search(text) is not None


def has_build_table(manifest: Path) -> bool:
    """A manifest with a `[build]` table (a Python actor `build` makes); False when unreadable."""
    try:
        return isinstance(tomli.loads(Path(manifest).read_text(encoding="utf-8")).get("build"), dict)
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError):
        return False


# ---- supervision.toml ----------------------------------------------------------------------------

#: A child id: letters, digits, '_', '-' or '.'.
ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

#: What a reader does with the manifest a worker child names (its resolved path): the loader loads it
#: (and raises its first broken rule); validate and build note the path and return None.
ManifestReader = Callable[[Path], ActorManifest | None]


def declared_child_type(table: Table) -> object:
    """`type` as written; when absent, a table with `children` or `strategy` is a supervisor."""
    declared = table.get("type")
    if declared is None:
        return "supervisor" if "children" in table or "strategy" in table else "worker"
    return declared


def _child_id(src: Source, table: Table, key: str) -> str:
    child_id = table.get("id")
    if child_id is None:
        raise src.error(key, "missing `id`: every child needs a unique id")
    if not isinstance(child_id, str) or not ID_RE.match(child_id):
        raise src.error(f"{key}.id", f"{child_id!r} is not valid: expected letters, digits, '_', '-' or '.'",
                        child_id)
    return child_id


def _significant(src: Source, key: str, value: object, restart: RestartType | None, parent: SupFlags) -> bool:
    if value is True and parent.auto_shutdown is AutoShutdown.NEVER:
        raise src.error(key, "bad combination: significant = true needs the supervisor's auto_shutdown to be "
                             "any_significant or all_significant", True)
    if value is True and restart is RestartType.PERMANENT:
        raise src.error(key, "bad combination: a permanent child cannot be significant (use transient or "
                             "temporary)", True)
    if not isinstance(value, bool):
        raise src.error(key, f"{value!r} is not valid: expected true or false", value)
    return value


def _node(src: Source, key: str, value: object) -> str:
    """`node`: the cluster node that runs a child (a worker, or a supervisor and its subtree), or
    "any" (docs/cluster.md); "" when not given."""
    if value is None:
        return ""
    from ..cluster.names import valid_node_name

    if not isinstance(value, str):
        raise src.error(key, f"{value!r} is not valid: expected a node name or \"any\"", value)
    problem = None if value == "any" else valid_node_name(value)
    if problem is not None:
        raise src.error(key, f"{value!r} is not valid: {problem}", value)
    return value


def read_shutdown(where: Where, key: str, value: object, child_type: ChildType) -> Shutdown:
    """`shutdown`: milliseconds, "brutal_kill" or "infinity"; by default 5000 for a worker, infinity
    for a supervisor (OTP's defaults)."""
    if value is None:
        return INFINITY if child_type is ChildType.SUPERVISOR else WORKER_DEFAULT_SHUTDOWN
    if value == "brutal_kill":
        return BRUTAL_KILL
    if value == "infinity":
        return INFINITY
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Shutdown.timeout(value)
    raise where.error(key, f"{value!r} is not valid: expected milliseconds >= 0, \"brutal_kill\" or \"infinity\"",
                      value)


def _manifest_path(src: Source, key: str, value: object) -> Path:
    if not isinstance(value, str):
        raise src.error(key, f"{value!r} is not valid: expected a path to an actor manifest", value)
    path = usable_path(src, key, value)
    if not path.is_file():
        raise src.error(key, f"manifest file not found: {path}", value)
    return path


def read_child_spec(src: Source, table: object, key: str, parent: SupFlags, problems: Problems,
                    manifest_of: ManifestReader) -> ChildSpec | None:
    """One child spec at dotted `key`, checked field by field in OTP §1.10's order, then its
    manifest (a worker) or its flags and children (a supervisor). None when a rule is broken
    (which only returns when `problems` collects)."""
    if not isinstance(table, dict):
        problems.add(src.error(key, "a child must be a table with at least `id`"))
        return None
    before = len(problems.found)
    child_id = problems.check(partial(_child_id, src, table, key))
    declared = declared_child_type(table)
    if "manifest" not in table and declared == "worker":
        problems.add(src.error(key, f"child {table.get('id')!r} has no `manifest`: a worker needs "
                                    f"`manifest = \"path/to/actor.toml\"`"))
    restart = problems.check(partial(read_enum, src, f"{key}.restart", table.get("restart"), RestartType,
                                     RestartType.PERMANENT))
    significant = problems.check(partial(_significant, src, f"{key}.significant", table.get("significant", False),
                                         restart, parent))
    child_type = problems.check(partial(read_enum, src, f"{key}.type", declared, ChildType, ChildType.WORKER))
    shutdown = problems.check(partial(read_shutdown, src, f"{key}.shutdown", table.get("shutdown"),
                                      child_type or ChildType.WORKER))

    node = problems.check(partial(_node, src, f"{key}.node", table.get("node")))
    manifest: ActorManifest | None = None
    flags: SupFlags | None = SupFlags()
    children: tuple[ChildSpec, ...] | None = ()
    if child_type is ChildType.WORKER and "manifest" in table:
        path = problems.check(partial(_manifest_path, src, f"{key}.manifest", table["manifest"]))
        manifest = manifest_of(path) if path is not None else None
        if manifest is None:
            return None
    elif child_type is ChildType.SUPERVISOR:
        flags = problems.check(partial(parse_flags, src, table, key))
        children = read_children(src, table.get("children", []), f"{key}.children", flags or SupFlags(), problems,
                                 manifest_of)
    if (child_id is None or restart is None or significant is None or child_type is None or shutdown is None
            or flags is None or children is None or len(problems.found) > before):
        return None
    return ChildSpec(id=child_id, type=child_type, restart=restart, shutdown=shutdown, significant=significant,
                     manifest=manifest, flags=flags, children=children, node=node or None)


def read_children(src: Source, items: object, key: str, flags: SupFlags, problems: Problems,
                  manifest_of: ManifestReader) -> tuple[ChildSpec, ...] | None:
    """A supervisor's `children` (at dotted `key`): each child, then unique ids among siblings, then
    simple_one_for_one's single template."""
    if not isinstance(items, list):
        problems.add(src.error(key, "expected a list of child tables ([[...children]])"))
        return None
    specs = [read_child_spec(src, item, f"{key}[{i}]", flags, problems, manifest_of) for i, item in enumerate(items)]
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        child_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(child_id, str):
            continue
        if child_id in first:
            problems.add(src.error(f"{key}[{i}].id", f"duplicate child id {child_id!r}: ids must be unique among "
                                                     f"siblings (first at {key}[{first[child_id]}])", child_id))
        first.setdefault(child_id, i)
    if flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(items) != 1:
        problems.add(src.error(key, f"simple_one_for_one needs exactly one child spec (the template), "
                                    f"found {len(items)}"))
    valid = tuple(spec for spec in specs if spec is not None)
    return valid if len(valid) == len(specs) else None


def read_supervision(src: Source, data: Table, problems: Problems, manifest_of: ManifestReader) -> ChildSpec | None:
    """The root supervisor of a supervision.toml (`[supervisor]`, id "root" unless given) and its tree."""
    root = data.get("supervisor")
    if not isinstance(root, dict):
        problems.add(src.error("supervisor", "missing [supervisor] table: the root supervisor of the tree"))
        return None
    return read_child_spec(src, {"id": "root", **root, "type": "supervisor"}, "supervisor", SupFlags(), problems,
                           manifest_of)



def read_server_root(src: Source, data: Table, problems: Problems) -> ChildSpec | None:
    """The root supervisor `server` starts: a supervision.toml's `[supervisor]` flags (strategy,
    intensity, period, ...; id "root" unless given) and no children, since actors come later, one
    `start` at a time. Otherwise the rules of any root supervisor."""
    root = data.get("supervisor")
    if isinstance(root, dict) and "children" in root:
        problems.add(src.error("supervisor.children", "`server` starts an empty root supervisor: remove the "
                                                      "children (start actors with `theater-otp start MANIFEST`) "
                                                      "or boot this tree with `theater-otp up`"))
        return None
    return read_supervision(src, data, problems, _no_manifest)


def _no_manifest(path: Path) -> ActorManifest | None:
    raise AssertionError(f"a supervisor without children named a manifest: {path}")


# ---- actor manifests -----------------------------------------------------------------------------

#: The tables a manifest lists its handlers in: `[[handler]]`, and the seed's `[[handlers]]`.
HANDLER_TABLES = ("handler", "handlers")


def read_name(src: Source, data: Table) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise src.error("name", "missing `name`: every actor manifest needs a name")
    return name


def component_key(data: Table) -> str:
    """The key the manifest names its component with: `component`, or the seed's `component_path`."""
    return "component" if "component" in data else "component_path"


def read_component_ref(src: Source, data: Table) -> str:
    """The component's path as written (relative to the manifest's folder)."""
    component = data.get("component", data.get("component_path"))
    if not isinstance(component, str) or not component:
        raise src.error("component", "missing `component = \"path/to/actor.wasm\"` (or `component_path`)")
    return component


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_component(src: Source, data: Table) -> Path:
    """The component file, resolved against the manifest's folder; it must exist (a Python actor's
    error says to build it first)."""
    ref = read_component_ref(src, data)
    path = usable_path(src, component_key(data), ref)
    if not path.is_file():
        hint = ""
        if isinstance(data.get("build"), dict) or (src.path.parent / "app.py").is_file():
            hint = f" (build it first: `theater-otp build {_display(src.path)}`)"
        raise src.error(component_key(data), f"component file not found: {path}{hint}", ref)
    return path


def _read_state_file(src: Source, state_path: Path, ref: str) -> bytes:
    """A regular file of at most MAX_LIST_BYTES (what a state can carry into an actor), read
    without blocking on it: a FIFO, a device or a directory is refused before it is opened for
    reading, a file that grows past the limit while read is refused too."""
    key = "initial_state.file"
    try:
        fd = os.open(state_path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise src.error(key, f"cannot read initial state file {state_path}: {why}", ref) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise src.error(key, f"initial state file {state_path} is not a regular file", ref)
        if info.st_size > MAX_LIST_BYTES:
            raise src.error(key, f"initial state file {state_path} is {info.st_size} bytes, over the "
                                 f"{MAX_LIST_BYTES} bytes a state may have", ref)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise src.error(key, f"cannot read initial state file {state_path}: {exc.strerror}", ref) from None
    finally:
        os.close(fd)
    if len(data) > MAX_LIST_BYTES:
        raise src.error(key, f"initial state file {state_path} is over the {MAX_LIST_BYTES} bytes a state may have",
                        ref)
    return data


def read_initial_state(src: Source, data: Table) -> bytes | None:
    """`initial_state = "text"`, `initial_state = { file = "state.json" }`, or the seed's `[state] initial`."""
    value = data.get("initial_state", data.get("init_state"))
    state = data.get("state")
    if value is None and isinstance(state, dict):
        value = state.get("initial")
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("file"), str):
        ref: str = value["file"]
        return _read_state_file(src, src.path.parent / ref, ref)
    raise src.error("initial_state", "expected a string or { file = \"path\" }")


def handler_entries(src: Source, data: Table, problems: Problems) -> list[tuple[str, object]]:
    """(dotted key, entry) of every `[[handler]]` and the seed's `[[handlers]]` table, in order."""
    found: list[tuple[str, object]] = []
    for table_key in HANDLER_TABLES:
        entries = data.get(table_key, [])
        if not isinstance(entries, list):
            problems.add(src.error(table_key, f"expected an array of tables ([[{table_key}]])"))
            continue
        found.extend((f"{table_key}[{i}]", entry) for i, entry in enumerate(entries))
    return found


def read_handler_entry(src: Source, entry: object, key: str) -> HandlerConfig:
    """One `[[handler]]` table (`key` is its dotted path, e.g. `handler[1]`); its settings are read
    by its handler's module (the registry's `parse_settings`)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise src.error(key, "each handler needs `type = \"...\"`")
    written: str = entry["type"]
    htype = written.lower()
    if htype not in MANIFEST_TYPES:
        raise src.error(f"{key}.type", f"unknown handler {written!r}: expected one of {', '.join(MANIFEST_TYPES)}",
                        written)
    settings: dict[str, object] = {k: v for k, v in entry.items() if k not in ("type", "config", "interface")}
    nested = entry.get("config", {})
    if not isinstance(nested, dict):
        raise src.error(f"{key}.config", "expected a table")
    settings.update(nested)
    typed = parse_handler_settings(htype, settings, src, key)
    return HandlerConfig(type=htype, config=tuple(sorted(settings.items())), settings=typed)


def read_handlers(src: Source, data: Table, problems: Problems) -> tuple[HandlerConfig, ...]:
    """Every handler entry that follows the rules; a type may be listed once."""
    out: list[HandlerConfig] = []
    seen: dict[str, str] = {}
    for key, entry in handler_entries(src, data, problems):
        config = problems.check(partial(read_handler_entry, src, entry, key))
        if config is None:
            continue
        if config.type in seen:
            problems.add(src.error(f"{key}.type", f"handler {config.type!r} is listed twice (first as "
                                                  f"{seen[config.type]}): list it once, with all its settings",
                                   config.type))
            continue
        seen[config.type] = key
        out.append(config)
    return tuple(out)


def listed_types(data: Table) -> frozenset[str]:
    """The handler types an actor with this manifest would hold: the always-granted ones and each
    `type` its handler tables list (lower-cased, as read), whether or not the entry follows the
    rules; for `build` and for validate's component checks, which go on past a bad entry."""
    types = set(ALWAYS_GRANTED)
    for table_key in HANDLER_TABLES:
        entries = data.get(table_key)
        if isinstance(entries, list):
            types.update(e["type"].lower() for e in entries if isinstance(e, dict) and isinstance(e.get("type"), str))
    return frozenset(types)


def read_limits(src: Source, data: Table) -> ActorLimits:
    """`[limits]`: every key optional; defaults from ActorLimits (the one place they live)."""
    table = data.get("limits", {})
    if not isinstance(table, dict):
        raise src.error("limits", "expected a table: [limits] memory_bytes, cpu_ms, message_bytes, mailbox, "
                                  "log_bytes_per_s")
    d = ActorLimits()
    f = Fields(src, "limits", table)
    limits = ActorLimits(
        memory_bytes=f.int("memory_bytes", d.memory_bytes, minimum=1024 * 1024, maximum=2**32),
        cpu_ms=f.int("cpu_ms", d.cpu_ms, minimum=1, maximum=3_600_000),
        message_bytes=f.int("message_bytes", d.message_bytes, minimum=1, maximum=MAX_LIST_BYTES),
        mailbox=f.int("mailbox", d.mailbox, minimum=1, maximum=1_000_000),
        log_bytes_per_s=f.int("log_bytes_per_s", d.log_bytes_per_s, minimum=0),
    )
    f.done()
    return limits


def read_manifest(src: Source, data: Table, problems: Problems) -> ActorManifest | None:
    """An actor manifest: name, component (it must exist), initial state, handlers, limits. None
    when a rule is broken (which only returns when `problems` collects)."""
    before = len(problems.found)
    name = problems.check(partial(read_name, src, data))
    component = problems.check(partial(read_component, src, data))
    initial_state = problems.check(partial(read_initial_state, src, data))
    handlers = read_handlers(src, data, problems)
    limits = problems.check(partial(read_limits, src, data))
    if name is None or component is None or limits is None or len(problems.found) > before:
        return None
    return ActorManifest(name=name, component=component, source=src.path, version=str(data.get("version", "0.1.0")),
                         description=str(data.get("description", "")), initial_state=initial_state,
                         handlers=handlers, limits=limits)


# ---- what `build` and `validate` read besides (`up` ignores these tables) -------------------------

#: The interfaces an actor may export, so the names `[interface] implements` may list.
EXPORTABLE: tuple[str, ...] = tuple(f"{PACKAGE}/{name}" for name in
                                    ("actor", "message-server-client", "supervisor-handlers", "http-server"))


def full_interface_name(name: str) -> str:
    """`actor` -> `theater:simple/actor`; a full name loses its `@version`."""
    name = name.split("@", 1)[0]
    return name if "/" in name else f"{PACKAGE}/{name}"


def read_implements(src: Source, data: Table, problems: Problems) -> tuple[str, ...] | None:
    """`[interface] implements = [...]` as written (None when absent or not a list of strings); each
    name must be an interface an actor can export."""
    if "interface" not in data:
        return None
    table = data["interface"]
    if not isinstance(table, dict):
        problems.add(src.error("interface", "expected a table: [interface] implements = [...]"))
        return None
    value = table.get("implements")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(src.error("interface.implements", "expected a list of interface names"))
        return None
    names = tuple(str(v) for v in value)
    for i, name in enumerate(names):
        if full_interface_name(name) not in EXPORTABLE:
            problems.add(src.error(f"interface.implements[{i}]", f"{name!r} is not an interface an actor can "
                                                                 f"implement: expected {', '.join(EXPORTABLE)}"))
    return names


@dataclass(frozen=True)
class BuildTable:
    """A manifest's `[build]` table (its meaning: pyactor.build), each value as written or None.

    Invariant: `source` and `wit`, when given, name folders that exist (relative to the manifest)."""

    source: str | None = None
    module: str | None = None
    world: str | None = None
    wit: str | None = None


def read_build_table(src: Source, data: Table, problems: Problems) -> BuildTable | None:
    """`[build]`: None when absent; every value a string, `source` and `wit` existing folders."""
    table = data.get("build")
    if table is None:
        return None
    if not isinstance(table, dict):
        problems.add(src.error("build", "expected a table: [build] module, world, wit, source"))
        return None
    before = len(problems.found)
    values: dict[str, str | None] = {}
    for key in ("source", "module", "world", "wit"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            problems.add(src.error(f"build.{key}", f"{value!r} is not valid: expected a string", value))
            value = None
        values[key] = value
    for key in ("source", "wit"):
        folder = values[key]
        if folder is None:
            continue
        path = problems.check(partial(usable_path, src, f"build.{key}", folder))
        if path is not None and not path.is_dir():
            problems.add(src.error(f"build.{key}", f"folder not found: {path}", folder))
    return BuildTable(**values) if len(problems.found) == before else None
