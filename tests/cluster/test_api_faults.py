"""Kubernetes API faults, end to end: `kubetune-operator` as a real process against a control plane of
its own (a dedicated LocalCluster, so restarting its API server or stopping its etcd disturbs no other
test), kwok pods, the synthetic cAdvisor exporter and the session's real Prometheus.

Each test asks what a user would check after the fault: the workload changed exactly once (its
template's CPU request), the policy's status records that one action and no second, and the operator
went on working when the fault ended (it saw a change made after the fault, or acted after it). The
load stays above the threshold after the step, so only the recorded action's cooldown stops a second
one: an action lost or recorded twice would show as a second step.

Time (the default run's budget is 3 minutes for these): the three workloads and their policies are
created at once, so their metrics warm up together; the proxy test runs first with its own operator,
the other two share one; rules hold `for: 10s`.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

import faultproxy  # deploy/local, on sys.path via tests/conftest.py
import localcluster

from tests.cluster.test_operator import MI, Operator, condition
from tests.cluster.test_operator import exporter_and_address  # noqa: F401 (a fixture: pytest finds it by name)
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
NAMESPACE = "api-faults"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """This module's own control plane (named `cluster` so test_operator's exporter fixture syncs its pods)."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("stops and restarts its own API server and etcd: needs the local binaries, not KUBECONFIG")
    own = localcluster.LocalCluster(tmp_path_factory.mktemp("api-faults-kube"), nodes=1)
    try:
        own.start()
    except localcluster.SetupError as e:
        pytest.fail(f"dedicated local cluster: {e}", pytrace=False)
    try:
        own.kubectl("apply", "--server-side", "-f", str(localcluster.REPO / "deploy" / "crds"))
        own.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        own.kubectl("create", "namespace", NAMESPACE)
        wait_for("the namespace's default ServiceAccount", lambda: own.kubectl(
            "get", "serviceaccount", "default", "-n", NAMESPACE, check=False).returncode == 0)
        yield own
    finally:
        own.stop(timeout=2)  # throwaway: no graceful shutdown to wait for


@pytest.fixture(scope="module")
def workloads(cluster, exporter_and_address):
    """One Deployment and one Auto policy per test, at 50 % CPU (nothing to do), created at once."""
    exporter = exporter_and_address[0]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        item for name in WORKLOADS for item in (deployment(name), policy(name))]}))
    for name in WORKLOADS:
        exporter.set_load(NAMESPACE, name, cpu_cores=0.25, memory_bytes=100 * MI)
    wait_for("a Running pod of each workload", lambda: {
        p["metadata"]["labels"]["app"] for p in json.loads(cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        if p["status"].get("phase") == "Running"} >= set(WORKLOADS))
    return exporter


class Via:
    """What Operator needs of a cluster (its environment), pointed at a kubeconfig."""

    def __init__(self, kubeconfig: str):
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}


def run_operator(prometheus, kubeconfig: str, log_path):
    op = Operator(Via(kubeconfig), prometheus.url, NAMESPACE, log_path)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(op.log()[-4000:])


@pytest.fixture
def proxy(cluster):
    server = yaml.safe_load(open(cluster.kubeconfig))["clusters"][0]["cluster"]["server"]
    proxy = faultproxy.FaultProxy(upstream=server, pki=cluster.state_dir / "pki")
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def operator_via_proxy(prometheus, proxy, tmp_path):
    proxy.write_kubeconfig(tmp_path / "via-proxy")
    yield from run_operator(prometheus, str(tmp_path / "via-proxy"), tmp_path / "operator.log")


@pytest.fixture(scope="module")
def operator(cluster, prometheus, tmp_path_factory):
    """One operator talking to the API server itself, for the restart and etcd tests."""
    yield from run_operator(prometheus, cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")


WORKLOADS = ("busy", "restart", "etcd")
HIGH = 0.6  # cores: 120 % of 500m, still 100 % of 600m and 86 % of 700m after one step


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, "kubetune.io/e2e": "true"}},
                                  "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                                           "resources": {"requests": {"cpu": "500m", "memory": "128Mi"},
                                                                         "limits": {"cpu": "1", "memory": "256Mi"}}}]}}}}


def policy(name: str, step_percent: int = 20) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "interval": "10s",
                     "mode": "Auto", "containers": [{"name": "*", "minAllowed": {"cpu": "100m"}, "maxAllowed": {"cpu": "2"}}],
                     "rules": [{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "10s",
                                "action": "IncreaseResources"}],
                     "scaling": {"method": "Rollout", "stepPercent": step_percent, "cooldown": "10m"}}}


def get(cluster, kind: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)


def template_cpu(cluster, name: str) -> str:
    return get(cluster, "deployment", name)["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def acted_once(cluster, name: str, to: str) -> dict:
    """Wait for the one step to `to`, then more than an interval more: still one step, one recorded action."""
    wait_for(f"{name}'s template to step up", lambda: template_cpu(cluster, name) != "500m", timeout=120)
    time.sleep(11)  # an interval and a tick more: an evaluation that still sees the load above 80 % acts
    # again unless the recorded action's cooldown holds it
    assert template_cpu(cluster, name) == to
    status = get(cluster, "performancepolicy", name)["status"]
    last = status["lastAction"]
    assert last["action"] == "IncreaseResources" and last["applied"] is True, last
    assert {"container": "app", "resource": "cpu", "value": "requests", "from": "500m", "to": to} in last["changes"]
    assert not status.get("history"), f"a second action was recorded: {status['history']}"
    assert condition(get(cluster, "performancepolicy", name), "Degraded").get("status") != "True"
    return status


# The proxy test first: its operator must be gone before the shared one starts (two would both act).
def test_conflicts_and_throttling_are_retried_as_told_and_change_the_workload_once(
        cluster, workloads, proxy, operator_via_proxy):
    # Every second write in the namespace, alternately 409 and 429 (Retry-After: 1). Not the Lease: a
    # 409 on its resourceVersion-guarded update means another candidate won, and the elector is meant
    # to step back (tests/unit/test_leadership.py).
    proxy.inject(fraction=0.5, statuses=(409, 429), retry_after=1, path=rf"/namespaces/{NAMESPACE}/(?!leases)")
    workloads.set_load(NAMESPACE, "busy", cpu_cores=HIGH, memory_bytes=100 * MI)
    acted_once(cluster, "busy", to="600m")
    print(f"faultproxy: {len(proxy.injected)} writes answered 409/429, {proxy.forwarded} requests forwarded")
    assert {status for *_, status in proxy.injected} == {409, 429}, proxy.injected
    assert any(path.endswith("/performancepolicies/busy/status") for _, path, _ in proxy.injected), proxy.injected
    # Retry-After was honoured: the operator waited the second the server asked for, then retried.
    assert "HTTP 429, retrying in 1.0 s" in operator_via_proxy.log()


def test_apiserver_restarted_mid_cycle_then_a_change_made_after_it_is_seen_and_acted_on_once(
        cluster, workloads, operator):
    wait_for("the operator evaluating", lambda: "indexes filled" in operator.log(), timeout=120)
    # Killed, not stopped: every watch and any write in flight breaks at once, mid-cycle (tick 1 s).
    cluster.restart_apiserver(kill=True)
    # Only a watch re-established after the restart brings these: a new step size, then the load.
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy("restart", step_percent=40)))
    workloads.set_load(NAMESPACE, "restart", cpu_cores=HIGH, memory_bytes=100 * MI)
    acted_once(cluster, "restart", to="700m")  # 500m + 40 %: the spec written after the restart


def test_etcd_stopped_for_20_s_means_no_change_until_it_is_back_then_exactly_one(cluster, workloads, operator):
    wait_for("the operator evaluating", lambda: "indexes filled" in operator.log(), timeout=120)
    # The load crosses the threshold as etcd goes: the rule holds (10 s) while the API cannot store anything.
    workloads.set_load(NAMESPACE, "etcd", cpu_cores=HIGH, memory_bytes=100 * MI)
    cluster.stop_etcd()
    try:
        time.sleep(20)
        answer = cluster.kubectl("get", "deployment", "etcd", "-n", NAMESPACE, "--request-timeout=5s", check=False)
        assert answer.returncode != 0, "the API server still answered reads with etcd stopped"
    finally:
        cluster.start_etcd()
    acted_once(cluster, "etcd", to="600m")
    assert operator.proc.poll() is None, "the operator exited during the outage"
