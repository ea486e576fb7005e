"""The thin adapter between the NodeTuning API models and the agent's plain data.

``plan_from_node_tuning`` turns a NodeTuning object into an ``AgentPlan``; ``status_from_report``
turns a ``CycleReport`` into a ``NodeTuningStatus``. Both are pure (``now`` injected); the
Kubernetes calls live in ``main``.

Mapping notes (where the API and the agent differ):
- Knob keys are the API's own (``vm.swappiness``, ``sysctl.<name>``, ``block.<dev>.readAheadKb``).
- The agent's ``Failed`` (write raised or read back differs) has no API state: it is reported as
  ``Pending`` with the failure in the message, and makes Applied False.
- The agent's ``Conflict`` means another writer changed the value; it sets Degraded.
- An unreadable journal sets Degraded with reason ``JournalUnreadable`` (every knob is then Pending,
  the message saying why).
- Per-CPU values that differ (``cpu0=powersave,cpu1=schedutil``) do not fit the API's value
  pattern: ``current``/``original`` are left out and the per-CPU values go to the message.
- Thresholds carry the level the API names them with: critical levels set Degraded, warning levels
  the agent's own condition type ``Warning`` (the API's condition type is free-form) and one Node
  Event per transition (``threshold_events``).
- ProcessEntry names the container, the cgroup names its ID: ``container_ids`` maps
  (podUID, containerName) to the ID from the pod's status; without it the whole pod is tuned.
- A level that cannot be evaluated (no link reports a speed, no latency target answers) is named
  in the Warning condition's message with why, never guessed.
- Ready=True ``AgentReporting`` is the agent's heartbeat condition; the operator sets it False,
  ``AgentNotReporting``, when the heartbeat is older than three ``reportingIntervalSeconds``.
- A critical level newly breached is one ``Investigate`` Event (``investigation_events``) naming
  the top pods by the breached resource and the adaptive knobs it moved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from kubetune.api import (
    Condition,
    ConditionStatus,
    NodeTuning,
    NodeTuningMode,
    NodeTuningSpec,
    NodeTuningStatus,
    parse_duration,
)
from kubetune.api.nodetuning import (
    AGENT_REPORTING,
    APPLIED,
    DEGRADED,
    READY,
    BlockDevice,
    DeviceClass,
    KnobState,
    KnobStatus,
    MetricsSummary,
    ProcessStatus,
)

from .adaptive import (
    CachePressureRule,
    DirtyRule,
    GovernorRule,
    SwappinessRule,
    ThermalRule,
    Threshold,
    ThresholdLevel,
    ThresholdReason,
)
from .agent import AdaptivePlan, AgentPlan, CycleReport, Investigation
from .collectors import BlockDeviceInfo
from .executor import KnobResult, KnobTarget, TuningState
from .process import ProcessResult, ProcessTarget

# The condition warning levels set. A type of its own, not Degraded=False with a reason: a node
# can be Degraded (critical level, another writer) and past a warning level at once, and
# `kubectl get nodetuning -o yaml` then shows both.
WARNING = "Warning"
THRESHOLD_WARNING = "ThresholdWarning"
THRESHOLD_WARNING_CLEARED = "ThresholdWarningCleared"
INVESTIGATE = "Investigate"
# Degraded's reason when the on-host journal was unreadable: the originals are unknown, nothing is
# tuned or restored until an admin has looked at the copy the agent kept (docs/node-agent.md).
JOURNAL_UNREADABLE = "JournalUnreadable"


@dataclass(frozen=True)
class ThresholdEvent:
    """A Node Event for one threshold transition."""

    reason: str
    message: str
    warning: bool


_VALUE = re.compile(r"^[a-zA-Z0-9 \t._-]*$")
_IO_CLASS = {"BestEffort": "best-effort", "Idle": "idle"}
_STATE = {TuningState.FAILED: KnobState.PENDING}
_SETTLED = {TuningState.APPLIED, TuningState.UNSUPPORTED, TuningState.RESTORED}


def default_plan() -> AgentPlan:
    """The plan of a node without a NodeTuning: the default thresholds watched, nothing tuned, and
    what the journal still holds restored (Auto, so the restore is not a dry run)."""
    return plan_from_spec(NodeTuningSpec(mode=NodeTuningMode.AUTO), {})


def plan_from_node_tuning(obj: Mapping, container_ids: Mapping[tuple[str, str], str] | None = None
                          ) -> AgentPlan:
    """The agent's plan for a NodeTuning object as the API server returned it."""
    return plan_from_spec(NodeTuning.model_validate(obj).spec, container_ids or {})


def plan_from_spec(spec: NodeTuningSpec, container_ids: Mapping[tuple[str, str], str]) -> AgentPlan:
    knobs = tuple(KnobTarget(k.key, k.value, k.reason or k.policy) for k in spec.knobs)
    processes = tuple(
        ProcessTarget(
            pod_uid=p.pod_uid,
            container_id=container_ids.get((p.pod_uid, p.container_name)),
            nice=p.nice,
            io_class=_IO_CLASS[p.io_class.value] if p.io_class else None,
            io_priority=p.io_priority,
            cpus=tuple(p.cpus) or None,
            name=f"{p.namespace}/{p.pod_name}/{p.container_name}",
            reason=p.policy,
        )
        for p in spec.processes
    )
    return AgentPlan(dry_run=spec.mode is not NodeTuningMode.AUTO, knobs=knobs, processes=processes,
                     adaptive=adaptive_plan(spec), thresholds=thresholds(spec),
                     latency_targets=tuple(spec.thresholds.network.latency_targets))


def adaptive_plan(spec: NodeTuningSpec) -> AdaptivePlan:
    rules = spec.adaptive
    cpu = rules.cpu if rules else None
    memory = rules.memory if rules else None
    governor = thermal = swappiness = cache_pressure = dirty = None
    if cpu and cpu.governor:
        g = cpu.governor
        governor = GovernorRule(g.high_load.value, g.low_load.value, g.default.value,
                                g.high_load_above_percent, g.low_load_below_percent,
                                parse_duration(g.sustained_for).total_seconds())
    if cpu and cpu.thermal and cpu.thermal.reduce_frequency:
        thermal = ThermalRule(floor=cpu.thermal.max_frequency_percent)
    if memory and memory.swappiness:
        low, high = memory.swappiness.min, memory.swappiness.max
        swappiness = SwappinessRule(minimum=low, maximum=high, neutral=(low + high) // 2)
    if memory and memory.vfs_cache_pressure:
        cache_pressure = CachePressureRule(minimum=memory.vfs_cache_pressure.min,
                                           maximum=memory.vfs_cache_pressure.max)
    if memory and (memory.dirty_ratio or memory.dirty_background_ratio):
        ratio, background = memory.dirty_ratio, memory.dirty_background_ratio
        dirty = DirtyRule(ratio=(ratio.min, ratio.max) if ratio else None,
                          background=(background.min, background.max) if background else None,
                          latency_high_ms=spec.thresholds.disk.latency_warning_ms)
    return AdaptivePlan(governor, thermal, swappiness, cache_pressure, dirty)


def thresholds(spec: NodeTuningSpec) -> tuple[Threshold, ...]:
    """Node thresholds over NodeSummary fields, each at the level the API names it: critical levels
    set Degraded, warning levels the Warning condition (and a Warning Event per transition). Only
    CPU has a sustained period in the API; the other levels count from the first sample above."""
    t = spec.thresholds
    cpu_period = parse_duration(t.cpu.sustained_for).total_seconds()
    warning, critical = ThresholdLevel.WARNING, ThresholdLevel.CRITICAL
    return (
        Threshold("cpu_utilization_percent", t.cpu.warning_percent, cpu_period, warning),
        Threshold("cpu_utilization_percent", t.cpu.critical_percent, cpu_period, critical),
        Threshold("memory_used_percent", t.memory.warning_percent, 0, warning),
        Threshold("memory_used_percent", t.memory.critical_percent, 0, critical),
        Threshold("swap_used_percent", t.memory.swap_warning_percent, 0, warning),
        Threshold("disk_latency_ms", t.disk.latency_warning_ms, 0, warning),
        Threshold("disk_latency_ms", t.disk.latency_critical_ms, 0, critical),
        Threshold("disk_queue_depth", t.disk.queue_depth_warning, 0, warning),
        Threshold("tcp_connect_ms", t.network.latency_warning_ms, 0, warning),
        Threshold("network_bandwidth_percent", t.network.bandwidth_warning_percent, 0, warning),
        Threshold("network_loss_percent", t.network.packet_loss_warning_percent, 0, warning),
    )


def block_device(info: BlockDeviceInfo) -> BlockDevice:
    kind = (DeviceClass.NVME if info.name.startswith("nvme")
            else DeviceClass.HDD if info.rotational else DeviceClass.SSD)
    return BlockDevice(name=info.name, device_class=kind, scheduler=info.scheduler,
                       available_schedulers=info.available_schedulers[:8], read_ahead_kb=info.read_ahead_kb)


def knob_status(result: KnobResult) -> KnobStatus:
    values = {"original": result.original, "desired": result.desired, "current": result.current}
    unfit = {k: v for k, v in values.items() if v is not None and not _VALUE.match(v)}
    message = result.message
    if unfit:
        message = f"{message} ({', '.join(f'{k}: {v}' for k, v in unfit.items())})".strip()
    return KnobStatus(key=result.key, state=_api_state(result.state),
                      message=message[:1024],
                      **{k: v for k, v in values.items() if k not in unfit and v is not None})


def status_from_report(report: CycleReport, generation: int | None, previous: NodeTuningStatus | None,
                       block_devices: Iterable[BlockDeviceInfo], now: datetime,
                       interval_seconds: float | None = None) -> NodeTuningStatus:
    """The NodeTuning status for one cycle; condition times carry over while a status holds."""
    knobs = tuple(knob_status(r) for r in report.knobs)
    processes = tuple(
        ProcessStatus(pod_uid=p.pod_uid, container_name=p.name.rsplit("/", 1)[-1] or "unknown",
                      state=_api_state(p.state), processes=p.threads,
                      message=p.message[:1024])
        for p in report.processes
    )
    old = {c.type: c for c in (previous.conditions if previous else ())}
    conditions = (
        _condition(READY, True, AGENT_REPORTING, f"the node agent reports every {interval_seconds:g}s"
                   if interval_seconds else "the node agent reports", generation, old, now),
        _condition(APPLIED, *_applied(report), generation, old, now),
        _condition(DEGRADED, *_degraded(report), generation, old, now),
        _condition(WARNING, *_warning(report), generation, old, now),
    )
    summary = report.summary
    metrics = MetricsSummary(
        cpu_percent=summary.cpu_utilization_percent, load1=report.sample.cpu.load1,
        memory_percent=summary.memory_used_percent, swap_percent=summary.swap_used_percent,
        disk_latency_ms_max=summary.disk_latency_ms,
        network_drops_per_second=summary.network_drops_errors_per_second,
        network_bandwidth_percent=summary.network_bandwidth_percent,
        network_latency_ms=summary.tcp_connect_ms,
    ) if summary else None
    return NodeTuningStatus(observed_generation=generation, conditions=conditions, knobs=knobs,
                            processes=processes, block_devices=tuple(block_device(d) for d in block_devices), metrics=metrics,
                            heartbeat_time=now, reporting_interval_seconds=interval_seconds)


def _api_state(state: TuningState) -> KnobState:
    return _STATE[state] if state in _STATE else KnobState(state.value)


def _applied(report: CycleReport) -> tuple[bool, str, str]:
    results = [*report.knobs, *report.processes]
    if any(r.state is TuningState.PLANNED for r in results):
        return False, "Recommend", "mode Recommend: the plan is in status, nothing was written"
    for state, reason in ((TuningState.REFUSED, "Refused"), (TuningState.FAILED, "WriteFailed"),
                          (TuningState.CONFLICT, "Conflict")):
        bad = [r for r in results if r.state is state]
        if bad:
            return False, reason, "; ".join(f"{_subject(r)}: {r.message}" for r in bad)
    return True, "Applied", f"{sum(r.state in _SETTLED for r in results)} settings in place"


def _subject(result: KnobResult | ProcessResult) -> str:
    return result.key if isinstance(result, KnobResult) else result.name or result.pod_uid


def _degraded(report: CycleReport) -> tuple[bool, str, str]:
    if report.journal_problem:
        return True, JOURNAL_UNREADABLE, report.journal_problem
    conflicts = [r for r in report.knobs if r.state is TuningState.CONFLICT]
    if conflicts:
        return True, "ValueChangedByAnotherWriter", "; ".join(r.message for r in conflicts)
    breached = [t for t in report.thresholds if t.breached and t.level is ThresholdLevel.CRITICAL]
    if breached:
        return True, "ThresholdExceeded", "; ".join(t.message for t in breached)
    return False, "WithinThresholds", "no critical level crossed for its sustained period"


def _warning(report: CycleReport) -> tuple[bool, str, str]:
    warned = [t for t in report.thresholds if t.breached and t.level is ThresholdLevel.WARNING]
    unknown = sorted({t.message for t in report.thresholds if t.reason is ThresholdReason.NO_DATA})
    not_evaluated = f"; not evaluated: {'; '.join(unknown)}" if unknown else ""
    if warned:
        return True, THRESHOLD_WARNING, "; ".join(t.message for t in warned) + not_evaluated
    return False, "BelowWarningLevels", "no warning level crossed for its sustained period" + not_evaluated


def threshold_events(report: CycleReport) -> list[ThresholdEvent]:
    """The Node Events for warning levels crossed or cleared in this cycle: one per transition
    (``ThresholdStatus.changed``), never one per cycle while a level stays crossed."""
    return [
        ThresholdEvent(THRESHOLD_WARNING, t.message, warning=True) if t.breached else
        ThresholdEvent(THRESHOLD_WARNING_CLEARED, t.message, warning=False)
        for t in report.thresholds if t.changed and t.level is ThresholdLevel.WARNING
    ]


def investigation_events(report: CycleReport, pod_names: Mapping[str, str] | None = None
                         ) -> list[ThresholdEvent]:
    """One Warning ``Investigate`` Event per critical level breached in this cycle; ``pod_names``
    maps pod UIDs to ``namespace/name`` (from the API server; a UID stands in without it)."""
    return [ThresholdEvent(INVESTIGATE, investigation_message(i, pod_names or {}), warning=True)
            for i in report.investigations]


def investigation_message(investigation: Investigation, pod_names: Mapping[str, str]) -> str:
    t = investigation.threshold
    if investigation.resource is None:
        pods = "per-pod use of this resource is not in the node's cgroups"
    elif investigation.top:
        pods = (f"top pods by {investigation.resource}: "
                + ", ".join(r.describe(pod_names.get(r.uid)) for r in investigation.top))
    else:
        pods = f"no pod cgroup on this node shows {investigation.resource} use"
    if investigation.responses:
        done = "planned, nothing written (mode Recommend)" if investigation.dry_run else "applied"
        moves = ", ".join(f"{k.key} {k.current or '?'} -> {k.desired} ({k.state.value})"
                          for k in investigation.responses)
        response = f"adaptive response {done}: {moves}"
    else:
        response = "no adaptive rule of the node's policy acts on it"
    return f"{t.message}; {pods}; {response}"


def _condition(kind: str, true: bool, reason: str, message: str, generation: int | None,
               old: Mapping[str, Condition], now: datetime) -> Condition:
    status = ConditionStatus.TRUE if true else ConditionStatus.FALSE
    previous = old.get(kind)
    since = previous.last_transition_time if previous and previous.status == status else now
    return Condition(type=kind, status=status, reason=reason, message=message[:32768],
                     last_transition_time=since, observed_generation=generation)
