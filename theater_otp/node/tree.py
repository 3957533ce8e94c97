"""The supervision tree: the node's supervisors (pure state machines) fed events, their actions carried out.

Every supervisor, declared or owned by an actor, is a `supervision.Supervisor`
at a tree path. Events go in through `enqueue`; `drain` hands each to its
supervisor and carries out the actions it returns (start or stop a child,
report, reply to an API call). `api_call` is the one way to ask a supervisor
something (start/terminate/restart/delete a child), for the control socket and
for actors that supervise alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config.model import ChildSpec, ChildType, Shutdown
from ..supervision import events as ev
from ..supervision.reasons import SHUTDOWN, ExitReason, ReasonKind
from ..supervision.supervisor import ChildState, Supervisor
from .chainlink import ChainLink
from .gateway import GatewayLink
from .http import of_manifest
from .loop import Loop, Timer
from .registry import Registry, WorkerHandle
from .workers import PRESTART_AHEAD, WorkerProcesses

if TYPE_CHECKING:
    from .hosting import Hosting

log = logging.getLogger("theater_otp.node")


@dataclass
class SubSupervisor:
    """A supervisor of the tree: its state machine and the token (incarnation) its parent knows it by."""

    sup: Supervisor
    parent: str | None
    child_id: str
    incarnation: int
    started: bool = False
    stop_timer: Timer | None = None
    #: set for the supervisor of an actor that supervises: the actor's path (same as the supervisor's)
    owner: str | None = None
    #: runs when an owned supervisor has stopped (deliver the owner's exit, or stop the owner)
    on_exit: Callable[[], None] | None = None
    #: set for a supervisor this node runs for another node's (node/hosting.py): told when it has
    #: started and when it has exited, instead of a parent here
    hosted: tuple[Callable[[], None], Callable[[ev.SupervisorExited], None]] | None = None


class Owners(Protocol):
    """What the tree tells the part of the node that serves actors which supervise (actor_supervision.py)."""

    def attach(self, handle: WorkerHandle) -> None:
        """`handle` started: give it its own supervisor if its manifest grants one."""

    def notify(self, report: ev.Report) -> None:
        """A supervisor reported: tell the owning actor of a child's end if it listens."""

    def owned_exited(self, entry: SubSupervisor, action: ev.SupervisorExited) -> None:
        """An actor's own supervisor stopped."""

    def forget(self, path: str) -> None:
        """The child at `path` was removed from the tree: what is kept for it (and below it) goes."""


class TreeHooks(Protocol):
    def root_started(self) -> None: ...

    def root_exited(self, action: ev.SupervisorExited, entry: SubSupervisor) -> None: ...

    def child_removed(self, path: str) -> None: ...


class SupervisionTree:
    """The supervisors by tree path, the event queue between them, and the actions they return."""

    def __init__(self, spec: ChildSpec, loop: Loop, registry: Registry, workers: WorkerProcesses,
                 chain: ChainLink, gateway: GatewayLink, hooks: TreeHooks):
        self.spec = spec
        self.loop = loop
        self.registry = registry
        self.workers = workers
        self.chain = chain
        self.gateway = gateway
        self.hooks = hooks
        self.owners: Owners | None = None
        #: children run by other nodes (node/hosting.py), when this node is in a cluster
        self.hosting: Hosting | None = None
        self.supervisors: dict[str, SubSupervisor] = {}
        self.queue: deque[tuple[str, ev.Event]] = deque()
        #: supervisor API requests in flight -> what to call with the Reply
        self.api_waiters: dict[int, Callable[[ev.Reply], None]] = {}
        self._api_req = 0

    @property
    def root(self) -> SubSupervisor | None:
        return self.supervisors.get(self.spec.id)

    def start(self) -> None:
        self.supervisors[self.spec.id] = SubSupervisor(Supervisor(self.spec.id, self.spec), None, self.spec.id, 1)
        self.enqueue(self.spec.id, ev.Start())

    def stop(self) -> bool:
        """Ask the root to shut down; False when there is no root (nothing to wait for)."""
        if self.root is None:
            return False
        self.enqueue(self.spec.id, ev.Stop(SHUTDOWN))
        return True

    # ---- events in, actions out ---------------------------------------------------------------

    def enqueue(self, sup_path: str, event: ev.Event) -> None:
        self.queue.append((sup_path, event))

    def drain(self) -> None:
        while self.queue:
            sup_path, event = self.queue.popleft()
            entry = self.supervisors.get(sup_path)
            if entry is None:
                continue
            for action in entry.sup.handle(event, time.monotonic()):
                self._execute(action)

    def _execute(self, action: ev.Action) -> None:
        if isinstance(action, ev.StartChild):
            self._start_child(action)
        elif isinstance(action, ev.StopChild):
            self._stop_child(action)
        elif isinstance(action, ev.Post):
            if action.delay > 0:
                self.loop.after(action.delay, lambda: self.enqueue(action.supervisor, action.event))
            else:
                self.enqueue(action.supervisor, action.event)
        elif isinstance(action, ev.Report):
            self._report(action)
        elif isinstance(action, ev.SupervisorStarted):
            self._supervisor_started(action.supervisor)
        elif isinstance(action, ev.SupervisorExited):
            self._supervisor_exited(action)
        elif isinstance(action, ev.ChildRemoved):
            path = f"{action.supervisor}/{action.child_id}"
            self.workers.discard_path(path)
            self.registry.forget(path)
            self.hooks.child_removed(path)
            if self.owners is not None:
                self.owners.forget(path)
        elif isinstance(action, ev.Reply):
            waiter = self.api_waiters.pop(action.req, None)
            if waiter is not None:
                waiter(action)

    def api_call(self, sup_path: str, make: Callable[[int], ev.Event], done: Callable[[ev.Reply], None]) -> None:
        """Ask the supervisor at `sup_path` (start/terminate/restart/delete a child); `done(reply)`
        runs with its answer."""
        self._api_req += 1
        self.api_waiters[self._api_req] = done
        self.enqueue(sup_path, make(self._api_req))

    def _report(self, r: ev.Report) -> None:
        if self.owners is not None:
            self.owners.notify(r)
        child = f" child={r.child_id}" if r.child_id else ""
        reason = f" reason={r.reason}" if r.reason else ""
        extra = "".join(f" {k}={v}" for k, v in r.data.items())
        level = logging.WARNING if r.context in ("start_error", "reached_max_restart_intensity", "shutdown_error") \
            else logging.INFO
        log.log(level, "supervisor %s: %s%s%s%s", r.supervisor, r.context, child, reason, extra)
        data = {"supervisor": r.supervisor, "child": r.child_id,
                "reason": r.reason.to_plain() if r.reason else None, **r.data}
        if r.child_id:
            handle = self.registry.workers.get(f"{r.supervisor}/{r.child_id}")
            if handle is not None:
                data["pid"] = handle.process.pid
        chain_id = f"supervisor:{r.supervisor}"
        if not self.chain.registered(chain_id):
            self.chain.register_chain(chain_id, r.supervisor, "supervisor")
        self.chain.record(chain_id, 1, f"supervisor.{r.context}", data)

    def _supervisor_started(self, path: str) -> None:
        entry = self.supervisors[path]
        entry.started = True
        if entry.hosted is not None:
            entry.hosted[0]()
            return
        if entry.owner is not None:
            return
        if entry.parent is None:
            log.info("tree %s is up: %d actor(s) running", path, len(self.registry.workers))
            self.hooks.root_started()
        else:
            self.enqueue(entry.parent, ev.ChildStarted(entry.child_id, entry.incarnation))

    def _supervisor_exited(self, action: ev.SupervisorExited) -> None:
        entry = self.supervisors.pop(action.supervisor)
        if entry.stop_timer is not None:
            entry.stop_timer.cancelled = True
        self.workers.discard_under(action.supervisor)
        if entry.hosted is not None:
            entry.hosted[1](action)
            return
        if entry.owner is not None:
            if self.owners is not None:
                self.owners.owned_exited(entry, action)
            return
        if entry.parent is None:  # the root is gone: the node's work is over
            self.hooks.root_exited(action, entry)
        elif action.during_start:
            self.enqueue(entry.parent, ev.ChildStartFailed(entry.child_id, action.reason))
        else:
            self.enqueue(entry.parent, ev.ChildExited(entry.child_id, entry.incarnation, action.reason))

    # ---- starting and stopping children -------------------------------------------------------

    def _start_child(self, a: ev.StartChild) -> None:
        path = f"{a.supervisor}/{a.child_id}"
        if self.hosting is not None and self.hosting.start(a):
            return
        if a.spec.type is ChildType.SUPERVISOR:
            incarnation = self.registry.next_incarnation(path)
            self.supervisors[path] = SubSupervisor(Supervisor(path, a.spec), a.supervisor, a.child_id, incarnation)
            self.enqueue(path, ev.Start())
            return
        http = self.gateway.http
        new_ports, port_problem = http.for_child(of_manifest(a.spec, path),
                                                 running=lambda p: p in self.registry.workers)
        if port_problem is not None:  # a child started after `up` whose port is taken
            self.enqueue(a.supervisor, ev.ChildStartFailed(a.child_id, ExitReason(ReasonKind.ABNORMAL, port_problem)))
            return
        for lst in new_ports:
            self.gateway.open(lst, None)
        entry = self.supervisors.get(a.supervisor)

        def claimed(handle: WorkerHandle) -> None:
            if self.supervisors.get(a.supervisor) is not entry:  # its supervisor went meanwhile
                handle.process.kill()
            elif self.owners is not None:
                self.owners.attach(handle)  # before init: an actor may spawn children from init

        def failed(why: str) -> None:
            self.enqueue(a.supervisor, ev.ChildStartFailed(a.child_id, ExitReason(ReasonKind.ABNORMAL, why)))

        self.workers.start(a.supervisor, a.spec, a.restart, claimed, failed)
        if entry is not None:  # the next children of this start sequence load while this one inits
            self.workers.prestart(a.supervisor, [spec for spec in entry.sup.next_starts(PRESTART_AHEAD)
                                                 if spec.type is ChildType.WORKER and spec.node is None])

    def _stop_child(self, a: ev.StopChild) -> None:
        if self.hosting is not None and self.hosting.stop(a):
            return
        path = f"{a.supervisor}/{a.child_id}"
        owned = self.supervisors.get(path)
        if owned is not None and owned.owner is None:
            self._stop_supervisor_child(path, a)
            return
        handle = self.registry.workers.get(path)
        if handle is None or handle.incarnation != a.incarnation:
            # already reaped: its ChildExited is queued or was consumed; nothing to signal
            return
        if owned is not None:
            # an actor that supervises: its children stop first, then the actor itself
            owned.on_exit = lambda: self.workers.stop(handle, a.shutdown)
            self.enqueue(path, ev.Stop(SHUTDOWN))
            return
        self.workers.stop(handle, a.shutdown)

    def _stop_supervisor_child(self, path: str, a: ev.StopChild) -> None:
        self.stop_supervisor(path, a.shutdown)

    def stop_supervisor(self, path: str, shutdown: Shutdown) -> None:
        """Stop the supervisor at `path` and its subtree per `shutdown` (OTP: a supervisor child's
        own shutdown bounds its whole subtree's)."""
        entry = self.supervisors[path]
        self.enqueue(path, ev.Stop(SHUTDOWN))
        if shutdown.kind == "brutal_kill":
            self.workers.kill_under(path)
        elif shutdown.kind == "timeout":
            entry.stop_timer = self.loop.after(shutdown.ms / 1000, lambda: self.workers.kill_under(path))

    def host_supervisor(self, where: str, spec: ChildSpec, started: Callable[[], None],
                        exited: Callable[[ev.SupervisorExited], None]) -> str:
        """Run the supervisor `spec` (and its subtree) at `where/spec.id` for another node's
        supervisor; `started` and `exited` tell that node. Its path."""
        path = f"{where}/{spec.id}"
        self.supervisors[path] = SubSupervisor(Supervisor(path, spec), None, spec.id,
                                               self.registry.next_incarnation(path), hosted=(started, exited))
        self.enqueue(path, ev.Start())
        return path

    def worker_started(self, handle: WorkerHandle) -> None:
        self.enqueue(handle.supervisor, ev.ChildStarted(handle.child_id, handle.incarnation))

    def worker_exited(self, handle: WorkerHandle, reason: ExitReason) -> None:
        """Tell `handle`'s supervisor; an actor that supervises has its children stopped first (OTP: links)."""
        if handle.ready:
            report: ev.Event = ev.ChildExited(handle.child_id, handle.incarnation, reason)
        else:
            report = ev.ChildStartFailed(handle.child_id, reason)
        owned = self.supervisors.get(handle.path)
        if owned is not None and owned.owner == handle.path:
            owned.on_exit = lambda: self.enqueue(handle.supervisor, report)
            self.enqueue(handle.path, ev.Stop(SHUTDOWN))
        else:
            self.enqueue(handle.supervisor, report)

    # ---- lookups ------------------------------------------------------------------------------

    def supervisor_ref(self, ref: str) -> SubSupervisor | str:
        """The supervisor `ref` names (its path or a unique path suffix), or why none."""
        if ref in self.supervisors:
            return self.supervisors[ref]
        matches = [p for p in self.supervisors if p.endswith("/" + ref)]
        if len(matches) == 1:
            return self.supervisors[matches[0]]
        return f"{ref!r} is ambiguous: {', '.join(sorted(matches))}" if matches else f"no supervisor named {ref!r}"

    def child_view(self, sup_path: str, child_id: str) -> dict:
        path = f"{sup_path}/{child_id}"
        handle = self.registry.workers.get(path)
        return {"path": path, "pid": handle.process.pid if handle else None,
                "actor_id": self.registry.actor_ids.get(path)}

    # ---- the tree as data ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        root = self.root
        node = self._sup_node(self.spec.id, root.sup if root else None, self.spec, root, 0)
        node["node_pid"] = os.getpid()
        hosted = [self._sup_node(path, e.sup, e.sup.spec, e, 0) for path, e in self.supervisors.items()
                  if e.hosted is not None]
        if self.hosting is not None:
            hosted += self.hosting.guest_views()
        if hosted:  # supervisors and workers run here for other nodes' supervisors (node/hosting.py)
            node["hosted"] = hosted
        return node

    def _sup_node(self, path: str, sup: Supervisor | None, spec: ChildSpec, entry: SubSupervisor | None,
                  restarts: int) -> dict:
        status = "running" if entry and entry.started else ("restarting" if entry else "stopped")
        children: list[dict] = []
        if sup is not None:
            for child in sup.ordered_children():
                cpath = f"{path}/{child.spec.id}"
                hosted = self.hosting.view(cpath) if self.hosting is not None else None
                if child.spec.type is ChildType.SUPERVISOR and hosted is not None:
                    children.append({"id": child.spec.id, "kind": "supervisor", "path": cpath, "pid": None,
                                     "status": "running" if hosted.ready else "restarting",
                                     "restarts": child.restarts, "strategy": child.spec.flags.strategy.value,
                                     "intensity": child.spec.flags.intensity, "period": child.spec.flags.period,
                                     "node": hosted.node, "children": []})
                elif child.spec.type is ChildType.SUPERVISOR:
                    sub = self.supervisors.get(cpath)
                    children.append(self._sup_node(cpath, sub.sup if sub else None, child.spec, sub, child.restarts))
                else:
                    children.append(self._actor_node(cpath, child))
        return {"id": spec.id, "kind": "supervisor", "path": path, "pid": None, "status": status,
                "restarts": restarts, "strategy": spec.flags.strategy.value,
                "intensity": spec.flags.intensity, "period": spec.flags.period, "children": children}

    def _actor_node(self, path: str, child: Any) -> dict:
        found = self.registry.workers.get(path)
        handle = found if found is not None and child.state is ChildState.RUNNING and \
            found.incarnation == child.incarnation else None
        status = {ChildState.RUNNING: "running", ChildState.STOPPING: "running",
                  ChildState.STOPPED: "stopped"}.get(child.state, "restarting")
        owned = self.supervisors.get(path)
        kids = []
        if owned is not None and owned.owner == path:
            kids = [self._actor_node(f"{path}/{c.spec.id}", c) for c in owned.sup.ordered_children()]
        manifest = child.spec.manifest
        hosted = self.hosting.view(path) if self.hosting is not None else None
        pid = handle.process.pid if handle else (hosted.pid if hosted is not None and hosted.ready else None)
        return {"id": child.spec.id, "kind": "actor", "path": path, "pid": pid,
                "node": hosted.node if hosted is not None else (self.hosting.cluster.me if self.hosting else None), "status": status, "restarts": child.restarts,
                "actor_id": hosted.actor_id if hosted is not None else self.registry.actor_ids.get(path),
                "name": manifest.name,
                "manifest": str(manifest.source), "version": manifest.version,
                "restart": child.spec.restart.value, "incarnation": child.incarnation,
                "uptime": round(time.time() - handle.started_at, 3) if handle else None,
                "mailbox": handle.queued if handle else None, "refused": handle.refused if handle else None,
                "limits": manifest.limits.to_plain(), "children": kids}


__all__ = ["Owners", "SubSupervisor", "SupervisionTree", "TreeHooks"]
