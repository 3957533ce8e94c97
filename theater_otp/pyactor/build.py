"""`theater-otp build`: a Python actor project -> component (componentize-py) -> cached artifact (wasmtime).

Inputs come from the manifest (`manifest.toml` of the project folder, or a
manifest path): `component` is where the .wasm goes; the optional `[build]`
table says what to build:

    [build]
    source = "."             # folder holding the module (relative to the manifest)
    module = "app"           # the module with the export classes
    world = "actor-world"    # optional: a world of the WIT folder; default: one generated from the grant
    wit = "wit"              # WIT folder (default: SOURCE/wit, else the manifest's wit/, else theater-otp's)

The generated world. componentize-py makes the component import every
interface its world lists, and theater-otp refuses to start a component that
imports an interface its manifest does not grant. So, unless `[build] world`
names one, build writes a world `granted` that imports exactly what the
manifest grants: runtime and message-server-host always, plus the interfaces
(in theater:simple) of each `[[handler]]` type, read from the handler
registry; it exports actor and message-server-client, and
supervisor-handlers when the supervisor handler is granted (or `[interface]
implements` lists it). The world file goes into a build-private copy of the
WIT folder beside the output (`build/actor-wit/theater-otp-granted.wit` for
`build/actor.wasm`); an interface the project's WIT folder lacks (a project
created before that handler existed) is taken from theater-otp's own WIT.

A stamp next to the output (`actor.wasm.stamp`) records the SHA-256 of every
input: each .py file under `source`, the SDK when it comes from theater-otp,
each .wit file, the world (the generated world's text, so a changed grant
rebuilds), the module, the componentize-py version. When it matches (and the
.wasm and its compiled artifact are still there), build does nothing and
returns in milliseconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..config.model import ActorManifest
from ..config.rules import (
    BuildTable,
    Problems,
    full_interface_name,
    has_build_table,
    listed_types,
    read_build_table,
    read_component_ref,
    read_implements,
    read_name,
    read_supervision,
)
from ..config.source import Source
from ..errors import ConfigError, TheaterError
from ..worker.component import CompiledComponent, artifact_path
from ..worker.handlers import PACKAGE, REGISTRY
from .checks import Problem, compile_with_progress, component_problems, wit_interfaces
from .sdk import SDK_DIR

#: Bumped when the stamp's meaning changes.
STAMP_FORMAT = 1
#: The world build generates when `[build] world` is not given, and the file it is written to.
GENERATED_WORLD = "granted"
GENERATED_WORLD_FILE = "theater-otp-granted.wit"
#: Exported by every actor the generated world describes; supervisor-handlers is added for supervisors.
BASE_EXPORTS = ("actor", "message-server-client")
#: Folders never scanned for .py inputs.
_SKIP_DIRS = {"__pycache__", "build", "wit", "venv", ".venv", "node_modules", "site-packages", "dist"}

Say = Callable[[str], None]


class BuildError(TheaterError):
    """A build failed. `str()` is the one-line summary; `details` the extracted traceback (or "")."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class BuildSpec:
    manifest: Path
    name: str
    output: Path
    source: Path
    module: str
    world: str
    wit: Path
    sdk_dir: Path | None            # on the Python path after `source` when the project has no theater_sdk.py
    granted: frozenset[str]
    implements: tuple[str, ...] | None
    #: the generated world (None when `[build] world` names one): the text of its .wit file
    world_wit: str | None = None
    #: the interfaces the generated world imports / exports (short names in theater:simple)
    world_imports: tuple[str, ...] = ()
    world_exports: tuple[str, ...] = ()
    #: .wit files of theater-otp added to the build's WIT copy (interfaces the project's WIT lacks)
    extra_wit: tuple[Path, ...] = ()

    @property
    def stamp_file(self) -> Path:
        return self.output.with_name(self.output.name + ".stamp")

    @property
    def build_wit(self) -> Path:
        """Where the build-private WIT copy with the generated world goes (`build/actor-wit/`)."""
        return self.output.with_name(self.output.stem + "-wit")

    @property
    def python_path(self) -> list[Path]:
        return [self.source] + ([self.sdk_dir] if self.sdk_dir else [])


@dataclass
class BuildResult:
    name: str
    manifest: str
    wasm: str
    wasm_sha256: str
    bytes: int
    artifact: str
    world: str
    module: str
    skipped: bool                   # nothing changed: neither step ran
    componentized: bool             # componentize-py ran
    compiled: bool                  # wasmtime compiled (the artifact was not in the cache)
    componentize_s: float = 0.0
    compile_s: float = 0.0
    total_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: the generated world's imports (theater:simple/...); None when `[build] world` names a world
    imports: list[str] | None = None

    def to_plain(self) -> dict:
        return asdict(self)


# ---- the project ---------------------------------------------------------------------------------

def read_spec(target: Path) -> BuildSpec:
    """The build inputs of a project folder (its manifest.toml) or of a manifest file, read through
    config.rules (name, component, `[build]`, the grant, `[interface]`)."""
    target = Path(target)
    manifest = target / "manifest.toml" if target.is_dir() else target
    if not manifest.is_file():
        where = f"no manifest.toml in {target}" if target.is_dir() else f"{target}: file not found"
        raise BuildError(f"{where} (make a project with `theater-otp create NAME`)")
    manifest = manifest.resolve()
    try:
        src = Source(manifest)
        data = src.parse()
        name = read_name(src, data)
        component = read_component_ref(src, data)
        table = read_build_table(src, data, Problems()) or BuildTable()
    except ConfigError as exc:
        raise BuildError(str(exc)) from None
    if not component.endswith(".wasm"):
        raise BuildError(f"{manifest}: component: expected the path of the .wasm to build, "
                         f"e.g. component = \"build/actor.wasm\"")
    here = manifest.parent
    source = (here / (table.source if table.source is not None else ".")).resolve()
    module = table.module if table.module is not None else "app"
    world = table.world if table.world is not None else GENERATED_WORLD
    if not ((source / f"{module}.py").is_file() or (source / module / "__init__.py").is_file()):
        raise BuildError(f"{manifest}: build.module: no module {module!r} in {source} "
                         f"(expected {source / (module + '.py')})")
    if table.wit is not None:
        wit = (here / table.wit).resolve()
    elif (source / "wit").is_dir():
        wit = source / "wit"
    elif (here / "wit").is_dir():
        wit = here / "wit"
    else:
        from .scaffold import repo_wit_dir
        wit = repo_wit_dir()
    if not wit.is_dir() or not any(wit.glob("*.wit")):
        raise BuildError(f"{manifest}: build.wit: no .wit files in {wit}")
    has_sdk = (source / "theater_sdk.py").is_file()
    # a bad handler entry or implements name does not stop a build: `validate` and `up` name it
    implements = read_implements(src, data, Problems(collect=True))
    spec = BuildSpec(manifest=manifest, name=name, output=(here / component).resolve(), source=source,
                     module=module, world=world, wit=wit, sdk_dir=None if has_sdk else SDK_DIR,
                     granted=listed_types(data), implements=implements)
    if table.world is None:
        spec = _with_generated_world(spec)
    return spec


# ---- the generated world -------------------------------------------------------------------------

def granted_interfaces(granted: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The theater:simple interfaces a component may import with this grant, as the handler registry
    names them: those of the always-granted handlers (runtime, message-server-host) first, then the
    others, each group sorted (so the world's text, and the stamp, do not depend on the registry's
    order). Unknown types are left out (`validate` and `up` name them)."""
    always: set[str] = set()
    others: set[str] = set()
    for handler_type, handler in REGISTRY.items():
        if handler.in_manifest and PACKAGE in handler.packages and (handler.always_granted or handler_type in granted):
            (always if handler.always_granted else others).update(handler.interfaces)
    return tuple(sorted(always, key=lambda i: (i != "runtime", i))) + tuple(sorted(others - always))


def generated_world_text(imports: tuple[str, ...], exports: tuple[str, ...], world: str = GENERATED_WORLD) -> str:
    """The .wit text of the generated world."""
    lines = [f"package {PACKAGE};", "",
             "// Written by `theater-otp build` from the manifest's handlers: the component imports exactly",
             "// what the manifest grants. Name a world in the manifest's [build] table to use another one.",
             f"world {world} {{"]
    lines += [f"    import {i};" for i in imports] + [""] + [f"    export {e};" for e in exports] + ["}", ""]
    return "\n".join(lines)


def _with_generated_world(spec: BuildSpec) -> BuildSpec:
    """`spec` with the world generated from its grant, and the theater-otp .wit files its WIT lacks."""
    imports = granted_interfaces(spec.granted)
    exports = list(BASE_EXPORTS)
    wants_handlers = f"{PACKAGE}/supervisor-handlers" in {full_interface_name(i) for i in spec.implements or ()}
    if "supervisor" in spec.granted or wants_handlers:
        exports.append("supervisor-handlers")
    for handler_type in sorted(spec.granted):
        handler = REGISTRY.get(handler_type)
        exports.extend(e for e in (handler.exports if handler else ()) if e not in exports)
    declared, worlds = wit_interfaces(spec.wit)
    if GENERATED_WORLD in worlds or (spec.wit / GENERATED_WORLD_FILE).exists():
        raise BuildError(f"{spec.manifest}: build.world: {spec.wit} already declares a world {GENERATED_WORLD!r} "
                         f"(the name of the world build generates): rename it, or name the world to build "
                         f"in [build] world")
    extra: list[Path] = []
    missing = [i for i in (*imports, *exports) if f"{PACKAGE}/{i}" not in declared]
    if missing:
        from .scaffold import repo_wit_dir
        repo = repo_wit_dir()
        by_file = {f: wit_interfaces_of_file(f) for f in sorted(repo.glob("*.wit"))}
        for name in missing:
            found = next((f for f, names in by_file.items() if f"{PACKAGE}/{name}" in names), None)
            if found is None:
                raise BuildError(f"{spec.manifest}: handler: the generated world needs {PACKAGE}/{name}, which "
                                 f"neither {spec.wit} nor theater-otp's WIT ({repo}) declares")
            if (spec.wit / found.name).exists():
                raise BuildError(f"{spec.manifest}: build.wit: {spec.wit / found.name} does not declare "
                                 f"{PACKAGE}/{name}: replace it with theater-otp's {found}")
            if found not in extra:
                extra.append(found)
    return replace(spec, world_wit=generated_world_text(imports, tuple(exports)), world_imports=imports,
                   world_exports=tuple(exports), extra_wit=tuple(extra))


def wit_interfaces_of_file(path: Path) -> set[str]:
    """The full interface names one .wit file declares (top-level `interface NAME {` lines)."""
    package, names = PACKAGE, set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("//", 1)[0]
        if m := re.match(r"^\s*package\s+([a-z0-9-]+:[a-z0-9-]+)", line):
            package = m.group(1)
        elif m := re.match(r"^interface\s+([a-z][a-z0-9-]*)\s*\{", line):
            names.add(f"{package}/{m.group(1)}")
    return names


def write_build_wit(spec: BuildSpec) -> Path:
    """The WIT folder componentize-py reads: the project's own, or (generated world) a build-private
    copy of it with theater-otp's missing files and the world file."""
    if spec.world_wit is None:
        return spec.wit
    target = spec.build_wit
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for f in sorted(spec.wit.glob("*.wit")):
        shutil.copyfile(f, target / f.name)
    if (spec.wit / "deps").is_dir():
        shutil.copytree(spec.wit / "deps", target / "deps")
    for f in spec.extra_wit:
        shutil.copyfile(f, target / f.name)
    (target / GENERATED_WORLD_FILE).write_text(spec.world_wit, encoding="utf-8")
    return target


def componentize_version() -> str:
    try:
        return importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        exe = componentize_executable()
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        return out.rsplit(" ", 1)[-1] or "unknown"


def componentize_executable() -> str:
    beside = Path(sys.executable).with_name("componentize-py")
    if beside.is_file():
        return str(beside)
    found = shutil.which("componentize-py")
    if found:
        return found
    raise BuildError("componentize-py is not installed: pip install componentize-py==0.25.1")


def _inputs(spec: BuildSpec) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(spec.source):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if n.endswith(".py")]
    if spec.sdk_dir is not None:
        files.append(spec.sdk_dir / "theater_sdk.py")
    return files


def input_stamp(spec: BuildSpec, version: str | None = None) -> str:
    """SHA-256 over every build input (names and contents) and the build settings."""
    h = hashlib.sha256()
    settings = {"format": STAMP_FORMAT, "world": spec.world, "module": spec.module,
                "componentize-py": version or componentize_version()}
    if spec.world_wit is not None:  # the generated world: its text changes with the grant
        settings["world_wit"] = spec.world_wit
    h.update(json.dumps(settings, sort_keys=True).encode())
    wit_files = [f for f in sorted(spec.wit.rglob("*.wit")) if spec.build_wit not in f.parents]  # not our copy
    for label, base, files in (("py", spec.source, _inputs(spec)), ("wit", spec.wit, wit_files),
                               ("wit+", None, list(spec.extra_wit))):
        for f in files:
            try:
                rel = f.relative_to(base).as_posix() if base is not None else f.name
            except ValueError:
                rel = f"sdk/{f.name}"
            h.update(f"{label}:{rel}\0".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _read_stamp(spec: BuildSpec) -> dict:
    try:
        return json.loads(spec.stamp_file.read_text())
    except (OSError, ValueError):
        return {}


def _wasm_unchanged(spec: BuildSpec, stamp: dict) -> bool:
    try:
        st = spec.output.stat()
    except OSError:
        return False
    return st.st_size == stamp.get("bytes") and st.st_mtime_ns == stamp.get("mtime_ns")


# ---- componentize-py ----------------------------------------------------------------------------

_ASSERT_RE = re.compile(r"^AssertionError: (.*?)(?:\n\s*\nCaused by:\n(.*?))?(?:\n\s*\nStack backtrace:|\Z)",
                        re.S | re.M)


def extract_error(output: str, python_path: list[Path]) -> tuple[str, str]:
    """(one-line summary, the relevant traceback) from componentize-py's output.

    componentize-py reports a failure as a Python traceback of its own script
    ending in `AssertionError: <the real error>`, then `Caused by:` and a Rust
    backtrace. The real error is kept, with the bundle's paths (/0/app.py)
    mapped back to the project's files.
    """
    m = _ASSERT_RE.search(output)
    if m is None:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        cut = next((i for i, ln in enumerate(lines) if ln.startswith("Stack backtrace:")), len(lines))
        lines = lines[:cut]
        summary = next((ln.strip() for ln in reversed(lines) if ln.strip() and not ln.startswith(" ")),
                       "componentize-py failed")
        return summary, "\n".join(lines[-30:])
    body = m.group(1).rstrip()
    caused = (m.group(2) or "").strip()
    stub = re.search(r"called trapping stub: (\S+)", caused)
    if stub:  # module-level code called an import while componentize-py ran it at build time
        return (f"the module called {stub.group(1)} at build time: componentize-py runs the module's top "
                f"level while building, where host functions cannot be called; call them inside the "
                f"methods (init, handle_*)", "")
    for i, folder in enumerate(python_path):
        body = body.replace(f'"/{i}/', f'"{folder}/')
    lines = body.splitlines()
    is_traceback = lines and (lines[0].startswith("Traceback") or lines[0].lstrip().startswith("File "))
    if is_traceback:
        summary = next((ln for ln in reversed(lines) if ln and not ln.startswith(" ")), lines[-1])
    elif len(lines) == 1:
        summary, body = lines[0], ""
    else:
        summary = caused.splitlines()[0].strip() if caused else lines[0]
    return summary.strip(), body


def _componentize(spec: BuildSpec, say: Say) -> float:
    exe = componentize_executable()
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    partial = spec.output.with_name(f".{spec.output.name}.partial")
    wit = write_build_wit(spec)
    for f in spec.extra_wit:
        say(f"note: {spec.wit} lacks {f.name}'s interface(s): using theater-otp's {f}")
    cmd = [exe, "-d", str(wit), "-w", spec.world, "componentize", spec.module]
    for folder in spec.python_path:
        cmd += ["-p", str(folder)]
    cmd += ["-o", str(partial)]
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)   # else componentize-py adds that venv's site-packages before ours
    env["RUST_BACKTRACE"] = "0"    # the Rust backtrace is noise to an actor author
    what = (f"world {spec.world}: imports {', '.join(spec.world_imports)}" if spec.world_wit is not None
            else f"world {spec.world}")
    say(f"building {spec.name}: componentize-py {spec.module}.py ({what}) ...")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=spec.source, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = b""
    while True:
        try:
            output, _ = proc.communicate(timeout=5)
            break
        except subprocess.TimeoutExpired:
            say(f"  componentize-py: {time.monotonic() - t0:.0f} s")
        except BaseException:
            proc.kill()
            proc.wait()
            partial.unlink(missing_ok=True)
            raise
    elapsed = time.monotonic() - t0
    text = output.decode("utf-8", "replace")
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        summary, details = extract_error(text, spec.python_path)
        raise BuildError(f"{spec.manifest.parent.name}/{spec.module}.py: {summary}", details)
    os.replace(partial, spec.output)
    say(f"built {_rel(spec.output)} ({spec.output.stat().st_size / 1e6:.1f} MB) in {elapsed:.1f} s")
    return elapsed


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- build ---------------------------------------------------------------------------------------

def build(target: Path, force: bool = False, say: Say | None = None) -> BuildResult:
    """Build the project at `target` (folder or manifest) unless its stamp says nothing changed."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    t_start = time.monotonic()
    spec = read_spec(target)
    version = componentize_version()
    stamp = input_stamp(spec, version)
    previous = _read_stamp(spec)
    same_inputs = not force and previous.get("stamp") == stamp and _wasm_unchanged(spec, previous)
    componentize_s = compile_s = 0.0
    componentized = compiled = False
    if same_inputs:
        wasm_sha = previous["wasm_sha256"]
    else:
        componentize_s = _componentize(spec, say)
        componentized = True
        wasm_sha = hashlib.sha256(spec.output.read_bytes()).hexdigest()
    artifact = artifact_path(wasm_sha)
    warnings: list[str] = list(previous.get("warnings", [])) if same_inputs else []
    if not artifact.is_file() or componentized:
        t0 = time.monotonic()
        was_cached = artifact.is_file()
        try:
            component = compile_with_progress(spec.output, say)
        except TheaterError as exc:
            raise BuildError(str(exc)) from None
        if not was_cached:
            compile_s = time.monotonic() - t0
            compiled = True
            say(f"compiled in {compile_s:.1f} s; cached at {artifact}")
        warnings = [str(p) for p in _component_warnings(spec, component)]
        for w in warnings:
            say(f"warning: {w}")
    st = spec.output.stat()
    spec.stamp_file.write_text(json.dumps({
        "stamp": stamp, "wasm_sha256": wasm_sha, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
        "world": spec.world, "module": spec.module, "componentize-py": version, "warnings": warnings,
    }, indent=2) + "\n")
    return BuildResult(name=spec.name, manifest=str(spec.manifest), wasm=str(spec.output), wasm_sha256=wasm_sha,
                       bytes=st.st_size, artifact=str(artifact), world=spec.world, module=spec.module,
                       skipped=same_inputs and not compiled, componentized=componentized, compiled=compiled,
                       componentize_s=round(componentize_s, 3), compile_s=round(compile_s, 3),
                       total_s=round(time.monotonic() - t_start, 3), warnings=warnings,
                       imports=[f"{PACKAGE}/{i}" for i in spec.world_imports] if spec.world_wit is not None else None)


def buildable_manifests(supervision: Path) -> list[Path]:
    """The manifests of a supervision.toml that have a [build] table, each once, in tree order (the
    tree's own problems are left to `validate` and `up`)."""
    try:
        src = Source(Path(supervision).resolve())
        data = src.parse()
    except ConfigError as exc:
        raise BuildError(str(exc)) from None
    found: list[Path] = []

    def note(manifest: Path) -> ActorManifest | None:
        if manifest not in found and has_build_table(manifest):
            found.append(manifest)
        return None

    read_supervision(src, data, Problems(collect=True), note)
    return found


def build_tree(supervision: Path, force: bool = False, say: Say | None = None) -> list[BuildResult]:
    """Build every Python actor of a supervision.toml (the manifests with a [build] table)."""
    manifests = buildable_manifests(supervision)
    if not manifests:
        raise BuildError(f"{supervision}: no manifest in this tree has a [build] table: nothing to build")
    return [build(m, force=force, say=say) for m in manifests]


def _component_warnings(spec: BuildSpec, component: CompiledComponent) -> list[Problem]:
    try:
        return component_problems(component, spec.manifest, spec.granted, spec.implements)
    except TheaterError:
        return []


__all__ = ["GENERATED_WORLD", "BuildError", "BuildResult", "BuildSpec", "build", "build_tree", "buildable_manifests",
           "extract_error", "generated_world_text", "granted_interfaces", "input_stamp", "read_spec",
           "write_build_wit"]
