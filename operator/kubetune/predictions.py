"""Trend prediction and anomaly detection applied to a policy's signals. Pure: the statistics live in
`kubetune.analysis`; this module decides which series they are applied to and what a result means
for the rules (a forecast crossing of a scale-up threshold becomes a predicted rule hit).

Measured on the quality harness (tests/bench/analysis_quality.py; docs/analysis.md shows the table).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from kubetune.analysis import FORECAST_MIN_CONFIDENCE, ForecastBatch, detect_incident, forecast_batch
from kubetune.api.common import parse_duration
from kubetune.api.performancepolicy import Action, Metric, PerformancePolicySpec
from kubetune.decisions import ContainerSignals, RuleHit, WorkloadSignals, container_policy

# A trend is reported as Rising/Falling when it moves the utilisation by at least this many
# percentage points over the horizon and its slope is at least TREND_MIN_SLOPE_Z standard errors
# from zero (a level shift is a new level, not a trend: the forecaster fits the segment after it).
TREND_POINTS_OVER_HORIZON = 10.0
TREND_MIN_SLOPE_Z = 3.0


@dataclass(frozen=True)
class AnomalyFloor:
    """The smallest sigma a signal's anomaly score may use: `absolute` (the metric's resolution, in its
    units) or `relative` x its level, whichever is larger. A near-constant signal then has no
    microscopic sigma, and a lightly loaded one is still judged against its own level."""

    absolute: float
    relative: float
    direction: Literal["both", "above", "below"] = "both"


ANOMALY_FLOOR = {
    "cpuUtilization": AnomalyFloor(0.1, 0.05),  # percentage points of the CPU request
    "memoryUtilization": AnomalyFloor(0.1, 0.05),  # percentage points of the memory request
    "memoryWorkingSetMiB": AnomalyFloor(1.0, 0.05),  # MiB, for a container without a memory request
    # Latency and errors are anomalous when they rise; a drop is good news, not an incident.
    "latencyP95Ms": AnomalyFloor(1.0, 0.1, "above"),  # ms; 10 %: histogram buckets are coarse
    "errorRatePercent": AnomalyFloor(0.1, 0.1, "above"),  # percentage points of requests
    "throughputRps": AnomalyFloor(0.1, 0.05),  # requests per second; a collapse matters as much as a surge
}
# Fewer points than this say nothing reliable about a trend or what is usual.
MIN_POINTS = 20
MIB = 2**20
T = TypeVar("T")


@dataclass(frozen=True)
class Insights:
    predicted_hits: tuple[RuleHit, ...] = ()
    anomalies: tuple[str, ...] = ()  # one sentence per signal with an open anomaly incident, naming it
    trend: str | None = None  # Rising | Falling | Steady, of CPU utilisation


class AnalysisCache:
    """Results of the statistics on series already seen: anomaly verdicts and forecasts, keyed by the
    series' bytes and everything else the result depends on, so a cached result is never stale.

    A history gains a sample once per 5-minute step and a recent series once per query step (15 s),
    while the loop evaluates a policy every few seconds: most evaluations see the series the one before
    saw. Judging eight days costs ~1.3 ms a signal, and a 20-point forecast or anomaly check 0.5-1 ms:
    at 1,000 policies, half of a cycle. Results not used in the last GENERATIONS cycles are dropped
    (`next_cycle`), which bounds the cache to what a few cycles use."""

    GENERATIONS = 4

    def __init__(self) -> None:
        self.generations: deque[dict[tuple, Any]] = deque([{}], maxlen=self.GENERATIONS)

    def get(self, key: tuple, values: np.ndarray, compute: Callable[[], T]) -> T:
        """The result for `values` under `key`, computed by `compute` when not held."""
        key = (*key, values.size, hashlib.blake2b(values.tobytes(), digest_size=16).digest())
        newest = self.generations[-1]
        if key not in newest:
            older = next((g for g in self.generations if key in g), None)
            newest[key] = older.pop(key) if older is not None else compute()
        return newest[key]

    def next_cycle(self) -> None:
        self.generations.append({})


def _anomaly(history: ArrayLike, recent: ArrayLike, history_step: float, step: float, signal: str,
             spec: PerformancePolicySpec, owner: str = "", scale: float = 1.0,
             cache: AnalysisCache | None = None) -> str | None:
    """The explanation when `signal` has an open anomaly incident at its newest sample, else None.

    Judged on the long `history` (seasonal baselines, a day of reference) when there is one, else on
    the `recent` series (a flat baseline over its own window). `scale` converts both to the signal's
    units (e.g. cores -> percent of the request)."""
    name, floor, threshold = f"{owner} {signal}".strip(), ANOMALY_FLOOR[signal], spec.anomaly_detection.threshold
    for series, seconds in ((history, history_step), (recent, step)):
        if len(series) < MIN_POINTS:
            continue
        values = np.asarray(series, dtype=float) * scale

        def judge() -> str | None:
            incident = detect_incident(values, step=seconds, threshold=threshold, floor_absolute=floor.absolute,
                                       floor_relative=floor.relative, direction=floor.direction, name=name)
            return incident.explanation if incident.active else None

        return cache.get((name, scale, threshold, seconds), values, judge) if cache is not None else judge()
    return None


def _container_anomalies(c: ContainerSignals, spec: PerformancePolicySpec, history_step: float, step: float,
                         warmup_points: int, cache: AnalysisCache | None) -> list[str]:
    """CPU and memory in percent of the request when there is one (10 points mean the same to every
    workload), memory in MiB without one. Only the recent CPU series skips its warm-up (see analyse)."""
    found = []
    if cpu_request := c.requests.get("cpu"):
        found.append(_anomaly(c.cpu_history, c.cpu_series[warmup_points:], history_step, step, "cpuUtilization",
                              spec, c.name, 100.0 / cpu_request, cache))
    memory_request = c.requests.get("memory")
    signal = "memoryUtilization" if memory_request else "memoryWorkingSetMiB"
    found.append(_anomaly(c.memory_history, c.memory_series, history_step, step, signal, spec, c.name,
                          100.0 / memory_request if memory_request else 1.0 / MIB, cache))
    return [a for a in found if a]


def analyse(spec: PerformancePolicySpec, signals: WorkloadSignals, step_seconds: float,
            warmup_points: int = 0, min_confidence: float = FORECAST_MIN_CONFIDENCE,
            cache: AnalysisCache | None = None) -> Insights:
    """Trends and predicted rule hits from each container's CPU series; anomaly incidents of every
    signal: CPU and memory per container, p95 latency, error rate and throughput of the workload.

    `warmup_points`: samples at the start of a recent CPU series that began inside the window to ignore,
    since rate() over a counter younger than its window ramps up from zero and looks like a rising trend
    (memory is a gauge; latency and error rate are ratios of rates, so they do not ramp).
    `min_confidence`: the forecast probability of a crossing within the horizon at which it becomes a
    predicted rule hit (calibrated: of the forecasts saying 0.6, about 6 in 10 come true).
    `cache`: results on series seen before (the loop's AnalysisCache)."""
    hits, anomalies, trends = [], [], []
    scale_ups = [r for r in spec.rules if r.metric is Metric.CPU_UTILIZATION
                 and r.action is Action.INCREASE_RESOURCES and r.above is not None]
    horizon = parse_duration(spec.prediction.horizon).total_seconds()
    detect = spec.anomaly_detection.enabled
    history_step = signals.history_step_seconds
    for c in signals.containers:
        if container_policy(spec, c.name) is None:
            continue
        if detect:
            anomalies += _container_anomalies(c, spec, history_step, step_seconds, warmup_points, cache)
        request = c.requests.get("cpu")
        usage = c.cpu_series[warmup_points:]
        if not request or len(usage) < MIN_POINTS:
            continue
        series = 100.0 * np.asarray(usage, dtype=float) / request
        limits = [rule.above for rule in scale_ups] or [np.nan]
        def predict() -> ForecastBatch:
            return forecast_batch(np.broadcast_to(series, (len(limits), series.size)), step=step_seconds,
                                  horizon=horizon, thresholds=limits, min_confidence=min_confidence)

        forecast = (cache.get(("forecast", step_seconds, horizon, tuple(limits), min_confidence), series,
                                    predict) if cache is not None else predict())
        change, slope_z = float(forecast.slope[0]) * horizon, float(forecast.slope_z[0])
        if np.isfinite(change) and abs(slope_z) >= TREND_MIN_SLOPE_Z:
            trends.append("Rising" if change >= TREND_POINTS_OVER_HORIZON
                          else "Falling" if change <= -TREND_POINTS_OVER_HORIZON else "Steady")
        else:
            trends.append("Steady")
        if not spec.prediction.enabled:
            continue
        for i, rule in enumerate(scale_ups):
            if series[-1] > rule.above or not forecast.will_cross[i]:
                continue  # already above: the rule itself decides, with its sustained window
            shift = int(forecast.shift_samples_ago[i])
            since = f" since a level shift {shift * step_seconds / 60:.0f} min ago" if shift >= 0 else ""
            hits.append(RuleHit(rule, c.name, float(forecast.value_at_horizon[i]),
                                f"{rule.name} (predicted): {c.name} cpuUtilization {series[-1]:.0f}% now, level "
                                f"{forecast.level[i]:.1f}% with trend {forecast.slope[i] * 60:+.2f} points/min{since}; "
                                f"forecast {forecast.value_at_horizon[i]:.0f}% in {horizon:.0f}s: crosses {rule.above:g} "
                                f"with probability {forecast.crossing_probability[i]:.2f}"))
    if detect:
        anomalies += [a for a in (
            _anomaly(signals.latency_history, signals.latency_series, history_step, step_seconds, "latencyP95Ms", spec),
            _anomaly(signals.error_rate_history, signals.error_rate_series, history_step, step_seconds,
                     "errorRatePercent", spec),
            _anomaly(signals.throughput_history, signals.throughput_series, history_step, step_seconds,
                     "throughputRps", spec)) if a]
    trend = "Rising" if "Rising" in trends else "Falling" if "Falling" in trends else ("Steady" if trends else None)
    return Insights(tuple(hits), tuple(anomalies), trend)
