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
