"""Trend prediction and anomaly detection as the rules see them."""

from __future__ import annotations

import numpy as np
import pytest

from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.decisions import ContainerSignals, WorkloadSignals
from kubetune.predictions import analyse

pytestmark = pytest.mark.unit


def spec(**overrides) -> PerformancePolicySpec:
    return PerformancePolicySpec.model_validate({"targetRef": {"kind": "Deployment", "name": "web"}, "mode": "Auto",
                                                 "prediction": {"horizon": "5m"}, **overrides})


def signals(series) -> WorkloadSignals:
    return WorkloadSignals(containers=(ContainerSignals("app", {"cpu": 1.0}, {}, cpu_series=tuple(series)),))


def test_a_steady_ramp_towards_the_threshold_is_predicted():
    ramp = 0.40 + 0.01 * np.arange(30)  # 40 % -> 69 %, +1 point per 15 s step: 89 % in 5 min
    insights = analyse(spec(), signals(ramp), step_seconds=15)
    assert [h.rule.name for h in insights.predicted_hits] == ["high-load"]
    assert "(predicted)" in insights.predicted_hits[0].evidence
    assert insights.trend == "Rising"


@pytest.mark.parametrize("series", [np.full(60, 0.5), 0.5 + 0.01 * np.sin(np.arange(60))],
                         ids=["flat", "small-noise"])
def test_flat_or_noisy_series_predict_and_flag_nothing(series):
    insights = analyse(spec(), signals(series), step_seconds=15)
    assert insights.predicted_hits == () and insights.anomalies == ()
    assert insights.trend == "Steady"


def test_prediction_can_be_switched_off():
    ramp = 0.40 + 0.01 * np.arange(30)
    assert analyse(spec(prediction={"enabled": False}), signals(ramp), step_seconds=15).predicted_hits == ()


def test_a_sudden_spike_is_an_anomaly():
    rng = np.random.default_rng(7)
    series = 0.5 + 0.01 * rng.standard_normal(60)
    series[-1] = 0.95
    insights = analyse(spec(), signals(series), step_seconds=15)
    assert len(insights.anomalies) == 1 and "app cpuUtilization" in insights.anomalies[0]


# --- defect 8: every signal, not only CPU ------------------------------------------------------------

MI = 2**20


def _steady(level: float, jitter: float, n: int = 60, seed: int = 3) -> np.ndarray:
    return level + jitter * np.random.default_rng(seed).standard_normal(n)


def _with_last(series: np.ndarray, last: float) -> tuple[float, ...]:
    return (*series[:-1], last)


def _memory(series, request: float | None) -> WorkloadSignals:
    requests = {"cpu": 1.0, **({"memory": request} if request else {})}
    return WorkloadSignals(containers=(ContainerSignals("app", requests, {}, memory_series=tuple(series)),))


@pytest.mark.parametrize("signals,named", [
    # 300 MiB of a 512 MiB request, then 480 MiB: +35 points of the request.
    (lambda: _memory(_with_last(_steady(300 * MI, 2 * MI), 480 * MI), 512 * MI), "app memoryUtilization"),
    # No memory request: judged in MiB.
    (lambda: _memory(_with_last(_steady(300 * MI, 2 * MI), 480 * MI), None), "app memoryWorkingSetMiB"),
    (lambda: WorkloadSignals(containers=(), latency_series=_with_last(_steady(100, 3), 400)), "latencyP95Ms"),
    (lambda: WorkloadSignals(containers=(), error_rate_series=_with_last(_steady(0.1, 0.02), 5.0)), "errorRatePercent"),
], ids=["memory-percent-of-request", "memory-mib-without-request", "latency", "error-rate"])
def test_each_signal_is_checked_for_anomalies_and_named(signals, named):
    # `signals` builds the inputs when the test runs, so a missing field fails this test alone.
    insights = analyse(spec(), signals(), step_seconds=15)
    assert len(insights.anomalies) == 1, insights.anomalies
    assert insights.anomalies[0].startswith(named + " ")


@pytest.mark.parametrize("signals", [
    # Each newest sample is many robust deviations out, but by less than the signal's minimum deviation.
    lambda: _memory(_with_last(_steady(300 * MI, 0.2 * MI), 340 * MI), 512 * MI),  # +8 points of the request
    lambda: _memory(_with_last(_steady(300 * MI, 0.2 * MI), 350 * MI), None),  # +50 MiB
    lambda: WorkloadSignals(containers=(), latency_series=_with_last(_steady(100, 0.5), 115)),  # +15 ms
    lambda: WorkloadSignals(containers=(), error_rate_series=_with_last(_steady(0.1, 0.01), 0.4)),  # +0.3 points
], ids=["memory-8-points", "memory-50-mib", "latency-15-ms", "error-rate-0.3-points"])
def test_small_departures_are_not_anomalies(signals):
    assert analyse(spec(), signals(), step_seconds=15).anomalies == ()


def test_anomaly_detection_switched_off_checks_no_signal():
    signals = WorkloadSignals(containers=(), latency_series=_with_last(_steady(100, 3), 400))
    assert analyse(spec(anomalyDetection={"enabled": False}), signals, step_seconds=15).anomalies == ()


# --- issue 16: the long baseline, throughput, level shifts, calibrated predictions -----------------

DAY = 288  # five-minute samples


def _daily_cores(days: int, seed: int = 5) -> np.ndarray:
    hours = np.arange(days * DAY) / 12.0
    shape = np.clip(np.sin((hours % 24 - 7) / 14 * np.pi), 0, None) ** 1.5
    return 0.1 + 0.5 * shape + 0.01 * np.random.default_rng(seed).standard_normal(hours.size)


def _with_history(history: np.ndarray) -> WorkloadSignals:
    recent = tuple(0.3 + 0.005 * np.random.default_rng(1).standard_normal(60))
    return WorkloadSignals(containers=(ContainerSignals("app", {"cpu": 1.0}, {}, cpu_series=recent,
                                                        cpu_history=tuple(history)),))


def test_the_history_is_judged_with_its_daily_pattern_when_the_loop_fills_it():
    history = _daily_cores(4)
    peak = 3 * DAY + 14 * 12  # 14:00 on the fourth day, the usual peak
    assert analyse(spec(), _with_history(history[: peak + 1]), step_seconds=15).anomalies == ()
    night = 3 * DAY + 2 * 12  # 02:00: the same load at night is an incident
    burst = history[: night + 3].copy()
    burst[-3:] += 0.4
    anomalies = analyse(spec(), _with_history(burst), step_seconds=15).anomalies
    assert len(anomalies) == 1 and anomalies[0].startswith("app cpuUtilization ")
    assert "the same time on previous days" in anomalies[0] and "incident open for 10 min" in anomalies[0]


def test_throughput_is_checked_in_both_directions_and_latency_only_upwards():
    collapse = WorkloadSignals(containers=(), throughput_series=_with_last(_steady(200, 5), 20))
    assert analyse(spec(), collapse, step_seconds=15).anomalies[0].startswith("throughputRps ")
    faster = WorkloadSignals(containers=(), latency_series=_with_last(_steady(100, 3), 10))
    assert analyse(spec(), faster, step_seconds=15).anomalies == ()


def test_a_step_below_the_threshold_is_a_new_level_not_a_predicted_hit():
    step = np.r_[np.full(60, 0.40), np.full(10, 0.70)] + 0.005 * np.random.default_rng(2).standard_normal(70)
    insights = analyse(spec(), signals(step), step_seconds=60)
    assert insights.predicted_hits == () and insights.trend == "Steady"


def test_a_predicted_hit_says_how_likely_it_is_and_the_bar_is_adjustable():
    ramp = 0.40 + 0.01 * np.arange(30)
    hit = analyse(spec(), signals(ramp), step_seconds=15).predicted_hits[0]
    probability = float(hit.evidence.rsplit("probability ", 1)[1])
    assert 0.2 <= probability <= 1.0 and "trend +" in hit.evidence
    assert analyse(spec(), signals(ramp), step_seconds=15, min_confidence=min(1.0, probability + 0.01)).predicted_hits == ()


# --- soak defect 3: no predicted crossing on loads that are not trending ---------------------------
# Series shaped like the soak's (tests/cluster/soakrun.py): a load in cores against a 500m request,
# read as Prometheus' rate() over a window and sampled at the query step. Every window the loop would
# see (from MIN_POINTS samples up to the forecaster's span) is judged, as the loop judges each cycle.

SOAK_RULES = [
    {"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "20s", "action": "IncreaseResources"},
    {"name": "low-load", "metric": "cpuUtilization", "below": 20, "for": "20s", "action": "DecreaseResources"}]


def rate(load_per_second: np.ndarray, window: int, step: int) -> np.ndarray:
    """rate() over `window` seconds of a counter growing by `load_per_second`, every `step` seconds."""
    averaged = np.convolve(load_per_second, np.ones(window) / window, mode="valid")
    return averaged[::step]


def square_wave(high: float, low: float, half: int, seconds: int) -> np.ndarray:
    return np.where((np.arange(seconds) // half) % 2 == 0, high, low)


def uniform_noise(centre: float, spread: float, every: int, seconds: int, seed: int = 15) -> np.ndarray:
    values = centre + np.random.default_rng(seed).uniform(-spread, spread, seconds // every + 1)
    return np.repeat(values, every)[:seconds]


def predicted(window: np.ndarray, step: int, request: float = 0.5, horizon: str = "15m") -> list[str]:
    """The evidence of each predicted hit on one window, under the soak's policy (horizon 15m)."""
    container = ContainerSignals("app", {"cpu": request}, {}, cpu_series=tuple(window))
    insights = analyse(spec(rules=SOAK_RULES, prediction={"horizon": horizon}),
                       WorkloadSignals(containers=(container,)), step_seconds=step)
    return [h.evidence for h in insights.predicted_hits]


def predicted_evidence(series: np.ndarray, step: int, request: float = 0.5, longest: int = 240,
                       horizon: str = "15m") -> list[str]:
    """Every predicted hit's evidence over the windows ending at each sample from the 20th on."""
    return [e for end in range(20, series.size + 1)
            for e in predicted(series[max(0, end - longest):end], step, request, horizon)]


# At 15 s the soak read a 10 s rate: 16 s waves sampled every 15 s alias into a slow swing the series
# cannot tell from a real one (docs/reliability.md), so the 15 s cases use the chart's 1m rate window.
STATIONARY_CASES = pytest.mark.parametrize(("step", "window", "seconds", "horizon"),
                                           [(2, 10, 600, "15m"), (15, 60, 2400, "15m"), (15, 60, 2400, "1h")],
                                           ids=["2s", "15s", "15s-1h"])


@STATIONARY_CASES
def test_a_fast_square_wave_is_not_predicted_to_cross(step, window, seconds, horizon):
    # The soak's `fast`: 120 % / 20 % of the request in 8 s halves, a mean of 70 %.
    series = rate(square_wave(0.6, 0.1, 8, seconds + window), window, step)
    assert predicted_evidence(series, step, horizon=horizon) == []


@STATIONARY_CASES
def test_noise_around_a_flat_level_is_not_predicted_to_cross(step, window, seconds, horizon):
    # The soak's `noise`: 15-25 % of the request, a new value every 5 s.
    series = rate(uniform_noise(0.1, 0.025, 5, seconds + window), window, step)
    assert predicted_evidence(series, step, horizon=horizon) == []


@pytest.mark.parametrize("seed", [15, 16, 17])
def test_a_level_shift_that_just_happened_is_not_a_trend(seed):
    # The same noise after a decrease (500m -> 450m): five minutes on the old request, then each
    # window up to 90 s after the shift; and a new pod's own first 90 s. "+34 points/min since a level
    # shift 0 min ago" was a line through the few samples after the shift.
    load = rate(uniform_noise(0.1, 0.025, 5, 400, seed), 10, 2)
    shifted = np.r_[load[:150], load[150:195] * 0.5 / 0.45]  # cores, as percent of 500m
    assert predicted_evidence(shifted, 2) == []
    assert predicted_evidence(load[:45], 2, request=0.45) == []


def test_the_e2e_ramp_is_still_predicted_well_before_it_crosses():
    # tests/cluster/test_analysis_e2e.py's load: +2 points of 500m every 4 s from 40 %, sampled every 2 s.
    series = rate(np.repeat(0.2 + 0.01 * np.arange(60), 4), 10, 2)
    crossing = int(np.argmax(series >= 0.4))
    first = next((end for end in range(20, crossing) if predicted(series[:end], 2)), None)
    assert first is not None and crossing - first >= 10, f"first predicted at {first}, crossing at {crossing}"
