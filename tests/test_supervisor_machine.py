"""The supervisor state machine against the OTP reference (shared spec otp-supervisor.md §1.1–§1.6).

No processes run here. `FakeNode` plays the node: it carries out the actions the
`Supervisor` returns and feeds back the events a real node would, one at a time,
in arrival order:

* StartChild -> gives out the next incarnation and answers ChildStarted, or
  ChildStartFailed if the test asked that child's next start(s) to fail;
* StopChild  -> if that incarnation is still alive, answers ChildExited(SHUTDOWN)
  (or the reason set in `stop_reasons`); a child that already died has its own
  exit on the way, so nothing more is sent (spec §1.5 "must not hang");
* Post       -> feeds the posted event back (or holds it, with `auto_post=False`,
  so a test can interleave other events before a retry).

`log` records ("start" | "start_failed" | "stop", child id) in the order the
supervisor asked for them, so tests can assert order. Time is a fake clock:
every event carries an explicit integer `now`, and intensity tests keep the gaps
between restarts either < period or >= period + 1 (spec §1.3's tolerance band).
The dynamic API (§1.7) is not part of the state machine yet, so it is not tested.
"""

from __future__ import annotations

from collections import deque

import pytest

from theater_otp.config.model import (
    BRUTAL_KILL,
    INFINITY,
    AutoShutdown,
    ChildSpec,
    ChildType,
    RestartType,
    Shutdown,
    Strategy,
    SupFlags,
)
from theater_otp.supervision.events import (
    ChildExited,
    ChildStarted,
    ChildStartFailed,
    Post,
    Report,
    Start,
    StartChild,
    Stop,
    StopChild,
    SupervisorExited,
    SupervisorStarted,
    TryAgain,
)
from theater_otp.supervision.reasons import KILLED, NORMAL, SHUTDOWN, ExitReason, ReasonKind
from theater_otp.supervision.supervisor import ChildState, Supervisor

pytestmark = pytest.mark.unit

PERMANENT = RestartType.PERMANENT
TRANSIENT = RestartType.TRANSIENT
TEMPORARY = RestartType.TEMPORARY

CRASH = ExitReason(ReasonKind.ABNORMAL, "trap: unreachable")
SHUTDOWN_T = ExitReason(ReasonKind.SHUTDOWN, "{shutdown, done}")  # OTP's {shutdown, T}
START_ERROR = ExitReason(ReasonKind.ABNORMAL, "start failed")
PARENT_DIED = ExitReason(ReasonKind.ABNORMAL, "parent died")

ALL_REASONS = [NORMAL, SHUTDOWN, SHUTDOWN_T, KILLED, CRASH]
NORMAL_REASONS = [NORMAL, SHUTDOWN, SHUTDOWN_T]
ABNORMAL_REASONS = [KILLED, CRASH]


def worker(id: str, restart: RestartType = PERMANENT, **kw) -> ChildSpec:
    return ChildSpec(id=id, type=ChildType.WORKER, restart=restart, manifest=None, **kw)


def flags(strategy: Strategy = Strategy.ONE_FOR_ONE, intensity: int = 10, period: int = 5,
          auto_shutdown: AutoShutdown = AutoShutdown.NEVER) -> SupFlags:
    return SupFlags(strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto_shutdown)


class FakeNode:
    """Carries out a Supervisor's actions and feeds the answers back, without processes."""

    def __init__(self, children: list[ChildSpec], sup_flags: SupFlags | None = None, *, auto_post: bool = True):
        spec = ChildSpec(id="sup", type=ChildType.SUPERVISOR, restart=PERMANENT, shutdown=INFINITY,
                         flags=sup_flags or flags(), children=tuple(children))
        self.sup = Supervisor("sup", spec)
        self.now = 0
        self.next_incarnation = 1
        self.fail_starts: dict[str, int] = {}        # child id -> how many of its next starts fail
        self.stop_reasons: dict[str, ExitReason] = {}  # child id -> reason it exits with when stopped
        self.live: dict[str, int] = {}               # child id -> incarnation of its live process
        self.log: list[tuple[str, str]] = []
        self.actions: list = []                      # every action the supervisor emitted, in order
        self.queue: deque = deque()                  # answers not yet delivered
        self.auto_post = auto_post
        self.posted: list = []

    # ---- driving ------------------------------------------------------------------

    def feed(self, event, now: int | None = None, *, drain: bool = True) -> list:
        """Deliver one event now; carry out its actions; then (by default) deliver every answer."""
        if now is not None:
            self.now = now
        acts = self.sup.handle(event, self.now)
        self._execute(acts)
        if drain:
            acts = acts + self.drain()
        return acts

    def step(self) -> list:
        """Deliver the oldest pending answer only."""
        acts = self.sup.handle(self.queue.popleft(), self.now)
        self._execute(acts)
        return acts

    def drain(self) -> list:
        acts: list = []
        while self.queue:
            acts += self.step()
        return acts

    def boot(self) -> list:
        acts = self.feed(Start())
        assert SupervisorStarted("sup") in acts
        return acts

    def crash(self, child_id: str, reason: ExitReason = CRASH, now: int | None = None, *, drain: bool = True) -> list:
        """The child's process dies on its own and the node reports it right away."""
        inc = self.live.pop(child_id)
        return self.feed(ChildExited(child_id, inc, reason), now, drain=drain)

    def die_quietly(self, child_id: str, reason: ExitReason = CRASH) -> None:
        """The child's process dies; its exit is queued behind the answers already pending."""
        inc = self.live.pop(child_id)
        self.queue.append(ChildExited(child_id, inc, reason))

    def deliver_posts(self, now: int | None = None) -> list:
        acts: list = []
        posted, self.posted = self.posted, []
        for ev in posted:
            acts += self.feed(ev, now)
        return acts

    def _execute(self, acts: list) -> None:
        for a in acts:
            self.actions.append(a)
            if isinstance(a, StartChild):
                inc = self.next_incarnation
                self.next_incarnation += 1
                if self.fail_starts.get(a.child_id, 0) > 0:
                    self.fail_starts[a.child_id] -= 1
                    self.log.append(("start_failed", a.child_id))
                    self.queue.append(ChildStartFailed(a.child_id, START_ERROR))
                else:
                    self.live[a.child_id] = inc
                    self.log.append(("start", a.child_id))
                    self.queue.append(ChildStarted(a.child_id, inc))
            elif isinstance(a, StopChild):
                self.log.append(("stop", a.child_id))
                if self.live.get(a.child_id) == a.incarnation:
                    del self.live[a.child_id]
                    self.queue.append(ChildExited(a.child_id, a.incarnation,
                                                  self.stop_reasons.get(a.child_id, SHUTDOWN)))
                # else: already dead; its own ChildExited is already pending.
            elif isinstance(a, Post):
                if self.auto_post:
                    self.queue.append(a.event)
                else:
                    self.posted.append(a.event)

    # ---- observing ----------------------------------------------------------------

    def mark(self) -> int:
        return len(self.log)

    def since(self, mark: int) -> list[tuple[str, str]]:
        return self.log[mark:]

    def exits(self) -> list[SupervisorExited]:
        return [a for a in self.actions if isinstance(a, SupervisorExited)]

    def reports(self, context: str) -> list[Report]:
        return [a for a in self.actions if isinstance(a, Report) and a.context == context]

    def incarnations(self) -> dict[str, int | None]:
        return {c.spec.id: c.incarnation for c in self.sup.ordered_children()}

    def ids(self) -> list[str]:
        return [c.spec.id for c in self.sup.ordered_children()]


def starts(*ids: str) -> list[tuple[str, str]]:
    return [("start", i) for i in ids]


def stops(*ids: str) -> list[tuple[str, str]]:
    return [("stop", i) for i in ids]


def assert_exited(node: FakeNode, kind: ReasonKind = ReasonKind.SHUTDOWN) -> SupervisorExited:
    exits = node.exits()
    assert len(exits) == 1, exits
    assert exits[0].reason.kind is kind
    assert not node.sup.alive
    return exits[0]


# =====================================================================================
# §1.1 Start-up
# =====================================================================================

def test_init_starts_children_one_at_a_time_left_to_right():
    """§1.1: children are started synchronously, one at a time, left→right; start returns only after all."""
    node = FakeNode([worker("a"), worker("b"), worker("c")])
    acts = node.feed(Start(), drain=False)
    assert [a.child_id for a in acts if isinstance(a, StartChild)] == ["a"]
    assert all(a.restart is False for a in acts if isinstance(a, StartChild))
    acts = node.step()  # a started
    assert [a.child_id for a in acts if isinstance(a, StartChild)] == ["b"]
    assert not any(isinstance(a, SupervisorStarted) for a in acts)
    acts = node.step()  # b started
    assert [a.child_id for a in acts if isinstance(a, StartChild)] == ["c"]
    assert not any(isinstance(a, SupervisorStarted) for a in acts)
    acts = node.step()  # c started
    assert SupervisorStarted("sup") in acts
    assert node.log == starts("a", "b", "c")
    assert all(c.state is ChildState.RUNNING for c in node.sup.ordered_children())
    assert node.incarnations() == node.live


def test_start_failure_during_init_stops_started_children_in_reverse():
    """§1.1: child k fails → 1..k-1 terminated in reverse start order, later children never start,
    supervisor exits {shutdown,{failed_to_start_child,Id,R}}."""
    node = FakeNode([worker("a"), worker("b", shutdown=BRUTAL_KILL), worker("c"), worker("d")])
    node.fail_starts["c"] = 1
    node.feed(Start())
    assert node.log == starts("a", "b") + [("start_failed", "c")] + stops("b", "a")
    stop_specs = [(a.child_id, a.shutdown) for a in node.actions if isinstance(a, StopChild)]
    assert stop_specs == [("b", BRUTAL_KILL), ("a", Shutdown.timeout(5000))]
    assert not any(isinstance(a, SupervisorStarted) for a in node.actions)
    ex = assert_exited(node, ReasonKind.SHUTDOWN)
    assert ex.during_start
    assert "failed_to_start_child" in ex.reason.detail and "c" in ex.reason.detail
    assert node.live == {}


def test_start_failure_of_first_child_stops_nothing():
    """§1.1: if the first child fails there is nothing to terminate; the supervisor still exits failed_to_start_child."""
    node = FakeNode([worker("a"), worker("b")])
    node.fail_starts["a"] = 1
    node.feed(Start())
    assert node.log == [("start_failed", "a")]
    assert assert_exited(node).during_start


# =====================================================================================
# §1.2 Strategies
# =====================================================================================

def test_one_for_one_restarts_only_the_dead_child():
    """§1.2 one_for_one: only the dead child is restarted, same id and position, new incarnation; siblings untouched."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(Strategy.ONE_FOR_ONE))
    node.boot()
    before = node.incarnations()
    m = node.mark()
    acts = node.crash("b")
    assert node.since(m) == starts("b")
    assert [a.restart for a in acts if isinstance(a, StartChild)] == [True]
    after = node.incarnations()
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert after["b"] not in (None, before["b"])
    assert node.ids() == ["a", "b", "c"]
    assert node.sup.child("b").state is ChildState.RUNNING


def test_one_for_all_stops_others_in_reverse_then_starts_all_in_order():
    """§1.2 one_for_all: all other children terminated in reverse start order, then all started in start order."""
    node = FakeNode([worker("a"), worker("b"), worker("c"), worker("d", shutdown=BRUTAL_KILL)],
                    flags(Strategy.ONE_FOR_ALL))
    node.boot()
    before = node.incarnations()
    m = node.mark()
    node.crash("b")
    assert node.since(m) == stops("d", "c", "a") + starts("a", "b", "c", "d")
    assert [a.shutdown for a in node.actions if isinstance(a, StopChild)] == [
        BRUTAL_KILL, Shutdown.timeout(5000), Shutdown.timeout(5000)]
    after = node.incarnations()
    assert all(after[i] not in (None, before[i]) for i in "abcd")
    assert node.ids() == ["a", "b", "c", "d"]
    assert node.sup.alive


def test_rest_for_one_keeps_earlier_children():
    """§1.2 rest_for_one: later children terminated in reverse, then the dead one and those after it
    started in order; children before it keep their incarnations."""
    node = FakeNode([worker("a"), worker("b"), worker("c"), worker("d")], flags(Strategy.REST_FOR_ONE))
    node.boot()
    before = node.incarnations()
    m = node.mark()
    node.crash("b")
    assert node.since(m) == stops("d", "c") + starts("b", "c", "d")
    after = node.incarnations()
    assert after["a"] == before["a"]
    assert all(after[i] not in (None, before[i]) for i in "bcd")


def test_rest_for_one_last_child_restarts_alone():
    """§1.2 rest_for_one: with no children after the dead one, only it is restarted."""
    node = FakeNode([worker("a"), worker("b")], flags(Strategy.REST_FOR_ONE))
    node.boot()
    m = node.mark()
    node.crash("b")
    assert node.since(m) == starts("b")


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_temporary_bystander_is_dropped_not_restarted(strategy):
    """§1.2/§1.4: temporary siblings are terminated as bystanders and dropped, not restarted."""
    node = FakeNode([worker("a"), worker("b"), worker("t", TEMPORARY), worker("d")], flags(strategy))
    node.boot()
    m = node.mark()
    node.crash("b")
    if strategy is Strategy.ONE_FOR_ALL:
        assert node.since(m) == stops("d", "t", "a") + starts("a", "b", "d")
    else:
        assert node.since(m) == stops("d", "t") + starts("b", "d")
    assert node.sup.child("t") is None
    assert node.ids() == ["a", "b", "d"]


def test_one_for_all_restarts_specs_that_were_not_running():
    """§1.2 [src]: one_for_all (re)starts every non-temporary spec, including a transient that had exited normally."""
    node = FakeNode([worker("a"), worker("tr", TRANSIENT), worker("c")], flags(Strategy.ONE_FOR_ALL))
    node.boot()
    node.crash("tr", NORMAL)
    assert node.sup.child("tr").state is ChildState.STOPPED
    m = node.mark()
    node.crash("c")
    assert node.since(m) == stops("a") + starts("a", "tr", "c")
    assert node.sup.child("tr").state is ChildState.RUNNING


def test_rest_for_one_restarts_not_running_specs_in_suffix():
    """§1.2: rest_for_one applies the one_for_all not-running rule to the affected suffix only."""
    node = FakeNode([worker("tr0", TRANSIENT), worker("b"), worker("tr", TRANSIENT), worker("d")],
                    flags(Strategy.REST_FOR_ONE))
    node.boot()
    node.crash("tr0", NORMAL)
    node.crash("tr", SHUTDOWN)
    m = node.mark()
    node.crash("b")
    assert node.since(m) == stops("d") + starts("b", "tr", "d")
    assert node.sup.child("tr0").state is ChildState.STOPPED  # before b: untouched
    assert node.sup.child("tr").state is ChildState.RUNNING


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_bystander_shutdown_exits_do_not_trigger_restarts(strategy):
    """§1.2: a restart is triggered only by a child exiting on its own; bystander stops are not restart events."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(strategy, intensity=1, period=5))
    node.boot()
    node.crash("a", now=0)
    assert node.sup.alive
    assert len(node.sup.restart_stamps) == 1
    assert len(node.reports("child_restarting")) == 1


# =====================================================================================
# §1.4 Restart types × exit reason
# =====================================================================================

@pytest.mark.parametrize("reason", ALL_REASONS, ids=str)
def test_permanent_child_is_restarted_for_any_reason(reason):
    """§1.4: a permanent child is restarted whatever its exit reason (normal included)."""
    node = FakeNode([worker("a"), worker("p", PERMANENT)])
    node.boot()
    m = node.mark()
    node.crash("p", reason)
    assert node.since(m) == starts("p")
    assert node.sup.child("p").state is ChildState.RUNNING


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
@pytest.mark.parametrize("reason", NORMAL_REASONS, ids=str)
def test_transient_normal_exit_keeps_spec_not_restarted(reason, strategy):
    """§1.4: transient + normal/shutdown/{shutdown,_} → no restart, spec kept (pid undefined);
    §1.2: siblings untouched under any strategy, and no intensity is charged."""
    node = FakeNode([worker("a"), worker("tr", TRANSIENT), worker("c")], flags(strategy, intensity=0))
    node.boot()
    before = node.incarnations()
    m = node.mark()
    node.crash("tr", reason)
    assert node.since(m) == []
    child = node.sup.child("tr")
    assert child is not None and child.state is ChildState.STOPPED and child.incarnation is None
    assert node.ids() == ["a", "tr", "c"]
    assert node.incarnations() == {**before, "tr": None}
    assert node.sup.alive and node.sup.restart_stamps == ()


@pytest.mark.parametrize("reason", ABNORMAL_REASONS, ids=str)
def test_transient_abnormal_exit_restarts(reason):
    """§1.4: transient + killed/abnormal → restart."""
    node = FakeNode([worker("a"), worker("tr", TRANSIENT)])
    node.boot()
    m = node.mark()
    node.crash("tr", reason)
    assert node.since(m) == starts("tr")
    assert node.sup.child("tr").state is ChildState.RUNNING


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
@pytest.mark.parametrize("reason", ALL_REASONS, ids=str)
def test_temporary_exit_deletes_spec_and_never_restarts(reason, strategy):
    """§1.4: a temporary child is never restarted and its spec is deleted, for any reason;
    §1.2: its exit never affects siblings, and no intensity is charged."""
    node = FakeNode([worker("a"), worker("t", TEMPORARY), worker("c")], flags(strategy, intensity=0))
    node.boot()
    before = node.incarnations()
    m = node.mark()
    node.crash("t", reason)
    assert node.since(m) == []
    assert node.sup.child("t") is None
    assert node.ids() == ["a", "c"]
    assert node.incarnations() == {"a": before["a"], "c": before["c"]}
    assert node.sup.alive and node.sup.restart_stamps == ()


@pytest.mark.parametrize("restart, restarted", [(PERMANENT, True), (TRANSIENT, False), (TEMPORARY, False)])
def test_child_supervisor_giving_up_is_handled_by_its_restart_type(restart, restarted):
    """§1.3: a child supervisor that gave up exits `shutdown`; the parent restarts it if permanent,
    not if transient (`shutdown` is a normal reason), drops it if temporary."""
    sub = ChildSpec(id="sub", type=ChildType.SUPERVISOR, restart=restart, shutdown=INFINITY)
    node = FakeNode([worker("a"), sub])
    node.boot()
    m = node.mark()
    node.crash("sub", SHUTDOWN)
    assert node.since(m) == (starts("sub") if restarted else [])
    if restart is TEMPORARY:
        assert node.sup.child("sub") is None
    else:
        assert node.sup.child("sub").state is (ChildState.RUNNING if restarted else ChildState.STOPPED)


# =====================================================================================
# §1.3 Restart intensity
# =====================================================================================

def test_intensity_exceeded_stops_children_in_reverse_and_exits_shutdown():
    """§1.3: the (MaxR+1)-th restart within MaxT gives up: the offending child is not restarted, the
    others are terminated in reverse start order, the supervisor exits `shutdown`."""
    node = FakeNode([worker("a"), worker("b"), worker("c"), worker("d")], flags(intensity=2, period=10))
    node.boot()
    node.crash("b", now=0)
    node.crash("b", now=3)
    assert node.sup.alive
    m = node.mark()
    node.crash("b", now=6)
    assert node.since(m) == stops("d", "c", "a")
    ex = assert_exited(node, ReasonKind.SHUTDOWN)
    assert ex.reason == SHUTDOWN and not ex.during_start
    assert "b" in [r.child_id for r in node.reports("reached_max_restart_intensity")]  # logged as such
    assert node.live == {}


def test_intensity_zero_gives_up_on_first_restart():
    """§1.3: intensity 0 means the first restart-needing exit kills the supervisor."""
    node = FakeNode([worker("a"), worker("b")], flags(intensity=0, period=5))
    node.boot()
    m = node.mark()
    node.crash("b", now=0)
    assert node.since(m) == stops("a")
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_restarts_within_period_accumulate():
    """§1.3: two restart events less than MaxT seconds apart always count together."""
    node = FakeNode([worker("a")], flags(intensity=1, period=5))
    node.boot()
    node.crash("a", now=100)
    assert node.sup.alive
    node.crash("a", now=104)
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_restarts_outside_period_do_not_accumulate():
    """§1.3: events ≥ MaxT+1 seconds apart never count together (gaps chosen outside [MaxT, MaxT+1))."""
    node = FakeNode([worker("a")], flags(intensity=1, period=5))
    node.boot()
    for t in (0, 6, 12, 18, 24):
        m = node.mark()
        node.crash("a", now=t)
        assert node.since(m) == starts("a")
        assert node.sup.alive
    assert node.sup.restart_stamps == (24,)


def test_intensity_is_counted_across_all_children():
    """§1.3: restart events are counted per supervisor, across all children."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(intensity=2, period=10))
    node.boot()
    node.crash("a", now=0)
    node.crash("b", now=1)
    assert node.sup.alive
    m = node.mark()
    node.crash("c", now=2)
    assert node.since(m) == stops("b", "a")
    assert_exited(node, ReasonKind.SHUTDOWN)


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_multi_child_restart_counts_as_one_event(strategy):
    """§1.3: a one_for_all/rest_for_one restart of N children is one restart event."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(strategy, intensity=1, period=5))
    node.boot()
    node.crash("a", now=0)
    assert node.sup.alive
    assert node.sup.restart_stamps == (0,)
    node.crash("a", now=1)
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_failed_restart_marks_restarting_and_posts_retry():
    """§1.3: a failed restart shows the child as `restarting` and posts the retry to the supervisor itself."""
    node = FakeNode([worker("a"), worker("b")], auto_post=False)
    node.boot()
    node.fail_starts["a"] = 1
    b_before = node.incarnations()["b"]
    acts = node.crash("a", now=0)
    assert Post("sup", TryAgain("a")) in [a for a in acts if isinstance(a, Post)]
    assert node.posted == [TryAgain("a")]
    assert node.sup.child("a").state is ChildState.RESTARTING
    assert node.sup.child("a").incarnation is None
    assert node.sup.job is None  # not blocked in a loop: other events are served
    assert node.incarnations()["b"] == b_before
    m = node.mark()
    node.deliver_posts(now=0)
    assert node.since(m) == starts("a")
    assert node.sup.child("a").state is ChildState.RUNNING
    assert node.sup.alive


def test_stop_request_interleaves_with_pending_retry():
    """§1.3: because the retry is a posted message, a shutdown request is served between retries;
    §1.5: the supervisor then stops its children and the stale retry does nothing."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], auto_post=False)
    node.boot()
    node.fail_starts["b"] = 1
    node.crash("b", now=0)
    assert node.sup.child("b").state is ChildState.RESTARTING
    m = node.mark()
    node.feed(Stop(SHUTDOWN), now=0)
    assert node.since(m) == stops("c", "a")
    assert_exited(node, ReasonKind.SHUTDOWN)
    m = node.mark()
    assert node.deliver_posts(now=0) == []
    assert node.since(m) == []


def test_retry_counts_against_intensity():
    """§1.3: each retry after a failed restart counts as another restart event."""
    node = FakeNode([worker("a"), worker("b")], flags(intensity=2, period=10))
    node.boot()
    node.fail_starts["a"] = 2
    m = node.mark()
    node.crash("a", now=0)  # event 1 fails, retry = event 2 fails, retry = event 3 > 2 → give up
    assert node.since(m) == [("start_failed", "a"), ("start_failed", "a")] + stops("b")
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_retry_within_intensity_recovers():
    """§1.3: a retry that stays within intensity restarts the child (crash + one retry = 2 events ≤ MaxR 2)."""
    node = FakeNode([worker("a"), worker("b")], flags(intensity=2, period=10))
    node.boot()
    node.fail_starts["a"] = 1
    m = node.mark()
    node.crash("a", now=0)
    assert node.since(m) == [("start_failed", "a")] + starts("a")
    assert node.sup.alive and node.sup.restart_stamps == (0, 0)
    assert node.sup.child("a").state is ChildState.RUNNING


def test_one_for_all_retry_restarts_all_again():
    """§1.3: one_for_all retry is a full one_for_all restart again (already-restarted siblings are
    terminated again); children after the failed one stay not running until the retry."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(Strategy.ONE_FOR_ALL), auto_post=False)
    node.boot()
    node.fail_starts["b"] = 1
    m = node.mark()
    node.crash("a", now=0)
    assert node.since(m) == stops("c", "b") + [("start", "a"), ("start_failed", "b")]
    assert node.sup.child("b").state is ChildState.RESTARTING
    assert node.sup.child("c").state is ChildState.STOPPED
    m = node.mark()
    node.deliver_posts(now=0)
    assert node.since(m) == stops("a") + starts("a", "b", "c")
    assert all(c.state is ChildState.RUNNING for c in node.sup.ordered_children())


def test_rest_for_one_retry_restarts_from_failed_child():
    """§1.3: rest_for_one retry restarts from the failed child onward; earlier, successfully restarted
    children are not touched; later ones stay not running until the retry."""
    node = FakeNode([worker("z"), worker("a"), worker("b"), worker("c")], flags(Strategy.REST_FOR_ONE),
                    auto_post=False)
    node.boot()
    node.fail_starts["b"] = 1
    m = node.mark()
    node.crash("a", now=0)
    assert node.since(m) == stops("c", "b") + [("start", "a"), ("start_failed", "b")]
    assert node.sup.child("b").state is ChildState.RESTARTING
    assert node.sup.child("c").state is ChildState.STOPPED
    kept = {i: node.incarnations()[i] for i in ("z", "a")}
    m = node.mark()
    node.deliver_posts(now=0)
    assert node.since(m) == starts("b", "c")
    assert {i: node.incarnations()[i] for i in ("z", "a")} == kept
    assert all(c.state is ChildState.RUNNING for c in node.sup.ordered_children())


# =====================================================================================
# Mailbox / stale events (§1.1 synchronous starts, §1.5 blocking, §1.8)
# =====================================================================================

def test_exit_during_job_is_handled_after_job():
    """§1.1/§1.5: the supervisor is blocked while starting children; an exit arriving meanwhile
    waits and is handled (restart) once the job is done."""
    node = FakeNode([worker("a"), worker("b"), worker("c")])
    node.feed(Start(), drain=False)
    node.step()  # a started, StartChild(b) pending
    acts = node.crash("a", now=0, drain=False)
    assert acts == []  # queued, not handled mid-job
    node.drain()
    assert node.log == starts("a", "b", "c", "a")
    kinds = [type(a).__name__ for a in node.actions if isinstance(a, (SupervisorStarted, StartChild))]
    assert kinds == ["StartChild", "StartChild", "StartChild", "SupervisorStarted", "StartChild"]
    assert node.sup.alive and node.sup.child("a").state is ChildState.RUNNING


def test_stop_during_job_waits_for_job_then_stops_in_reverse():
    """§1.5: a stop request arriving while the supervisor is starting children is served after the job."""
    node = FakeNode([worker("a"), worker("b"), worker("c")])
    node.feed(Start(), drain=False)
    node.step()  # a started
    assert node.feed(Stop(SHUTDOWN), drain=False) == []
    node.drain()
    assert node.log == starts("a", "b", "c") + stops("c", "b", "a")
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_stale_exit_of_old_incarnation_ignored():
    """§1.8 / events: an exit of an earlier incarnation (OTP: a pid that is no longer the child) is ignored."""
    node = FakeNode([worker("a"), worker("b")], flags(intensity=1, period=5))
    node.boot()
    old = node.incarnations()["a"]
    node.crash("a", now=0)
    new = node.incarnations()["a"]
    assert new != old
    m = node.mark()
    acts = node.feed(ChildExited("a", old, CRASH), now=1)
    assert acts == []
    assert node.since(m) == []
    assert node.sup.alive and node.sup.restart_stamps == (0,)
    assert node.incarnations()["a"] == new


def test_exit_from_unknown_child_is_ignored():
    """§1.8: an exit signal from something that is not a child is ignored."""
    node = FakeNode([worker("a")], flags(intensity=0))
    node.boot()
    assert node.feed(ChildExited("nobody", 999, CRASH)) == []
    assert node.sup.alive


def test_child_dying_before_its_bystander_stop_is_consumed():
    """§1.5: stopping a child that already died on its own must not hang; its pending exit is consumed
    by the stop (not handled again as a second restart)."""
    node = FakeNode([worker("a"), worker("b"), worker("c")], flags(Strategy.ONE_FOR_ALL, intensity=1, period=5))
    node.boot()
    node.crash("c", now=0, drain=False)  # restart job: StopChild(b) sent, its answer pending
    node.crash("a", now=0, drain=False)  # a dies on its own while the job waits: mailboxed
    node.drain()
    assert node.log == starts("a", "b", "c") + stops("b") + starts("a", "b", "c")
    assert not any(isinstance(a, StopChild) and a.child_id == "a" for a in node.actions)
    assert node.sup.alive and node.sup.restart_stamps == (0,)
    assert all(c.state is ChildState.RUNNING for c in node.sup.ordered_children())


def test_stop_of_child_already_dead_does_not_hang():
    """§1.5: a stop sent to a child whose own exit is still on the way completes on that exit;
    an unexpected reason only yields a shutdown_error report."""
    node = FakeNode([worker("a"), worker("b")], flags(Strategy.ONE_FOR_ALL, intensity=1))
    node.boot()
    node.die_quietly("b", CRASH)          # b dies; its exit is still on the way...
    node.crash("a", now=0, drain=False)  # ...when a's crash makes the restart job send StopChild(b)
    assert node.queue == deque([ChildExited("b", 2, CRASH)])  # the stop itself got no answer
    node.drain()
    assert node.log == starts("a", "b") + stops("b") + starts("a", "b")
    assert [r.child_id for r in node.reports("shutdown_error")] == ["b"]
    assert node.sup.alive and node.sup.restart_stamps == (0,)


# =====================================================================================
# §1.5 Shutdown of children and of the supervisor
# =====================================================================================

def test_stop_request_stops_children_in_reverse_start_order():
    """§1.5: supervisor stop terminates children sequentially in reverse start order (per their shutdown
    spec), then exits with the reason it received; a restarted child keeps its position."""
    node = FakeNode([worker("a", shutdown=BRUTAL_KILL), worker("b"), worker("c", shutdown=INFINITY)])
    node.boot()
    node.crash("a", now=0)  # restarted, still first in start order
    m = node.mark()
    acts = node.feed(Stop(SHUTDOWN), drain=False)
    assert [a.child_id for a in acts if isinstance(a, StopChild)] == ["c"]  # sequential: one at a time
    node.drain()
    assert node.since(m) == stops("c", "b", "a")
    assert [a.shutdown for a in node.actions if isinstance(a, StopChild)] == [INFINITY, Shutdown.timeout(5000),
                                                                               BRUTAL_KILL]
    ex = assert_exited(node, ReasonKind.SHUTDOWN)
    assert ex.reason == SHUTDOWN and not ex.during_start


def test_supervisor_stop_exits_with_the_reason_it_received():
    """§1.5/§1.8: a stop carrying another reason (e.g. the parent died) makes the supervisor exit with it."""
    node = FakeNode([worker("a"), worker("b")])
    node.boot()
    node.feed(Stop(PARENT_DIED))
    assert node.log[-2:] == stops("b", "a")
    assert assert_exited(node, ReasonKind.ABNORMAL).reason == PARENT_DIED


def test_child_exiting_during_supervisor_stop_is_not_restarted():
    """§1.5: a child exiting by itself while the supervisor stops is not restarted."""
    node = FakeNode([worker("a"), worker("b"), worker("c")])
    node.boot()
    m = node.mark()
    node.feed(Stop(SHUTDOWN), drain=False)  # StopChild(c) sent
    node.crash("a", CRASH, drain=False)      # a dies meanwhile
    node.drain()
    assert node.since(m) == stops("c", "b")
    assert not any(isinstance(a, StartChild) and a.restart for a in node.actions)
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_events_after_exit_are_ignored():
    """§1.5: once the supervisor has exited it does nothing more."""
    node = FakeNode([worker("a")])
    node.boot()
    node.feed(Stop(SHUTDOWN))
    assert node.feed(Start()) == []
    assert node.feed(Stop(SHUTDOWN)) == []


@pytest.mark.parametrize("restart, shutdown, reason, expected", [
    (PERMANENT, Shutdown.timeout(5000), SHUTDOWN, True),
    (PERMANENT, BRUTAL_KILL, KILLED, True),
    (PERMANENT, Shutdown.timeout(5000), NORMAL, False),
    (PERMANENT, Shutdown.timeout(5000), KILLED, False),   # killed after the timeout
    (TRANSIENT, Shutdown.timeout(5000), NORMAL, True),
    (TRANSIENT, Shutdown.timeout(5000), SHUTDOWN_T, True),
    (TRANSIENT, Shutdown.timeout(5000), CRASH, False),
], ids=lambda v: str(v))
def test_unexpected_stop_reason_only_reports_shutdown_error(restart, shutdown, reason, expected):
    """§1.5: expected stop reason is shutdown (killed for brutal_kill; normal/{shutdown,_} also for
    non-permanent); any other reason only yields a shutdown_error report."""
    node = FakeNode([worker("x", restart, shutdown=shutdown)])
    node.boot()
    node.stop_reasons["x"] = reason
    node.feed(Stop(SHUTDOWN))
    assert [r.child_id for r in node.reports("child_stopped")] == (["x"] if expected else [])
    assert [r.child_id for r in node.reports("shutdown_error")] == ([] if expected else ["x"])
    assert_exited(node, ReasonKind.SHUTDOWN)


# =====================================================================================
# §1.6 Significant children / auto_shutdown
# =====================================================================================

@pytest.mark.parametrize("restart, reason", [
    (TRANSIENT, NORMAL), (TRANSIENT, SHUTDOWN), (TRANSIENT, SHUTDOWN_T),
    (TEMPORARY, NORMAL), (TEMPORARY, CRASH), (TEMPORARY, KILLED),
], ids=str)
def test_any_significant_child_exit_shuts_supervisor_down(restart, reason):
    """§1.6 any_significant: a significant child exiting by itself and not restarted makes the supervisor
    terminate the remaining children in reverse start order and exit `shutdown`."""
    node = FakeNode([worker("a"), worker("s", restart, significant=True), worker("c"), worker("d")],
                    flags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT))
    node.boot()
    m = node.mark()
    node.crash("s", reason)
    assert node.since(m) == stops("d", "c", "a")
    assert assert_exited(node, ReasonKind.SHUTDOWN).reason == SHUTDOWN
    assert len(node.reports("auto_shutdown")) == 1


@pytest.mark.parametrize("mode", [AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.ALL_SIGNIFICANT])
@pytest.mark.parametrize("reason", ABNORMAL_REASONS, ids=str)
def test_significant_transient_abnormal_exit_restarts_without_shutdown(reason, mode):
    """§1.6: a transient significant child's abnormal exit is a normal restart, no auto shutdown."""
    node = FakeNode([worker("a"), worker("s", TRANSIENT, significant=True)], flags(auto_shutdown=mode))
    node.boot()
    m = node.mark()
    node.crash("s", reason)
    assert node.since(m) == starts("s")
    assert node.sup.alive and node.exits() == []


def test_all_significant_waits_for_last_significant_child():
    """§1.6 all_significant: shut down only when no significant child is still active."""
    node = FakeNode([worker("s1", TRANSIENT, significant=True), worker("a"),
                     worker("s2", TEMPORARY, significant=True), worker("c")],
                    flags(auto_shutdown=AutoShutdown.ALL_SIGNIFICANT))
    node.boot()
    m = node.mark()
    node.crash("s1", NORMAL)
    assert node.since(m) == [] and node.sup.alive
    node.crash("s2", CRASH)
    assert node.since(m) == stops("c", "a")
    assert assert_exited(node, ReasonKind.SHUTDOWN).reason == SHUTDOWN


def test_all_significant_counts_restarting_child_as_active():
    """§1.6 all_significant: a significant child that is `restarting` is still active."""
    node = FakeNode([worker("s1", TRANSIENT, significant=True), worker("s2", TRANSIENT, significant=True)],
                    flags(auto_shutdown=AutoShutdown.ALL_SIGNIFICANT), auto_post=False)
    node.boot()
    node.fail_starts["s1"] = 1
    node.crash("s1", CRASH, now=0)
    assert node.sup.child("s1").state is ChildState.RESTARTING
    node.crash("s2", NORMAL, now=0)
    assert node.sup.alive and node.exits() == []
    node.deliver_posts(now=0)
    assert node.sup.child("s1").state is ChildState.RUNNING
    m = node.mark()
    node.crash("s1", NORMAL, now=0)
    assert node.since(m) == []
    assert_exited(node, ReasonKind.SHUTDOWN)


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_significant_bystander_termination_never_triggers_auto_shutdown(strategy):
    """§1.6: termination as a one_for_all/rest_for_one bystander never triggers auto_shutdown
    (even when the bystander is a temporary significant child that gets dropped)."""
    node = FakeNode([worker("a"), worker("s", TRANSIENT, significant=True), worker("t", TEMPORARY, significant=True)],
                    flags(strategy, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT))
    node.boot()
    node.stop_reasons["s"] = NORMAL
    m = node.mark()
    node.crash("a")
    assert node.since(m) == stops("t", "s") + starts("a", "s")
    assert node.sup.alive and node.exits() == []
    assert node.sup.child("t") is None


def test_supervisor_stop_never_triggers_auto_shutdown():
    """§1.6: the supervisor's own stop is not an auto_shutdown; it exits with the reason it received."""
    node = FakeNode([worker("a"), worker("s", TRANSIENT, significant=True)],
                    flags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT))
    node.boot()
    node.feed(Stop(PARENT_DIED))
    assert node.reports("auto_shutdown") == []
    assert assert_exited(node, ReasonKind.ABNORMAL).reason == PARENT_DIED


def test_significant_child_supervisor_shutdown_escalates():
    """§1.6: a significant transient child supervisor that exits `shutdown` shuts its auto_shutdown parent down too."""
    sub = ChildSpec(id="sub", type=ChildType.SUPERVISOR, restart=TRANSIENT, shutdown=INFINITY, significant=True)
    node = FakeNode([worker("a"), sub], flags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT))
    node.boot()
    m = node.mark()
    node.crash("sub", SHUTDOWN)
    assert node.since(m) == stops("a")
    assert_exited(node, ReasonKind.SHUTDOWN)


def test_non_significant_child_not_restarted_does_not_shut_down():
    """§1.6: only significant children trigger auto_shutdown; a non-significant transient just isn't restarted."""
    node = FakeNode([worker("a", TRANSIENT), worker("b")], flags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT))
    node.boot()
    m = node.mark()
    node.crash("a", NORMAL)
    assert node.since(m) == []
    assert node.sup.alive


# ---- §1.7 terminate_child of simple_one_for_one instances ------------------------------------

def test_terminating_a_simple_one_for_one_instance_that_is_already_gone_is_ok():
    """OTP: terminate_child of a dead instance answers ok (idempotent); an id that never named one of
    this supervisor's instances answers not_found."""
    from theater_otp.supervision.events import Reply, StartChildRequest, TerminateChildRequest

    node = FakeNode([worker("w", TEMPORARY)], flags(Strategy.SIMPLE_ONE_FOR_ONE))
    node.boot()
    node.feed(StartChildRequest(1, worker("w", TEMPORARY)))
    assert node.ids() == ["w-1"]

    def answer(req: int, child_id: str) -> Reply:
        acts = node.feed(TerminateChildRequest(req, child_id))
        return next(a for a in acts if isinstance(a, Reply) and a.req == req)

    assert answer(2, "w-1").ok and node.ids() == []
    assert answer(3, "w-1").ok                                         # already gone: still ok
    assert answer(4, "w-2") == Reply("sup", 4, False, "not_found")     # never started
    assert answer(5, "x-1") == Reply("sup", 5, False, "not_found")     # not this supervisor's
