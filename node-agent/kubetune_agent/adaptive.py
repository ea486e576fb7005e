"""Node-level adaptive rules and threshold conditions, evaluated locally by the agent (pure).

Every function takes plain data (the current value, a rule, a small state, ``now``) and returns
the new target and state; no I/O, no clock. The agent feeds them from its own samples, so node
reactions do not wait for Prometheus. Hysteresis: each rule has separate up and down bands (and
a cool-down count for frequency), so a value hovering at a threshold does not flap.

Rules: governor by load, max frequency under thermal throttling, swappiness, vfs_cache_pressure
and the dirty ratios by memory pressure; thresholds at warning and critical levels, each with its
sustained period, reporting each transition once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
        return rule.minimum
    target = _by_band(memory_used_percent, rule.memory_low, rule.memory_high, rule.neutral, rule.maximum, current)
    return min(rule.maximum, max(rule.minimum, target))


def _by_band(value: float, low: float, high: float, relaxed: int, pressed: int, current: int) -> int:
    """``pressed`` at or above ``high``, ``relaxed`` at or below ``low``, else ``current`` (the
    hysteresis band)."""
    if value >= high:
        return pressed
    return relaxed if value <= low else current


# ---- adaptive caching: vfs_cache_pressure and the dirty ratios by memory pressure ------------


@dataclass(frozen=True)
class CachePressureRule:
    """vm.vfs_cache_pressure stays within [minimum, maximum] (the policy's range).

    - memory used >= ``memory_high`` %: ``maximum`` (reclaim dentries and inodes sooner, before
      page cache and anonymous memory);
    - memory used <= ``memory_low`` %: ``minimum`` (memory is plentiful: keep metadata cached);
    - in between: keep the current value (hysteresis band; the agent starts at the middle).
    """

    minimum: int = 50
    maximum: int = 150
    memory_low: float = 70.0
    memory_high: float = 90.0

    @property
    def neutral(self) -> int:
        return (self.minimum + self.maximum) // 2


def cache_pressure_for_memory(memory_used_percent: float, current: int, rule: CachePressureRule) -> int:
    target = _by_band(memory_used_percent, rule.memory_low, rule.memory_high, rule.minimum, rule.maximum, current)
    return min(rule.maximum, max(rule.minimum, target))


@dataclass(frozen=True)
class DirtyRatios:
    """vm.dirty_ratio and vm.dirty_background_ratio; None = not moved by the agent."""

    ratio: int | None = None
    background: int | None = None


@dataclass(frozen=True)
class DirtyRule:
    """vm.dirty_ratio and vm.dirty_background_ratio within the policy's (min, max) ranges (either
    may be None: that ratio is not adaptive), moved together.

    - pressure: memory used >= ``memory_high`` %, or disk latency >= ``latency_high_ms`` (write-back
      stalls): both to their minimum (dirty pages cannot be reclaimed until written; smaller
      write-back bursts stall less);
    - relaxed: memory used <= ``memory_low`` % and disk latency < half of ``latency_high_ms``:
      both to the middle of their range (the neutral setting);
    - in between: keep the current values (hysteresis band; the agent starts at the middle).

    dirty_background_ratio is kept below dirty_ratio: with both ranges the policy guarantees it
    (background max < ratio min); with one range the other ratio's value in force (``fixed``) bounds
    it, unless the policy's range leaves no room (the range wins; the kernel then uses half of
    dirty_ratio as the background level).
    """

    ratio: tuple[int, int] | None = (10, 40)
    background: tuple[int, int] | None = (5, 10)
    memory_low: float = 70.0
    memory_high: float = 90.0
    latency_high_ms: float | None = None

    @property
    def neutral(self) -> DirtyRatios:
        return DirtyRatios(_middle(self.ratio), _middle(self.background))


def _middle(bounds: tuple[int, int] | None) -> int | None:
    return None if bounds is None else (bounds[0] + bounds[1]) // 2


def _clamp(value: int | None, bounds: tuple[int, int] | None) -> int | None:
    return None if bounds is None or value is None else min(bounds[1], max(bounds[0], value))


def dirty_ratios_for_memory(memory_used_percent: float, disk_latency_ms: float | None, current: DirtyRatios,
                            rule: DirtyRule, fixed: DirtyRatios = DirtyRatios()) -> DirtyRatios:
    """The next dirty ratios. ``current`` holds the agent's last targets, ``fixed`` the value in
    force of a ratio the rule does not move (from the plan's knobs, else the live value)."""
    latency = disk_latency_ms or 0.0
    stalled = rule.latency_high_ms is not None and latency >= rule.latency_high_ms
    calm = rule.latency_high_ms is None or latency < rule.latency_high_ms / 2
    if memory_used_percent >= rule.memory_high or stalled:
        target = DirtyRatios(rule.ratio and rule.ratio[0], rule.background and rule.background[0])
    elif memory_used_percent <= rule.memory_low and calm:
        target = rule.neutral
    else:
        target = DirtyRatios(current.ratio if current.ratio is not None else _middle(rule.ratio),
                             current.background if current.background is not None else _middle(rule.background))
    ratio, background = _clamp(target.ratio, rule.ratio), _clamp(target.background, rule.background)
    if ratio is None and background is not None and fixed.ratio is not None:
        background = _clamp(min(background, fixed.ratio - 1), rule.background)
    if background is None and ratio is not None and fixed.background is not None:
        ratio = _clamp(max(ratio, fixed.background + 1), rule.ratio)
    return DirtyRatios(ratio, background)


# ---- thresholds -> conditions ---------------------------------------------------------------


class ThresholdReason(StrEnum):
    WITHIN_THRESHOLDS = "WithinThresholds"
    THRESHOLD_EXCEEDED = "ThresholdExceeded"
    BREACH_PENDING = "BreachPending"
    NO_DATA = "NoData"


class ThresholdLevel(StrEnum):
    """The API's level names: a ``*Warning*`` field is a warning, a ``*Critical*`` one critical."""

    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Threshold:
    """``metric`` (a NodeSummary field name) above ``above`` for ``for_seconds`` is a breach."""

    metric: str
    above: float
    for_seconds: float = 0.0
    level: ThresholdLevel = ThresholdLevel.CRITICAL

    @property
    def key(self) -> tuple[str, ThresholdLevel]:
        return self.metric, self.level


@dataclass(frozen=True)
class ThresholdStatus:
    metric: str
    breached: bool  # sustained for the whole period
    reason: ThresholdReason
    message: str
    since: float | None  # when the value first went above the threshold (same clock as now)
    level: ThresholdLevel = ThresholdLevel.CRITICAL
    changed: bool = False  # breached differs from the previous evaluation: one Event per transition


@dataclass(frozen=True)
class ThresholdState:
    """Per (metric, level): when the value first went above it, and whether it was breached at the
    last evaluation (so a transition is reported once, not every cycle)."""

    above_since: Mapping[tuple[str, ThresholdLevel], float] = field(default_factory=dict)
    breached: frozenset[tuple[str, ThresholdLevel]] = frozenset()


def evaluate_thresholds(values: Mapping[str, float | None], thresholds: Sequence[Threshold],
                        state: ThresholdState, now: float, missing: Mapping[str, str] | None = None
                        ) -> tuple[list[ThresholdStatus], ThresholdState]:
    """Per threshold, whether it is breached for its sustained period (and whether that changed
    since the last evaluation); and the next state. ``missing``: metric -> why it has no value
    (e.g. the link speed is unknown), which becomes the NoData message."""
    missing = missing or {}
    statuses = [_threshold_status(values.get(t.metric), t, state, now, missing.get(t.metric))
                for t in thresholds]
    above_since = {t.key: s.since for t, s in zip(thresholds, statuses, strict=True) if s.since is not None}
    breached = frozenset(t.key for t, s in zip(thresholds, statuses, strict=True) if s.breached)
    statuses = [replace(s, changed=(t.key in state.breached) != s.breached)
                for t, s in zip(thresholds, statuses, strict=True)]
    return statuses, ThresholdState(above_since, breached)


def _threshold_status(value: float | None, threshold: Threshold, state: ThresholdState,
                      now: float, why_missing: str | None = None) -> ThresholdStatus:
    metric, level, above = threshold.metric, threshold.level, threshold.above
    if value is None:
        return ThresholdStatus(metric, False, ThresholdReason.NO_DATA,
                               f"{metric}: {why_missing or 'no value'}", None, level)
    if value <= above:
        return ThresholdStatus(metric, False, ThresholdReason.WITHIN_THRESHOLDS,
                               f"{metric} {value:g} <= {level} level {above:g}", None, level)
    since = state.above_since.get(threshold.key, now)
    lasted = now - since
    if lasted >= threshold.for_seconds:
        return ThresholdStatus(metric, True, ThresholdReason.THRESHOLD_EXCEEDED,
                               f"{metric} {value:g} > {level} level {above:g} for {lasted:.0f}s "
                               f"(sustained period {threshold.for_seconds:.0f}s)", since, level)
    return ThresholdStatus(metric, False, ThresholdReason.BREACH_PENDING,
                           f"{metric} {value:g} > {level} level {above:g} for {lasted:.0f}s of "
                           f"{threshold.for_seconds:.0f}s", since, level)
