"""loadgen against the real thing: it finds a Deployment's kwok pods through the API server, a real
Prometheus scrapes it, and PromQL reads back the CPU and p95 latency that were set; a scale-up shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

import loadgen

pytestmark = pytest.mark.cluster

CPU_CORES = 0.4
LATENCY_SECONDS = 0.3
# Bucket counts are whole requests, so a 5 s window at 50 rps puts only ~15 in the bucket holding a 0.3 s
# p95 and one request moves it by ~7%; 200 rps keeps that rounding under 2%.
RPS = 200
CPU_QUERY = 'sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{namespace="%s"}[5s]))'
P95_QUERY = ('histogram_quantile(0.95, sum by (le, namespace, pod) '
             '(rate(http_request_duration_seconds_bucket{namespace="%s"}[5s])))')


def poll(get: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60.0, every: float = 0.5) -> Any:
    """The first value of get() that is done, or the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


def query(prometheus, promql: str) -> dict[str, float]:
    """pod (or pod/container) -> value of an instant query."""
    response = requests.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result = {}
    for series in response.json()["data"]["result"]:
        key = "/".join(filter(None, (series["metric"]["pod"], series["metric"].get("container"))))
        result[key] = float(series["value"][1])
    return result


def deployment(namespace: str, replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "loadgen-web"}},
                 "template": {"metadata": {"labels": {"app": "loadgen-web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10",
                                                       "resources": {"requests": {"cpu": "500m",
                                                                                  "memory": "128Mi"}}}]}}},
    }


def running_pods(cluster, namespace: str, count: int) -> list[str] | None:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=loadgen-web", "-o", "json").stdout)
    names = sorted(p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") == "Running")
    return names if len(names) == count else None


def test_prometheus_reads_back_the_load(cluster, prometheus, namespace):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment(namespace, 2)))
    pods = poll(lambda: running_pods(cluster, namespace, 2), bool)
    assert pods, "2 Running pods (scheduler, controller-manager and kwok)"

    exporter = loadgen.SyntheticExporter()
    target = f"loadgen-{namespace}"
    try:
        exporter.set_load(namespace, "web", cpu_cores=CPU_CORES, memory_bytes=100 << 20,
                          latency_seconds=LATENCY_SECONDS, error_ratio=0.0, rps=RPS)
        exporter.sync_pods_from_cluster(cluster.kubeconfig, "app=loadgen-web", namespace=namespace)
        assert [p.pod for p in exporter.pods()] == pods
        assert all(p.containers == ("web",) for p in exporter.pods())
        port = exporter.start()
        prometheus.add_target(target, f"127.0.0.1:{port}")

        # Polled until it holds (the first windows after discovery hold too few samples for rate()), then
        # asserted, so a failure shows the last values Prometheus gave.
        cpu_keys = [f"{p}/web" for p in pods]
        rates = poll(lambda: query(prometheus, CPU_QUERY % namespace),
                     lambda v: sorted(v) == cpu_keys and all(abs(r - CPU_CORES) <= 0.04 for r in v.values()))
        assert rates == pytest.approx(dict.fromkeys(cpu_keys, CPU_CORES), abs=0.04)
        p95 = poll(lambda: query(prometheus, P95_QUERY % namespace),
                   lambda v: sorted(v) == pods and all(abs(q - LATENCY_SECONDS) <= 0.03 for q in v.values()))
        assert p95 == pytest.approx(dict.fromkeys(pods, LATENCY_SECONDS), abs=0.03)

        # A new pod (a scale-up, as a rollout or resize brings) is picked up by the background sync.
        cluster.kubectl("scale", "deployment", "web", "-n", namespace, "--replicas=3")
        grown = poll(lambda: running_pods(cluster, namespace, 3), bool)
        assert grown, "3 Running pods after the scale-up"
        listed = poll(lambda: [p.pod for p in exporter.pods()], lambda listed: listed == grown, timeout=15)
        assert listed == grown
    finally:
        prometheus.remove_target(target)
        exporter.stop()
