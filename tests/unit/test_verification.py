"""kubetune.verification: keep or roll back an action, and the backoff before retrying it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from kubetune.verification import (
    MetricKind,
    MetricWindows,
    Outcome,
    RetryBackoff,
    Tolerance,
    verify_action,
)

pytestmark = pytest.mark.unit

WINDOW = 40  # 10 minutes of 15 s samples


def noisy(level: float, spread: float, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(level, spread, WINDOW))


def latency(before: float, after: float, spread: float = 5.0) -> MetricWindows:
    return MetricWindows("latencyP95Ms", MetricKind.LATENCY, noisy(before, spread, 1), noisy(after, spread, 2))


def errors(before: float, after: float) -> MetricWindows:
    return MetricWindows("errorRatePercent", MetricKind.ERROR_RATE, noisy(before, 0.02, 3), noisy(after, 0.02, 4))


def cpu(before: float, after: float) -> MetricWindows:
    return MetricWindows("cpuUtilization", MetricKind.UTILIZATION, noisy(before, 2.0, 5), noisy(after, 2.0, 6))


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ([latency(200, 140), errors(0.5, 0.5), cpu(85, 60)], Outcome.IMPROVED),
        ([latency(200, 203), errors(0.5, 0.52), cpu(50, 55)], Outcome.NEUTRAL),
        ([latency(200, 300), errors(0.5, 0.5), cpu(50, 50)], Outcome.REGRESSED),
        ([latency(200, 200), errors(0.2, 2.0), cpu(50, 50)], Outcome.REGRESSED),
        ([latency(200, 200), errors(0.5, 0.5), cpu(60, 97)], Outcome.REGRESSED),
        ([latency(200, 200), errors(0.5, 0.5), cpu(30, 70)], Outcome.NEUTRAL),
        ([latency(200, 140), errors(0.5, 0.5), cpu(60, 97)], Outcome.REGRESSED),
        ([latency(2000, 2004, spread=1.0)], Outcome.NEUTRAL),
        ([errors(0.01, 0.03)], Outcome.NEUTRAL),
    ],
    ids=[
        "latency-down-is-improved",
        "small-changes-are-neutral",
        "latency-up-is-regressed",
        "errors-up-is-regressed",
        "utilisation-saturated-is-regressed",
        "utilisation-up-below-ceiling-is-neutral",
        "regression-beats-improvement",
        "below-absolute-latency-tolerance",
        "below-absolute-error-tolerance",
    ],
)
def test_outcome(windows: list[MetricWindows], expected: Outcome) -> None:
    result = verify_action(windows)
    assert result.outcome is expected, result.message
    assert result.should_roll_back is (expected is Outcome.REGRESSED)
    assert len(result.metrics) == len(windows)


def test_regression_evidence_names_the_metric_and_the_movement() -> None:
    result = verify_action([latency(200, 300), errors(0.5, 0.5)])
    regressed = [m for m in result.metrics if m.outcome is Outcome.REGRESSED]
    assert [m.name for m in regressed] == ["latencyP95Ms"]
    evidence = regressed[0]
    assert evidence.before_median == pytest.approx(200, abs=3)
    assert evidence.after_median == pytest.approx(300, abs=3)
    assert evidence.probability_worse == 1.0
    assert result.message.startswith("latencyP95Ms: ")
    assert "worse beyond the tolerance" in result.message


def test_a_few_bad_samples_do_not_roll_back() -> None:
    before = [200.0] * WINDOW
    after = [200.0] * (WINDOW - 5) + [2000.0] * 5  # five slow scrapes, median unchanged
    result = verify_action([MetricWindows("latencyP95Ms", MetricKind.LATENCY, before, after)])
    assert result.outcome is Outcome.NEUTRAL


def test_a_shift_only_a_minority_of_pairs_agree_on_is_not_a_regression() -> None:
    # Medians 100 -> 120 (beyond 10 %), but the windows overlap so much that the shift is not clear.
    before = [80.0, 90.0, 100.0, 150.0, 160.0] * 8
    after = [85.0, 95.0, 120.0, 140.0, 150.0] * 8
    result = verify_action([MetricWindows("latencyP95Ms", MetricKind.LATENCY, before, after)])
    assert result.metrics[0].probability_worse is not None and result.metrics[0].probability_worse < 0.7
    assert result.outcome is Outcome.NEUTRAL


@pytest.mark.parametrize(
    ("before", "after"),
    [([], [1.0] * WINDOW), ([1.0] * WINDOW, [np.nan] * WINDOW), ([1.0] * 3, [1.0] * 3)],
    ids=["nothing-before", "all-nan-after", "too-short"],
)
def test_insufficient_data(before: list[float], after: list[float]) -> None:
    result = verify_action([MetricWindows("latencyP95Ms", MetricKind.LATENCY, before, after)])
    assert result.outcome is Outcome.INSUFFICIENT_DATA
    assert result.metrics[0].before_median is None
    assert "not enough samples" in result.message


def test_a_regression_is_decisive_even_when_another_metric_lacks_data() -> None:
    missing = MetricWindows("errorRatePercent", MetricKind.ERROR_RATE, [], [])
    assert verify_action([latency(200, 300), missing]).outcome is Outcome.REGRESSED
    assert verify_action([latency(200, 140), missing]).outcome is Outcome.INSUFFICIENT_DATA


def test_no_metrics_is_insufficient_data() -> None:
    assert verify_action([]).outcome is Outcome.INSUFFICIENT_DATA


def test_tolerance_is_configurable() -> None:
    loose = Tolerance(relative=0.6)
    assert verify_action([latency(200, 300)], loose).outcome is Outcome.NEUTRAL


def test_error_rate_rising_from_zero_is_judged_by_the_absolute_tolerance() -> None:
    windows = MetricWindows("errorRatePercent", MetricKind.ERROR_RATE, [0.0] * WINDOW, [1.5] * WINDOW)
    result = verify_action([windows])
    assert result.outcome is Outcome.REGRESSED
    assert "from 0" in result.message


# --- backoff ---------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("rollbacks", "delay"),
    [(0, timedelta(0)), (1, timedelta(minutes=10)), (2, timedelta(minutes=20)), (3, timedelta(minutes=40)),
     (10, timedelta(hours=6)), (10_000, timedelta(hours=6))],
    ids=["never", "first", "second", "third", "capped", "huge-count-does-not-overflow"],
)
def test_backoff_grows_exponentially_and_is_capped(rollbacks: int, delay: timedelta) -> None:
    assert RetryBackoff().delay(rollbacks) == delay


@pytest.mark.parametrize(
    ("now", "allowed"),
    [(T0 + timedelta(minutes=19), False), (T0 + timedelta(minutes=20), True), (T0 + timedelta(days=1), True)],
    ids=["inside-backoff", "exactly-at-the-end", "long-after"],
)
def test_retry_is_allowed_only_after_the_backoff(now: datetime, allowed: bool) -> None:
    decision = RetryBackoff().check(now, last_rollback_at=T0, rollbacks=2)
    assert decision.allowed is allowed
    assert decision.not_before == T0 + timedelta(minutes=20)
    if not allowed:
        assert "not retried before 2026-01-01T12:20:00+00:00" in decision.message


def test_a_change_never_rolled_back_may_be_tried() -> None:
    decision = RetryBackoff().check(T0, last_rollback_at=None, rollbacks=0)
    assert decision.allowed and decision.not_before is None


def test_backoff_parameters() -> None:
    backoff = RetryBackoff(base=timedelta(seconds=30), factor=3.0, cap=timedelta(minutes=10))
    assert [backoff.delay(n).total_seconds() for n in range(1, 6)] == [30, 90, 270, 600, 600]
