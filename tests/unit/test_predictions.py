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
