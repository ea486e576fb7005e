"""Analysis end to end (issue 6): predictive step-up before the threshold rule would fire, and an
action followed by a scripted latency regression rolled back to the recorded values."""

from __future__ import annotations

import json
import pytest

from tests.cluster.test_operator import MI, deploy, get, policy, template_cpu  # noqa: F401
from tests.waiting import wait_for
from tests.cluster.test_operator import exporter, exporter_and_address, operator  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster


def test_rising_load_is_scaled_before_the_threshold_rule_fires(cluster, crds, namespace, exporter, operator):
    deploy(cluster, namespace)
    # +2 points of 500m every 4 s from 40 %: the 80 % rule (sustained 60 s) is far off, the trend is not.
    exporter.set_profile(namespace, "api", [(4, {"cpu_cores": 0.2 + 0.01 * i, "memory_bytes": 100 * MI})
                                            for i in range(60)])
    policy(cluster, namespace, mode="Auto", scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10m"},
           rules=[{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "60s",
                   "action": "IncreaseResources"}],
           prediction={"enabled": True, "horizon": "2m"})
    wait_for("a predicted step-up", lambda: template_cpu(cluster, namespace) != "500m", timeout=150)
    last = get(cluster, "performancepolicy", namespace, "api")["status"]["lastAction"]
    assert last["rule"] == "high-load" and any("(predicted)" in e for e in last["evidence"]), last["evidence"]
    now_percent = int(last["evidence"][0].split("cpuUtilization ")[1].split("%")[0])
    assert now_percent < 80, "stepped up while utilisation was still below the threshold"


def test_a_change_that_makes_latency_worse_is_rolled_back(cluster, crds, namespace, exporter, operator):
    deploy(cluster, namespace)
    exporter.set_load(namespace, "api", cpu_cores=0.45, memory_bytes=100 * MI, latency_seconds=0.1, rps=200)
    policy(cluster, namespace, mode="Auto", scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10m"},
           rules=[{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "20s",
                   "action": "IncreaseResources"}],
           metrics={"latency": {"histogram": "http_request_duration_seconds"}},
           prediction={"enabled": False}, verification={"window": "1m", "maxRegressionPercent": 20})
    wait_for("the step-up", lambda: template_cpu(cluster, namespace) == "600m", timeout=120)
    # The scripted regression: after the change, p95 latency goes from 100 ms to 400 ms.
    exporter.set_load(namespace, "api", cpu_cores=0.45, memory_bytes=100 * MI, latency_seconds=0.4, rps=200)
    wait_for("the rollback", lambda: template_cpu(cluster, namespace) == "500m", timeout=150)
    status = get(cluster, "performancepolicy", namespace, "api")["status"]
    verification = status["lastAction"]["verification"]
    assert verification["state"] == "RolledBack" and "latencyP95Ms" in verification["message"], verification
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=RolledBack",
                                        "-o", "json").stdout)["items"]
    assert {e["involvedObject"]["kind"] for e in events} >= {"PerformancePolicy", "Deployment"}
    # Still 90 % of 500m once the rolled-back pods have 20 s of series, but the same change waits
    # for its backoff instead of flapping.
    def ready_reason():
        return next(c for c in get(cluster, "performancepolicy", namespace, "api")["status"]["conditions"]
                    if c["type"] == "Ready")["message"].startswith("Backoff")

    wait_for("the high-load rule to be held back by the backoff", ready_reason, timeout=90)
    assert template_cpu(cluster, namespace) == "500m"


def test_slow_latency_changes_the_resource_it_correlates_with(cluster, crds, namespace, exporter, operator):
    deploy(cluster, namespace)
    # Memory sits at 96 % of its limit the whole time (the instant thresholds would blame memory), but
    # latency climbs together with CPU throttling: the correlation must pick CPU.
    exporter.set_profile(namespace, "api", [
        (3, {"cpu_cores": 0.25, "memory_bytes": 246 * MI, "rps": 200, "latency_seconds": 0.05 + 0.008 * i,
             "throttled_ratio": 0.01 + 0.003 * i}) for i in range(40)])
    policy(cluster, namespace, mode="Auto", scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10m"},
           containers=[{"name": "*", "maxAllowed": {"cpu": "2", "memory": "1Gi"}}],
           rules=[{"name": "slow", "metric": "latencyP95Ms", "above": 200, "action": "OptimizeResources"}],
           metrics={"latency": {"histogram": "http_request_duration_seconds"}}, prediction={"enabled": False},
           anomalyDetection={"enabled": False})
    wait_for("an OptimizeResources action", lambda: get(cluster, "performancepolicy", namespace, "api")
             .get("status", {}).get("lastAction"), timeout=180)
    last = get(cluster, "performancepolicy", namespace, "api")["status"]["lastAction"]
    assert last["action"] == "OptimizeResources"
    assert {c["resource"] for c in last["changes"]} == {"cpu"}, last
    assert any("cpuThrottlingRatio" in e for e in last["evidence"]), last["evidence"]
