"""One agent cycle, without Kubernetes: sample the host, evaluate the adaptive rules and thresholds,
reconcile the knobs and processes of the plan, and return what happened.

``NodeAgent.cycle(plan, now)`` is what the watch loop in ``main`` calls every interval (and when the
NodeTuning changes); ``plan=None`` means "no plan known" (e.g. the API server is unreachable): the
host is sampled, nothing is written and nothing is restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

from .adaptive import (
    CachePressureRule,
    DirtyRatios,
    DirtyRule,
    GovernorRule,
    GovernorState,
    SwappinessRule,
    ThermalRule,
    ThermalState,
    Threshold,
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
from .executor import KnobExecutor, KnobResult, KnobTarget
from .exporter import NodeMetrics
from .process import ProcessResult, ProcessTarget, ProcessTuner


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


@dataclass(frozen=True)
class CycleReport:
    sample: NodeSample
    summary: NodeSummary | None
    knobs: tuple[KnobResult, ...] = ()
    processes: tuple[ProcessResult, ...] = ()
    thresholds: tuple[ThresholdStatus, ...] = ()


class NodeAgent:
    """Holds the executors and the small state of the adaptive rules between cycles."""

    def __init__(self, collector: NodeCollector, knobs: KnobExecutor, processes: ProcessTuner,
                 metrics: NodeMetrics | None = None) -> None:
        self.collector, self.knobs, self.processes, self.metrics = collector, knobs, processes, metrics
        self.previous: NodeSample | None = None
        self.governor = GovernorState()
        self.thermal = ThermalState()
        self.swappiness: int | None = None
        self.cache_pressure: int | None = None
        self.dirty = DirtyRatios()
        self.threshold_state = ThresholdState()

    def sample(self) -> tuple[NodeSample, NodeSummary | None]:
        sample = self.collector.sample()
        summary = summarise(self.previous, sample) if self.previous else None
        self.previous = sample
        if self.metrics is not None:
            self.metrics.update(sample, summary)
        return sample, summary

    def cycle(self, plan: AgentPlan | None, now: float | None = None) -> CycleReport:
        now = time.monotonic() if now is None else now
        sample, summary = self.sample()
        if plan is None:
            return CycleReport(sample, summary)
        targets = (*plan.knobs, *self.adaptive_targets(plan.adaptive, summary, now, plan.knobs))
        knobs = self.knobs.reconcile(targets, dry_run=plan.dry_run)
        processes = self.processes.reconcile(plan.processes, dry_run=plan.dry_run)
        values = {f.name: getattr(summary, f.name) for f in fields(NodeSummary)} if summary else {}
        thresholds, self.threshold_state = evaluate_thresholds(values, plan.thresholds,
                                                               self.threshold_state, now)
        return CycleReport(sample, summary, tuple(knobs), tuple(processes), tuple(thresholds))

    def adaptive_targets(self, rules: AdaptivePlan, summary: NodeSummary | None, now: float,
                         fixed: tuple[KnobTarget, ...] = ()) -> list[KnobTarget]:
        """Knob targets chosen by the adaptive rules from the latest summary (``fixed``: the plan's
        fixed knobs, which bound a dirty ratio the rules do not move)."""
        if summary is None:
            return []
        targets = []
        if rules.governor:
            governor, self.governor = governor_for_load(summary.cpu_utilization_percent,
                                                        self.governor, rules.governor, now)
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
