"""The soak's checks (tests/cluster/soakrun.py) catch what they are meant to: a soak that passes must be
able to fail. Tables of change sequences, each a flap or limit breach a user would call a defect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.cluster.soakrun import TemplateChange, most_in_an_hour, oscillations, out_of_bounds, reversals, \
    rss_slope_mib_per_hour, within_cooldown

T0 = datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)
COOLDOWN = timedelta(seconds=15)


def changes(*steps: tuple[float, float, float]) -> list[TemplateChange]:
    """(seconds after T0, from, to) per change."""
    return [TemplateChange(T0 + timedelta(seconds=s), old, new) for s, old, new in steps]


@pytest.mark.parametrize("seq, oscillating, too_close", [
    pytest.param(changes((0, .5, .55), (5, .55, .5)), 1, 1, id="set-back-inside-the-cooldown"),
    pytest.param(changes((0, .5, .55), (20, .55, .5)), 0, 0, id="set-back-after-the-cooldown"),
    pytest.param(changes((0, .5, .55), (5, .55, .6)), 0, 1, id="two-steps-up-inside-the-cooldown"),
    pytest.param(changes((0, .5, .55), (20, .55, .6), (40, .6, .66)), 0, 0, id="steady-steps"),
])
def test_flapping_inside_a_cooldown_is_found(seq, oscillating, too_close):
    assert len(oscillations(seq, COOLDOWN)) == oscillating
    assert len(within_cooldown(seq, COOLDOWN)) == too_close


def test_reversals_count_every_value_set_back():
    assert reversals(changes((0, .5, .55), (60, .55, .5), (120, .5, .55), (180, .55, .6))) == 2


@pytest.mark.parametrize("minutes, most", [
    pytest.param((0, 10, 59), 3, id="three-in-one-hour"),
    pytest.param((0, 60, 120), 1, id="one-an-hour"),
    pytest.param((0, 30, 61, 89), 3, id="the-sliding-hour-not-the-clock-hour"),
])
def test_most_changes_in_any_hour(minutes, most):
    assert most_in_an_hour([T0 + timedelta(minutes=m) for m in minutes]) == most


@pytest.mark.parametrize("change, problem", [
    pytest.param((0, .5, .55), None, id="one-step"),
    pytest.param((0, .5, .551), None, id="rounded-up-by-a-millicore"),
    pytest.param((0, .5, .6), "more than 10 %", id="a-double-step"),
    pytest.param((0, .11, .099), "outside 0.1..2", id="below-minAllowed"),
    pytest.param((0, 1.9, 2.09), "outside 0.1..2", id="above-maxAllowed"),
])
def test_changes_outside_bounds_or_step_are_found(change, problem):
    found = out_of_bounds(changes(change), step_percent=10)
    assert (problem in " ".join(found)) if problem else not found


def test_rss_slope_is_mib_per_hour_by_least_squares():
    flat = [(s, 100 * 1024 + (512 if s % 20 else 0)) for s in range(0, 600, 5)]
    assert abs(rss_slope_mib_per_hour(flat)) < 1
    assert rss_slope_mib_per_hour([(0, 1024), (1800, 1536), (3600, 2048)]) == pytest.approx(1.0)
