"""The CRDs in a real API server: the examples apply, the server fills in the models' defaults,
`kubectl explain` shows the descriptions, invalid objects are refused at apply time with a message
naming the field, and the models read back exactly what the server returns."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from kubetune.api import (
    IO_SCHEDULER_ALIASES,
    NodeTuning,
    NodeTuningPolicy,
    NodeTuningPolicySpec,
    NodeTuningSpec,
    PerformancePolicy,
    PerformancePolicySpec,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
MODELS = {"PerformancePolicy": PerformancePolicy, "NodeTuningPolicy": NodeTuningPolicy, "NodeTuning": NodeTuning}


def _apply(cluster, obj: dict, check: bool = True):
    return cluster.kubectl("apply", "--server-side", "-o", "json", "-f", "-", input=json.dumps(obj), check=check)


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def cluster_scoped(cluster):
    """Names of cluster-scoped objects a test creates, deleted afterwards (namespaces clean up the rest)."""
    created: list[tuple[str, str]] = []
    yield created
    for kind, name in created:
        cluster.kubectl("delete", kind, name, "--wait=false", check=False)


def _place(obj: dict, namespace: str, cluster_scoped: list) -> dict:
    """Put a namespaced object in the test's namespace; give a cluster-scoped one a unique name."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "PerformancePolicy":
        obj["metadata"]["namespace"] = namespace
    else:
        obj["metadata"]["name"] = _unique(obj["metadata"]["name"])
        cluster_scoped.append((obj["kind"].lower(), obj["metadata"]["name"]))
    return obj


# --- examples, defaults, round trip ----------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_and_round_trips(cluster, crds, namespace, cluster_scoped, path):
    obj = _place(yaml.safe_load(path.read_text()), namespace, cluster_scoped)
    stored = json.loads(_apply(cluster, obj).stdout)
    model = MODELS[obj["kind"]].model_validate(stored)
    # What the server returns (metadata, server-added defaults and all) survives model -> dict,
    # except that classic scheduler names (deadline, cfq, noop) come back as their blk-mq names.
    assert model.to_dict() == _schedulers_normalised(stored)


def _schedulers_normalised(node):
    if isinstance(node, list):
        return [_schedulers_normalised(n) for n in node]
    if isinstance(node, dict):
        return {k: (IO_SCHEDULER_ALIASES.get(v, v).value if k == "scheduler" and v in IO_SCHEDULER_ALIASES
                    else _schedulers_normalised(v)) for k, v in node.items()}
    return node


def test_server_adds_the_models_defaults_to_a_minimal_performance_policy(cluster, crds, namespace):
    obj = {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
           "metadata": {"name": "minimal", "namespace": namespace},
           "spec": {"targetRef": {"kind": "Deployment", "name": "web"}}}
    stored = json.loads(_apply(cluster, obj).stdout)
    expected = PerformancePolicySpec.model_validate(obj["spec"]).to_dict()
    assert stored["spec"] == expected
    # The user-visible promise, spelled out: mode, interval and the four default rules are stored.
    assert stored["spec"]["mode"] == "Recommend" and stored["spec"]["interval"] == "30s"
    assert [r["name"] for r in stored["spec"]["rules"]] == ["high-load", "low-load", "slow", "errors"]


def test_server_adds_the_models_defaults_to_node_objects(cluster, crds, cluster_scoped):
    policy = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuningPolicy",
              "metadata": {"name": _unique("minimal")},
              "spec": {"nodeSelector": {}, "memory": {"swappiness": {}},
                       "io": {"devices": [{"deviceClass": "HDD", "scheduler": "cfq"}]}}}
    cluster_scoped.append(("nodetuningpolicy", policy["metadata"]["name"]))
    stored = json.loads(_apply(cluster, policy).stdout)["spec"]
    assert stored["memory"]["swappiness"] == {"min": 10, "max": 60}
    assert stored["thresholds"]["cpu"] == {"warningPercent": 70, "criticalPercent": 85, "sustainedFor": "5m"}
    # The server keeps the classic name as written; the model normalises it when it reads the object.
    assert stored["io"]["devices"][0]["scheduler"] == "cfq"
    assert NodeTuningPolicySpec.model_validate(stored).io.devices[0].scheduler.value == "bfq"
    assert NodeTuningPolicySpec.model_validate(stored).to_dict() == _schedulers_normalised(stored)

    tuning = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": _unique("node")},
              "spec": {}}
    cluster_scoped.append(("nodetuning", tuning["metadata"]["name"]))
    assert json.loads(_apply(cluster, tuning).stdout)["spec"] == NodeTuningSpec().to_dict()


def test_node_tuning_status_round_trips(cluster, crds, cluster_scoped):
    name = _unique("node")
    cluster_scoped.append(("nodetuning", name))
    spec = {"mode": "Auto", "knobs": [{"key": "vm.swappiness", "value": "30", "policy": "NodeTuningPolicy/a"}]}
    _apply(cluster, {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": name},
                     "spec": spec})
    status = {"observedGeneration": 1, "heartbeatTime": "2026-01-02T03:04:05Z",
              "conditions": [{"type": "Applied", "status": "True", "reason": "AllApplied", "message": "1 knob",
                              "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1}],
              "knobs": [{"key": "vm.swappiness", "original": "60", "desired": "30", "current": "30",
                         "state": "Applied", "message": ""}],
              "blockDevices": [{"name": "nvme0n1", "deviceClass": "NVMe", "scheduler": "none",
                                "availableSchedulers": ["none", "mq-deadline"], "readAheadKb": 128}],
              "metrics": {"cpuPercent": 12.5, "load1": 0.4, "memoryPercent": 40, "swapPercent": 0,
                          "diskLatencyMsMax": 1.5, "networkDropsPerSecond": 0}}
    patched = cluster.kubectl("patch", "nodetuning", name, "--subresource=status", "--type=merge", "-o", "json",
                              "-p", json.dumps({"status": status}))
    stored = json.loads(patched.stdout)
    assert stored["status"] == status
    assert NodeTuning.model_validate(stored).to_dict() == stored
    columns = cluster.kubectl("get", "nodetuning", name).stdout.split("\n")[0].split()
    assert columns[:5] == ["NAME", "READY", "APPLIED", "DEGRADED", "HEARTBEAT"]


def test_performance_policy_status_round_trips_and_fills_the_columns(cluster, crds, namespace):
    _apply(cluster, {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
                     "metadata": {"name": "web", "namespace": namespace},
                     "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "mode": "Auto"}})
    now = "2026-01-02T03:04:05Z"
    action = {"time": now, "action": "IncreaseResources", "rule": "high-load", "applied": True,
              "changes": [{"container": "app", "resource": "cpu", "value": "requests", "from": "500m", "to": "625m"}],
              "evidence": ["cpuUtilization 91 > 80 for 5m"],
              "verification": {"state": "Pending", "message": "", "deadline": "2026-01-02T03:14:05Z"}}
    status = {"observedGeneration": 1,
              "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated", "message": "",
                              "lastTransitionTime": now, "observedGeneration": 1}],
              "containers": [{"name": "app", "current": {"requests": {"cpu": "625m"}, "limits": {}},
                              "recommendation": {"target": {"cpu": "600m", "memory": "256Mi"}},
                              "utilization": {"cpu": 91.5}}],
              "signals": {"cpuUtilization": 91.5, "trend": "Rising", "anomaly": False, "sampledAt": now},
              "lastAction": action, "history": [action]}
    stored = json.loads(cluster.kubectl("patch", "pp", "web", "-n", namespace, "--subresource=status",
                                        "--type=merge", "-o", "json", "-p", json.dumps({"status": status})).stdout)
    assert stored["status"] == status
    assert PerformancePolicy.model_validate(stored).to_dict() == stored
    row = cluster.kubectl("get", "pp", "web", "-n", namespace, "--no-headers").stdout.split()
    assert row[:7] == ["web", "web", "Auto", "600m", "256Mi", "IncreaseResources", "True"]


def test_quantities_are_int_or_string_like_a_resource_list(cluster, crds, namespace):
    # VPA users write `maxAllowed: {cpu: 2}`; the server keeps the integer, the model reads "2".
    stored = json.loads(_apply(cluster, {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
        "metadata": {"name": "ints", "namespace": namespace},
        "spec": {"targetRef": {"kind": "Deployment", "name": "web"},
                 "containers": [{"name": "*", "minAllowed": {"cpu": "500m", "memory": 67108864},
                                 "maxAllowed": {"cpu": 2, "memory": "8Gi"}}]}}).stdout)
    assert stored["spec"]["containers"][0]["maxAllowed"]["cpu"] == 2
    container = PerformancePolicy.model_validate(stored).spec.containers[0]
    assert (container.max_allowed.cpu, container.min_allowed.memory) == ("2", "67108864")


# --- kubectl experience -----------------------------------------------------------------------------


def test_kubectl_explain_shows_descriptions(cluster, crds):
    # The OpenAPI document is republished a moment after a CRD is Established.
    deadline = time.monotonic() + 60
    while (out := cluster.kubectl("explain", "performancepolicy.spec.rules", check=False)).returncode:
        assert time.monotonic() < deadline, out.stderr
        time.sleep(1)
    assert "When to act" in out.stdout
    assert "Fire when the metric is above this value" in out.stdout  # a child field's description
    nested = cluster.kubectl("explain", "nodetuningpolicy.spec.memory.swappiness.max").stdout
    assert "The highest vm.swappiness the agent sets" in nested


def test_short_names_category_and_columns(cluster, crds, namespace):
    _apply(cluster, {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
                     "metadata": {"name": "web", "namespace": namespace},
                     "spec": {"targetRef": {"kind": "Deployment", "name": "web"}}})
    header, row = cluster.kubectl("get", "pp", "-n", namespace).stdout.strip().split("\n")
    assert header.split() == ["NAME", "TARGET", "MODE", "CPU", "MEMORY", "LAST", "ACTION", "READY", "AGE"]
    assert row.split()[:3] == ["web", "web", "Recommend"]
    assert "performancepolicy.kubetune.io/web" in cluster.kubectl("get", "kubetune", "-n", namespace, "-o",
                                                                  "name").stdout
    for short in ("ntp", "nt"):
        cluster.kubectl("get", short)


# --- invalid objects -----------------------------------------------------------------------------------

PP = {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": {"kind": "Deployment", "name": "web"}}}
NTP = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuningPolicy", "metadata": {"name": "bad"},
       "spec": {"nodeSelector": {}}}
NT = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": "bad"}, "spec": {}}
RULE = {"name": "r", "metric": "cpuUtilization", "action": "IncreaseResources"}
REMOVE = object()


def _with(base: dict, **paths) -> dict:
    """A copy of `base` with dotted paths (`spec__rules` -> spec.rules) set, or removed with REMOVE."""
    obj = copy.deepcopy(base)
    for dotted, value in paths.items():
        *parents, leaf = dotted.split("__")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        if value is REMOVE:
            del node[leaf]
        else:
            node[leaf] = value
    return obj


# (id, object, the field the message must name, words the message must contain)
INVALID = [
    ("pp-mode-wrong-enum", _with(PP, spec__mode="Sometimes"), "spec.mode", 'Unsupported value: "Sometimes"'),
    ("pp-interval-negative", _with(PP, spec__interval="-30s"), "spec.interval", "should match"),
    ("pp-interval-unparsable", _with(PP, spec__interval="soon"), "spec.interval", "should match"),
    ("pp-interval-too-short", _with(PP, spec__interval="1s"), "spec.interval", "must be at least 10s"),
    ("pp-rule-for-negative", _with(PP, spec__rules=[{**RULE, "above": 1, "for": "-5m"}]), "spec.rules[0].for",
     "should match"),
    ("pp-rule-above-and-below", _with(PP, spec__rules=[{**RULE, "above": 80, "below": 20}]), "spec.rules[0]",
     "exactly one of above or below must be set"),
    ("pp-rule-neither-above-nor-below", _with(PP, spec__rules=[RULE]), "spec.rules[0]",
     "exactly one of above or below must be set"),
    ("pp-rule-metric-wrong-enum", _with(PP, spec__rules=[{**RULE, "metric": "cpu", "above": 1}]),
     "spec.rules[0].metric", "Unsupported value"),
    ("pp-rule-negative-threshold", _with(PP, spec__rules=[{**RULE, "above": -1}]), "spec.rules[0].above",
     "greater than or equal to 0"),
    ("pp-rule-duplicate-name", _with(PP, spec__rules=[{**RULE, "above": 1}, {**RULE, "below": 1}]),
     "spec.rules", 'duplicate entries for key [name="r"]'),
    ("pp-target-kind-pod", _with(PP, spec__targetRef={"kind": "Pod", "name": "web"}), "spec.targetRef.kind",
     'Unsupported value: "Pod"'),
    ("pp-target-missing", _with(PP, spec__targetRef=REMOVE), "spec.targetRef", "Required value"),
    ("pp-target-api-version", _with(PP, spec__targetRef={"apiVersion": "extensions/v1beta1", "kind": "Deployment",
                                                          "name": "web"}),
     "spec.targetRef.apiVersion", "Unsupported value"),
    ("pp-bad-quantity", _with(PP, spec__containers=[{"name": "*", "maxAllowed": {"memory": "8 GB"}}]),
     "spec.containers[0].maxAllowed.memory", "should match"),
    ("pp-negative-quantity", _with(PP, spec__containers=[{"name": "*", "minAllowed": {"cpu": "-1"}}]),
     "spec.containers[0].minAllowed.cpu", "should match"),
    ("pp-cpu-min-above-max", _with(PP, spec__containers=[{"name": "*", "minAllowed": {"cpu": "2"},
                                                          "maxAllowed": {"cpu": "1500m"}}]),
     "spec.containers[0].minAllowed.cpu", "minAllowed.cpu must not be greater than maxAllowed.cpu"),
    ("pp-integer-min-above-max", _with(PP, spec__containers=[{"name": "*", "minAllowed": {"cpu": 4},
                                                              "maxAllowed": {"cpu": 2}}]),
     "spec.containers[0].minAllowed.cpu", "minAllowed.cpu must not be greater than maxAllowed.cpu"),
    ("pp-negative-integer-quantity", _with(PP, spec__containers=[{"name": "*", "maxAllowed": {"cpu": -2}}]),
     "spec.containers[0].maxAllowed.cpu", "greater than or equal to 0"),
    ("pp-fraction-quantity", _with(PP, spec__containers=[{"name": "*", "maxAllowed": {"cpu": 0.5}}]),
     "spec.containers[0].maxAllowed.cpu", "must be of type integer"),
    ("pp-memory-min-above-max", _with(PP, spec__containers=[{"name": "*", "minAllowed": {"memory": "8Gi"},
                                                             "maxAllowed": {"memory": "4096Mi"}}]),
     "spec.containers[0].minAllowed.memory", "minAllowed.memory must not be greater than maxAllowed.memory"),
    ("pp-container-name-uppercase", _with(PP, spec__containers=[{"name": "Web"}]), "spec.containers[0].name",
     "should match"),
    ("pp-step-zero", _with(PP, spec__scaling={"stepPercent": 0}), "spec.scaling.stepPercent",
     "greater than or equal to 1"),
    ("pp-scaling-method-wrong-enum", _with(PP, spec__scaling={"method": "Recreate"}), "spec.scaling.method",
     "Unsupported value"),
    ("pp-nice-too-low", _with(PP, spec__processTuning={"nice": -21}), "spec.processTuning.nice",
     "greater than or equal to -20"),
    ("pp-io-priority-with-idle", _with(PP, spec__processTuning={"ioClass": "Idle", "ioPriority": 3}),
     "spec.processTuning", "ioPriority applies only to the BestEffort ioClass"),
    ("pp-latency-two-sources", _with(PP, spec__metrics={"latency": {"histogram": "h", "query": "q"}}),
     "spec.metrics.latency", "exactly one of histogram or query must be set"),
    ("pp-errors-failed-names-namespace", _with(PP, spec__metrics={"errorRate": {"counter": "c", "failed": 'code="500",namespace="x"'}}),
     "spec.metrics.errorRate", "must not name the namespace or pod labels"),
    ("pp-errors-counter-without-failed", _with(PP, spec__metrics={"errorRate": {"counter": "c"}}),
     "spec.metrics.errorRate", "failed is set together with counter"),
    ("pp-percentile-100", _with(PP, spec__metrics={"latency": {"histogram": "h", "percentiles": [100]}}),
     "spec.metrics.latency.percentiles[0]", "less than or equal to 99"),
    ("pp-unknown-field", _with(PP, spec__intervall="30s"), "spec.intervall", "field not declared in schema"),
    ("ntp-unknown-sysctl", _with(NTP, spec__sysctls=[{"name": "kernel.core_pattern", "value": "1"}]),
     "spec.sysctls[0].name", 'Unsupported value: "kernel.core_pattern"'),
    ("ntp-sysctl-value-text", _with(NTP, spec__sysctls=[{"name": "net.core.somaxconn", "value": "lots"}]),
     "spec.sysctls[0].value", "should match"),
    ("ntp-swappiness-300", _with(NTP, spec__memory={"swappiness": {"min": 10, "max": 300}}),
     "spec.memory.swappiness.max", "less than or equal to 200"),
    ("ntp-swappiness-min-above-max", _with(NTP, spec__memory={"swappiness": {"min": 50, "max": 20}}),
     "spec.memory.swappiness", "min must not be greater than max"),
    ("ntp-dirty-background-above-dirty", _with(NTP, spec__memory={"dirtyRatio": {"min": 10, "max": 20},
                                                                  "dirtyBackgroundRatio": {"min": 5, "max": 15}}),
     "spec.memory", "dirtyBackgroundRatio.max must be less than dirtyRatio.min"),
    ("ntp-device-pattern-escapes", _with(NTP, spec__io={"devices": [{"devicePattern": "../sda",
                                                                     "scheduler": "none"}]}),
     "spec.io.devices[0].devicePattern", "should match"),
    ("ntp-scheduler-wrong-enum", _with(NTP, spec__io={"devices": [{"deviceClass": "SSD",
                                                                   "scheduler": "anticipatory"}]}),
     "spec.io.devices[0].scheduler", "Unsupported value"),
    ("ntp-device-class-and-pattern", _with(NTP, spec__io={"devices": [{"deviceClass": "SSD", "devicePattern": "sd*",
                                                                       "scheduler": "none"}]}),
     "spec.io.devices[0]", "exactly one of deviceClass or devicePattern must be set"),
    ("ntp-device-rule-sets-nothing", _with(NTP, spec__io={"devices": [{"deviceClass": "SSD"}]}),
     "spec.io.devices[0]", "at least one of scheduler or readAheadKb must be set"),
    ("ntp-governor-wrong-enum", _with(NTP, spec__cpu={"governor": {"highLoad": "turbo"}}),
     "spec.cpu.governor.highLoad", "Unsupported value"),
    ("ntp-hysteresis-inverted", _with(NTP, spec__cpu={"governor": {"highLoadAbovePercent": 30,
                                                                   "lowLoadBelowPercent": 60}}),
     "spec.cpu.governor", "lowLoadBelowPercent must be less than highLoadAbovePercent"),
    ("ntp-cpu-warning-above-critical", _with(NTP, spec__thresholds={"cpu": {"warningPercent": 90,
                                                                            "criticalPercent": 80}}),
     "spec.thresholds.cpu", "warningPercent must be less than criticalPercent"),
    ("ntp-selector-in-without-values", _with(NTP, spec__nodeSelector={"matchExpressions": [
        {"key": "pool", "operator": "In"}]}), "spec.nodeSelector.matchExpressions[0]", "values must be non-empty"),
    ("ntp-selector-missing", _with(NTP, spec__nodeSelector=REMOVE), "spec.nodeSelector", "Required value"),
    ("ntp-priority-negative", _with(NTP, spec__priority=-1), "spec.priority", "greater than or equal to 0"),
    ("nt-mode-off", _with(NT, spec__mode="Off"), "spec.mode", 'Unsupported value: "Off"'),
    ("nt-knob-outside-registry", _with(NT, spec__knobs=[{"key": "sysctl.kernel.core_pattern", "value": "1",
                                                         "policy": "p"}]),
     "spec.knobs[0].key", "should match"),
    ("nt-knob-device-escapes", _with(NT, spec__knobs=[{"key": "block.../../etc.scheduler", "value": "none",
                                                       "policy": "p"}]),
     "spec.knobs[0].key", "should match"),
    ("nt-knob-value-newline", _with(NT, spec__knobs=[{"key": "vm.swappiness", "value": "10\n20", "policy": "p"}]),
     "spec.knobs[0].value", "should match"),
    ("nt-cpu-negative", _with(NT, spec__processes=[{"podUID": "u1", "namespace": "a", "podName": "p",
                                                    "containerName": "c", "cpus": [-1]}]),
     "spec.processes[0].cpus[0]", "greater than or equal to 0"),
]


@pytest.mark.parametrize("obj, field, message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_api_server_refuses_invalid_object(cluster, crds, namespace, cluster_scoped, obj, field, message):
    obj = _place(obj, namespace, cluster_scoped)
    result = _apply(cluster, obj, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert field in result.stderr and message in result.stderr, result.stderr
