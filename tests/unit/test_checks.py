"""`kubetune check`'s checks, each a pure function of what was read: tables of inputs and verdicts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from kubetune import checks as c

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
HEALTHY_SERIES = {s: 12 for s in c.CADVISOR_SERIES}


def data(**fields) -> c.CheckInput:
    base = dict(prometheus_url="http://p:9090", series_counts=HEALTHY_SERIES, samples_in_5m=20.0,
                rule_groups=list(c.RULE_GROUPS), nodes=("n1", "n2"), now=NOW,
                node_tunings={n: {"heartbeatTime": "2026-01-02T03:04:00Z", "reportingIntervalSeconds": 10}
                              for n in ("n1", "n2")},
                service_accounts={
                    "operator": c.ServiceAccountAccess("kubetune/op", {p: True for p in c.OPERATOR_NEEDS}),
                    "agent": c.ServiceAccountAccess("kubetune/ag", {p: True for p in c.AGENT_NEEDS})})
    return c.CheckInput(**{**base, **fields})


def policy(name: str, metrics: str) -> dict:
    return {"metadata": {"namespace": "shop", "name": name},
            "status": {"conditions": [{"type": "MetricsAvailable", "status": metrics, "reason": "QueryFailed"}]}}


CASES = [
    ("healthy", data(), {}),
    ("prometheus-down", data(prometheus_error="cannot connect to http://p:9090"),
     {"prometheus": "cannot connect", "cadvisor": "not checked", "recording rules": "not checked"}),
    ("no-cadvisor", data(series_counts={"container_cpu_usage_seconds_total": 0,
                                        "container_memory_working_set_bytes": 3}),
     {"cadvisor": "no container_cpu_usage_seconds_total series"}),
    # 5 samples in 5m = a 60 s scrape interval: a 1m rate window holds one sample.
    ("rate-window-too-short", data(samples_in_5m=5.0), {"cadvisor": "scrape interval ~60s"}),
    ("rules-missing", data(rule_groups=["other"]), {"recording rules": "kubetune.container.rules"}),
    ("agent-stale-and-missing", data(node_tunings={"n1": {"heartbeatTime": "2026-01-02T02:00:00Z",
                                                          "reportingIntervalSeconds": 10}}),
     {"node agents": "0 of 2 nodes reporting; never reported on n2; stale on n1"}),
    ("webhook-without-endpoints", data(webhook={"name": "kt", "service": "kubetune/kt-webhook", "ready_endpoints": 0}),
     {"webhook": "no ready endpoint"}),
    ("operator-lacks-resize", data(service_accounts={
        "operator": c.ServiceAccountAccess("kubetune/op", {p: p != ("patch", "pods", "", "resize")
                                                           for p in c.OPERATOR_NEEDS}),
        "agent": c.ServiceAccountAccess("kubetune/ag", {p: True for p in c.AGENT_NEEDS})}),
     {"operator permissions": "cannot patch pods/resize"}),
    ("agent-can-read-secrets", data(service_accounts={
        "operator": c.ServiceAccountAccess("kubetune/op", {p: True for p in c.OPERATOR_NEEDS}),
        "agent": c.ServiceAccountAccess("kubetune/ag", {**{p: True for p in c.AGENT_NEEDS},
                                                        ("get", "secrets", "", ""): True})}),
     {"agent permissions": "can get secrets"}),
    ("no-agent-account", data(service_accounts={
        "operator": c.ServiceAccountAccess("kubetune/op", {p: True for p in c.OPERATOR_NEEDS}), "agent": None}),
     {"agent permissions": "no agent ServiceAccount"}),
    ("policy-without-metrics", data(policies=[policy("web", "False"), policy("api", "True")]),
     {"policy metrics": "1 of 2 policies lack metrics: shop/web (QueryFailed)"}),
    ("no-cluster", data(kube_error="no usable Kubernetes configuration"),
     {"node agents": "not checked", "webhook": "not checked", "operator permissions": "not checked",
      "agent permissions": "not checked", "policy metrics": "not checked"}),
]


@pytest.mark.parametrize("given, failing", [c_[1:] for c_ in CASES], ids=[c_[0] for c_ in CASES])
def test_checks(given, failing):
    results = c.run_checks(given)
    assert {r.name: r.message for r in results if not r.ok}.keys() == failing.keys()
    for r in results:
        if not r.ok:
            assert failing[r.name] in r.message and r.fix, r
            assert r.line().startswith(f"✗ {r.name}: ") and "— fix: " in r.line()
        else:
            assert r.line().startswith(f"✓ {r.name}: ")


def test_rule_groups_are_the_recording_groups_of_the_rules_file():
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/prometheus/kubetune-rules.yaml").read_text())
    recording = [g["name"] for g in rules["groups"] if any("record" in r for r in g["rules"])]
    assert list(c.RULE_GROUPS) == recording


def test_fresh_heartbeat_boundary():
    at_limit = data(node_tunings={n: {"heartbeatTime": (NOW - timedelta(seconds=30)).isoformat(),
                                      "reportingIntervalSeconds": 10} for n in ("n1", "n2")})
    assert c.check_agents(at_limit).ok
    past = data(node_tunings={n: {"heartbeatTime": (NOW - timedelta(seconds=31)).isoformat(),
                                  "reportingIntervalSeconds": 10} for n in ("n1", "n2")})
    assert not c.check_agents(past).ok
