"""Adaptive node rules with hysteresis, and thresholds with a sustained period (pure)."""

from __future__ import annotations

import pytest

from kubetune_agent.adaptive import (
    GovernorRule,
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

RULE = GovernorRule(busy_governor="performance", idle_governor="powersave", up=0.7, down=0.3)


@pytest.mark.parametrize(
    ("load", "current", "expected"),
    [
        (0.9, "powersave", "performance"),
        (0.7, "powersave", "performance"),
        (0.5, "powersave", "powersave"),  # inside the band: keep
        (0.5, "performance", "performance"),  # inside the band: keep
        (0.3, "performance", "powersave"),
        (0.1, "performance", "powersave"),
        (0.5, "schedutil", "powersave"),  # not one of ours: start from the idle governor
    ],
    ids=lambda v: str(v),
)
def test_governor_hysteresis(load, current, expected):
    assert governor_for_load(load, current, RULE) == expected


def test_governor_does_not_flap_around_one_threshold():
    loads = [0.69, 0.71, 0.69, 0.71, 0.5, 0.31, 0.29, 0.31, 0.29]
    governor, seen = "powersave", []
    for load in loads:
        governor = governor_for_load(load, governor, RULE)
        seen.append(governor)
    assert seen == ["powersave"] + ["performance"] * 5 + ["powersave"] * 3


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
