"""Adaptive node rules with hysteresis, and thresholds with a sustained period (pure)."""

from __future__ import annotations

import pytest

from kubetune_agent.adaptive import (
    CachePressureRule,
    DirtyRatios,
    DirtyRule,
    GovernorRule,
    GovernorState,
    SwappinessRule,
    ThermalRule,
    ThermalState,
    Threshold,
    ThresholdLevel,
    ThresholdReason,
    ThresholdState,
    cache_pressure_for_memory,
    dirty_ratios_for_memory,
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
    assert statuses[1].message == "disk_latency_ms 25 > critical level 20 for 0s (sustained period 0s)"


CACHE = CachePressureRule(minimum=50, maximum=150, memory_low=70, memory_high=90)


@pytest.mark.parametrize(
    ("memory", "current", "expected"),
    [
        (50, 100, 50),  # relaxed: keep dentries and inodes cached
        (70, 100, 50),  # the low edge counts as relaxed
        (80, 100, 100),  # band: keep
        (80, 150, 150),  # band: keep (hysteresis on the way down)
        (89.9, 50, 50),  # band: keep (hysteresis on the way up)
        (90, 50, 150),  # pressure: reclaim metadata caches sooner
        (99, 100, 150),
        (80, 400, 150),  # clamped into the policy range
        (80, 10, 50),
    ],
    ids=lambda v: str(v),
)
def test_cache_pressure_by_memory_pressure(memory, current, expected):
    assert cache_pressure_for_memory(memory, current, CACHE) == expected


def test_cache_pressure_starts_at_the_middle_of_the_range():
    assert CACHE.neutral == 100 and CachePressureRule(minimum=1, maximum=4).neutral == 2


DIRTY = DirtyRule(ratio=(10, 40), background=(5, 9), memory_low=70, memory_high=90, latency_high_ms=50)


@pytest.mark.parametrize(
    ("memory", "latency", "current", "expected"),
    [
        (50, 1, DirtyRatios(10, 5), DirtyRatios(25, 7)),  # relaxed, fast disk: the middle
        (50, None, DirtyRatios(10, 5), DirtyRatios(25, 7)),  # no disks: latency counts as fine
        (80, 1, DirtyRatios(10, 5), DirtyRatios(10, 5)),  # memory band: keep
        (80, 1, DirtyRatios(25, 7), DirtyRatios(25, 7)),
        (80, 1, DirtyRatios(), DirtyRatios(25, 7)),  # band at start: the middle
        (95, 1, DirtyRatios(25, 7), DirtyRatios(10, 5)),  # memory pressure: write back sooner
        (50, 50, DirtyRatios(25, 7), DirtyRatios(10, 5)),  # write-back stalls: smaller bursts
        (50, 30, DirtyRatios(10, 5), DirtyRatios(10, 5)),  # latency band (25..50 ms): keep
        (50, 24, DirtyRatios(10, 5), DirtyRatios(25, 7)),  # latency calm again: back to the middle
        (80, 1, DirtyRatios(90, 1), DirtyRatios(40, 5)),  # clamped into the policy ranges
    ],
    ids=lambda v: str(v),
)
def test_dirty_ratios_by_memory_pressure_and_write_back_latency(memory, latency, current, expected):
    assert dirty_ratios_for_memory(memory, latency, current, DIRTY) == expected


@pytest.mark.parametrize(
    ("rule", "fixed", "memory", "expected"),
    [
        # Only background is adaptive: it stays below the dirty_ratio in force.
        (DirtyRule(ratio=None, background=(5, 20)), DirtyRatios(ratio=10), 50, DirtyRatios(None, 9)),
        (DirtyRule(ratio=None, background=(5, 20)), DirtyRatios(ratio=30), 50, DirtyRatios(None, 12)),
        (DirtyRule(ratio=None, background=(5, 20)), DirtyRatios(ratio=10), 95, DirtyRatios(None, 5)),
        # ... unless the policy's range leaves no room: the range wins.
        (DirtyRule(ratio=None, background=(5, 20)), DirtyRatios(ratio=3), 50, DirtyRatios(None, 5)),
        # Only dirty_ratio is adaptive: it stays above the background ratio in force.
        (DirtyRule(ratio=(5, 40), background=None), DirtyRatios(background=10), 95, DirtyRatios(11, None)),
        (DirtyRule(ratio=(5, 40), background=None), DirtyRatios(background=10), 50, DirtyRatios(22, None)),
        (DirtyRule(ratio=(5, 40), background=None), DirtyRatios(), 95, DirtyRatios(5, None)),  # unknown
    ],
    ids=lambda v: str(v),
)
def test_a_single_adaptive_dirty_ratio_keeps_background_below_dirty(rule, fixed, memory, expected):
    assert dirty_ratios_for_memory(memory, 0, DirtyRatios(), rule, fixed) == expected


def test_every_dirty_target_keeps_background_below_dirty():
    for memory in range(0, 101, 5):
        for latency in (None, 0, 30, 60):
            for current in (DirtyRatios(), DirtyRatios(10, 5), DirtyRatios(40, 9), DirtyRatios(1, 100)):
                got = dirty_ratios_for_memory(memory, latency, current, DIRTY)
                assert 10 <= got.ratio <= 40 and 5 <= got.background <= 9 and got.background < got.ratio


CPU_WARNING = Threshold("cpu_utilization_percent", above=70, for_seconds=300, level=ThresholdLevel.WARNING)
CPU_CRITICAL = Threshold("cpu_utilization_percent", above=85, for_seconds=300, level=ThresholdLevel.CRITICAL)


@pytest.mark.parametrize(
    ("timeline", "expected"),
    [
        # (now, cpu %) -> per cycle: (warning breached, warning changed, critical breached, critical changed)
        pytest.param([(0, 75), (299, 75), (300, 75), (310, 75), (600, 75)],
                     [(False, False, False, False), (False, False, False, False), (True, True, False, False),
                      (True, False, False, False), (True, False, False, False)],
                     id="warning-after-its-sustained-period-one-transition"),
        pytest.param([(0, 75), (200, 60), (250, 75), (549, 75), (550, 75)],
                     [(False, False, False, False), (False, False, False, False), (False, False, False, False),
                      (False, False, False, False), (True, True, False, False)],
                     id="a-dip-below-restarts-the-period"),
        pytest.param([(0, 90), (300, 90), (400, 80), (500, 60), (510, 60)],
                     [(False, False, False, False), (True, True, True, True), (True, False, False, True),
                      (False, True, False, False), (False, False, False, False)],
                     id="critical-implies-warning-and-both-clear-once"),
        pytest.param([(0, 80), (300, 90), (599, 90), (600, 90)],
                     [(False, False, False, False), (True, True, False, False), (True, False, False, False),
                      (True, False, True, True)],
                     id="levels-have-their-own-clocks"),
        pytest.param([(0, 70), (1000, 70)], [(False, False, False, False)] * 2, id="levels-are-strict"),
    ],
)
def test_warning_and_critical_levels_with_their_sustained_period(timeline, expected):
    state, seen = ThresholdState(), []
    for now, cpu in timeline:
        (warning, critical), state = evaluate_thresholds({"cpu_utilization_percent": cpu},
                                                         [CPU_WARNING, CPU_CRITICAL], state, now)
        assert (warning.level, critical.level) == (ThresholdLevel.WARNING, ThresholdLevel.CRITICAL)
        seen.append((warning.breached, warning.changed, critical.breached, critical.changed))
    assert seen == expected


def test_warning_message_names_metric_value_level_and_sustained_period():
    state = ThresholdState()
    _, state = evaluate_thresholds({"cpu_utilization_percent": 78}, [CPU_WARNING], state, now=0)
    (status,), _ = evaluate_thresholds({"cpu_utilization_percent": 78.5}, [CPU_WARNING], state, now=312)
    assert status.message == "cpu_utilization_percent 78.5 > warning level 70 for 312s (sustained period 300s)"


def test_losing_the_value_clears_a_breach_once():
    latency = Threshold("tcp_connect_ms", above=50, level=ThresholdLevel.WARNING)
    state, seen = ThresholdState(), []
    for value in (80, 80, None, None):
        (status,), state = evaluate_thresholds({"tcp_connect_ms": value}, [latency], state, now=0)
        seen.append((status.breached, status.changed, status.reason))
    assert seen == [(True, True, ThresholdReason.THRESHOLD_EXCEEDED), (True, False, ThresholdReason.THRESHOLD_EXCEEDED),
                    (False, True, ThresholdReason.NO_DATA), (False, False, ThresholdReason.NO_DATA)]
