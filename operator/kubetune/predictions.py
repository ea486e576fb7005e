"""Trend prediction and anomaly detection applied to a policy's signals. Pure: the statistics live in
`kubetune.analysis`; this module decides which series they are applied to and what a result means
for the rules (a forecast crossing of a scale-up threshold becomes a predicted rule hit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from kubetune.analysis import detect_anomalies, predict_crossing, theil_sen
from kubetune.api.common import parse_duration
from kubetune.api.performancepolicy import Action, Metric, PerformancePolicySpec
from kubetune.decisions import ContainerSignals, RuleHit, WorkloadSignals, container_policy

# A trend is reported as Rising/Falling when it moves the utilisation by at least this many
# percentage points over the horizon, with a consistent direction (Kendall's tau).
TREND_POINTS_OVER_HORIZON = 10.0
TREND_MIN_CONFIDENCE = 0.6
# An anomaly must also be this far from the median, in the signal's own units: a flat series with
# tiny jitter has a tiny MAD, and a wiggle nobody would act on is not worth a Warning Event.
ANOMALY_MIN_DEVIATION = {
    "cpuUtilization": 10.0,  # percentage points of the CPU request
    "memoryUtilization": 10.0,  # percentage points of the memory request
    "memoryWorkingSetMiB": 64.0,  # MiB, for a container without a memory request
    "latencyP95Ms": 20.0,  # milliseconds
    "errorRatePercent": 0.5,  # percentage points of requests
}
# Fewer points than this say nothing reliable about a trend or what is usual.
MIN_POINTS = 20
MIB = 2**20


@dataclass(frozen=True)
class Insights:
    predicted_hits: tuple[RuleHit, ...] = ()
    anomalies: tuple[str, ...] = ()  # one sentence per anomalous signal, naming it
    trend: str | None = None  # Rising | Falling | Steady, of CPU utilisation


def _utilization_series(usage: tuple[float, ...], request: float) -> np.ndarray:
    return 100.0 * np.asarray(usage, dtype=float) / request


def _anomaly(series: ArrayLike, signal: str, spec: PerformancePolicySpec, owner: str = "") -> str | None:
    """The explanation when the newest sample of `series` is anomalous, else None."""
    values = np.asarray(series, dtype=float)
    if len(values) < MIN_POINTS:
        return None
    report = detect_anomalies(values, threshold=spec.anomaly_detection.threshold,
                              min_deviation=ANOMALY_MIN_DEVIATION[signal], name=f"{owner} {signal}".strip())
    return report.anomalies[-1].explanation if report.is_anomalous(-1) else None


def _memory_anomaly(c: ContainerSignals, spec: PerformancePolicySpec) -> str | None:
    """Memory in percent of the request when there is one (comparable with the CPU rule), else MiB."""
    request = c.requests.get("memory")
    if request:
        return _anomaly(_utilization_series(c.memory_series, request), "memoryUtilization", spec, c.name)
    return _anomaly(np.asarray(c.memory_series, dtype=float) / MIB, "memoryWorkingSetMiB", spec, c.name)


def analyse(spec: PerformancePolicySpec, signals: WorkloadSignals, step_seconds: float,
            warmup_points: int = 0) -> Insights:
    """Trends and predicted rule hits from each container's CPU series; anomalies of the newest sample
    of every signal: CPU and memory per container, p95 latency and error rate of the workload.
    `warmup_points`: samples at the start of a CPU series that began inside the window to ignore, since
    rate() over a counter younger than its window ramps up from zero and looks like a rising trend
    (memory is a gauge; latency and error rate are ratios of rates, so they do not ramp)."""
    hits, anomalies, trends = [], [], []
    scale_ups = [r for r in spec.rules if r.metric is Metric.CPU_UTILIZATION
                 and r.action is Action.INCREASE_RESOURCES and r.above is not None]
    horizon = parse_duration(spec.prediction.horizon).total_seconds()
    detect = spec.anomaly_detection.enabled
    for c in signals.containers:
        if container_policy(spec, c.name) is None:
            continue
        if detect and (memory := _memory_anomaly(c, spec)):
            anomalies.append(memory)
        request = c.requests.get("cpu")
        usage = c.cpu_series[warmup_points:]
        if not request or len(usage) < MIN_POINTS:
            continue
        series = _utilization_series(usage, request)
        trend = theil_sen(series, step=step_seconds)
        if np.isfinite(trend.slope) and trend.confidence >= TREND_MIN_CONFIDENCE:
            change = trend.slope * horizon
            trends.append("Rising" if change >= TREND_POINTS_OVER_HORIZON
                          else "Falling" if change <= -TREND_POINTS_OVER_HORIZON else "Steady")
        else:
            trends.append("Steady")
        if spec.prediction.enabled:
            for rule in scale_ups:
                if series[-1] > rule.above:
                    continue  # already above: the rule itself decides, with its sustained window
                forecast = predict_crossing(series, rule.above, horizon, step=step_seconds)
                if forecast.will_cross:
                    hits.append(RuleHit(rule, c.name, float(forecast.value_at_horizon),
                                        f"{rule.name} (predicted): {c.name} cpuUtilization {series[-1]:.0f}% now, "
                                        f"{forecast.explanation}"))
        if detect and (cpu := _anomaly(series, "cpuUtilization", spec, c.name)):
            anomalies.append(cpu)
    if detect:
        anomalies += [a for a in (_anomaly(signals.latency_series, "latencyP95Ms", spec),
                                  _anomaly(signals.error_rate_series, "errorRatePercent", spec)) if a]
    trend = "Rising" if "Rising" in trends else "Falling" if "Falling" in trends else ("Steady" if trends else None)
    return Insights(tuple(hits), tuple(anomalies), trend)
