"""Verification of an action and the backoff before the same change is tried again.

This module owns two decisions, both pure (plain numbers and times in, a frozen result out):

- `verify_action`: after a change, compare latency, error rate and utilisation in the
  verification window with the same window before it and say Improved, Neutral, Regressed or
  InsufficientData, with the per-metric evidence that goes into `lastAction.verification`, history
  and Events. A Regressed result is what triggers the rollback to the recorded previous values.
- `RetryBackoff`: once a change was rolled back, the same change is not retried until an
  exponentially growing, capped delay has passed. `now` is an argument, never read from a clock.

Fetching the windows from Prometheus and performing the rollback belong to the evaluation loop
and the actuators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np


class Outcome(StrEnum):
    """The verdict on an action; the values are used as condition and Event reasons."""

    IMPROVED = "Improved"
    NEUTRAL = "Neutral"
    REGRESSED = "Regressed"
    INSUFFICIENT_DATA = "InsufficientData"


class MetricKind(StrEnum):
    """What a metric means for the verdict, and so which tolerance and direction apply."""

    LATENCY = "latency"  # milliseconds; lower is better
    ERROR_RATE = "errorRate"  # percent of requests; lower is better
    # Percent of the request or limit. A rise is the expected effect of a decrease and a fall the
    # expected effect of an increase, so utilisation never counts as an improvement; it regresses
    # only when it ends above the saturation ceiling.
    UTILIZATION = "utilization"


@dataclass(frozen=True)
class Tolerance:
    """How much worse a metric may get before the change counts as a regression.

    A change counts only when it is beyond both the relative and the absolute tolerance (so a 0.01 %
    error rate doubling is noise, and so is +3 ms on a 2 s latency), and when most samples moved:
    `min_probability` is the share of (before, after) sample pairs in which `after` is worse — the
    Mann–Whitney common-language effect size. The medians alone can be moved by a few samples;
    requiring both keeps one noisy window from rolling back a good change.
    """

    relative: float = 0.10
    latency_ms: float = 5.0
    error_rate_percent: float = 0.1
    utilization_percent: float = 5.0
    utilization_ceiling_percent: float = 90.0
    min_probability: float = 0.7

    def absolute(self, kind: MetricKind) -> float:
        return {
            MetricKind.LATENCY: self.latency_ms,
            MetricKind.ERROR_RATE: self.error_rate_percent,
            MetricKind.UTILIZATION: self.utilization_percent,
        }[kind]


@dataclass(frozen=True)
class MetricWindows:
    """One metric's samples in the window before the action and in the verification window after it."""

    name: str  # as in status.signals, e.g. "latencyP95Ms"; shown in the evidence
    kind: MetricKind
    before: Sequence[float]
    after: Sequence[float]


@dataclass(frozen=True)
class MetricVerdict:
    """The evidence for one metric; medians are None when a window had too few samples."""

    name: str
    kind: MetricKind
    outcome: Outcome
    before_median: float | None
    after_median: float | None
    probability_worse: float | None  # share of (before, after) pairs where after is worse
    samples_before: int
    samples_after: int
    message: str


@dataclass(frozen=True)
class VerificationResult:
    """The verdict on an action with the per-metric evidence."""

    outcome: Outcome
    message: str
    metrics: tuple[MetricVerdict, ...]

    @property
    def should_roll_back(self) -> bool:
        return self.outcome is Outcome.REGRESSED


def _valid(samples: Sequence[float]) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float64).ravel()
    return array[~np.isnan(array)]


def _probability_greater(after: np.ndarray, before: np.ndarray) -> float:
    """P(after > before) over all pairs, ties counting half (Mann–Whitney U / (n1 * n2))."""
    ordered = np.sort(before)
    below = np.searchsorted(ordered, after, side="left")
    not_above = np.searchsorted(ordered, after, side="right")
    return float((below + not_above).sum() / (2.0 * after.size * before.size))


def _verify_metric(windows: MetricWindows, tolerance: Tolerance, min_samples: int) -> MetricVerdict:
    before, after = _valid(windows.before), _valid(windows.after)
    name, kind = windows.name, windows.kind
    if before.size < min_samples or after.size < min_samples:
        return MetricVerdict(name, kind, Outcome.INSUFFICIENT_DATA, None, None, None, before.size, after.size,
                             f"{name}: not enough samples ({before.size} before, {after.size} after; "
                             f"needs {min_samples} each)")
    before_median, after_median = float(np.median(before)), float(np.median(after))
    # Every kind here is "higher is worse"; utilisation differs only in what counts as better.
    worse = _probability_greater(after, before)
    change = after_median - before_median
    allowed = max(tolerance.relative * abs(before_median), tolerance.absolute(kind))
    percent = f"{change / before_median:+.0%}" if before_median else "from 0"
    moved = f"{before_median:.4g} -> {after_median:.4g} ({percent}, {worse:.0%} of sample pairs worse)"
    outcome = Outcome.NEUTRAL
    if change > allowed and worse >= tolerance.min_probability:
        if kind is not MetricKind.UTILIZATION:
            outcome = Outcome.REGRESSED
        elif after_median > tolerance.utilization_ceiling_percent:
            outcome = Outcome.REGRESSED
            moved += f", above the {tolerance.utilization_ceiling_percent:g}% ceiling"
    elif kind is not MetricKind.UTILIZATION and -change > allowed and 1.0 - worse >= tolerance.min_probability:
        outcome = Outcome.IMPROVED
    verdict = {
        Outcome.REGRESSED: f"worse beyond the tolerance of {allowed:.4g}",
        Outcome.IMPROVED: f"better beyond the tolerance of {allowed:.4g}",
        Outcome.NEUTRAL: f"within the tolerance of {allowed:.4g}" if kind is not MetricKind.UTILIZATION
        else f"no saturation (ceiling {tolerance.utilization_ceiling_percent:g}%)",
    }[outcome]
    return MetricVerdict(name, kind, outcome, before_median, after_median, worse, before.size, after.size,
                         f"{name}: {moved}: {verdict}")


def verify_action(
    windows: Sequence[MetricWindows],
    tolerance: Tolerance = Tolerance(),
    *,
    min_samples: int = 5,
) -> VerificationResult:
    """Compare each metric's window after an action with the one before it, and decide.

    The first applicable rule wins: any metric Regressed -> Regressed (a regression is reason
    enough to roll back even if another metric lacks data); else any metric without enough samples
    -> InsufficientData (keep the change, verify again); else latency or error rate Improved ->
    Improved; else Neutral. Medians are compared, not means, so one slow request does not decide.
    """
    verdicts = tuple(_verify_metric(w, tolerance, min_samples) for w in windows)
    if not verdicts:
        return VerificationResult(Outcome.INSUFFICIENT_DATA, "no metrics to verify the action with", ())
    for outcome in (Outcome.REGRESSED, Outcome.INSUFFICIENT_DATA, Outcome.IMPROVED):
        decisive = [v for v in verdicts if v.outcome is outcome]
        if decisive:
            return VerificationResult(outcome, "; ".join(v.message for v in decisive), verdicts)
    return VerificationResult(Outcome.NEUTRAL, "; ".join(v.message for v in verdicts), verdicts)


@dataclass(frozen=True)
class RetryDecision:
    """Whether a change that was rolled back may be tried again now."""

    allowed: bool
    not_before: datetime | None  # when it may be retried; None when it never was rolled back
    message: str


@dataclass(frozen=True)
class RetryBackoff:
    """Exponential, capped backoff for a change that was rolled back.

    The n-th rollback of the same change (the caller keys "same" by workload, container, resource
    and target value, and counts the rollbacks in history) blocks a retry for
    base * factor^(n-1), at most `cap`. Capped so that a workload whose conditions change is
    eventually tried again instead of never.
    """

    base: timedelta = timedelta(minutes=10)
    factor: float = 2.0
    cap: timedelta = timedelta(hours=6)

    def delay(self, rollbacks: int) -> timedelta:
        if rollbacks <= 0:
            return timedelta(0)
        # Capping the exponent before the power keeps a long history from overflowing timedelta.
        exponent = min(rollbacks - 1, 64)
        seconds = min(self.base.total_seconds() * self.factor**exponent, self.cap.total_seconds())
        return timedelta(seconds=seconds)

    def check(self, now: datetime, last_rollback_at: datetime | None, rollbacks: int) -> RetryDecision:
        if last_rollback_at is None or rollbacks <= 0:
            return RetryDecision(True, None, "the change was never rolled back")
        not_before = last_rollback_at + self.delay(rollbacks)
        if now >= not_before:
            return RetryDecision(True, not_before, f"backoff after {rollbacks} rollback(s) ended at {not_before.isoformat()}")
        return RetryDecision(False, not_before,
                             f"rolled back {rollbacks} time(s); not retried before {not_before.isoformat()} "
                             f"(backoff {self.delay(rollbacks)})")


__all__ = [
    "MetricKind",
    "MetricVerdict",
    "MetricWindows",
    "Outcome",
    "RetryBackoff",
    "RetryDecision",
    "Tolerance",
    "VerificationResult",
    "verify_action",
]
