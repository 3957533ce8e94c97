"""Parse and validate supervision.toml and actor manifests.

Checks run once, here, in OTP's order (flags first, then each child spec field
by field, then duplicate ids); every error names the file, the key path, the
line where it can be found, the bad value and what is expected.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import tomli

from ..errors import ConfigError
from ..worker.handlers import MANIFEST_TYPES, parse_handler_settings
from ..worker.handlers.base import MAX_LIST_BYTES
from .fields import Fields, parse_flags, read_enum
from .model import (
    INFINITY,
    BRUTAL_KILL,
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
from .substitute import substitute

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class Source:
    """The text of one TOML file, for error messages that carry a line number."""

    def __init__(self, path: Path, text: str | None = None):
        self.path = path
        if text is not None:
            self.text = text
            return
        try:
            self.text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(path, None, "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, None, f"cannot read file ({exc})") from None

    def parse(self) -> dict[str, Any]:
        try:
            data = tomli.loads(self.text)
        except tomli.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            msg = getattr(exc, "msg", str(exc))
            raise ConfigError(self.path, None, f"invalid TOML: {msg}", line=line) from None
        return substitute(data, os.environ, self.placeholder_error)

    def placeholder_error(self, key: str, token: str, message: str) -> ConfigError:
        """A bad `${...}` at `key`: its line is the first line holding `token` (not as `$${`)
        whose key matches, else the first line holding it at all."""
        leaf = re.sub(r"(\[\d+\])+$", "", key.rsplit(".", 1)[-1])
        keyed = re.compile(rf"(^|[\s{{,.])[\"']?{re.escape(leaf)}[\"']?\s*=")
        token_re = re.compile(rf"(?<!\$){re.escape(token)}")
        hits = [(i + 1, line) for i, line in enumerate(self.text.splitlines()) if token_re.search(line)]
        line = next((n for n, text in hits if keyed.search(text)), hits[0][0] if hits else None)
        return ConfigError(self.path, key, message, line=line)

    def line_of(self, leaf: str, value: object = None) -> int | None:
        """The line of `leaf = value` when exactly one line matches, else None."""
        if value is None or isinstance(value, (dict, list)):
            pattern = re.compile(rf"^\s*{re.escape(leaf)}\s*=")
        else:
            rendered = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
            pattern = re.compile(rf"^\s*{re.escape(leaf)}\s*=\s*{re.escape(rendered)}\s*(#.*)?$")
        hits = [i + 1 for i, line in enumerate(self.text.splitlines()) if pattern.match(line)]
        return hits[0] if len(hits) == 1 else None

    def error(self, key: str, message: str, value: object = None) -> ConfigError:
        leaf = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
        return ConfigError(self.path, key, message, line=self.line_of(leaf, value))


def _enum(src: Source, key: str, value: object, enum_cls: type, default: Any) -> Any:
    return read_enum(src, key, value, enum_cls, default)


def _shutdown(src: Source, key: str, value: object, child_type: ChildType) -> Shutdown:
    if value is None:
        return INFINITY if child_type is ChildType.SUPERVISOR else WORKER_DEFAULT_SHUTDOWN
    if value == "brutal_kill":
        return BRUTAL_KILL
    if value == "infinity":
        return INFINITY
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Shutdown.timeout(value)
    raise src.error(key, f"{value!r} is not valid: expected milliseconds >= 0, \"brutal_kill\" or \"infinity\"", value)


def parse_child_spec(src: Source, table: object, key: str, parent: SupFlags) -> ChildSpec:
    """One child spec, checked field by field in OTP §1.10's order."""
    if not isinstance(table, dict):
        raise src.error(key, "a child must be a table with at least `id`")
    child_id = table.get("id")
    if child_id is None:
        raise src.error(key, "missing `id`: every child needs a unique id")
    if not isinstance(child_id, str) or not _ID_RE.match(child_id):
        raise src.error(f"{key}.id", f"{child_id!r} is not valid: expected letters, digits, '_', '-' or '.'", child_id)
    key_id = f"{key}.id"

    declared_type = table.get("type")
    if declared_type is None:
        declared_type = "supervisor" if "children" in table or "strategy" in table else "worker"
    if "manifest" not in table and declared_type == "worker":
        raise src.error(key_id.replace(".id", ""), f"child {child_id!r} has no `manifest`: a worker needs `manifest = \"path/to/actor.toml\"`")
    restart = _enum(src, f"{key}.restart", table.get("restart"), RestartType, RestartType.PERMANENT)
    significant = table.get("significant", False)
    if significant is True and parent.auto_shutdown is AutoShutdown.NEVER:
        raise src.error(f"{key}.significant", "bad combination: significant = true needs the supervisor's auto_shutdown to be any_significant or all_significant", True)
    if significant is True and restart is RestartType.PERMANENT:
        raise src.error(f"{key}.significant", "bad combination: a permanent child cannot be significant (use transient or temporary)", True)
    if not isinstance(significant, bool):
        raise src.error(f"{key}.significant", f"{significant!r} is not valid: expected true or false", significant)
    child_type = _enum(src, f"{key}.type", declared_type, ChildType, ChildType.WORKER)
    shutdown = _shutdown(src, f"{key}.shutdown", table.get("shutdown"), child_type)

    if child_type is ChildType.WORKER:
        manifest_value = table["manifest"]
        if not isinstance(manifest_value, str):
            raise src.error(f"{key}.manifest", f"{manifest_value!r} is not valid: expected a path to an actor manifest", manifest_value)
        manifest_path = src.path.parent / manifest_value
        if not manifest_path.is_file():
            raise src.error(f"{key}.manifest", f"manifest file not found: {manifest_path.resolve()}", manifest_value)
        manifest = load_manifest(manifest_path)
        return ChildSpec(id=child_id, type=child_type, restart=restart, shutdown=shutdown,
                         significant=significant, manifest=manifest)

    flags = parse_flags(src, table, key)
    children = _parse_children(src, table.get("children", []), f"{key}.children", flags)
    return ChildSpec(id=child_id, type=child_type, restart=restart, shutdown=shutdown,
                     significant=significant, flags=flags, children=children)


def _parse_children(src: Source, items: object, key: str, flags: SupFlags) -> tuple[ChildSpec, ...]:
    if not isinstance(items, list):
        raise src.error(key, "expected a list of child tables ([[...children]])")
    specs = tuple(parse_child_spec(src, item, f"{key}[{i}]", flags) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise src.error(f"{key}[{i}].id", f"duplicate child id {spec.id!r}: ids must be unique among siblings", spec.id)
        seen.add(spec.id)
    if flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(specs) != 1:
        raise src.error(key, f"simple_one_for_one needs exactly one child spec (the template), found {len(specs)}")
    return specs


def parse_dynamic_child(table: dict[str, Any], origin: str, flags: SupFlags) -> ChildSpec:
    """A child spec given at run time (`start-child`); errors name `origin` instead of a file."""
    src = Source(Path(origin), text="")
    return parse_child_spec(src, table, "child", flags)


def load_supervision(path: str | Path) -> ChildSpec:
    """Load a supervision.toml: the root supervisor as a ChildSpec of type SUPERVISOR."""
    src = Source(Path(path).resolve())
    data = src.parse()
    root = data.get("supervisor")
    if not isinstance(root, dict):
        raise src.error("supervisor", "missing [supervisor] table: the root supervisor of the tree")
    if "id" not in root:
        root = {**root, "id": "root"}
    root = {**root, "type": "supervisor"}
    return parse_child_spec(src, root, "supervisor", SupFlags())


def parse_handler_entry(src: Source, entry: object, key: str) -> HandlerConfig:
    """One `[[handler]]` table (`key` is its dotted path, e.g. `handler[1]`); its settings are read
    by its handler's module (the registry's `parse_settings`)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise src.error(key, "each handler needs `type = \"...\"`")
    htype = entry["type"].lower()
    if htype not in MANIFEST_TYPES:
        raise src.error(f"{key}.type", f"unknown handler {entry['type']!r}: expected one of "
                                       f"{', '.join(MANIFEST_TYPES)}", entry["type"])
    settings = {k: v for k, v in entry.items() if k not in ("type", "config", "interface")}
    nested = entry.get("config", {})
    if not isinstance(nested, dict):
        raise src.error(f"{key}.config", "expected a table")
    settings.update(nested)
    typed = parse_handler_settings(htype, settings, src, key)
    return HandlerConfig(type=htype, config=tuple(sorted(settings.items())), settings=typed)


def handler_entries(src: Source, data: dict[str, Any]) -> list[tuple[str, object]]:
    """(dotted key, entry) of every `[[handler]]` and the seed's `[[handlers]]` table, in order."""
    found: list[tuple[str, object]] = []
    for table_key in ("handler", "handlers"):
        entries = data.get(table_key, [])
        if not isinstance(entries, list):
            raise src.error(table_key, f"expected an array of tables ([[{table_key}]])")
        found.extend((f"{table_key}[{i}]", entry) for i, entry in enumerate(entries))
    return found


def parse_handlers(src: Source, data: dict[str, Any]) -> tuple[HandlerConfig, ...]:
    """Accept `[[handler]] type=… key=…` and the seed's `[[handlers]] type=… config={…}`; a type
    may be listed once."""
    out: list[HandlerConfig] = []
    seen: dict[str, str] = {}
    for key, entry in handler_entries(src, data):
        config = parse_handler_entry(src, entry, key)
        if config.type in seen:
            raise src.error(f"{key}.type", f"handler {config.type!r} is listed twice (first as {seen[config.type]}): "
                                           f"list it once, with all its settings", config.type)
        seen[config.type] = key
        out.append(config)
    return tuple(out)


def load_manifest(path: str | Path) -> ActorManifest:
    """Load an actor manifest; the component path is resolved against the manifest's folder."""
    src = Source(Path(path).resolve())
    data = src.parse()
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise src.error("name", "missing `name`: every actor manifest needs a name")
    component = data.get("component", data.get("component_path"))
    if not isinstance(component, str) or not component:
        raise src.error("component", "missing `component = \"path/to/actor.wasm\"` (or `component_path`)")
    component_path = (src.path.parent / component).resolve()
    if not component_path.is_file():
        key = "component" if "component" in data else "component_path"
        raise src.error(key, f"component file not found: {component_path}", component)
    initial_state = parse_initial_state(src, data)
    version = data.get("version", "0.1.0")
    return ActorManifest(
        name=name,
        component=component_path,
        source=src.path,
        version=str(version),
        description=str(data.get("description", "")),
        initial_state=initial_state,
        handlers=parse_handlers(src, data),
        limits=_limits(src, data),
    )


def _limits(src: Source, data: dict[str, Any]) -> ActorLimits:
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


def parse_initial_state(src: Source, data: dict[str, Any]) -> bytes | None:
    """`initial_state = "text"`, `initial_state = { file = "state.json" }`, or the seed's `[state] initial`."""
    value = data.get("initial_state", data.get("init_state"))
    if value is None and isinstance(data.get("state"), dict):
        value = data["state"].get("initial")
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("file"), str):
        return _read_state_file(src, src.path.parent / value["file"], value["file"])
    raise src.error("initial_state", "expected a string or { file = \"path\" }")
