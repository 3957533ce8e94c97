"""`theater-otp validate`: every problem of a manifest or supervision.toml, not just the first.

The product loader (config.loader) stops at the first error, in OTP's order,
which is right for `up`. Here the same rules (config.rules, the only place
they are written) run with a `Problems(collect=True)`, so every problem is
collected with its file, key and line, in the very words `up` would use:

* a manifest: name, component, initial_state, each handler, limits,
  `[interface] implements`, `[build]`; then the component itself: it
  compiles, it exports what the manifest says it implements (all the WIT
  functions of each interface) and `actor.init`, and it imports only what
  the handlers grant;
* a supervision.toml: the flags of every supervisor, every child spec, the
  duplicate ids of every sibling list, and each referenced manifest as above.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, TypedDict, TypeVar

import wasmtime

from ..config.loader import load_manifest, load_supervision
from ..config.model import ActorManifest
from ..config.rules import (
    EXPORTABLE,
    BuildTable,
    Problems,
    component_key,
    full_interface_name,
    is_supervision,
    listed_types,
    read_build_table,
    read_component,
    read_implements,
    read_manifest,
    read_supervision,
)
from ..config.source import Source
from ..errors import ComponentError, ConfigError, TheaterError
from ..worker.component import (
    ACTOR_EXPORT,
    CompiledComponent,
    artifact_path,
    check_actor_abi,
    compile_component,
    content_hash,
    new_engine,
)
from ..worker.handlers import PACKAGE, owner_of

#: The functions of each interface an actor can export, used when the WIT folder cannot be found
#: (an installed, not editable, theater-otp).
FALLBACK_INTERFACES: dict[str, tuple[str, ...]] = dict(zip(EXPORTABLE, (
    ("init",),
    ("handle-send", "handle-request", "handle-channel-open", "handle-channel-message", "handle-channel-close"),
    ("handle-child-error", "handle-child-exit", "handle-child-external-stop"),
    ("handle-request",),
), strict=True))

Say = Callable[[str], None]
T = TypeVar("T")


class ProblemPlain(TypedDict):
    file: str
    key: str | None
    line: int | None
    message: str


class ReportPlain(TypedDict):
    ok: bool
    path: str
    kind: str
    problems: list[ProblemPlain]
    manifests: list[str]
    components: list[str]


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

    def to_plain(self) -> ProblemPlain:
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

    def to_plain(self) -> ReportPlain:
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


# ---- compiling with progress -------------------------------------------------------------------

def compile_with_progress(path: Path, say: Say | None, engine: wasmtime.Engine | None = None) -> CompiledComponent:
    """compile_component (which writes the cached artifact), with a progress line every few seconds
    when it is not in the cache yet (a Python actor takes 20-30 s to compile)."""
    use = engine or new_engine()
    try:
        digest = content_hash(path.read_bytes())
    except OSError as exc:
        raise ComponentError(f"{path}: cannot read component ({exc.strerror})") from None
    size = path.stat().st_size / 1e6
    if say is None or artifact_path(digest).is_file() or size < 1:  # small components compile in a blink
        return compile_component(path, use)
    say(f"compiling {path.name} ({size:.1f} MB) with wasmtime; the artifact is cached for every later start ...")
    return run_with_progress(lambda: compile_component(path, use), "compiling", say)


def run_with_progress(fn: Callable[[], T], label: str, say: Say, every: float = 5.0) -> T:
    """Run `fn` in a thread; say `label: N s` every `every` seconds until it returns."""
    value: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            value.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True, name=label)
    thread.start()
    while True:
        thread.join(every)
        if not thread.is_alive():
            break
        say(f"  {label}: {time.monotonic() - t0:.0f} s")
    if error:
        raise error[0]
    return value[0]


# ---- a component against its manifest ----------------------------------------------------------

def component_problems(compiled: CompiledComponent, manifest: Path, granted: set[str] | frozenset[str],
                       implements: tuple[str, ...] | None, src: Source | None = None) -> list[Problem]:
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
    """Checks each manifest and component once; every problem goes into the caller's Report."""

    def __init__(self, say: Say | None):
        self.say = say
        self.engine: wasmtime.Engine | None = None
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
        """The manifest's rules (config.rules, collecting), `[build] world`, then its component."""
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
        problems = Problems(collect=True)
        read_manifest(src, data, problems)
        implements = read_implements(src, data, problems)
        build = read_build_table(src, data, problems)
        found = [Problem.of(exc) for exc in problems.found] + self._world(src, build)
        for p in found:
            report.add(p)
        component = Problems(collect=True).check(partial(read_component, src, data))  # reported above if broken
        if component is not None:
            report.components.append(str(component))
            try:
                compiled = self.compile(component)
            except ComponentError as exc:
                key = component_key(data)
                report.add(Problem(str(path), key, _strip_prefix(str(exc), component),
                                   src.line_of(key, data.get(key))))
                return
            for p in component_problems(compiled, path, listed_types(data), implements, src):
                report.add(p)
        if not found and report.ok:
            try:  # the product loader must agree
                load_manifest(path)
            except ConfigError as exc:
                report.add(Problem.of(exc))

    def _world(self, src: Source, build: BuildTable | None) -> list[Problem]:
        """`[build] world` names a world of theater-otp's WIT (build's own world needs none)."""
        if build is None or build.world is None:
            return []
        _, worlds = known_interfaces()
        if build.world in worlds:
            return []
        return [Problem.of(src.error("build.world", f"{build.world!r} is not a theater:simple world: "
                                                    f"expected {' or '.join(sorted(worlds))}", build.world))]

    # ---- a supervision.toml ----------------------------------------------------------------------

    def supervision(self, path: Path, report: Report) -> None:
        """The tree's rules (config.rules, collecting), then each manifest it names, once."""
        try:
            src = Source(path.resolve())
            data = src.parse()
        except ConfigError as exc:
            report.add(Problem.of(exc))
            return
        manifests: list[Path] = []

        def note(manifest: Path) -> ActorManifest | None:
            if manifest not in manifests:
                manifests.append(manifest)
            return None

        problems = Problems(collect=True)
        read_supervision(src, data, problems, note)
        for error in problems.found:
            report.add(Problem.of(error))
        for m in manifests:
            self.manifest(m, report)
        if report.ok:
            try:  # the product loader must agree
                load_supervision(path)
            except ConfigError as exc:
                report.add(Problem.of(exc))


def validate(path: Path, say: Say | None = None) -> Report:
    """Check a manifest, a project folder (its manifest.toml) or a supervision.toml; every problem found."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.toml"
    checker = _Checker(say)
    kind = "supervision" if is_supervision(path) else "manifest"
    report = Report(path.resolve(), kind)
    if kind == "supervision":
        checker.supervision(path, report)
    else:
        checker.manifest(path, report)
    return report
