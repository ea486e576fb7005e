"""Properties of node-tuning resolution over nodes, NodeTuningPolicies, block devices and process tuning
drawn by hypothesis: the result is deterministic, does not depend on the order the policies (or the
process requests) arrive in, and every value in a node's plan is one a matching policy set at the top
priority for it; process tuning stays within every matching policy's limits."""

from __future__ import annotations

import pytest
from hypothesis import example, given, strategies as st

from kubetune.api.nodetuning import BlockDevice
from kubetune.api.nodetuningpolicy import NodeTuningPolicySpec
from kubetune.api.performancepolicy import ProcessTuning
from kubetune.nodetuning import (
    NodeFacts,
    NodeTuningPolicyRecord,
    ProcessRequest,
    policy_fields,
    resolve_node_tunings,
    selector_matches,
)
from kubetune.workloads import ContainerResources, PodRecord

pytestmark = pytest.mark.unit

FLOOR = -10  # the operator's minNice floor
LABELS = {"pool": ["general", "batch"], "zone": ["a", "b"]}
SYSCTLS = {"net.core.somaxconn": ["1024", "4096"], "vm.max_map_count": ["262144", "524288"]}

labels = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in LABELS.items()})
nodes = st.dictionaries(st.sampled_from(["n0", "n1", "n2"]), st.builds(NodeFacts, labels, st.sampled_from([0, 2, 4, 8])),
                        min_size=1)
selectors = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"matchLabels": labels}),
    st.fixed_dictionaries({"matchExpressions": st.lists(st.fixed_dictionaries({
        "key": st.sampled_from(list(LABELS)), "operator": st.sampled_from(["In", "NotIn"]),
        "values": st.lists(st.sampled_from(["general", "batch", "a", "b"]), min_size=1, max_size=2, unique=True)}),
        max_size=1)}))
ranges = st.tuples(st.integers(0, 100), st.integers(0, 100)).map(lambda t: {"min": min(t), "max": max(t)})
policy_specs = st.fixed_dictionaries(
    {"nodeSelector": selectors, "priority": st.sampled_from([0, 0, 1, 5]), "mode": st.sampled_from(["Auto", "Recommend", "Off"])},
    optional={
        "sysctls": st.lists(st.sampled_from(list(SYSCTLS)), unique=True, max_size=2).flatmap(
            lambda names: st.tuples(*[st.sampled_from(SYSCTLS[n]) for n in names]).map(
                lambda values, names=names: [{"name": n, "value": v} for n, v in zip(names, values)])),
        "memory": st.fixed_dictionaries({}, optional={"swappiness": ranges, "vfsCachePressure": ranges.map(
            lambda r: {"min": r["min"] + 1, "max": r["max"] + 1})}),
        "cpu": st.fixed_dictionaries({"governor": st.sampled_from([{}, {"highLoad": "performance"},
                                                                   {"default": "powersave"}])}),
        "io": st.fixed_dictionaries({"devices": st.lists(st.one_of(
            st.fixed_dictionaries({"deviceClass": st.sampled_from(["SSD", "HDD"]),
                                   "scheduler": st.sampled_from(["none", "mq-deadline", "bfq"])}),
            st.fixed_dictionaries({"devicePattern": st.sampled_from(["sd*", "vd?"]),
                                   "readAheadKb": st.sampled_from([128, 256, 4096])})), max_size=2)}),
        "processTuning": st.fixed_dictionaries({"minNice": st.integers(-20, 5), "allowCpuPinning": st.booleans()}),
    })
policies = st.lists(policy_specs, max_size=5).map(lambda specs: [
    NodeTuningPolicyRecord(f"p{i}", f"uid-p{i}", 1, NodeTuningPolicySpec.model_validate(s), None)
    for i, s in enumerate(specs)])
devices = st.dictionaries(st.sampled_from(["n0", "n1", "n2"]), st.lists(st.builds(
    BlockDevice, name=st.sampled_from(["sda", "sdb", "vda", "nvme0n1"]), device_class=st.sampled_from(["SSD", "HDD", "NVMe"])),
    max_size=3, unique_by=lambda d: d.name))
pods = st.lists(st.builds(
    lambda name, node, cpu: PodRecord("shop", name, f"uid-{name}", node, "Running",
                                      (ContainerResources("app", {"cpu": cpu}, {}),)),
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["n0", "n1", "n2"]), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
    max_size=3, unique_by=lambda p: p.name)
requests = st.lists(st.builds(
    lambda i, tuning, pods: ProcessRequest(f"PerformancePolicy/shop/w{i}", ProcessTuning.model_validate(tuning), tuple(pods)),
    st.integers(0, 3), st.fixed_dictionaries({"nice": st.integers(-20, 19), "cpuPinning": st.booleans()}), pods),
    max_size=2, unique_by=lambda r: r.policy)
worlds = st.tuples(nodes, policies, requests, devices)


def _resolve(nodes, policies, requests, devices):
    return resolve_node_tunings(nodes, policies, requests, devices, min_nice=FLOOR)


def _everything(result) -> tuple:
    outcomes = {name: (o.matched_nodes, sorted(c.describe() for c in o.conflicts)) for name, o in result.policies.items()}
    conflicts = {node: [c.describe() for c in cs] for node, cs in result.conflicts.items()}
    return result.specs, outcomes, conflicts, result.why, sorted(result.notes)


@given(worlds)
def test_resolution_is_deterministic(world):
    assert _everything(_resolve(*world)) == _everything(_resolve(*world))


@given(worlds, st.randoms(use_true_random=False))
def test_resolution_does_not_depend_on_the_order_of_policies_or_requests(world, rnd):
    nodes, policies, requests, devices = world
    shuffled_policies, shuffled_requests = list(policies), list(requests)
    rnd.shuffle(shuffled_policies)
    rnd.shuffle(shuffled_requests)
    assert _everything(_resolve(nodes, shuffled_policies, shuffled_requests, devices)) == \
        _everything(_resolve(*world))


def _active_on(node, nodes, policies):
    """The policies that are not Off and whose node selector matches `node`."""
    return [p for p in policies if p.spec.mode.value != "Off" and selector_matches(p.spec.node_selector, nodes[node].labels)]


@given(worlds)
def test_every_value_in_a_plan_comes_from_a_matching_policy_at_the_top_priority(world):
    nodes, policies, requests, devices = world
    result = _resolve(*world)
    for node, spec in result.specs.items():
        active = _active_on(node, nodes, policies)
        offers: dict[str, list[tuple[int, str]]] = {}  # field -> (priority, value) of every active policy
        for p in active:
            for name, (value, _) in policy_fields(p.spec, devices.get(node, ())).items():
                offers.setdefault(name, []).append((p.spec.priority, value if isinstance(value, str) else None))
        for knob in spec.get("knobs", []):
            top = max(priority for priority, _ in offers[knob["key"]])
            assert {v for p, v in offers[knob["key"]] if p == top} == {knob["value"]}, (node, knob)
        swappiness = spec.get("adaptive", {}).get("memory", {}).get("swappiness")
        if swappiness:
            ranges = [p.spec.memory.swappiness for p in active if p.spec.memory and p.spec.memory.swappiness]
            assert any(swappiness == r.to_dict() for r in ranges), (node, swappiness)
        if any(p.spec.mode.value == "Recommend" for p in active):
            assert spec["mode"] == "Recommend", node


def _two_policies_on_one_pod():
    """Two PerformancePolicies whose targets share a pod (two policies on one Deployment), one pinning."""
    pod = PodRecord("shop", "b", "uid-b", "n1", "Running", (ContainerResources("app", {"cpu": 0.5}, {}),))
    requests = [ProcessRequest(f"PerformancePolicy/shop/w{i}", ProcessTuning(nice=0, cpu_pinning=i == 0), (pod,))
                for i in range(2)]
    policy = NodeTuningPolicyRecord("p0", "uid-p0", 1, NodeTuningPolicySpec.model_validate(
        {"nodeSelector": {}, "mode": "Auto"}), None)
    return {"n1": NodeFacts({}, 2)}, [policy], requests, {}


# Found by the bench profile: two requests reaching one container gave it two entries (the API server
# refuses such a NodeTuning) and pinned CPU 1 twice; the first policy by name now keeps the container.
@example(_two_policies_on_one_pod())
@given(worlds)
def test_process_tuning_stays_within_every_matching_policys_limits(world):
    nodes, policies, requests, devices = world
    result = _resolve(*world)
    for node, spec in result.specs.items():
        matching = _active_on(node, nodes, policies)
        floor = max([FLOOR] + [p.spec.process_tuning.min_nice for p in matching])
        pinned: list[int] = []
        containers = [(e["podUID"], e["containerName"]) for e in spec.get("processes", [])]
        assert len(containers) == len(set(containers)), f"{node}: a container listed twice {containers}"
        for entry in spec.get("processes", []):
            if "nice" in entry:
                assert entry["nice"] >= floor, (node, entry)
            pinned += entry.get("cpus", [])
        if pinned:
            assert matching and all(p.spec.process_tuning.allow_cpu_pinning for p in matching), node
            assert len(pinned) == len(set(pinned)), f"{node}: a CPU pinned twice {pinned}"
            assert 0 not in pinned and max(pinned) < nodes[node].cpus, (node, pinned)
