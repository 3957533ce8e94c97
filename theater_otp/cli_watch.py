"""`theater-otp watch DIR --manifest M`: rebuild an actor when its sources change and restart it in
the running node.

DIR is polled every half second (mtimes and sizes; no dependency). On a change the actor of M is
built as `theater-otp build` builds it (a manifest with a `[build]` table: componentize-py; a WAT
actor's component is its .wat itself), its component compiled and its grants checked here, and
only then is the running actor replaced: a broken source is one `error:` line and the old actor
keeps running.

The node compiles a component once per *path* (node/components.py keys its cache by source path),
so a changed file at the same path would start the old code again. So each deployed component is
copied to a path named by its content hash (HOME/watch/<sha>-<file>), and the actor is started
from a manifest that names that copy: `.<stem>.watch.toml`, written beside M so that M's relative
paths mean the same. Replacing is stop (terminate_child + delete_child) then start_child with the
same child id under the same supervisor and restart type.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import RemoteError, TheaterError
from .home import Home

#: How often DIR is polled, and how long a change must rest before it is built (an editor's save
#: can be several writes).
POLL_S = 0.5
SETTLE_S = 0.2

_COMPONENT_LINE = re.compile(r"""^(\s*component\s*=\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*')""", re.M)
_TABLE = re.compile(r"^\s*\[", re.M)

Snapshot = dict[str, tuple[int, int]]


def snapshot(folder: Path, skip: tuple[Path, ...] = ()) -> Snapshot:
    """(mtime ns, size) of every file under `folder`, hidden files and folders, `__pycache__` and
    the folders in `skip` (the node's home, if it is inside) left out."""
    out: Snapshot = {}
    skipped = {str(p) for p in skip}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"
                   and os.path.join(root, d) not in skipped]
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # removed meanwhile
                continue
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """The files added, removed or modified between two snapshots, sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


@dataclass(frozen=True)
class Built:
    """A component ready to deploy: the actor's name, its component and the component's hash."""

    name: str
    component: Path
    digest: str


def build(manifest: Path, say: Callable[[str], None]) -> Built:
    """Build the actor of `manifest` as `theater-otp build` does (if it has a `[build]` table), then
    compile its component and check its grants, as the node will. TheaterError with one line."""
    import tomllib

    from .config.loader import load_manifest
    from .pyactor.checks import compile_with_progress
    from .worker.component import check_actor_abi
    from .worker.handlers import granted_types

    try:
        has_build = "build" in tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TheaterError(f"{manifest}: {exc}") from None
    if has_build:
        from .pyactor.build import build as build_python
        build_python(manifest, say=say)
    m = load_manifest(manifest)
    compiled = compile_with_progress(m.component, say)
    check_actor_abi(compiled, granted_types(m.handlers), m.source)
    return Built(m.name, m.component, compiled.content_hash)


def derived_manifest(manifest: Path, component: Path) -> tuple[Path, str]:
    """(path, text) of the manifest `watch` starts the actor from: M's text with its `component`
    naming `component`, beside M (so M's other relative paths resolve the same)."""
    text = manifest.read_text(encoding="utf-8")
    m = _COMPONENT_LINE.search(text)
    table = _TABLE.search(text)
    if m is None or (table is not None and table.start() < m.start()):
        raise TheaterError(f"{manifest}: component: watch needs a top-level `component = \"...\"` line")
    text = text[:m.start(2)] + json.dumps(str(component)) + text[m.end(2):]
    return manifest.parent / f".{manifest.stem}.watch.toml", text


def _walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from _walk(child)


class Watch:
    """One actor kept in step with its sources. `say` prints progress, `out` one line per deploy."""

    def __init__(self, folder: Path, manifest: Path, home: Home, say: Callable[[str], None]):
        self.folder = folder.resolve()
        self.manifest = manifest.resolve()
        self.home = home
        self.say = say
        self.derived = self.manifest.parent / f".{self.manifest.stem}.watch.toml"
        self.digest: str | None = None  # of the component this watch last deployed

    def running(self, snap: dict) -> dict | None:
        """The `tree` node of the actor started from M (or from the manifest this watch wrote)."""
        names = {str(self.manifest), str(self.derived)}
        return next((n for n in _walk(snap) if n["kind"] == "actor" and n.get("manifest") in names), None)

    def deploy(self, built: Built) -> str:
        """Replace the running actor of M (or start it under the root) with `built`; the line to print."""
        from .cli import _child_id_for, stop_target
        from .client import ControlClient

        copy = self.home.root / "watch" / f"{built.digest[:16]}-{built.component.name}"
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(copy.name + ".tmp")
            shutil.copyfile(built.component, tmp)
            os.replace(tmp, copy)
        path, text = derived_manifest(self.manifest, copy)
        with ControlClient(self.home) as c:
            snap = c.call("tree")
            node = self.running(snap)
            if node is not None:
                sup, child_id = node["path"].rsplit("/", 1)
                restart = node.get("restart")
                old_text = self.derived.read_text(encoding="utf-8") if node["manifest"] == str(self.derived) else None
                old_manifest = Path(node["manifest"])
                stop_target(c, node["path"])
            else:
                sup, restart, old_text, old_manifest = snap["path"], None, None, None
                taken = {row["id"] for row in c.call("which_children", {"supervisor": sup})["children"]}
                base = _child_id_for(built.name)
                child_id = next(i for i in (base, *(f"{base}-{n}" for n in range(2, 10_000))) if i not in taken)
            path.write_text(text, encoding="utf-8")
            body = {"supervisor": sup, "id": child_id, "manifest": str(path), "restart": restart}
            try:
                result = c.call("start_child", body, timeout_s=3600)["result"]
            except RemoteError:
                if old_manifest is not None:  # put the old one back, then report the failure
                    if old_text is not None:
                        path.write_text(old_text, encoding="utf-8")
                    c.call("start_child", {**body, "manifest": str(old_manifest)}, timeout_s=3600)
                raise
        self.digest = built.digest
        verb = "restarted" if node is not None else "started"
        return (f"{verb} {result['path']} (pid {result['pid']}) with {built.component.name} "
                f"sha256 {built.digest[:12]}")

    def once(self) -> str:
        """Build and deploy; the line to print ('unchanged' when the component did not change)."""
        built = build(self.manifest, self.say)
        if built.digest == self.digest:
            return f"{built.name}: component unchanged (sha256 {built.digest[:12]}), not restarted"
        return self.deploy(built)


def run(folder: Path, manifest: Path, home: Home, changes: int | None) -> int:
    """The watch loop: until Ctrl-C (exit 0), or after `changes` rebuilds (the hidden `--changes`)."""
    from .cli_progress import Progress
    from .client import ControlClient

    skip = (home.root,)
    watch = Watch(folder, manifest, home, lambda line: None)
    with ControlClient(home) as c:  # no node: NodeNotRunning, exit 3, before anything is built
        node = watch.running(c.call("tree"))
    try:
        before = snapshot(watch.folder, skip)
        if node is None:
            _deploy(watch)
        print(f"watching {watch.folder} for changes to {watch.manifest.name}"
              + (f" (running as {node['path']}, pid {node['pid']})" if node else "") + "; Ctrl-C stops",
              file=sys.stderr, flush=True)
        done = 0
        while changes is None or done < changes:
            time.sleep(POLL_S)
            after = snapshot(watch.folder, skip)
            files = changed(before, after)
            if not files:
                continue
            time.sleep(SETTLE_S)
            with Progress(f"{_rel(files[0], watch.folder)} changed: rebuilding", plain=False):
                _deploy(watch)
            before = snapshot(watch.folder, skip)  # after the build: its outputs are no change
            done += 1
    except KeyboardInterrupt:
        return 0
    return 0


def _rel(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def _deploy(watch: Watch) -> None:
    """One rebuild and restart, reported in one line; a failure is one `error:` line, and watching goes on."""
    try:
        line = watch.once()
    except TheaterError as exc:
        text = str(exc).strip()
        print(f"error: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr, flush=True)
        return
    print(line, flush=True)


__all__ = ["Watch", "build", "changed", "derived_manifest", "run", "snapshot"]
