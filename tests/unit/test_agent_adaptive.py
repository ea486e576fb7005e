"""Adaptive node rules with hysteresis, and thresholds with a sustained period (pure)."""

from __future__ import annotations

import pytest

from kubetune_agent.adaptive import (
    GovernorRule,
    GovernorState,
    SwappinessRule,
    ThermalRule,
    ThermalState,
    Threshold,
    ThresholdReason,
    ThresholdState,
    evaluate_thresholds,
    governor_for_load,
    max_freq_for_thermal,
    swappiness_for_memory,
)

pytestmark = pytest.mark.unit

RULE = GovernorRule(high_load="performance", low_load="powersave", default="schedutil",
                    high_above=75, low_below=25, sustained_seconds=60)


def run_governor(timeline):
    state, seen = GovernorState(), []
    for now, cpu in timeline:
        governor, state = governor_for_load(cpu, state, RULE, now)
        seen.append(governor)
    return seen


def test_governor_changes_only_after_the_level_held_for_the_sustained_period():
    timeline = [(0, 90), (30, 90), (59, 95), (60, 90), (90, 50), (149, 50), (150, 50), (200, 10), (260, 10)]
    assert run_governor(timeline) == ["schedutil"] * 3 + ["performance"] * 3 + ["schedutil"] * 2 + [
        "powersave"]


def test_governor_does_not_flap_on_a_spiky_load():
    timeline = [(t, 90 if t % 20 == 0 else 50) for t in range(0, 600, 10)]
    assert set(run_governor(timeline)) == {"schedutil"}


def test_governor_thresholds_are_strict():
    timeline = [(0, 75), (100, 75), (200, 25), (300, 25)]
    assert run_governor(timeline) == ["schedutil"] * 4


def test_thermal_steps_down_while_throttled_and_back_after_cooling():
    rule = ThermalRule(step=10, floor=70, normal=100, cool_intervals=2)
    state, percents = ThermalState(), []
    for events in [1, 3, 2, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]:
        state = max_freq_for_thermal(events, state, rule)
        percents.append(state.max_freq_percent)
    assert percents == [90, 80, 70, 70, 70, 80, 80, 90, 80, 80, 90, 90, 100, 100, 100, 100, 100]


SWAP = SwappinessRule(minimum=10, maximum=60, neutral=30, memory_low=70, memory_high=90, swap_high=50)


@pytest.mark.parametrize(
    ("memory", "swap", "current", "expected"),
    [
        (50, 0, 60, 30),  # relaxed: neutral
        (80, 0, 60, 60),  # band: keep
        (80, 0, 30, 30),  # band: keep
        (95, 10, 30, 60),  # pressure, little swap: page cold anon out
        (95, 70, 60, 10),  # already swapping hard: stop
        (50, 70, 30, 10),
        (80, 0, 200, 60),  # clamped into the policy range
    ],
    ids=lambda v: str(v),
)
def test_swappiness_by_memory_pressure(memory, swap, current, expected):
    assert swappiness_for_memory(memory, swap, current, SWAP) == expected


def test_threshold_needs_the_sustained_period():
    thresholds = [Threshold("cpu_utilization_percent", above=90, for_seconds=300)]
    state = ThresholdState()
    timeline = [(0, 95), (100, 96), (299, 97), (300, 99), (400, 50), (500, 95)]
    reasons = []
    for now, value in timeline:
        (status,), state = evaluate_thresholds({"cpu_utilization_percent": value}, thresholds, state, now)
        reasons.append((status.reason, status.breached))
    assert reasons == [
        (ThresholdReason.BREACH_PENDING, False),
        (ThresholdReason.BREACH_PENDING, False),
        (ThresholdReason.BREACH_PENDING, False),
        (ThresholdReason.THRESHOLD_EXCEEDED, True),
        (ThresholdReason.WITHIN_THRESHOLDS, False),
        (ThresholdReason.BREACH_PENDING, False),  # the clock restarted at 500
    ]


def test_threshold_without_data_and_with_no_period():
    thresholds = [Threshold("tcp_connect_ms", above=50), Threshold("disk_latency_ms", above=20)]
    statuses, _ = evaluate_thresholds({"tcp_connect_ms": None, "disk_latency_ms": 25}, thresholds,
                                      ThresholdState(), now=0)
    assert [(s.reason, s.breached) for s in statuses] == [
        (ThresholdReason.NO_DATA, False), (ThresholdReason.THRESHOLD_EXCEEDED, True)]
    assert statuses[1].message == "disk_latency_ms 25 > 20 for 0s (sustained period 0s)"
