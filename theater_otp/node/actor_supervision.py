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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config.loader import load_manifest
from ..config.model import ActorManifest, ChildSpec, ChildType, RestartType
from ..errors import TheaterError
from ..protocol import Envelope
from ..supervision import events as ev
from ..supervision.reasons import ReasonKind
from ..worker.handlers.supervisor import SupervisorSettings

if TYPE_CHECKING:
    from ..chain.event import WitChainEvent
    from ..home import Home
    from ..supervision.supervisor import Supervisor
    from .node import _PendingRequest, _SubSupervisor
    from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: How an owner actor's supervisor call is answered: {"ok": value} or {"error": text}.
Answer = Callable[[dict[str, object]], None]


class ActorSupervision:
    """Mixed into Node; uses its registry, supervisors, queue and sockets."""

    if TYPE_CHECKING:
        # What this mixin uses of Node (node.py defines each; declared here for the type checker only).
        home: Home
        registry: Registry
        supervisors: dict[str, _SubSupervisor]
        #: supervisor API req -> (CLI ident, corr), or a callback taking the Reply (actor supervisors)
        api_waiters: dict[int, tuple[bytes, int] | Callable[[ev.Reply], None]]
        _api_req: Iterator[int]

        def _enqueue(self, sup_path: str, event: ev.Event) -> None: ...

        def _to_worker(self, handle: WorkerHandle, env: Envelope) -> bool: ...

        def _forward_request(self, pending: _PendingRequest, sender: str, body: Any, timeout_ms: int | None,
                             kind: str = "request") -> None: ...

        def _compile_then(self, manifests: list[ActorManifest],
                          then: Callable[[Exception | None], None]) -> None: ...

    def _init_actor_supervision(self) -> None:
        self._child_restart: dict[str, RestartType] = {}   # owner path -> restart type of its children
        self._spawned: dict[str, int] = {}                  # owner path -> children spawned so far
        self._spawn_specs: dict[str, ChildSpec] = {}        # child path -> the spec it was spawned with

    def _attach_actor_supervisor(self, handle: "WorkerHandle") -> None:
        manifest = handle.spec.manifest
        config = manifest.handler("supervisor") if manifest else None
        if config is None or handle.path in self.supervisors:
            return
        from ..supervision.supervisor import Supervisor
        from .node import _SubSupervisor

        settings: SupervisorSettings = config.settings or SupervisorSettings()
        self._child_restart[handle.path] = settings.child_restart
        spec = ChildSpec(id=handle.child_id, type=ChildType.SUPERVISOR, flags=settings.flags)
        entry = _SubSupervisor(Supervisor(handle.path, spec), None, handle.child_id, handle.incarnation,
                               owner=handle.path)
        self.supervisors[handle.path] = entry
        self._enqueue(handle.path, ev.Start())

    def _owned_supervisor_exited(self, entry: "_SubSupervisor", action: ev.SupervisorExited) -> None:
        if entry.on_exit is not None:
            entry.on_exit()
            return
        # it gave up (intensity) or shut down on its own: the owner goes with it
        handle = self.registry.workers.get(entry.owner) if entry.owner is not None else None
        if handle is not None:
            log.warning("supervisor of actor %s stopped (%s): stopping the actor", entry.owner, action.context)
            handle.process.kill()

    def _notify_owner(self, r: ev.Report) -> None:
        """A child of an actor's supervisor ended on its own: tell the actor (if it listens)."""
        entry = self.supervisors.get(r.supervisor)
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
        self._to_worker(owner, Envelope("child_event", "node", owner.actor_id, 0, body))

    # ---- supervisor-interface calls from an owner actor ---------------------------------------

    def _on_supervise(self, handle: "WorkerHandle", env: Envelope) -> None:
        op, args = env.to, env.body if isinstance(env.body, dict) else {}

        def answer(body: dict[str, object]) -> None:
            self._to_worker(handle, Envelope("reply", "node", handle.actor_id, env.corr, body))

        entry = self.supervisors.get(handle.path)
        if entry is None or entry.owner != handle.path:
            answer({"error": "this actor's manifest does not grant the supervisor handler"})
            return
        sup = entry.sup
        try:
            if op == "spawn":
                self._actor_spawn(handle, entry, args, answer)
            elif op == "list-children":
                answer({"ok": [self.registry.actor_ids.get(f"{sup.path}/{c.spec.id}", c.spec.id)
                               for c in sup.ordered_children() if c.incarnation is not None]})
            elif op == "stop-child":
                cid = self._owned_child(sup, str(args.get("child", "")))
                if cid is None:
                    answer({"error": f"no child {args.get('child')!r}"})
                    return
                stop_id = cid  # a str from here on (a closure does not keep the narrowing of `cid`)
                self._api_call(entry, lambda req: ev.TerminateChildRequest(req, stop_id), answer)
            elif op == "restart-child":
                cid = self._owned_child(sup, str(args.get("child", "")))
                if cid is None:
                    answer({"error": f"no child {args.get('child')!r}"})
                    return
                self._actor_restart_child(entry, cid, answer)
            elif op == "get-child-state":
                cid = self._owned_child(sup, str(args.get("child", "")))
                target = self.registry.workers.get(f"{sup.path}/{cid}") if cid else None
                if target is None:
                    answer({"error": f"child {args.get('child')!r} is not running"})
                    return
                from .node import _PendingRequest
                pending = _PendingRequest("worker", handle.identity, env.corr, target)
                self._forward_request(pending, handle.actor_id, None, 10_000, kind="state")
            elif op == "get-child-events":
                cid = self._owned_child(sup, str(args.get("child", "")))
                if cid is None:
                    answer({"error": f"no child {args.get('child')!r}"})
                    return
                answer({"ok": self._child_events(self.registry.actor_ids.get(f"{sup.path}/{cid}", ""))})
            else:
                answer({"error": f"unknown supervisor operation {op!r}"})
        except TheaterError as exc:
            answer({"error": str(exc)})

    def _owned_child(self, sup: "Supervisor", ref: str) -> str | None:
        """A child id of `sup` from a child id or actor id."""
        if ref in sup.children:
            return ref
        for cid in sup.children:
            if self.registry.actor_ids.get(f"{sup.path}/{cid}") == ref:
                return cid
        return None

    def _api_call(self, entry: "_SubSupervisor", make: Callable[[int], ev.Event], answer: Answer) -> None:
        req = next(self._api_req)

        def done(r: ev.Reply) -> None:
            if r.ok:
                answer({"ok": None})
            else:
                answer({"error": str(r.value[0] if isinstance(r.value, tuple) else r.value)})

        self.api_waiters[req] = done
        self._enqueue(entry.sup.path, make(req))

    def _actor_spawn(self, handle: "WorkerHandle", entry: "_SubSupervisor", args: dict[Any, Any],
                     answer: Answer) -> None:
        ref = str(args.get("manifest", ""))
        if "\0" in ref:  # the OS takes no such path: refused before anything opens it
            answer({"error": f"spawn: manifest path {ref!r} contains a NUL byte"})
            return
        path = Path(ref)
        owner_manifest = handle.spec.manifest  # set: a worker's spec always has one (ChildSpec)
        if not path.is_absolute() and owner_manifest is not None:
            path = owner_manifest.source.parent / path
        manifest = load_manifest(path)

        def compiled(error: Exception | None) -> None:
            if error is not None:
                answer({"error": str(error)})
            elif self.supervisors.get(handle.path) is entry:
                self._start_spawned(handle, entry, manifest, args, answer)
            else:
                answer({"error": "the supervising actor stopped meanwhile"})

        self._compile_then([manifest], compiled)

    def _start_spawned(self, handle: "WorkerHandle", entry: "_SubSupervisor", manifest: ActorManifest,
                       args: dict[Any, Any], answer: Answer) -> None:
        init = args.get("init")
        if isinstance(init, bytes):
            manifest = replace(manifest, initial_state=init)
        self._spawned[handle.path] = self._spawned.get(handle.path, 0) + 1
        cid = f"{manifest.name}-{self._spawned[handle.path]}"
        spec = ChildSpec(id=cid, type=ChildType.WORKER, manifest=manifest,
                         restart=self._child_restart.get(handle.path, RestartType.TEMPORARY))
        self._spawn_specs[f"{handle.path}/{cid}"] = spec
        req = next(self._api_req)

        def done(r: ev.Reply) -> None:
            if r.ok:
                answer({"ok": self.registry.actor_ids.get(f"{handle.path}/{cid}", cid)})
            else:
                answer({"error": str(r.value[1] if isinstance(r.value, tuple) and len(r.value) > 1 else r.value)})

        self.api_waiters[req] = done
        self._enqueue(entry.sup.path, ev.StartChildRequest(req, spec))

    def _actor_restart_child(self, entry: "_SubSupervisor", cid: str, answer: Answer) -> None:
        """Stop the child if it runs, then start it again from the spec it was spawned with."""
        spec = self._spawn_specs.get(f"{entry.sup.path}/{cid}")

        def after_stop(r: ev.Reply) -> None:
            if not r.ok:
                answer({"error": str(r.value)})
                return
            req = next(self._api_req)
            if cid in entry.sup.children:   # spec kept (not temporary): restart it
                self.api_waiters[req] = lambda r2: answer({"ok": None} if r2.ok else {"error": str(r2.value)})
                self._enqueue(entry.sup.path, ev.RestartChildRequest(req, cid))
            elif spec is not None:          # temporary: spawned again under the same id
                self.api_waiters[req] = lambda r2: answer({"ok": None} if r2.ok else {"error": str(r2.value)})
                self._enqueue(entry.sup.path, ev.StartChildRequest(req, spec))
            else:
                answer({"error": f"no spec to restart {cid!r} from"})

        req = next(self._api_req)
        self.api_waiters[req] = after_stop
        self._enqueue(entry.sup.path, ev.TerminateChildRequest(req, cid))

    def _child_events(self, actor_id: str) -> list["WitChainEvent"]:
        from ..chain.store import connect, read_events

        conn = connect(self.home.chain_db, readonly=True)
        try:
            rows = read_events(conn, actor_id)
        finally:
            conn.close()
        return [e.wit_fields() for e in rows]
