"""Signal analysis for the evaluation loop: smoothing, trends, forecasts, anomalies, correlation.

This module owns the statistics kubetune applies to metric series before a decision is taken:

- a robust trend (`theil_sen`) and the forecast built on it (`predict_crossing`), which let the
  high-load rule step up *before* the threshold is crossed;
- anomaly detection (`detect_anomalies`: robust z-score on median/MAD, optionally against a
  seasonal baseline) that feeds the Investigate action;
- the latency–resource correlation (`find_bottleneck`) that tells OptimizeResources which
  resource, if any, explains the latency;
- `analyse_batch`, the vectorised form of the trend and anomaly statistics for N series x T points
  (benchmarked; the loop analyses each policy's few series with the single-series functions today).

No smoothing here: the level a rule compares is asked of Prometheus — `rate()` over `rateWindow` is
the moving average of a counter, and `for:` is `min_over_time`/`max_over_time` over the window — so the
operator keeps no history of its own.

Everything here is a pure function of plain numbers: no I/O, no clock, no Kubernetes, no kopf.
Series are evenly spaced samples (a Prometheus range query with a fixed `step`), oldest first;
NaN marks a missing sample. Times are in seconds and "now" is the end of the window (the last
sample). Where a result cannot be computed (too few samples) it is NaN, never an exception, because
the evaluation loop must go on for every other series.

The single-series functions run the same vectorised code as the batch on a one-row array, so a
decision taken from `theil_sen` and one taken from `analyse_batch` cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

# MAD * 1.4826 estimates the standard deviation of normally distributed data, so a robust z-score
# reads like an ordinary one ("3 standard deviations").
MAD_TO_SIGMA = 1.4826
# When more than half the samples equal the median, MAD is 0; the mean absolute deviation times
# sqrt(pi/2) is the fallback estimator of sigma (Iglewicz & Hoaglin's modified z-score).
MEAN_AD_TO_SIGMA = math.sqrt(math.pi / 2)

# Theil–Sen is O(n^2) in pairs. Series longer than this are first reduced to this many block
# medians; 40 points give 780 pairs, which keeps 10,000 series well within a second and the median
# of each block also removes most of the noise before the slopes are taken.
TREND_POINTS = 40
MIN_TREND_SAMPLES = 5
BATCH_CHUNK_ROWS = 1024
MIN_ANOMALY_SAMPLES = 10


# ---------------------------------------------------------------------------------------------
# Shared numeric helpers (private)
# ---------------------------------------------------------------------------------------------


def _as_rows(values: ArrayLike) -> FloatArray:
    """A float64 2-D view: one series per row, oldest sample first."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        return array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f"values: expected a 1-D series or a 2-D array of series, got {array.ndim}-D")
    return array


def _nanmedian(a: FloatArray) -> FloatArray:
    """Median along the last axis ignoring NaN; NaN where nothing is valid.

    numpy's nanmedian falls back to masked arrays or a Python loop; this takes the fast
    partition-based `np.median` for rows without NaN (nearly all of them) and sorts only the rest.
    """
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    missing = np.isnan(a)
    if not missing.any():
        return np.median(a, axis=-1)
    out = np.empty(a.shape[:-1])
    gappy = missing.any(axis=-1)
    if (~gappy).any():
        out[~gappy] = np.median(a[~gappy], axis=-1)
    ordered = np.sort(a[gappy], axis=-1)  # NaN sorts last
    valid = (~np.isnan(ordered)).sum(axis=-1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum((valid - 1) // 2, 0), axis=-1)
    high = np.take_along_axis(ordered, valid // 2, axis=-1)
    # With no valid sample both indexes point at a NaN, so the result is NaN as documented.
    out[gappy] = (0.5 * (low + high))[..., 0]
    return out


def _robust_location_scale(a: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Median and robust sigma of each row (MAD, falling back to the mean absolute deviation)."""
    median = _nanmedian(a)
    deviation = np.abs(a - median[..., np.newaxis])
    scale = MAD_TO_SIGMA * _nanmedian(deviation)
    flat = scale == 0
    if flat.any():
        with np.errstate(invalid="ignore"):
            scale[flat] = MEAN_AD_TO_SIGMA * np.nanmean(deviation[flat], axis=-1)
    return median, scale


def _zscore(values: FloatArray, location: FloatArray, scale: FloatArray) -> FloatArray:
    """(value - location) / scale, with 0 where the scale is 0 (then every value equals location)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (values - location) / scale
    return np.where(scale == 0, np.where(np.isnan(values), np.nan, 0.0), z)


def _time_to_crossing(
    level: FloatArray, slope: FloatArray, threshold: FloatArray, horizon: float, upward: bool
) -> FloatArray:
    """Seconds from now until level + slope * t reaches threshold, NaN if not within the horizon."""
    if not upward:
        # A downward crossing of a threshold is an upward crossing of the negated series.
        level, slope, threshold = -level, -slope, -threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        until = np.where(level >= threshold, 0.0, np.where(slope > 0, (threshold - level) / slope, np.nan))
    return np.where(until <= horizon, until, np.nan)


# ---------------------------------------------------------------------------------------------
# Trend and forecast
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """A robust straight-line fit of a series; values are NaN when there were too few samples.

    `confidence` is Kendall's tau between time and value, signed in the slope's direction and
    clipped at 0: the share of sample pairs that agree with the slope minus the share that
    disagree. 1 means every later sample is above (below) every earlier one; pure noise gives about
    0 (sd ~0.12 at 40 points). It is the statistic Theil–Sen is derived from, costs nothing extra,
    and does not depend on the metric's units.
    """

    slope: float  # units per second
    level: float  # the fitted value now (at the last sample's time)
    confidence: float  # 0..1, see above
    samples: int  # valid samples in the window

    def value_in(self, seconds: float) -> float:
        """The fitted line's value `seconds` from now."""
        return self.level + self.slope * seconds


def _theil_sen_rows(
    rows: FloatArray, step: float, max_points: int, min_samples: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Slope, level now, confidence and valid-sample count for every row of `rows`."""
    n_series, length = rows.shape
    samples = (~np.isnan(rows)).sum(axis=-1)
    times = (np.arange(length, dtype=np.float64) - (length - 1)) * step
    block = max(1, math.ceil(length / max_points))
    if block > 1:
        # Drop the fewer-than-`block` oldest samples so that the newest block is complete.
        blocks = length // block
        kept = rows[:, length - blocks * block :].reshape(n_series, blocks, block)
        block_times = times[length - blocks * block :].reshape(blocks, block)
        points = _nanmedian(kept)
        present = ~np.isnan(kept)
        if not present.all():
            # A block's time is the mean time of its valid samples, which differs per series
            # (NaN for an empty block, whose median is NaN too).
            with np.errstate(invalid="ignore", divide="ignore"):
                point_times = (present * block_times).sum(axis=-1) / present.sum(axis=-1)
        else:
            point_times = block_times.mean(axis=-1)
    else:
        points, point_times = rows, times
    first, second = np.triu_indices(points.shape[-1], k=1)
    rises = points[:, second] - points[:, first]
    spans = point_times[..., second] - point_times[..., first]
    slope = _nanmedian(rises / spans)
    # Kendall's tau from the signs of the same pairwise differences.
    signs = np.sign(rises)
    pairs = (~np.isnan(signs)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.nansum(signs, axis=-1) / pairs
    level = _nanmedian(points - slope[:, np.newaxis] * point_times)
    confidence = np.clip(np.nan_to_num(tau * np.sign(slope)), 0.0, 1.0)
    scarce = samples < min_samples
    slope[scarce] = np.nan
    level[scarce] = np.nan
    confidence[scarce | np.isnan(slope)] = 0.0
    return slope, level, confidence, samples


def theil_sen(
    values: ArrayLike,
    step: float = 1.0,
    *,
    max_points: int = TREND_POINTS,
    min_samples: int = MIN_TREND_SAMPLES,
) -> Trend:
    """Theil–Sen trend of one evenly spaced series (`step` seconds apart, oldest first).

    The slope is the median of the slopes between all pairs of points, so up to ~29 % of the points
    can be outliers (a GC pause, a scrape glitch) without moving it, unlike least squares. Series
    longer than `max_points` are reduced to `max_points` block medians first (see TREND_POINTS).
    """
    slope, level, confidence, samples = _theil_sen_rows(_as_rows(values), step, max_points, min_samples)
    return Trend(float(slope[0]), float(level[0]), float(confidence[0]), int(samples[0]))


@dataclass(frozen=True)
class Forecast:
    """Where a series is heading within a horizon, and whether it crosses a threshold there."""

    value_at_horizon: float  # the trend's value `horizon` seconds from now (NaN: too few samples)
    time_to_crossing: float | None  # seconds from now; 0 when already beyond; None when not within the horizon
    confidence: float  # the trend's confidence, 0..1
    will_cross: bool  # crossing within the horizon and confidence >= min_confidence: act now
    threshold: float
    horizon: float
    trend: Trend
    explanation: str


def predict_crossing(
    values: ArrayLike,
    threshold: float,
    horizon: float,
    *,
    step: float = 1.0,
    direction: Literal["above", "below"] = "above",
    min_confidence: float = 0.6,
    max_points: int = TREND_POINTS,
) -> Forecast:
    """Forecast a series `horizon` seconds ahead and tell when it crosses `threshold`.

    For predictive scaling: the high-load rule (cpuUtilization above 80 for 5m) fires only after the
    load has been high for a while; when the trend says it will cross 80 within the horizon, and the
    trend is consistent enough (`min_confidence`), `will_cross` says to step up now.
    `direction="below"` asks the same for a falling series (the low-load rule).
    """
    trend = theil_sen(values, step, max_points=max_points)
    until = float(
        _time_to_crossing(
            np.array([trend.level]), np.array([trend.slope]), np.array([threshold]), horizon, direction == "above"
        )[0]
    )
    time_to_crossing = None if math.isnan(until) else until
    will_cross = time_to_crossing is not None and trend.confidence >= min_confidence
    if math.isnan(trend.slope):
        explanation = f"not enough samples for a trend ({trend.samples} < {MIN_TREND_SAMPLES})"
    else:
        crossing = (
            f"crosses {threshold:g} in {time_to_crossing:.0f}s"
            if time_to_crossing is not None
            else f"does not cross {threshold:g} within {horizon:.0f}s"
        )
        verdict = "" if will_cross or time_to_crossing is None else f", below the {min_confidence:g} needed to act"
        explanation = (
            f"now {trend.level:.4g}, forecast {trend.value_in(horizon):.4g} in {horizon:.0f}s "
            f"(slope {trend.slope:+.3g}/s over {trend.samples} samples, confidence {trend.confidence:.2f}"
            f"{verdict}): {crossing}"
        )
    return Forecast(
        value_at_horizon=trend.value_in(horizon),
        time_to_crossing=time_to_crossing,
        confidence=trend.confidence,
        will_cross=will_cross,
        threshold=threshold,
        horizon=horizon,
        trend=trend,
        explanation=explanation,
    )


# ---------------------------------------------------------------------------------------------
# Anomaly detection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """One anomalous sample: where, how far from what was expected, and a sentence saying so."""

    index: int  # position in the series, 0 = oldest
    value: float
    expected: float  # the median, or the seasonal baseline for this phase
    deviation: float  # value - expected, in the metric's units
    zscore: float  # deviation in robust standard deviations
    explanation: str


@dataclass(frozen=True)
class AnomalyReport:
    """The anomalies of one series; empty when there are none or too few samples (see `reason`)."""

    anomalies: tuple[Anomaly, ...]
    method: Literal["robust-z", "seasonal"]
    threshold: float
    evaluated: int  # samples that had enough data (and history, for seasonal) to be judged
    samples: int  # length of the series
    reason: str

    def is_anomalous(self, index: int) -> bool:
        """Whether sample `index` (negative counts from the newest, -1 = newest) is anomalous."""
        position = index % self.samples if self.samples else index
        return any(anomaly.index == position for anomaly in self.anomalies)


def _seasonal_baseline(series: FloatArray, period: int, max_periods: int, min_periods: int) -> FloatArray:
    """For each sample, the median of the same phase in up to `max_periods` previous periods."""
    length = series.shape[-1]
    history = np.full((length, max_periods), np.nan)
    for k in range(1, max_periods + 1):
        lag = k * period
        if lag < length:
            history[lag:, k - 1] = series[: length - lag]
    baseline = _nanmedian(history)
    # Too little history for this phase: the sample is not judged rather than judged badly.
    baseline[(~np.isnan(history)).sum(axis=-1) < min_periods] = np.nan
    return baseline


def detect_anomalies(
    values: ArrayLike,
    *,
    threshold: float = 3.0,
    period: int | None = None,
    max_periods: int = 4,
    min_periods: int = 2,
    min_samples: int = MIN_ANOMALY_SAMPLES,
    min_deviation: float = 0.0,
    name: str = "value",
) -> AnomalyReport:
    """Samples whose robust z-score is at least `threshold`.

    Without `period` the z-score is (value - median) / (1.4826 * MAD) over the window. With `period`
    (in samples, e.g. one day of samples) each sample is first compared with the median of the same
    phase in up to `max_periods` previous periods, and the z-score is taken over those residuals, so a
    nightly batch peak is expected and only a departure from the usual shape is flagged. Samples
    without `min_periods` periods of history are not judged. `min_deviation` (metric units) keeps
    tiny departures of a near-constant signal from being called anomalies.
    """
    series = np.asarray(values, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"values: expected one series, got a {series.ndim}-D array")
    method: Literal["robust-z", "seasonal"] = "robust-z" if period is None else "seasonal"
    if period is not None and period < 1:
        raise ValueError(f"period: must be at least 1 sample, got {period}")
    if period is None:
        baseline = np.zeros_like(series)
    else:
        baseline = _seasonal_baseline(series, period, max_periods, min_periods)
    residuals = series - baseline
    evaluated = int((~np.isnan(residuals)).sum())
    if evaluated < min_samples:
        return AnomalyReport((), method, threshold, evaluated, series.size,
                             f"not enough samples to judge ({evaluated} < {min_samples})")
    location, scale = _robust_location_scale(residuals[np.newaxis, :])
    z = _zscore(residuals, location, scale)
    expected = baseline + location[0]
    deviation = series - expected
    flagged = np.flatnonzero((np.abs(z) >= threshold) & (np.abs(deviation) >= min_deviation))
    reference = (
        f"the median {location[0]:.4g}"
        if period is None
        else f"the seasonal baseline (median of the same phase in up to {max_periods} previous periods of {period} samples)"
    )
    anomalies = tuple(
        Anomaly(
            index=int(i),
            value=float(series[i]),
            expected=float(expected[i]),
            deviation=float(deviation[i]),
            zscore=float(z[i]),
            explanation=(
                f"{name} {series[i]:.4g} at sample {i} is {abs(z[i]):.1f} robust standard deviations "
                f"{'above' if z[i] > 0 else 'below'} {reference}: expected {expected[i]:.4g}, "
                f"deviation {deviation[i]:+.4g}"
            ),
        )
        for i in flagged
    )
    reason = (
        f"{len(anomalies)} of {evaluated} samples at or beyond {threshold:g} robust standard deviations"
        if anomalies
        else f"no sample of {evaluated} reaches {threshold:g} robust standard deviations"
    )
    return AnomalyReport(anomalies, method, threshold, evaluated, series.size, reason)


# ---------------------------------------------------------------------------------------------
# Latency–resource correlation
# ---------------------------------------------------------------------------------------------


class ResourceSignal(StrEnum):
    """The resource series OptimizeResources correlates with latency (names used in evidence)."""

    CPU_THROTTLING = "cpuThrottlingRatio"  # throttled periods / periods (cAdvisor CFS counters)
    MEMORY_PRESSURE = "memoryWorkingSetRatio"  # working set / limit
    MAJOR_PAGE_FAULTS = "majorPageFaultRate"  # major faults per second
    NODE_DISK_LATENCY = "nodeDiskLatency"  # the node's average I/O latency


class BottleneckReason(StrEnum):
    """Why `find_bottleneck` answered as it did; used as condition and Event reasons."""

    RESOURCE_BOTTLENECK = "ResourceBottleneck"
    NOT_A_RESOURCE_BOTTLENECK = "NotAResourceBottleneck"
    INSUFFICIENT_DATA = "InsufficientData"


@dataclass(frozen=True)
class CandidateCorrelation:
    """How one resource series moves with latency; `coefficient` is None when it cannot be computed."""

    name: str
    coefficient: float | None
    samples: int  # aligned samples where both series are present


@dataclass(frozen=True)
class Bottleneck:
    """The resource that explains latency, or None with the reason."""

    resource: str | None
    coefficient: float | None
    reason: BottleneckReason
    message: str
    method: Literal["spearman", "pearson"]
    candidates: tuple[CandidateCorrelation, ...]  # every candidate, strongest first: the evidence


def _average_ranks(values: FloatArray) -> FloatArray:
    """Ranks 0..n-1 with ties sharing their average rank (what Spearman's rho needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def _correlation(x: FloatArray, y: FloatArray, method: Literal["spearman", "pearson"]) -> float | None:
    if method == "spearman":
        x, y = _average_ranks(x), _average_ranks(y)
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return None if denominator == 0 else float(x @ y) / denominator


def _align(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The newest samples both series have: trailing-aligned, NaN pairs dropped."""
    n = min(a.size, b.size)
    a, b = a[a.size - n :], b[b.size - n :]
    both = ~(np.isnan(a) | np.isnan(b))
    return a[both], b[both]


def find_bottleneck(
    latency: ArrayLike,
    candidates: Mapping[str, ArrayLike],
    *,
    method: Literal["spearman", "pearson"] = "spearman",
    min_correlation: float = 0.6,
    min_samples: int = 20,
) -> Bottleneck:
    """Which resource series explains the latency, if any.

    Series are sampled on the same timestamps (one range query step) and aligned on their newest
    samples. Only a positive correlation explains latency (more throttling, more latency); the
    strongest candidate at or above `min_correlation` with at least `min_samples` aligned samples
    wins. Spearman by default: it sees any monotone relation (latency often climbs steeply once
    throttling starts) and is not moved by a single outlier.
    """
    latency_series = np.asarray(latency, dtype=np.float64).ravel()
    results: list[CandidateCorrelation] = []
    for name, series in candidates.items():
        x, y = _align(np.asarray(series, dtype=np.float64).ravel(), latency_series)
        coefficient = _correlation(x, y, method) if x.size >= min_samples else None
        results.append(CandidateCorrelation(str(name), coefficient, int(x.size)))
    results.sort(key=lambda c: -math.inf if c.coefficient is None else -c.coefficient)
    evidence = tuple(results)
    symbol = "rho" if method == "spearman" else "r"

    def answer(resource: CandidateCorrelation | None, reason: BottleneckReason, message: str) -> Bottleneck:
        return Bottleneck(
            resource.name if resource else None,
            resource.coefficient if resource else None,
            reason,
            message,
            method,
            evidence,
        )

    valid_latency = int((~np.isnan(latency_series)).sum())
    if valid_latency < min_samples:
        return answer(None, BottleneckReason.INSUFFICIENT_DATA,
                      f"not enough latency samples to correlate ({valid_latency} < {min_samples})")
    if np.nanmax(latency_series) == np.nanmin(latency_series):
        return answer(None, BottleneckReason.INSUFFICIENT_DATA,
                      "latency does not vary in the window, so correlation cannot tell what drives it")
    judged = [c for c in evidence if c.coefficient is not None]
    scarce = [c.name for c in evidence if c.samples < min_samples]
    if not judged:
        return answer(None, BottleneckReason.INSUFFICIENT_DATA,
                      f"no resource series has {min_samples} samples aligned with latency")
    best = judged[0]
    assert best.coefficient is not None
    if best.coefficient >= min_correlation:
        return answer(best, BottleneckReason.RESOURCE_BOTTLENECK,
                      f"{best.name} explains latency: {symbol}={best.coefficient:.2f} over {best.samples} samples "
                      f"(needs >= {min_correlation:g})")
    unjudged = f"; not enough samples for {', '.join(scarce)}" if scarce else ""
    return answer(None, BottleneckReason.NOT_A_RESOURCE_BOTTLENECK,
                  f"latency is not a resource bottleneck: no resource signal reaches {symbol} >= {min_correlation:g} "
                  f"(best {best.name} {symbol}={best.coefficient:.2f} over {best.samples} samples){unjudged}")


# ---------------------------------------------------------------------------------------------
# Batch analysis for the evaluation loop
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchAnalysis:
    """Per-series results of `analyse_batch`; each array has one entry per input row (NaN: too few samples)."""

    smoothed: FloatArray  # moving average of the newest `smoothing_window` samples
    slope: FloatArray  # Theil–Sen slope, units per second
    level: FloatArray  # the trend line's value now
    forecast: FloatArray  # the trend line's value `horizon` seconds from now
    confidence: FloatArray  # trend confidence 0..1 (see Trend)
    zscore: FloatArray  # robust z-score of the newest sample against the window
    anomaly: npt.NDArray[np.bool_]  # |zscore| >= anomaly_threshold
    samples: npt.NDArray[np.int64]  # valid samples per series
    time_to_crossing: FloatArray | None  # seconds until `thresholds` is crossed (NaN: not within horizon)
    horizon: float


def analyse_batch(
    values: ArrayLike,
    *,
    step: float,
    horizon: float,
    smoothing_window: int = 10,
    anomaly_threshold: float = 3.0,
    thresholds: ArrayLike | None = None,
    max_points: int = TREND_POINTS,
    min_samples: int = MIN_TREND_SAMPLES,
) -> BatchAnalysis:
    """Analyse N series x T samples at once (a 2-D array, one series per row, oldest first).

    Returns the smoothed newest value, the Theil–Sen slope and forecast with its confidence, and
    whether the newest sample is anomalous (robust z against the window). With `thresholds` (one per
    series, e.g. each policy's high-load threshold) it also returns the time until the trend
    crosses it upwards. The same code as the single-series functions, vectorised across rows; the
    cost is O(N * (T + max_points^2)), independent of Python-level loops over series.
    """
    rows = _as_rows(values)
    window = rows[:, -min(smoothing_window, rows.shape[1]) :]
    with np.errstate(invalid="ignore"):
        # nanmean warns on all-NaN windows; NaN is the documented answer there.
        smoothed = np.nansum(window, axis=-1) / (~np.isnan(window)).sum(axis=-1)
    # Chunks of rows bound the pairwise-slope temporaries (rows x max_points^2 / 2 floats, several
    # of them) to a few MB; unchunked, 10,000 series need ~250 MB at peak, which an operator pod's
    # memory limit would feel. Speed is about the same either way.
    chunks = [
        (*_theil_sen_rows(chunk, step, max_points, min_samples), *_robust_location_scale(chunk))
        for chunk in (rows[start : start + BATCH_CHUNK_ROWS] for start in range(0, rows.shape[0], BATCH_CHUNK_ROWS))
    ]
    slope, level, confidence, samples, location, scale = (np.concatenate(part) for part in zip(*chunks))
    newest = rows[:, -1]
    zscore = _zscore(newest, location, scale)
    zscore[samples < MIN_ANOMALY_SAMPLES] = np.nan
    anomaly = np.abs(np.nan_to_num(zscore)) >= anomaly_threshold
    time_to_crossing = None
    if thresholds is not None:
        limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), level.shape)
        time_to_crossing = _time_to_crossing(level, slope, limits, horizon, upward=True)
    return BatchAnalysis(
        smoothed=smoothed,
        slope=slope,
        level=level,
        forecast=level + slope * horizon,
        confidence=confidence,
        zscore=zscore,
        anomaly=anomaly,
        samples=samples,
        time_to_crossing=time_to_crossing,
        horizon=horizon,
    )


__all__ = [
    "Anomaly",
    "AnomalyReport",
    "BatchAnalysis",
    "Bottleneck",
    "BottleneckReason",
    "CandidateCorrelation",
    "Forecast",
    "ResourceSignal",
    "Trend",
    "analyse_batch",
    "detect_anomalies",
    "find_bottleneck",
    "predict_crossing",
    "theil_sen",
]
