"""The adapter between NodeTuning and the agent's plain data (pure, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubetune.api import NodeTuningStatus
from kubetune_agent.adaptive import ThresholdReason, ThresholdStatus
from kubetune_agent.agent import CycleReport
from kubetune_agent.collectors import BlockDeviceInfo, CpuSample, MemorySample, NodeSample, TcpSample
from kubetune_agent.contract import plan_from_node_tuning, status_from_report
from kubetune_agent.executor import KnobResult, TuningState

pytestmark = pytest.mark.unit

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
NODE_TUNING = {
    "apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning",
    "metadata": {"name": "node-1", "generation": 3},
    "spec": {
        "mode": "Auto",
        "knobs": [{"key": "vm.swappiness", "value": "10", "policy": "NodeTuningPolicy/db", "reason": "db"},
                  {"key": "block.sda.readAheadKb", "value": "256", "policy": "NodeTuningPolicy/db"}],
        "adaptive": {"cpu": {"governor": {"sustainedFor": "2m"}, "thermal": {"maxFrequencyPercent": 70}},
                     "memory": {"swappiness": {"min": 10, "max": 40}}},
        "processes": [{"podUID": UID, "namespace": "shop", "podName": "checkout-0",
                       "containerName": "app", "nice": -5, "ioClass": "BestEffort", "ioPriority": 2}],
    },
}
SAMPLE = NodeSample(0.0, CpuSample({}, 0.5, 0.4, 0.3, 1, 1, 1, 2),
                    MemorySample(1, 1, 50.0, 0, 0, 0, 0, 0, 0, 0, 0), (), (), TcpSample(0, 0, 0, 0, 0, 0), {}, None)


def test_plan_from_node_tuning():
    plan = plan_from_node_tuning(NODE_TUNING, {(UID, "app"): "ab" * 32})
    assert plan.dry_run is False
    assert [(k.key, k.value, k.reason) for k in plan.knobs] == [
        ("vm.swappiness", "10", "db"), ("block.sda.readAheadKb", "256", "NodeTuningPolicy/db")]
    (process,) = plan.processes
    assert (process.container_id, process.nice, process.io_class, process.cpus, process.name) == (
        "ab" * 32, -5, "best-effort", None, "shop/checkout-0/app")
    assert plan.adaptive.governor.sustained_seconds == 120
    assert plan.adaptive.thermal.floor == 70
    assert (plan.adaptive.swappiness.minimum, plan.adaptive.swappiness.maximum) == (10, 40)
    assert {t.metric for t in plan.thresholds} >= {"cpu_utilization_percent", "disk_latency_ms"}


def test_recommend_is_the_default_mode():
    spec = {**NODE_TUNING, "spec": {"knobs": []}}
    assert plan_from_node_tuning(spec).dry_run is True


def test_status_is_valid_and_reports_conflict_as_degraded():
    report = CycleReport(SAMPLE, None, knobs=(
        KnobResult("vm.swappiness", TuningState.CONFLICT, "60", "10", "23",
                   "vm.swappiness was changed to 23 by another writer after the agent set 10; not overwritten"),
        KnobResult("cpu.governor", TuningState.APPLIED, "cpu0=powersave,cpu1=schedutil", "performance",
                   "performance"),
        KnobResult("vm.dirty_ratio", TuningState.FAILED, "20", "30", "20", "write failed: EINVAL"),
    ), thresholds=(ThresholdStatus("cpu_utilization_percent", False, ThresholdReason.WITHIN_THRESHOLDS, "", None),))
    now = datetime(2025, 1, 1, tzinfo=UTC)
    status = status_from_report(report, 3, None, [BlockDeviceInfo("sda", True, "bfq", ("bfq", "none"), 128)], now)
    wire = NodeTuningStatus.model_validate(status.to_dict())  # what the API server would get
    knobs = {k.key: k for k in wire.knobs}
    assert knobs["vm.swappiness"].state.value == "Conflict"
    assert knobs["vm.dirty_ratio"].state.value == "Pending"
    assert knobs["cpu.governor"].original is None and "cpu0=powersave" in knobs["cpu.governor"].message
    conditions = {c.type: c for c in wire.conditions}
    assert (conditions["Degraded"].status.value, conditions["Degraded"].reason) == ("True", "ValueChangedByAnotherWriter")
    assert conditions["Applied"].status.value == "False" and wire.observed_generation == 3
    assert wire.block_devices[0].device_class.value == "HDD"
    later = status_from_report(report, 3, wire, [], datetime(2025, 1, 2, tzinfo=UTC))
    assert {c.type: c.last_transition_time for c in later.conditions}["Degraded"] == now
