"""The periodic loop both operator loops run on: fixed-rate ticks, standby skips, failures survived.
A fake clock and sleep make it exact (no wall-clock timing in the test)."""

from __future__ import annotations

import asyncio

import pytest

from kubetune.loops import run_every

pytestmark = pytest.mark.unit


class FakeTime:
    def __init__(self, stop_after: int):
        self.now, self.sleeps, self.stop_after = 0.0, [], stop_after

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        if len(self.sleeps) >= self.stop_after:
            raise asyncio.CancelledError


async def run(time: FakeTime, **kwargs) -> None:
    with pytest.raises(asyncio.CancelledError):
        await run_every(name="test", clock=time.clock, sleep=time.sleep, **kwargs)


async def test_a_slow_cycle_does_not_stretch_the_period():
    time = FakeTime(stop_after=3)
    durations = iter([0.6, 1.5, 0.2])

    async def cycle():
        time.now += next(durations)

    await run(time, tick=1.0, cycle=cycle)
    assert time.sleeps == [0.4, 0.0, 0.8]  # the next start is one tick after the last one began


async def test_standby_skips_and_a_failing_cycle_does_not_stop_the_loop():
    time = FakeTime(stop_after=6)
    calls, failures = [], []

    async def cycle():
        calls.append(time.now)
        raise RuntimeError("boom")

    await run(time, tick=1.0, cycle=cycle, active=lambda: time.now >= 2.0, on_failure=lambda: failures.append(1))
    assert calls == [2.0, 3.0, 4.0, 5.0] and len(failures) == 4


async def test_work_falling_due_before_the_tick_starts_a_cycle_then_but_never_within_the_gap():
    time = FakeTime(stop_after=3)
    due_at = iter([3.5, 0.2, 100.0])  # what each cycle leaves due next: soon, overdue, nothing before the tick

    async def cycle():
        time.now += 0.5

    await run(time, tick=5.0, cycle=cycle, next_start=lambda: next(due_at), min_gap=1.0)
    # 0 → 3.5 (due); 3.5 → 4.5 (overdue, but a cycle just started); 4.5 → 9.5 (the tick)
    assert time.sleeps == [3.0, 0.5, 4.5]


async def test_a_cycle_that_found_nothing_does_not_hold_the_next_one_back():
    time = FakeTime(stop_after=2)
    found = iter([False, True])

    async def cycle():
        return next(found)

    await run(time, tick=5.0, cycle=cycle, next_start=lambda: 0.3, min_gap=1.0)
    # work due at 0.3 starts then (the cycle at 0 did nothing); the next no sooner than 1 s after it
    assert time.sleeps == [0.3, 1.0]
