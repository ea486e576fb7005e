"""The analysis quality harness: labeled series, the detector's and the forecaster's figures.

What it measures (docs/analysis.md, "Measured quality", explains the choices and shows the table):

- **Detector** — every sample of every series is judged as the operator judges the newest sample of a
  cycle (the window ending at that sample, nothing later). The verdicts form alarm *runs* (consecutive
  samples in alarm = one incident = one AnomalyDetected Event). Against labeled anomaly windows:
  precision = runs that start inside a window / all runs; recall = windows in which a run starts /
  windows; F1; early-detection credit = mean over windows of 1 - 0.5 x (position of the first run
  start inside the window, 0..1), 0 when missed (NAB's idea: earlier is better, late still counts);
  false alarm runs per series-day = runs starting outside every window / judged series-days.
- **Forecaster** — at every evaluation where the series is below the threshold (the loop does not
  predict what already holds), the question "will the high-load rule's condition (above 80 for 5 min)
  begin within the horizon?" is answered yes/no. Precision and recall are over those evaluations
  (a per-cycle binary forecast); event recall = fresh crossings (none in the 30 min before) with at
  least one "yes" in the horizon before them; lead time = median minutes from the first such "yes"
  to the crossing. Reliability: the share of "yes" answers that came true, per band of confidence.

Methods side by side: `before` (a copy of the detector and forecaster as `predictions.analyse` called
them before issue 16 — a 20-sample robust z on the newest sample with min_deviation 10, Theil–Sen on
20 samples with Kendall's tau >= 0.6), `after` (kubetune.analysis today) and the naive baselines
(last-value slope, least squares of the last 5 and the last 20 points).

The series are synthetic and seeded (families below): the public benchmark of real cloud series the
product was first measured on cannot be downloaded here and is not included. Recorded series from
the real node can be dropped into tests/data/ as CSV (`timestamp,value[,label]`); see `load_recorded`.

Run: `make bench`, or `python tests/bench/analysis_quality.py [--quick] [--seed N]` (other seeds: the
same families drawn anew, to see that the figures are not an accident of the default ones), or
`--calibrate` to refit the forecaster's confidence (analysis.CONFIDENCE_SLOPE / CONFIDENCE_OFFSET).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kubetune import analysis
from kubetune.predictions import ANOMALY_FLOOR

CPU_FLOOR = ANOMALY_FLOOR["cpuUtilization"]  # the families are CPU utilisation, % of the request

DAY = 86_400.0
DETECTOR_STEP = 300.0  # 5-minute samples: the recording rule kubetune:container_cpu_usage_cores:rate5m
FORECAST_STEP = 60.0  # 1-minute samples for the forecaster (horizons of 15 and 60 samples)
THRESHOLD = 80.0  # the default high-load rule: cpuUtilization above 80 for 5m
SUSTAIN = 5  # samples (5 min at 1-minute steps) the level must hold to fire the rule
FRESH = 30  # samples (30 min) without a crossing before one counts as fresh
HORIZONS = (900.0, 3600.0)
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


# ---------------------------------------------------------------------------------------------
# Labeled series
# ---------------------------------------------------------------------------------------------


@dataclass
class Labeled:
    family: str
    values: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)  # [start, end) sample indexes


def _per_day(step: float) -> int:
    return int(DAY / step)


def _insert(series: Labeled, start: int, length: int, delta: np.ndarray | float, tail: int) -> None:
    """Add `delta` to samples [start, start+length) and label [start, start+length+tail)."""
    end = min(start + length, series.values.size)
    series.values[start:end] += np.asarray(delta)[: end - start] if np.ndim(delta) else delta
    series.windows.append((start, min(series.values.size, start + length + tail)))


def _daily_shape(n: int, step: float, rng: np.random.Generator) -> np.ndarray:
    """0..1 daily load curve: low at night, a broad day peak, its phase varied per series."""
    hours = (np.arange(n) * step / 3600.0 + rng.uniform(-1.5, 1.5)) % 24
    return np.clip(np.sin((hours - 7.0) / 14.0 * np.pi), 0.0, None) ** 1.5


def detector_families(seed: int = 16, per_family: int = 12, days: int = 14) -> dict[str, list[Labeled]]:
    """Families of 5-minute series with labeled anomaly windows; a third of each family is clean."""
    rng = np.random.default_rng(seed)
    step, n = DETECTOR_STEP, days * _per_day(DETECTOR_STEP)
    hour, day = int(3600 / step), _per_day(step)
    families: dict[str, list[Labeled]] = {}

    def anomaly_times(count: int) -> list[int]:
        # After the first day (the judging starts there) and apart from each other.
        slots = rng.choice(np.arange(day + 6 * hour, n - day - 8 * hour, 2 * day), size=count, replace=False)
        return sorted(int(s + rng.integers(0, day)) for s in slots)

    def build(name: str, make: Callable[[int], Labeled], inject: Callable[[Labeled, int], None]) -> None:
        out = []
        for i in range(per_family):
            series = make(i)
            if i % 3:  # two thirds carry anomalies, one third is clean
                for start in anomaly_times(int(rng.integers(1, 4))):
                    inject(series, start)
            out.append(series)
        families[name] = out

    def noise(scale: float, size: int, heavy: bool = False) -> np.ndarray:
        return scale * (rng.standard_t(3, size) / math.sqrt(3) if heavy else rng.standard_normal(size))

    def stationary(name: str, heavy: bool = False) -> Callable[[int], Labeled]:
        def make(i: int) -> Labeled:
            level = rng.uniform(10, 70)
            sd = level * (0.01, 0.05, 0.15)[i % 3]
            return Labeled(name, np.clip(level + noise(sd, n, heavy), 0, None))
        return make

    def spike_or_shift(series: Labeled, start: int) -> None:
        level = float(np.median(series.values[:day]))
        sd = float(np.median(np.abs(np.diff(series.values[:day])))) / 0.954 + 1e-9
        size = max(8 * sd, 0.5 * level) * rng.choice([-1, 1] if level > 20 else [1])
        if rng.random() < 0.5:
            _insert(series, start, int(rng.integers(1, 4)), size, 6)  # spike: 5-15 min
        else:
            _insert(series, start, int(rng.integers(4, 24)), size, 6)  # burst: 20 min-2 h

    build("noise", stationary("noise"), spike_or_shift)
    build("heavy-tail", stationary("heavy-tail", heavy=True), spike_or_shift)

    def idle(i: int) -> Labeled:
        level = rng.uniform(0.2, 3.0)
        return Labeled("idle", np.round(np.clip(level + noise(0.02 * level, n), 0, None), 2))

    def idle_anomaly(series: Labeled, start: int) -> None:
        level = float(np.median(series.values[:day]))
        _insert(series, start, int(rng.integers(2, 12)), level * rng.uniform(2, 6), 6)

    build("idle", idle, idle_anomaly)

    def level_shift(series: Labeled, start: int) -> None:
        level = float(np.median(series.values[:day]))
        if series.windows:
            return  # one persistent shift per series
        _insert(series, start, n, level * rng.uniform(0.6, 1.5) * rng.choice([-0.6, 1]), 2 * hour - n)

    build("level-shift", stationary("level-shift"), level_shift)

    def drift(series: Labeled, start: int) -> None:
        level = float(np.median(series.values[:day]))
        length = int(rng.integers(3, 8)) * hour
        _insert(series, start, length, np.linspace(0, level * rng.uniform(0.6, 1.2), length), 0)
        series.values[start + length : start + length + hour] += 0  # leak fixed by a restart: back to normal

    build("drift", stationary("drift"), drift)

    def daily(name: str, weekly: bool = False) -> Callable[[int], Labeled]:
        def make(i: int) -> Labeled:
            base, amplitude = rng.uniform(5, 30), rng.uniform(20, 50)
            shape = _daily_shape(n, step, rng)
            if weekly:
                weekday = (np.arange(n) // day + int(rng.integers(0, 7))) % 7
                shape = shape * np.where(weekday >= 5, 0.3, 1.0)
            values = base + amplitude * shape
            return Labeled(name, np.clip(values * (1 + noise(0.04, n)), 0, None))
        return make

    def contextual(series: Labeled, start: int) -> None:
        values = series.values
        kind = rng.integers(0, 3)
        if kind == 0:  # a burst at the day's peak level at an unusual time
            _insert(series, start, 12, float(np.max(values[start - day : start])) * 0.6, 6)
        elif kind == 1:  # a spike well above the usual range
            _insert(series, start, 3, float(np.max(values[start - day : start])) * 0.8, 6)
        else:  # load vanishes (an outage): flat at the night level for 2 h
            floor = float(np.min(values[start - day : start]))
            length = 24
            usual = float(np.mean(values[start - day : start - day + length]))
            values[start : start + length] = floor * (1 + noise(0.04, length))
            if usual - floor < 0.3 * float(np.max(values[start - day : start])):
                return  # at night an outage looks like the night itself: not labeled
            series.windows.append((start, start + length + 6))

    build("daily", daily("daily"), contextual)
    build("weekly", daily("weekly", weekly=True), contextual)

    def batch(i: int) -> Labeled:
        base, peak = rng.uniform(5, 20), rng.uniform(40, 70)
        minute = np.arange(n) * step / 60.0 % 60
        offset = rng.integers(0, 6) * 5
        job = ((minute - offset) % 60 < 10).astype(float)
        return Labeled("hourly-batch", np.clip(base + peak * job + noise(0.05 * base, n), 0, None))

    def batch_anomaly(series: Labeled, start: int) -> None:
        values = series.values
        high = float(np.max(values[start - day : start]))
        low = float(np.median(values[start - day : start]))
        if rng.random() < 0.5:  # a job that runs for an hour instead of ten minutes
            length = 12
            delta = np.clip(high - values[start : start + length], 0, None)
            _insert(series, start, length, delta, 6)
        else:  # a job far above its usual peak
            _insert(series, start, 2, high - low, 6)

    build("hourly-batch", batch, batch_anomaly)
    return families


def forecast_families(seed: int = 17, per_family: int = 10, days: int = 3) -> dict[str, list[np.ndarray]]:
    """1-minute CPU utilisation series (% of request) around the 80 % high-load threshold."""
    rng = np.random.default_rng(seed)
    n = days * _per_day(FORECAST_STEP)
    families: dict[str, list[np.ndarray]] = {}

    def noisy(level: np.ndarray, sd: float) -> np.ndarray:
        return np.clip(level + sd * rng.standard_normal(level.size), 0, None)

    def ramps(i: int) -> np.ndarray:
        level = np.full(n, rng.uniform(20, 55))
        start = int(rng.integers(60, 300))
        while start < n - 600:
            length = int(rng.integers(20, 240))  # minutes from the ramp's start to 80 %
            target = rng.uniform(85, 100)
            ramp = np.linspace(level[start], target, length)
            hold = int(rng.integers(30, 120))
            level[start : start + length] = ramp
            level[start + length : start + length + hold] = target
            level[start + length + hold :] = rng.uniform(20, 55)
            start += length + hold + int(rng.integers(240, 600))
        return noisy(level, (1.0, 3.0, 5.0)[i % 3])

    def rising_below(i: int) -> np.ndarray:
        # Ramps that level off below the threshold: the forecaster must not cry wolf.
        level = np.full(n, rng.uniform(20, 40))
        start = 120
        while start < n - 600:
            length = int(rng.integers(30, 180))
            top = rng.uniform(55, 72)
            level[start : start + length] = np.linspace(level[start], top, length)
            level[start + length :] = top
            hold = int(rng.integers(60, 240))
            level[start + length + hold :] = rng.uniform(20, 40)
            start += length + hold + int(rng.integers(120, 400))
        return noisy(level, (1.0, 3.0)[i % 2])

    def steps(i: int) -> np.ndarray:
        # Level shifts: most stay below (a deploy, a new tenant), some jump over (not predictable).
        level = np.full(n, rng.uniform(20, 45))
        t = 180
        while t < n - 300:
            level[t:] = rng.uniform(85, 95) if rng.random() < 0.25 else rng.uniform(20, 72)
            t += int(rng.integers(120, 600))
        return noisy(level, (1.0, 3.0)[i % 2])

    def daily(i: int) -> np.ndarray:
        hours = np.arange(n) * FORECAST_STEP / 3600.0
        peaks = rng.uniform(60, 100, days + 1)[(hours // 24).astype(int)]
        shape = np.clip(np.sin((hours % 24 - 7) / 14 * np.pi), 0, None) ** 1.5
        return noisy(20 + (peaks - 20) * shape, (1.0, 2.0, 4.0)[i % 3])

    def near(i: int) -> np.ndarray:
        # Hovering below the threshold: crossings are brief or noise; a good forecaster stays quiet.
        walk = np.cumsum(rng.standard_normal(n)) * 0.3
        walk -= np.convolve(walk, np.ones(240) / 240, mode="same")
        return noisy(rng.uniform(62, 72) + walk, (2.0, 4.0)[i % 2])

    def flapping(i: int) -> np.ndarray:
        # The soak's `fast` at this step: high and low in turn, each held 1-3 samples (shorter than
        # the rule's SUSTAIN), a mean below the threshold: the condition never begins.
        half = 1 + i % 3
        high, low = rng.uniform(95, 120), rng.uniform(10, 40)
        wave = np.where((np.arange(n) // half) % 2 == 0, high, low)
        return noisy(wave, 2.0)

    def flat_noise(i: int) -> np.ndarray:
        # The soak's `noise`: uniform noise of +-5 to +-10 points around a low level, shifted by 10 %
        # in turn up and down (the same load after a decrease, then after an increase).
        level = np.full(n, rng.uniform(15, 30))
        for k, t in enumerate(range(int(rng.integers(60, 240)), n, int(rng.integers(120, 480)))):
            level[t:] *= 1.1 if k % 2 == 0 else 1 / 1.1
        return np.clip(level + rng.uniform(-1, 1, n) * (5.0, 10.0)[i % 2], 0, None)

    # Negative families last: the seeded draws of the families above stay as they were.
    for name, make in (("ramps", ramps), ("rising-below", rising_below), ("steps", steps),
                       ("daily", daily), ("near-threshold", near), ("flapping", flapping),
                       ("flat-noise", flat_noise)):
        families[name] = [make(i) for i in range(per_family)]
    return families


def load_recorded(directory: Path = DATA_DIR) -> list[Labeled]:
    """Recorded series (CSV: timestamp,value[,label]; label 1 inside an anomaly window) at 5-minute steps."""
    out = []
    for path in sorted(directory.glob("*.csv")) if directory.is_dir() else []:
        rows = np.genfromtxt(path, delimiter=",", names=True, dtype=float)
        values = np.asarray(rows["value"], dtype=float)
        labels = np.asarray(rows["label"], dtype=bool) if "label" in (rows.dtype.names or ()) else np.zeros(values.size, bool)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], labels.astype(int), [0]])))
        out.append(Labeled(f"recorded:{path.stem}", values, list(zip(edges[::2], edges[1::2]))))
    return out


# ---------------------------------------------------------------------------------------------
# The detector before issue 16 (a copy, vectorised: 20 samples, robust z >= 3, min_deviation 10)
# ---------------------------------------------------------------------------------------------


def before_detector(values: np.ndarray, first: int) -> np.ndarray:
    """Alarm per sample from `first` on, as predictions.analyse judged the newest sample of 20."""
    windows = sliding_window_view(values, 20)  # window k ends at sample k + 19
    median = np.median(windows, axis=-1)
    deviation = np.abs(windows - median[:, None])
    scale = 1.4826 * np.median(deviation, axis=-1)
    flat = scale == 0
    scale[flat] = math.sqrt(math.pi / 2) * deviation[flat].mean(axis=-1)
    newest = windows[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale == 0, 0.0, (newest - median) / scale)
    alarm = (np.abs(z) >= 3.0) & (np.abs(newest - median) >= 10.0)
    out = np.zeros(values.size, bool)
    out[19:] = alarm
    out[:first] = False
    return out


def after_detector(values: np.ndarray, first: int) -> np.ndarray:
    """Alarm per sample from `first` on: kubetune.analysis.anomaly_incidents on the window ending there,
    with the floors predictions.analyse uses for cpuUtilization."""
    history = analysis.detector_window(DETECTOR_STEP)
    padded = np.concatenate([np.full(history - 1, np.nan), values])
    windows = sliding_window_view(padded, history)[first:]
    out = np.zeros(values.size, bool)
    chunk = 512
    for start in range(0, windows.shape[0], chunk):
        result = analysis.anomaly_incidents(windows[start : start + chunk], step=DETECTOR_STEP,
                                            floor_absolute=CPU_FLOOR.absolute, floor_relative=CPU_FLOOR.relative)
        out[first + start : first + start + result.active.size] = result.active
    return out


# ---------------------------------------------------------------------------------------------
# Forecasters: before, after and the naive baselines. Each returns (alarm, confidence) per sample.
# ---------------------------------------------------------------------------------------------


def _theil_sen_windows(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope per sample, level now and Kendall's tau in the slope's direction (before issue 16)."""
    n = windows.shape[-1]
    t = np.arange(n) - (n - 1.0)
    first, second = np.triu_indices(n, k=1)
    rises = windows[:, second] - windows[:, first]
    slope = np.median(rises / (t[second] - t[first]), axis=-1)
    tau = np.sign(rises).mean(axis=-1)
    level = np.median(windows - slope[:, None] * t, axis=-1)
    return slope, level, np.clip(tau * np.sign(slope), 0, 1)


def before_forecaster(values: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    windows = sliding_window_view(values, 20)
    slope, level, confidence = _theil_sen_windows(windows)
    crossing = (level >= THRESHOLD) | ((slope > 0) & (level + slope * horizon >= THRESHOLD))
    alarm = np.zeros(values.size, bool)
    conf = np.zeros(values.size)
    alarm[19:] = crossing & (confidence >= 0.6)
    conf[19:] = np.where(crossing, confidence, 0)
    return alarm, conf


def last_value_slope(values: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    slope = np.concatenate([[0.0], np.diff(values)])
    alarm = values + slope * horizon >= THRESHOLD
    return alarm, alarm.astype(float)


def least_squares(points: int) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    def forecast(values: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        windows = sliding_window_view(values, points)
        t = np.arange(points) - (points - 1.0)
        slope = ((windows - windows.mean(-1, keepdims=True)) * (t - t.mean())).sum(-1) / ((t - t.mean()) ** 2).sum()
        level = windows.mean(-1) - slope * t.mean()
        alarm = np.zeros(values.size, bool)
        alarm[points - 1 :] = level + slope * horizon >= THRESHOLD
        return alarm, alarm.astype(float)
    return forecast


def after_forecaster(values: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    points = analysis.forecast_window(FORECAST_STEP)
    padded = np.concatenate([np.full(points - 1, np.nan), values])
    windows = sliding_window_view(padded, points)
    result = analysis.forecast_batch(windows, step=FORECAST_STEP, horizon=horizon * FORECAST_STEP,
                                     thresholds=THRESHOLD)
    return result.will_cross, result.crossing_probability


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def runs(alarm: np.ndarray) -> np.ndarray:
    """Start indexes of runs of consecutive alarms."""
    return np.flatnonzero(alarm & ~np.concatenate([[False], alarm[:-1]]))


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


class _Counts:
    """Scores that add up over series and families: every field is summed (lists are joined)."""

    def add(self, other: _Counts) -> None:
        for name in (f.name for f in fields(self)):  # type: ignore[arg-type]
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class DetectorScore(_Counts):
    windows: int = 0
    detected: int = 0
    credit: float = 0.0
    true_runs: int = 0
    false_runs: int = 0
    series_days: float = 0.0

    @property
    def precision(self) -> float:
        return _ratio(self.true_runs, self.true_runs + self.false_runs)

    @property
    def recall(self) -> float:
        return _ratio(self.detected, self.windows)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def early(self) -> float:
        return _ratio(self.credit, self.windows)

    @property
    def false_per_day(self) -> float:
        return _ratio(self.false_runs, self.series_days)


def score_detector(alarm: np.ndarray, windows: list[tuple[int, int]], first: int, step: float) -> DetectorScore:
    score = DetectorScore(series_days=(alarm.size - first) * step / DAY)
    starts = runs(alarm)
    inside = np.zeros(starts.size, bool)
    for begin, end in windows:
        hits = (starts >= begin) & (starts < end)
        inside |= hits
        score.windows += 1
        if hits.any():
            score.detected += 1
            score.credit += 1 - 0.5 * (starts[hits][0] - begin) / max(1, end - begin)
    score.true_runs = int(inside.sum())
    score.false_runs = int((~inside).sum())
    return score


@dataclass
class ForecastScore(_Counts):
    alarms: int = 0
    correct: int = 0
    positives: int = 0
    caught: int = 0
    crossings: int = 0
    crossings_caught: int = 0
    leads: list[float] = field(default_factory=list)
    bands: np.ndarray = field(default_factory=lambda: np.zeros((10, 2)))  # per 0.1 of confidence: [evaluations, came true]

    @property
    def precision(self) -> float:
        return _ratio(self.correct, self.alarms)

    @property
    def recall(self) -> float:
        return _ratio(self.caught, self.positives)

    @property
    def event_recall(self) -> float:
        return _ratio(self.crossings_caught, self.crossings)

    @property
    def lead_minutes(self) -> float:
        return float(np.median(self.leads)) * FORECAST_STEP / 60 if self.leads else float("nan")


def rule_starts(values: np.ndarray) -> np.ndarray:
    """Where the rule's condition (above THRESHOLD for SUSTAIN samples) begins: a bool per sample."""
    above = values >= THRESHOLD
    held = np.zeros(values.size, bool)
    held[: values.size - SUSTAIN + 1] = sliding_window_view(above, SUSTAIN).all(-1)
    return held & ~np.concatenate([[False], held[:-1]])


def score_forecaster(values: np.ndarray, alarm: np.ndarray, confidence: np.ndarray, horizon: int,
                     first: int) -> ForecastScore:
    score = ForecastScore()
    starts = rule_starts(values)
    # truth[t]: the condition begins within (t, t + horizon]
    cumulative = np.concatenate([[0], np.cumsum(starts)])
    t = np.arange(values.size)
    truth = cumulative[np.minimum(t + horizon + 1, values.size)] - cumulative[np.minimum(t + 1, values.size)] > 0
    judged = (t >= first) & (values < THRESHOLD) & (t < values.size - horizon)
    said = alarm & judged
    score.alarms, score.correct = int(said.sum()), int((said & truth).sum())
    score.positives, score.caught = int((truth & judged).sum()), int((truth & said).sum())
    band = np.minimum((np.nan_to_num(confidence) * 10).astype(int), 9)
    np.add.at(score.bands, (band[judged], 0), 1)
    np.add.at(score.bands, (band[judged & truth], 1), 1)
    held = np.concatenate([[False], starts[:-1]])
    recent = np.concatenate([[0], np.cumsum(held)])
    for c in np.flatnonzero(starts):
        if c < first + horizon or c + 1 > values.size - 0 or recent[c] - recent[max(0, c - FRESH)] > 0:
            continue
        score.crossings += 1
        before = np.flatnonzero(said[c - horizon : c])
        if before.size:
            score.crossings_caught += 1
            score.leads.append(horizon - before[0])
    return score


# ---------------------------------------------------------------------------------------------
# Runs and the table
# ---------------------------------------------------------------------------------------------

DETECTORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"before": before_detector, "after": after_detector}
FORECASTERS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]] = {
    "before": before_forecaster,
    "after": after_forecaster,
    "last-slope": last_value_slope,
    "lsq-5": least_squares(5),
    "lsq-20": least_squares(20),
}


def evaluate_detectors(families: dict[str, list[Labeled]]) -> dict[str, dict[str, DetectorScore]]:
    first = _per_day(DETECTOR_STEP)  # every method is judged from the second day on
    table: dict[str, dict[str, DetectorScore]] = {}
    for family, members in families.items():
        row = table.setdefault(family, {})
        for name, detector in DETECTORS.items():
            score = DetectorScore()
            for series in members:
                score.add(score_detector(detector(series.values, first), series.windows, first, DETECTOR_STEP))
            row[name] = score
    overall = {name: DetectorScore() for name in DETECTORS}
    for row in table.values():
        for name, score in row.items():
            overall[name].add(score)
    table["overall"] = overall
    return table


def evaluate_forecasters(families: dict[str, list[np.ndarray]]) -> dict[float, dict[str, dict[str, ForecastScore]]]:
    out: dict[float, dict[str, dict[str, ForecastScore]]] = {}
    first = 120
    for horizon_seconds in HORIZONS:
        horizon = int(horizon_seconds / FORECAST_STEP)
        table: dict[str, dict[str, ForecastScore]] = {}
        for family, members in families.items():
            row = table.setdefault(family, {})
            for name, forecaster in FORECASTERS.items():
                score = ForecastScore()
                for values in members:
                    alarm, confidence = forecaster(values, horizon)
                    score.add(score_forecaster(values, alarm, confidence, horizon, first))
                row[name] = score
        overall = {name: ForecastScore() for name in FORECASTERS}
        for row in table.values():
            for name, score in row.items():
                overall[name].add(score)
        table["overall"] = overall
        out[horizon_seconds] = table
    return out


def _f(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def detector_lines(table: dict[str, dict[str, DetectorScore]]) -> Iterator[str]:
    yield ("| family | windows | precision before / after | recall before / after | F1 before / after "
           "| early credit before / after | false alarm runs per series-day before / after |")
    yield "|---|---|---|---|---|---|---|"
    for family, row in table.items():
        b, a = row["before"], row["after"]
        yield (f"| {family} | {a.windows} | {_f(b.precision)} / **{_f(a.precision)}** | {_f(b.recall)} / "
               f"**{_f(a.recall)}** | {_f(b.f1)} / **{_f(a.f1)}** | {_f(b.early)} / **{_f(a.early)}** | "
               f"{_f(b.false_per_day)} / **{_f(a.false_per_day, 3)}** |")


def forecaster_lines(tables: dict[float, dict[str, dict[str, ForecastScore]]]) -> Iterator[str]:
    names = list(FORECASTERS)
    for horizon, table in tables.items():
        yield f"Horizon {horizon / 60:.0f} min — precision / recall per evaluation; event recall; median lead (min)"
        yield "| family | " + " | ".join(names) + " |"
        yield "|---|" + "---|" * len(names)
        for family, row in table.items():
            cells = []
            for name in names:
                s = row[name]
                cell = f"{_f(s.precision)} / {_f(s.recall)}; {_f(s.event_recall)}; {_f(s.lead_minutes, 0)}"
                cells.append(f"**{cell}**" if name == "after" else cell)
            yield f"| {family} | " + " | ".join(cells) + " |"
        yield ""
        bands = table["overall"]["after"].bands
        yield "Reliability of `after`: evaluations per confidence band and the share in which the rule's condition began within the horizon"
        yield "| band | " + " | ".join(f"{b / 10:.1f}-{(b + 1) / 10:.1f}" for b in range(10)) + " |"
        yield "|---|" + "---|" * 10
        yield "| evaluations | " + " | ".join(str(int(bands[b, 0])) for b in range(10)) + " |"
        yield "| came true | " + " | ".join(_f(bands[b, 1] / bands[b, 0]) if bands[b, 0] else "-"
                                             for b in range(10)) + " |"
        yield ""


def calibrate(seed: int = 99) -> tuple[float, float]:
    """Fit the forecaster's confidence (Platt scaling: P = 1 / (1 + exp(-(a * score + b))), score = the
    forecast's distance beyond the threshold in spreads) on a *separate* seed of the forecast families,
    both horizons pooled; prints and returns (a, b) for analysis.CONFIDENCE_SLOPE / CONFIDENCE_OFFSET."""
    scores, truths = [], []
    for members in forecast_families(seed=seed, per_family=6).values():
        for values in members:
            points = analysis.forecast_window(FORECAST_STEP)
            windows = sliding_window_view(np.concatenate([np.full(points - 1, np.nan), values]), points)
            for horizon_seconds in HORIZONS:
                horizon = int(horizon_seconds / FORECAST_STEP)
                result = analysis.forecast_batch(windows, step=FORECAST_STEP, horizon=horizon_seconds)
                score = (result.value_at_horizon - THRESHOLD) / result.spread
                starts = np.concatenate([[0], np.cumsum(rule_starts(values))])
                t = np.arange(values.size)
                truth = starts[np.minimum(t + horizon + 1, values.size)] - starts[np.minimum(t + 1, values.size)] > 0
                judged = (t >= 120) & (values < THRESHOLD) & (t < values.size - horizon) & np.isfinite(score)
                scores.append(score[judged])
                truths.append(truth[judged])
    x, y = np.concatenate(scores), np.concatenate(truths).astype(float)
    # Far below the threshold (6 spreads and more) the answer is no, and a crossing there is a jump
    # nobody forecasts; fitting those would flatten the curve where the decision is made.
    near = x > -6
    x, y = x[near], y[near]
    def log_loss(a: float, b: float) -> float:
        z = a * x + b
        return float((np.logaddexp(0, z) - y * z).sum())

    # A grid, then a finer one around the best: two parameters need no optimiser.
    a, b, width = 1.0, 0.0, 2.0
    for _ in range(6):
        grid = [(a + da, b + db) for da in np.linspace(-width, width, 21) for db in np.linspace(-2 * width, 2 * width, 21)
                if a + da > 0]
        a, b = min(grid, key=lambda ab: log_loss(*ab))
        width /= 4
    print(f"calibration on seed {seed}: {x.size} evaluations within 6 spreads, {int(y.sum())} positive: "
          f"CONFIDENCE_SLOPE = {a:.3f}, CONFIDENCE_OFFSET = {b:.3f}")
    return float(a), float(b)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else None
    if "--calibrate" in argv:
        calibrate()
        return
    started = time.perf_counter()
    families = detector_families(per_family=6 if quick else 12, **({"seed": seed} if seed is not None else {}))
    recorded = load_recorded()
    if recorded:
        families["recorded"] = recorded
    print(f"Detector: {sum(len(m) for m in families.values())} series of 5-minute samples "
          f"({', '.join(families)}); synthetic and seeded — no real benchmark series are included")
    for line in detector_lines(evaluate_detectors(families)):
        print(line)
    print()
    print("Forecaster: 1-minute series, threshold 80 % held 5 min; before = Theil-Sen on 20 samples, tau >= 0.6")
    forecasts = forecast_families(per_family=5 if quick else 10, **({"seed": seed + 1} if seed is not None else {}))
    for line in forecaster_lines(evaluate_forecasters(forecasts)):
        print(line)
    print(f"(harness ran in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
