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

Three modules: `build` (the model and analyses, pure), `render` (table, HTML, files) and `gather` (the
only I/O). This package re-exports what the CLI and tests use.
"""

from __future__ import annotations

from kubetune.report.build import (
    DAY, MAX_POINTS, WEEK, CapacityForecast, ContainerUsage, ReportError, ReportInput, Rightsizing, Seasonality,
    TrendPerDay, _fmt, autocorrelation, build_report, capacity_forecast, choose_step, parse_range,
    prometheus_duration, rightsize, rightsizing_totals, seasonality, trend_per_day,
)
from kubetune.report.gather import gather
from kubetune.report.render import (
    Line, axis_unit, nice_ticks, render_html, render_table, svg_chart, time_ticks, workload_chart, write_report,
)

__all__ = [
    "DAY", "MAX_POINTS", "WEEK", "CapacityForecast", "ContainerUsage", "Line", "ReportError", "ReportInput",
    "Rightsizing", "Seasonality", "TrendPerDay", "autocorrelation", "axis_unit", "build_report",
    "capacity_forecast", "choose_step", "gather", "nice_ticks", "parse_range", "prometheus_duration",
    "render_html", "render_table", "rightsize", "rightsizing_totals", "seasonality", "svg_chart", "time_ticks",
    "trend_per_day", "workload_chart", "write_report",
]
