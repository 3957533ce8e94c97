"""Restart backoff (beyond OTP, off by default): capped exponential delay per child, reset after a good run."""

import pytest

from theater_otp.config.model import Backoff, ChildSpec, ChildType, SupFlags
from theater_otp.supervision import events as ev
from theater_otp.supervision.reasons import KILLED
from theater_otp.supervision.supervisor import ChildState, Supervisor

pytestmark = pytest.mark.unit


def boot(backoff):
    spec = ChildSpec(id="root", type=ChildType.SUPERVISOR,
                     flags=SupFlags(intensity=100, period=5, backoff=backoff),
                     children=(ChildSpec(id="w", type=ChildType.WORKER),))
    sup = Supervisor("root", spec)
    sup.handle(ev.Start(), 0)
    sup.handle(ev.ChildStarted("w", 1), 0)
    return sup


def crash_and_get_delay(sup, incarnation, now):
    actions = sup.handle(ev.ChildExited("w", incarnation, KILLED), now)
    posts = [a for a in actions if isinstance(a, ev.Post)]
    assert not [a for a in actions if isinstance(a, ev.StartChild)], "no start before the delay"
    assert sup.child("w").state is ChildState.RESTARTING
    assert len(posts) == 1 and isinstance(posts[0].event, ev.BackoffElapsed)
    started = sup.handle(posts[0].event, now + posts[0].delay)
    assert [a.child_id for a in started if isinstance(a, ev.StartChild)] == ["w"]
    sup.handle(ev.ChildStarted("w", incarnation + 1), now + posts[0].delay)
    return posts[0].delay


def test_no_backoff_restarts_at_once_as_otp_does():
    sup = boot(None)
    actions = sup.handle(ev.ChildExited("w", 1, KILLED), 1)
    assert [a.child_id for a in actions if isinstance(a, ev.StartChild)] == ["w"]


def test_backoff_doubles_per_consecutive_restart_up_to_the_cap():
    sup = boot(Backoff(initial_ms=100, max_ms=500, reset_after_s=60))
    delays = [crash_and_get_delay(sup, inc, now=10 + inc) for inc in range(1, 6)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_backoff_resets_after_the_child_ran_long_enough():
    sup = boot(Backoff(initial_ms=100, max_ms=10_000, reset_after_s=30))
    assert crash_and_get_delay(sup, 1, now=1) == 0.1
    assert crash_and_get_delay(sup, 2, now=2) == 0.2
    assert crash_and_get_delay(sup, 3, now=100) == 0.1   # ran ~98 s since its last start


def test_terminate_child_during_backoff_cancels_the_restart():
    sup = boot(Backoff(initial_ms=1000, max_ms=1000, reset_after_s=60))
    actions = sup.handle(ev.ChildExited("w", 1, KILLED), 1)
    post = [a for a in actions if isinstance(a, ev.Post)][0]
    reply = sup.handle(ev.TerminateChildRequest(7, "w"), 1.5)
    assert [(r.req, r.ok) for r in reply if isinstance(r, ev.Reply)] == [(7, True)]
    assert not [a for a in sup.handle(post.event, 2) if isinstance(a, ev.StartChild)]
    assert sup.child("w").state is ChildState.STOPPED
