"""Signal analysis for the evaluation loop: trends, forecasts, anomaly incidents, correlation.

This module owns the statistics kubetune applies to metric series before a decision is taken:

- `forecast_batch`, the forecaster for predictive scaling: level and trend of the segment since the
  last level shift, a damped trend, and a crossing probability calibrated on the quality harness
  (tests/bench/analysis_quality.py), so a high-load rule can step up *before* its threshold is crossed;
- `anomaly_incidents` / `detect_incident`, the anomaly detector behind the Investigate action and the
  AnomalyDetected Event: seasonal baselines (flat, daily, weekly, hourly) over up to eight days, a
  floored scale, persistence and one incident per run;
- the latency–resource correlation (`find_bottleneck`) that tells OptimizeResources which resource,
  if any, explains the latency;
- the descriptive statistics the history report uses: a robust trend (`theil_sen`, `predict_crossing`)
  and a whole-window robust z-score (`detect_anomalies`).

No smoothing here: the level a rule compares is asked of Prometheus — `rate()` over `rateWindow` is
the moving average of a counter, and `for:` is `min_over_time`/`max_over_time` over the window — so the
operator keeps no history of its own.

Everything here is a pure function of plain numbers: no I/O, no clock, no Kubernetes, no kopf.
Series are evenly spaced samples (a Prometheus range query with a fixed `step`), oldest first;
NaN marks a missing sample. Times are in seconds and "now" is the end of the window (the last
sample). Where a result cannot be computed (too few samples) it is NaN, never an exception, because
the evaluation loop must go on for every other series. The batch functions take one series per row;
their single-series forms run the same code on a one-row array, so the two cannot disagree.
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
# Forecast for predictive scaling: level and trend since the last level shift
# ---------------------------------------------------------------------------------------------

# The forecaster looks at the last hour (one, two and three were measured on the harness: one was
# best at both horizons); longer series are averaged into at most
# FORECAST_POINTS blocks first (the cost stays O(points) per series, and block means remove noise).
FORECAST_WINDOW_SECONDS = 3_600
FORECAST_POINTS = 120
MIN_SEGMENT_POINTS = 8  # a level after a level shift is fitted on at least this many points
# A slope is extrapolated only when it is fitted on at least this many points and lies TREND_MIN_Z
# standard errors from zero, the errors widened for correlated residuals (below); otherwise the
# forecast is the segment's level. The soak found both failures: eight noisy points after a level shift
# read as "+34 points/min", and a 10 s rate of a 16 s square wave (its residuals follow each other)
# as a trend at z > 3 with the textbook standard error.
MIN_SLOPE_POINTS = 20
TREND_MIN_Z = 3.0
# After a level shift the new segment's slope also needs this much time: at a 2 s step, 20 points are
# 40 s, in which noise that changes every few seconds (rate() smooths it into runs) often lines up.
MIN_SLOPE_SECONDS_AFTER_SHIFT = 60.0
# A trend reaching further than this many times the span it was fitted on is doubted in proportion
# to the reach (TREND_DOUBT x reach / (EXTRAPOLATION_SPANS x span)): a minute of slope says little
# about the next quarter of an hour, but a strong half-hour ramp says something about the next hour.
# (It was a hard cap, which kept every young ramp from a 1-hour horizon.)
EXTRAPOLATION_SPANS = 2.0
# Correlated residuals carry less information than as many independent ones: the slope's variance is
# multiplied by (1 + r) / (1 - r), r the lag-1 autocorrelation of the residuals (the AR(1) variance
# inflation), with r at most MAX_RESIDUAL_CORRELATION so that a perfect fit does not divide by zero.
MAX_RESIDUAL_CORRELATION = 0.95
# The trend is damped: it is believed for TREND_HALF_LIFE_SECONDS, then fades (damped Holt's idea:
# trends in load do not go on forever, and an undamped line is the usual cause of false alarms).
# Chosen on the harness (seed 99): 1 h kept ramps 40-60 min before their crossing from a 1-hour
# forecast (recall 0.53 at 1 h); 1.5 and 3 h gave the best F1 at 1 h and 3 h the more recall; longer
# ones more false alarms on ramps that level off below the threshold.
TREND_HALF_LIFE_SECONDS = 3 * 3_600.0
# Predictive spread, in units of the fit's residual sigma: the uncertainty of the fitted line at the
# horizon, plus OBSERVATION_SHARE of one sample's noise (the rule needs a level held for minutes, not
# one sample), plus TREND_DOUBT x the extrapolated change (the trend itself may end).
OBSERVATION_SHARE = 0.3
TREND_DOUBT = 0.35
# The rule's condition is a level held for minutes: a forecast level must clear the threshold by this
# share of the sample noise. Without it a fast square wave whose mean is just under the threshold
# (samples 40 points either side) got probability 0.2 from its noise alone (harness seeds 99 and 100).
HELD_NOISE_SHARE = 0.25
# Platt scaling of the normal model's score (forecast beyond the threshold, in spreads) into a
# probability that came true as often as it says on the harness: fitted by
# `python tests/bench/analysis_quality.py --calibrate` on a seed the reported figures do not use.
CONFIDENCE_SLOPE = 1.380
CONFIDENCE_OFFSET = -1.252
FORECAST_MIN_CONFIDENCE = 0.2


def forecast_window(step: float) -> int:
    """Samples of history `forecast_batch` uses at `step` seconds (more are ignored)."""
    return max(1, math.ceil(FORECAST_WINDOW_SECONDS / step))


@dataclass(frozen=True)
class ForecastBatch:
    """Per-series results of `forecast_batch` (one entry per row; NaN: too few samples)."""

    level: FloatArray  # the fitted level now
    slope: FloatArray  # per second, extrapolated: 0 for a fresh step or a trend below TREND_MIN_Z
    slope_z: FloatArray  # slope / its standard error (widened for correlated residuals): how sure it is
    value_at_horizon: FloatArray  # the damped forecast at the horizon
    spread: FloatArray  # the forecast's standard deviation at the horizon
    shift_samples_ago: npt.NDArray[np.int64]  # samples since the level shift used (-1: none found)
    crossing_probability: FloatArray  # calibrated P(the rule's condition begins within the horizon); NaN without thresholds
    will_cross: npt.NDArray[np.bool_]  # crossing_probability >= min_confidence
    horizon: float


def _segment_sums(rows: FloatArray, weights: FloatArray) -> list[FloatArray]:
    """Cumulative sums (with a leading 0) of w, wt, wt^2, wy, wty, wy^2 along each row."""
    t = np.arange(rows.shape[-1], dtype=np.float64)
    y = np.where(weights > 0, rows, 0.0)
    terms = [weights, weights * t, weights * t * t, y, y * t, y * y]
    return [np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(term, axis=-1)], axis=-1) for term in terms]


def _line_fit(sums: list[FloatArray], start: npt.NDArray[np.int64], stop: npt.NDArray[np.int64]
              ) -> tuple[FloatArray, ...]:
    """Least squares lines on samples [start, stop) (index arrays of one shape, rows first):
    n, mean t, Sxx, slope, mean y, SSE of the line, SSE of a flat level."""
    n, st, stt, sy, sty, syy = (np.take_along_axis(c, stop, -1) - np.take_along_axis(c, start, -1) for c in sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t, mean_y = st / n, sy / n
        sxx = stt - st * mean_t
        sxy = sty - st * mean_y
        syy_c = syy - sy * mean_y
        slope = np.where(sxx > 0, sxy / sxx, 0.0)
        sse = np.fmax(syy_c - slope * sxy, 0.0)
    return n, mean_t, sxx, slope, mean_y, sse, np.fmax(syy_c, 0.0)


def forecast_batch(
    values: ArrayLike,
    *,
    step: float,
    horizon: float,
    thresholds: ArrayLike | None = None,
    direction: Literal["above", "below"] = "above",
    min_confidence: float = FORECAST_MIN_CONFIDENCE,
) -> ForecastBatch:
    """Where each series (rows, oldest first) will be in `horizon` seconds, and how likely it crosses.

    1. Level shifts: the window is fitted three ways — one line; a line, a break, a new line (at
       least MIN_SLOPE_POINTS and MIN_SLOPE_SECONDS_AFTER_SHIFT long); a line, a break and a flat new
       level (a step in the last few samples) — and BIC picks one. A step is thereby a new level, not
       a steep trend.
    2. Level and trend: the least-squares line of the segment since the chosen break gives the level
       now and the slope, if the slope is TREND_MIN_Z standard errors from zero (widened for
       correlated residuals); otherwise the segment's mean is the level and there is no trend. The
       slope is damped with a half-life of TREND_HALF_LIFE_SECONDS (damped trend, as in damped Holt);
       reaching past EXTRAPOLATION_SPANS times the segment's span, it is doubted in proportion.
    3. Confidence: the forecast's distance beyond the threshold, less HELD_NOISE_SHARE of the sample
       noise (the rule needs a level held), in units of its spread (the fitted line's uncertainty at
       the horizon, OBSERVATION_SHARE of the sample noise and TREND_DOUBT x the extrapolated change,
       more past EXTRAPOLATION_SPANS), turned into a probability by Platt scaling fitted on the quality harness
       (CONFIDENCE_SLOPE, CONFIDENCE_OFFSET; tests/bench/analysis_quality.py prints how often each
       confidence band came true). `will_cross` = probability >= `min_confidence`.
    `thresholds`: one per row or a scalar; without them only the forecast is computed.
    """
    rows = _as_rows(values)
    rows = rows[:, -forecast_window(step):]
    n_series, length = rows.shape
    block = max(1, math.ceil(length / FORECAST_POINTS))
    if block > 1:
        usable = (length // block) * block
        kept = rows[:, length - usable :].reshape(n_series, -1, block)
        present = ~np.isnan(kept)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.where(present, kept, 0.0).sum(axis=-1) / present.sum(axis=-1)  # NaN: an empty block
        length = rows.shape[1]
    point_step = step * block
    weights = (~np.isnan(rows)).astype(np.float64)
    sums = _segment_sums(rows, weights)
    valid = weights.sum(axis=-1)
    rows_index = np.arange(n_series)

    # Model 0: one line over the window.
    whole = _line_fit(sums, np.zeros((n_series, 1), dtype=np.int64), np.full((n_series, 1), length, dtype=np.int64))
    # Models 1 and 2: a line, a break before sample s, then a line (s <= length - m) or, for a step in
    # the last m samples, a flat level. BIC (parameters: 2 for one line, 5 and 4 with a break) decides.
    m = MIN_SEGMENT_POINTS
    breaks = np.arange(m, max(m, length), dtype=np.int64)
    start = np.ascontiguousarray(np.broadcast_to(breaks, (n_series, breaks.size)))
    prefix = _line_fit(sums, np.zeros_like(start), start)
    suffix = _line_fit(sums, start, np.full_like(start, length))
    slope_points = max(MIN_SLOPE_POINTS, math.ceil(MIN_SLOPE_SECONDS_AFTER_SHIFT / point_step))
    line_suffix = breaks <= length - slope_points  # a shorter new segment is a level, not a trend
    sse_break = prefix[5] + np.where(line_suffix, suffix[5], suffix[6])
    params = np.where(line_suffix, 5, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        bic_whole = valid * np.log(np.fmax(whole[5][:, 0], 1e-12) / valid) + 2 * np.log(valid)
        bic_break = valid[:, None] * np.log(np.fmax(sse_break, 1e-12) / valid[:, None]) + params * np.log(valid)[:, None]
    bic_break = np.where(np.isfinite(bic_break) & (prefix[0] >= 2) & (suffix[0] >= 1), bic_break, np.inf)
    if breaks.size:
        choice = np.argmin(bic_break, axis=-1)
        use_break = bic_break[rows_index, choice] < bic_whole
    else:
        choice, use_break = np.zeros(n_series, dtype=np.int64), np.zeros(n_series, bool)

    def chosen(of_suffix: FloatArray, of_whole: FloatArray) -> FloatArray:
        return np.where(use_break, of_suffix[rows_index, choice] if breaks.size else 0.0, of_whole[:, 0])

    n, mean_t, sxx, slope, mean_y = (chosen(a_, b_) for a_, b_ in zip(suffix[:5], whole[:5]))
    flat = use_break & ~line_suffix[choice] if breaks.size else np.zeros(n_series, bool)
    slope = np.where(flat, 0.0, slope)
    sse = chosen(sse_break, whole[5])
    dof = np.fmax(valid - np.where(use_break, params[choice] if breaks.size else 2, 2), 1)
    sigma = np.sqrt(sse / dof)
    now = length - 1.0
    # The segment's residuals, for their lag-1 autocorrelation (see MAX_RESIDUAL_CORRELATION).
    segment_start = np.where(use_break, breaks[choice] if breaks.size else 0, 0)
    t = np.arange(length, dtype=np.float64)
    in_segment = (t >= segment_start[:, None]) & (weights > 0)
    residuals = np.where(in_segment, rows - (mean_y[:, None] + slope[:, None] * (t - mean_t[:, None])), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lag1 = (residuals[:, 1:] * residuals[:, :-1]).sum(-1) / (residuals**2).sum(-1)
    r = np.clip(np.nan_to_num(lag1), 0.0, MAX_RESIDUAL_CORRELATION)
    inflation = (1 + r) / (1 - r)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_z = np.where((sxx > 0) & ~flat, slope * np.sqrt(sxx) / (sigma * np.sqrt(inflation)), 0.0)
    trending = ~flat & (n >= MIN_SLOPE_POINTS) & (np.abs(slope_z) >= TREND_MIN_Z)
    # Without a trend the segment is one level: its mean, with the noise of a flat fit there.
    flat_sse = chosen(prefix[5] + suffix[6], whole[6])
    flat_sigma = np.sqrt(flat_sse / np.fmax(valid - np.where(use_break, 4, 1), 1))
    sigma = np.where(trending, sigma, flat_sigma)
    slope = np.where(trending, slope, 0.0)
    level = mean_y + slope * (now - mean_t)
    ahead = horizon / point_step
    phi = 0.5 ** (point_step / TREND_HALF_LIFE_SECONDS)
    damped = ahead if phi >= 1 else phi * (1 - phi**ahead) / (1 - phi)
    reach = damped
    beyond = np.fmax(reach / (EXTRAPOLATION_SPANS * np.fmax(n, 1)), 1.0)  # see EXTRAPOLATION_SPANS
    change = slope * reach
    forecast = level + change
    with np.errstate(divide="ignore", invalid="ignore"):
        ahead_of_line = np.where(trending & (sxx > 0), (now + reach - mean_t) ** 2 / sxx, 0.0)
        line_var = sigma**2 * inflation * (1 / n + ahead_of_line)
    spread = np.sqrt(line_var + OBSERVATION_SHARE * sigma**2 + (TREND_DOUBT * beyond * change) ** 2)
    scarce = valid < MIN_TREND_SAMPLES * 2
    for array in (level, slope, slope_z, forecast, spread):
        array[scarce] = np.nan
    probability = np.full(n_series, np.nan)
    will_cross = np.zeros(n_series, bool)
    if thresholds is not None:
        limit = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_series,))
        gap = forecast - limit if direction == "above" else limit - forecast
        gap = gap - HELD_NOISE_SHARE * sigma  # the rule's condition is a level held, not one noisy sample
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(spread > 0, gap / spread, np.where(gap >= 0, np.inf, -np.inf))
        probability = 1 / (1 + np.exp(-np.clip(CONFIDENCE_SLOPE * score + CONFIDENCE_OFFSET, -50, 50)))
        probability[scarce] = np.nan
        will_cross = np.nan_to_num(probability) >= min_confidence
    shift = np.where(use_break, (length - breaks[choice]) * block if breaks.size else -1, -1)
    return ForecastBatch(level=level, slope=slope / point_step, slope_z=slope_z, value_at_horizon=forecast,
                         spread=spread, shift_samples_ago=shift.astype(np.int64), crossing_probability=probability,
                         will_cross=will_cross, horizon=horizon)


# ---------------------------------------------------------------------------------------------
# Incident detection: what the evaluation loop asks each cycle
# ---------------------------------------------------------------------------------------------

# How far back the detector looks: eight days and two hours, so that a weekly baseline (the same time
# a week ago) exists for a whole reference day plus the recent samples.
DETECTOR_HISTORY_SECONDS = 8 * 86_400 + 2 * 3_600
# The reference the newest samples are judged against: the day before them.
REFERENCE_SECONDS = 86_400
REFERENCE_POINTS = 288
# The newest samples replayed to know whether an incident is open now (the incident state is a
# function of the window, so the operator keeps no state and a restart loses nothing).
RECENT_SECONDS = 2 * 3_600
DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS
SEASONAL_DAYS = 7  # the daily baseline is the median of the same time on up to 7 previous days
# A seasonal baseline is used only when it explains the reference clearly better than a flat one.
SEASONAL_GAIN = 0.8
MIN_REFERENCE_SAMPLES = 12
# The 1st and 99th percentiles are 2.326 sigmas from the median for normal data, the quartiles 1.349 apart.
TAIL_TO_SIGMA = 2.326
IQR_TO_SIGMA = 1.349
HOUR_SECONDS = 3_600
HOURLY_LAGS = 6  # the hourly baseline: the same minute in up to 6 previous hours
# Persistence and hysteresis, in samples of the series' own step (see anomaly_incidents).
OPEN_SAMPLES = 2
SPIKE_FACTOR = 2.5
EXIT_FACTOR = 2 / 3
CLOSE_SAMPLES = 6
INCIDENT_CHUNK_ROWS = 512


def detector_window(step: float) -> int:
    """Samples of history `anomaly_incidents` uses at `step` seconds (more are ignored)."""
    return max(1, math.ceil(DETECTOR_HISTORY_SECONDS / step))


@dataclass(frozen=True)
class IncidentBatch:
    """Per-series results of `anomaly_incidents` (one entry per row)."""

    active: npt.NDArray[np.bool_]  # an incident is open at the newest sample
    opened: npt.NDArray[np.int64]  # samples since the open incident began (-1: none open)
    zscore: FloatArray  # the newest sample's deviation in (floored) robust standard deviations
    expected: FloatArray  # what the baseline expected for the newest sample
    scale: FloatArray  # the floored robust sigma used
    baseline: npt.NDArray[np.int64]  # 0 flat (the reference day's median), 1 daily, 2 weekly, 3 hourly; -1 not judged


BASELINE_NAMES = ("the median of the previous day", "the same time on previous days", "the same time a week ago",
                  "the same minute of previous hours")


def _order_statistics(values: FloatArray, quantiles: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """The given quantiles (nearest rank) of the valid values along the last axis, and the valid counts.

    One sort per row — numpy's SIMD sort beats `partition` and `median` on rows of a few hundred — and
    NaN sorts last, so the ranks simply count valid values only; NaN where a row has none.
    """
    ordered = np.sort(values, axis=-1)
    valid = (~np.isnan(ordered)).sum(axis=-1)
    ranks = np.round(quantiles * np.fmax(valid[..., None] - 1, 0)).astype(np.int64)
    stats = np.take_along_axis(ordered, ranks, axis=-1)
    return np.where(valid[..., None] > 0, stats, np.nan), valid


def _median_of_few(slices: list[FloatArray]) -> FloatArray:
    """Elementwise median across a few equally shaped arrays without NaN: an odd-even transposition
    sorting network with in-place min/max, ~2x faster than sorting a short last axis row by row.
    The arrays are sorted in place (the caller's own temporaries)."""
    v = list(slices)
    spare = np.empty_like(v[0])
    for rank in range(len(v)):
        for i in range(rank % 2, len(v) - 1, 2):
            np.minimum(v[i], v[i + 1], out=spare)
            np.maximum(v[i], v[i + 1], out=v[i + 1])
            v[i], spare = spare, v[i]
    half = len(v) // 2
    return v[half] if len(v) % 2 else 0.5 * (v[half - 1] + v[half])


def _seasonal_expectation(rows: FloatArray, positions: npt.NDArray[np.int64], lags: list[int],
                          min_valid: int) -> FloatArray | None:
    """Per position, the median of the samples `lags` earlier (NaN with fewer than `min_valid` of
    them in the window); None when no lag fits in the window at all."""
    lags = [lag for lag in lags if lag <= positions[-1]]
    if not lags:
        return None
    slices = []
    for lag in lags:
        index = positions - lag
        lagged = rows[:, np.clip(index, 0, None)]
        lagged[:, index < 0] = np.nan
        slices.append(lagged)
    missing = np.zeros(slices[0].shape, dtype=np.int64)
    for lagged in slices:
        missing += np.isnan(lagged)
    gappy = missing > 0
    originals = [lagged[gappy] for lagged in slices] if gappy.any() else []
    expected = _median_of_few(slices)
    if gappy.any():
        # NaN does not order under min/max: positions with a missing lag sort their few valid values.
        ordered = np.sort(np.stack(originals, axis=-1), axis=-1)
        valid = len(slices) - missing[gappy][:, None]
        low = np.take_along_axis(ordered, np.fmax(valid - 1, 0) // 2, axis=-1)
        high = np.take_along_axis(ordered, np.fmax(valid // 2, 0), axis=-1)
        expected[gappy] = np.where(valid[:, 0] >= max(1, min_valid), 0.5 * (low + high)[:, 0], np.nan)
    return expected


RESIDUAL_QUANTILES = np.array([1 - 0.99, 0.25, 0.5, 0.75, 0.99])


def _residual_scale(residuals: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Median and sigma of each row of reference residuals, and the valid-sample count.

    The sigma is the larger of the interquartile range's (/1.349) and the tail's: the larger of the
    distances from the median to the 1st and 99th percentiles, / 2.326 — what they are for normal
    data. The quartiles alone ignore whatever happens in fewer than a quarter of the samples (an
    hourly job, heavy-tailed bursts), which would then be flagged every time it recurs.
    """
    stats, valid = _order_statistics(residuals, RESIDUAL_QUANTILES)
    low, q1, median, q3, high = np.moveaxis(stats, -1, 0)
    sigma = np.fmax((q3 - q1) / IQR_TO_SIGMA, np.fmax(high - median, median - low) / TAIL_TO_SIGMA)
    return median, sigma, valid


def _incident_rows(rows: FloatArray, step: float, threshold: float, floor_absolute: float, floor_relative: float,
                   direction: str) -> tuple[FloatArray, ...]:
    """anomaly_incidents on one chunk of rows; the arrays of IncidentBatch, in its order."""
    n_series, length = rows.shape
    recent = max(OPEN_SAMPLES, min(math.ceil(RECENT_SECONDS / step), length // 4))
    reference_length = min(math.ceil(REFERENCE_SECONDS / step), length - recent)
    # The reference is thinned to at most REFERENCE_POINTS samples (every 5-minute sample of a day; a
    # 15-second series is thinned): a heavy tail needs that many samples for stable 1st and 99th percentiles.
    stride = max(1, math.ceil(reference_length / REFERENCE_POINTS))
    reference_positions = np.arange(length - recent - 1, length - recent - reference_length - 1, -stride)[::-1]
    reference_length = reference_positions.size
    positions = np.concatenate([reference_positions, np.arange(length - recent, length)])
    judged = rows[:, positions]
    observed = judged[:, reference_length:]
    day, week, hour = round(DAY_SECONDS / step), round(WEEK_SECONDS / step), round(HOUR_SECONDS / step)
    expectations: list[tuple[int, FloatArray]] = [(0, np.zeros_like(judged))]
    for kind, lags, min_valid in ((1, [k * day for k in range(1, SEASONAL_DAYS + 1)], 2),
                                  (2, [week - 1, week, week + 1], 1),
                                  (3, [k * hour for k in range(1, HOURLY_LAGS + 1)] if hour >= 2 else [], 2)):
        expected = _seasonal_expectation(rows, positions, lags, min_valid)
        if expected is not None:
            expectations.append((kind, expected))

    level = _nanmedian(judged[:, :reference_length])
    fits = []
    for kind, expected in expectations:
        location, sigma, valid = _residual_scale((judged - expected)[:, :reference_length])
        usable = valid >= max(MIN_REFERENCE_SAMPLES, reference_length // 2)
        fits.append((kind, expected[:, reference_length:] + location[:, None], np.where(usable, sigma, np.inf)))
    best_sigma = np.min([sigma for _, _, sigma in fits], axis=0)
    judged_rows = np.isfinite(best_sigma)
    z_all, expected_all, scale_all = [], [], []
    for _, expected, sigma in fits:
        # Candidates close to the best one all get a say, and the sample must be unusual for each of
        # them: last week's Saturday explains this Saturday even when yesterday was a weekday.
        good = sigma <= best_sigma / SEASONAL_GAIN
        floor = np.maximum(floor_relative * np.fmax(np.abs(level)[:, None], np.abs(expected)), floor_absolute)
        scale = np.fmax(np.where(np.isfinite(sigma), sigma, np.nan)[:, None], floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(scale > 0, (observed - expected) / scale, 0.0)
        z_all.append(np.where(good[:, None] & ~np.isnan(z), z, np.inf))
        expected_all.append(expected)
        scale_all.append(scale)
    stacked = np.stack(z_all)  # candidates x series x recent
    pick = np.argmin(np.abs(stacked), axis=0)
    z = np.take_along_axis(stacked, pick[None], axis=0)[0]
    z = np.where(np.isfinite(z), z, np.nan)
    if direction == "above":
        z = np.fmax(z, 0.0)
    elif direction == "below":
        z = np.fmin(z, 0.0)

    active = np.zeros(n_series, bool)
    opened = np.full(n_series, -1, dtype=np.int64)
    streak = np.zeros(n_series, dtype=np.int64)  # consecutive same-sign exceedances, signed
    quiet = np.zeros(n_series, dtype=np.int64)
    for i in range(recent):
        zi = np.nan_to_num(z[:, i])
        sign = (np.sign(zi) * (np.abs(zi) >= threshold)).astype(np.int64)
        streak = np.where((sign != 0) & (np.sign(streak) == sign), streak + sign, sign)
        opens = ~active & ((np.abs(streak) >= OPEN_SAMPLES) | (np.abs(zi) >= SPIKE_FACTOR * threshold))
        quiet = np.where(np.abs(zi) < EXIT_FACTOR * threshold, quiet + 1, 0)
        active = (active | opens) & ~(active & (quiet >= CLOSE_SAMPLES))
        opened = np.where(opens, recent - 1 - i, np.where(active, opened, -1))
    active &= judged_rows
    newest = pick[:, -1]
    series_index = np.arange(n_series)
    kinds = np.array([kind for kind, _, _ in fits])
    return (active, np.where(active, opened, -1),
            np.where(judged_rows, z[:, -1], np.nan),
            np.where(judged_rows, np.stack(expected_all)[newest, series_index, -1], np.nan),
            np.where(judged_rows, np.stack(scale_all)[newest, series_index, -1], np.nan),
            np.where(judged_rows, kinds[newest], -1))


def anomaly_incidents(
    values: ArrayLike,
    *,
    step: float,
    threshold: float = 3.0,
    floor_absolute: float = 0.0,
    floor_relative: float = 0.05,
    direction: Literal["both", "above", "below"] = "both",
) -> IncidentBatch:
    """Whether an anomaly incident is open at the newest sample of each series (rows, oldest first).

    1. Reference: the day before the newest RECENT_SECONDS (less when the window is shorter). Up to
       four baselines are fitted to it: flat (its median), daily (per sample the median of the same
       time on up to 7 previous days), weekly (the same time a week ago, median of 3 neighbouring
       samples) and hourly (the same minute of up to 6 previous hours), each shifted by the median of
       its reference residuals; a baseline whose lags do not fit in the window is not tried.
    2. Every baseline whose residual sigma is within 1/SEASONAL_GAIN of the best one's judges the
       recent samples, and the least surprised one speaks: a sample is anomalous only if no good
       explanation of the history expects it. Seasonality is thereby used whenever the history covers
       it and the data show it.
    3. Scale with a floor: the residual sigma (the larger of the interquartile range's and the tails',
       see `_residual_scale`), but at least `floor_relative` x the level and `floor_absolute` (the
       metric's resolution), so a near-constant series has no microscopic sigma and a lightly loaded
       one is still judged relative to its own level.
    4. Persistence and one incident per run, replayed over the newest samples: an incident opens when
       OPEN_SAMPLES consecutive samples deviate by `threshold` sigmas in the same direction, or one
       sample by SPIKE_FACTOR x `threshold`; it closes after CLOSE_SAMPLES consecutive samples within
       EXIT_FACTOR x `threshold`. `active` is the state at the newest sample, a function of the window
       alone: the operator keeps no state, and the Event fires once when the state turns true.

    Rows are processed in chunks of INCIDENT_CHUNK_ROWS to bound the temporaries (series x judged
    samples x 7 lags).
    """
    rows = _as_rows(values)
    rows = rows[:, -detector_window(step):]
    parts = [_incident_rows(rows[start : start + INCIDENT_CHUNK_ROWS], step, threshold, floor_absolute,
                            floor_relative, direction)
             for start in range(0, rows.shape[0], INCIDENT_CHUNK_ROWS)]
    active, opened, zscore, expected, scale, baseline = (np.concatenate(part) for part in zip(*parts))
    return IncidentBatch(active=active, opened=opened, zscore=zscore, expected=expected, scale=scale,
                         baseline=baseline.astype(np.int64))


@dataclass(frozen=True)
class Incident:
    """The anomaly state of one signal at its newest sample, with the sentence for the evidence."""

    active: bool
    value: float
    expected: float
    zscore: float
    started_samples_ago: int | None
    explanation: str


def detect_incident(
    values: ArrayLike,
    *,
    step: float,
    threshold: float = 3.0,
    floor_absolute: float = 0.0,
    floor_relative: float = 0.05,
    direction: Literal["both", "above", "below"] = "both",
    name: str = "value",
) -> Incident:
    """`anomaly_incidents` for one series, with an explanation naming the signal and its baseline."""
    series = np.asarray(values, dtype=np.float64).ravel()
    result = anomaly_incidents(series, step=step, threshold=threshold, floor_absolute=floor_absolute,
                               floor_relative=floor_relative, direction=direction)
    value, expected, z = float(series[-1]) if series.size else math.nan, float(result.expected[0]), float(result.zscore[0])
    if result.baseline[0] < 0:
        return Incident(False, value, math.nan, math.nan, None,
                        f"{name}: not enough history to judge ({int((~np.isnan(series)).sum())} samples)")
    since = int(result.opened[0]) if result.active[0] else None
    explanation = (
        f"{name} {value:.4g} is {abs(z):.1f} robust standard deviations {'above' if z > 0 else 'below'} "
        f"{BASELINE_NAMES[int(result.baseline[0])]} (expected {expected:.4g}, sigma {result.scale[0]:.3g})"
        + (f"; incident open for {since * step / 60:.0f} min" if since is not None else "")
    )
    return Incident(bool(result.active[0]), value, expected, z, since, explanation)


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


__all__ = [
    "Anomaly",
    "AnomalyReport",
    "Bottleneck",
    "BottleneckReason",
    "CandidateCorrelation",
    "Forecast",
    "ForecastBatch",
    "Incident",
    "IncidentBatch",
    "ResourceSignal",
    "Trend",
    "anomaly_incidents",
    "detect_anomalies",
    "detect_incident",
    "detector_window",
    "find_bottleneck",
    "forecast_batch",
    "forecast_window",
    "predict_crossing",
    "theil_sen",
]
