"""Everything `up` checks before a single process starts: config, components, a free home."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psutil

from ..config.loader import load_server_root, load_supervision
from ..config.model import ChildSpec, ChildType
from ..errors import ComponentError, TheaterError
from ..home import Home
from ..worker.component import (
    CompiledComponent,
    artifact_path,
    check_actor_abi,
    compile_component,
    content_hash,
    new_engine,
)
from ..worker.handlers import granted_types
from .http import listeners, port_problems

#: Components smaller than this compile in well under a second: no progress line for them.
PROGRESS_ABOVE_BYTES = 1_000_000


def is_cached(component: Path) -> bool:
    try:
        return artifact_path(content_hash(component.read_bytes())).is_file()
    except OSError:
        return True  # unreadable: compile_component reports it


def iter_workers(spec: ChildSpec):
    if spec.type is ChildType.WORKER:
        yield spec
    for child in spec.children:
        yield from iter_workers(child)


def compile_tree(tree: ChildSpec, progress=None) -> dict[Path, CompiledComponent]:
    """Compile (or load from the cache) every component of the tree and check it against its manifest.

    `progress(text)` is told before each component that is not in the cache yet (a large
    component, e.g. a Python actor, takes 10-30 s to compile the first time).
    """
    engine = new_engine()
    compiled: dict[Path, CompiledComponent] = {}
    for spec in iter_workers(tree):
        manifest = spec.manifest
        if manifest.component not in compiled:
            size = manifest.component.stat().st_size if manifest.component.exists() else 0
            if progress is not None and size > PROGRESS_ABOVE_BYTES and not is_cached(manifest.component):
                progress(f"compiling {manifest.component} ({size / 1e6:.1f} MB; first start only, then cached)")
            try:
                compiled[manifest.component] = compile_component(manifest.component, engine)
            except ComponentError as exc:
                raise ComponentError(f"{manifest.source}: component: {exc}") from None
        check_actor_abi(compiled[manifest.component], granted_types(manifest.handlers), manifest.source)
    return compiled


class PortUnavailable(TheaterError):
    """An http-server port that two actors claim or that another process holds."""


def load_and_check(config: Path | None, progress=None, server: bool = False
                   ) -> tuple[ChildSpec, dict[Path, CompiledComponent]]:
    """The tree `config` describes, checked and compiled; with `server`, the empty root supervisor
    of `theater-otp server` (its flags from `config`, if given)."""
    if server:
        tree = load_server_root(config)
    elif config is None:
        raise TheaterError("no supervision.toml given")
    else:
        tree = load_supervision(config)
    problems = port_problems(listeners(tree))
    if problems:
        raise PortUnavailable("; ".join(problems))
    return tree, compile_tree(tree, progress)


class NodeAlreadyRunning(TheaterError):
    pass


def running_node_pid(home: Home) -> int | None:
    """The pid of a live node at `home`, or None (a stale pid file does not count)."""
    try:
        pid = int(home.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid if "theater_otp.node" in cmdline else None


class ChainUnavailable(TheaterError):
    """HOME/chain.db cannot be opened: nothing could be recorded, so nothing starts."""


def _check_chain_db(home: Home) -> None:
    try:
        conn = sqlite3.connect(home.chain_db, timeout=5)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ChainUnavailable(f"cannot open the chain database {home.chain_db}: {exc}") from None


def claim_home(home: Home) -> None:
    """Prepare `home` for a new node: refuse if one runs, clear what a dead one left."""
    home.prepare()
    pid = running_node_pid(home)
    if pid is not None and pid != os.getpid():
        raise NodeAlreadyRunning(f"a node is already running at {home.root} (pid {pid}); "
                                 f"stop it with `theater-otp down --home {home.root}`")
    _check_chain_db(home)
    for leftover in home.run_dir.glob("*.sock"):
        leftover.unlink(missing_ok=True)
    for leftover in home.crash_dir.glob("*"):
        leftover.unlink(missing_ok=True)
    home.pidfile.write_text(f"{os.getpid()}\n")
