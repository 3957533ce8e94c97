"""classify_exit: the one mapping from OS outcomes to OTP exit reasons (docs/supervision.md)."""

import signal

import pytest

from theater_otp.supervision.intensity import add_restart
from theater_otp.supervision.reasons import ReasonKind, classify_exit

pytestmark = pytest.mark.unit


def test_exit_code_zero_is_normal():
    assert classify_exit(0).kind is ReasonKind.NORMAL


def test_exit_code_three_is_shutdown():
    assert classify_exit(3).kind is ReasonKind.SHUTDOWN


def test_death_by_sigterm_is_shutdown():
    assert classify_exit(-signal.SIGTERM).kind is ReasonKind.SHUTDOWN


def test_death_by_sigkill_is_killed_and_not_normal():
    reason = classify_exit(-signal.SIGKILL)
    assert reason.kind is ReasonKind.KILLED and not reason.is_normal


def test_crash_report_text_becomes_the_reason_detail():
    reason = classify_exit(1, {"reason": "trap in x.y: unreachable"})
    assert reason.kind is ReasonKind.ABNORMAL and str(reason) == "abnormal: trap in x.y: unreachable"


def test_other_exit_codes_and_signals_are_abnormal_and_named():
    assert str(classify_exit(7)) == "abnormal: exit code 7"
    assert str(classify_exit(-signal.SIGSEGV)) == "abnormal: killed by SIGSEGV"


def test_intensity_tolerates_max_restarts_within_period_and_gives_up_on_the_next():
    stamps = ()
    for now in (100, 101, 102):
        stamps, ok = add_restart(stamps, now, intensity=3, period=5)
        assert ok
    stamps, ok = add_restart(stamps, 103, intensity=3, period=5)
    assert not ok


def test_intensity_forgets_restarts_older_than_period():
    stamps, _ = add_restart((), 100, intensity=1, period=5)
    stamps, ok = add_restart(stamps, 107, intensity=1, period=5)  # 7 s later: > period + 1
    assert ok and stamps == (107,)
