"""`theater-otp validate`: every problem of a manifest or supervision.toml, not just the first.

The product loader (config.loader) stops at the first error, in OTP's order,
which is right for `up`. Here each part is checked on its own with the
loader's own functions (so the messages are the same), and every problem is
collected with its file, key and line:

* a manifest: name, component, initial_state, each handler, `[interface]
  implements`, `[build]`; then the component itself: it compiles, it exports
  what the manifest says it implements (all the WIT functions of each
  interface) and `actor.init`, and it imports only what the handlers grant;
* a supervision.toml: the flags of every supervisor, every child spec, the
  duplicate ids of every sibling list, and each referenced manifest as above.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..config.loader import (
    parse_handlers,
    handler_entries,
    parse_handler_entry,
    parse_initial_state,
    Source,
    load_manifest,
    load_supervision,
    parse_child_spec,
)
from ..config.fields import parse_flags
from ..config.model import Strategy, SupFlags
from ..errors import ComponentError, ConfigError, TheaterError
from ..worker.handlers import ALWAYS_GRANTED, owner_of
from ..worker.component import (
    ACTOR_EXPORT,
    CompiledComponent,
    artifact_path,
    check_actor_abi,
    compile_component,
    content_hash,
    new_engine,
)

PACKAGE = "theater:simple"

#: Used when the WIT folder cannot be found (an installed, not editable, theater-otp).
FALLBACK_INTERFACES: dict[str, tuple[str, ...]] = {
    f"{PACKAGE}/actor": ("init",),
    f"{PACKAGE}/message-server-client": ("handle-send", "handle-request", "handle-channel-open",
                                         "handle-channel-message", "handle-channel-close"),
    f"{PACKAGE}/supervisor-handlers": ("handle-child-error", "handle-child-exit", "handle-child-external-stop"),
    f"{PACKAGE}/http-server": ("handle-request",),
}
EXPORTABLE = tuple(FALLBACK_INTERFACES)
_S1FO_COUNT = "simple_one_for_one needs exactly one child spec"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Problem:
    """One problem: where (file, dotted key, line when known) and what."""

    file: str
    key: str | None
    message: str
    line: int | None = None

    @classmethod
    def of(cls, exc: ConfigError) -> "Problem":
        return cls(exc.file, exc.key, exc.message, exc.line)

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_plain(self) -> dict:
        return {"file": self.file, "key": self.key, "line": self.line, "message": self.message}


@dataclass
class Report:
    """What `validate` found."""

    path: Path
    kind: str                                    # "manifest" | "supervision"
    problems: list[Problem] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_plain(self) -> dict:
        return {"ok": self.ok, "path": str(self.path), "kind": self.kind,
                "problems": [p.to_plain() for p in self.problems],
                "manifests": self.manifests, "components": self.components}


# ---- WIT: which functions each interface declares ----------------------------------------------

_IFACE_RE = re.compile(r"^\s*interface\s+([a-z][a-z0-9-]*)\s*\{")
_WORLD_RE = re.compile(r"^\s*world\s+([a-z][a-z0-9-]*)\s*\{")
_FUNC_RE = re.compile(r"^\s*([a-z][a-z0-9-]*)\s*:\s*func\b")
_PACKAGE_RE = re.compile(r"^\s*package\s+([a-z0-9-]+:[a-z0-9-]+)")


def wit_interfaces(wit_dir: Path) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """(interface -> function names, world names) declared by the .wit files in `wit_dir`."""
    interfaces: dict[str, list[str]] = {}
    worlds: set[str] = set()
    for f in sorted(wit_dir.glob("*.wit")):
        package, current, depth = PACKAGE, None, 0
        for raw in f.read_text(encoding="utf-8").splitlines():
            line = raw.split("//", 1)[0]
            if m := _PACKAGE_RE.match(line):
                package = m.group(1)
            if depth == 0:
                if m := _IFACE_RE.match(line):
                    current = interfaces.setdefault(f"{package}/{m.group(1)}", [])
                elif m := _WORLD_RE.match(line):
                    worlds.add(m.group(1))
                    current = None
            elif depth == 1 and current is not None and (m := _FUNC_RE.match(line)):
                current.append(m.group(1))
            depth += line.count("{") - line.count("}")
            if depth == 0:
                current = None
    return {k: tuple(v) for k, v in interfaces.items()}, worlds


def known_interfaces() -> tuple[dict[str, tuple[str, ...]], set[str]]:
    from .scaffold import repo_wit_dir
    try:
        return wit_interfaces(repo_wit_dir())
    except TheaterError:
        return dict(FALLBACK_INTERFACES), {"actor-world", "supervisor-actor"}


def full_interface_name(name: str) -> str:
    """`actor` -> `theater:simple/actor`; a full name loses its `@version`."""
    name = name.split("@", 1)[0]
    return name if "/" in name else f"{PACKAGE}/{name}"


# ---- compiling with progress -------------------------------------------------------------------

def compile_with_progress(path: Path, say: Say | None, engine=None) -> CompiledComponent:
    """compile_component (which writes the cached artifact), with a progress line every few seconds
    when it is not in the cache yet (a Python actor takes 20-30 s to compile)."""
    engine = engine or new_engine()
    try:
        digest = content_hash(path.read_bytes())
    except OSError as exc:
        raise ComponentError(f"{path}: cannot read component ({exc.strerror})") from None
    size = path.stat().st_size / 1e6
    if say is None or artifact_path(digest).is_file() or size < 1:  # small components compile in a blink
        return compile_component(path, engine)
    say(f"compiling {path.name} ({size:.1f} MB) with wasmtime; the artifact is cached for every later start ...")
    return run_with_progress(lambda: compile_component(path, engine), "compiling", say)


def run_with_progress(fn: Callable[[], Any], label: str, say: Say, every: float = 5.0) -> Any:
    """Run `fn` in a thread; say `label: N s` every `every` seconds until it returns."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True, name=label)
    thread.start()
    while True:
        thread.join(every)
        if not thread.is_alive():
            break
        say(f"  {label}: {time.monotonic() - t0:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- a component against its manifest ----------------------------------------------------------

def component_problems(compiled: CompiledComponent, manifest: Path, granted: set[str],
                       implements: list[str] | None, src: Source | None = None) -> list[Problem]:
    """Exports against `[interface] implements` (and actor.init), imports against the granted handlers."""
    problems: list[Problem] = []
    ifaces, _ = known_interfaces()
    # interface exports only: componentize-py also exports bare items of its own ("exports", "init")
    exported = {k.split("@", 1)[0]: v for k, v in compiled.exports.items() if "/" in k}

    def problem(key: str, message: str, value: object = None) -> Problem:
        line = src.line_of(key.rsplit(".", 1)[-1].split("[")[0], value) if src else None
        return Problem(str(manifest), key, message, line)

    try:
        check_actor_abi(replace(compiled, imports=()), granted, manifest)
    except ComponentError as exc:
        problems.append(problem("component", _strip_prefix(_strip_prefix(str(exc), manifest), compiled.source)))
    if implements is not None:
        for i, name in enumerate(implements):
            full = full_interface_name(name)
            if full not in ifaces:
                continue  # reported with the manifest's own checks
            if full not in exported:
                problems.append(problem(f"interface.implements[{i}]",
                                        f"the manifest says the actor implements {full}, but the component "
                                        f"does not export it", None))
                continue
            missing = [f for f in ifaces[full] if f not in exported[full]]
            if missing:
                problems.append(problem(f"interface.implements[{i}]",
                                        f"the component's {full} lacks {', '.join(missing)}"))
        declared = {full_interface_name(n) for n in implements}
        for name in sorted(exported):
            if name.startswith(f"{PACKAGE}/") and name not in declared:
                problems.append(problem("interface.implements",
                                        f"the component exports {name}, which [interface] implements does "
                                        f"not list"))
    for name in compiled.imports:
        try:
            check_actor_abi(replace(compiled, imports=(name,), exports={ACTOR_EXPORT: ("init",)}), granted,
                            manifest, exports_too=False)
        except ComponentError as exc:
            message = _strip_prefix(_strip_prefix(str(exc), manifest), compiled.source)
            handler = owner_of(name)
            problems.append(Problem(str(manifest), "handler" if handler else "component", message,
                                    src.line_of("component") if src and not handler else None))
    return problems


def _strip_prefix(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


# ---- a manifest ----------------------------------------------------------------------------------

class _Checker:
    def __init__(self, say: Say | None):
        self.say = say
        self.engine = None
        self.compiled: dict[Path, CompiledComponent | None] = {}
        self.done_manifests: set[Path] = set()

    def compile(self, path: Path) -> CompiledComponent:
        if path not in self.compiled:
            self.engine = self.engine or new_engine()
            self.compiled[path] = None
            self.compiled[path] = compile_with_progress(path, self.say, self.engine)
        result = self.compiled[path]
        if result is None:
            raise ComponentError(f"{path}: did not compile")
        return result

    def manifest(self, path: Path, report: Report) -> None:
        path = path.resolve()
        if path in self.done_manifests:
            return
        self.done_manifests.add(path)
        report.manifests.append(str(path))
        try:
            src = Source(path)
            data = src.parse()
        except ConfigError as exc:
            report.add(Problem.of(exc))
            return
        problems: list[Problem] = []

        def check(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except ConfigError as exc:
                problems.append(Problem.of(exc))
                return None

        name = data.get("name")
        if not isinstance(name, str) or not name:
            problems.append(Problem.of(src.error("name", "missing `name`: every actor manifest needs a name")))
        component = data.get("component", data.get("component_path"))
        component_key = "component" if "component" in data else "component_path"
        component_path: Path | None = None
        if not isinstance(component, str) or not component:
            problems.append(Problem.of(src.error(
                "component", "missing `component = \"path/to/actor.wasm\"` (or `component_path`)")))
        else:
            component_path = (path.parent / component).resolve()
            if not component_path.is_file():
                hint = ""
                if isinstance(data.get("build"), dict) or (path.parent / "app.py").is_file():
                    hint = f" (build it first: `theater-otp build {_display(path)}`)"
                problems.append(Problem.of(src.error(component_key, f"component file not found: {component_path}"
                                                     f"{hint}", component)))
                component_path = None
        check(lambda: parse_initial_state(src, data))
        granted = set(ALWAYS_GRANTED)
        for table_key in ("handler", "handlers"):
            entries = check(lambda: handler_entries(src, {table_key: data.get(table_key, [])})) or []
            for key, entry in entries:
                parsed = check(lambda: parse_handler_entry(src, entry, key))
                if parsed:
                    granted.add(parsed.type)
        check(lambda: parse_handlers(src, data) if not problems else None)  # a type listed twice
        implements = self._implements(src, data, problems)
        self._build_table(src, data, problems)
        for p in problems:
            report.add(p)
        if component_path is not None:
            report.components.append(str(component_path))
            try:
                compiled = self.compile(component_path)
            except ComponentError as exc:
                report.add(Problem(str(path), component_key, _strip_prefix(str(exc), component_path),
                                   src.line_of(component_key, component)))
                return
            for p in component_problems(compiled, path, granted, implements, src):
                report.add(p)
        if not problems and report.ok:
            try:  # the product loader must agree
                load_manifest(path)
            except ConfigError as exc:
                report.add(Problem.of(exc))

    def _implements(self, src: Source, data: dict, problems: list[Problem]) -> list[str] | None:
        if "interface" not in data:
            return None
        table = data["interface"]
        if not isinstance(table, dict):
            problems.append(Problem.of(src.error("interface", "expected a table: [interface] implements = [...]")))
            return None
        value = table.get("implements")
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(Problem.of(src.error("interface.implements", "expected a list of interface names")))
            return None
        ifaces, _ = known_interfaces()
        for i, name in enumerate(value):
            full = full_interface_name(name)
            if full not in ifaces or full not in EXPORTABLE:
                problems.append(Problem.of(src.error(
                    f"interface.implements[{i}]",
                    f"{name!r} is not an interface an actor can implement: expected {', '.join(EXPORTABLE)}")))
        return value

    def _build_table(self, src: Source, data: dict, problems: list[Problem]) -> None:
        table = data.get("build")
        if table is None:
            return
        if not isinstance(table, dict):
            problems.append(Problem.of(src.error("build", "expected a table: [build] module, world, wit, source")))
            return
        _, worlds = known_interfaces()
        world = table.get("world")
        if world is not None and world not in worlds:
            problems.append(Problem.of(src.error("build.world", f"{world!r} is not a theater:simple world: "
                                                                f"expected {' or '.join(sorted(worlds))}", world)))
        for key in ("module", "wit", "source"):
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                problems.append(Problem.of(src.error(f"build.{key}", f"{value!r} is not valid: expected a string")))
        for key in ("wit", "source"):
            value = table.get(key)
            if isinstance(value, str) and not (src.path.parent / value).is_dir():
                problems.append(Problem.of(src.error(f"build.{key}", f"folder not found: "
                                                                     f"{(src.path.parent / value).resolve()}", value)))

    # ---- a supervision.toml ----------------------------------------------------------------------

    def supervision(self, path: Path, report: Report) -> None:
        try:
            src = Source(path.resolve())
            data = src.parse()
        except ConfigError as exc:
            report.add(Problem.of(exc))
            return
        root = data.get("supervisor")
        if not isinstance(root, dict):
            report.add(Problem.of(src.error("supervisor", "missing [supervisor] table: the root supervisor of the tree")))
            return
        root = {**root, "type": "supervisor"}
        root.setdefault("id", "root")
        manifests: list[Path] = []
        self._supervisor(src, root, "supervisor", SupFlags(), report, manifests)
        for m in manifests:
            self.manifest(m, report)
        if report.ok:
            try:
                load_supervision(path)
            except ConfigError as exc:
                report.add(Problem.of(exc))

    def _spec(self, src: Source, table: dict, key: str, parent: SupFlags, report: Report) -> None:
        """The child-spec fields of one child; errors raised inside its manifest are left to self.manifest."""
        try:
            parse_child_spec(src, table, key, parent)
        except ConfigError as exc:
            if exc.file == str(src.path) and _S1FO_COUNT not in exc.message:
                report.add(Problem.of(exc))

    def _supervisor(self, src: Source, table: dict, key: str, parent: SupFlags, report: Report,
                    manifests: list[Path]) -> None:
        self._spec(src, {**table, "children": []}, key, parent, report)
        try:
            flags = parse_flags(src, table, key)
        except ConfigError as exc:
            report.add(Problem.of(exc))
            flags = SupFlags()
        children = table.get("children", [])
        ckey = f"{key}.children"
        if not isinstance(children, list):
            report.add(Problem.of(src.error(ckey, "expected a list of child tables ([[...children]])")))
            return
        if flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(children) != 1:
            report.add(Problem.of(src.error(ckey, f"{_S1FO_COUNT} (the template), found {len(children)}")))
        seen: dict[str, int] = {}
        for i, child in enumerate(children):
            k = f"{ckey}[{i}]"
            if not isinstance(child, dict):
                report.add(Problem.of(src.error(k, "a child must be a table with at least `id`")))
                continue
            cid = child.get("id")
            if isinstance(cid, str):
                if cid in seen:
                    report.add(Problem.of(src.error(f"{k}.id", f"duplicate child id {cid!r}: ids must be unique "
                                                               f"among siblings (first at {ckey}[{seen[cid]}])", cid)))
                seen.setdefault(cid, i)
            ctype = child.get("type")
            if ctype == "supervisor" or (ctype is None and ("children" in child or "strategy" in child)):
                self._supervisor(src, child, k, flags, report, manifests)
                continue
            self._spec(src, child, k, flags, report)
            manifest = child.get("manifest")
            if isinstance(manifest, str) and (src.path.parent / manifest).is_file():
                manifests.append((src.path.parent / manifest).resolve())


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def validate(path: Path, say: Say | None = None) -> Report:
    """Check a manifest, a project folder (its manifest.toml) or a supervision.toml; every problem found."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.toml"
    checker = _Checker(say)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    kind = "supervision" if re.search(r"^\s*\[supervisor\]", text, re.M) else "manifest"
    report = Report(path.resolve(), kind)
    if kind == "supervision":
        checker.supervision(path, report)
    else:
        checker.manifest(path, report)
    return report
