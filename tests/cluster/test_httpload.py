"""The demo service (deploy/local/demo-service/server.py, run from its source on loopback) and the bounded
load generator aimed at it (deploy/local/httpload.py): the histogram and counters a PerformancePolicy's
`metrics` read, the CPU each request costs, and the load's hard stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import httpload
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

SERVER = Path(__file__).resolve().parents[2] / "deploy/local/demo-service/server.py"


def start_server(**env: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(SERVER)], env={**os.environ, "PORT": str(port), **env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"the demo service on :{port}", lambda: answers(f"{url}/healthz") or server.poll() is not None,
             timeout=15, every=0.1)
    assert server.poll() is None, server.stdout.read()
    return server, url


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def demo():
    servers = []

    def start(**env: str) -> str:
        server, url = start_server(**env)
        servers.append(server)
        return url

    yield start
    for server in servers:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} from /metrics."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.timeout(60)
def test_metrics_are_what_a_latency_policy_reads(demo):
    url = demo(WORK_CPU_MS="30", ERROR_PERCENT="10")
    for _ in range(20):
        requests.get(url, timeout=10)
    requests.get(f"{url}/?cpu_ms=120", timeout=10)
    metrics = scrape(url)
    buckets = {float(dict(labels)["le"]): value
               for labels, value in metrics["http_request_duration_seconds_bucket"].items()}
    # Fine between 50 and 500 ms, where the p95 thresholds of the examples live.
    assert {0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5} <= set(buckets)
    assert max(b for b in buckets if b != float("inf")) >= 5
    counts = [buckets[b] for b in sorted(buckets)]
    assert counts == sorted(counts) and buckets[float("inf")] == 21
    assert buckets[0.025] == 0  # 30 ms of CPU each: none can be faster (a busy machine makes them slower)
    assert buckets[0.1] <= 20  # ... and the one with 120 ms is above 100 ms
    assert metrics["http_request_duration_seconds_count"][()] == 21
    assert 0.03 * 21 + 0.09 <= metrics["http_request_duration_seconds_sum"][()] < 10
    # Exactly 10% errors, spread evenly; both codes exist from the start so error-rate queries see 0, not nothing.
    assert metrics["http_requests_total"] == {(("code", "200"),): 19, (("code", "500"),): 2}
    assert metrics["process_cpu_seconds_total"][()] >= 0.03 * 20
    fresh = scrape(demo())
    assert fresh["http_requests_total"] == {(("code", "200"),): 0, (("code", "500"),): 0}


@pytest.mark.timeout(60)
def test_sigterm_stops_the_service_at_once():
    server, url = start_server()
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0 and time.monotonic() - started < 3


@pytest.mark.timeout(60)
def test_load_runs_at_its_rate_and_the_service_counts_every_request(demo):
    url = demo(WORK_CPU_MS="2")
    result = httpload.run_load(httpload.LoadSpec(url, rate=40, concurrency=4, duration=2.0, max_requests=1000))
    assert 76 <= result.sent + result.skipped <= 80, result.summary()
    assert result.completed == result.sent and result.errors == 0 and result.skipped <= 2, result.summary()
    assert result.by_code == {"200": result.completed}
    assert 1.9 <= result.elapsed < 4
    assert scrape(url)["http_request_duration_seconds_count"][()] == result.completed
    summary = result.summary()
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]


@pytest.mark.timeout(60)
def test_hard_stops_by_count_by_duration_and_on_demand(demo):
    url = demo(WORK_CPU_MS="1")
    by_count = httpload.run_load(httpload.LoadSpec(url, rate=100, concurrency=2, duration=30, max_requests=25))
    assert by_count.sent + by_count.skipped == 25 and by_count.elapsed < 2, by_count.summary()
    # A service slower than the timeout: the load still ends at duration + timeout, counting what failed.
    slow = f"{url}/?cpu_ms=3000"
    by_time = httpload.run_load(httpload.LoadSpec(slow, rate=5, concurrency=2, duration=1, timeout=1))
    assert by_time.elapsed < 3 and by_time.completed == 0 and by_time.errors == by_time.sent > 0, by_time.summary()
    with httpload.LoadRun(httpload.LoadSpec(url, rate=20, duration=60)) as run:
        time.sleep(1)
    result = run.result(timeout=15)
    assert 10 <= result.sent <= 30 and result.elapsed < 5, result.summary()


def test_targets_stay_inside_the_machine():
    for url in ("http://8.8.8.8/", "http://example.com/", "https://127.0.0.1/", "http://0.0.0.0:80/"):
        with pytest.raises(ValueError):
            httpload.LoadSpec(url)
    for url in ("http://127.0.0.1:8080/", "http://localhost/", "http://10.88.0.12:8080/x?cpu_ms=5",
                "http://[::1]:8080/", "http://192.168.49.2/"):
        httpload.LoadSpec(url)
    with pytest.raises(ValueError):
        httpload.LoadSpec("http://127.0.0.1/", rate=0)
    assert httpload.main(["http://8.8.8.8/"]) == 2
