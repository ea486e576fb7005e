"""Node-tuning resolution tables: node labels, NodeTuningPolicies, PerformancePolicy process tuning and
reported block devices in; one NodeTuning spec per node, matched nodes and conflicts out."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kubetune.api.common import LabelSelector
from kubetune.api.nodetuning import BlockDevice, NodeTuningSpec
from kubetune.api.nodetuningpolicy import NodeTuningPolicySpec
from kubetune.api.performancepolicy import PerformancePolicySpec, ProcessTuning
from kubetune.reasons import Reason
from kubetune.records import PolicyRecord
from kubetune.settings import OperatorSettings, SettingsError
from kubetune.nodeplanner import NodeTuningRecord, NodeView, process_requests, process_tuning_update, resolve
from kubetune.nodetuning import (
    NodeFacts,
    NodeTuningPolicyRecord,
    ProcessRequest,
    describe_changes,
    monitoring_spec,
    normalised_spec,
    policy_status,
    process_tuning_condition,
    resolve_node_tunings,
    selector_matches,
    stale_agent_message,
)
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)

NODES = {"n0": NodeFacts({"kubetune.io/pool": "general", "zone": "a"}, cpus=8),
         "n1": NodeFacts({"kubetune.io/pool": "batch", "zone": "b"}, cpus=8),
         "n2": NodeFacts({"kubetune.io/pool": "general"}, cpus=4)}


def ntp(name, selector=None, priority=0, mode="Auto", **spec) -> NodeTuningPolicyRecord:
    body = {"nodeSelector": selector if selector is not None else {"matchLabels": {"kubetune.io/pool": "general"}},
            "priority": priority, "mode": mode, **spec}
    return NodeTuningPolicyRecord(name, f"uid-{name}", 1, NodeTuningPolicySpec.model_validate(body), None)


def sysctl(name, value):
    return {"sysctls": [{"name": name, "value": value}]}


def knobs(spec) -> dict[str, str]:
    return {k["key"]: k["value"] for k in spec.get("knobs", [])}


def run(policies, requests=(), devices=None, nodes=NODES, min_nice=-10, existing=None):
    return resolve_node_tunings(nodes, policies, requests, devices or {}, min_nice=min_nice, existing=existing)


def tuned(result) -> list[str]:
    """The nodes whose plan tunes something (every other node has the monitoring-only plan)."""
    return sorted(node for node, spec in result.specs.items() if spec != monitoring_spec())


# --- selectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector, labels, expected", [
    ({}, {}, True),
    ({"matchLabels": {"pool": "a"}}, {"pool": "a", "x": "y"}, True),
    ({"matchLabels": {"pool": "a"}}, {"pool": "b"}, False),
    ({"matchLabels": {"pool": "a"}}, {}, False),
    ({"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}, {"pool": "b"}, True),
    ({"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["a"]}]}, {"pool": "b"}, True),
    ({"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["a"]}]}, {"pool": "a"}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
    ({"matchLabels": {"pool": "a"}, "matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},
     {"pool": "a", "zone": "z2"}, False),
], ids=lambda v: str(v) if not isinstance(v, dict) else None)
def test_selector(selector, labels, expected):
    assert selector_matches(LabelSelector.model_validate(selector), labels) is expected


# --- matching, priority, conflicts, mode ------------------------------------------------------------


def test_policy_applies_to_exactly_the_matching_nodes():
    result = run([ntp("general", **sysctl("net.core.somaxconn", "4096"))])
    assert tuned(result) == ["n0", "n2"]
    assert knobs(result.specs["n0"]) == {"sysctl.net.core.somaxconn": "4096"}
    assert result.policies["general"].matched_nodes == ["n0", "n2"]
    assert result.specs["n0"]["knobs"][0]["policy"] == "NodeTuningPolicy/general"
    NodeTuningSpec.model_validate(result.specs["n0"])  # valid wire form


def test_node_no_longer_matched_gets_the_monitoring_only_plan():
    nodes = {**NODES, "n2": NodeFacts({"kubetune.io/pool": "batch"})}
    result = run([ntp("general", **sysctl("net.core.somaxconn", "4096"))], nodes=nodes)
    assert tuned(result) == ["n0"]
    assert result.specs["n2"] == monitoring_spec()


def test_every_node_gets_a_node_tuning_with_the_default_thresholds_even_without_policies():
    result = run([])
    assert sorted(result.specs) == ["n0", "n1", "n2"]
    spec = NodeTuningSpec.model_validate(result.specs["n1"])
    # Auto with nothing to tune: what the agent journaled earlier is restored, not only planned.
    assert spec.mode.value == "Auto" and not spec.knobs and not spec.processes and spec.adaptive is None
    assert spec.thresholds.cpu.critical_percent == 85 and spec.thresholds.network.bandwidth_warning_percent == 80
    assert "no policy contributes" in result.why["n1"]["mode"]


@pytest.mark.parametrize("heartbeat_age, interval, created_age, stale", [
    (5, 10.0, 3600, False),       # reporting
    (30, 10.0, 3600, False),      # exactly three intervals: still fine
    (31, 10.0, 3600, True),       # older than three intervals
    (4, 1.0, 3600, True),         # a 1 s agent is stale after 3 s
    (None, None, 20, False),      # never reported, NodeTuning just created: the agent is starting
    (None, None, 31, True),       # never reported, three default intervals after creation
], ids=["fresh", "at-limit", "stale", "fast-agent", "starting", "never-reported"])
def test_stale_agent_message(heartbeat_age, interval, created_age, stale):
    from datetime import timedelta
    heartbeat = None if heartbeat_age is None else NOW - timedelta(seconds=heartbeat_age)
    message = stale_agent_message(heartbeat, interval, NOW - timedelta(seconds=created_age), NOW)
    assert (message is not None) == stale, message
    if stale and heartbeat is not None:
        assert f"{heartbeat_age}s ago" in message


@pytest.mark.parametrize("policies, expected, conflict", [
    # higher priority wins the field it sets, the rest merge field by field
    ([ntp("base", priority=0, sysctls=[{"name": "net.core.somaxconn", "value": "1024"},
                                       {"name": "fs.file-max", "value": "100000"}]),
      ntp("db", priority=10, **sysctl("net.core.somaxconn", "8192"))],
     {"sysctl.net.core.somaxconn": "8192", "sysctl.fs.file-max": "100000"}, False),
    # equal priority, same value: no conflict
    ([ntp("a", **sysctl("net.core.somaxconn", "1024")), ntp("b", **sysctl("net.core.somaxconn", "1024"))],
     {"sysctl.net.core.somaxconn": "1024"}, False),
    # equal priority, different values: the knob is left out and reported
    ([ntp("a", **sysctl("net.core.somaxconn", "1024")), ntp("b", **sysctl("net.core.somaxconn", "2048"))],
     {}, True),
    # a higher priority above the tie settles it
    ([ntp("a", **sysctl("net.core.somaxconn", "1024")), ntp("b", **sysctl("net.core.somaxconn", "2048")),
      ntp("c", priority=5, **sysctl("net.core.somaxconn", "4096"))],
     {"sysctl.net.core.somaxconn": "4096"}, False),
    # an Off policy contributes nothing
    ([ntp("a", **sysctl("net.core.somaxconn", "1024")), ntp("b", priority=9, mode="Off", **sysctl("net.core.somaxconn", "2048"))],
     {"sysctl.net.core.somaxconn": "1024"}, False),
], ids=["priority-merge", "equal-same", "equal-different", "higher-settles-tie", "off-ignored"])
def test_priority_merge(policies, expected, conflict):
    result = run(policies)
    assert knobs(result.specs["n0"]) == expected
    assert bool(result.conflicts.get("n0")) is conflict


def test_override_is_explained_in_the_knob_reason():
    result = run([ntp("base", **sysctl("net.core.somaxconn", "1024")),
                  ntp("db", priority=10, **sysctl("net.core.somaxconn", "8192"))])
    knob = result.specs["n0"]["knobs"][0]
    assert knob["policy"] == "NodeTuningPolicy/db"
    assert "priority 10" in knob["reason"] and "NodeTuningPolicy/base (priority 0: 1024)" in knob["reason"]


def test_conflict_is_reported_on_both_policies_status():
    a, b = ntp("a", **sysctl("net.core.somaxconn", "1024")), ntp("b", **sysctl("net.core.somaxconn", "2048"))
    result = run([a, b])
    for record in (a, b):
        status = policy_status(record, result.policies[record.name], NOW)
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Conflict"]["status"] == "True"
        assert "sysctl.net.core.somaxconn" in conditions["Conflict"]["message"]
        assert "NodeTuningPolicy/a=1024" in conditions["Conflict"]["message"]
        assert conditions["Ready"]["status"] == "True" and status["matchedNodes"] == 2


def test_adaptive_rules_merge_by_field_and_dirty_ratios_stay_together():
    low = ntp("low", memory={"swappiness": {"min": 5, "max": 30}, "dirtyRatio": {"min": 20, "max": 40},
                             "dirtyBackgroundRatio": {"min": 5, "max": 10}},
              cpu={"governor": {"highLoad": "performance"}})
    high = ntp("high", priority=3, memory={"dirtyRatio": {"min": 10, "max": 30}})
    spec = run([low, high]).specs["n0"]
    memory = spec["adaptive"]["memory"]
    assert memory["swappiness"] == {"min": 5, "max": 30}
    assert memory["dirtyRatio"] == {"min": 10, "max": 30} and "dirtyBackgroundRatio" not in memory
    assert spec["adaptive"]["cpu"]["governor"]["highLoad"] == "performance"
    assert spec["adaptive"]["policy"] == "NodeTuningPolicy/high,NodeTuningPolicy/low"
    assert "knobs" not in spec  # adaptive knobs are not also fixed knobs


def test_thresholds_come_from_the_highest_priority_and_fall_back_to_defaults_on_conflict():
    a = ntp("a", thresholds={"cpu": {"warningPercent": 50, "criticalPercent": 60}})
    b = ntp("b", thresholds={"cpu": {"warningPercent": 55, "criticalPercent": 65}})
    c = ntp("c", priority=1, thresholds={"memory": {"warningPercent": 50, "criticalPercent": 60}})
    spec = run([a, b, c]).specs["n0"]
    assert spec["thresholds"]["cpu"]["criticalPercent"] == 85  # a and b disagree: defaults
    assert spec["thresholds"]["memory"]["criticalPercent"] == 60


@pytest.mark.parametrize("modes, expected", [
    (["Auto"], "Auto"), (["Recommend"], "Recommend"), (["Auto", "Recommend"], "Recommend"),
    (["Auto", "Off"], "Auto"), (["Auto", "Auto"], "Auto"),
])
def test_mode_is_the_most_cautious_of_the_contributing_policies(modes, expected):
    policies = [ntp(f"p{i}", mode=m, priority=i) for i, m in enumerate(modes)]
    assert run(policies).specs["n0"]["mode"] == expected


def test_only_off_policies_mean_monitoring_only():
    result = run([ntp("a", mode="Off", **sysctl("net.core.somaxconn", "1024"))])
    assert tuned(result) == [] and result.policies["a"].matched_nodes == ["n0", "n2"]


# --- block devices --------------------------------------------------------------------------------

DEVICES = {"n0": [BlockDevice(name="sda", device_class="HDD"), BlockDevice(name="sdb", device_class="SSD"),
                  BlockDevice(name="nvme0n1", device_class="NVMe"), BlockDevice(name="dm-0", device_class="SSD")]}


@pytest.mark.parametrize("rules, expected", [
    ([{"deviceClass": "HDD", "scheduler": "bfq"}], {"block.sda.scheduler": "bfq"}),
    ([{"deviceClass": "SSD", "scheduler": "deadline", "readAheadKb": 128}],
     {"block.sdb.scheduler": "mq-deadline", "block.sdb.readAheadKb": "128",
      "block.dm-0.scheduler": "mq-deadline", "block.dm-0.readAheadKb": "128"}),
    ([{"devicePattern": "sd*", "readAheadKb": 256}], {"block.sda.readAheadKb": "256", "block.sdb.readAheadKb": "256"}),
    ([{"devicePattern": "nvme?n1", "scheduler": "none"}], {"block.nvme0n1.scheduler": "none"}),
    # first rule that sets a setting wins; a later rule still fills a setting the first left out
    ([{"devicePattern": "sda", "scheduler": "kyber"}, {"deviceClass": "HDD", "scheduler": "bfq", "readAheadKb": 4096}],
     {"block.sda.scheduler": "kyber", "block.sda.readAheadKb": "4096"}),
], ids=["hdd-by-class", "ssd-alias", "pattern", "nvme-pattern", "first-wins"])
def test_device_rules_become_block_knobs(rules, expected):
    spec = run([ntp("io", io={"devices": rules})], devices=DEVICES).specs["n0"]
    assert knobs(spec) == expected


def test_no_reported_devices_no_block_knobs_yet():
    result = run([ntp("io", io={"devices": [{"deviceClass": "HDD", "scheduler": "bfq"}]})])
    assert "knobs" not in result.specs["n0"]  # the NodeTuning exists so the agent can report devices


# --- process tuning -------------------------------------------------------------------------------


def pod(name, node, uid=None, cpu=1.0, containers=("app",), phase="Running", namespace="shop") -> PodRecord:
    return PodRecord(namespace, name, uid or f"uid-{name}", node, phase,
                     tuple(ContainerResources(c, {"cpu": cpu} if cpu else {}, {}) for c in containers))


def request(*pods, policy="PerformancePolicy/shop/checkout", **tuning) -> ProcessRequest:
    return ProcessRequest(policy, ProcessTuning.model_validate(tuning), tuple(pods))


EVERY_NODE = {}  # a NodeTuningPolicy selector matching every node


def processes(spec) -> dict[tuple[str, str], dict]:
    return {(p["podName"], p["containerName"]): p for p in spec.get("processes", [])}


@pytest.mark.parametrize("asked, node_min, floor, expected", [
    (-5, -10, -10, -5),
    (-15, -10, -10, -10),   # clamped by the node's policy (and the floor)
    (-15, -20, -10, -10),   # the operator's floor beats a permissive node policy
    (-15, -5, -10, -5),     # the node's policy is stricter than the floor
    (5, -10, -10, 5),
])
def test_nice_is_clamped(asked, node_min, floor, expected):
    policy = ntp("general", processTuning={"minNice": node_min})
    spec = run([policy], [request(pod("a", "n0"), nice=asked)], min_nice=floor).specs["n0"]
    assert processes(spec)[("a", "app")]["nice"] == expected


@pytest.mark.parametrize("policies", [[], [ntp("off", selector=EVERY_NODE, mode="Off")], [ntp("general")]],
                         ids=["no-node-policy", "only-an-Off-policy", "policy-on-other-nodes"])
def test_no_admin_policy_means_no_process_tuning(policies):
    """A tenant's process tuning on a node no admin policy covers was planned in Auto: now nothing is
    applied there (the plan stays monitoring only) and the tenant's policy is told why."""
    result = run(policies, [request(pod("a", "n1"), nice=-15, cpuPinning=True)], min_nice=-8)
    assert result.specs["n1"] == monitoring_spec()
    ok, reason, message = process_tuning_condition(result.process_issues["PerformancePolicy/shop/checkout"],
                                                   result.process_nodes.get("PerformancePolicy/shop/checkout", {}))
    assert (ok, reason) == (False, Reason.NO_NODE_POLICY)
    assert message == "node n1 has no NodeTuningPolicy allowing process tuning; not applied"


def test_a_recommend_admin_policy_only_plans_process_tuning():
    result = run([ntp("general", mode="Recommend")], [request(pod("a", "n0"), pod("b", "n1"), nice=-5)])
    assert result.specs["n0"]["mode"] == "Recommend" and processes(result.specs["n0"])[("a", "app")]["nice"] == -5
    assert result.specs["n1"] == monitoring_spec()
    ref = "PerformancePolicy/shop/checkout"
    ok, reason, message = process_tuning_condition(result.process_issues[ref], result.process_nodes[ref])
    assert (ok, reason) == (False, Reason.NO_NODE_POLICY)
    assert message == ("node n1 has no NodeTuningPolicy allowing process tuning; not applied; "
                       "applied on n0 (Recommend: planned only)")


def test_process_tuning_where_admins_allow_it_is_planned():
    result = run([ntp("all", selector=EVERY_NODE)], [request(pod("a", "n0"), pod("b", "n1"), nice=-5)])
    ref = "PerformancePolicy/shop/checkout"
    assert ref not in result.process_issues
    assert process_tuning_condition([], result.process_nodes[ref]) == (
        True, Reason.PLANNED, "in the NodeTunings of 2 nodes: n0 (Auto), n1 (Auto)")


@pytest.mark.parametrize("policies, node, pinned", [
    ([ntp("general")], "n0", True),
    ([ntp("general", processTuning={"allowCpuPinning": False})], "n0", False),
    ([ntp("general"), ntp("strict", priority=0, processTuning={"allowCpuPinning": False})], "n0", False),
    ([ntp("general")], "n1", False),  # no NodeTuningPolicy covers n1: no pinning
], ids=["allowed", "disallowed", "any-policy-forbids", "no-node-policy"])
def test_cpu_pinning_needs_the_node_policy(policies, node, pinned):
    spec = run(policies, [request(pod("a", node, cpu=1.5), cpu_pinning=True, nice=-1)]).specs[node]
    cpus = processes(spec).get(("a", "app"), {}).get("cpus", [])  # no entry at all on an uncovered node
    assert (cpus == [6, 7]) if pinned else (cpus == [])


def test_pinned_cpus_are_dedicated_stable_and_never_cpu0():
    pods = [pod("a", "n2", cpu=1), pod("b", "n2", cpu=2), pod("c", "n2", cpu=1)]
    result = run([ntp("general")], [request(*pods, cpu_pinning=True)])
    got = processes(result.specs["n2"])
    assert got[("a", "app")]["cpus"] == [3] and got[("b", "app")]["cpus"] == [1, 2]
    assert ("c", "app") not in got  # 4 CPUs, CPU 0 kept back: nothing left
    assert "PerformancePolicy/shop/checkout: shop/c/app needs 1 dedicated CPUs, node n2 has 0 left; not pinned" in result.notes
    # pod a goes away: b keeps its CPUs, c gets a's
    again = run([ntp("general")], [request(*pods[1:], cpu_pinning=True)], existing=result.specs)
    got = processes(again.specs["n2"])
    assert got[("b", "app")]["cpus"] == [1, 2] and got[("c", "app")]["cpus"] == [3]


def tenant(namespace, *pods):
    return request(*pods, policy=f"PerformancePolicy/{namespace}/svc", cpuPinning=True)


def cpus_of(result, node="n2") -> dict[str, list[int]]:
    """Pinned pods -> their CPUs (a pod asking only for pinning and not pinned has no entry)."""
    return {p["podName"]: p["cpus"] for p in result.specs[node].get("processes", []) if p.get("cpus")}


def test_a_newcomer_never_takes_a_pinning_away_and_is_told_so():
    """n2 has CPUs 1-3 to hand out. A holds 2, B's rollout brings a new pod wanting 2: first come, B
    is not pinned, and B's policy (not only the operator log) says which node and how many."""
    a = pod("a1", "n2", cpu=2, namespace="a")
    first = run([ntp("general")], [tenant("a", a), tenant("b", pod("b1", "n2", cpu=1, namespace="b"))])
    assert cpus_of(first) == {"a1": [2, 3], "b1": [1]}
    b2 = pod("b2", "n2", cpu=2, namespace="b")  # B's new pod, while its old one still runs
    during = run([ntp("general")], [tenant("a", a), tenant("b", pod("b1", "n2", cpu=1, namespace="b"), b2)],
                 existing=first.specs)
    assert cpus_of(during) == {"a1": [2, 3], "b1": [1]}
    ok, reason, message = process_tuning_condition(during.process_issues["PerformancePolicy/b/svc"],
                                                   during.process_nodes["PerformancePolicy/b/svc"])
    assert (ok, reason) == (False, Reason.NOT_PINNED)
    assert message == "b/b2/app needs 2 dedicated CPUs, node n2 has 0 left; not pinned; applied on n2 (Auto)"
    assert "PerformancePolicy/a/svc" not in during.process_issues


def test_after_a_rollout_the_tenant_holding_fewest_cpus_goes_first():
    """A holds one CPU and has a pod waiting; B's old pod leaves (rollout). The freed CPUs go to B's
    new pod, not to A's waiting one (which A's policy name would have put first before)."""
    a1, a2 = pod("a1", "n2", cpu=1, namespace="a"), pod("a2", "n2", cpu=2, namespace="a")
    b1 = pod("b1", "n2", cpu=2, namespace="b")
    before = run([ntp("general")], [tenant("a", a1), tenant("b", b1)])
    assert cpus_of(before) == {"a1": [3], "b1": [1, 2]}
    b2 = pod("b2", "n2", cpu=2, namespace="b")
    after = run([ntp("general")], [tenant("a", a1, a2), tenant("b", b2)], existing=before.specs)
    assert cpus_of(after) == {"a1": [3], "b2": [1, 2]}
    assert [i.reason for i in after.process_issues["PerformancePolicy/a/svc"]] == [Reason.NOT_PINNED]


def test_the_admins_namespace_share_bounds_pinning():
    share = {"processTuning": {"maxPinnedCpusPerNamespace": 3}}
    policies = [ntp("general", **share), ntp("strict", processTuning={"maxPinnedCpusPerNamespace": 2})]
    pods = [pod("a1", "n0", cpu=1, namespace="a"), pod("a2", "n0", cpu=2, namespace="a"),
            pod("b1", "n0", cpu=2, namespace="b")]
    result = run(policies, [tenant("a", *pods[:2]), tenant("b", pods[2])])
    # the smallest share of the node's policies (2): a2 would bring namespace a to 3
    assert cpus_of(result, "n0") == {"a1": [7], "b1": [5, 6]}
    (issue,) = result.process_issues["PerformancePolicy/a/svc"]
    assert issue.reason is Reason.CPU_SHARE_REACHED
    assert issue.message == "a/a2/app needs 2 dedicated CPUs, namespace a holds 1 of its share of 2 on node n0; not pinned"
    assert "at most 2 CPUs per namespace (NodeTuningPolicy/strict)" in result.why["n0"]["processes"]
    # the admin lowers the share: kept assignments beyond it are given up, the admin's bound wins
    lowered = run([ntp("general", processTuning={"maxPinnedCpusPerNamespace": 1})],
                  [tenant("a", *pods[:2]), tenant("b", pods[2])], existing=result.specs)
    assert cpus_of(lowered, "n0") == {"a1": [7]}


def test_pinning_a_node_policy_forbids_is_reported():
    result = run([ntp("general", processTuning={"allowCpuPinning": False})], [tenant("a", pod("a1", "n0", namespace="a"))])
    (issue,) = result.process_issues["PerformancePolicy/a/svc"]
    assert issue.reason is Reason.PINNING_NOT_ALLOWED and "pinning not allowed by NodeTuningPolicy/general" in issue.message


def test_process_entries_follow_pods_containers_and_phases():
    pods = [pod("a", "n0", containers=("app", "sidecar")), pod("b", "n1"), pod("done", "n0", phase="Succeeded"),
            pod("pending", None, phase="Pending"), pod("gone", "n9")]
    result = run([ntp("all", selector=EVERY_NODE)], [request(*pods, containers=["app"], ioClass="BestEffort", ioPriority=2)])
    assert tuned(result) == ["n0", "n1"]
    assert list(processes(result.specs["n0"])) == [("a", "app")]
    entry = processes(result.specs["n0"])[("a", "app")]
    assert entry["ioClass"] == "BestEffort" and entry["ioPriority"] == 2 and "nice" not in entry
    assert entry["podUID"] == "uid-a" and entry["policy"] == "PerformancePolicy/shop/checkout"


def test_socket_buffers_alone_are_not_a_node_entry():
    result = run([], [request(pod("a", "n0"), socketBuffers={"receiveMaxBytes": 1 << 20})])
    assert tuned(result) == []


def pp(name, mode="Auto", target="checkout", created="2026-01-01T00:00:00Z", **tuning) -> PolicyRecord:
    spec = PerformancePolicySpec.model_validate({"targetRef": {"kind": "Deployment", "name": target}, "mode": mode,
                                                 "processTuning": tuning})
    return PolicyRecord("shop", name, f"uid-{name}", 1, created, spec, None, {})


def test_only_auto_performance_policies_that_own_their_target_ask_for_process_tuning():
    pods = {WorkloadRef("shop", "Deployment", "checkout"): [pod("a", "n0")],
            WorkloadRef("shop", "Deployment", "cart"): [pod("b", "n0")]}
    policies = [pp("checkout", nice=-5), pp("late", created="2026-02-01T00:00:00Z", nice=-20),
                pp("cart", mode="Recommend", target="cart", nice=-5)]
    requests = process_requests(policies, pods)
    assert [r.policy for r in requests] == ["PerformancePolicy/shop/checkout"]


@pytest.mark.parametrize("asked,high_load,node_min,expected", [
    (None, False, -10, None),  # no raise asked, none under normal load
    (None, True, -10, -5),  # high load: 5 higher than the default 0
    (-3, True, -10, -8),
    (-8, True, -10, -10),  # clamped to the node's minNice
    (-3, False, -10, -3),  # load fell: back to what the policy asks
])
def test_high_load_raises_priority_within_min_nice(asked, high_load, node_min, expected):
    policy = pp("checkout", nice=asked, ioClass="BestEffort")
    policy = PolicyRecord(policy.namespace, policy.name, policy.uid, 1, policy.created, policy.spec, None,
                          {"signals": {"highLoad": high_load}})
    requests = process_requests([policy], {WorkloadRef("shop", "Deployment", "checkout"): [pod("a", "n0")]})
    resolution = run([ntp("base", processTuning={"minNice": node_min})], requests)
    (entry,) = processes(resolution.specs["n0"]).values()
    assert entry.get("nice") == expected


def test_planner_view_resolution_uses_reported_devices():
    view = NodeView(nodes=NODES, node_policies=[ntp("io", io={"devices": [{"deviceClass": "HDD", "scheduler": "bfq"}]})],
                    performance_policies=[], pods={},
                    node_tunings={"n0": NodeTuningRecord({}, {}, None, tuple(DEVICES["n0"]))})
    assert knobs(resolve(view, -10).specs["n0"]) == {"block.sda.scheduler": "bfq"}


# --- status and explanations -------------------------------------------------------------------------


def test_policy_status_ready_and_no_conflict():
    record = ntp("general")
    status = policy_status(record, run([record]).policies["general"], NOW)
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Ready": ("True", "Resolved"), "Conflict": ("False", "NoConflict")}
    assert status["matchedNodes"] == 2 and status["observedGeneration"] == 1
    # unchanged outcome -> identical status (so the planner does not patch again)
    again = policy_status(NodeTuningPolicyRecord("general", "u", 1, record.spec, None, status),
                          run([record]).policies["general"], NOW.replace(hour=13))
    assert again == status


def test_invalid_policy_status():
    record = NodeTuningPolicyRecord("bad", "u", 2, None, "spec.priority: too big")
    status = policy_status(record, None, NOW)
    assert status["conditions"][0]["reason"] == "InvalidSpec" and status["matchedNodes"] == 0


def test_spec_written_equals_spec_read_back():
    spec = run([ntp("general", **sysctl("net.core.somaxconn", "4096"))],
               [request(pod("a", "n0"), nice=-3)]).specs["n0"]
    assert normalised_spec(spec) == spec


def test_describe_changes_says_from_to_and_why():
    old = run([ntp("base", **sysctl("net.core.somaxconn", "1024"))]).specs["n0"]
    result = run([ntp("base", **sysctl("net.core.somaxconn", "1024")),
                  ntp("db", priority=10, mode="Recommend", **sysctl("net.core.somaxconn", "8192"))])
    lines = describe_changes("n0", old, result.specs["n0"], result.why["n0"])
    assert any("sysctl.net.core.somaxconn 1024 -> 8192" in line and "NodeTuningPolicy/db" in line for line in lines)
    assert any("mode Auto -> Recommend" in line and "NodeTuningPolicy/db" in line for line in lines)
    assert "deleted" in describe_changes("n0", old, None)[0]


# --- the planner: staleness marking, with a fake at the Kubernetes seam ------------------------------


class PlannerKube:
    """Records what the planner asks of the API server."""

    def __init__(self):
        self.calls: list[tuple] = []

    def apply_node_tuning(self, name, spec, labels, annotations=None):
        self.calls.append(("apply", name))

    def delete_node_tuning(self, name):
        self.calls.append(("delete", name))

    def patch_node_tuning_status(self, name, status):
        self.calls.append(("status", name, status))

    def patch_node_tuning_policy_status(self, name, status):
        self.calls.append(("policy-status", name))

    def event(self, involved, type_, reason, message):
        self.calls.append(("event", involved["kind"], involved["name"], involved["uid"], type_, reason, message))

    def apply_policy_condition(self, namespace, name, condition, condition_type):
        self.calls.append(("condition", namespace, name, condition))


def nt_record(heartbeat_age: float | None, conditions=(), interval=1.0) -> NodeTuningRecord:
    from datetime import timedelta
    return NodeTuningRecord(
        {"app.kubernetes.io/managed-by": "kubetune"}, {}, monitoring_spec(), (), uid="uid-nt", generation=4,
        created=NOW - timedelta(hours=1), interval_seconds=interval,
        heartbeat=None if heartbeat_age is None else NOW - timedelta(seconds=heartbeat_age),
        conditions=tuple(conditions))


def plan_once(records, kube):
    import asyncio

    from kubetune.metrics import OperatorMetrics
    from kubetune.nodeplanner import NodePlanner
    from kubetune.settings import OperatorSettings
    from prometheus_client import CollectorRegistry

    planner = NodePlanner(OperatorSettings(), kube, OperatorMetrics(CollectorRegistry()), clock=lambda: NOW)
    view = NodeView(nodes={n: NodeFacts({}) for n in records}, node_policies=[], performance_policies=[],
                    pods={}, node_tunings=records)
    asyncio.run(planner.cycle(view))
    return planner


def test_a_silent_agent_is_marked_not_reporting_once_with_an_event_on_the_node_tuning():
    applied = {"type": "Applied", "status": "True", "reason": "Applied", "message": "3 settings in place",
               "lastTransitionTime": "2026-11-27T11:00:00Z", "observedGeneration": 4}
    kube = PlannerKube()
    planner = plan_once({"n0": nt_record(heartbeat_age=2), "n1": nt_record(heartbeat_age=60, conditions=[applied])},
                        kube)
    patches = [c for c in kube.calls if c[0] == "status"]
    assert [p[1] for p in patches] == ["n1"]  # n0 reported 2 s ago: fine at a 1 s interval
    conditions = {c["type"]: c for c in patches[0][2]["conditions"]}
    assert conditions["Applied"] == applied  # the agent's conditions are kept
    ready = conditions["Ready"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "AgentNotReporting", 4)
    assert "60s ago" in ready["message"]
    events = [c for c in kube.calls if c[0] == "event"]
    assert events == [("event", "NodeTuning", "n1", "uid-nt", "Warning", "AgentNotReporting", ready["message"])]
    # Nothing is applied: both NodeTunings already hold the plan they should.
    assert not [c for c in kube.calls if c[0] in ("apply", "delete")]

    # Marked: the next cycle (the index now shows the condition) writes nothing again.
    kube.calls.clear()
    import asyncio
    marked = nt_record(heartbeat_age=65, conditions=[applied, ready])
    view = NodeView(nodes={"n1": NodeFacts({})}, node_policies=[], performance_policies=[], pods={},
                    node_tunings={"n1": marked})
    asyncio.run(planner.cycle(view))
    assert kube.calls == []


# --- the planner's inputs and the policy's ProcessTuning condition -----------------------------------


def test_only_nodes_the_agent_runs_on_get_a_node_tuning():
    view = NodeView(nodes=NODES, node_policies=[ntp("general")], performance_policies=[], pods={}, node_tunings={})
    assert sorted(resolve(view, -10, {"kubetune.io/pool": "general"}).specs) == ["n0", "n2"]
    assert sorted(resolve(view, -10, {}).specs) == ["n0", "n1", "n2"]


@pytest.mark.parametrize("raw, parsed", [("", {}), ("kubernetes.io/os=linux", {"kubernetes.io/os": "linux"}),
                                         ("a=1, b=", {"a": "1", "b": ""})])
def test_agent_node_selector_setting(raw, parsed):
    assert OperatorSettings.from_env({"KUBETUNE_AGENT_NODE_SELECTOR": raw}).agent_node_selector == parsed


def test_a_bad_agent_node_selector_names_the_variable():
    with pytest.raises(SettingsError, match="KUBETUNE_AGENT_NODE_SELECTOR: .*key=value pairs.*linux"):
        OperatorSettings.from_env({"KUBETUNE_AGENT_NODE_SELECTOR": "linux"})


def test_process_tuning_condition_is_set_kept_and_removed():
    policies = [pp("checkout", cpuPinning=True)]
    pods = {WorkloadRef("shop", "Deployment", "checkout"): [pod("a", "n1")]}
    view = NodeView(nodes=NODES, node_policies=[ntp("general")], performance_policies=policies, pods=pods, node_tunings={})
    desired, observed = process_tuning_update(policies[0], resolve(view, -10), NOW)
    assert observed is None
    assert {k: desired[k] for k in ("type", "status", "reason")} == {"type": "ProcessTuning", "status": "False",
                                                                       "reason": "NoNodePolicy"}
    # written: the next resolution asks for the same, lastTransitionTime kept
    carrying = PolicyRecord("shop", "checkout", "uid-checkout", 1, policies[0].created, policies[0].spec, None,
                            {"conditions": [desired]})
    again, observed = process_tuning_update(carrying, resolve(view, -10), NOW.replace(hour=13))
    assert again == observed
    # the policy stops asking (Recommend): the condition goes
    recommend = PolicyRecord("shop", "checkout", "uid-checkout", 2, policies[0].created,
                             pp("checkout", mode="Recommend", cpuPinning=True).spec, None, {"conditions": [desired]})
    view.performance_policies = [recommend]
    gone, observed = process_tuning_update(recommend, resolve(view, -10), NOW)
    assert gone is None and observed == desired


def test_the_process_tuning_condition_is_applied_again_after_an_evaluation_write_dropped_it():
    """The evaluation loop writes the whole status by merge patch, from the status it read: a write made
    from a read older than the planner's drops the condition. The exact interleaving cannot be caused
    on demand against the real API server (the cluster test shows the settled behaviour), so the seam
    is faked here: the planner waits while the index lags, re-applies when a different status lacks
    the condition, and posts its Event once."""
    import asyncio

    from kubetune.metrics import OperatorMetrics
    from kubetune.nodeplanner import NodePlanner
    from prometheus_client import CollectorRegistry

    kube = PlannerKube()
    planner = NodePlanner(OperatorSettings(), kube, OperatorMetrics(CollectorRegistry()), clock=lambda: NOW)
    spec = pp("checkout", cpuPinning=True).spec

    def cycle(status):
        policy = PolicyRecord("shop", "checkout", "uid-checkout", 1, "2026-01-01T00:00:00Z", spec, None, status)
        view = NodeView(nodes={"n1": NODES["n1"]}, node_policies=[], performance_policies=[policy],
                        pods={WorkloadRef("shop", "Deployment", "checkout"): [pod("a", "n1")]}, node_tunings={})
        kube.calls.clear()
        asyncio.run(planner.cycle(view))
        return [c for c in kube.calls if c[0] in ("condition", "event")]

    first = cycle({})
    assert [c[0] for c in first] == ["condition", "event"]
    written = first[0][3]
    assert (written["type"], written["reason"]) == ("ProcessTuning", "NoNodePolicy")
    assert first[1][4:6] == ("Warning", "NoNodePolicy")
    assert cycle({}) == []  # the index has not caught up: not written twice
    evaluated = {"conditions": [{"type": "Ready", "status": "False", "reason": "NoData", "message": "no samples",
                                 "lastTransitionTime": "2026-11-27T12:00:00Z", "observedGeneration": 1}]}
    again = cycle(evaluated)  # an evaluation write from an older read replaced the conditions
    assert [c[0] for c in again] == ["condition"] and again[0][3] == written  # applied again, no second Event
    assert cycle({"conditions": [*evaluated["conditions"], written]}) == []  # both kept from then on
