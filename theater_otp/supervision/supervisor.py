"""One OTP supervisor as an event-driven state machine (spec §1.1–§1.6).

`Supervisor.handle(event, now)` returns the actions the node must carry out.
A supervisor works on one *job* at a time (a sequence of stop and start steps,
e.g. a one_for_all restart); events that arrive meanwhile wait in its mailbox,
as they would in an Erlang process blocked in a child start or shutdown.
All restart decisions are made in `_on_child_exit` (the §1.4 table) and
`_restart` (the §1.2 strategies); intensity is the pure `add_restart`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, TypedDict

from ..config.model import AutoShutdown, ChildSpec, RestartType, Strategy
from .events import (
    Action,
    BackoffElapsed,
    ChildExited,
    ChildRemoved,
    ChildStarted,
    ChildStartFailed,
    DeleteChildRequest,
    Event,
    Post,
    Reply,
    ReplyValue,
    Report,
    RestartChildRequest,
    Start,
    StartChild,
    StartChildRequest,
    StartedValue,
    Stop,
    StopChild,
    SupervisorExited,
    SupervisorStarted,
    TerminateChildRequest,
    TryAgain,
)
from .intensity import add_restart
from .reasons import SHUTDOWN, ExitReason, ReasonKind


class WhichChild(TypedDict):
    """One row of which_children (§1.7)."""

    id: str
    #: the running incarnation, "restarting", or None (stopped)
    child: int | str | None
    type: str


class ChildCounts(TypedDict):
    """count_children (§1.7)."""

    specs: int
    active: int
    supervisors: int
    workers: int


class ChildState(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"        # spec kept, no process (OTP pid `undefined`)
    RESTARTING = "restarting"  # a restart failed; a TryAgain is pending
    STARTING = "starting"
    STOPPING = "stopping"


@dataclass
class Child:
    """A child spec plus its live state. `incarnation` is set iff state is RUNNING or STOPPING."""

    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    incarnation: int | None = None
    restarts: int = 0
    started_at: float | None = None   # `now` of the last successful start
    backoff_level: int = 0             # consecutive restarts, for the optional backoff


@dataclass
class _Job:
    """A sequence of steps ("stop"|"start", child id) run one at a time.

    `on_done` runs when the last step completes; `restart` marks the starts as restarts.
    """

    name: str
    steps: deque[tuple[str, str]]
    on_done: Callable[[], None]
    restart: bool
    waiting: tuple[str, str] | None = None
    #: called instead of the restart-failure path when a start fails (API starts)
    on_start_failed: Callable[[Child, ExitReason], None] | None = None
    #: children a concurrent "stop_all" step still waits for: id -> incarnation
    pending_stops: dict[str, int] = field(default_factory=dict)


class Supervisor:
    """Invariant: `order` lists exactly the keys of `children`, in start order."""

    def __init__(self, path: str, spec: ChildSpec):
        self.path = path
        self.spec = spec
        self.flags = spec.flags
        self.simple = self.flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE
        #: simple_one_for_one: the one spec every instance is made from; no child starts at init
        self.template: ChildSpec | None = spec.children[0] if self.simple else None
        static = () if self.simple else spec.children
        self.order: list[str] = [c.id for c in static]
        self.children: dict[str, Child] = {c.id: Child(c) for c in static}
        self._instances = 0
        self.restart_stamps: tuple[int, ...] = ()
        self.job: _Job | None = None
        self.mailbox: deque[Event] = deque()
        self.alive = True
        self.exit_reason: ExitReason | None = None
        self._out: list[Action] = []
        self._now = 0.0

    # ---- public entry point ------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; return the actions to carry out, in order."""
        self._out = []
        self._now = now
        if not self.alive:
            return []
        if self.job is not None and self._completes_step(event):
            self._step_done(event)
        elif self.job is not None:
            self.mailbox.append(event)
        else:
            self._dispatch(event)
        while self.job is None and self.mailbox and self.alive:
            self._dispatch(self.mailbox.popleft())
        return self._out

    # ---- queries ------------------------------------------------------------------

    def child(self, child_id: str) -> Child | None:
        return self.children.get(child_id)

    def ordered_children(self) -> list[Child]:
        return [self.children[i] for i in self.order]

    def next_starts(self, limit: int) -> list[ChildSpec]:
        """The specs the running job will start next, in order, up to `limit` (a start is asked
        only after the one before has started; the node may prepare these meanwhile). Stops
        still ahead in the job end the look: what follows them depends on how they end."""
        job = self.job
        found: list[ChildSpec] = []
        if job is None:
            return found
        for op, cid in job.steps:
            if len(found) >= limit or op != "start":
                break
            child = self.children.get(cid)
            if child is not None:
                found.append(child.spec)
        return found

    # ---- dispatch -----------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Start):
            self._start_job("init", [("start", i) for i in self.order], self._init_done, restart=False)
        elif isinstance(event, Stop):
            self._shut_down(event.reason, context="shutdown")
        elif isinstance(event, ChildExited):
            self._on_child_exit(event)
        elif isinstance(event, TryAgain):
            self._try_again(event.child_id)
        elif isinstance(event, BackoffElapsed):
            child = self.children.get(event.child_id)
            if child is not None and child.state is ChildState.RESTARTING:
                self._restart_now(event.child_id)
        elif isinstance(event, StartChildRequest):
            self._api_start_child(event)
        elif isinstance(event, TerminateChildRequest):
            self._api_terminate_child(event)
        elif isinstance(event, RestartChildRequest):
            self._api_restart_child(event)
        elif isinstance(event, DeleteChildRequest):
            self._api_delete_child(event)
        # ChildStarted / ChildStartFailed outside a job are stale: ignore.

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _report(self, context: str, child_id: str | None, reason: ExitReason | None = None,
                **data: object) -> None:
        self._emit(Report(self.path, context, child_id, reason, data))

    # ---- jobs ---------------------------------------------------------------------

    def _start_job(self, name: str, steps: list[tuple[str, str]], on_done: Callable[[], None], restart: bool,
                   on_start_failed: Callable[[Child, ExitReason], None] | None = None) -> None:
        self.job = _Job(name, deque(steps), on_done, restart, on_start_failed=on_start_failed)
        self._advance()

    def _advance(self) -> None:
        job = self.job
        assert job is not None
        while job.steps:
            op, cid = job.steps.popleft()
            if op == "stop_all":
                if self._stop_all(job):
                    return
                continue
            child = self.children.get(cid)
            if child is None:
                continue
            if op == "stop":
                if self._begin_stop(child):
                    job.waiting = ("stop", cid)
                    return
                continue
            else:
                child.state = ChildState.STARTING
                job.waiting = ("start", cid)
                self._emit(StartChild(self.path, cid, child.spec, restart=job.restart))
                return
        self.job = None
        job.on_done()

    def _begin_stop(self, child: Child) -> bool:
        """Ask the node to stop `child`; False if there is nothing to wait for (not running, or
        its own exit was already in the mailbox and is taken as the stop)."""
        if child.incarnation is None:
            if child.state is ChildState.RESTARTING:
                child.state = ChildState.STOPPED  # a pending retry is cancelled
            return False
        if self._take_pending_exit(child):
            return False
        child.state = ChildState.STOPPING
        self._emit(StopChild(self.path, child.spec.id, child.incarnation, child.spec.shutdown))
        return True

    def _stop_all(self, job: _Job) -> bool:
        """simple_one_for_one shutdown (§1.2): stop every running child at once; True if any to wait for."""
        for child in list(self.children.values()):
            incarnation = child.incarnation  # _begin_stop waits only for a child that has one
            if incarnation is not None and self._begin_stop(child):
                job.pending_stops[child.spec.id] = incarnation
        if job.pending_stops:
            job.waiting = ("stop_all", "*")
            return True
        return False

    def _take_pending_exit(self, child: Child) -> bool:
        """A child about to be stopped that already exited on its own: consume that exit (OTP's monitor_child)."""
        for ev in list(self.mailbox):
            if isinstance(ev, ChildExited) and ev.child_id == child.spec.id and ev.incarnation == child.incarnation:
                self.mailbox.remove(ev)
                self._stopped(child, ev.reason)
                return True
        return False

    def _completes_step(self, event: Event) -> bool:
        job = self.job
        if job is None or job.waiting is None:
            return False
        op, cid = job.waiting
        if op == "stop_all":
            return isinstance(event, ChildExited) and job.pending_stops.get(event.child_id) == event.incarnation
        if op == "start":
            return isinstance(event, (ChildStarted, ChildStartFailed)) and event.child_id == cid
        child = self.children.get(cid)
        return (isinstance(event, ChildExited) and event.child_id == cid
                and child is not None and event.incarnation == child.incarnation)

    def _step_done(self, event: Event) -> None:
        job = self.job
        assert job is not None
        if job.waiting and job.waiting[0] == "stop_all" and isinstance(event, ChildExited):
            del job.pending_stops[event.child_id]
            self._stopped(self.children[event.child_id], event.reason)
            if not job.pending_stops:
                job.waiting = None
                self._advance()
            return
        job.waiting = None
        if isinstance(event, ChildStarted):
            child = self.children[event.child_id]
            child.state = ChildState.RUNNING
            child.incarnation = event.incarnation
            child.started_at = self._now
            if job.restart:
                child.restarts += 1
            self._report("child_started", child.spec.id, incarnation=event.incarnation, restart=job.restart)
            self._advance()
        elif isinstance(event, ChildStartFailed):
            self._start_failed(job, self.children[event.child_id], event.reason)
        elif isinstance(event, ChildExited):
            self._stopped(self.children[event.child_id], event.reason)
            self._advance()

    def _stopped(self, child: Child, reason: ExitReason) -> None:
        """A child stopped on the supervisor's request (or was found dead when about to be)."""
        child.incarnation = None
        child.state = ChildState.STOPPED
        expected = reason.kind is ReasonKind.SHUTDOWN or (
            child.spec.shutdown.kind == "brutal_kill" and reason.kind is ReasonKind.KILLED
        ) or (child.spec.restart is not RestartType.PERMANENT and reason.is_normal)
        self._report("child_stopped" if expected else "shutdown_error", child.spec.id, reason)
        if child.spec.restart is RestartType.TEMPORARY or self.simple:
            self._delete(child.spec.id)  # simple_one_for_one instances have no spec of their own

    def _delete(self, child_id: str) -> None:
        self.order.remove(child_id)
        del self.children[child_id]
        self._emit(ChildRemoved(self.path, child_id))

    # ---- start-up -----------------------------------------------------------------

    def _init_done(self) -> None:
        self._emit(SupervisorStarted(self.path))

    def _start_failed(self, job: _Job, child: Child, reason: ExitReason) -> None:
        child.state = ChildState.STOPPED
        child.incarnation = None
        self._report("start_error", child.spec.id, reason)
        if job.on_start_failed is not None:
            self.job = None
            job.on_start_failed(child, reason)
            return
        if job.name == "init":
            # §1.1: stop the children already started, in reverse order, then fail.
            failure = ExitReason(ReasonKind.SHUTDOWN, f"failed_to_start_child {child.spec.id}: {reason}")
            started = [c.spec.id for c in self.ordered_children() if c.incarnation is not None]
            self._start_job("init_failed", [("stop", i) for i in reversed(started)],
                            lambda: self._exit(failure, "start_failed", during_start=True), restart=False)
            return
        # §1.3: a failed restart marks the child restarting and posts a retry to ourselves.
        self.job = None
        child.state = ChildState.RESTARTING
        for op, cid in job.steps:  # the rest of this restart waits for the retry
            if op == "start" and cid in self.children:
                self.children[cid].state = ChildState.STOPPED
        self._emit(Post(self.path, TryAgain(child.spec.id)))

    # ---- exits and restarts (§1.4, §1.2, §1.3) ----------------------------------------

    def _on_child_exit(self, ev: ChildExited) -> None:
        child = self.children.get(ev.child_id)
        if child is None or child.incarnation != ev.incarnation:
            return  # stale: an earlier incarnation, or a deleted child (§1.8)
        child.incarnation = None
        child.state = ChildState.STOPPED
        self._report("child_terminated", child.spec.id, ev.reason)
        restart_type = child.spec.restart
        if restart_type is RestartType.TEMPORARY:
            self._delete(child.spec.id)
            self._maybe_auto_shutdown(child)
            return
        if restart_type is RestartType.TRANSIENT and ev.reason.is_normal:
            if self.simple:
                self._delete(child.spec.id)
            self._maybe_auto_shutdown(child)
            return
        self._restart(child.spec.id)

    def _restart(self, child_id: str) -> None:
        """Charge one restart event against intensity, then restart per strategy."""
        self.restart_stamps, within = add_restart(
            self.restart_stamps, int(self._now), self.flags.intensity, self.flags.period)
        if not within:
            self._report("reached_max_restart_intensity", child_id, SHUTDOWN,
                         intensity=self.flags.intensity, period=self.flags.period)
            child = self.children.get(child_id)
            if child is not None:
                child.state = ChildState.STOPPED
            self._shut_down(SHUTDOWN, context="reached_max_restart_intensity")
            return
        child = self.children.get(child_id)
        backoff = self.flags.backoff
        if backoff is not None and child is not None:
            ran_for = self._now - child.started_at if child.started_at is not None else 0.0
            if ran_for >= backoff.reset_after_s:
                child.backoff_level = 0
            delay = backoff.delay_s(child.backoff_level)
            child.backoff_level += 1
            child.state = ChildState.RESTARTING
            self._report("child_restarting", child_id, strategy=self.flags.strategy.value,
                         delay_ms=round(delay * 1000))
            self._emit(Post(self.path, BackoffElapsed(child_id), delay))
            return
        self._report("child_restarting", child_id, strategy=self.flags.strategy.value)
        self._restart_now(child_id)

    def _restart_now(self, child_id: str) -> None:
        """Restart per strategy (§1.2); intensity was charged by the caller."""
        strategy = self.flags.strategy
        if strategy in (Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE):
            affected = [child_id]
        elif strategy is Strategy.ONE_FOR_ALL:
            affected = list(self.order)
        else:  # rest_for_one: the child and those after it
            affected = self.order[self.order.index(child_id):]
        stops = [("stop", i) for i in reversed(affected) if i != child_id]
        # Temporary bystanders are stopped and dropped (see _stopped); every other spec is started.
        starts = [("start", i) for i in affected
                  if i == child_id or self.children[i].spec.restart is not RestartType.TEMPORARY]
        self._start_job("restart", stops + starts, lambda: None, restart=True)

    def _try_again(self, child_id: str) -> None:
        child = self.children.get(child_id)
        if child is None or child.state is not ChildState.RESTARTING:
            return  # terminated or deleted meanwhile
        self._restart(child_id)

    def _maybe_auto_shutdown(self, child: Child) -> None:
        """§1.6: a significant child ended on its own and is not restarted."""
        mode = self.flags.auto_shutdown
        if not child.spec.significant or mode is AutoShutdown.NEVER:
            return
        if mode is AutoShutdown.ALL_SIGNIFICANT and any(
            c.spec.significant and c.state in (ChildState.RUNNING, ChildState.RESTARTING)
            for c in self.children.values()
        ):
            return
        self._report("auto_shutdown", child.spec.id, SHUTDOWN, mode=mode.value)
        self._shut_down(SHUTDOWN, context="auto_shutdown")

    # ---- stopping the supervisor itself (§1.5) ------------------------------------------

    def _shut_down(self, reason: ExitReason, context: str) -> None:
        running = [c.spec.id for c in self.ordered_children()
                   if c.incarnation is not None or c.state is ChildState.RESTARTING]
        self._report("shutting_down", None, reason, because=context)
        steps = [("stop_all", "*")] if self.simple else [("stop", i) for i in reversed(running)]
        self._start_job("shutdown", steps, lambda: self._exit(reason, context), restart=False)

    def _exit(self, reason: ExitReason, context: str, during_start: bool = False) -> None:
        self.alive = False
        self.exit_reason = reason
        self.mailbox.clear()
        self._emit(SupervisorExited(self.path, reason, during_start=during_start, context=context))

    # ---- the dynamic child API (§1.7) ------------------------------------------------------

    def _reply(self, req: int, ok: bool, value: ReplyValue = None) -> None:
        self._emit(Reply(self.path, req, ok, value))

    def _api_start_child(self, ev: StartChildRequest) -> None:
        spec = ev.spec
        if self.template is not None:  # simple_one_for_one
            self._instances += 1
            spec = replace(self.template, id=f"{self.template.id}-{self._instances}",
                           manifest=spec.manifest or self.template.manifest)
        else:
            problem = self._check_spec(spec)
            if problem is not None:
                self._reply(ev.req, False, problem)
                return
            existing = self.children.get(spec.id)
            if existing is not None:
                if existing.incarnation is not None:
                    self._reply(ev.req, False, ("already_started", existing.incarnation))
                else:
                    self._reply(ev.req, False, "already_present")
                return
        self.order.append(spec.id)
        self.children[spec.id] = Child(spec)

        def failed(child: Child, reason: ExitReason) -> None:
            self._delete(child.spec.id)  # nothing stored (§1.7)
            self._reply(ev.req, False, ("start_failed", str(reason)))

        self._start_job("start_child", [("start", spec.id)],
                        lambda: self._reply(ev.req, True, self._started_value(spec.id)), restart=False,
                        on_start_failed=failed)

    def _started_value(self, child_id: str) -> StartedValue:
        child = self.children[child_id]
        return {"id": child_id, "incarnation": child.incarnation}

    def _check_spec(self, spec: ChildSpec) -> str | None:
        """The checks a spec's own fields cannot make: they depend on this supervisor's flags (§1.10)."""
        if spec.significant and self.flags.auto_shutdown is AutoShutdown.NEVER:
            return "bad_combination: significant = true needs auto_shutdown any_significant or all_significant"
        if spec.significant and spec.restart is RestartType.PERMANENT:
            return "bad_combination: a permanent child cannot be significant"
        return None

    def _was_instance(self, child_id: str) -> bool:
        """simple_one_for_one: `child_id` named an instance this supervisor started (now gone)."""
        if not self.simple or self.template is None:
            return False
        prefix, _, number = child_id.rpartition("-")
        return prefix == self.template.id and number.isdigit() and 1 <= int(number) <= self._instances

    def _api_terminate_child(self, ev: TerminateChildRequest) -> None:
        child = self.children.get(ev.child_id)
        if child is None:
            # OTP: terminating a simple_one_for_one instance that is already gone is ok (the caller's
            # intent holds); an id that never named one of its instances is not_found
            self._reply(ev.req, self._was_instance(ev.child_id), None if self._was_instance(ev.child_id)
                        else "not_found")
            return
        if child.incarnation is None:
            if child.state is ChildState.RESTARTING:
                child.state = ChildState.STOPPED  # cancels the pending retry (§1.7)
            if child.spec.restart is RestartType.TEMPORARY or self.simple:
                self._delete(child.spec.id)
            self._reply(ev.req, True)
            return
        self._start_job("terminate_child", [("stop", ev.child_id)], lambda: self._reply(ev.req, True), restart=False)

    def _stopped_child(self, req: int, child_id: str) -> Child | None:
        """The child restart_child / delete_child may act on; otherwise reply OTP's error and None."""
        child = self.children.get(child_id)
        error = ("simple_one_for_one" if self.simple else "not_found" if child is None
                 else "running" if child.incarnation is not None
                 else "restarting" if child.state is ChildState.RESTARTING else None)
        if error is not None:
            self._reply(req, False, error)
            return None
        return child

    def _api_restart_child(self, ev: RestartChildRequest) -> None:
        if self._stopped_child(ev.req, ev.child_id) is not None:
            def failed(child: Child, reason: ExitReason) -> None:
                self._reply(ev.req, False, ("start_failed", str(reason)))  # spec kept, no retry loop

            self._start_job("restart_child", [("start", ev.child_id)],
                            lambda: self._reply(ev.req, True, self._started_value(ev.child_id)), restart=False,
                            on_start_failed=failed)

    def _api_delete_child(self, ev: DeleteChildRequest) -> None:
        if self._stopped_child(ev.req, ev.child_id) is not None:
            self._delete(ev.child_id)
            self._reply(ev.req, True)

    # ---- read-only views (answered at once, like which_children and count_children) ---------

    def which_children(self) -> list[WhichChild]:
        """Children newest first (§1.7): id, incarnation or "restarting" or None, type."""
        out: list[WhichChild] = []
        for child in reversed(self.ordered_children()):
            # a start in progress is shown as restarting too (OTP would not answer until it ended)
            status: int | str | None = child.incarnation if child.incarnation is not None else (
                "restarting" if child.state in (ChildState.RESTARTING, ChildState.STARTING) else None)
            out.append({"id": child.spec.id, "child": status, "type": child.spec.type.value})
        return out

    def count_children(self) -> ChildCounts:
        kids = list(self.children.values())
        return {
            "specs": 1 if self.simple else len(kids),
            "active": sum(1 for c in kids if c.incarnation is not None),
            "supervisors": sum(1 for c in kids if c.spec.type.value == "supervisor"),
            "workers": sum(1 for c in kids if c.spec.type.value == "worker"),
        }
