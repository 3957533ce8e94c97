"""Where actors are: tree paths, stable actor ids, and the live worker of each.

Invariant: `by_identity` and `by_sentinel` index exactly the handles in
`workers`; a handle leaves all three when its process has been reaped.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from ..config.model import ActorLimits, ChildSpec
from ..protocol import Envelope
from .launcher import ChildProcess


class Cancellable(Protocol):
    """A timer of the node's loop: setting `cancelled` keeps its callback from running."""

    cancelled: bool


@dataclass(eq=False)
class WorkerHandle:
    """A worker process for one incarnation of the actor at `path`."""

    path: str
    supervisor: str
    child_id: str
    actor_id: str
    incarnation: int
    spec: ChildSpec
    process: ChildProcess
    identity: bytes
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    stop_timer: Cancellable | None = None
    start_timer: Cancellable | None = None
    #: Frames for this worker that arrived before it was ready; sent in order on `ready`.
    backlog: list[Envelope] = field(default_factory=list)
    #: Messages (send, request) routed to this worker and not yet reported taken, and their bytes:
    #: the mailbox the actor's `mailbox` limit and a quarter of its `memory_bytes` bound.
    queued: int = 0
    queued_bytes: int = 0
    #: Messages refused to their senders because of this actor's limits (shown by `inspect`).
    refused: int = 0
    #: Messages admitted for this worker but held until their senders' events are stored
    #: (node/outbox.py): its mailbox counts them.
    reserved: int = 0
    reserved_bytes: int = 0
    #: Its effects wait for its events (worker/effects.py); its sends are held in the node's outbox.
    durable_effects: bool = True
    #: Started ahead of its turn (node/workers.py): not its path's worker until the supervisor
    #: starts it; `loaded` once its component is instantiated and it waits for `init`.
    spare: bool = False
    loaded: bool = False
    #: whether this start is a restart (told to the worker with its `init`)
    restart: bool = False

    @property
    def limits(self) -> ActorLimits:
        return self.spec.manifest.limits if self.spec.manifest else ActorLimits()

    @property
    def name(self) -> str:
        return self.spec.manifest.name if self.spec.manifest else self.child_id


class Registry:
    """Paths, ids and live workers, with an index for every way `resolve` finds an actor, so a
    lookup costs the same in a tree of ten actors or ten thousand."""

    def __init__(self) -> None:
        self.actor_ids: dict[str, str] = {}      # path -> actor id (stable across restarts)
        self.incarnations: dict[str, int] = {}   # path -> starts so far
        self.workers: dict[str, WorkerHandle] = {}
        self.by_identity: dict[bytes, WorkerHandle] = {}
        self.by_sentinel: dict[int, WorkerHandle] = {}
        self._path_of_id: dict[str, str] = {}            # actor id -> path
        self._by_suffix: dict[str, set[str]] = {}        # "w", "team/w" -> paths ending with "/w", "/team/w"
        self._by_name: dict[str, set[str]] = {}          # manifest name -> paths of live workers

    def actor_id_for(self, path: str) -> str:
        if path not in self.actor_ids:
            self.remember(path, str(uuid.uuid4()), self.incarnations.get(path, 0))
        return self.actor_ids[path]

    def next_incarnation(self, path: str) -> int:
        self.incarnations[path] = self.incarnations.get(path, 0) + 1
        return self.incarnations[path]

    def add(self, handle: WorkerHandle) -> None:
        old = self.workers.get(handle.path)
        if old is not None:
            self._unname(old)
        self.workers[handle.path] = handle
        self.by_identity[handle.identity] = handle
        self.by_sentinel[handle.process.sentinel] = handle
        self._by_name.setdefault(handle.name, set()).add(handle.path)

    def add_spare(self, handle: WorkerHandle) -> None:
        """A worker started ahead of its turn: its frames and exit are known, its path is not yet its."""
        self.by_identity[handle.identity] = handle
        self.by_sentinel[handle.process.sentinel] = handle

    def forget(self, path: str) -> None:
        """`path` and the paths below it are no longer in the tree (a removed child): their ids,
        incarnation counts and index entries go, so the maps shrink with the tree. Live workers
        are kept (a path is forgotten only once nothing runs there)."""
        prefix = path + "/"
        gone = [p for p in self.actor_ids if (p == path or p.startswith(prefix)) and p not in self.workers]
        for p in gone:
            actor_id = self.actor_ids.pop(p)
            self._path_of_id.pop(actor_id, None)
            self.incarnations.pop(p, None)
            parts = p.split("/")
            for i in range(1, len(parts)):
                suffix = "/".join(parts[i:])
                paths = self._by_suffix.get(suffix)
                if paths is not None:
                    paths.discard(p)
                    if not paths:
                        del self._by_suffix[suffix]
        for p in [p for p in self.incarnations if p == path or p.startswith(prefix)]:
            if p not in self.workers:
                del self.incarnations[p]

    def remember(self, path: str, actor_id: str, incarnations: int) -> None:
        """Give `path` back the id and incarnation count it had before it was forgotten (a child
        removed and started again as the same actor: an owner's restart-child of a temporary child)."""
        if path in self.actor_ids:
            return
        self.actor_ids[path] = actor_id
        self._path_of_id[actor_id] = path
        self.incarnations[path] = incarnations
        parts = path.split("/")
        for i in range(1, len(parts)):
            self._by_suffix.setdefault("/".join(parts[i:]), set()).add(path)

    def forget_incarnation(self, path: str, incarnation: int) -> None:
        """`incarnation` of `path` never ran (a spare not taken): the next start reuses its number."""
        if self.incarnations.get(path) == incarnation:
            self.incarnations[path] = incarnation - 1

    def remove(self, handle: WorkerHandle) -> None:
        if self.workers.get(handle.path) is handle:
            del self.workers[handle.path]
            self._unname(handle)
        self.by_identity.pop(handle.identity, None)
        self.by_sentinel.pop(handle.process.sentinel, None)

    def _unname(self, handle: WorkerHandle) -> None:
        paths = self._by_name.get(handle.name)
        if paths is not None:
            paths.discard(handle.path)
            if not paths:
                del self._by_name[handle.name]

    def resolve(self, ref: str, from_path: str | None = None) -> tuple[WorkerHandle | None, str]:
        """The live (possibly still starting) worker `ref` names (actor id, path, sibling id, path suffix or manifest name).

        Returns (handle, "") or (None, why not).
        """
        path = self.resolve_path(ref, from_path)
        if isinstance(path, tuple):
            return None, path[1]
        handle = self.workers.get(path)
        if handle is None:
            return None, f"actor {path} is not running (restarting or stopped)"
        return handle, ""

    def resolve_path(self, ref: str, from_path: str | None = None) -> str | tuple[None, str]:
        """The path `ref` names, in this order: an actor id, a path, a sibling of `from_path`, a
        unique path suffix (`w`, `team/w`), a unique manifest name of a live worker; or
        (None, why not). Every step is a dictionary lookup."""
        path = self._path_of_id.get(ref)
        if path is not None:
            return path
        if ref in self.actor_ids:
            return ref
        if from_path and "/" in from_path:
            sibling = from_path.rsplit("/", 1)[0] + "/" + ref
            if sibling in self.actor_ids:
                return sibling
        suffix = self._by_suffix.get(ref)
        if suffix:
            if len(suffix) == 1:
                return next(iter(suffix))
            return None, f"{ref!r} is ambiguous: {', '.join(sorted(suffix)[:20])}"
        named = self._by_name.get(ref)
        if named:
            if len(named) == 1:
                return next(iter(named))
            return None, f"{ref!r} is ambiguous: {', '.join(sorted(named)[:20])}"
        return None, f"no actor named {ref!r}"
