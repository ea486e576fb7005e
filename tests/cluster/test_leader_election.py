"""Two operator replicas against one real API server and Lease: only the leader acts; when the leader
is SIGKILLed mid-cycle, the standby takes over within the lease duration and neither repeats nor loses
the action (the intent in status is what makes that hold across replicas). Lease timings are shortened
(6 s / 4 s / 1 s) through the same settings the chart sets."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.test_operator import MI, Operator, deploy, get, policy, template_cpu  # noqa: F401
from tests.cluster.test_operator import exporter, exporter_and_address  # noqa: F401  (fixtures)
from kubetune.leadership import shard_of
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
LEASE_SECONDS = 6


@pytest.fixture
def replicas(cluster, prometheus, namespace, tmp_path):
    ops = {}
    for name in ("replica-a", "replica-b"):
        op = Operator(cluster, prometheus.url, namespace, tmp_path / f"{name}.log")
        op.env |= {"KUBETUNE_LEADER_ELECTION_IDENTITY": name, "KUBETUNE_LEASE_DURATION": str(LEASE_SECONDS),
                   "KUBETUNE_RENEW_DEADLINE": "4", "KUBETUNE_RETRY_PERIOD": "1"}
        ops[name] = op
    yield ops
    for name, op in ops.items():
        op.stop()
        print(f"--- {name}\n{op.log()[-2000:]}")


def holder_of(cluster, namespace, lease) -> str | None:
    out = cluster.kubectl("get", "lease", lease, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout)["spec"].get("holderIdentity") if out.returncode == 0 else None


def holder(cluster, namespace) -> str | None:
    return holder_of(cluster, namespace, "kubetune-operator")


def test_only_the_leader_acts(cluster, crds, namespace, exporter, replicas):
    for op in replicas.values():
        op.start()
    leader = wait_for("a Lease holder", lambda: holder(cluster, namespace), timeout=30)
    standby = next(name for name in replicas if name != leader)
    deploy(cluster, namespace)
    exporter.set_load(namespace, "api", cpu_cores=0.45, memory_bytes=100 * MI)
    policy(cluster, namespace, mode="Auto", scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10m"})
    wait_for("the step-up", lambda: template_cpu(cluster, namespace) == "600m", timeout=120)
    time.sleep(15)
    status = get(cluster, "performancepolicy", namespace, "api")["status"]
    assert template_cpu(cluster, namespace) == "600m" and not status.get("history"), "exactly one action"
    assert holder(cluster, namespace) == leader
    assert "acquired Lease" in replicas[leader].log() and "acquired Lease" not in replicas[standby].log()
    assert "IncreaseResources Deployment" in replicas[leader].log()
    assert "IncreaseResources Deployment" not in replicas[standby].log()


def test_standby_takes_over_when_the_leader_is_killed_mid_cycle(cluster, crds, namespace, exporter, replicas):
    first, second = replicas["replica-a"], replicas["replica-b"]
    first.start()
    wait_for("replica-a to hold the Lease", lambda: holder(cluster, namespace) == "replica-a", timeout=30)
    second.start()
    deploy(cluster, namespace)
    exporter.set_load(namespace, "api", cpu_cores=0.45, memory_bytes=100 * MI)
    policy(cluster, namespace, mode="Auto", scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10m"})
    # SIGKILL the leader as soon as its intent is in status: between the record and the change, or just after.
    wait_for("the action's record in status", lambda: get(cluster, "performancepolicy", namespace, "api")
             .get("status", {}).get("lastAction"), timeout=120, every=0.1)
    first.kill()
    killed = time.monotonic()
    recorded = get(cluster, "performancepolicy", namespace, "api")["status"]["lastAction"]
    wait_for("replica-b to take the Lease over", lambda: holder(cluster, namespace) == "replica-b", timeout=30)
    took = time.monotonic() - killed
    print(f"take-over after {took:.1f} s (lease duration {LEASE_SECONDS} s)")
    assert took <= LEASE_SECONDS + 5
    # The action is neither lost (the change landed, by replica-a or completed by replica-b) nor
    # repeated (the load is still 90 % of the old request, but the recorded action's cooldown holds).
    wait_for("the recorded change on the template", lambda: template_cpu(cluster, namespace) == "600m", timeout=30)
    time.sleep(15)
    status = get(cluster, "performancepolicy", namespace, "api")["status"]
    assert template_cpu(cluster, namespace) == "600m"
    assert status["lastAction"]["time"] == recorded["time"] and not status.get("history")


def test_two_shards_on_two_replicas_split_the_namespaces(cluster, crds, namespace, exporter, replicas):
    """Two shards, fair share 1: each replica holds one Lease and evaluates the policies of its shard's
    namespace only; both policies are evaluated."""
    other = next(f"{namespace}-{i}" for i in range(100) if shard_of(f"{namespace}-{i}", 2) != shard_of(namespace, 2))
    cluster.kubectl("create", "namespace", other)
    try:
        for op in replicas.values():
            op.env |= {"KUBETUNE_SHARDS": "2", "KUBETUNE_FAIR_SHARE": "1", "KUBETUNE_NAMESPACES": f"{namespace},{other}"}
            op.start()
        for ns in (namespace, other):
            deploy(cluster, ns)
            policy(cluster, ns, mode="Recommend")

        def holders():
            found = {holder_of(cluster, namespace, f"kubetune-operator-shard-{i}") for i in (0, 1)}
            return found if found == set(replicas) else None

        wait_for("each replica holding one shard", holders, timeout=60)
        for ns in (namespace, other):
            wait_for(f"the policy in {ns} evaluated", lambda ns=ns: get(cluster, "performancepolicy", ns, "api")
                     .get("status", {}).get("observedGeneration"), timeout=60)
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)

