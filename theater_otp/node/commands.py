"""What each control command does: one handler per entry of control.COMMANDS.

A handler takes the node's services, the asker (to answer once, now or
later) and the arguments control.check has already validated. Handlers use
the same public interfaces actors use (the tree's `api_call`, the mail's
`admit`/`forward`), so a command and an actor's call behave alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TheaterError
from ..home import Home
from ..protocol import Envelope
from ..supervision import events as ev
from .chainlink import ChainLink
from .cluster import RemoteActor
from .components import Components
from .mail import Mail, PendingRequest
from .registry import Registry, WorkerHandle
from .tree import SubSupervisor, SupervisionTree


class Asker(Protocol):
    """Whoever sent one control command: answered once, with a result or an error."""

    def ok(self, result: Any) -> None: ...

    def error(self, code: str, message: str) -> None: ...


@dataclass(frozen=True)
class Services:
    """The parts of the node a command may use."""

    home: Home
    started_at: float
    registry: Registry
    chain: ChainLink
    mail: Mail
    tree: SupervisionTree
    components: Components
    #: whether the node is stopping
    stopping: Callable[[], bool]
    #: stop the tree; the asker is answered when the node has stopped
    shut_down: Callable[[Asker], None]
    #: the node's own counters added to `tree` (dropped frames)
    counters: Callable[[], dict[str, Any]]


Handler = Callable[[Services, Asker, dict[str, Any]], None]


def ping(s: Services, ask: Asker, args: dict) -> None:
    ask.ok({"node_pid": os.getpid(), "home": str(s.home.root), "started_at": s.started_at,
            "stopping": s.stopping()})


def sync(s: Services, ask: Asker, args: dict) -> None:
    """Answered once every event emitted so far, by the node and by every running worker, is
    durable, so a reader that syncs first sees what `tree` or a reply just showed it."""

    def ask_workers(sid: int) -> dict[bytes, str]:
        asked = {}
        for handle in list(s.registry.workers.values()):
            if handle.ready and s.mail.to_worker(handle, Envelope("sync", "node", handle.actor_id, sid)):
                asked[handle.identity] = handle.path
        return asked

    s.chain.sync(lambda batch: ask.ok({"batch": batch}), ask_workers)


def tree(s: Services, ask: Asker, args: dict) -> None:
    ask.ok({**s.tree.snapshot(), **s.counters()})


def down(s: Services, ask: Asker, args: dict) -> None:
    s.shut_down(ask)


def resolve(s: Services, ask: Asker, args: dict) -> None:
    path = s.registry.resolve_path(args["target"])
    if isinstance(path, tuple):
        ask.error("not_found", path[1])
        return
    handle = s.registry.workers.get(path)
    ask.ok({"path": path, "actor_id": s.registry.actor_ids[path], "running": bool(handle and handle.ready)})


def _target(s: Services, ask: Asker, args: dict) -> WorkerHandle | None:
    target, why = s.registry.resolve(args["target"])
    if target is None:
        ask.error("not_found" if "no actor" in why else "not_running", why)
    return target


def _admitted(s: Services, ask: Asker, args: dict) -> WorkerHandle | RemoteActor | None:
    """The target of a message command whose mailbox takes `args["payload"]` (an actor on another
    node admits it there), or None after answering why not."""
    target, why = s.mail.route(args["target"])
    if target is None:
        ask.error("not_found" if "no actor" in why else "not_running", why)
        return None
    if isinstance(target, RemoteActor):
        return target
    refusal = s.mail.admit(target, args["payload"])
    if refusal is not None:
        ask.error("refused", refusal)
        return None
    return target


def send(s: Services, ask: Asker, args: dict) -> None:
    target = _admitted(s, ask, args)
    if target is None:
        return
    error = s.mail.deliver(target, Envelope("send", "cli", target.actor_id, 0, args["payload"]))
    if error is not None:
        ask.error("not_running", error)
    else:
        ask.ok({"delivered_to": f"{target.node}:{target.path}" if isinstance(target, RemoteActor) else target.path})


def _answer_cli(ask: Asker) -> Callable[[dict], None]:
    def answer(body: dict) -> None:
        if "error" in body:
            ask.error("request_failed", str(body["error"]))
        else:
            ask.ok(body)
    return answer


def request(s: Services, ask: Asker, args: dict) -> None:
    target = _admitted(s, ask, args)
    if target is None:
        return
    s.mail.forward(PendingRequest(target, answer_cli=_answer_cli(ask)), "cli", args["payload"], args["timeout_ms"])


def state(s: Services, ask: Asker, args: dict) -> None:
    target = _target(s, ask, args)
    if target is not None:
        s.mail.forward(PendingRequest(target, answer_cli=_answer_cli(ask)), "cli", None, 10_000, kind="state")


# ---- the dynamic child API (OTP's supervisor module) ---------------------------------------------

#: An OTP error term's name -> the sentence the CLI shows ({detail}: the term's second element).
_API_ERRORS = {
    "already_started": "already_started: the child is running (incarnation {detail})",
    "already_present": "already_present: a child with that id exists (not running); restart-child or "
                       "delete-child it",
    "running": "running: stop it first with terminate-child",
    "restarting": "restarting: the child is between restart attempts",
    "not_found": "not_found: no such child",
    "simple_one_for_one": "simple_one_for_one: not supported for simple_one_for_one supervisors",
    "start_failed": "start_failed: {detail}",
}


def _supervisor(s: Services, ask: Asker, args: dict) -> SubSupervisor | None:
    found = s.tree.supervisor_ref(args["supervisor"])
    if isinstance(found, str):
        ask.error("not_found", found)
        return None
    return found


def _api(s: Services, ask: Asker, entry: SubSupervisor, make: Callable[[int], ev.Event]) -> None:
    """Ask `entry`'s supervisor; its reply answers `ask` (a child's path, pid and id added)."""

    def done(r: ev.Reply) -> None:
        if r.ok:
            value = r.value
            if isinstance(value, dict) and "id" in value:
                value = {**value, **s.tree.child_view(r.supervisor, value["id"])}
            ask.ok({"ok": True, "result": value})
            return
        term = r.value
        code = term[0] if isinstance(term, tuple) else str(term)
        detail = term[1] if isinstance(term, tuple) and len(term) > 1 else None
        template = _API_ERRORS.get(code)
        ask.error(code, template.format(detail=detail) if template else str(term))

    s.tree.api_call(entry.sup.path, make, done)


def start_child(s: Services, ask: Asker, args: dict) -> None:
    from ..config.loader import parse_dynamic_child
    from .boot import iter_workers

    entry = _supervisor(s, ask, args)
    if entry is None:
        return
    sup = entry.sup
    table = {k: v for k, v in args.items() if k in ("id", "manifest", "restart", "shutdown", "significant", "type", "node")
             and v is not None}
    try:
        if sup.simple:
            spec = None
            if table.get("manifest"):
                spec = parse_dynamic_child({"id": "instance", "manifest": table["manifest"]}, "start-child", sup.flags)
        else:
            spec = parse_dynamic_child(table, "start-child", sup.flags)
    except TheaterError as exc:
        ask.error("invalid_child_spec", str(exc))
        return

    def compiled(error: Exception | None) -> None:
        if error is not None:
            ask.error("invalid_child_spec", str(error))
        elif s.tree.supervisors.get(sup.path) is entry:
            child = spec or sup.template
            assert child is not None  # a simple_one_for_one supervisor always has its template
            _api(s, ask, entry, lambda req: ev.StartChildRequest(req, child))
        else:
            ask.error("not_found", f"supervisor {sup.path} stopped meanwhile")

    s.components.ensure([w.manifest for w in iter_workers(spec)] if spec else [], compiled)


def terminate_child(s: Services, ask: Asker, args: dict) -> None:
    entry = _supervisor(s, ask, args)
    if entry is not None:
        _api(s, ask, entry, lambda req: ev.TerminateChildRequest(req, args["id"]))


def restart_child(s: Services, ask: Asker, args: dict) -> None:
    entry = _supervisor(s, ask, args)
    if entry is not None:
        _api(s, ask, entry, lambda req: ev.RestartChildRequest(req, args["id"]))


def delete_child(s: Services, ask: Asker, args: dict) -> None:
    entry = _supervisor(s, ask, args)
    if entry is not None:
        _api(s, ask, entry, lambda req: ev.DeleteChildRequest(req, args["id"]))


def which_children(s: Services, ask: Asker, args: dict) -> None:
    entry = _supervisor(s, ask, args)
    if entry is not None:
        rows = [{**row, **s.tree.child_view(entry.sup.path, row["id"])} for row in entry.sup.which_children()]
        ask.ok({"supervisor": entry.sup.path, "children": rows})


def count_children(s: Services, ask: Asker, args: dict) -> None:
    entry = _supervisor(s, ask, args)
    if entry is not None:
        ask.ok({"supervisor": entry.sup.path, **entry.sup.count_children()})


#: control command name (control.COMMANDS) -> its handler
HANDLERS: dict[str, Handler] = {
    "ping": ping, "sync": sync, "tree": tree, "down": down, "resolve": resolve, "send": send,
    "request": request, "state": state, "start_child": start_child, "terminate_child": terminate_child,
    "restart_child": restart_child, "delete_child": delete_child, "which_children": which_children,
    "count_children": count_children,
}


__all__ = ["Asker", "HANDLERS", "Handler", "Services"]
