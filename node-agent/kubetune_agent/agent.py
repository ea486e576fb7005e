"""One agent cycle, without Kubernetes: sample the host, evaluate the thresholds and the adaptive
rules, reconcile the knobs and processes of the plan, and return what happened.

A critical level newly breached for its sustained period is investigated: the top pods on the node
by the breached resource (from the node's cgroups, ``podusage``) and the adaptive rules it moved.
A breached critical level feeds the adaptive rules the plan has: CPU -> the high-load governor at
once (the level already held for its sustained period); memory -> swappiness, cache pressure and
dirty ratios to their pressure end; disk latency -> dirty ratios to their minimum. In Recommend
mode those moves are planned like every other knob, nothing is written.

``NodeAgent.cycle(plan, now)`` is what the watch loop in ``main`` calls every interval (and when the
NodeTuning changes); ``plan=None`` means "no plan known" (e.g. the API server is unreachable): the
host is sampled, nothing is written and nothing is restored. The same holds while another agent
process on the node holds the journal lock (a rolling update): the report's ``standby`` says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace

from .adaptive import (
    CachePressureRule,
    DirtyRatios,
    DirtyRule,
    GovernorRule,
    GovernorState,
    SwappinessRule,
    ThermalRule,
    ThermalState,
    LoadLevel,
    Threshold,
    ThresholdLevel,
    ThresholdState,
    ThresholdStatus,
    cache_pressure_for_memory,
    dirty_ratios_for_memory,
    evaluate_thresholds,
    governor_for_load,
    max_freq_for_thermal,
    swappiness_for_memory,
)
from .collectors import NodeCollector, NodeSample, NodeSummary, summarise
from .executor import KnobExecutor, KnobResult, KnobTarget, journal_blocked
from .exporter import NodeMetrics
from .podusage import PodRank, PodUsage, PodUsageReader, Resource, rank
from .process import ProcessResult, ProcessTarget, ProcessTuner

# The resource whose per-pod use explains a breached metric (network use is not in cgroups).
BREACH_RESOURCE = {
    "cpu_utilization_percent": Resource.CPU,
    "memory_used_percent": Resource.MEMORY,
    "swap_used_percent": Resource.MEMORY,
    "disk_latency_ms": Resource.IO,
    "disk_queue_depth": Resource.IO,
}
# The adaptive knobs a breached critical level moves.
BREACH_KNOBS = {
    "cpu_utilization_percent": ("cpu.governor",),
    "memory_used_percent": ("vm.swappiness", "vm.vfs_cache_pressure", "vm.dirty_ratio",
                            "vm.dirty_background_ratio"),
    "disk_latency_ms": ("vm.dirty_ratio", "vm.dirty_background_ratio"),
}
TOP_PODS = 3


@dataclass(frozen=True)
class AdaptivePlan:
    """The node-level rules the agent evaluates itself; None = rule not in use."""

    governor: GovernorRule | None = None
    thermal: ThermalRule | None = None
    swappiness: SwappinessRule | None = None
    cache_pressure: CachePressureRule | None = None
    dirty: DirtyRule | None = None


@dataclass(frozen=True)
class AgentPlan:
    """Everything the agent is asked to do on this node (plain data; see contract.py)."""

    dry_run: bool = True
    knobs: tuple[KnobTarget, ...] = ()
    processes: tuple[ProcessTarget, ...] = ()
    adaptive: AdaptivePlan = field(default_factory=AdaptivePlan)
    thresholds: tuple[Threshold, ...] = ()
    latency_targets: tuple[str, ...] = ()  # host:port; empty = the agent's default target


@dataclass(frozen=True)
class Investigation:
    """A critical level breached in this cycle (a transition, not every cycle it holds)."""

    threshold: ThresholdStatus
    resource: str | None  # Resource.*; None: per-pod use of this resource is not in cgroups
    top: tuple[PodRank, ...]  # busiest pods first
    responses: tuple[KnobResult, ...]  # the adaptive knobs the breach moved (Planned in Recommend)
    dry_run: bool


@dataclass(frozen=True)
class CycleReport:
    sample: NodeSample
    summary: NodeSummary | None
    knobs: tuple[KnobResult, ...] = ()
    processes: tuple[ProcessResult, ...] = ()
    thresholds: tuple[ThresholdStatus, ...] = ()
    investigations: tuple[Investigation, ...] = ()
    # Another agent process on this node holds the journal (a DaemonSet rolling update): this one
    # only sampled, and says why; it must not write the NodeTuning's status either.
    standby: str | None = None
    journal_problem: str | None = None  # the journal was unreadable: nothing tuned or restored


class NodeAgent:
    """Holds the executors and the small state of the adaptive rules between cycles."""

    def __init__(self, collector: NodeCollector, knobs: KnobExecutor, processes: ProcessTuner,
                 metrics: NodeMetrics | None = None, pods: PodUsageReader | None = None) -> None:
        self.collector, self.knobs, self.processes, self.metrics = collector, knobs, processes, metrics
        self.pods = pods
        # The last per-pod reading (monotonic time, usage), kept while a critical level is crossed
        # so CPU and I/O rates are ready when the breach has lasted its sustained period.
        self.pod_reading: tuple[float, dict[str, PodUsage]] | None = None
        self.previous: NodeSample | None = None
        self.governor = GovernorState()
        self.thermal = ThermalState()
        self.swappiness: int | None = None
        self.cache_pressure: int | None = None
        self.dirty = DirtyRatios()
        self.threshold_state = ThresholdState()

    def sample(self, latency_targets: tuple[str, ...] = ()) -> tuple[NodeSample, NodeSummary | None]:
        sample = self.collector.sample(latency_targets or None)
        summary = summarise(self.previous, sample) if self.previous else None
        self.previous = sample
        if self.metrics is not None:
            self.metrics.update(sample, summary)
        return sample, summary

    def cycle(self, plan: AgentPlan | None, now: float | None = None) -> CycleReport:
        now = time.monotonic() if now is None else now
        sample, summary = self.sample(plan.latency_targets if plan else ())
        if plan is None:
            return CycleReport(sample, summary)
        if not self.knobs.journal.acquire():
            return CycleReport(sample, summary, standby=journal_blocked(self.knobs.journal))
        values = {f.name: getattr(summary, f.name) for f in fields(NodeSummary)} if summary else {}
        thresholds, self.threshold_state = evaluate_thresholds(
            values, plan.thresholds, self.threshold_state, now, summary.missing if summary else None)
        pressure = frozenset(t.metric for t in thresholds if t.breached and t.level is ThresholdLevel.CRITICAL)
        adaptive = self.adaptive_targets(plan.adaptive, summary, now, plan.knobs, pressure)
        knobs = self.knobs.reconcile((*plan.knobs, *adaptive), dry_run=plan.dry_run)
        processes = self.processes.reconcile(plan.processes, dry_run=plan.dry_run)
        investigations = self.investigate(thresholds, knobs, {t.key for t in adaptive}, plan.dry_run)
        return CycleReport(sample, summary, tuple(knobs), tuple(processes), tuple(thresholds),
                           investigations, journal_problem=self.knobs.journal.problem)

    def investigate(self, thresholds: list[ThresholdStatus], knobs: list[KnobResult],
                    adaptive_keys: set[str], dry_run: bool) -> tuple[Investigation, ...]:
        """One Investigation per critical level breached in this cycle, naming the top pods by the
        breached resource; pod cgroups are read only while a critical level is crossed."""
        critical = [t for t in thresholds if t.level is ThresholdLevel.CRITICAL]
        crossed = any(t.since is not None and t.metric in BREACH_RESOURCE for t in critical)
        if self.pods is None or not crossed:
            self.pod_reading = None
            return ()
        new = [t for t in critical if t.breached and t.changed]
        before = self.pod_reading
        reading = (time.monotonic(), self.pods.read())
        needs_rate = any(BREACH_RESOURCE.get(t.metric) in (Resource.CPU, Resource.IO) for t in new)
        if needs_rate and before is None:
            # No earlier reading (a level breached on its first sample): a short second one gives
            # rates. Only on a breach transition, so it never slows a healthy cycle.
            time.sleep(0.25)
            before, reading = reading, (time.monotonic(), self.pods.read())
        self.pod_reading = reading
        results = []
        for t in new:
            resource = BREACH_RESOURCE.get(t.metric)
            top = rank(before[1] if before else None, reading[1], resource,
                       reading[0] - before[0] if before else 0.0, TOP_PODS) if resource else []
            moved = tuple(k for k in knobs if k.key in adaptive_keys and k.key in BREACH_KNOBS.get(t.metric, ()))
            results.append(Investigation(t, resource, tuple(top), moved, dry_run))
        return tuple(results)

    def adaptive_targets(self, rules: AdaptivePlan, summary: NodeSummary | None, now: float,
                         fixed: tuple[KnobTarget, ...] = (), pressure: frozenset[str] = frozenset()
                         ) -> list[KnobTarget]:
        """Knob targets chosen by the adaptive rules from the latest summary (``fixed``: the plan's
        fixed knobs, which bound a dirty ratio the rules do not move; ``pressure``: the metrics
        whose critical level is breached, which push their rules to the pressure end)."""
        if summary is None:
            return []
        targets = []
        summary = self.pressed(summary, rules, pressure)
        if rules.governor:
            governor, self.governor = governor_for_load(summary.cpu_utilization_percent,
                                                        self.governor, rules.governor, now)
            if "cpu_utilization_percent" in pressure and self.governor.level is not LoadLevel.HIGH:
                # The critical level already held for its sustained period: no second wait.
                self.governor = replace(self.governor, level=LoadLevel.HIGH, candidate=LoadLevel.HIGH)
                governor = rules.governor.high_load
            targets.append(KnobTarget("cpu.governor", governor, f"adaptive: CPU "
                                      f"{summary.cpu_utilization_percent:.0f}%, level "
                                      f"{self.governor.level}"))
        if rules.thermal:
            self.thermal = max_freq_for_thermal(summary.thermal_throttle_events, self.thermal, rules.thermal)
            targets.append(KnobTarget("cpu.maxFrequencyPercent", str(self.thermal.max_freq_percent),
                                      f"adaptive: {summary.thermal_throttle_events} new thermal "
                                      "throttle events"))
        if rules.swappiness:
            current = rules.swappiness.neutral if self.swappiness is None else self.swappiness
            self.swappiness = swappiness_for_memory(summary.memory_used_percent,
                                                    summary.swap_used_percent, current, rules.swappiness)
            targets.append(KnobTarget("vm.swappiness", str(self.swappiness), f"adaptive: memory "
                                      f"{summary.memory_used_percent:.0f}%, swap "
                                      f"{summary.swap_used_percent:.0f}%"))
        memory = f"adaptive: memory {summary.memory_used_percent:.0f}%"
        if rules.cache_pressure:
            current = rules.cache_pressure.neutral if self.cache_pressure is None else self.cache_pressure
            self.cache_pressure = cache_pressure_for_memory(summary.memory_used_percent, current,
                                                            rules.cache_pressure)
            targets.append(KnobTarget("vm.vfs_cache_pressure", str(self.cache_pressure), memory))
        if rules.dirty:
            targets += self.dirty_targets(rules.dirty, summary, fixed, memory)
        return targets

    @staticmethod
    def pressed(summary: NodeSummary, rules: AdaptivePlan, pressure: frozenset[str]) -> NodeSummary:
        """The summary as the adaptive rules see it under a breached critical level: memory at least
        at the rules' high-pressure level, disk latency at least at the dirty rule's stall level."""
        changes: dict[str, float] = {}
        if "memory_used_percent" in pressure:
            highs = [r.memory_high for r in (rules.swappiness, rules.cache_pressure, rules.dirty) if r]
            if highs:
                changes["memory_used_percent"] = max(summary.memory_used_percent, max(highs))
        if "disk_latency_ms" in pressure and rules.dirty and rules.dirty.latency_high_ms is not None:
            changes["disk_latency_ms"] = max(summary.disk_latency_ms, rules.dirty.latency_high_ms)
        return replace(summary, **changes) if changes else summary

    def dirty_targets(self, rule: DirtyRule, summary: NodeSummary, fixed: tuple[KnobTarget, ...],
                      memory: str) -> list[KnobTarget]:
        """vm.dirty_ratio and vm.dirty_background_ratio, ordered so that background stays below
        dirty_ratio between the two writes: background first when lowering, dirty_ratio first when
        raising."""
        before = self.dirty
        self.dirty = dirty_ratios_for_memory(summary.memory_used_percent, summary.disk_latency_ms, before,
                                             rule, self.fixed_dirty(rule, fixed))
        reason = f"{memory}, disk latency {summary.disk_latency_ms:.0f}ms"
        ratio = [KnobTarget("vm.dirty_ratio", str(self.dirty.ratio), reason)] if self.dirty.ratio is not None else []
        background = ([KnobTarget("vm.dirty_background_ratio", str(self.dirty.background), reason)]
                      if self.dirty.background is not None else [])
        raising = before.ratio is not None and self.dirty.ratio is not None and self.dirty.ratio > before.ratio
        return ratio + background if raising else background + ratio

    def fixed_dirty(self, rule: DirtyRule, fixed: tuple[KnobTarget, ...]) -> DirtyRatios:
        """The value in force of a dirty ratio the rule does not move: the plan's, else the live one."""
        def value(key: str) -> int | None:
            planned = next((k.value for k in fixed if k.key == key), None)
            text = planned if planned is not None else self.knobs.live(key)
            return int(text) if text is not None and text.strip().isdigit() else None
        return DirtyRatios(None if rule.ratio else value("vm.dirty_ratio"),
                           None if rule.background else value("vm.dirty_background_ratio"))
