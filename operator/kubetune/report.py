"""`kubetune report`: what the history in Prometheus says about the cluster's workloads.

One run reads a window of CPU and memory usage from the Prometheus HTTP API (Prometheus, Thanos
Query, Mimir, VictoriaMetrics: anything that answers /api/v1/query_range) and the current pods,
workloads and nodes from the Kubernetes API, and writes report.html (inline SVG plots, no scripts),
report.json and a terminal table. No server, nothing is changed.

Sections and methods (docs/history.md says more):

- usage vs requests per workload over the window;
- pattern recognition: daily and weekly seasonality as the autocorrelation of the detrended series
  at a lag of one day and one week (`seasonality`);
- performance trending: the Theil–Sen slope per day and its confidence (`trend_per_day`);
- capacity planning: each namespace's (and the total's) usage and requests extrapolated along their
  Theil–Sen trend to the cluster's allocatable (`capacity_forecast`, built on
  `analysis.predict_crossing`);
- rightsizing: per container the operator's own recommendation (`decisions.recommend`: p90 CPU and
  peak memory with 15 % headroom) against today's requests, and what it would free cluster-wide;
- anomalies: `analysis.detect_anomalies` (seasonal when the window holds two days or more).

Everything but `gather` is a pure function of plain data; `gather` is the only I/O.
"""

from __future__ import annotations

import html
import json
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kubetune.analysis import detect_anomalies, predict_crossing, theil_sen
from kubetune.api.common import parse_duration
from kubetune.decisions import ContainerSignals, recommend
from kubetune.prometheus import Prometheus, PrometheusUnavailable
from kubetune.promql import CONTAINERS_ONLY, cpu_usage
from kubetune.workloads import RESOURCES, owning_workload, template_containers

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


# ---------------------------------------------------------------------------------------------
# Output: terminal table, HTML with inline SVG
# ---------------------------------------------------------------------------------------------


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


def render_table(report: Mapping[str, Any]) -> str:
    """The terminal summary: rightsizing per container, the totals, and capacity forecasts."""
    header = ("NAMESPACE", "WORKLOAD", "CONTAINER", "PODS", "CPU REQ", "CPU P90", "CPU REC", "MEM REQ", "MEM PEAK",
              "MEM REC", "FREES CPU", "FREES MEM")
    rows = [header]
    for s in report["rightsizing"]["containers"]:
        rows.append((s["namespace"], s["workload"], s["container"], str(s["replicas"]),
                     _fmt("cpu", s["current"].get("cpu")), _fmt("cpu", s["inputs"].get("cpu_p90")),
                     _fmt("cpu", s["recommended"].get("cpu")), _fmt("memory", s["current"].get("memory")),
                     _fmt("memory", s["inputs"].get("memory_peak")), _fmt("memory", s["recommended"].get("memory")),
                     _fmt("cpu", s["frees"].get("cpu"), signed=True), _fmt("memory", s["frees"].get("memory"), signed=True)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    totals = report["rightsizing"]["totals"]
    lines.append("")
    lines.append(f"Rightsizing frees {_fmt('cpu', totals['cpu']['freed'])} CPU and {_fmt('memory', totals['memory']['freed'])} "
                 f"memory of requests; under-requested containers need {_fmt('cpu', totals['cpu']['needed'])} CPU and "
                 f"{_fmt('memory', totals['memory']['needed'])} memory more (net {_fmt('cpu', totals['cpu']['net'], signed=True)} "
                 f"CPU, {_fmt('memory', totals['memory']['net'], signed=True)} memory).")
    for f in report["capacity"]["forecasts"]:
        lines.append(f"Capacity {f['scope']} {f['resource']}: {f['explanation']}")
    for w in report["workloads"]:
        for resource in RESOURCES:
            for s in w["seasonality"][resource]:
                if s["detected"]:
                    lines.append(f"Pattern {w['namespace']}/{w['workload']} {resource}: {s['explanation']}")
            if w["anomalies"][resource]:
                lines.append(f"Anomalies {w['namespace']}/{w['workload']} {resource}: {len(w['anomalies'][resource])}")
    lines.extend(f"Note: {note}" for note in report["notes"])
    return "\n".join(lines)


@dataclass(frozen=True)
class Line:
    label: str
    values: Sequence[float | None]
    color: str
    dashed: bool = False


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Ticks from 0 to the first tick at or above `high`, at a 1, 2 or 5 × 10^k spacing giving about
    `count` intervals: the axis ends on a labelled tick, never in between."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    top = math.ceil(high / step - 1e-9) * step
    return [round(i * step, 12) for i in range(int(round(top / step)) + 1)]


# Time tick spacings (seconds) and how their labels read, shortest first.
TIME_STEPS = ((60, "%H:%M"), (300, "%H:%M"), (900, "%H:%M"), (1800, "%H:%M"), (3600, "%H:%M"),
              (3 * 3600, "%m-%d %H:%M"), (6 * 3600, "%m-%d %H:%M"), (12 * 3600, "%m-%d %H:%M"),
              (DAY, "%m-%d"), (2 * DAY, "%m-%d"), (WEEK, "%m-%d"), (30 * DAY, "%Y-%m-%d"))


def time_ticks(start: float, end: float, most: int = 8) -> list[tuple[float, str]]:
    """Ticks on whole minutes, hours or days (UTC) within [start, end], at most `most` of them."""
    span = max(end - start, 1.0)
    step, fmt = next(((s, f) for s, f in TIME_STEPS if span / s <= most), (span / most, "%Y-%m-%d"))
    first = math.ceil(start / step) * step
    ticks = []
    t = first
    while t <= end + 1e-6:
        ticks.append((t, datetime.fromtimestamp(t, timezone.utc).strftime(fmt)))
        t += step
    return ticks


def axis_unit(resource: str, high: float) -> tuple[float, str, str]:
    """(divisor, suffix, axis title) so every tick of an axis is in one unit."""
    if resource == "cpu":
        return (0.001, "m", "CPU (millicores)") if high < 1 else (1.0, "", "CPU (cores)")
    if high >= 2**30:
        return float(2**30), "Gi", "memory (GiB)"
    return (float(2**20), "Mi", "memory (MiB)") if high >= 2**20 else (1024.0, "Ki", "memory (KiB)")


def svg_chart(times: Sequence[float], lines: Sequence[Line], *, resource: str, title: str,
              markers: Sequence[tuple[float, float]] = (), width: int = 640, height: int = 260) -> str:
    """A line chart as an inline SVG with real axes: the x axis spans exactly the samples' times with
    ticks on whole minutes, hours or days (UTC); the y axis starts at 0 and ends on a 1-2-5 tick, every
    tick in one unit. One value per time for every line (None breaks it); (time, value) markers are
    red circles. No scripts, no external resources."""
    left, right, top, bottom = 72, 16, 26, 58
    t0 = times[0] if times else 0.0
    t1 = times[-1] if times and times[-1] > t0 else t0 + 1
    all_values = [v for line in lines for v in line.values if v is not None and math.isfinite(v)]
    all_values += [v for _, v in markers]
    high = max(all_values, default=0.0)
    divisor, suffix, axis_title = axis_unit(resource, high)
    ticks = nice_ticks(high / divisor if high > 0 else 1.0)
    top_value = ticks[-1] * divisor
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + (1 - v / top_value) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="chart"><title>{html.escape(title)}</title>',
             f'<text x="{left}" y="16" font-size="12" font-weight="bold">{html.escape(title)}</text>']
    for tick in ticks:
        ty = y(tick * divisor)
        label = f"{tick:g}{suffix}"
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{ty + 3.5:.1f}" font-size="10" text-anchor="end" class="ytick">'
                     f'{label}</text>')
    for t, label in time_ticks(t0, t1):
        tx = x(t)
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#555"/>'
                     f'<text x="{tx:.1f}" y="{top + plot_h + 15}" font-size="10" text-anchor="middle" class="xtick">'
                     f'{label}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>'
                 f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#555"/>'
                 f'<text transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" font-size="10" '
                 f'text-anchor="middle" class="ytitle">{axis_title}</text>'
                 f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 29}" font-size="10" text-anchor="middle" '
                 f'class="xtitle">time (UTC) {_date(t0, seconds=True)[:16]} to {_date(t1, seconds=True)[:16]}</text>')
    legend_x = left
    for line in lines:
        dash = ' stroke-dasharray="5,3"' if line.dashed else ""
        segment: list[str] = []
        segments = [segment]
        for t, v in zip(times, line.values):
            if v is None or not math.isfinite(v):
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{x(t):.1f},{y(v):.1f}")
        for points in segments:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{line.color}"/>')
            elif points:
                parts.append(f'<polyline fill="none" stroke="{line.color}" stroke-width="1.5"{dash} '
                             f'points="{" ".join(points)}"/>')
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 14}" y1="{height - 8}" y2="{height - 8}" '
                     f'stroke="{line.color}" stroke-width="2"{dash}/>'
                     f'<text x="{legend_x + 18}" y="{height - 4}" font-size="10">{html.escape(line.label)}</text>')
        legend_x += 24 + 6 * len(line.label)
    for t, v in markers:
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="4" fill="none" stroke="#d62728" stroke-width="2">'
                     f'<title>anomaly: {_fmt(resource, v)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def workload_chart(report: Mapping[str, Any], workload: Mapping[str, Any], resource: str) -> str:
    """Usage vs requests over the window, the recommendation, the Theil–Sen trend line over the same
    window (not past it: the axis is the data's) and the anomalies of one workload."""
    window = report["window"]
    n = window["samples"]
    axis = [window["start"] + i * window["step"] for i in range(n)]
    lines = [Line("usage", workload["usage"][resource]["series"], "#1f77b4"),
             Line("requests", workload["requests"][resource]["series"], "#7f7f7f")]
    recommended = workload["recommended"].get(resource)
    if recommended is not None:
        lines.append(Line("recommended", [recommended] * n, "#2ca02c", dashed=True))
    trend = workload["trend"][resource]
    if n > 1 and trend["level"] is not None and trend["slope_per_day"] is not None:
        # The trend's level is its value at the window's end; back along its slope to the start.
        lines.append(Line("trend", [max(trend["level"] + trend["slope_per_day"] * (t - window["end"]) / DAY, 0.0)
                                    for t in axis], "#ff7f0e", dashed=True))
    markers = [(a["time"], a["value"]) for a in workload["anomalies"][resource]]
    title = f"{workload['namespace']}/{workload['workload']} {resource}"
    return svg_chart(axis, lines, resource=resource, title=title, markers=markers)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}
.num{text-align:right}.warn{color:#b00}section{margin-bottom:2em}.charts{display:flex;flex-wrap:wrap;gap:8px}"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _reaches_capacity(forecast: Mapping[str, Any]) -> str:
    if forecast["slope_per_day"] is None:
        return "too little data for a trend"  # no projection from a trend that was not found
    if forecast["exhausted_in_seconds"] == 0:
        return "now"
    return _date(forecast["exhausted_at"]) if forecast["exhausted_at"] is not None else "not within a year"


def render_html(report: Mapping[str, Any]) -> str:
    window = report["window"]
    esc = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kubetune report</title><style>{CSS}</style>"
           f"</head><body><h1>kubetune report</h1>",
           f"<p>Source {esc(report['source'])}; namespace {esc(report['namespace'] or 'all')}; window "
           f"{_date(window['start'], seconds=True)} to {_date(window['end'], seconds=True)}, step {window['step']:g} s, "
           f"{window['samples']} samples. Generated {esc(report['generatedAt'])}.</p>"]
    if report["notes"]:
        out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in report["notes"]) + "</ul>")
    totals = report["rightsizing"]["totals"]
    out.append("<section><h2>Rightsizing</h2><p>Recommended request per pod = the operator's recommendation: "
               "p90 of CPU usage and the memory peak over the window, each with 15 % headroom, never above the "
               f"largest node. Cluster-wide it frees <b>{_fmt('cpu', totals['cpu']['freed'])}</b> CPU and "
               f"<b>{_fmt('memory', totals['memory']['freed'])}</b> memory of requests; under-requested containers "
               f"need {_fmt('cpu', totals['cpu']['needed'])} CPU and {_fmt('memory', totals['memory']['needed'])} "
               "memory more.</p>")
    out.append(_table(["namespace", "workload", "container", "pods", "CPU request", "CPU p90", "CPU recommended",
                       "memory request", "memory peak", "memory recommended", "frees CPU", "frees memory"],
                      [[s["namespace"], s["workload"], s["container"], s["replicas"],
                        _fmt("cpu", s["current"].get("cpu")), _fmt("cpu", s["inputs"].get("cpu_p90")),
                        _fmt("cpu", s["recommended"].get("cpu")), _fmt("memory", s["current"].get("memory")),
                        _fmt("memory", s["inputs"].get("memory_peak")), _fmt("memory", s["recommended"].get("memory")),
                        _fmt("cpu", s["frees"].get("cpu"), signed=True),
                        _fmt("memory", s["frees"].get("memory"), signed=True)]
                       for s in report["rightsizing"]["containers"]]) + "</section>")
    out.append("<section><h2>Capacity planning</h2><p>Usage and requests of each namespace extrapolated along "
               "their Theil–Sen trend to the cluster's allocatable "
               f"({_fmt('cpu', report['capacity']['allocatable'].get('cpu'))} CPU, "
               f"{_fmt('memory', report['capacity']['allocatable'].get('memory'))} memory).</p>")
    out.append(_table(["scope", "resource", "measure", "now", "trend/day", "confidence", "reaches capacity"],
                      [[f["scope"], f["resource"], f["measure"], _fmt(f["resource"], f["now"]),
                        _fmt(f["resource"], f["slope_per_day"], signed=True), _number(f["confidence"]),
                        _reaches_capacity(f)]
                       for f in report["capacity"]["forecasts"]]) + "</section>")
    out.append("<section><h2>Workloads</h2><p>Usage (blue) against requests (grey), the recommendation (green, "
               "dashed), the Theil–Sen trend line (orange, dashed) and anomalies (red circles). Trend: Theil–Sen slope "
               "per day; patterns: autocorrelation of the detrended series at one day and one week.</p>")
    for w in report["workloads"]:
        out.append(f"<h3>{esc(w['kind'])} {esc(w['namespace'])}/{esc(w['workload'])} ({w['replicas']} pods)</h3>")
        rows = []
        for resource in RESOURCES:
            t = w["trend"][resource]
            patterns = "; ".join(f"{s['period']} {s['strength']:.2f}" + (" (pattern)" if s["detected"] else "")
                                 for s in w["seasonality"][resource] if s["strength"] is not None) or "too little data"
            relative = f" ({t['relative_per_day'] * 100:+.1f} %)" if t["relative_per_day"] is not None else ""
            rows.append([resource, _fmt(resource, w["usage"][resource]["mean"]), _fmt(resource, w["usage"][resource]["peak"]),
                         _fmt(resource, w["requests"][resource]["now"]), _fmt(resource, w["recommended"].get(resource)),
                         _fmt(resource, t["slope_per_day"], signed=True) + relative, _number(t["confidence"]),
                         patterns, len(w["anomalies"][resource])])
        out.append(_table(["resource", "mean", "peak", "requested", "recommended", "trend/day", "confidence",
                           "patterns (autocorrelation)", "anomalies"], rows))
        out.append("<div class='charts'>" + "".join(workload_chart(report, w, r) for r in RESOURCES) + "</div>")
        anomalies = [a for r in RESOURCES for a in w["anomalies"][r]]
        if anomalies:
            out.append("<ul>" + "".join(f"<li>{_date(a['time'], seconds=True)}: {esc(a['explanation'])}</li>"
                                        for a in anomalies[:20]) + "</ul>")
    out.append("</section></body></html>")
    return "\n".join(out)


def write_report(report: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    html_path, json_path = directory / "report.html", directory / "report.json"
    html_path.write_text(render_html(report))
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False))
    return html_path, json_path


# ---------------------------------------------------------------------------------------------
# Gathering: the only I/O
# ---------------------------------------------------------------------------------------------


def _matrix(result: list[dict], keys: Sequence[str], start: float, step: float, length: int) -> dict[tuple, FloatArray]:
    series = {}
    for item in result:
        values = np.full(length, np.nan)
        for t, v in item.get("values", []):
            index = round((float(t) - start) / step)
            if 0 <= index < length:
                values[index] = float(v)
        series[tuple(item["metric"].get(k, "") for k in keys)] = values
    return series


def _cluster_state(kubeconfig: str | None, namespace: str | None) -> tuple[list[dict], dict, list[dict]]:
    """Pods, workloads {(namespace, name): (kind, object)} and nodes, as plain API dicts."""
    import kubernetes

    from kubetune.kube import KubeError, connection_reason, load_api_client

    try:
        api = load_api_client(kubeconfig)
    except KubeError as e:
        raise ReportError(str(e)) from None
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    plain = api.sanitize_for_serialization

    def listing(namespaced, everywhere) -> list[dict]:
        result = namespaced(namespace) if namespace else everywhere()
        return plain(result).get("items", [])

    try:
        pods = listing(core.list_namespaced_pod, core.list_pod_for_all_namespaces)
        workloads = {}
        for kind, namespaced, everywhere in (
                ("Deployment", apps.list_namespaced_deployment, apps.list_deployment_for_all_namespaces),
                ("StatefulSet", apps.list_namespaced_stateful_set, apps.list_stateful_set_for_all_namespaces),
                ("DaemonSet", apps.list_namespaced_daemon_set, apps.list_daemon_set_for_all_namespaces)):
            for obj in listing(namespaced, everywhere):
                workloads[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = (kind, obj)
        nodes = plain(core.list_node()).get("items", [])
    except kubernetes.client.ApiException as e:
        raise ReportError(f"Kubernetes API: {e.status} {e.reason} (the report lists pods, workloads and nodes)") from e
    except Exception as e:  # connection errors
        raise ReportError(f"Kubernetes API: {connection_reason(e)}: check the kubeconfig's server") from e
    return pods, workloads, nodes


def _pod_workload(namespace: str, pod: str, live: Mapping[tuple[str, str], tuple[str, str]],
                  names_by_namespace: Mapping[str, list[str]]) -> str | None:
    """A pod's workload: its owner when the pod still exists, else the longest workload name
    `<workload>-` its name starts with (how controllers name pods; covers pods gone in a rollout)."""
    if (namespace, pod) in live:
        return live[(namespace, pod)][1]
    return next((w for w in names_by_namespace.get(namespace, []) if pod.startswith(w + "-")), None)


def gather(prometheus: Prometheus, *, kubeconfig: str | None = None, namespace: str | None = None,
           range_seconds: float = 7 * DAY, step: float = 3600.0, rate_window: float | None = None,
           end: float | None = None, progress: Callable[[str], None] = lambda message: None) -> ReportInput:
    """Read the window from Prometheus and today's pods, workloads and nodes from the cluster."""
    from kubernetes.utils import parse_quantity

    def query_range(what: str, expr: str) -> list[dict]:
        progress(f"reading {what} ({length} samples per series)")
        try:
            return prometheus.range_query(expr, start, end, step)
        except PrometheusUnavailable as e:
            raise ReportError(f"Prometheus: {e}") from None

    end = math.floor((time.time() if end is None else end) / step) * step
    start = end - math.floor(range_seconds / step) * step
    length = int(round((end - start) / step)) + 1
    window = prometheus_duration(rate_window or max(step, 60.0))
    selector = f'namespace="{namespace}"' if namespace else 'namespace!=""'
    keys = ("namespace", "pod", "container")
    notes = []

    try:
        prometheus.instant_query("vector(1)")  # reachable and answering, before the long queries
    except PrometheusUnavailable as e:
        raise ReportError(f"Prometheus: {e}") from None
    cpu = _matrix(query_range("CPU usage", cpu_usage(selector, window)), keys, start, step, length)
    memory = _matrix(query_range(
        "memory usage", f"max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{{{CONTAINERS_ONLY},{selector}}}[{window}]))"),
        keys, start, step, length)
    requested_raw = query_range(
        "requests", f"sum by (namespace, pod, container, resource) (kube_pod_container_resource_requests{{{selector},resource=~\"cpu|memory\"}})")
    requested = _matrix(requested_raw, (*keys, "resource"), start, step, length)
    if not requested_raw:
        notes.append("kube-state-metrics series (kube_pod_container_resource_requests) not found: requests are "
                     "today's pod templates, drawn flat over the window")
    try:
        oom = {tuple(item["metric"].get(k, "") for k in keys): float(item["value"][1]) for item in prometheus.instant_query(
            f"sum by (namespace, pod, container) (increase(container_oom_events_total{{{CONTAINERS_ONLY},{selector}}}"
            f"[{prometheus_duration(max(end - start, step))}]))", end)}
    except PrometheusUnavailable as e:
        raise ReportError(f"Prometheus: {e}") from None

    progress("reading pods, workloads and nodes")
    pods, workloads, nodes = _cluster_state(kubeconfig, namespace)
    live = {}
    replicas: dict[tuple[str, str], int] = defaultdict(int)
    for pod in pods:
        ref = owning_workload(pod)
        if ref is None or (ref.namespace, ref.name) not in workloads:
            continue
        live[(ref.namespace, pod["metadata"]["name"])] = (ref.kind, ref.name)
        if (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            replicas[(ref.namespace, ref.name)] += 1
    names_by_namespace: dict[str, list[str]] = defaultdict(list)
    for ns, name in workloads:
        names_by_namespace[ns].append(name)
    for names in names_by_namespace.values():
        names.sort(key=len, reverse=True)

    grouped: dict[tuple[str, str, str], list[tuple[str, str, str]]] = defaultdict(list)
    unowned = set()
    for key in set(cpu) | set(memory):
        ns, pod, container = key
        workload = _pod_workload(ns, pod, live, names_by_namespace)
        if workload is None:
            unowned.add((ns, pod))
            continue
        grouped[(ns, workload, container)].append(key)
    if unowned:
        notes.append(f"{len(unowned)} pods with usage belong to no Deployment, StatefulSet or DaemonSet "
                     f"(bare pods, Jobs, deleted workloads) and are left out")

    empty = np.full(length, np.nan)
    containers = []
    for (ns, workload, container), series_keys in sorted(grouped.items()):
        kind, obj = workloads[(ns, workload)]
        template = {c.name: c for c in template_containers(obj)}
        if container not in template:
            continue  # a container the workload no longer has: nothing to rightsize
        cpu_rows = np.vstack([cpu.get(k, empty) for k in series_keys])
        memory_rows = np.vstack([memory.get(k, empty) for k in series_keys])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
            cpu_per_pod = np.nanmean(cpu_rows, axis=0)
            memory_per_pod = np.nanmax(memory_rows, axis=0)
        requested_series = {}
        for resource in RESOURCES:
            rows = [requested[(*k, resource)] for k in series_keys if (*k, resource) in requested]
            if rows:
                requested_series[resource] = _sum_rows(rows, length)
        containers.append(ContainerUsage(
            namespace=ns, workload=workload, kind=kind, container=container,
            replicas=replicas.get((ns, workload), 0), requests=dict(template[container].requests),
            limits=dict(template[container].limits), cpu=_sum_rows(list(cpu_rows), length), cpu_per_pod=cpu_per_pod,
            memory=_sum_rows(list(memory_rows), length), memory_per_pod=memory_per_pod, requested=requested_series,
            oom_kills=sum(oom.get(k, 0.0) for k in series_keys if math.isfinite(oom.get(k, 0.0)))))
    if not containers:
        notes.append("no container usage of any workload in the window")

    allocatable: dict[str, float] = defaultdict(float)
    largest: dict[str, float] = defaultdict(float)
    for node in nodes:
        for resource in RESOURCES:
            amount = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
            if amount is not None:
                value = float(parse_quantity(amount))
                allocatable[resource] += value
                largest[resource] = max(largest[resource], value)
    return ReportInput(start=start, step=step, containers=tuple(containers), allocatable=dict(allocatable),
                       largest_node=dict(largest), notes=tuple(notes), source=prometheus.settings.prometheus_url, namespace=namespace)


__all__ = [
    "CapacityForecast", "ContainerUsage", "ReportError", "ReportInput", "Rightsizing",
    "Seasonality", "TrendPerDay", "autocorrelation", "build_report", "capacity_forecast", "choose_step", "gather",
    "parse_range", "render_html", "render_table", "rightsize", "rightsizing_totals", "seasonality",
    "svg_chart", "trend_per_day", "write_report",
]
