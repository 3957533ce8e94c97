"""Load supervision.toml and actor manifests into records, refusing the first broken rule.

The rules themselves are in `config.rules` (which `validate` and `build` read
too); here they run with a `Problems()` that raises, so the first broken rule,
in OTP's order, is one `ConfigError` naming the file, the key path, the line
where it can be found, the bad value and what is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from .model import ActorManifest, ChildSpec, SupFlags
from .rules import Problems, read_child_spec, read_manifest, read_server_root, read_supervision
from .source import Source, Table

R = TypeVar("R")


def _read(record: R | None, src: Source) -> R:
    """Invariant: with a `Problems()` that raises, a reader never returns None."""
    if record is None:
        raise AssertionError(f"{src.path}: a rule was broken but nothing was raised")
    return record


def load_manifest(path: str | Path) -> ActorManifest:
    """Load an actor manifest; the component path is resolved against the manifest's folder."""
    src = Source(Path(path).resolve())
    return _read(read_manifest(src, src.parse(), Problems()), src)


def load_supervision(path: str | Path) -> ChildSpec:
    """Load a supervision.toml: the root supervisor as a ChildSpec of type SUPERVISOR."""
    src = Source(Path(path).resolve())
    return _read(read_supervision(src, src.parse(), Problems(), load_manifest), src)


def load_server_root(path: str | Path | None) -> ChildSpec:
    """The empty root supervisor of `server`: its flags from `path` (a supervision.toml without
    children), or one_for_one with the default flags when there is no file."""
    src = Source(Path(path).resolve()) if path is not None else Source(Path("server"), text="[supervisor]\n")
    return _read(read_server_root(src, src.parse(), Problems()), src)


def parse_dynamic_child(table: Table, origin: str, flags: SupFlags) -> ChildSpec:
    """A child spec given at run time (`start-child`); errors name `origin` instead of a file."""
    src = Source(Path(origin), text="")
    return _read(read_child_spec(src, table, "child", flags, Problems(), load_manifest), src)
