"""Decisions: plain data in (signals, current resources, policy, past actions, now), a `Decision` out.

No I/O, no clock, no kopf. Every decision carries its rule, its reason (an enum that becomes the
condition and Event reason) and its evidence (the values and windows behind it), so a user can
check it by hand. Table-tested in tests/unit/test_decisions.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Mapping

from kubetune.api.common import Mode, parse_duration, parse_quantity
from kubetune.api.performancepolicy import (
    Action,
    ActionRecord,
    ContainerPolicy,
    ControlledValues,
    Metric,
    PerformancePolicySpec,
    Rule,
    VerificationState,
)
from kubetune.reasons import Reason
from kubetune.verification import RetryBackoff
from kubetune.workloads import format_quantity

# Margins of the recommendation, VPA-like: a high percentile of CPU usage and the memory peak,
# each with 15 % headroom; memory gets 20 % over its limit after an OOM kill.
RECOMMENDATION_MARGIN = 1.15
OOM_BUMP = 1.2
# OptimizeResources: the thresholds at which a resource is taken to explain high latency.
THROTTLING_BOTTLENECK = 0.10  # share of CFS periods throttled
MEMORY_BOTTLENECK = 0.90  # working set / limit
MAJOR_FAULTS_BOTTLENECK = 1.0  # major page faults per second
# Decreases stop short of this share of the lowest scale-up threshold, so a step down never
# lands the workload straight back above it (hysteresis against flapping).
HYSTERESIS = 0.9

RESOURCE_OF_METRIC = {Metric.CPU_UTILIZATION: "cpu", Metric.MEMORY_UTILIZATION: "memory"}
LATENCY_PERCENTILE = {Metric.LATENCY_P50_MS: 50, Metric.LATENCY_P90_MS: 90, Metric.LATENCY_P95_MS: 95,
                      Metric.LATENCY_P99_MS: 99}


@dataclass(frozen=True)
class ContainerSignals:
    """One container name of the workload, across its pods. Usage: CPU in cores (mean over pods),
    memory in bytes (max over pods: one pod's OOM is enough)."""

    name: str
    requests: Mapping[str, float]
    limits: Mapping[str, float]
    usage: Mapping[str, float] = field(default_factory=dict)
    # (resource, "min" | "max", window) -> usage over that window
    sustained: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    throttling: float | None = None
    major_faults_per_second: float | None = None
    # cpu_p50, cpu_p90, cpu_peak (cores), memory_peak (bytes), oom_kills over the recommendation window
    history: Mapping[str, float] = field(default_factory=dict)
    # recent CPU usage (cores, mean over pods, oldest first) for trends and anomalies
    cpu_series: tuple[float, ...] = ()


@dataclass(frozen=True)
class WorkloadSignals:
    containers: tuple[ContainerSignals, ...]
    latency_ms: Mapping[int, float] = field(default_factory=dict)
    error_rate_percent: float | None = None
    throughput_rps: float | None = None


@dataclass(frozen=True)
class Change:
    container: str
    resource: str
    value: str  # "requests" | "limits"
    old: float | None
    new: float

    def describe(self) -> str:
        old = format_quantity(self.resource, self.old) if self.old is not None else "unset"
        return f"{self.container} {self.resource} {self.value} {old} -> {format_quantity(self.resource, self.new)}"


@dataclass(frozen=True)
class RuleHit:
    """A rule whose condition holds, with the value that made it hold."""

    rule: Rule
    container: str | None  # None for workload-level metrics (latency, errors, throughput)
    value: float
    evidence: str


@dataclass(frozen=True)
class Decision:
    reason: Reason
    message: str
    action: Action | None = None
    rule: str | None = None
    changes: tuple[Change, ...] = ()
    evidence: tuple[str, ...] = ()
    apply: bool = False  # the actuator acts only when this is True (Auto, not blocked, changes)
    investigations: tuple[RuleHit, ...] = ()
    unavailable: tuple[str, ...] = ()  # rules that could not be evaluated, and why


@dataclass(frozen=True)
class PolicyInputs:
    spec: PerformancePolicySpec
    signals: WorkloadSignals
    now: datetime
    past_actions: tuple[ActionRecord, ...] = ()  # newest first
    node_capacity: Mapping[str, float] = field(default_factory=dict)  # largest allocatable of a node
    hpa_resources: frozenset[str] = frozenset()  # resources an HPA scales this target on
    predicted_hits: tuple[RuleHit, ...] = ()  # from trend analysis: rules forecast to fire
    # From correlating latency with resource series (when a latency rule fires): the resource that
    # explains latency ("cpu" / "memory") or None when none does, and the sentence saying so.
    # Unset (too little data to correlate): the instantaneous thresholds below decide.
    bottleneck: tuple[str | None, str] | None = None


# --- rules ----------------------------------------------------------------------------------------


def container_policy(spec: PerformancePolicySpec, name: str) -> ContainerPolicy | None:
    """A container's own entry, else `*`, else None (left alone)."""
    by_name = {c.name: c for c in spec.containers}
    return by_name.get(name) or by_name.get("*")


def rule_window(rule: Rule) -> str | None:
    return rule.sustained_for


def rule_value_aggregate(rule: Rule) -> str:
    """'above X for W' holds when the minimum over W is above X; 'below' when the maximum is below."""
    return "min" if rule.above is not None else "max"


def _crossed(rule: Rule, value: float) -> bool:
    return value > rule.above if rule.above is not None else value < rule.below  # type: ignore[operator]


def _threshold_text(rule: Rule) -> str:
    return f"above {rule.above:g}" if rule.above is not None else f"below {rule.below:g}"


def evaluate_rules(spec: PerformancePolicySpec, signals: WorkloadSignals) -> tuple[list[RuleHit], list[str]]:
    """Every rule whose condition holds now, and one line per rule that could not be evaluated."""
    hits, missing = [], []
    for rule in spec.rules:
        resource = RESOURCE_OF_METRIC.get(rule.metric)
        if resource:
            for c in signals.containers:
                if container_policy(spec, c.name) is None:
                    continue
                request = c.requests.get(resource)
                if not request:
                    missing.append(f"{rule.name}: container {c.name} has no {resource} request")
                    continue
                window = rule_window(rule)
                usage = (c.sustained.get((resource, rule_value_aggregate(rule), window)) if window
                         else c.usage.get(resource))
                if usage is None:
                    missing.append(f"{rule.name}: no {resource} usage for container {c.name}")
                    continue
                percent = 100 * usage / request
                if _crossed(rule, percent):
                    span = f"{'lowest' if rule.above is not None else 'highest'} over {window}" if window else "now"
                    hits.append(RuleHit(rule, c.name, percent,
                                        f"{rule.name}: {c.name} {rule.metric.value} {percent:.0f}% ({span}) "
                                        f"{_threshold_text(rule)}%"))
            continue
        value = workload_metric(rule.metric, signals)
        if value is None:
            missing.append(f"{rule.name}: {rule.metric.value} is not available")
        elif _crossed(rule, value):
            hits.append(RuleHit(rule, None, value,
                                f"{rule.name}: {rule.metric.value} {value:.1f} {_threshold_text(rule)}"))
    return hits, missing


def workload_metric(metric: Metric, signals: WorkloadSignals) -> float | None:
    if metric in LATENCY_PERCENTILE:
        return signals.latency_ms.get(LATENCY_PERCENTILE[metric])
    if metric is Metric.ERROR_RATE_PERCENT:
        return signals.error_rate_percent
    if metric is Metric.THROUGHPUT_RPS:
        return signals.throughput_rps
    return None


# --- recommendation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceRecommendation:
    lower: float
    target: float
    upper: float


def _bounds(policy: ContainerPolicy | None, resource: str, node_capacity: Mapping[str, float]) -> tuple[float, float]:
    low = getattr(policy.min_allowed, resource, None) if policy and policy.min_allowed else None
    high = getattr(policy.max_allowed, resource, None) if policy and policy.max_allowed else None
    ceiling = min(filter(None, (float(parse_quantity(high)) if high else None, node_capacity.get(resource))),
                  default=float("inf"))
    return (float(parse_quantity(low)) if low else 0.0), ceiling


def recommend(c: ContainerSignals, policy: ContainerPolicy | None,
              node_capacity: Mapping[str, float]) -> dict[str, ResourceRecommendation]:
    """VPA-like requests from the recommendation window: CPU from usage percentiles, memory from the
    peak working set (bumped after an OOM kill); never outside the bounds nor above the largest node."""
    result = {}
    h = c.history
    if {"cpu_p50", "cpu_p90", "cpu_peak"} <= h.keys():
        values = sorted(v * RECOMMENDATION_MARGIN for v in (h["cpu_p50"], h["cpu_p90"], h["cpu_peak"]))
        result["cpu"] = ResourceRecommendation(*values)
    if "memory_peak" in h:
        target = h["memory_peak"] * RECOMMENDATION_MARGIN
        if h.get("oom_kills", 0) > 0:
            target = max(target, (c.limits.get("memory") or c.requests.get("memory") or h["memory_peak"]) * OOM_BUMP)
        result["memory"] = ResourceRecommendation(h["memory_peak"], target, max(target, h["memory_peak"] * 1.3))
    for resource, rec in list(result.items()):
        low, high = _bounds(policy, resource, node_capacity)
        result[resource] = ResourceRecommendation(*(min(max(v, low), high) for v in (rec.lower, rec.target, rec.upper)))
    return result


# --- changes --------------------------------------------------------------------------------------


def _step(c: ContainerSignals, policy: ContainerPolicy, resource: str, up: bool, inputs: PolicyInputs,
          floor: float | None, evidence: list[str]) -> list[Change]:
    """One step of one resource of one container, within bounds, with limits following requests."""
    if resource not in {r.value for r in policy.controlled_resources}:
        return []
    current = c.requests.get(resource)
    if not current:
        evidence.append(f"{c.name} has no {resource} request to scale from")
        return []
    step = inputs.spec.scaling.step_percent / 100
    low, high = _bounds(policy, resource, inputs.node_capacity)
    if up:
        new = min(current * (1 + step), high)
        if new <= current:
            evidence.append(f"{c.name} {resource} is already at its ceiling {format_quantity(resource, high)}")
            return []
    else:
        new = max(current * (1 - step), low, floor or 0.0)
        if new >= current:
            evidence.append(f"{c.name} {resource} cannot go lower: floor {format_quantity(resource, max(low, floor or 0.0))}")
            return []
    # Round to what will be written, so the recorded change is exactly what the pod gets.
    new = float(parse_quantity(format_quantity(resource, new)))
    if new == current:
        return []
    changes = [Change(c.name, resource, "requests", current, new)]
    limit = c.limits.get(resource)
    if limit and policy.controlled_values is ControlledValues.REQUESTS_AND_LIMITS:
        new_limit = float(parse_quantity(format_quantity(resource, limit * new / current)))
        changes.append(Change(c.name, resource, "limits", limit, new_limit))
    elif limit and new > limit:
        # RequestsOnly must not produce a request above the limit the API server would refuse.
        evidence.append(f"{c.name} {resource} request held at its limit {format_quantity(resource, limit)}")
        changes = [Change(c.name, resource, "requests", current, limit)] if limit > current else []
    return changes


def _decrease_floor(inputs: PolicyInputs, c: ContainerSignals, resource: str, utilization: float) -> float:
    """The lowest request that keeps utilisation under HYSTERESIS x the lowest scale-up threshold."""
    metric = next((m for m, r in RESOURCE_OF_METRIC.items() if r == resource), None)
    ups = [r.above for r in inputs.spec.rules
           if r.metric is metric and r.action is Action.INCREASE_RESOURCES and r.above is not None]
    if not ups or not c.requests.get(resource):
        return 0.0
    usage_now = c.requests[resource] * utilization / 100
    return usage_now / (HYSTERESIS * min(ups) / 100)


def _bottleneck(c: ContainerSignals) -> tuple[str | None, str]:
    if c.throttling is not None and c.throttling >= THROTTLING_BOTTLENECK:
        return "cpu", f"{c.name} is CPU-throttled in {c.throttling:.0%} of periods"
    limit = c.limits.get("memory")
    memory = c.usage.get("memory")
    if limit and memory and memory / limit >= MEMORY_BOTTLENECK:
        return "memory", f"{c.name} memory working set is {memory / limit:.0%} of its limit"
    if c.major_faults_per_second is not None and c.major_faults_per_second >= MAJOR_FAULTS_BOTTLENECK:
        return "memory", f"{c.name} has {c.major_faults_per_second:.1f} major page faults/s"
    return None, f"{c.name}: throttling {c.throttling or 0:.0%}, memory below {MEMORY_BOTTLENECK:.0%} of limit"


# --- the decision ---------------------------------------------------------------------------------


ACTION_ORDER = (Action.INCREASE_RESOURCES, Action.OPTIMIZE_RESOURCES, Action.DECREASE_RESOURCES)


def decide(inputs: PolicyInputs) -> Decision:
    spec = inputs.spec
    if spec.mode is Mode.OFF:
        return Decision(Reason.MODE_OFF, "mode is Off: nothing is evaluated or changed")
    hits, missing = evaluate_rules(spec, inputs.signals)
    hits += [h for h in inputs.predicted_hits if h.rule.action is Action.INCREASE_RESOURCES]
    investigations = tuple(h for h in hits if h.rule.action is Action.INVESTIGATE)
    acting = [h for h in hits if h.rule.action is not Action.INVESTIGATE]
    if not acting:
        if investigations:
            return Decision(Reason.INVESTIGATE, "; ".join(h.evidence for h in investigations),
                            action=Action.INVESTIGATE, rule=investigations[0].rule.name,
                            evidence=tuple(h.evidence for h in investigations) + tuple(missing),
                            investigations=investigations, unavailable=tuple(missing))
        return Decision(Reason.NO_RULE_FIRED, "no rule fired", evidence=tuple(missing), unavailable=tuple(missing))
    action = min((h.rule.action for h in acting), key=ACTION_ORDER.index)
    chosen = [h for h in acting if h.rule.action is action]
    evidence = [h.evidence for h in chosen]
    changes = _changes_for(action, chosen, inputs, evidence)
    rule = chosen[0].rule.name
    return replace(_finish(action, rule, changes, evidence, inputs), investigations=investigations,
                   unavailable=tuple(missing))


def _changes_for(action: Action, chosen: list[RuleHit], inputs: PolicyInputs, evidence: list[str]) -> list[Change]:
    spec, changes = inputs.spec, []
    by_name = {c.name: c for c in inputs.signals.containers}
    for hit in chosen:
        targets = [by_name[hit.container]] if hit.container else list(inputs.signals.containers)
        for c in targets:
            policy = container_policy(spec, c.name)
            if policy is None:
                continue
            resource = RESOURCE_OF_METRIC.get(hit.rule.metric)
            if action is Action.OPTIMIZE_RESOURCES:
                resource, why = inputs.bottleneck or _bottleneck(c)
                evidence.append(why)
                if resource is None:
                    continue
            resources = [resource] if resource else [r.value for r in policy.controlled_resources]
            for r in resources:
                if any(ch.container == c.name and ch.resource == r for ch in changes):
                    continue
                floor = None
                if action is Action.DECREASE_RESOURCES:
                    rec = recommend(c, policy, inputs.node_capacity).get(r)
                    floor = max(rec.target if rec else 0.0, _decrease_floor(inputs, c, r, hit.value))
                changes += _step(c, policy, r, action is not Action.DECREASE_RESOURCES, inputs, floor, evidence)
    return changes


def _finish(action: Action, rule: str, changes: list[Change], evidence: list[str], inputs: PolicyInputs) -> Decision:
    spec, now = inputs.spec, inputs.now
    if action is Action.OPTIMIZE_RESOURCES and not changes and not any("ceiling" in e for e in evidence):
        return Decision(Reason.NOT_A_RESOURCE_BOTTLENECK,
                        "latency is high but no resource explains it: not a resource bottleneck "
                        "(look at queries, caching or downstream services)",
                        action=action, rule=rule, evidence=tuple(evidence))
    conflicting = [ch for ch in changes if ch.resource in inputs.hpa_resources]
    if conflicting:
        evidence.append(f"an HorizontalPodAutoscaler scales this workload on {', '.join(sorted(inputs.hpa_resources))}")
        changes = [ch for ch in changes if ch.resource not in inputs.hpa_resources]
        if not changes:
            return Decision(Reason.HPA_CONFLICT, "an HPA scales this workload on the same resource: "
                            "kubetune reports instead of fighting it", action=action, rule=rule, evidence=tuple(evidence))
    if not changes:
        return Decision(Reason.AT_BOUND, f"{rule} fired but every resource is at its bound",
                        action=action, rule=rule, evidence=tuple(evidence))
    reason = {Action.INCREASE_RESOURCES: Reason.SCALED_UP, Action.DECREASE_RESOURCES: Reason.SCALED_DOWN,
              Action.OPTIMIZE_RESOURCES: Reason.OPTIMIZED}[action]
    summary = ", ".join(ch.describe() for ch in changes if ch.value == "requests")
    rolled_back = [a for a in inputs.past_actions if a.action is action and a.rule == rule and a.verification
                   and a.verification.state is VerificationState.ROLLED_BACK]
    if rolled_back:
        last = rolled_back[0].verification.deadline or rolled_back[0].time
        retry = RetryBackoff().check(now, last, len(rolled_back))
        if not retry.allowed:
            return Decision(Reason.BACKOFF, f"{rule} wants {summary}; {retry.message}", action=action, rule=rule,
                            changes=tuple(changes), evidence=tuple(evidence))
    applied = [a for a in inputs.past_actions if a.applied and a.changes]
    cooldown = parse_duration(spec.scaling.cooldown)
    if applied and now - applied[0].time < cooldown:
        wait = applied[0].time + cooldown - now
        return Decision(Reason.COOLDOWN, f"{rule} wants {summary}; cooling down for {_fmt(wait)} more",
                        action=action, rule=rule, changes=tuple(changes), evidence=tuple(evidence))
    last_hour = [a for a in applied if now - a.time < timedelta(hours=1)]
    if len(last_hour) >= spec.scaling.max_changes_per_hour:
        return Decision(Reason.RATE_LIMITED, f"{rule} wants {summary}; {len(last_hour)} changes in the last "
                        f"hour reached maxChangesPerHour", action=action, rule=rule, changes=tuple(changes),
                        evidence=tuple(evidence))
    auto = spec.mode is Mode.AUTO
    verb = "" if auto else "recommended (mode Recommend): "
    return Decision(reason, f"{verb}{summary}", action=action, rule=rule, changes=tuple(changes),
                    evidence=tuple(evidence), apply=auto)


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
