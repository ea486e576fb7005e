"""`kubetune report` end to end: a Deployment on kwok nodes, its usage published by the synthetic
cAdvisor exporter and scraped by the real Prometheus, and the report run as the user runs it (a
process), with a short window and step standing in for a week of hours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

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
