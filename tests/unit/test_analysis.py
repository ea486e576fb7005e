"""kubetune.analysis on generated series whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from kubetune.analysis import (
    FORECAST_MIN_CONFIDENCE,
    BottleneckReason,
    ResourceSignal,
    anomaly_incidents,
    detect_anomalies,
    detect_incident,
    detector_window,
    find_bottleneck,
    forecast_batch,
    predict_crossing,
    theil_sen,
)

pytestmark = pytest.mark.unit

STEP = 15.0  # seconds between samples, as a Prometheus range query with step=15s
SAMPLES = 300


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def ramp(slope_per_second: float, noise: float, seed: int = 7, start: float = 50.0) -> np.ndarray:
    t = np.arange(SAMPLES) * STEP
    return start + slope_per_second * t + rng(seed).normal(0.0, noise, SAMPLES)


# --- trend -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slope", "noise"),
    [(0.02, 1.0), (-0.01, 2.0), (0.005, 0.5), (0.05, 5.0)],
    ids=["rising", "falling", "gentle", "steep-and-noisy"],
)
def test_theil_sen_recovers_a_known_slope(slope: float, noise: float) -> None:
    trend = theil_sen(ramp(slope, noise), STEP)
    assert trend.slope == pytest.approx(slope, rel=0.1)
    assert trend.level == pytest.approx(50.0 + slope * (SAMPLES - 1) * STEP, abs=3 * noise)
    assert trend.confidence > 0.8
    assert trend.samples == SAMPLES


def test_theil_sen_ignores_outliers_that_would_tilt_least_squares() -> None:
    values = ramp(0.01, 0.5)
    values[-20:] += 200.0  # a burst of garbage at the end, where it tilts least squares the most
    assert theil_sen(values, STEP).slope == pytest.approx(0.01, rel=0.15)
    assert np.polyfit(np.arange(SAMPLES) * STEP, values, 1)[0] > 0.02


def test_theil_sen_matches_the_textbook_definition_on_a_short_series() -> None:
    values = rng(3).normal(size=25).cumsum()
    pairs = [(values[j] - values[i]) / (j - i) for i, j in itertools.combinations(range(25), 2)]
    assert theil_sen(values).slope == pytest.approx(float(np.median(pairs)))


@pytest.mark.parametrize(
    "values",
    [np.full(SAMPLES, 42.0), rng(11).normal(50.0, 5.0, SAMPLES), rng(12).uniform(0.0, 100.0, SAMPLES)],
    ids=["flat", "gaussian-noise", "uniform-noise"],
)
def test_no_trend_has_low_confidence_and_predicts_no_crossing(values: np.ndarray) -> None:
    forecast = predict_crossing(values, threshold=120.0, horizon=900.0, step=STEP)
    assert forecast.confidence < 0.3
    assert forecast.time_to_crossing is None
    assert not forecast.will_cross


@pytest.mark.parametrize(
    "values",
    [np.array([1.0, 2.0, 3.0]), np.full(SAMPLES, np.nan), np.array([])],
    ids=["three-points", "all-nan", "empty"],
)
def test_too_few_samples_give_nan_and_no_action(values: np.ndarray) -> None:
    forecast = predict_crossing(values, threshold=1.0, horizon=60.0)
    assert math.isnan(forecast.trend.slope)
    assert forecast.confidence == 0.0
    assert forecast.time_to_crossing is None and not forecast.will_cross
    assert "not enough samples" in forecast.explanation


def test_trend_survives_missing_samples() -> None:
    values = ramp(0.02, 1.0)
    values[rng(5).choice(SAMPLES, 60, replace=False)] = np.nan
    trend = theil_sen(values, STEP)
    assert trend.slope == pytest.approx(0.02, rel=0.1)
    assert trend.samples == SAMPLES - 60


# --- predictive scaling ----------------------------------------------------------------------


def test_rising_load_is_predicted_to_cross_before_it_does() -> None:
    # CPU at ~60 % rising 0.02 %/s: 80 % is about 15 min away when the window ends at ~80 - 20.
    values = ramp(0.02, 1.0, start=60.0 - 0.02 * (SAMPLES - 1) * STEP)
    forecast = predict_crossing(values, threshold=80.0, horizon=1200.0, step=STEP)
    assert values[-10:].max() < 80.0  # the high-load rule would not fire yet
    assert forecast.will_cross
    assert forecast.time_to_crossing == pytest.approx(1000.0, rel=0.1)
    assert forecast.value_at_horizon == pytest.approx(84.0, abs=2.0)
    assert "crosses 80" in forecast.explanation


def test_crossing_beyond_the_horizon_is_not_acted_on() -> None:
    values = ramp(0.02, 1.0, start=60.0 - 0.02 * (SAMPLES - 1) * STEP)
    forecast = predict_crossing(values, threshold=80.0, horizon=300.0, step=STEP)
    assert forecast.time_to_crossing is None and not forecast.will_cross


def test_a_series_already_beyond_the_threshold_crosses_now() -> None:
    forecast = predict_crossing(ramp(0.01, 0.5, start=90.0), threshold=80.0, horizon=60.0, step=STEP)
    assert forecast.time_to_crossing == 0.0


def test_falling_series_crosses_below() -> None:
    values = ramp(-0.02, 1.0, start=30.0 + 0.02 * (SAMPLES - 1) * STEP)
    forecast = predict_crossing(values, threshold=20.0, horizon=900.0, step=STEP, direction="below")
    assert forecast.will_cross
    assert forecast.time_to_crossing == pytest.approx(500.0, rel=0.15)


def test_a_weak_trend_below_min_confidence_is_reported_but_not_acted_on() -> None:
    values = ramp(0.002, 8.0, seed=2)
    forecast = predict_crossing(values, threshold=60.0, horizon=3600.0, step=STEP, min_confidence=0.95)
    assert forecast.time_to_crossing is not None
    assert not forecast.will_cross
    assert "below the 0.95 needed to act" in forecast.explanation


# --- anomalies -------------------------------------------------------------------------------

PERIOD = 48  # samples per "day"
PEAK_PHASE = 20


def seasonal_series(seed: int = 7, periods: int = 6, noise: str = "gaussian") -> np.ndarray:
    """A quiet baseline with a sharp daily peak (a nightly batch job) and noise."""
    phase = np.arange(PERIOD * periods) % PERIOD
    peak = 80.0 * np.exp(-0.5 * ((phase - PEAK_PHASE) / 1.5) ** 2)
    r = rng(seed)
    jitter = r.normal(0.0, 2.0, phase.size) if noise == "gaussian" else r.uniform(-3.0, 3.0, phase.size)
    return 100.0 + peak + jitter


PEAK_PHASES = set(range(PEAK_PHASE - 4, PEAK_PHASE + 5))


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_seasonal_baseline_finds_the_injected_anomaly_and_not_the_daily_peak(noise: str) -> None:
    values = seasonal_series(noise=noise)
    injected = 5 * PERIOD + 35  # last day, far from the peak
    values[injected] += 40.0
    report = detect_anomalies(values, period=PERIOD, name="latencyP95Ms")
    strongest = max(report.anomalies, key=lambda a: abs(a.zscore))
    assert strongest.index == injected
    assert not {a.index % PERIOD for a in report.anomalies} & PEAK_PHASES
    if noise == "uniform":
        # Bounded noise never reaches 3 robust SDs, so the answer is exact; Gaussian noise has a
        # 0.27 % tail per sample, which may add a stray flag (documented in docs/analysis.md).
        assert [a.index for a in report.anomalies] == [injected]
    assert strongest.deviation == pytest.approx(40.0, abs=6.0)
    assert strongest.zscore > 3.0
    assert strongest.explanation.startswith(f"latencyP95Ms {values[injected]:.4g} at sample {injected}")
    assert "seasonal baseline" in strongest.explanation
    assert report.is_anomalous(injected) and not report.is_anomalous(-1)


def test_without_a_season_the_daily_peak_is_flagged() -> None:
    # The reason for the seasonal baseline: a plain robust z-score calls every nightly peak an anomaly.
    report = detect_anomalies(seasonal_series())
    assert {a.index % PERIOD for a in report.anomalies} <= PEAK_PHASES
    assert PEAK_PHASE in {a.index % PERIOD for a in report.anomalies}


def test_seasonal_detection_skips_samples_without_enough_history() -> None:
    values = seasonal_series(periods=3)
    values[10] += 500.0  # in the first period: no history to compare with
    report = detect_anomalies(values, period=PERIOD, min_periods=2)
    assert report.evaluated == PERIOD  # only the third period has two periods before it
    assert not report.is_anomalous(10)


def test_a_spike_is_found_by_the_robust_zscore() -> None:
    values = rng().normal(100.0, 2.0, SAMPLES)
    values[-1] = 130.0
    report = detect_anomalies(values)
    assert report.is_anomalous(-1)
    assert report.anomalies[-1].expected == pytest.approx(100.0, abs=1.0)
    assert "above the median" in report.anomalies[-1].explanation


@pytest.mark.parametrize(
    "values",
    [np.full(SAMPLES, 5.0), rng(4).uniform(40.0, 60.0, SAMPLES), np.linspace(10.0, 20.0, SAMPLES)],
    ids=["constant", "bounded-noise", "straight-line"],
)
def test_nothing_anomalous_in_a_quiet_series(values: np.ndarray) -> None:
    report = detect_anomalies(values)
    assert report.anomalies == ()
    assert "no sample" in report.reason


def test_constant_series_with_one_spike_is_flagged_although_mad_is_zero() -> None:
    values = np.full(SAMPLES, 5.0)
    values[100] = 6.0
    report = detect_anomalies(values)
    assert [a.index for a in report.anomalies] == [100]
    assert math.isfinite(report.anomalies[0].zscore)


def test_min_deviation_keeps_tiny_departures_quiet() -> None:
    values = np.full(SAMPLES, 5.0)
    values[100] = 5.001
    assert detect_anomalies(values, min_deviation=0.01).anomalies == ()


def test_anomaly_detection_needs_enough_samples_and_ignores_nan() -> None:
    assert "not enough samples" in detect_anomalies([1.0, 2.0, 100.0]).reason
    values = rng().uniform(95.0, 105.0, 50)
    values[::3] = np.nan
    values[-1] = 150.0
    report = detect_anomalies(values)
    assert [a.index for a in report.anomalies] == [49]


# --- correlation -----------------------------------------------------------------------------


def resource_series(seed: int = 7, n: int = 120) -> dict[str, np.ndarray]:
    r = rng(seed)
    return {
        ResourceSignal.CPU_THROTTLING: np.clip(0.3 + r.normal(0, 0.1, n).cumsum() * 0.2, 0.0, 1.0),
        ResourceSignal.MEMORY_PRESSURE: r.uniform(0.4, 0.6, n),
        ResourceSignal.MAJOR_PAGE_FAULTS: r.poisson(3.0, n).astype(float),
        ResourceSignal.NODE_DISK_LATENCY: r.gamma(2.0, 1.5, n),
    }


@pytest.mark.parametrize(
    ("culprit", "method"),
    [
        (ResourceSignal.CPU_THROTTLING, "spearman"),
        (ResourceSignal.MEMORY_PRESSURE, "spearman"),
        (ResourceSignal.NODE_DISK_LATENCY, "pearson"),
    ],
    ids=["cpu-throttling", "memory-pressure", "disk-latency-pearson"],
)
def test_the_resource_that_drives_latency_is_found(culprit: ResourceSignal, method: str) -> None:
    candidates = resource_series()
    x = candidates[culprit]
    latency = 80.0 + 200.0 * (x - x.min()) / np.ptp(x) + rng(9).normal(0.0, 10.0, x.size)
    result = find_bottleneck(latency, candidates, method=method)  # type: ignore[arg-type]
    assert result.reason is BottleneckReason.RESOURCE_BOTTLENECK
    assert result.resource == culprit
    assert result.coefficient is not None and result.coefficient > 0.8
    assert result.candidates[0].name == culprit
    assert result.message.startswith(f"{culprit} explains latency")


def test_latency_unrelated_to_resources_is_not_a_resource_bottleneck() -> None:
    latency = rng(21).normal(300.0, 30.0, 120)
    result = find_bottleneck(latency, resource_series())
    assert result.resource is None
    assert result.reason is BottleneckReason.NOT_A_RESOURCE_BOTTLENECK
    assert result.message.startswith("latency is not a resource bottleneck")
    assert len(result.candidates) == 4


def test_a_negative_correlation_does_not_explain_latency() -> None:
    candidates = resource_series()
    x = candidates[ResourceSignal.CPU_THROTTLING]
    result = find_bottleneck(500.0 - 300.0 * x, {ResourceSignal.CPU_THROTTLING: x})
    assert result.reason is BottleneckReason.NOT_A_RESOURCE_BOTTLENECK


def test_correlation_aligns_on_the_newest_samples_and_drops_gaps() -> None:
    candidates = resource_series(n=100)
    x = candidates[ResourceSignal.CPU_THROTTLING]
    latency = 100.0 + 100.0 * x
    latency[::10] = np.nan
    longer = np.concatenate([rng().uniform(size=50), x])  # 50 older samples latency does not have
    result = find_bottleneck(latency, {ResourceSignal.CPU_THROTTLING: longer})
    assert result.resource == ResourceSignal.CPU_THROTTLING
    assert result.candidates[0].samples == 90
    assert result.coefficient == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("latency", "candidates", "expected_message"),
    [
        (np.arange(10.0), {"cpu": np.arange(10.0)}, "not enough latency samples"),
        (np.full(60, 250.0), {"cpu": np.arange(60.0)}, "does not vary"),
        (np.arange(60.0), {"cpu": np.arange(5.0)}, "no resource series has 20 samples"),
    ],
    ids=["short-latency", "constant-latency", "short-candidates"],
)
def test_insufficient_data_is_not_called_a_verdict(
    latency: np.ndarray, candidates: dict[str, np.ndarray], expected_message: str
) -> None:
    result = find_bottleneck(latency, candidates)
    assert result.reason is BottleneckReason.INSUFFICIENT_DATA
    assert result.resource is None
    assert expected_message in result.message


def test_a_constant_candidate_has_no_coefficient_and_does_not_win() -> None:
    latency = np.arange(60.0)
    result = find_bottleneck(latency, {"flat": np.full(60, 0.5), "rising": np.arange(60.0) ** 2})
    assert result.resource == "rising"
    assert {c.name: c.coefficient for c in result.candidates}["flat"] is None


# --- anomaly incidents (what the loop asks) ----------------------------------------------------

FIVE_MINUTES = 300.0
DAY = 288  # five-minute samples per day


def five_minute(days: float, level: float = 40.0, noise: float = 2.0, seed: int = 5) -> np.ndarray:
    return level + rng(seed).normal(0.0, noise, int(days * DAY))


def daily_curve(days: float, seed: int = 5) -> np.ndarray:
    hours = np.arange(int(days * DAY)) / 12.0
    shape = np.clip(np.sin((hours % 24 - 7) / 14 * np.pi), 0, None) ** 1.5
    return 10.0 + 50.0 * shape + rng(seed).normal(0.0, 1.0, hours.size)


def incident_runs(values: np.ndarray, first: int, **kwargs) -> list[int]:
    """Judge every sample from `first` on as the loop judges the newest one; the starts of the runs."""
    window = detector_window(FIVE_MINUTES)
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    active = anomaly_incidents(np.lib.stride_tricks.sliding_window_view(padded, window)[first:],
                               step=FIVE_MINUTES, **kwargs).active
    return [first + int(i) for i in np.flatnonzero(active & ~np.concatenate([[False], active[:-1]]))]


@pytest.mark.parametrize("values", [
    five_minute(3), np.round(0.3 + rng(2).normal(0, 0.003, 3 * DAY), 3), np.full(3 * DAY, 5.0), daily_curve(4)],
    ids=["gaussian", "idle-with-tiny-wiggles", "constant", "daily-cycle"])
def test_ordinary_series_open_no_incident(values: np.ndarray) -> None:
    # The idle series' wiggles were 66,000 robust sigmas for a MAD scale; the floor keeps them at none.
    assert incident_runs(values, first=DAY, floor_absolute=0.1) == []


def test_a_spike_opens_one_incident_and_a_single_noisy_sample_does_not() -> None:
    values = five_minute(2)
    values[400] += 30.0  # 15 sigmas: one sample is enough
    values[500] += 8.0  # 4 sigmas once: persistence says wait
    assert incident_runs(values, first=DAY) == [400]


def test_a_level_shift_is_one_incident_not_one_per_sample() -> None:
    values = five_minute(4)
    values[2 * DAY :] += 15.0
    assert incident_runs(values, first=DAY) == [2 * DAY + 1]


def test_a_lightly_loaded_container_is_judged_against_its_own_level() -> None:
    values = five_minute(2, level=0.8, noise=0.02)  # 0.8 % of the request
    values[400:404] = 4.0  # five times the usual load: far below any absolute 10-point minimum
    assert incident_runs(values, first=DAY, floor_absolute=0.1) == [400]


def test_the_daily_peak_is_expected_and_a_burst_at_night_is_not() -> None:
    values = daily_curve(4)
    night = 3 * DAY + 24  # 02:00 on the fourth day
    values[night : night + 6] += 30.0
    assert incident_runs(values, first=2 * DAY) == [night]  # 30 sigmas at night: at once


def test_an_hourly_job_is_expected_and_a_job_that_runs_on_is_not() -> None:
    minutes = np.arange(4 * DAY) * 5 % 60
    values = 10.0 + 50.0 * (minutes < 10) + rng(3).normal(0.0, 0.5, 4 * DAY)
    late = 3 * DAY + 120
    values[late : late + 12] = 60.0  # the job runs for an hour instead of ten minutes
    assert incident_runs(values, first=DAY) == [late + 2]


def test_the_weekend_is_expected_once_a_week_of_history_exists() -> None:
    days = np.arange(10 * DAY) // DAY
    values = daily_curve(10) * np.where(days % 7 >= 5, 0.3, 1.0)  # days 5, 6 are the weekend
    # Without a week of history the first weekend looks like an outage; the second one does not.
    assert incident_runs(values, first=9 * DAY) == []


def test_single_series_incident_agrees_with_the_batch_and_explains_itself() -> None:
    values = five_minute(2)
    values[-3:] += 30.0
    batch = anomaly_incidents(np.stack([values, five_minute(2, seed=6)]), step=FIVE_MINUTES)
    incident = detect_incident(values, step=FIVE_MINUTES, name="app cpuUtilization")
    assert batch.active.tolist() == [True, False]
    assert incident.active and incident.zscore == pytest.approx(batch.zscore[0])
    assert incident.started_samples_ago == 2
    assert incident.explanation.startswith(f"app cpuUtilization {values[-1]:.4g} is ")
    assert "above the median of the previous day" in incident.explanation and "open for 10 min" in incident.explanation


def test_direction_limits_which_departures_count() -> None:
    values = five_minute(2)
    values[-3:] -= 30.0
    assert anomaly_incidents(values, step=FIVE_MINUTES).active[0]
    assert not anomaly_incidents(values, step=FIVE_MINUTES, direction="above").active[0]


@pytest.mark.parametrize("values", [[1.0, 2.0, 100.0], np.full(50, np.nan), [np.nan] * 40 + [1.0] * 10],
                         ids=["three-points", "all-nan", "mostly-nan"])
def test_too_little_history_is_not_judged(values) -> None:
    incident = detect_incident(values, step=15.0)
    assert not incident.active and "not enough history" in incident.explanation


# --- forecast ----------------------------------------------------------------------------------

MINUTE = 60.0


def test_a_ramp_is_forecast_to_cross_with_high_probability() -> None:
    values = 40.0 + 0.5 * np.arange(60) + rng().normal(0.0, 1.0, 60)  # +0.5 points/min, at ~70 now
    result = forecast_batch(values, step=MINUTE, horizon=1800.0, thresholds=80.0)
    assert result.slope[0] * MINUTE == pytest.approx(0.5, rel=0.15)
    # Calibrated on the harness, where ramps also level off short of the threshold: ~0.3 here.
    assert result.will_cross[0] and result.crossing_probability[0] > FORECAST_MIN_CONFIDENCE
    assert result.slope_z[0] > 10


def test_a_step_is_a_new_level_not_a_steep_trend() -> None:
    values = np.r_[np.full(80, 40.0), np.full(10, 70.0)] + rng().normal(0.0, 1.0, 90)
    result = forecast_batch(values, step=MINUTE, horizon=900.0, thresholds=80.0)
    assert result.shift_samples_ago[0] == 10
    assert result.level[0] == pytest.approx(70.0, abs=1.5)
    assert abs(result.slope[0] * 900.0) < 5.0
    assert not result.will_cross[0] and result.crossing_probability[0] < 0.1
    # Theil-Sen over the same window (the forecaster before issue 16) keeps the old level.
    assert predict_crossing(values, 80.0, 900.0, step=MINUTE).trend.level < 45.0


def test_a_trend_after_a_level_shift_uses_the_new_segment() -> None:
    values = np.r_[np.full(60, 20.0), 50.0 + 0.4 * np.arange(40)] + rng().normal(0.0, 0.5, 100)
    result = forecast_batch(values, step=MINUTE, horizon=1800.0, thresholds=80.0)
    assert 38 <= result.shift_samples_ago[0] <= 42
    assert result.slope[0] * MINUTE == pytest.approx(0.4, rel=0.15)


@pytest.mark.parametrize("level", [30.0, 60.0, 75.0, 79.0])
def test_probability_rises_with_the_level_and_noise_alone_rarely_acts(level: float) -> None:
    values = level + rng(int(level)).normal(0.0, 2.0, 120)
    probability = forecast_batch(values, step=MINUTE, horizon=900.0, thresholds=80.0).crossing_probability[0]
    assert probability < {30.0: 0.01, 60.0: 0.05, 75.0: 0.5, 79.0: 0.9}[level]


def test_longer_series_are_averaged_into_blocks_and_falling_series_cross_below() -> None:
    values = 60.0 - 0.1 * np.arange(480) / 4 + rng().normal(0.0, 1.0, 480)  # 15 s steps, -0.1 points/min
    result = forecast_batch(values, step=15.0, horizon=1800.0, thresholds=47.0, direction="below")
    assert result.slope[0] * 60.0 == pytest.approx(-0.1, rel=0.15)
    assert result.will_cross[0]


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0], np.full(50, np.nan), []], ids=["three", "all-nan", "empty"])
def test_forecast_without_enough_samples_is_nan_and_never_acts(values) -> None:
    result = forecast_batch(np.asarray(values, dtype=float).reshape(1, -1), step=MINUTE, horizon=900.0, thresholds=80.0)
    assert math.isnan(result.level[0]) and not result.will_cross[0]


def test_a_line_through_the_first_minute_after_a_shift_is_not_extrapolated() -> None:
    # 2 s samples: five minutes at 20 %, then 25 s at about 24 % whose noise happens to climb. A line
    # through those 12 points said "+34 points/min since a level shift 0 min ago" in the soak.
    values = np.r_[np.full(150, 20.0), 24.0 + np.linspace(-2.0, 2.0, 12)] + rng().normal(0.0, 0.3, 162)
    result = forecast_batch(values, step=2.0, horizon=900.0, thresholds=80.0)
    assert 8 <= result.shift_samples_ago[0] <= 14
    assert result.slope[0] == 0.0 and result.level[0] == pytest.approx(24.0, abs=1.0)
    assert not result.will_cross[0]


@pytest.mark.parametrize("seed", range(4))
def test_a_young_strong_ramp_is_predicted_at_one_hour_with_less_confidence_than_an_older_one(seed: int) -> None:
    # +0.7 points/min, at 50 % now: 20 minutes of it after a flat level (young) or the whole hour (older),
    # the same noise on both. 1 h ahead the line reaches ~92 %; the young one's slope is fitted on a
    # third of that reach, so it is doubted more (a hard cap at twice its span kept it from 1 h at all).
    noise = rng(seed).normal(0.0, 0.5, 60)
    ramp = 50.0 + 0.7 * (np.arange(60) - 59.0)
    young, older = np.r_[np.full(40, ramp[40]), ramp[40:]] + noise, ramp + noise
    result = forecast_batch(np.stack([young, older]), step=MINUTE, horizon=3600.0, thresholds=80.0)
    assert 18 <= result.shift_samples_ago[0] <= 22 and result.shift_samples_ago[1] == -1
    assert result.will_cross.tolist() == [True, True]
    assert result.crossing_probability[0] < result.crossing_probability[1]


@pytest.mark.parametrize("horizon", [900.0, 3600.0], ids=["15min", "1h"])
def test_a_fast_square_wave_just_below_the_threshold_on_average_is_never_predicted(horizon: float) -> None:
    # The harness' `flapping`: 118 % and 38 % in turn every minute (a mean of 78 %), so the rule's
    # condition (a level held for minutes) never begins. Its noise alone gave probability 0.21.
    wave = np.where(np.arange(400) % 2 == 0, 118.0, 38.0) + rng().normal(0.0, 2.0, 400)
    result = forecast_batch(sliding_window_view(wave, 60), step=MINUTE, horizon=horizon, thresholds=80.0)
    assert not result.will_cross.any(), f"probability up to {result.crossing_probability.max():.2f}"


@pytest.mark.parametrize("seed", range(5))
def test_correlated_noise_is_not_a_trend(seed: int) -> None:
    # Noise that changes every 5 s read as a 10 s rate every 2 s: runs of similar samples, which the
    # textbook standard error takes for independent evidence of a slope. 40 s to 5 min of it.
    held = np.repeat(rng(seed).uniform(15.0, 25.0, 80), 5)
    rated = np.convolve(held, np.ones(10) / 10, mode="valid")[::2]
    for n in range(20, 151, 5):
        result = forecast_batch(rated[:n], step=2.0, horizon=900.0, thresholds=80.0)
        assert not result.will_cross[0], f"{n} samples: probability {result.crossing_probability[0]:.2f}"
        assert 15.0 <= result.value_at_horizon[0] <= 25.0, f"{n} samples: forecast {result.value_at_horizon[0]:.0f}"
