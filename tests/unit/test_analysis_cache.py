"""The loop's AnalysisCache: a series the statistics have seen is not analysed again (its recent series
gains a point once per query step while the loop evaluates a policy every few seconds), the answer is
the one an uncached analysis gives, a changed series is analysed anew, and what no cycle used lately
is dropped."""

from __future__ import annotations

import numpy as np
import pytest

from kubetune import predictions
from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.decisions import ContainerSignals, WorkloadSignals
from kubetune.predictions import AnalysisCache, analyse

pytestmark = pytest.mark.unit


def signals(cpu) -> WorkloadSignals:
    memory = 200 * 2**20 + 2**20 * np.sin(np.arange(len(cpu)))
    return WorkloadSignals(containers=(ContainerSignals("app", {"cpu": 1.0, "memory": 512 * 2**20}, {},
                                                        cpu_series=tuple(cpu), memory_series=tuple(memory)),))


SPEC = PerformancePolicySpec.model_validate({"targetRef": {"kind": "Deployment", "name": "web"}, "mode": "Auto",
                                             "prediction": {"horizon": "5m"}, "anomalyDetection": {"enabled": True}})
RAMP = 0.40 + 0.01 * np.arange(30)


@pytest.fixture
def calls(monkeypatch):
    counted = {"forecast": 0, "anomaly": 0}

    def counting(name, real):
        def call(*args, **kwargs):
            counted[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(predictions, "forecast_batch", counting("forecast", predictions.forecast_batch))
    monkeypatch.setattr(predictions, "detect_incident", counting("anomaly", predictions.detect_incident))
    return counted


def test_an_unchanged_series_is_analysed_once_with_the_uncached_answer(calls):
    uncached = analyse(SPEC, signals(RAMP), step_seconds=15)
    computed = dict(calls)
    assert computed == {"forecast": 1, "anomaly": 2}  # CPU and memory
    cache = AnalysisCache()
    first = analyse(SPEC, signals(RAMP), step_seconds=15, cache=cache)
    cache.next_cycle()
    again = analyse(SPEC, signals(RAMP), step_seconds=15, cache=cache)
    assert first == again == uncached and uncached.predicted_hits
    assert calls == {k: 2 * v for k, v in computed.items()}, "the second cycle computed nothing"
    analyse(SPEC, signals(np.append(RAMP[1:], 0.70)), step_seconds=15, cache=cache)  # a new point
    assert calls == {"forecast": 3, "anomaly": 5}  # the CPU series changed; memory did not


def test_what_no_cycle_used_in_the_last_four_is_dropped(calls):
    cache = AnalysisCache()
    analyse(SPEC, signals(RAMP), step_seconds=15, cache=cache)
    for _ in range(AnalysisCache.GENERATIONS - 1):
        cache.next_cycle()
    analyse(SPEC, signals(RAMP), step_seconds=15, cache=cache)
    assert calls["forecast"] == 1, "used three cycles later: kept"
    for _ in range(AnalysisCache.GENERATIONS):
        cache.next_cycle()
    analyse(SPEC, signals(RAMP), step_seconds=15, cache=cache)
    assert calls["forecast"] == 2, "unused for four cycles: dropped"
