"""The epoch ticker: asleep when the actor is idle, ticking while calls run, and a call that runs
on still meets its epoch deadline (what the CPU budget stands on)."""

import time

import pytest
import wasmtime

from theater_otp.worker import cpu
from theater_otp.worker.component import new_engine

pytestmark = pytest.mark.unit

SPIN = '(module (func (export "spin") (loop $l (br $l))))'


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_the_ticker_runs_for_a_burst_of_calls_then_sleeps():
    ticker = cpu.EpochTicker(new_engine(parallel_compilation=False))
    assert not ticker.running
    for _ in range(200):
        ticker.begin()
        assert ticker.running
        ticker.end()
    assert _wait_for(lambda: not ticker.running), "the ticker kept running with no call"
    ticker.begin()  # a call after the linger wakes it again
    assert ticker.running
    ticker.end()


def test_an_endless_wasm_loop_meets_its_epoch_deadline_even_as_the_ticker_winds_down():
    engine = new_engine(parallel_compilation=False)
    ticker = cpu.EpochTicker(engine)
    store = wasmtime.Store(engine)
    spin = wasmtime.Instance(store, wasmtime.Module(engine, SPIN), []).exports(store)["spin"]
    for wait_idle in (True, False, True):  # after a full linger, and right after the previous call
        if wait_idle:
            assert _wait_for(lambda: not ticker.running)
        store.set_epoch_deadline(2)
        ticker.begin()
        try:
            with pytest.raises(wasmtime.Trap):
                spin(store)
        finally:
            ticker.end()
