"""The report's output: a terminal table, and an HTML page with inline SVG charts (real axes, no
scripts); `write_report` writes report.html and report.json. Formats what `build_report` made."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubetune.report.build import DAY, WEEK, _date, _fmt
from kubetune.workloads import RESOURCES


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
