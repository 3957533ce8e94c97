"""Supervision across nodes: children a supervisor here runs on another node, and workers this node runs for another's supervisor.

The supervisor never moves (docs/cluster.md, "Supervision across nodes"). A
child spec with `node = "n2"` (or `"any"`) is *hosted*:

  supervisor's node                         hosting node
  `host {ref, sup, spec}`  ------------>    starts a worker outside its own tree
                           <------------    `hosted {ref, pid, actor_id}` once its init returned
                           <------------    `hosted_exit {ref, kind, detail, ready}` when it ends
  `unhost {ref, shutdown}` ------------>    stops it (polite stop, timeout, brutal kill)

The supervisor's node turns those into the same ChildStarted / ChildExited /
ChildStartFailed events a local worker gives, so OTP's strategies, intensity
and restart types apply unchanged. A node declared down is the exit of every
child it hosted, with reason `noconnection` (as in Erlang); a hosting node that
loses the owner of its guests stops them: an orphan has no supervisor.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

from ..config.model import BRUTAL_KILL, INFINITY, ChildSpec, ChildType, Shutdown
from ..config.tables import spec_table
from ..supervision import events as ev
from ..supervision.reasons import ExitReason, ReasonKind
from .boot import iter_workers
from .cluster import ClusterLink
from .components import Components
from .loop import Loop, Timer
from .registry import Registry, WorkerHandle
from .tree import SupervisionTree
from .workers import WorkerProcesses

log = logging.getLogger("theater_otp.node")

#: The reason of a hosted child whose node stopped answering (Erlang's `noconnection`).
NOCONNECTION = "noconnection"
#: A start for a node not heard from yet waits this long for it (nodes booting together), and one
#: for a node declared down waits DOWN_WAIT_S (a short partition), before it fails. A start blocks
#: its supervisor as in OTP, so the wait is short where it can be; failing at once instead would
#: burn the supervisor's whole intensity in the first moments of a partition.
HOST_WAIT_S = 10.0
DOWN_WAIT_S = 2.0



@dataclass
class HostedChild:
    """On the supervisor's node: one start of a child that runs on `node`."""

    ref: int
    node: str
    supervisor: str
    child_id: str
    incarnation: int
    #: the `host` frame, kept until it could be sent (the node was unreachable)
    frame: dict | None = None
    wait_timer: Timer | None = None
    ready: bool = False
    pid: int | None = None
    actor_id: str | None = None

    @property
    def path(self) -> str:
        return f"{self.supervisor}/{self.child_id}"


@dataclass(frozen=True)
class Guest:
    """On the hosting node: a worker run for `owner`'s supervisor, known there by `ref`."""

    owner: str
    ref: int


def _shutdown(plain: Any) -> Shutdown:
    if plain == "brutal_kill":
        return BRUTAL_KILL
    if plain == "infinity":
        return INFINITY
    if isinstance(plain, int) and not isinstance(plain, bool) and 0 <= plain <= 2**31:
        return Shutdown.timeout(plain)
    raise ValueError(f"bad shutdown {plain!r}")


class Hosting:
    """Both sides of hosted children for this node."""

    def __init__(self, cluster: ClusterLink, tree: SupervisionTree, registry: Registry, workers: WorkerProcesses,
                 components: Components, loop: Loop):
        self.cluster = cluster
        self.tree = tree
        self.registry = registry
        self.workers = workers
        self.components = components
        self.loop = loop
        self._refs = itertools.count(1)
        #: supervisor's side: ref -> the child started elsewhere; path -> its current start
        self.children: dict[int, HostedChild] = {}
        self.by_path: dict[str, HostedChild] = {}
        #: hosting side: worker identity -> guest, and (owner, ref) -> its worker
        self.guests: dict[bytes, Guest] = {}
        self.guest_workers: dict[tuple[str, int], WorkerHandle] = {}
        #: hosting side: (owner, ref) -> the path of a supervisor run for that node
        self.guest_supervisors: dict[tuple[str, int], str] = {}
        #: (owner, ref) of guests asked to stop before their worker was claimed
        self._cancelled: set[tuple[str, int]] = set()
        self._next_any = 0
        cluster.frame_handlers.update({"host": self._host, "hosted": self._hosted, "hosted_exit": self._hosted_exit,
                                       "unhost": self._unhost})
        #: hosting side: (owner, ref) of every `host` taken and not yet ended
        self._taken: set[tuple[str, int]] = set()
        cluster.down_hooks.append(self._node_down)
        cluster.up_hooks.append(self._node_up)

    # ---- the supervisor's side ------------------------------------------------------------------

    def placement(self, spec: ChildSpec) -> str:
        """The node that runs this start of `spec`: its `node`; for "any", the other live nodes in
        turn (work leaves the supervisor's node), this one only when no other is live."""
        if spec.node is None:
            return self.cluster.me
        if spec.node != "any":
            return spec.node
        others = sorted(self.cluster.live - self.cluster.down)
        if not others:
            return self.cluster.me
        self._next_any += 1
        return others[self._next_any % len(others)]

    def start(self, a: ev.StartChild) -> bool:
        """Start `a`'s child on another node if its spec says so (True: handled here)."""
        node = self.placement(a.spec)
        if node == self.cluster.me:
            return False
        path = f"{a.supervisor}/{a.child_id}"
        table = spec_table(a.spec)
        table.pop("node", None)  # placed already: the hosting node runs it itself
        child = HostedChild(next(self._refs), node, a.supervisor, a.child_id, self.registry.next_incarnation(path))
        child.frame = {"k": "host", "ref": child.ref, "supervisor": a.supervisor, "restart_start": a.restart,
                       "spec": table}
        self.children[child.ref] = child
        self.by_path[child.path] = child
        if self.cluster.reachable(node):
            self._send_host(child)
        else:  # sent when the node is heard from, or failed after the wait
            wait = DOWN_WAIT_S if node in self.cluster.down else HOST_WAIT_S
            log.warning("%s: node %s is not reachable: waiting up to %.0f s for it", path, node, wait)
            child.wait_timer = self.loop.after(wait, lambda: self._wait_over(child, wait))
        return True

    def _send_host(self, child: HostedChild) -> None:
        assert child.frame is not None
        frame, child.frame = child.frame, None
        if child.wait_timer is not None:
            child.wait_timer.cancelled = True
        error = self.cluster.publish_reliable(child.node, frame)
        if error is not None:
            self._ended(child, ExitReason(ReasonKind.ABNORMAL, f"{NOCONNECTION}: {error}"))
            return
        log.info("%s: starting on node %s", child.path, child.node)

    def _wait_over(self, child: HostedChild, wait: float) -> None:
        if child.frame is not None and self.children.get(child.ref) is child:
            self._ended(child, ExitReason(ReasonKind.ABNORMAL, f"{NOCONNECTION}: node {child.node} was not "
                                                               f"reachable within {wait:.0f} s"))

    def _node_up(self, node: str) -> None:
        for child in [c for c in self.children.values() if c.node == node and c.frame is not None]:
            self._send_host(child)

    def stop(self, a: ev.StopChild) -> bool:
        """Stop a hosted child (True: it was one); its exit comes back as `hosted_exit`."""
        child = self.by_path.get(f"{a.supervisor}/{a.child_id}")
        if child is None or child.incarnation != a.incarnation:
            return False
        if child.frame is not None:  # never sent: nothing runs
            self._ended(child, ExitReason(ReasonKind.SHUTDOWN))
            return True
        if self.cluster.publish_reliable(child.node, {"k": "unhost", "ref": child.ref,
                                                      "shutdown": a.shutdown.to_plain()}) is not None:
            self._ended(child, ExitReason(ReasonKind.SHUTDOWN, f"{NOCONNECTION}: node {child.node} is down"))
        return True

    def view(self, path: str) -> HostedChild | None:
        return self.by_path.get(path)

    def _hosted(self, frame: dict) -> None:
        child = self.children.get(int(frame["ref"]))
        if child is None or child.node != frame["from"]:
            return
        pid, actor_id = frame.get("pid"), frame.get("actor_id")
        child.ready = True
        child.pid = int(pid) if pid is not None else None  # a hosted supervisor has none
        child.actor_id = str(actor_id) if actor_id is not None else None
        self.tree.enqueue(child.supervisor, ev.ChildStarted(child.child_id, child.incarnation))

    def _hosted_exit(self, frame: dict) -> None:
        child = self.children.get(int(frame["ref"]))
        if child is None or child.node != frame["from"]:
            return
        self._ended(child, ExitReason(ReasonKind(str(frame["kind"])), str(frame.get("detail", ""))))

    def _ended(self, child: HostedChild, reason: ExitReason) -> None:
        if child.wait_timer is not None:
            child.wait_timer.cancelled = True
        self.children.pop(child.ref, None)
        if self.by_path.get(child.path) is child:
            del self.by_path[child.path]
        event: ev.Event = ev.ChildExited(child.child_id, child.incarnation, reason) if child.ready \
            else ev.ChildStartFailed(child.child_id, reason)
        self.tree.enqueue(child.supervisor, event)

    def _node_down(self, node: str) -> None:
        """Every child `node` hosted exited with `noconnection`; every guest it owned stops."""
        for child in [c for c in self.children.values() if c.node == node and c.frame is None]:
            self._ended(child, ExitReason(ReasonKind.ABNORMAL, f"{NOCONNECTION}: node {node} is down"))
        for (owner, _ref), handle in list(self.guest_workers.items()):
            if owner == node:
                log.warning("%s: its supervisor's node %s is down: stopping it", handle.path, node)
                self.workers.stop(handle, BRUTAL_KILL)
        for (owner, _ref), path in list(self.guest_supervisors.items()):
            if owner == node and path in self.tree.supervisors:
                log.warning("%s: its supervisor's node %s is down: stopping it and its subtree", path, node)
                self.tree.stop_supervisor(path, BRUTAL_KILL)

    # ---- the hosting side -----------------------------------------------------------------------

    def _host(self, frame: dict) -> None:
        from ..config.loader import parse_dynamic_child
        from ..errors import TheaterError

        owner, ref, supervisor = str(frame["from"]), int(frame["ref"]), str(frame["supervisor"])
        spec_in = frame["spec"]
        if not isinstance(spec_in, dict):
            raise TypeError("spec")
        table = dict(spec_in)
        table.pop("node", None)
        self._taken.add((owner, ref))

        def refuse(why: str) -> None:
            self._taken.discard((owner, ref))
            self.cluster.publish_reliable(owner, {"k": "hosted_exit", "ref": ref, "kind": ReasonKind.ABNORMAL.value,
                                         "detail": why, "ready": False})

        try:
            spec = parse_dynamic_child(table, f"host for {owner}", self.tree.spec.flags)
        except TheaterError as exc:
            refuse(str(exc))
            return
        where = f"{owner}:{supervisor}"  # its supervisor's node and path: never one of this node's own
        log.info("%s/%s: starting it for node %s's supervisor", where, spec.id, owner)

        def compiled(error: Exception | None) -> None:
            if error is not None:
                refuse(str(error))
                return
            if (owner, ref) in self._cancelled:
                self._cancelled.discard((owner, ref))
                refuse("stopped before it started")
                return

            def claimed(handle: WorkerHandle) -> None:
                self.guests[handle.identity] = Guest(owner, ref)
                self.guest_workers[(owner, ref)] = handle
                if (owner, ref) in self._cancelled:  # unhosted while it forked
                    self._cancelled.discard((owner, ref))
                    self.workers.stop(handle, BRUTAL_KILL)

            if spec.type is ChildType.SUPERVISOR:
                self._host_supervisor(owner, ref, where, spec)
                return
            self.workers.start(where, spec, bool(frame.get("restart_start")), claimed, refuse)

        self.components.ensure([w.manifest for w in iter_workers(spec) if w.manifest is not None], compiled)

    def _host_supervisor(self, owner: str, ref: int, where: str, spec: ChildSpec) -> None:
        key = (owner, ref)

        def started() -> None:
            self.cluster.publish_reliable(owner, {"k": "hosted", "ref": ref, "pid": None, "actor_id": None})

        def exited(action: ev.SupervisorExited) -> None:
            self.guest_supervisors.pop(key, None)
            self._taken.discard(key)
            self.cluster.publish_reliable(owner, {"k": "hosted_exit", "ref": ref, "kind": action.reason.kind.value,
                                                  "detail": action.reason.detail, "ready": not action.during_start})

        self.guest_supervisors[key] = self.tree.host_supervisor(where, spec, started, exited)

    def _unhost(self, frame: dict) -> None:
        key = (str(frame["from"]), int(frame["ref"]))
        shutdown = _shutdown(frame["shutdown"])
        handle = self.guest_workers.get(key)
        if handle is None:
            path = self.guest_supervisors.get(key)
            if path is not None and path in self.tree.supervisors:
                self.tree.stop_supervisor(path, shutdown)
            elif key in self._taken:  # still compiling or forking: it stops as soon as it is claimed
                self._cancelled.add(key)
            return
        self.workers.stop(handle, shutdown)

    def guest_views(self) -> list[dict]:
        """The workers run here for other nodes' supervisors, as `tree` rows."""
        return [{"id": handle.child_id, "kind": "actor", "path": handle.path, "pid": handle.process.pid,
                 "status": "running" if handle.ready else "restarting", "restarts": 0,
                 "actor_id": handle.actor_id, "name": handle.name, "incarnation": handle.incarnation,
                 "owner": guest.owner, "children": []}
                for identity, guest in self.guests.items()
                if (handle := self.registry.by_identity.get(identity)) is not None]

    def is_hosted(self, handle: WorkerHandle) -> bool:
        return handle.identity in self.guests

    @staticmethod
    def global_path(handle: WorkerHandle) -> str:
        """The path other nodes know `handle` by: under a supervisor run for another node, the
        path without the `owner:` this node puts in front (child ids hold no `:`)."""
        return handle.path.partition(":")[2] or handle.path

    def hosted_ready(self, handle: WorkerHandle) -> None:
        guest = self.guests[handle.identity]
        self.cluster.publish_reliable(guest.owner, {"k": "hosted", "ref": guest.ref, "pid": handle.process.pid,
                                           "actor_id": handle.actor_id})

    def hosted_exited(self, handle: WorkerHandle, reason: ExitReason) -> None:
        guest = self.guests.pop(handle.identity)
        self.guest_workers.pop((guest.owner, guest.ref), None)
        self._taken.discard((guest.owner, guest.ref))
        self.cluster.publish_reliable(guest.owner, {"k": "hosted_exit", "ref": guest.ref, "kind": reason.kind.value,
                                           "detail": reason.detail, "ready": handle.ready})


__all__ = ["Guest", "HostedChild", "Hosting", "NOCONNECTION"]
