"""Actors that supervise: the node side of the `theater:simple/supervisor` interface.

An actor whose manifest grants `[[handler]] type = "supervisor"` owns a
supervisor at its own tree path (`root/boss` supervises `root/boss/<child>`).
It is an ordinary Supervisor state machine: children are started, stopped and
restarted with OTP semantics, they are nodes of the tree (each its own OS
process) and every decision goes to the owner's supervisor chain.

Handler settings: `strategy`, `intensity`, `period` (as for declared
supervisors) and `child_restart`. With a declared `strategy` the runtime
restarts failed children itself (default `child_restart = "permanent"`);
without one, children are `temporary` and the actor decides, told through its
`supervisor-handlers` exports (handle-child-error / -exit / -external-stop).
Lifetimes are linked: the owner's children stop before the owner's own exit
reaches its parent, and an owned supervisor that gives up takes its owner down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..chain.event import WitChainEvent
from ..config.loader import load_manifest
from ..config.model import ActorManifest, ChildSpec, ChildType, RestartType
from ..errors import TheaterError
from ..home import Home
from ..protocol import Envelope
from ..supervision import events as ev
from ..supervision.reasons import ReasonKind
from ..supervision.supervisor import Supervisor
from ..worker.handlers.supervisor import SupervisorSettings
from .components import Components
from .mail import Mail, PendingRequest
from .registry import Registry, WorkerHandle
from .tree import SubSupervisor, SupervisionTree

log = logging.getLogger("theater_otp.node")

#: How an owner actor's supervisor call is answered: {"ok": value} or {"error": text}.
Answer = Callable[[dict[str, object]], None]


class ActorSupervisors:
    """The supervisors owned by actors: attached when such an actor starts, asked through the
    tree's public `api_call` like the control socket's commands; implements tree.Owners."""

    def __init__(self, tree: SupervisionTree, registry: Registry, mail: Mail, components: Components, home: Home):
        self.tree = tree
        self.registry = registry
        self.mail = mail
        self.components = components
        self.home = home
        self.child_restart: dict[str, RestartType] = {}   # owner path -> restart type of its children
        self.spawned: dict[str, int] = {}                  # owner path -> children spawned so far
        self.spawn_specs: dict[str, ChildSpec] = {}        # child path -> the spec it was spawned with
        #: supervisor-interface operations: name -> handler(owner, its supervisor, args, corr, answer)
        self.operations: dict[str, Callable[[WorkerHandle, SubSupervisor, dict, int, Answer], None]] = {
            "spawn": self._spawn, "list-children": self._list_children, "stop-child": self._stop_child,
            "restart-child": self._restart_child, "get-child-state": self._child_state,
            "get-child-events": self._child_events_op,
        }

    # ---- tree.Owners ---------------------------------------------------------------------------

    def attach(self, handle: WorkerHandle) -> None:
        manifest = handle.spec.manifest
        config = manifest.handler("supervisor") if manifest else None
        if config is None or handle.path in self.tree.supervisors:
            return
        settings: SupervisorSettings = config.settings or SupervisorSettings()
        self.child_restart[handle.path] = settings.child_restart
        spec = ChildSpec(id=handle.child_id, type=ChildType.SUPERVISOR, flags=settings.flags)
        self.tree.supervisors[handle.path] = SubSupervisor(Supervisor(handle.path, spec), None, handle.child_id,
                                                           handle.incarnation, owner=handle.path)
        self.tree.enqueue(handle.path, ev.Start())

    def owned_exited(self, entry: SubSupervisor, action: ev.SupervisorExited) -> None:
        if entry.on_exit is not None:
            entry.on_exit()
            return
        # it gave up (intensity) or shut down on its own: the owner goes with it
        handle = self.registry.workers.get(entry.owner) if entry.owner is not None else None
        if handle is not None:
            log.warning("supervisor of actor %s stopped (%s): stopping the actor", entry.owner, action.context)
            handle.process.kill()

    def forget(self, path: str) -> None:
        prefix = path + "/"
        self.child_restart.pop(path, None)
        self.spawned.pop(path, None)
        for child in [p for p in self.spawn_specs if p == path or p.startswith(prefix)]:
            del self.spawn_specs[child]

    def notify(self, r: ev.Report) -> None:
        """A child of an actor's supervisor ended on its own: tell the actor (if it listens)."""
        entry = self.tree.supervisors.get(r.supervisor)
        if entry is None or entry.owner is None or r.context != "child_terminated" or r.reason is None:
            return
        owner = self.registry.workers.get(entry.owner)
        if owner is None or not owner.ready:
            return
        if r.reason.kind is ReasonKind.NORMAL:
            kind = "exit"
        elif r.reason.kind in (ReasonKind.KILLED, ReasonKind.SHUTDOWN):
            kind = "external_stop"
        else:
            kind = "error"
        child_path = f"{r.supervisor}/{r.child_id}"
        body = {"kind": kind, "child": self.registry.actor_ids.get(child_path, r.child_id),
                "reason": str(r.reason), "data": str(r.reason).encode()}
        self.mail.to_worker(owner, Envelope("child_event", "node", owner.actor_id, 0, body))

    # ---- supervisor-interface calls from an owner actor ----------------------------------------

    def on_supervise(self, handle: WorkerHandle, ident: bytes, env: Envelope) -> None:
        """One supervisor-interface call (`env.to` names the operation); always answered."""
        args = env.body if isinstance(env.body, dict) else {}

        def answer(body: dict[str, object]) -> None:
            self.mail.reply(handle, env.corr, body)

        entry = self.tree.supervisors.get(handle.path)
        if entry is None or entry.owner != handle.path:
            answer({"error": "this actor's manifest does not grant the supervisor handler"})
            return
        operation = self.operations.get(env.to)
        if operation is None:
            answer({"error": f"unknown supervisor operation {env.to[:80]!r}"})
            return
        try:
            operation(handle, entry, args, env.corr, answer)
        except TheaterError as exc:
            answer({"error": str(exc)})

    def _child_arg(self, entry: SubSupervisor, args: dict, answer: Answer) -> str | None:
        """The child id `args["child"]` names (a child id or an actor id), or None after answering why not."""
        ref = args.get("child")
        cid = self._owned_child(entry.sup, ref) if isinstance(ref, str) else None
        if cid is None:
            answer({"error": f"no child {str(ref)[:200]!r}"})
        return cid

    def _list_children(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int,
                       answer: Answer) -> None:
        sup = entry.sup
        answer({"ok": [self.registry.actor_ids.get(f"{sup.path}/{c.spec.id}", c.spec.id)
                       for c in sup.ordered_children() if c.incarnation is not None]})

    def _stop_child(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int, answer: Answer) -> None:
        cid = self._child_arg(entry, args, answer)
        if cid is not None:
            self.tree.api_call(entry.sup.path, lambda req: ev.TerminateChildRequest(req, cid), _plain(answer))

    def _child_state(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int,
                     answer: Answer) -> None:
        ref = args.get("child")
        cid = self._owned_child(entry.sup, ref) if isinstance(ref, str) else None
        target = self.registry.workers.get(f"{entry.sup.path}/{cid}") if cid else None
        if target is None:
            answer({"error": f"child {str(ref)[:200]!r} is not running"})
            return
        self.mail.forward(PendingRequest(target, handle.identity, corr), handle.actor_id, None, 10_000, kind="state")

    def _child_events_op(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int,
                         answer: Answer) -> None:
        cid = self._child_arg(entry, args, answer)
        if cid is not None:
            answer({"ok": self._child_events(self.registry.actor_ids.get(f"{entry.sup.path}/{cid}", ""))})

    def _owned_child(self, sup: Supervisor, ref: str) -> str | None:
        """A child id of `sup` from a child id or actor id."""
        if ref in sup.children:
            return ref
        path = self.registry.resolve_path(ref)
        if isinstance(path, str) and path.rsplit("/", 1)[0] == sup.path and self.registry.actor_ids.get(path) == ref:
            cid = path.rsplit("/", 1)[1]
            return cid if cid in sup.children else None
        return None

    def _spawn(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int, answer: Answer) -> None:
        ref = args.get("manifest", "")
        if not isinstance(ref, str) or not ref:
            answer({"error": f"spawn: {str(ref)[:200]!r} is not a manifest path"})
            return
        if "\0" in ref:  # the OS takes no such path: refused before anything opens it
            answer({"error": f"spawn: manifest path {ref[:200]!r} contains a NUL byte"})
            return
        path = Path(ref)
        owner_manifest = handle.spec.manifest  # set: a worker's spec always has one (ChildSpec)
        if not path.is_absolute() and owner_manifest is not None:
            path = owner_manifest.source.parent / path
        manifest = load_manifest(path)

        def compiled(error: Exception | None) -> None:
            if error is not None:
                answer({"error": str(error)})
            elif self.tree.supervisors.get(handle.path) is entry:
                self._start_spawned(handle, entry, manifest, args, answer)
            else:
                answer({"error": "the supervising actor stopped meanwhile"})

        self.components.ensure([manifest], compiled)

    def _start_spawned(self, handle: WorkerHandle, entry: SubSupervisor, manifest: ActorManifest,
                       args: dict[Any, Any], answer: Answer) -> None:
        init = args.get("init")
        if isinstance(init, bytes):
            manifest = replace(manifest, initial_state=init)
        self.spawned[handle.path] = self.spawned.get(handle.path, 0) + 1
        cid = f"{manifest.name}-{self.spawned[handle.path]}"
        spec = ChildSpec(id=cid, type=ChildType.WORKER, manifest=manifest,
                         restart=self.child_restart.get(handle.path, RestartType.TEMPORARY))
        self.spawn_specs[f"{handle.path}/{cid}"] = spec

        def done(r: ev.Reply) -> None:
            if r.ok:
                answer({"ok": self.registry.actor_ids.get(f"{handle.path}/{cid}", cid)})
            else:
                answer({"error": str(r.value[1] if isinstance(r.value, tuple) and len(r.value) > 1 else r.value)})

        self.tree.api_call(entry.sup.path, lambda req: ev.StartChildRequest(req, spec), done)

    def _restart_child(self, handle: WorkerHandle, entry: SubSupervisor, args: dict, corr: int,
                       answer: Answer) -> None:
        """Stop the child if it runs, then start it again from the spec it was spawned with."""
        cid = self._child_arg(entry, args, answer)
        if cid is None:
            return
        child_path = f"{entry.sup.path}/{cid}"
        spec = self.spawn_specs.get(child_path)
        path = entry.sup.path
        #: the same actor after the restart: a temporary child is removed when it stops, and its
        #: id and incarnation count would go with it
        identity = (self.registry.actor_ids.get(child_path), self.registry.incarnations.get(child_path, 0))

        def started(r: ev.Reply) -> None:
            answer({"ok": None} if r.ok else {"error": str(r.value)})

        def after_stop(r: ev.Reply) -> None:
            if not r.ok:
                answer({"error": str(r.value)})
            elif cid in entry.sup.children:   # spec kept (not temporary): restart it
                self.tree.api_call(path, lambda req: ev.RestartChildRequest(req, cid), started)
            elif spec is not None:            # temporary: spawned again under the same id
                actor_id, incarnations = identity
                if actor_id is not None:
                    self.registry.remember(child_path, actor_id, incarnations)
                self.spawn_specs[child_path] = spec
                self.tree.api_call(path, lambda req: ev.StartChildRequest(req, spec), started)
            else:
                answer({"error": f"no spec to restart {cid!r} from"})

        self.tree.api_call(path, lambda req: ev.TerminateChildRequest(req, cid), after_stop)

    def _child_events(self, actor_id: str) -> list[WitChainEvent]:
        from ..chain.store import connect, read_events

        conn = connect(self.home.chain_db, readonly=True)
        try:
            rows = read_events(conn, actor_id)
        finally:
            conn.close()
        return [e.wit_fields() for e in rows]


def _plain(answer: Answer) -> Callable[[ev.Reply], None]:
    """A supervisor's reply as the actor's answer: ok, or the error term's name."""
    def done(r: ev.Reply) -> None:
        if r.ok:
            answer({"ok": None})
        else:
            answer({"error": str(r.value[0] if isinstance(r.value, tuple) else r.value)})
    return done


__all__ = ["ActorSupervisors", "Answer"]
