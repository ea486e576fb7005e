"""The report's model: the input `gather` reads (or a test builds), the analyses (patterns, trends,
capacity, rightsizing, anomalies) and `build_report`, which turns an input into plain JSON-ready data.
Pure functions of plain data; no I/O."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import numpy.typing as npt

from kubetune.analysis import detect_anomalies, predict_crossing, theil_sen
from kubetune.api.common import parse_duration
from kubetune.decisions import ContainerSignals, recommend
from kubetune.workloads import RESOURCES

FloatArray = npt.NDArray[np.float64]

DAY = 86400.0
WEEK = 7 * DAY
# An autocorrelation at the lag of at least this much is reported as a seasonal pattern.
SEASONALITY_THRESHOLD = 0.5
# Capacity forecasts look this far ahead; later crossings are "not within a year".
CAPACITY_HORIZON = 365 * DAY
# Anomalies smaller than these are noise of a near-constant series, not worth a line in a report.
ANOMALY_MIN_DEVIATION = {"cpu": 0.01, "memory": 4 * 2**20}
# A report judges every sample of a long window (168 for a week of hours): at the operator's 3 robust
# standard deviations normal noise alone would flag about one sample in 370; at 4, one in 16,000.
ANOMALY_THRESHOLD = 4.0
UNITS = {"cpu": "cores", "memory": "bytes"}


def _fmt(resource: str, value: float | None, *, signed: bool = False) -> str:
    """A value as Kubernetes writes it: CPU in whole cores (`2`) or millicores (`1500m`), memory in
    Mi or Gi, so one column never mixes `1.00` with `500m`."""
    if value is None or not math.isfinite(value):
        return "-"
    sign = "-" if value < 0 else ("+" if signed else "")
    if resource == "cpu":
        millicores = round(abs(value) * 1000)
        return f"{sign}{millicores // 1000}" if millicores and millicores % 1000 == 0 else f"{sign}{millicores}m"
    return f"{sign}{abs(value) / 2**30:.2f}Gi" if abs(value) >= 2**30 else f"{sign}{abs(value) / 2**20:.0f}Mi"


def _date(t: float, *, seconds: bool = False) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d")


class ReportError(Exception):
    """The report could not be made; the message says what failed."""


def parse_range(text: str) -> float:
    """A duration of the one grammar (`api.common.Duration`: `168h`, `1h30m`, `5s`) in seconds."""
    return parse_duration(text).total_seconds()


# Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 11_000
# Steps that divide a day (seasonality compares samples a day and a week apart), shortest first.
NICE_STEPS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, DAY)


def choose_step(range_seconds: float, requested: float | None) -> float:
    """The requested step (default 1h, or the range / 100 when shorter), raised to the shortest
    nice step that keeps the range within Prometheus' point limit."""
    step = requested if requested else min(3600.0, max(1.0, range_seconds / 100))
    if range_seconds / step + 1 <= MAX_POINTS:
        return step
    return next((s for s in NICE_STEPS if s >= step and range_seconds / s + 1 <= MAX_POINTS),
                math.ceil(range_seconds / (MAX_POINTS - 1)))


def prometheus_duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 or seconds != int(seconds) else f"{int(seconds)}s"


# ---------------------------------------------------------------------------------------------
# Input: what `gather` reads (or a test builds)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerUsage:
    """One container of one workload over the window; series are evenly spaced, oldest first, NaN = no data."""

    namespace: str
    workload: str
    kind: str  # Deployment | StatefulSet | DaemonSet
    container: str
    replicas: int  # running pods now
    requests: Mapping[str, float]  # per pod, now (the pod template's), base units
    limits: Mapping[str, float]
    cpu: FloatArray  # cores, summed over the workload's pods
    cpu_per_pod: FloatArray  # cores, mean over pods (what the recommendation reads)
    memory: FloatArray  # bytes, summed over pods
    memory_per_pod: FloatArray  # bytes, max over pods
    # Requested in total over time (kube-state-metrics); a missing resource is drawn flat at today's value.
    requested: Mapping[str, FloatArray] = field(default_factory=dict)
    oom_kills: float = 0.0


@dataclass(frozen=True)
class ReportInput:
    start: float  # unix time of the first sample
    step: float  # seconds between samples
    containers: tuple[ContainerUsage, ...]
    allocatable: Mapping[str, float]  # the cluster's, summed over nodes
    largest_node: Mapping[str, float]  # the largest node's allocatable: no request can exceed it
    notes: tuple[str, ...] = ()
    source: str = ""
    namespace: str | None = None

    @property
    def samples(self) -> int:
        return len(self.containers[0].cpu) if self.containers else 0

    @property
    def end(self) -> float:
        return self.start + (self.samples - 1) * self.step


# ---------------------------------------------------------------------------------------------
# Pattern recognition
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seasonality:
    period: str  # "daily" | "weekly"
    lag: int  # samples in one period
    strength: float | None  # autocorrelation at the lag, -1..1; None: fewer than two periods of data
    detected: bool
    explanation: str


def detrend(values: npt.ArrayLike) -> FloatArray:
    """The series minus its Theil–Sen line, so that a steady rise does not look like a repeating pattern."""
    series = np.asarray(values, dtype=np.float64)
    trend = theil_sen(series, 1.0)
    if math.isnan(trend.slope):
        return series - np.nanmedian(series) if np.isfinite(series).any() else series
    return series - (trend.level + trend.slope * (np.arange(series.size) - (series.size - 1)))


def autocorrelation(values: npt.ArrayLike, lag: int) -> float | None:
    """Pearson correlation of the detrended, outlier-clipped series with itself `lag` samples later.

    None without two full periods (2 x lag samples) or when the series does not vary. A pure
    repeating pattern gives about 1, noise about 0.
    """
    series = np.asarray(values, dtype=np.float64)
    if lag < 1 or series.size < 2 * lag or np.isfinite(series).sum() < 2 * lag:
        return None
    residual = detrend(series)
    # One spike must not hide a daily pattern: residuals are clipped at 4 robust standard deviations.
    median = np.nanmedian(residual)
    spread = 4 * 1.4826 * np.nanmedian(np.abs(residual - median))
    if spread > 0:
        residual = np.clip(residual, median - spread, median + spread)
    x, y = residual[:-lag], residual[lag:]
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < max(lag // 2, 3):
        return None
    x, y = x[both] - x[both].mean(), y[both] - y[both].mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return None if denominator == 0 else float(x @ y) / denominator


def seasonality(values: npt.ArrayLike, step: float, *, threshold: float = SEASONALITY_THRESHOLD) -> tuple[Seasonality, ...]:
    """Daily and weekly patterns: the autocorrelation at a lag of one day and one week of samples."""
    found = []
    for name, period in (("daily", DAY), ("weekly", WEEK)):
        lag = max(1, round(period / step))
        strength = autocorrelation(values, lag)
        if strength is None:
            found.append(Seasonality(name, lag, None, False,
                                     f"not enough data for a {name} pattern (needs {2 * lag} samples: two periods)"))
            continue
        detected = strength >= threshold
        found.append(Seasonality(name, lag, strength, detected,
                                 f"{name} pattern {'found' if detected else 'not found'}: autocorrelation "
                                 f"{strength:.2f} at a lag of {lag} samples (threshold {threshold:g})"))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Trending and capacity planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendPerDay:
    level: float  # the trend line's value now
    slope_per_day: float  # units per day
    relative_per_day: float | None  # slope / level (0.01 = +1 % a day); None when level <= 0
    confidence: float  # 0..1 (Kendall's tau, see analysis.Trend)
    samples: int


def trend_per_day(values: npt.ArrayLike, step: float) -> TrendPerDay:
    trend = theil_sen(values, step)
    per_day = trend.slope * DAY
    relative = per_day / trend.level if trend.level > 0 and not math.isnan(per_day) else None
    return TrendPerDay(trend.level, per_day, relative, trend.confidence, trend.samples)


@dataclass(frozen=True)
class CapacityForecast:
    scope: str  # a namespace, or "all namespaces"
    resource: str  # cpu | memory
    measure: str  # usage | requests
    now: float  # the trend line's value now
    capacity: float
    slope_per_day: float
    confidence: float
    exhausted_in_seconds: float | None  # 0: already at or over capacity; None: not within the horizon
    exhausted_at: float | None  # unix time
    explanation: str


def capacity_forecast(values: npt.ArrayLike, step: float, capacity: float, *, end: float, scope: str,
                      resource: str, measure: str, horizon: float = CAPACITY_HORIZON) -> CapacityForecast:
    """When `values` (a namespace's usage or requests) reaches `capacity` along its Theil–Sen trend."""
    forecast = predict_crossing(values, capacity, horizon, step=step)
    trend = forecast.trend
    until = forecast.time_to_crossing
    if math.isnan(trend.slope):
        text = f"not enough samples for a trend ({trend.samples})"
    elif until == 0:
        text = f"{measure} {_fmt(resource, trend.level)} is already at or above the capacity {_fmt(resource, capacity)}"
    elif until is not None:
        text = (f"{measure} reaches the capacity {_fmt(resource, capacity)} in {until / DAY:.1f} days "
                f"({_date(end + until)}) at {_fmt(resource, trend.slope * DAY)}/day (confidence {trend.confidence:.2f})")
    else:
        text = (f"{measure} {_fmt(resource, trend.level)} does not reach {_fmt(resource, capacity)} within "
                f"{horizon / DAY:.0f} days (trend {_fmt(resource, trend.slope * DAY, signed=True)}/day)")
    return CapacityForecast(scope, resource, measure, trend.level, capacity, trend.slope * DAY, trend.confidence,
                            until, None if until is None else end + until, text)


# ---------------------------------------------------------------------------------------------
# Rightsizing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rightsizing:
    namespace: str
    workload: str
    container: str
    replicas: int
    current: dict[str, float | None]  # request per pod now
    recommended: dict[str, float]  # target request per pod
    lower: dict[str, float]
    upper: dict[str, float]
    frees: dict[str, float]  # (current - recommended) x replicas; negative: needs more; only where both exist
    inputs: dict[str, float]  # cpu_p50, cpu_p90, cpu_peak, memory_peak, oom_kills


def _nan_stat(fn, values: FloatArray, *args) -> float | None:
    finite = values[np.isfinite(values)]
    return float(fn(finite, *args)) if finite.size else None


def rightsize(c: ContainerUsage, largest_node: Mapping[str, float]) -> Rightsizing:
    """The operator's recommendation (`decisions.recommend`) from the window's usage, against today's requests."""
    history = {"cpu_p50": _nan_stat(np.percentile, c.cpu_per_pod, 50), "cpu_p90": _nan_stat(np.percentile, c.cpu_per_pod, 90),
               "cpu_peak": _nan_stat(np.max, c.cpu_per_pod), "memory_peak": _nan_stat(np.max, c.memory_per_pod),
               "oom_kills": c.oom_kills}
    known = {k: v for k, v in history.items() if v is not None}
    signals = ContainerSignals(name=c.container, requests=c.requests, limits=c.limits, history=known)
    recommendation = recommend(signals, None, largest_node)
    current = {r: c.requests.get(r) for r in RESOURCES}
    frees = {r: (current[r] - rec.target) * c.replicas for r, rec in recommendation.items() if current[r] is not None}
    return Rightsizing(c.namespace, c.workload, c.container, c.replicas, current,
                       {r: rec.target for r, rec in recommendation.items()},
                       {r: rec.lower for r, rec in recommendation.items()},
                       {r: rec.upper for r, rec in recommendation.items()}, frees, known)


def rightsizing_totals(items: Sequence[Rightsizing]) -> dict[str, dict[str, float]]:
    """Cluster-wide, per resource: what the over-requested containers would free, what the
    under-requested ones need more, and the net."""
    totals = {}
    for resource in RESOURCES:
        deltas = [r.frees[resource] for r in items if resource in r.frees]
        freed = sum(d for d in deltas if d > 0)
        needed = -sum(d for d in deltas if d < 0)
        totals[resource] = {"freed": freed, "needed": needed, "net": freed - needed}
    return totals


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _sum_rows(rows: Sequence[FloatArray], length: int) -> FloatArray:
    """Sum of series, NaN where none has a sample."""
    if not rows:
        return np.full(length, np.nan)
    stack = np.vstack(rows)
    return np.where(np.isfinite(stack).any(axis=0), np.nansum(stack, axis=0), np.nan)


def _requested_series(c: ContainerUsage, resource: str, length: int) -> FloatArray:
    if resource in c.requested:
        return np.asarray(c.requested[resource], dtype=np.float64)
    request = c.requests.get(resource)
    return np.full(length, np.nan if request is None else request * c.replicas)


def _series_json(values: FloatArray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(f"{v:.6g}") for v in values]


def _anomalies_json(values: FloatArray, resource: str, step: float, start: float, name: str) -> list[dict]:
    """Anomalies of the detrended series (a steady rise is the trend section's business, not an
    anomaly), judged against the same phase of previous days when the window holds three days."""
    day = round(DAY / step)
    seasonal = values.size >= 3 * day
    found = detect_anomalies(detrend(values), threshold=ANOMALY_THRESHOLD, period=day if seasonal else None,
                             min_deviation=ANOMALY_MIN_DEVIATION[resource])
    baseline = "the same hour of previous days" if seasonal else "the window's median"
    return [{"index": a.index, "time": start + a.index * step, "value": float(values[a.index]),
             "expected": float(values[a.index] - a.deviation), "deviation": a.deviation, "zscore": a.zscore,
             "explanation": f"{name} {_fmt(resource, float(values[a.index]))} is {abs(a.zscore):.1f} robust standard "
                            f"deviations {'above' if a.zscore > 0 else 'below'} {baseline} after removing the trend "
                            f"(expected {_fmt(resource, float(values[a.index] - a.deviation))})"}
            for a in found.anomalies]


def build_report(data: ReportInput, *, generated: float | None = None) -> dict[str, Any]:
    """Every section as plain JSON-ready data; `render_html` and `render_table` only format it."""
    n, step = data.samples, data.step
    by_workload: dict[tuple[str, str, str], list[ContainerUsage]] = defaultdict(list)
    for c in data.containers:
        by_workload[(c.namespace, c.kind, c.workload)].append(c)
    sizing = [rightsize(c, data.largest_node) for c in data.containers]
    sizing_by_key = {(s.namespace, s.workload, s.container): s for s in sizing}

    workloads = []
    namespace_series: dict[str, dict[str, list[FloatArray]]] = defaultdict(lambda: defaultdict(list))
    for (namespace, kind, name), containers in sorted(by_workload.items()):
        entry: dict[str, Any] = {"namespace": namespace, "kind": kind, "workload": name,
                                 "replicas": max(c.replicas for c in containers),
                                 "containers": [c.container for c in containers],
                                 "usage": {}, "requests": {}, "recommended": {}, "trend": {}, "seasonality": {},
                                 "anomalies": {}}
        for resource in RESOURCES:
            usage = _sum_rows([c.cpu if resource == "cpu" else c.memory for c in containers], n)
            requested = _sum_rows([_requested_series(c, resource, n) for c in containers], n)
            namespace_series[namespace][f"{resource}:usage"].append(usage)
            namespace_series[namespace][f"{resource}:requests"].append(requested)
            finite = usage[np.isfinite(usage)]
            trend = trend_per_day(usage, step)
            entry["usage"][resource] = {
                "now": float(finite[-1]) if finite.size else None,
                "mean": float(finite.mean()) if finite.size else None,
                "p90": float(np.percentile(finite, 90)) if finite.size else None,
                "peak": float(finite.max()) if finite.size else None,
                "series": _series_json(usage)}
            requested_finite = requested[np.isfinite(requested)]
            entry["requests"][resource] = {"now": float(requested_finite[-1]) if requested_finite.size else None,
                                           "series": _series_json(requested)}
            targets = [sizing_by_key[(namespace, name, c.container)].recommended.get(resource) for c in containers]
            entry["recommended"][resource] = (sum(t * c.replicas for t, c in zip(targets, containers))
                                              if all(t is not None for t in targets) else None)
            entry["trend"][resource] = asdict(trend)
            entry["seasonality"][resource] = [asdict(s) for s in seasonality(usage, step)]
            entry["anomalies"][resource] = _anomalies_json(usage, resource, step, data.start,
                                                           f"{namespace}/{name} {resource}")
        workloads.append(entry)

    forecasts = []
    scopes = {ns: series for ns, series in sorted(namespace_series.items())}
    if len(scopes) > 1:
        scopes["all namespaces"] = {key: [_sum_rows([_sum_rows(s[key], n) for s in namespace_series.values()], n)]
                                    for key in ("cpu:usage", "cpu:requests", "memory:usage", "memory:requests")}
    for scope, series in scopes.items():
        for resource in RESOURCES:
            capacity = data.allocatable.get(resource)
            if not capacity:
                continue
            for measure in ("usage", "requests"):
                values = _sum_rows(series[f"{resource}:{measure}"], n)
                forecasts.append(asdict(capacity_forecast(values, step, capacity, end=data.end, scope=scope,
                                                          resource=resource, measure=measure)))
    return _finite({
        "generatedAt": _date(time.time() if generated is None else generated, seconds=True),
        "source": data.source,
        "namespace": data.namespace,
        "window": {"start": data.start, "end": data.end, "step": step, "samples": n},
        "notes": list(data.notes),
        "capacity": {"allocatable": dict(data.allocatable), "largestNode": dict(data.largest_node),
                     "forecasts": forecasts},
        "workloads": workloads,
        "rightsizing": {"containers": [asdict(s) for s in sizing], "totals": rightsizing_totals(sizing)},
    })


def _finite(value: Any) -> Any:
    """JSON has no NaN: a value that could not be computed (too few samples) becomes None (null)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
