"""Node-tuning resolution end to end: `kubetune-operator` as a real process against the real API server
with kwok nodes (kwok-node-0 and kwok-node-2 are labelled `kubetune.io/pool=general`, kwok-node-1
`batch`). NodeTuning objects follow node labels, NodeTuningPolicies and PerformancePolicy process tuning;
every node has one (a node no policy reaches has the monitoring-only plan), and one whose agent does not
report is marked AgentNotReporting (no agent runs for the kwok nodes here).

NodeTuningPolicies and node labels are cluster-wide and the cluster is shared by the session: every
test removes what it created in `finally`.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.test_operator import Operator, condition, deploy, running_pods
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
MANAGED = "app.kubernetes.io/managed-by=kubetune"
POOL = "kubetune.io/pool"
GENERAL = {"kwok-node-0", "kwok-node-2"}


@pytest.fixture
def operator(cluster, crds, prometheus, namespace, tmp_path):
    op = Operator(cluster, prometheus.url, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print(op.log()[-4000:])


def all_node_tunings(cluster) -> dict[str, dict]:
    out = cluster.kubectl("get", "nodetunings", "-l", MANAGED, "-o", "json").stdout
    return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def monitoring_only(obj) -> bool:
    spec = obj["spec"]
    return not (spec.get("knobs") or spec.get("processes") or spec.get("adaptive"))


def node_tunings(cluster) -> dict[str, dict]:
    """The NodeTunings that tune something (every other node's plan only watches the thresholds)."""
    return {name: o for name, o in all_node_tunings(cluster).items() if not monitoring_only(o)}


def knobs(obj) -> dict[str, dict]:
    return {k["key"]: k for k in obj["spec"].get("knobs", [])}


def node_policy(cluster, name, priority=0, pool="general", mode="Auto", **spec):
    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuningPolicy", "metadata": {"name": name},
            "spec": {"nodeSelector": {"matchExpressions": [{"key": POOL, "operator": "In", "values": [pool]}]},
                     "priority": priority, "mode": mode, **spec}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def get_policy(cluster, name):
    return json.loads(cluster.kubectl("get", "nodetuningpolicy", name, "-o", "json").stdout)


def somaxconn(value: str) -> dict:
    return {"sysctls": [{"name": "net.core.somaxconn", "value": value}]}


def cleanup(cluster, *policies):
    for name in policies:
        cluster.kubectl("delete", "nodetuningpolicy", name, "--ignore-not-found", check=False)
    cluster.kubectl("label", "node", "kwok-node-1", f"{POOL}=batch", "--overwrite", check=False)


def test_node_tunings_follow_labels_priorities_and_policies(cluster, operator):
    policies = ("e2e-general", "e2e-db", "e2e-rival")
    try:
        node_policy(cluster, "e2e-general", mode="Recommend", **somaxconn("4096"))
        nts = wait_for("NodeTunings on the general nodes",
                       lambda: (n := node_tunings(cluster)) and set(n) == {"kwok-node-0", "kwok-node-2"} and n)
        spec = nts["kwok-node-0"]["spec"]
        assert spec["mode"] == "Recommend"
        assert knobs(nts["kwok-node-0"])["sysctl.net.core.somaxconn"]["value"] == "4096"
        assert knobs(nts["kwok-node-0"])["sysctl.net.core.somaxconn"]["policy"] == "NodeTuningPolicy/e2e-general"
        status = wait_for("the policy's status", lambda: get_policy(cluster, "e2e-general").get("status"))
        assert status["matchedNodes"] == 2
        assert condition({"status": status}, "Ready")["status"] == "True"

        # Relabelling moves a node in and out.
        cluster.kubectl("label", "node", "kwok-node-1", f"{POOL}=general", "--overwrite")
        wait_for("a NodeTuning for kwok-node-1", lambda: "kwok-node-1" in node_tunings(cluster))
        cluster.kubectl("label", "node", "kwok-node-1", f"{POOL}=batch", "--overwrite")
        wait_for("kwok-node-1's NodeTuning back to monitoring only", lambda: "kwok-node-1" not in node_tunings(cluster))

        # A higher priority overrides the field it sets; the node's mode follows the most cautious policy.
        node_policy(cluster, "e2e-db", priority=10, **somaxconn("8192"))
        knob = wait_for("the higher priority's value", lambda: (k := knobs(node_tunings(cluster)["kwok-node-2"])
                                                                 ["sysctl.net.core.somaxconn"])["value"] == "8192" and k)
        assert knob["policy"] == "NodeTuningPolicy/e2e-db" and "NodeTuningPolicy/e2e-general" in knob["reason"]
        assert node_tunings(cluster)["kwok-node-2"]["spec"]["mode"] == "Recommend"
        node_policy(cluster, "e2e-general", mode="Auto", **somaxconn("4096"))
        wait_for("mode Auto once every policy is Auto",
                 lambda: {n["spec"]["mode"] for n in node_tunings(cluster).values()} == {"Auto"})

        # Equal priority, different value: the knob is left unchanged and both policies say Conflict.
        node_policy(cluster, "e2e-rival", priority=10, **somaxconn("1024"))
        wait_for("the conflicting knob left out",
                 lambda: "sysctl.net.core.somaxconn" not in knobs(all_node_tunings(cluster)["kwok-node-0"]))
        for name in ("e2e-db", "e2e-rival"):
            c = wait_for(f"Conflict on {name}", lambda: (c := condition(get_policy(cluster, name), "Conflict"))
                         .get("status") == "True" and c)
            assert "sysctl.net.core.somaxconn" in c["message"] and "NodeTuningPolicy/e2e-rival=1024" in c["message"]
        annotations = all_node_tunings(cluster)["kwok-node-0"]["metadata"].get("annotations", {})
        assert "sysctl.net.core.somaxconn: Conflict" in annotations.get("kubetune.io/conflicts", "")
        assert condition(get_policy(cluster, "e2e-general"), "Conflict")["status"] == "False"
        cluster.kubectl("delete", "nodetuningpolicy", "e2e-rival")
        wait_for("the conflict resolved", lambda: knobs(all_node_tunings(cluster)["kwok-node-0"])
                 .get("sysctl.net.core.somaxconn", {}).get("value") == "8192")

        # Nothing applies any more: the plans keep only the thresholds (the agent restores the originals).
        cluster.kubectl("delete", "nodetuningpolicy", "e2e-general", "e2e-db")
        wait_for("every NodeTuning monitoring only", lambda: node_tunings(cluster) == {})
        assert "NodeTuning kwok-node-0: sysctl.net.core.somaxconn 8192 -> unset" in operator.log()
        assert "sysctl.net.core.somaxconn 4096 -> 8192" in operator.log()
    finally:
        cleanup(cluster, *policies)


def test_process_tuning_of_a_performance_policy_is_clamped(cluster, operator, namespace):
    try:
        # The general nodes' admin allows nice down to -5; elsewhere the operator's floor (-10) holds.
        node_policy(cluster, "e2e-limits", processTuning={"minNice": -5, "allowCpuPinning": False})
        deploy(cluster, namespace, replicas=3)
        body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
                "metadata": {"name": "api", "namespace": namespace},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "mode": "Auto",
                         "processTuning": {"nice": -15, "ioClass": "BestEffort", "ioPriority": 1, "cpuPinning": True}}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        pods = {p["metadata"]["uid"]: p for p in running_pods(cluster, namespace, "api")}

        def entries():
            found = {e["podUID"]: (name, e) for name, nt in node_tunings(cluster).items()
                     for e in nt["spec"].get("processes", []) if e["namespace"] == namespace}
            on_general = {uid for uid, p in pods.items() if p["spec"]["nodeName"] in GENERAL}
            return found if set(found) == on_general else None

        found = wait_for("a process entry for every pod on a general node", entries)
        for uid, (node, entry) in found.items():
            assert node == pods[uid]["spec"]["nodeName"] and node in GENERAL
            assert entry["nice"] == -5, (node, entry)
            assert entry["ioClass"] == "BestEffort" and entry["ioPriority"] == 1
            assert "cpus" not in entry  # pinning: not allowed on general
            assert entry["containerName"] == "app" and entry["policy"] == f"PerformancePolicy/{namespace}/api"
        # The tenant's policy says what it did not get: no admin policy on kwok-node-1, no pinning elsewhere.
        uncovered = sorted({p["spec"]["nodeName"] for p in pods.values()} - GENERAL)
        said = wait_for("the ProcessTuning condition", lambda: condition(get_pp(cluster, namespace, "api"), "ProcessTuning")
                        or None)
        assert said["status"] == "False", said
        assert said["reason"] == ("NoNodePolicy" if uncovered else "PinningNotAllowed"), said
        for node in uncovered:
            assert f"node {node} has no NodeTuningPolicy allowing process tuning; not applied" in said["message"]

        # The policy goes: its entries go (e2e-limits tunes nothing itself: every plan is monitoring only).
        cluster.kubectl("delete", "performancepolicy", "api", "-n", namespace)
        wait_for("the process entries removed", lambda: not any(
            nt["spec"].get("processes") for nt in all_node_tunings(cluster).values()))
        cluster.kubectl("delete", "nodetuningpolicy", "e2e-limits")
        wait_for("every NodeTuning monitoring only", lambda: node_tunings(cluster) == {})
    finally:
        cleanup(cluster, "e2e-limits")


def get_pp(cluster, namespace, name):
    return json.loads(cluster.kubectl("get", "performancepolicy", name, "-n", namespace, "-o", "json").stdout)


def test_starved_pinning_is_reported_on_the_policy_while_both_loops_run(cluster, operator, namespace):
    """The admin's share is one pinned CPU per namespace on every node; the tenant's pod wants two. Its
    policy says so (condition + one Event, naming node and CPUs), and the evaluation loop, which
    writes the same policy's status every cycle, never drops the condition. Raising the share pins it."""
    try:
        node_policy(cluster, "e2e-share", nodeSelector={}, processTuning={"maxPinnedCpusPerNamespace": 1})  # every node
        deploy(cluster, namespace, replicas=1, cpu="2", cpu_limit="2")
        node = running_pods(cluster, namespace, "api")[0]["spec"]["nodeName"]
        body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
                "metadata": {"name": "api", "namespace": namespace},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "mode": "Auto",
                         "interval": "10s", "processTuning": {"cpuPinning": True}}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        starved = wait_for("ProcessTuning CPUShareReached", lambda: (c := condition(get_pp(cluster, namespace, "api"),
                           "ProcessTuning")).get("reason") == "CPUShareReached" and c)
        assert starved["status"] == "False"
        assert f"needs 2 dedicated CPUs, namespace {namespace} holds 0 of its share of 1 on node {node}" in starved["message"]
        # A spec change makes both loops write the same status again: the evaluation its whole status
        # (merge patch, conditions as it read them), the planner its condition (server-side apply).
        # Both end up there, each for the new generation.
        cluster.kubectl("patch", "performancepolicy", "api", "-n", namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"interval": "12s"}}))
        generation = get_pp(cluster, namespace, "api")["metadata"]["generation"]

        def both_for_the_new_generation():
            obj = get_pp(cluster, namespace, "api")
            ready, kept = condition(obj, "Ready"), condition(obj, "ProcessTuning")
            return (ready.get("observedGeneration") == generation and kept.get("observedGeneration") == generation
                    and obj)
        obj = wait_for("Ready and ProcessTuning for the new generation", both_for_the_new_generation)
        kept = condition(obj, "ProcessTuning")
        assert {k: kept[k] for k in ("status", "reason", "message")} == {
            k: starved[k] for k in ("status", "reason", "message")}, obj["status"]
        managed = json.loads(cluster.kubectl("get", "performancepolicy", "api", "-n", namespace, "-o", "json",
                                             "--show-managed-fields").stdout)["metadata"]["managedFields"]
        writers = {m["manager"] for m in managed if m.get("subresource") == "status"}
        assert "kubetune-node-planner" in writers and len(writers) >= 2, writers
        warnings = events_on(cluster, "PerformancePolicy", "api", "CPUShareReached")
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and node in warnings[0]["message"], warnings
        # The admin raises the share: pinned, the condition and a Normal Event say so.
        cluster.kubectl("patch", "nodetuningpolicy", "e2e-share", "--type=merge", "-p",
                        json.dumps({"spec": {"processTuning": {"maxPinnedCpusPerNamespace": 2}}}))
        planned = wait_for("ProcessTuning Planned", lambda: (c := condition(get_pp(cluster, namespace, "api"),
                           "ProcessTuning")).get("reason") == "Planned" and c)
        assert planned["status"] == "True" and node in planned["message"]
        entry = next(e for e in node_tunings(cluster)[node]["spec"]["processes"] if e["namespace"] == namespace)
        assert entry["cpus"] == [6, 7]
        assert wait_for("a Normal Planned Event", lambda: events_on(cluster, "PerformancePolicy", "api", "Planned"))
        assert len(events_on(cluster, "PerformancePolicy", "api", "CPUShareReached")) == 1
    finally:
        cleanup(cluster, "e2e-share")


def events_on(cluster, kind: str, name: str, reason: str) -> list[dict]:
    out = cluster.kubectl("get", "events", "-A", "-o", "json", "--field-selector",
                          f"involvedObject.kind={kind},involvedObject.name={name},reason={reason}").stdout
    return json.loads(out)["items"]


def test_every_node_has_a_node_tuning_and_a_silent_agent_is_visible(cluster, operator):
    """No policy at all: every node still gets a NodeTuning with the default thresholds, and since no
    agent reports for these kwok nodes, each is Ready=False AgentNotReporting with a Warning Event on it
    (what `kubectl describe nt` shows)."""
    nodes = {n["metadata"]["name"] for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    nts = wait_for("a NodeTuning for every node", lambda: (n := all_node_tunings(cluster)) and set(n) >= nodes and n)
    spec = nts["kwok-node-0"]["spec"]
    assert spec["thresholds"]["cpu"]["criticalPercent"] == 85 and spec["thresholds"]["network"]["bandwidthWarningPercent"] == 80
    # The agent interval is unknown until an agent reports: three default intervals (30 s) after creation.
    ready = wait_for("kwok-node-0 marked AgentNotReporting",
                     lambda: condition(all_node_tunings(cluster)["kwok-node-0"], "Ready").get("reason")
                     == "AgentNotReporting" and condition(all_node_tunings(cluster)["kwok-node-0"], "Ready"),
                     timeout=90)
    # Either no agent ever reported, or (an earlier test in this session reported as this node) its
    # heartbeat is stale: both are the same verdict.
    assert ready["status"] == "False" and ("no node agent has reported" in ready["message"]
                                           or "last heartbeat was" in ready["message"]), ready
    event = wait_for("an AgentNotReporting Event on the NodeTuning",
                     lambda: events_on(cluster, "NodeTuning", "kwok-node-0", "AgentNotReporting"), timeout=30)[-1]
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == nts["kwok-node-0"]["metadata"]["uid"]
    described = cluster.kubectl("describe", "nodetuning", "kwok-node-0").stdout
    assert "AgentNotReporting" in described, described
    printed = cluster.kubectl("get", "nt", "kwok-node-0").stdout
    assert printed.split("\n")[0].split()[:3] == ["NAME", "READY", "APPLIED"], printed
    assert printed.split("\n")[1].split()[1] == "False", printed
