"""Loading components: compile once per content hash, deserialize everywhere else.

Compiling happens in the node (or in `build`), never in a forked worker:
wasmtime's parallel compiler starts threads, and a process forked after that
which compiles again can hang. Workers only deserialize a cached artifact,
which takes well under a millisecond for small actors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import wasmtime
import wasmtime.component as wc

from ..errors import ComponentError
from ..home import cache_dir
from .handlers import check_imports, missing_exports
from .handlers.base import PACKAGE

ACTOR_EXPORT = f"{PACKAGE}/actor"
MESSAGE_CLIENT_EXPORT = f"{PACKAGE}/message-server-client"

def new_engine(parallel_compilation: bool = True) -> wasmtime.Engine:
    """The one engine configuration every compile and deserialize uses."""
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    cfg.parallel_compilation = parallel_compilation
    return wasmtime.Engine(cfg)


#: Bumped when new_engine's settings change, so stale artifacts are never loaded.
ENGINE_FINGERPRINT = f"wasmtime-{importlib.metadata.version('wasmtime')}-epoch-1"


@dataclass(frozen=True)
class CompiledComponent:
    """A component checked for the actor ABI, with its cached artifact's path."""

    source: Path
    content_hash: str
    artifact: Path
    exports: dict[str, tuple[str, ...]]  # interface -> function names
    imports: tuple[str, ...]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_path(digest: str) -> Path:
    return cache_dir() / "components" / f"{digest}-{ENGINE_FINGERPRINT}.cwasm"


def _read_source(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ComponentError(f"{path}: cannot read component ({exc.strerror})") from None


def compile_component(path: Path, engine: wasmtime.Engine) -> CompiledComponent:
    """Compile (or find in the cache) and check the component at `path`."""
    data = _read_source(path)
    digest = content_hash(data)
    artifact = artifact_path(digest)
    component = None
    if artifact.is_file():
        try:
            component = wc.Component.deserialize_file(engine, str(artifact))
        except wasmtime.WasmtimeError:
            component = None  # a damaged or foreign artifact: compile again
    if component is None:
        try:
            source: bytes | str = data
            if path.suffix == ".wat" or data.lstrip()[:1] == b"(":
                source = data.decode("utf-8")
            component = wc.Component(engine, source)
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ComponentError(f"{path}: not a valid WebAssembly component: {first}") from None
        _atomic_write(artifact, component.serialize())
    with component:
        exports, imports = _describe(component, engine)
    return CompiledComponent(path, digest, artifact, exports, imports)


def load_artifact(engine: wasmtime.Engine, artifact: Path) -> wc.Component:
    """Deserialize a cached artifact (what workers do)."""
    return wc.Component.deserialize_file(engine, str(artifact))


def _describe(component: wc.Component, engine: wasmtime.Engine) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    ctype = component.type
    exports: dict[str, tuple[str, ...]] = {}
    for name, ext in ctype.exports(engine).items():
        item = ext.ty
        funcs: tuple[str, ...] = ()
        if isinstance(item, wc.ComponentInstanceType):
            funcs = tuple(item.exports(engine).keys())
        exports[name] = funcs
    imports = tuple(ctype.imports(engine).keys())
    return exports, imports


def check_actor_abi(compiled: CompiledComponent, granted: Iterable[str], manifest_path: Path,
                    exports_too: bool = True) -> None:
    """The component exports actor.init and imports only what the manifest grants (the registry's
    check): the first problem, as a ComponentError naming the interface and the line to add."""
    if "init" not in compiled.exports.get(ACTOR_EXPORT, ()):
        raise ComponentError(
            f"{compiled.source}: component does not export {ACTOR_EXPORT}.init: every actor must implement "
            f"`init: func(state: option<list<u8>>) -> result<tuple<option<list<u8>>>, string>`")
    granted = list(granted)
    for handler_type, iface in missing_exports(compiled.exports, granted) if exports_too else ():
        raise ComponentError(f"{manifest_path}: the manifest grants {handler_type} but the component does not export "
                             f"{iface}: every request would crash the actor")
    problems = check_imports(compiled.imports, granted)
    if problems:
        first = problems[0]
        where = manifest_path if first.handler is not None else compiled.source
        raise ComponentError(f"{where}: {first}")


def _atomic_write(path: Path, data: bytes | bytearray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
