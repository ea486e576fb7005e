"""When the evaluation loop evaluates a policy: often enough that a condition which began holding just
after one evaluation read Prometheus is acted on within the policy's interval, and no more often than
that bound needs. `start_by`/`due_policies` are pure; the last test drives them with the real loop
(`run_every`) on a fake clock, with cycles of a given duration."""

from __future__ import annotations

import asyncio

import pytest

from kubetune.evaluation import MIN_CYCLE_GAP, due_policies, start_by
from kubetune.loops import run_every
from tests.unit.loopfakes import policy, spec

pytestmark = pytest.mark.unit

TICK = 5.0


@pytest.mark.parametrize("case, last, lead, clock, due", [
    ("never evaluated", None, 0.0, 0.0, True),
    ("quick cycles: due when the interval is up", 0.0, 0.0, 10.0, True),
    ("quick cycles: not before", 0.0, 0.0, 9.9, False),
    ("2 s cycles: a cycle early", 0.0, 2.0, 8.0, True),
    ("2 s cycles: not before", 0.0, 2.0, 7.9, False),
    ("cycles longer than the interval: never more than half an interval early", 0.0, 30.0, 4.9, False),
    ("cycles longer than the interval: half an interval early", 0.0, 30.0, 5.0, True),
])
def test_a_policy_is_due_early_by_what_a_cycle_takes(case, last, lead, clock, due):
    p = policy(spec(interval="10s"))
    last_run = {} if last is None else {p.key: last}
    assert bool(due_policies([p], last_run, clock, lead, TICK)) is due, case


def test_a_cycle_that_must_start_takes_the_policies_due_before_the_next_could():
    """2 s cycles: `a` must start now; `b` could wait 1.5 s, but the next cycle cannot start before this
    one ends (2 s), so it joins; `c`, due in 2.5 s, waits. Without `a`, nothing starts (a tick alone)."""
    a, b, c = (policy(spec(interval="10s"), name=n) for n in "abc")
    last_run = {a.key: 0.0, b.key: 1.5, c.key: 2.5}
    assert [p.name for p in due_policies([a, b, c], last_run, 8.0, 2.0, TICK)] == ["a", "b"]
    assert due_policies([b, c], last_run, 8.0, 2.0, TICK) == []


@pytest.mark.parametrize("case, body", [("switched off", spec(mode="Off")), ("invalid", None)])
def test_a_policy_that_is_only_reported_is_reported_once_a_tick(case, body):
    p = policy(body, spec_error="spec.interval: bad" if body is None else None)
    assert start_by(p, {p.key: 0.0}, lead=3.0, tick=TICK) == TICK
    assert not due_policies([p], {p.key: 0.0}, TICK - 0.1, 3.0, TICK) and due_policies([p], {p.key: 0.0}, TICK, 3.0, TICK)


@pytest.mark.parametrize("cycle_seconds", [0.2, 3.0, 4.5])
async def test_every_action_lands_within_an_interval_of_the_previous_read(cycle_seconds):
    """One 10 s policy evaluated by the loop at its default tick, cycles taking `cycle_seconds` (a cycle
    reads Prometheus as it starts and acts by its end). A condition that began just after read i is
    acted on at the end of the cycle of read i+1: that moment must be within 10 s of read i."""
    p = policy(spec(interval="10s"))
    now, reads, last_run, recent = [0.0], [], {}, []

    async def cycle():
        lead = max(recent, default=0.0)
        if not due_policies([p], last_run, now[0], lead, TICK):
            return False
        last_run[p.key] = now[0]
        reads.append(now[0])
        now[0] += cycle_seconds
        recent.append(cycle_seconds)
        return True

    async def sleep(seconds):
        now[0] += seconds
        if len(reads) >= 8:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_every(TICK, cycle, name="test", clock=lambda: now[0], sleep=sleep, min_gap=MIN_CYCLE_GAP,
                        next_start=lambda: start_by(p, last_run, max(recent, default=0.0), TICK))
    acted = [r + cycle_seconds for r in reads]
    assert all(acted[i + 1] - reads[i] <= 10.0 + 1e-9 for i in range(len(reads) - 1)), (reads, acted)
    # ... and not far more often than that needs: at most half an interval early
    assert all(b - a >= 5.0 for a, b in zip(reads, reads[1:])), reads
