"""The evaluation loop's own analysis figures: the harness's labeled series (analysis_quality.py) judged
through `predictions.analyse`, exactly as the loop calls it, next to the harness's direct calls.

What the loop builds and this feeds, per judged sample (the newest of a cycle):
- Detector: `ContainerSignals.cpu_history` as `WorkloadHistory.get` returns it — float32 cores (the
  series in % of a 500m request, converted), the 2,328 steps of 5 minutes ending at the sample, steps
  before the series began left out — and no recent series; analyse divides by the request again and
  calls `detect_incident` with the policy's threshold (3.0) and the cpuUtilization floors. An alarm is
  an explanation naming `app cpuUtilization` in `Insights.anomalies`.
- Forecaster: `ContainerSignals.cpu_series` = the workload's last hour (the loop asks it at the query
  step, 15 s by default; the harness's families have 1-minute samples, so here it is 60 samples at
  60 s, the same hour), the default rules (high-load above 80 for 5m) and `prediction.horizon` 15m or 1h.
  A "yes" is a predicted rule hit in `Insights.predicted_hits` (none when the newest sample is already
  above the threshold: the rule itself decides then, as the harness's scoring assumes).

Every sample is one `analyse` call (~1.5 ms for the detector), so the default runs a subset of each
family (`--per-family`, default 3 detector / 2 forecaster series); the harness's figures are printed on
the same subset. Run: `python -m tests.bench.loop_analysis_quality [--per-family N] [--seed N]`.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from kubetune import analysis
from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.decisions import ContainerSignals, WorkloadSignals
from kubetune.predictions import analyse
from tests.bench.analysis_quality import (
    DETECTOR_STEP,
    FORECAST_STEP,
    HORIZONS,
    DetectorScore,
    ForecastScore,
    _f,
    _per_day,
    after_detector,
    after_forecaster,
    detector_families,
    forecast_families,
    score_detector,
    score_forecaster,
)

REQUEST = 0.5  # cores: the series are % of it
HISTORY_POINTS = analysis.detector_window(DETECTOR_STEP)
FORECAST_POINTS = int(analysis.FORECAST_WINDOW_SECONDS / FORECAST_STEP)


def policy(**overrides) -> PerformancePolicySpec:
    body = {"targetRef": {"kind": "Deployment", "name": "app"}, "prediction": {"enabled": False},
            "anomalyDetection": {"enabled": False}}
    body.update(overrides)
    return PerformancePolicySpec.model_validate(body)


def signals(*, history: np.ndarray = (), series: tuple[float, ...] = ()) -> WorkloadSignals:
    return WorkloadSignals(containers=(ContainerSignals("app", {"cpu": REQUEST}, {}, cpu_history=history,
                                                        cpu_series=series),),
                           history_step_seconds=DETECTOR_STEP)


def loop_detector(values: np.ndarray, first: int) -> np.ndarray:
    spec = policy(anomalyDetection={"enabled": True, "threshold": 3.0})
    cores = (values * REQUEST / 100).astype(np.float32)  # as WorkloadHistory stores it
    alarm = np.zeros(values.size, bool)
    for t in range(first, values.size):
        history = cores[max(0, t - HISTORY_POINTS + 1): t + 1]
        insights = analyse(spec, signals(history=history), step_seconds=15.0)
        alarm[t] = any(" cpuUtilization" in a for a in insights.anomalies)
    return alarm


def loop_forecaster(values: np.ndarray, horizon: int) -> np.ndarray:
    spec = policy(prediction={"enabled": True, "horizon": f"{horizon * FORECAST_STEP / 60:.0f}m"})
    cores = values * REQUEST / 100
    alarm = np.zeros(values.size, bool)
    for t in range(values.size):
        hour = tuple(cores[max(0, t - FORECAST_POINTS + 1): t + 1])
        alarm[t] = bool(analyse(spec, signals(series=hour), step_seconds=FORECAST_STEP).predicted_hits)
    return alarm


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    per_family = int(argv[argv.index("--per-family") + 1]) if "--per-family" in argv else None
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else None
    started = time.perf_counter()
    families = detector_families(per_family=per_family or 3, **({"seed": seed} if seed is not None else {}))
    first = _per_day(DETECTOR_STEP)
    print(f"Detector through predictions.analyse: {sum(len(m) for m in families.values())} series "
          f"(the harness's families, {per_family or 3} each), judged from the second day on")
    print("| family | windows | precision harness / loop | recall harness / loop | false alarm runs per series-day harness / loop |")
    print("|---|---|---|---|---|")
    overall = {"harness": DetectorScore(), "loop": DetectorScore()}
    agree = judged = 0
    for family, members in families.items():
        row = {"harness": DetectorScore(), "loop": DetectorScore()}
        for series in members:
            direct, loop = after_detector(series.values, first), loop_detector(series.values, first)
            agree += int((direct == loop)[first:].sum())
            judged += series.values.size - first
            for name, alarm in (("harness", direct), ("loop", loop)):
                score = score_detector(alarm, series.windows, first, DETECTOR_STEP)
                row[name].add(score)
                overall[name].add(score)
        h, lp = row["harness"], row["loop"]
        print(f"| {family} | {lp.windows} | {_f(h.precision)} / **{_f(lp.precision)}** | {_f(h.recall)} / "
              f"**{_f(lp.recall)}** | {_f(h.false_per_day, 3)} / **{_f(lp.false_per_day, 3)}** |")
    h, lp = overall["harness"], overall["loop"]
    print(f"| overall | {lp.windows} | {_f(h.precision)} / **{_f(lp.precision)}** | {_f(h.recall)} / "
          f"**{_f(lp.recall)}** | {_f(h.false_per_day, 3)} / **{_f(lp.false_per_day, 3)}** |")
    print(f"(the loop's verdict equals the harness's on {agree} of {judged} judged samples)")
    print()
    forecasts = forecast_families(per_family=per_family or 2, **({"seed": seed + 1} if seed is not None else {}))
    print(f"Forecaster through predictions.analyse: {sum(len(m) for m in forecasts.values())} series "
          f"({per_family or 2} per family), the last hour of 1-minute samples, default rules")
    print("| horizon | family | precision harness / loop | recall harness / loop | event recall harness / loop |")
    print("|---|---|---|---|---|")
    agree = judged = 0
    for horizon_seconds in HORIZONS:
        horizon = int(horizon_seconds / FORECAST_STEP)
        overall_f = {"harness": ForecastScore(), "loop": ForecastScore()}
        for family, members in list(forecasts.items()) + [("overall", None)]:
            row = overall_f if members is None else {"harness": ForecastScore(), "loop": ForecastScore()}
            for values in members or ():
                direct, _ = after_forecaster(values, horizon)
                loop = loop_forecaster(values, horizon)
                scored = (np.arange(values.size) >= 120) & (values < 80)  # as score_forecaster judges
                agree += int((direct == loop)[scored].sum())
                judged += int(scored.sum())
                for name, alarm in (("harness", direct), ("loop", loop)):
                    score = score_forecaster(values, alarm, np.zeros(values.size), horizon, 120)
                    row[name].add(score)
                    overall_f[name].add(score)
            h, lp = row["harness"], row["loop"]
            print(f"| {horizon_seconds / 60:.0f} min | {family} | {_f(h.precision)} / **{_f(lp.precision)}** | "
                  f"{_f(h.recall)} / **{_f(lp.recall)}** | {_f(h.event_recall)} / **{_f(lp.event_recall)}** |")
    print(f"(the loop's answer equals the harness's on {agree} of {judged} judged evaluations; ran in "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
