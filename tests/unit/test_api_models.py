"""The API models as users and the other components meet them: defaults, aliases, validation errors
that name the field, the wire form, and the pure helpers."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kubetune.api import (
    Action,
    IOScheduler,
    KnobState,
    Metric,
    Mode,
    NodeTuning,
    NodeTuningPolicy,
    NodeTuningPolicySpec,
    PerformancePolicy,
    PerformancePolicySpec,
    ScalingMethod,
    block_knob,
    default_rules,
    parse_duration,
    parse_quantity,
    sysctl_knob,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
KINDS = {"PerformancePolicy": PerformancePolicy, "NodeTuningPolicy": NodeTuningPolicy, "NodeTuning": NodeTuning}
TARGET = {"kind": "Deployment", "name": "web"}


# --- defaults ----------------------------------------------------------------------------------------


def test_performance_policy_defaults():
    spec = PerformancePolicySpec.model_validate({"targetRef": TARGET})
    assert spec.target_ref.api_version == "apps/v1"
    assert spec.mode is Mode.RECOMMEND
    assert parse_duration(spec.interval) == timedelta(seconds=30)
    assert spec.scaling.method is ScalingMethod.IN_PLACE_OR_ROLLOUT
    assert (spec.scaling.step_percent, spec.scaling.cooldown, spec.scaling.max_changes_per_hour) == (25, "5m", 4)
    assert [c.name for c in spec.containers] == ["*"]
    assert spec.prediction.enabled and spec.prediction.horizon == "15m"
    assert spec.anomaly_detection.threshold == 3.0
    assert spec.verification.window == "10m" and spec.verification.rollback_on_regression
    assert spec.metrics is None and spec.process_tuning is None


def test_default_rules_are_the_four_documented_rules():
    rules = {r.name: (r.metric, r.above, r.below, r.sustained_for, r.action) for r in default_rules()}
    assert rules == {
        "high-load": (Metric.CPU_UTILIZATION, 80, None, "5m", Action.INCREASE_RESOURCES),
        "low-load": (Metric.CPU_UTILIZATION, None, 20, "15m", Action.DECREASE_RESOURCES),
        "slow": (Metric.LATENCY_P95_MS, 200, None, None, Action.OPTIMIZE_RESOURCES),
        "errors": (Metric.ERROR_RATE_PERCENT, 1, None, None, Action.INVESTIGATE),
    }
    assert PerformancePolicySpec.model_validate({"targetRef": TARGET}).rules == default_rules()


def test_an_empty_rule_list_stays_empty():
    # [] means "no rules", not "give me the defaults".
    assert PerformancePolicySpec.model_validate({"targetRef": TARGET, "rules": []}).rules == ()


def test_node_tuning_policy_defaults():
    spec = NodeTuningPolicySpec.model_validate({"nodeSelector": {}, "memory": {"swappiness": {}}})
    assert spec.mode is Mode.RECOMMEND and spec.priority == 0
    assert (spec.memory.swappiness.min, spec.memory.swappiness.max) == (10, 60)
    assert spec.cpu is None and spec.io is None and spec.sysctls == ()
    t = spec.thresholds
    assert (t.cpu.warning_percent, t.cpu.critical_percent, t.cpu.sustained_for) == (70, 85, "5m")
    assert (t.memory.warning_percent, t.memory.critical_percent, t.memory.swap_warning_percent) == (75, 90, 20)
    assert (t.disk.latency_warning_ms, t.disk.latency_critical_ms, t.disk.queue_depth_warning) == (50, 100, 8)
    assert (t.network.bandwidth_warning_percent, t.network.latency_warning_ms,
            t.network.packet_loss_warning_percent) == (80, 50, 0.1)


# --- aliases and the wire form -----------------------------------------------------------------------


@pytest.mark.parametrize("written, stored", [
    ("deadline", IOScheduler.MQ_DEADLINE), ("cfq", IOScheduler.BFQ), ("noop", IOScheduler.NONE),
    ("mq-deadline", IOScheduler.MQ_DEADLINE), ("kyber", IOScheduler.KYBER),
])
def test_classic_scheduler_names_are_normalised(written, stored):
    spec = NodeTuningPolicySpec.model_validate(
        {"nodeSelector": {}, "io": {"devices": [{"deviceClass": "SSD", "scheduler": written}]}})
    assert spec.io.devices[0].scheduler is stored
    assert spec.to_dict()["io"]["devices"][0]["scheduler"] == stored.value


def test_integer_quantities_are_read_as_their_string():
    spec = PerformancePolicySpec.model_validate({"targetRef": TARGET, "containers": [
        {"name": "*", "minAllowed": {"memory": 67108864}, "maxAllowed": {"cpu": 2, "memory": "8Gi"}}]})
    assert (spec.containers[0].max_allowed.cpu, spec.containers[0].min_allowed.memory) == ("2", "67108864")


def test_wire_form_is_camel_case_and_python_names_work_too():
    by_alias = PerformancePolicySpec.model_validate(
        {"targetRef": TARGET, "rules": [{"name": "r", "metric": "cpuUtilization", "above": 50, "for": "1m",
                                         "action": "IncreaseResources"}]})
    by_name = PerformancePolicySpec(target_ref={"kind": "Deployment", "name": "web"}, rules=[
        {"name": "r", "metric": "cpuUtilization", "above": 50, "sustained_for": "1m", "action": "IncreaseResources"}])
    assert by_alias == by_name
    wire = by_alias.to_dict()
    assert wire["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert wire["rules"][0]["for"] == "1m" and "below" not in wire["rules"][0]
    assert wire["scaling"]["maxChangesPerHour"] == 4


def test_models_are_frozen():
    spec = PerformancePolicySpec.model_validate({"targetRef": TARGET})
    with pytest.raises(ValidationError):
        spec.mode = Mode.AUTO


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path):
    obj = yaml.safe_load(path.read_text())
    model = KINDS[obj["kind"]].model_validate(obj)
    assert type(model).model_validate(model.to_dict()) == model
    assert model.to_dict()["metadata"] == obj["metadata"]


def test_round_trip_keeps_status():
    obj = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": "n1", "generation": 2},
           "spec": {"mode": "Auto", "knobs": [{"key": "vm.swappiness", "value": "30", "policy": "NodeTuningPolicy/a"}]},
           "status": {"observedGeneration": 2, "heartbeatTime": "2026-01-02T03:04:05Z",
                      "conditions": [{"type": "Applied", "status": "True", "reason": "AllApplied", "message": "",
                                      "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 2}],
                      "knobs": [{"key": "vm.swappiness", "original": "60", "desired": "30", "current": "30",
                                 "state": "Applied", "message": ""}],
                      "metrics": {"cpuPercent": 12.5, "load1": 0.4}}}
    model = NodeTuning.model_validate(obj)
    assert model.status.knobs[0].state is KnobState.APPLIED
    wire = model.to_dict()
    assert wire["status"]["heartbeatTime"] == "2026-01-02T03:04:05Z"
    assert wire["status"] == obj["status"]


# --- validation errors name the field -----------------------------------------------------------------


def _rule(**fields):
    return {"name": "r", "metric": "cpuUtilization", "action": "IncreaseResources", **fields}


PP_INVALID = [
    ("mode-unknown", {"mode": "Sometimes"}, "mode", "Off"),
    ("interval-garbage", {"interval": "soon"}, "interval", "pattern"),
    ("interval-negative", {"interval": "-30s"}, "interval", "pattern"),
    ("interval-too-short", {"interval": "1s"}, "interval", "at least 10s"),
    ("kind-pod", {"targetRef": {"kind": "Pod", "name": "x"}}, "targetRef.kind", "Deployment"),
    ("both-above-below", {"rules": [_rule(above=1, below=2)]}, "rules.0", "exactly one of above or below"),
    ("neither-above-below", {"rules": [_rule()]}, "rules.0", "exactly one of above or below"),
    ("rule-for-garbage", {"rules": [_rule(above=1, **{"for": "5 minutes"})]}, "rules.0.for", "pattern"),
    ("duplicate-rule", {"rules": [_rule(above=1), _rule(below=1)]}, "rules", "duplicate name: r"),
    ("min-above-max", {"containers": [{"name": "*", "minAllowed": {"cpu": "2"}, "maxAllowed": {"cpu": "1500m"}}]},
     "containers.0", "minAllowed.cpu must not be greater than maxAllowed.cpu"),
    ("bad-quantity", {"containers": [{"name": "*", "maxAllowed": {"memory": "8 GB"}}]},
     "containers.0.maxAllowed.memory", "pattern"),
    ("fraction-quantity", {"containers": [{"name": "*", "maxAllowed": {"cpu": 0.5}}]},
     "containers.0.maxAllowed.cpu", 'write it as a string (e.g. "0.5" or "500m")'),
    ("negative-integer-quantity", {"containers": [{"name": "*", "maxAllowed": {"cpu": -1}}]},
     "containers.0.maxAllowed.cpu", "pattern"),
    ("integer-min-above-max", {"containers": [{"name": "*", "minAllowed": {"cpu": 4}, "maxAllowed": {"cpu": 2}}]},
     "containers.0", "minAllowed.cpu must not be greater than maxAllowed.cpu"),
    ("nice-too-low", {"processTuning": {"nice": -21}}, "processTuning.nice", "-20"),
    ("latency-two-sources", {"metrics": {"latency": {"histogram": "h", "query": "q"}}}, "metrics.latency",
     "exactly one of histogram or query"),
    ("errors-counter-and-query", {"metrics": {"errorRate": {"counter": "c", "failed": 'code="500"', "query": "q"}}},
     "metrics.errorRate", "exactly one of query or counter"),
    ("errors-counter-without-failed", {"metrics": {"errorRate": {"counter": "c"}}}, "metrics.errorRate",
     "failed is set together with counter"),
    ("errors-failed-not-matchers", {"metrics": {"errorRate": {"counter": "c", "failed": "code>=500"}}},
     "metrics.errorRate.failed", "pattern"),
    ("errors-failed-names-namespace", {"metrics": {"errorRate": {"counter": "c", "failed": 'namespace="other"'}}},
     "metrics.errorRate.failed", "must not name the namespace or pod labels"),
    ("throughput-no-source", {"metrics": {"throughput": {}}}, "metrics.throughput", "exactly one of query or counter"),
]


@pytest.mark.parametrize("override, field, message", [c[1:] for c in PP_INVALID], ids=[c[0] for c in PP_INVALID])
def test_invalid_performance_policy_names_the_field(override, field, message):
    with pytest.raises(ValidationError) as caught:
        PerformancePolicySpec.model_validate({"targetRef": TARGET, **override})
    errors = [(".".join(str(p) for p in e["loc"]), str(e["msg"]) + str(e.get("ctx", ""))) for e in caught.value.errors()]
    assert any(loc == field and message in msg for loc, msg in errors), errors


def test_missing_target_ref_names_the_field():
    with pytest.raises(ValidationError) as caught:
        PerformancePolicySpec.model_validate({})
    assert [e["loc"] for e in caught.value.errors()] == [("targetRef",)]


NTP_INVALID = [
    ("swappiness-300", {"memory": {"swappiness": {"max": 300}}}, "memory.swappiness.max", "200"),
    ("swappiness-min-above-max", {"memory": {"swappiness": {"min": 50, "max": 20}}}, "memory.swappiness",
     "min must not be greater than max"),
    ("unknown-sysctl", {"sysctls": [{"name": "kernel.core_pattern", "value": "1"}]}, "sysctls.0.name",
     "not on the allow-list"),
    ("sysctl-value-text", {"sysctls": [{"name": "net.core.somaxconn", "value": "lots"}]}, "sysctls.0.value",
     "pattern"),
    ("device-escapes", {"io": {"devices": [{"devicePattern": "../sda", "scheduler": "none"}]}},
     "io.devices.0.devicePattern", "pattern"),
    ("device-slash", {"io": {"devices": [{"devicePattern": "sd*/queue", "scheduler": "none"}]}},
     "io.devices.0.devicePattern", "pattern"),
    ("scheduler-unknown", {"io": {"devices": [{"deviceClass": "SSD", "scheduler": "anticipatory"}]}},
     "io.devices.0.scheduler", "mq-deadline"),
    ("device-class-and-pattern", {"io": {"devices": [{"deviceClass": "SSD", "devicePattern": "sd*",
                                                      "scheduler": "none"}]}},
     "io.devices.0", "exactly one of deviceClass or devicePattern"),
    ("hysteresis-inverted", {"cpu": {"governor": {"highLoadAbovePercent": 30, "lowLoadBelowPercent": 60}}},
     "cpu.governor", "lowLoadBelowPercent must be less than highLoadAbovePercent"),
    ("governor-unknown", {"cpu": {"governor": {"highLoad": "turbo"}}}, "cpu.governor.highLoad", "performance"),
    ("warning-above-critical", {"thresholds": {"cpu": {"warningPercent": 90, "criticalPercent": 80}}},
     "thresholds.cpu", "warningPercent must be less than criticalPercent"),
    ("selector-in-without-values", {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
     "nodeSelector.matchExpressions.0", "values must be non-empty"),
]


@pytest.mark.parametrize("override, field, message", [c[1:] for c in NTP_INVALID], ids=[c[0] for c in NTP_INVALID])
def test_invalid_node_tuning_policy_names_the_field(override, field, message):
    with pytest.raises(ValidationError) as caught:
        NodeTuningPolicySpec.model_validate({"nodeSelector": {}, **override})
    errors = [(".".join(str(p) for p in e["loc"]), str(e["msg"]) + str(e.get("ctx", ""))) for e in caught.value.errors()]
    assert any(loc == field and message in msg for loc, msg in errors), errors


@pytest.mark.parametrize("key", [
    "block.../etc.scheduler", "block.sda/../x.scheduler", "block.sda.rotational", "sysctl.kernel.core_pattern",
    "vm.overcommit_memory", "cpu.governor ",
])
def test_node_tuning_refuses_knobs_outside_the_registry(key):
    with pytest.raises(ValidationError) as caught:
        NodeTuning.model_validate({"metadata": {"name": "n"}, "spec": {"knobs": [{"key": key, "value": "1",
                                                                                     "policy": "p"}]}})
    assert caught.value.errors()[0]["loc"] == ("spec", "knobs", 0, "key")


# --- helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("1h30m", timedelta(minutes=90)),
    ("500ms", timedelta(milliseconds=500)), ("1m30s250ms", timedelta(seconds=90.25)), ("0s", timedelta(0)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "-5m", "5 m", "1d", "1.5h", "m5", "5mm", "5m-", None])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text, expected", [
    ("250m", Decimal("0.25")), ("2", Decimal(2)), ("1.5", Decimal("1.5")), ("512Mi", Decimal(512 * 2**20)),
    ("1G", Decimal(10**9)), ("1e3", Decimal(1000)), ("100n", Decimal("1e-7")),
])
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1 Gi", "1GB", "Mi", "1.2.3"])
def test_parse_quantity_refuses(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_knob_key_helpers():
    assert block_knob("nvme0n1", "readAheadKb") == "block.nvme0n1.readAheadKb"
    assert sysctl_knob("net.core.somaxconn") == "sysctl.net.core.somaxconn"
    with pytest.raises(ValueError):
        block_knob("../sda", "scheduler")
    with pytest.raises(ValueError):
        sysctl_knob("kernel.core_pattern")


def test_api_package_does_not_import_kopf():
    # The node agent imports kubetune.api; kopf (and its asyncio machinery) must not come with it.
    code = "import sys, kubetune.api, kubetune.api.crdgen; print('kopf' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
