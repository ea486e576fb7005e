"""Trend prediction and anomaly detection applied to a policy's signals. Pure: the statistics live in
`kubetune.analysis`; this module decides which series they are applied to and what a result means
for the rules (a forecast crossing of a scale-up threshold becomes a predicted rule hit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kubetune.analysis import detect_anomalies, predict_crossing, theil_sen
from kubetune.api.common import parse_duration
from kubetune.api.performancepolicy import Action, Metric, PerformancePolicySpec
from kubetune.decisions import RuleHit, WorkloadSignals, container_policy

# A trend is reported as Rising/Falling when it moves the utilisation by at least this many
# percentage points over the horizon, with a consistent direction (Kendall's tau).
TREND_POINTS_OVER_HORIZON = 10.0
TREND_MIN_CONFIDENCE = 0.6
# Anomalies must also be this far (percentage points of utilisation) from the median: a flat
# series with tiny jitter has a tiny MAD, and a 1-point wiggle is nobody's concern.
ANOMALY_MIN_DEVIATION = 10.0
# Fewer points than this say nothing reliable about a trend.
MIN_POINTS = 20


@dataclass(frozen=True)
class Insights:
    predicted_hits: tuple[RuleHit, ...] = ()
    anomalies: tuple[str, ...] = ()  # one sentence per anomalous signal
    trend: str | None = None  # Rising | Falling | Steady, of CPU utilisation


def _utilization_series(usage: tuple[float, ...], request: float) -> np.ndarray:
    return 100.0 * np.asarray(usage, dtype=float) / request


def analyse(spec: PerformancePolicySpec, signals: WorkloadSignals, step_seconds: float,
            warmup_points: int = 0) -> Insights:
    """`warmup_points`: samples at the start of a series that began inside the window to ignore, since
    rate() over a counter younger than its window ramps up from zero and looks like a rising trend."""
    hits, anomalies, trends = [], [], []
    scale_ups = [r for r in spec.rules if r.metric is Metric.CPU_UTILIZATION
                 and r.action is Action.INCREASE_RESOURCES and r.above is not None]
    horizon = parse_duration(spec.prediction.horizon).total_seconds()
    for c in signals.containers:
        request = c.requests.get("cpu")
        usage = c.cpu_series[warmup_points:]
        if not request or len(usage) < MIN_POINTS or container_policy(spec, c.name) is None:
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
        if spec.anomaly_detection.enabled:
            report = detect_anomalies(series, threshold=spec.anomaly_detection.threshold,
                                      min_deviation=ANOMALY_MIN_DEVIATION, name=f"{c.name} cpuUtilization")
            if report.is_anomalous(-1):
                anomalies.append(report.anomalies[-1].explanation)
    trend = "Rising" if "Rising" in trends else "Falling" if "Falling" in trends else ("Steady" if trends else None)
    return Insights(tuple(hits), tuple(anomalies), trend)
