"""kubetune.report's pure functions on generated series with known answers, and the CLI's arguments."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from kubetune import cli
from kubetune import report as r

pytestmark = pytest.mark.unit

HOUR = 3600.0
GI = 2.0**30
MI = 2.0**20


def usage(namespace="shop", workload="web", container="app", *, replicas=2, requests=None, cpu=0.2, memory=256 * MI,
          samples=48, kind="Deployment") -> r.ContainerUsage:
    cpu_series = np.full(samples, cpu) if np.isscalar(cpu) else np.asarray(cpu, dtype=float)
    memory_series = np.full(samples, memory) if np.isscalar(memory) else np.asarray(memory, dtype=float)
    return r.ContainerUsage(namespace, workload, kind, container, replicas,
                            requests if requests is not None else {"cpu": 1.0, "memory": GI}, {},
                            cpu_series * replicas, cpu_series, memory_series * replicas, memory_series)


def report_of(*containers, allocatable=None, largest=None, step=HOUR) -> dict:
    data = r.ReportInput(start=1.7e9, step=step, containers=containers,
                         allocatable=allocatable or {"cpu": 16.0, "memory": 64 * GI},
                         largest_node=largest or {"cpu": 8.0, "memory": 32 * GI})
    return r.build_report(data, generated=1.7e9)


# --- pattern recognition ---------------------------------------------------------------------------


def test_daily_seasonality_found_on_a_sine_with_a_24_step_period():
    t = np.arange(24 * 14)
    noise = np.random.default_rng(0).normal(0, 0.05, t.size)
    series = 1 + 0.5 * np.sin(2 * np.pi * t / 24) + 0.01 * t + noise  # a trend must not hide or fake it
    daily, weekly = r.seasonality(series, HOUR)
    assert (daily.period, daily.lag) == ("daily", 24)
    assert daily.detected and daily.strength > 0.9
    assert weekly.lag == 168 and weekly.detected  # a daily pattern also repeats every week


def test_no_seasonality_on_noise_nor_on_a_trend_alone():
    rng = np.random.default_rng(1)
    for series in (rng.normal(1, 0.1, 24 * 14), 1 + 0.05 * np.arange(24 * 14) + rng.normal(0, 0.1, 24 * 14)):
        daily, weekly = r.seasonality(series, HOUR)
        assert not daily.detected and abs(daily.strength) < 0.3
        assert not weekly.detected and abs(weekly.strength) < 0.3


def test_seasonality_needs_two_periods():
    daily, weekly = r.seasonality(np.sin(np.arange(30) / 3), HOUR)
    assert daily.strength is None and not daily.detected and "48 samples" in daily.explanation
    assert weekly.strength is None
    assert r.autocorrelation(np.ones(100), 24) is None  # no variation: nothing to correlate


def test_weekly_only_pattern_found_at_a_week_not_at_a_day():
    t = np.arange(24 * 7 * 3)
    weekend = ((t // 24) % 7 >= 5).astype(float)  # busy on two days a week
    daily, weekly = r.seasonality(1 + weekend, HOUR)
    assert weekly.detected and weekly.strength > 0.9
    assert daily.strength < weekly.strength


# --- trending and capacity -----------------------------------------------------------------------


def test_trend_per_day_of_a_known_slope():
    series = 2.0 + 0.25 * np.arange(24 * 7) / 24  # +0.25 cores a day
    trend = r.trend_per_day(series, HOUR)
    assert trend.slope_per_day == pytest.approx(0.25)
    assert trend.level == pytest.approx(series[-1])
    assert trend.relative_per_day == pytest.approx(0.25 / series[-1])
    assert trend.confidence == pytest.approx(1.0)


def test_capacity_exhaustion_date_for_a_known_slope():
    series = 4.0 + 0.1 * np.arange(24 * 7) / 24  # +0.1 cores a day; now 4.0 + 0.1 * 167/24
    end = 1.7e9
    forecast = r.capacity_forecast(series, HOUR, 10.0, end=end, scope="shop", resource="cpu", measure="usage")
    expected_days = (10.0 - series[-1]) / 0.1
    assert forecast.exhausted_in_seconds == pytest.approx(expected_days * r.DAY, rel=1e-6)
    assert forecast.exhausted_at == pytest.approx(end + expected_days * r.DAY, rel=1e-9)
    assert forecast.slope_per_day == pytest.approx(0.1)
    assert "reaches the capacity" in forecast.explanation


def test_capacity_flat_and_already_exhausted():
    flat = r.capacity_forecast(np.full(48, 3.0), HOUR, 10.0, end=0, scope="s", resource="cpu", measure="requests")
    assert flat.exhausted_in_seconds is None and flat.exhausted_at is None
    assert "does not reach" in flat.explanation
    over = r.capacity_forecast(np.full(48, 12.0), HOUR, 10.0, end=0, scope="s", resource="cpu", measure="requests")
    assert over.exhausted_in_seconds == 0 and "already" in over.explanation
    # Beyond the horizon (a year) is "not within".
    slow = r.capacity_forecast(1 + 0.001 * np.arange(48) / 24, HOUR, 10.0, end=0, scope="s", resource="cpu",
                               measure="usage")
    assert slow.exhausted_in_seconds is None


# --- rightsizing ------------------------------------------------------------------------------------


def test_rightsizing_uses_the_operators_recommendation():
    cpu = np.linspace(0.1, 0.3, 101)  # p90 = 0.28
    item = r.rightsize(usage(cpu=cpu, memory=np.full(101, 200 * MI), samples=101), {"cpu": 8.0, "memory": 32 * GI})
    assert item.recommended["cpu"] == pytest.approx(0.28 * 1.15)
    assert item.recommended["memory"] == pytest.approx(200 * MI * 1.15)
    assert item.frees["cpu"] == pytest.approx((1.0 - 0.28 * 1.15) * 2)
    assert item.frees["memory"] == pytest.approx((GI - 200 * MI * 1.15) * 2)


def test_rightsizing_sums_cluster_wide():
    items = [
        r.rightsize(usage("a", "web", replicas=2, requests={"cpu": 1.0, "memory": GI}, cpu=0.2, memory=256 * MI), {}),
        r.rightsize(usage("b", "db", replicas=3, requests={"cpu": 0.5, "memory": GI}, cpu=0.1, memory=512 * MI), {}),
        r.rightsize(usage("c", "hot", replicas=1, requests={"cpu": 0.1, "memory": 128 * MI}, cpu=0.5, memory=256 * MI), {}),
        r.rightsize(usage("c", "unset", replicas=4, requests={}, cpu=0.5, memory=256 * MI), {}),  # nothing to free
    ]
    totals = r.rightsizing_totals(items)
    freed_cpu = (1.0 - 0.2 * 1.15) * 2 + (0.5 - 0.1 * 1.15) * 3
    needed_cpu = (0.5 * 1.15 - 0.1) * 1
    assert totals["cpu"]["freed"] == pytest.approx(freed_cpu)
    assert totals["cpu"]["needed"] == pytest.approx(needed_cpu)
    assert totals["cpu"]["net"] == pytest.approx(freed_cpu - needed_cpu)
    freed_memory = (GI - 256 * MI * 1.15) * 2 + (GI - 512 * MI * 1.15) * 3
    assert totals["memory"]["freed"] == pytest.approx(freed_memory)
    assert totals["memory"]["needed"] == pytest.approx(256 * MI * 1.15 - 128 * MI)
    assert items[3].frees == {} and items[3].recommended["cpu"] == pytest.approx(0.575)


def test_rightsizing_never_above_the_largest_node():
    item = r.rightsize(usage(cpu=6.0, requests={"cpu": 2.0}), {"cpu": 4.0})
    assert item.recommended["cpu"] == 4.0


# --- the whole report --------------------------------------------------------------------------------


def test_flat_series_trigger_nothing():
    report = report_of(usage())
    workload = report["workloads"][0]
    for resource in ("cpu", "memory"):
        assert workload["anomalies"][resource] == []
        assert workload["trend"][resource]["slope_per_day"] == 0
        assert not any(s["detected"] for s in workload["seasonality"][resource])
    assert all(f["exhausted_in_seconds"] is None for f in report["capacity"]["forecasts"])


def test_report_sections_anomaly_and_outputs(tmp_path):
    t = np.arange(24 * 7)
    rng = np.random.default_rng(3)
    cpu = 0.3 + 0.1 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.005, t.size)
    cpu[120] = 1.2  # an injected spike among seasonal noise
    cpu[5] = np.nan  # a missing sample
    report = report_of(usage(cpu=cpu, samples=t.size), usage("other", "api", replicas=1, cpu=0.05, samples=t.size),
                       allocatable={"cpu": 4.0, "memory": 8 * GI})
    web = next(w for w in report["workloads"] if w["workload"] == "web")
    assert web["usage"]["cpu"]["series"][5] is None
    assert web["requests"]["cpu"]["now"] == pytest.approx(2.0)  # 1 core x 2 pods, today's requests drawn flat
    assert [a["index"] for a in web["anomalies"]["cpu"]] == [120]
    assert web["anomalies"]["cpu"][0]["value"] == pytest.approx(2.4)
    daily = next(s for s in web["seasonality"]["cpu"] if s["period"] == "daily")
    assert daily["detected"]
    assert web["recommended"]["memory"] == pytest.approx(256 * MI * 1.15 * 2)
    scopes = {(f["scope"], f["resource"], f["measure"]) for f in report["capacity"]["forecasts"]}
    assert ("all namespaces", "cpu", "requests") in scopes and ("shop", "memory", "usage") in scopes

    html_path, json_path = r.write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["workloads"][0]["workload"] in {"web", "api"}
    page = html_path.read_text()
    assert page.count("<svg") == 4 and "anomaly:" in page and "<script" not in page
    table = r.render_table(report)
    assert "shop" in table and "Rightsizing frees" in table and "Pattern shop/web cpu" in table


def test_too_few_samples_give_nulls_not_nan(tmp_path):
    report = report_of(usage(samples=3, cpu=np.array([0.1, np.nan, 0.2]), memory=np.array([np.nan] * 3)))
    workload = report["workloads"][0]
    assert workload["trend"]["cpu"]["slope_per_day"] is None and workload["usage"]["memory"]["peak"] is None
    json.dumps(report, allow_nan=False)
    html_path, _ = r.write_report(report, tmp_path)
    page = html_path.read_text()
    assert "<svg" in page and "no data" not in r.render_table(report)
    # No trend, so no projection: the capacity table says so instead of "not within a year".
    memory = [f for f in report["capacity"]["forecasts"] if f["resource"] == "memory" and f["measure"] == "usage"]
    assert memory and memory[0]["slope_per_day"] is None
    assert "too little data for a trend" in page and "not within a year" not in page


def test_svg_chart_breaks_lines_at_missing_samples():
    svg = r.svg_chart([0, 1, 2, 3, 4], [r.Line("usage", [1, 2, None, 3, 4], "#000")], resource="cpu", title="t<1>",
                      markers=[(3, 3.0)])
    assert svg.count("<polyline") == 2 and "t&lt;1&gt;" in svg and svg.count('stroke="#d62728"') == 1


@pytest.mark.parametrize("high, ticks", [
    (0.45, [0, 0.1, 0.2, 0.3, 0.4, 0.5]),
    (1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),      # the top is a tick, not 10 % above the data
    (730, [0, 200, 400, 600, 800]),
    (3.2, [0, 1, 2, 3, 4]),
    (0, [0, 1]),
], ids=["fraction", "exact-top", "hundreds", "units", "empty"])
def test_nice_ticks_end_on_a_tick_at_or_above_the_data(high, ticks):
    assert r.nice_ticks(high) == pytest.approx(ticks)


def test_time_ticks_are_whole_hours_or_days_within_the_window():
    start = 1_767_225_600.0 + 1234  # 2026-01-01 00:20:34 UTC
    ticks = r.time_ticks(start, start + 6 * 3600)
    assert [label for _, label in ticks] == ["01:00", "02:00", "03:00", "04:00", "05:00", "06:00"]
    assert all(start <= t <= start + 6 * 3600 and t % 3600 == 0 for t, _ in ticks)
    week = r.time_ticks(start, start + 7 * r.DAY)
    assert 4 <= len(week) <= 8 and all(t % r.DAY == 0 for t, _ in week) and week[0][1] == "01-02"


@pytest.mark.parametrize("resource, high, unit", [
    ("cpu", 0.5, "m"), ("cpu", 2.5, ""), ("memory", 300 * 2**20, "Mi"), ("memory", 3 * 2**30, "Gi")])
def test_one_unit_per_axis(resource, high, unit):
    assert r.axis_unit(resource, high)[1] == unit


def test_chart_axes_span_exactly_the_data_with_ticks_labels_and_units():
    times = [1_767_225_600.0 + i * 3600 for i in range(25)]  # one day of hours
    svg = r.svg_chart(times, [r.Line("usage", [0.1 + 0.3 * (i % 5) / 4 for i in range(25)], "#000")],
                      resource="cpu", title="t")
    y_labels = re.findall(r'class="ytick">([^<]+)<', svg)
    assert y_labels == ["0m", "100m", "200m", "300m", "400m"]  # all millicores, ending on the top tick
    x_labels = re.findall(r'class="xtick">([^<]+)<', svg)
    assert len(x_labels) >= 4 and x_labels[0] == "01-01 00:00" and x_labels[-1] == "01-02 00:00"
    assert "CPU (millicores)" in svg and "time (UTC)" in svg
    xs = [float(v) for v in re.findall(r'(\d+\.\d),\d+\.\d', svg)]
    assert min(xs) == 72.0 and max(xs) == 640 - 16  # the first and last sample sit on the axis' ends


def test_cpu_is_written_as_kubernetes_quantities():
    assert [r._fmt("cpu", v) for v in (0.5, 1.0, 1.5, 2.0, 0.0004)] == ["500m", "1", "1500m", "2", "0m"]


def test_parse_range_is_the_one_duration_grammar():
    assert r.parse_range("168h") == 7 * r.DAY
    assert r.parse_range("1h30m") == 5400
    assert r.parse_range("5s") == 5
    for bad in ("", "7", "1x", "d7"):
        with pytest.raises(ValueError):
            r.parse_range(bad)
    with pytest.raises(ValueError, match="write 168h"):  # Prometheus' days are refused, with the hours to write
        r.parse_range("7d")
    assert r.prometheus_duration(60) == "60s" and r.prometheus_duration(0.5) == "500ms"


@pytest.mark.parametrize("range_, requested, expected", [
    ("168h", None, 3600),        # the default step
    ("2m", None, 1.2),           # short ranges: range / 100
    ("168h", "5m", 300),         # 2,017 points: kept
    ("720h", "1m", 300),         # 43,201 points: the shortest nice step under 11,000
    ("17520h", None, 7200),      # two years of hours: 17,521 points -> 2h
    ("87600h", "1h", 43200),     # ten years: 12h (7,301 points)
], ids=["default", "short-range", "within-limit", "30d-at-1m", "2y-default", "10y"])
def test_choose_step_stays_within_prometheus_point_limit(range_, requested, expected):
    range_seconds = r.parse_range(range_)
    step = r.choose_step(range_seconds, r.parse_range(requested) if requested else None)
    assert step == expected and range_seconds / step + 1 <= r.MAX_POINTS


def test_cli_report_arguments(capsys):
    args = cli._parser().parse_args(["report", "--prometheus-url", "http://p:9090", "--range", "2m", "--step", "5s"])
    assert (args.command, args.range_seconds, args.step, args.rate_window) == ("report", 120, 5, None)
    assert args.output == cli.DEFAULT_OUTPUT  # --output is optional
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["report", "--prometheus-url", "u", "--range", "week", "--output", "o"])
    assert "invalid duration" in capsys.readouterr().err
    assert cli.main(["report", "--prometheus-url", "http://u", "--range", "1m", "--step", "1h", "--output", "o"]) == 2
