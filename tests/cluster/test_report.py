"""`kubetune report` end to end: a Deployment on kwok nodes, its usage published by the synthetic
cAdvisor exporter and scraped by the real Prometheus, and the report run as the user runs it (a
process), with a short window and step standing in for a week of hours.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time

import numpy as np

import pytest
import requests

from tests.cluster.test_operator import MI, deploy
from tests.waiting import wait_for
from tests.cluster.test_operator import exporter, exporter_and_address  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster


def samples_in_prometheus(url: str, namespace: str) -> int:
    body = requests.get(f"{url}/api/v1/query", timeout=5, params={
        "query": f'count_over_time(container_cpu_usage_seconds_total{{namespace="{namespace}"}}[1m])'}).json()
    return min((int(float(item["value"][1])) for item in body["data"]["result"]), default=0)


def test_report_from_the_real_prometheus(cluster, prometheus, namespace, exporter, tmp_path):  # noqa: F811
    deploy(cluster, namespace, name="api", replicas=2, cpu="500m", memory="128Mi")
    exporter.set_load(namespace, "api", cpu_cores=0.2, memory_bytes=100 * MI)
    wait_for("both pods' usage in Prometheus", lambda: samples_in_prometheus(prometheus.url, namespace) >= 2, timeout=60)
    time.sleep(20)  # ~20 s of data at a 1 s scrape interval

    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "kubetune.cli", "report", "--prometheus-url", prometheus.url,
                           "--kubeconfig", cluster.kubeconfig, "--namespace", namespace, "--range", "2m",
                           "--step", "5s", "--rate-window", "10s", "--output", str(out)],
                          capture_output=True, text=True, timeout=120, env=cluster.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "api" in done.stdout and "Rightsizing frees" in done.stdout

    report = json.loads((out / "report.json").read_text())
    workload = next(w for w in report["workloads"] if w["workload"] == "api")
    assert workload["namespace"] == namespace and workload["kind"] == "Deployment" and workload["replicas"] == 2
    assert workload["usage"]["cpu"]["now"] == pytest.approx(0.4, rel=0.15)  # 2 pods x 0.2 cores
    assert workload["usage"]["memory"]["peak"] == pytest.approx(200 * MI, rel=0.01)
    assert workload["requests"]["cpu"]["now"] == pytest.approx(1.0)  # 2 x 500m, today's template

    sizing = next(s for s in report["rightsizing"]["containers"] if s["workload"] == "api")
    assert sizing["container"] == "app" and sizing["current"]["cpu"] == pytest.approx(0.5)
    assert sizing["recommended"]["cpu"] == pytest.approx(0.2 * 1.15, rel=0.15)
    assert sizing["recommended"]["memory"] == pytest.approx(100 * MI * 1.15, rel=0.01)
    assert sizing["frees"]["cpu"] == pytest.approx((0.5 - sizing["recommended"]["cpu"]) * 2)
    assert report["rightsizing"]["totals"]["cpu"]["freed"] >= sizing["frees"]["cpu"] > 0
    assert report["capacity"]["allocatable"]["cpu"] > 0 and report["capacity"]["forecasts"]

    page = (out / "report.html").read_text()
    assert "<svg" in page and namespace in page


def report_cli(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubetune.cli", "report", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_report_bad_inputs_are_one_line_with_the_fix(prometheus, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    base = ["--prometheus-url", prometheus.url, "--range", "10m"]
    cases = [  # (arguments, exit code, what the line must say)
        ([*base, "--bearer-token-file", str(tmp_path / "missing")], 2, "--bearer-token-file"),
        ([*base, "--ca-file", str(tmp_path / "missing")], 2, "--ca-file"),
        ([*base, "--output", str(a_file)], 2, "give a directory"),
        ([*base, "--range", "7d"], 2, "write 168h"),
        ([*base, "--step", "1h"], 2, "no longer than --range"),
        (["--prometheus-url", "http://127.0.0.1:1", "--range", "10m", "--output", str(tmp_path / "o")], 1,
         "cannot connect to http://127.0.0.1:1"),
    ]
    for args, code, says in cases:
        done = report_cli(*args)
        line = one_error_line(done)
        assert done.returncode == code and says in line, (args, done.returncode, line)
        assert line.startswith("kubetune report: ")


def test_report_without_a_kubeconfig_is_one_line(prometheus, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    done = report_cli("--prometheus-url", prometheus.url, "--range", "10m", "--output", str(tmp_path / "o"), env=env)
    line = one_error_line(done)
    assert done.returncode == 1 and "KUBECONFIG or --kubeconfig" in line, line


def test_report_long_range_chooses_the_step_reports_progress_and_writes_the_default_directory(
        cluster, prometheus, tmp_path):
    # 30 days at 1m would be 43,201 points, which Prometheus refuses: the report picks 5m and says so.
    done = report_cli("--prometheus-url", prometheus.url, "--kubeconfig", cluster.kubeconfig, "--range", "720h",
                      "--step", "1m", cwd=tmp_path, env=cluster.env)
    assert done.returncode == 0, done.stderr
    progress = done.stderr.strip().splitlines()
    assert "above Prometheus' 11,000: using 300s" in progress[0]
    assert any("reading CPU usage (8641 samples per series)" in line for line in progress)
    assert (tmp_path / "kubetune-report" / "report.json").is_file()
    assert json.loads((tmp_path / "kubetune-report" / "report.json").read_text())["window"]["step"] == 300


# Injected by the test only (the report itself has no scripts): what the browser laid out, per chart.
LAYOUT_PROBE = """<script>document.body.setAttribute("data-probe", JSON.stringify(
  [...document.querySelectorAll("svg.chart")].map(svg => { const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height, xticks: svg.querySelectorAll(".xtick").length,
            yticks: svg.querySelectorAll(".ytick").length, lines: svg.querySelectorAll("polyline").length}; })));
</script>"""


def test_report_renders_in_headless_chromium(tmp_path):
    """The HTML a week-long report writes, opened in Debian's chromium: it loads with no console
    message, and every chart is laid out with its ticks and lines."""
    import shutil

    from tests.unit.test_report import report_of, usage
    from kubetune.report import write_report

    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    hours = np.arange(168)
    daily = 0.3 + 0.2 * np.sin(hours * 2 * np.pi / 24)
    report = report_of(usage(samples=168, cpu=daily), usage(workload="api", samples=168, cpu=0.05 + 0 * hours,
                                                            memory=2.0**31))
    html_path, _ = write_report(report, tmp_path / "report")
    probed = tmp_path / "probed.html"
    probed.write_text(html_path.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    done = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CONSOLE" not in done.stderr, [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    probe = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', done.stdout).group(1)))
    assert len(probe) == 4  # two workloads x (cpu, memory)
    for chart in probe:
        assert chart["width"] == 640 and chart["height"] == 260
        assert chart["xticks"] >= 4 and chart["yticks"] >= 3 and chart["lines"] >= 2, chart
