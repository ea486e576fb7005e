"""Node-level adaptive rules and threshold conditions, evaluated locally by the agent (pure).

Every function takes plain data (the current value, a rule, a small state, ``now``) and returns
the new target and state; no I/O, no clock. The agent feeds them from its own samples, so node
reactions do not wait for Prometheus. Hysteresis: each rule has separate up and down bands (and
a cool-down count for frequency), so a value hovering at a threshold does not flap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


# ---- governor by load ---------------------------------------------------------------------


class LoadLevel(StrEnum):
    HIGH = "High"
    DEFAULT = "Default"
    LOW = "Low"


@dataclass(frozen=True)
class GovernorRule:
    """CPU utilisation above ``high_above`` % is High, below ``low_below`` % is Low, else Default;
    a level must hold for ``sustained_seconds`` before its governor is used. The gap between the
    two thresholds and the sustained period are the hysteresis."""

    high_load: str = "performance"
    low_load: str = "powersave"
    default: str = "schedutil"
    high_above: float = 75.0
    low_below: float = 25.0
    sustained_seconds: float = 60.0


@dataclass(frozen=True)
class GovernorState:
    level: LoadLevel = LoadLevel.DEFAULT  # the level whose governor is in force
    candidate: LoadLevel = LoadLevel.DEFAULT  # the level the latest samples show
    candidate_since: float = 0.0


def governor_for_load(cpu_percent: float, state: GovernorState, rule: GovernorRule,
                      now: float) -> tuple[str, GovernorState]:
    """The governor to use and the next state."""
    if cpu_percent > rule.high_above:
        seen = LoadLevel.HIGH
    elif cpu_percent < rule.low_below:
        seen = LoadLevel.LOW
    else:
        seen = LoadLevel.DEFAULT
    since = state.candidate_since if seen == state.candidate else now
    level = seen if now - since >= rule.sustained_seconds else state.level
    governor = {LoadLevel.HIGH: rule.high_load, LoadLevel.LOW: rule.low_load,
                LoadLevel.DEFAULT: rule.default}[level]
    return governor, GovernorState(level, seen, since)


# ---- max frequency under thermal throttling ------------------------------------------------


@dataclass(frozen=True)
class ThermalRule:
    """Lower the max frequency by ``step`` % per throttled interval down to ``floor``; after
    ``cool_intervals`` intervals without new throttle events raise it by ``step`` up to ``normal``."""

    step: int = 10
    floor: int = 50
    normal: int = 100
    cool_intervals: int = 6


@dataclass(frozen=True)
class ThermalState:
    max_freq_percent: int = 100
    cool_intervals: int = 0


def max_freq_for_thermal(new_throttle_events: int, state: ThermalState, rule: ThermalRule) -> ThermalState:
    if new_throttle_events > 0:
        return ThermalState(max(rule.floor, state.max_freq_percent - rule.step), 0)
    cool = state.cool_intervals + 1
    if state.max_freq_percent < rule.normal and cool >= rule.cool_intervals:
        return ThermalState(min(rule.normal, state.max_freq_percent + rule.step), 0)
    return ThermalState(state.max_freq_percent, cool if state.max_freq_percent < rule.normal else 0)


# ---- swappiness by memory pressure ----------------------------------------------------------


@dataclass(frozen=True)
class SwappinessRule:
    """Swappiness stays within [minimum, maximum] (the policy's range).

    - swap in use >= ``swap_high`` %: ``minimum`` (the node is already swapping; stop paging
      anonymous memory out, it costs latency);
    - memory used >= ``memory_high`` % with swap below ``swap_high``: ``maximum`` (page cold
      anonymous memory out rather than drop hot page cache);
    - memory used <= ``memory_low`` % and swap below ``swap_high``: ``neutral``;
    - in between: keep the current value (hysteresis band).
    """

    minimum: int = 10
    maximum: int = 60
    neutral: int = 30
    memory_low: float = 70.0
    memory_high: float = 90.0
    swap_high: float = 50.0


def swappiness_for_memory(memory_used_percent: float, swap_used_percent: float, current: int,
                          rule: SwappinessRule) -> int:
    if swap_used_percent >= rule.swap_high:
        target = rule.minimum
    elif memory_used_percent >= rule.memory_high:
        target = rule.maximum
    elif memory_used_percent <= rule.memory_low:
        target = rule.neutral
    else:
        target = current
    return min(rule.maximum, max(rule.minimum, target))


# ---- thresholds -> conditions ---------------------------------------------------------------


class ThresholdReason(StrEnum):
    WITHIN_THRESHOLDS = "WithinThresholds"
    THRESHOLD_EXCEEDED = "ThresholdExceeded"
    BREACH_PENDING = "BreachPending"
    NO_DATA = "NoData"


@dataclass(frozen=True)
class Threshold:
    """``metric`` (a NodeSummary field name) above ``above`` for ``for_seconds`` is a breach."""

    metric: str
    above: float
    for_seconds: float = 0.0


@dataclass(frozen=True)
class ThresholdStatus:
    metric: str
    breached: bool  # sustained for the whole period
    reason: ThresholdReason
    message: str
    since: float | None  # when the value first went above the threshold (same clock as now)


@dataclass(frozen=True)
class ThresholdState:
    """When each metric first went above its threshold; None entries are dropped."""

    above_since: Mapping[str, float] = field(default_factory=dict)


def evaluate_thresholds(values: Mapping[str, float | None], thresholds: Sequence[Threshold],
                        state: ThresholdState, now: float) -> tuple[list[ThresholdStatus], ThresholdState]:
    """Per threshold, whether it is breached for its sustained period; and the next state."""
    statuses: list[ThresholdStatus] = []
    above_since: dict[str, float] = {}
    for threshold in thresholds:
        value = values.get(threshold.metric)
        if value is None:
            statuses.append(ThresholdStatus(threshold.metric, False, ThresholdReason.NO_DATA,
                                            f"no value for {threshold.metric}", None))
            continue
        if value <= threshold.above:
            statuses.append(ThresholdStatus(threshold.metric, False, ThresholdReason.WITHIN_THRESHOLDS,
                                            f"{threshold.metric} {value:g} <= {threshold.above:g}", None))
            continue
        since = state.above_since.get(threshold.metric, now)
        above_since[threshold.metric] = since
        lasted = now - since
        if lasted >= threshold.for_seconds:
            statuses.append(ThresholdStatus(
                threshold.metric, True, ThresholdReason.THRESHOLD_EXCEEDED,
                f"{threshold.metric} {value:g} > {threshold.above:g} for {lasted:.0f}s "
                f"(sustained period {threshold.for_seconds:.0f}s)", since))
        else:
            statuses.append(ThresholdStatus(
                threshold.metric, False, ThresholdReason.BREACH_PENDING,
                f"{threshold.metric} {value:g} > {threshold.above:g} for {lasted:.0f}s of "
                f"{threshold.for_seconds:.0f}s", since))
    return statuses, ThresholdState(above_since)
