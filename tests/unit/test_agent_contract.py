"""The adapter between NodeTuning and the agent's plain data (pure, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubetune.api import NodeTuningStatus
from kubetune_agent.adaptive import ThresholdLevel, ThresholdReason, ThresholdStatus
from kubetune_agent.agent import CycleReport
from kubetune_agent.collectors import BlockDeviceInfo, CpuSample, MemorySample, NodeSample, TcpSample
from kubetune_agent.contract import plan_from_node_tuning, status_from_report, threshold_events
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


def test_an_unreadable_journal_is_degraded_and_every_knob_says_why():
    problem = "journal /run/kubetune/journal.json is unreadable (Expecting value: line 1 column 1 (char 0))"
    report = CycleReport(SAMPLE, None, knobs=(
        KnobResult("vm.swappiness", TuningState.FAILED, desired="10", message=f"not tuned: {problem}"),),
        journal_problem=problem)
    wire = NodeTuningStatus.model_validate(
        status_from_report(report, 1, None, [], datetime(2025, 1, 1, tzinfo=UTC)).to_dict())
    conditions = {c.type: c for c in wire.conditions}
    assert (conditions["Degraded"].status.value, conditions["Degraded"].reason) == ("True", "JournalUnreadable")
    assert conditions["Degraded"].message == problem
    assert (conditions["Applied"].reason, wire.knobs[0].state.value) == ("WriteFailed", "Pending")
    assert conditions["Applied"].message == f"vm.swappiness: not tuned: {problem}"


def test_thresholds_carry_the_level_the_api_names_them_with():
    plan = plan_from_node_tuning({**NODE_TUNING, "spec": {"thresholds": {"cpu": {"sustainedFor": "5m"}}}})
    levels = {(t.metric, t.level.value): (t.above, t.for_seconds) for t in plan.thresholds}
    assert levels == {
        ("cpu_utilization_percent", "warning"): (70, 300), ("cpu_utilization_percent", "critical"): (85, 300),
        ("memory_used_percent", "warning"): (75, 0), ("memory_used_percent", "critical"): (90, 0),
        ("swap_used_percent", "warning"): (20, 0),
        ("disk_latency_ms", "warning"): (50, 0), ("disk_latency_ms", "critical"): (100, 0),
        ("disk_queue_depth", "warning"): (8, 0),
        ("tcp_connect_ms", "warning"): (50, 0), ("network_loss_percent", "warning"): (0.1, 0),
        ("network_bandwidth_percent", "warning"): (80, 0),
    }


def test_adaptive_caching_rules_come_from_the_memory_ranges():
    spec = {**NODE_TUNING["spec"], "adaptive": {"memory": {
        "vfsCachePressure": {"min": 60, "max": 200}, "dirtyRatio": {"min": 15, "max": 30},
        "dirtyBackgroundRatio": {"min": 3, "max": 8}}}, "thresholds": {"disk": {"latencyWarningMs": 40}}}
    adaptive = plan_from_node_tuning({**NODE_TUNING, "spec": spec}).adaptive
    assert (adaptive.cache_pressure.minimum, adaptive.cache_pressure.maximum) == (60, 200)
    assert (adaptive.dirty.ratio, adaptive.dirty.background, adaptive.dirty.latency_high_ms) == ((15, 30), (3, 8), 40)
    assert adaptive.swappiness is None

    only_background = {**spec, "adaptive": {"memory": {"dirtyBackgroundRatio": {"min": 3, "max": 8}}}}
    adaptive = plan_from_node_tuning({**NODE_TUNING, "spec": only_background}).adaptive
    assert (adaptive.cache_pressure, adaptive.dirty.ratio, adaptive.dirty.background) == (None, None, (3, 8))
    assert plan_from_node_tuning(NODE_TUNING).adaptive.dirty is None


def threshold(metric, level, breached, changed, message=""):
    reason = ThresholdReason.THRESHOLD_EXCEEDED if breached else ThresholdReason.WITHIN_THRESHOLDS
    return ThresholdStatus(metric, breached, reason, message or f"{metric} {level}", 0.0 if breached else None,
                           ThresholdLevel(level), changed)


def conditions_for(*thresholds, previous=None, now=datetime(2025, 1, 1, tzinfo=UTC)):
    status = status_from_report(CycleReport(SAMPLE, None, thresholds=thresholds), 3, previous, [], now)
    return NodeTuningStatus.model_validate(status.to_dict())  # what the API server would get


@pytest.mark.parametrize(
    ("thresholds", "degraded", "warning"),
    [
        pytest.param([threshold("cpu_utilization_percent", "warning", False, False),
                      threshold("cpu_utilization_percent", "critical", False, False)],
                     ("False", "WithinThresholds"), ("False", "BelowWarningLevels"), id="calm"),
        pytest.param([threshold("cpu_utilization_percent", "warning", True, True),
                      threshold("cpu_utilization_percent", "critical", False, False)],
                     ("False", "WithinThresholds"), ("True", "ThresholdWarning"), id="warning-only"),
        pytest.param([threshold("cpu_utilization_percent", "warning", True, False),
                      threshold("cpu_utilization_percent", "critical", True, True)],
                     ("True", "ThresholdExceeded"), ("True", "ThresholdWarning"), id="critical"),
        pytest.param([threshold("swap_used_percent", "warning", True, True)],
                     ("False", "WithinThresholds"), ("True", "ThresholdWarning"), id="single-warning-level"),
    ],
)
def test_warning_levels_set_the_warning_condition_critical_levels_degraded(thresholds, degraded, warning):
    conditions = {c.type: c for c in conditions_for(*thresholds).conditions}
    assert (conditions["Degraded"].status.value, conditions["Degraded"].reason) == degraded
    assert (conditions["Warning"].status.value, conditions["Warning"].reason) == warning


def test_warning_condition_message_and_transition_time():
    message = "cpu_utilization_percent 78 > warning level 70 for 312s (sustained period 300s)"
    first = conditions_for(threshold("cpu_utilization_percent", "warning", True, True, message),
                           threshold("memory_used_percent", "warning", True, True, "memory_used_percent 80 > ..."))
    warning = {c.type: c for c in first.conditions}["Warning"]
    assert warning.message == f"{message}; memory_used_percent 80 > ..."
    later = conditions_for(threshold("cpu_utilization_percent", "warning", True, False, message), previous=first,
                           now=datetime(2025, 1, 2, tzinfo=UTC))
    assert {c.type: c for c in later.conditions}["Warning"].last_transition_time == warning.last_transition_time


def test_one_event_per_warning_transition():
    report = CycleReport(SAMPLE, None, thresholds=(
        threshold("cpu_utilization_percent", "warning", True, True, "cpu up"),
        threshold("memory_used_percent", "warning", True, False, "memory still up"),  # no transition
        threshold("disk_latency_ms", "warning", False, True, "disk_latency_ms 3 <= warning level 50"),
        threshold("cpu_utilization_percent", "critical", True, True, "critical: the Degraded Event"),
    ))
    assert [(e.reason, e.message, e.warning) for e in threshold_events(report)] == [
        ("ThresholdWarning", "cpu up", True),
        ("ThresholdWarningCleared", "disk_latency_ms 3 <= warning level 50", False),
    ]
    assert threshold_events(CycleReport(SAMPLE, None)) == []
