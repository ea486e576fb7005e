"""Decisions: plain data in (signals, current resources, policy, past actions, now), a `Decision` out.

No I/O, no clock, no kopf. Every decision carries its rule, its reason (an enum that becomes the
condition and Event reason) and its evidence (the values and windows behind it), so a user can
check it by hand. Table-tested in tests/unit/test_decisions.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Mapping

import numpy as np
import numpy.typing as npt

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

# Samples oldest first: arrays as Prometheus answers and the history cache hold them (compact at
# 10,000 pods), tuples where a test or a template builds one.
Series = tuple[float, ...] | npt.NDArray[np.floating]

# Margins of the recommendation, VPA-like: a high percentile of CPU usage and the memory peak,
# each with 15 % headroom; memory gets 20 % over its limit after an OOM kill.
RECOMMENDATION_MARGIN = 1.15
OOM_BUMP = 1.2
# OptimizeResources: the thresholds at which a resource is taken to explain high latency.
THROTTLING_BOTTLENECK = 0.10  # share of CFS periods throttled
MEMORY_BOTTLENECK = 0.90  # working set / limit
MAJOR_FAULTS_BOTTLENECK = 1.0  # major page faults per second
# A decrease never picks a request at which the observed peak would exceed this share of the lowest
# scale-up threshold, so a step down never sets up the next step up (hysteresis against flapping).
HYSTERESIS = 0.9

RESOURCE_OF_METRIC = {Metric.CPU_UTILIZATION: "cpu", Metric.MEMORY_UTILIZATION: "memory"}
LATENCY_PERCENTILE = {Metric.LATENCY_P50_MS: 50, Metric.LATENCY_P90_MS: 90, Metric.LATENCY_P95_MS: 95,
                      Metric.LATENCY_P99_MS: 99}

# maxChangesPerHour counts the changes applied this far back.
RATE_LIMIT_WINDOW = timedelta(hours=1)


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
    # recent CPU usage (cores, mean over pods, oldest first) for trends, anomalies and the peak
    cpu_series: Series = ()
    # recent memory working set (bytes, mean over pods, oldest first; same steps as cpu_series)
    memory_series: Series = ()
    # the anomaly detector's baseline: the same CPU usage (cores) and working set (bytes), oldest first,
    # at WorkloadSignals.history_step_seconds over up to 8 days (issue 16; empty: judged on the series above)
    cpu_history: Series = ()
    memory_history: Series = ()


@dataclass(frozen=True)
class WorkloadSignals:
    containers: tuple[ContainerSignals, ...]
    latency_ms: Mapping[int, float] = field(default_factory=dict)
    error_rate_percent: float | None = None
    throughput_rps: float | None = None
    # (metric, "min" | "max", window) -> the workload metric over that window, for rules with `for`
    # (keys: `workload_sustained_keys(spec)`); "above X for W" reads the min, "below" the max.
    sustained: Mapping[tuple[Metric, str, str], float] = field(default_factory=dict)
    # recent p95 latency (ms) and error rate (percent), oldest first, for anomaly detection
    latency_series: Series = ()
    error_rate_series: Series = ()
    # recent throughput (requests per second), oldest first, same steps as latency_series
    throughput_series: Series = ()
    # the anomaly detector's baselines, oldest first, at history_step_seconds over up to 8 days (issue 16;
    # empty: the signal is judged on its recent series alone, without seasonality)
    latency_history: Series = ()
    error_rate_history: Series = ()
    throughput_history: Series = ()
    history_step_seconds: float = 300.0


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
    """What to do, why, and on what evidence.

    `recommendation_gap`: one sentence per container resource the chosen rule moves whose
    recommendation is more than one step away in the rule's direction, and what holds it back (the
    step size, cooldown, maxChangesPerHour, backoff), e.g. "app cpu request 600m is 48% below the
    recommendation 1151m; maxChangesPerHour 4 reached". Empty when no such gap exists (no rule moves
    a resource, the recommendation is within one step, or `scaling.jumpToRecommendation` goes
    straight to it). The loop turns it into the Converging condition (FarFromRecommendation /
    NearRecommendation) and an Event.
    """

    reason: Reason
    message: str
    action: Action | None = None
    rule: str | None = None
    changes: tuple[Change, ...] = ()
    evidence: tuple[str, ...] = ()
    apply: bool = False  # the actuator acts only when this is True (Auto, not blocked, changes)
    investigations: tuple[RuleHit, ...] = ()
    unavailable: tuple[str, ...] = ()  # rules that could not be evaluated, and why
    recommendation_gap: tuple[str, ...] = ()


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


def container_sustained_keys(spec: PerformancePolicySpec) -> set[tuple[str, str, str]]:
    """(resource, "min" | "max", window) of every container-level rule with `for`: the keys
    `ContainerSignals.sustained` must hold."""
    return {(RESOURCE_OF_METRIC[r.metric], rule_value_aggregate(r), r.sustained_for) for r in spec.rules
            if r.metric in RESOURCE_OF_METRIC and r.sustained_for}


def workload_sustained_keys(spec: PerformancePolicySpec) -> set[tuple[Metric, str, str]]:
    """(metric, "min" | "max", window) of every workload-level rule (latency, error rate, throughput)
    with `for`: the keys `WorkloadSignals.sustained` must hold."""
    return {(r.metric, rule_value_aggregate(r), r.sustained_for) for r in spec.rules
            if r.metric not in RESOURCE_OF_METRIC and r.sustained_for}


def _span(rule: Rule) -> str:
    window = rule_window(rule)
    return f"{'lowest' if rule.above is not None else 'highest'} over {window}" if window else "now"


def evaluate_rules(spec: PerformancePolicySpec, signals: WorkloadSignals) -> tuple[list[RuleHit], list[str]]:
    """Every rule whose condition holds now, and one line per rule that could not be evaluated.
    A rule with `for` is judged on the value over its window only, never on the instantaneous one."""
    hits, missing = [], []
    for rule in spec.rules:
        window = rule_window(rule)
        resource = RESOURCE_OF_METRIC.get(rule.metric)
        if resource:
            for c in signals.containers:
                if container_policy(spec, c.name) is None:
                    continue
                request = c.requests.get(resource)
                if not request:
                    missing.append(f"{rule.name}: container {c.name} has no {resource} request")
                    continue
                usage = (c.sustained.get((resource, rule_value_aggregate(rule), window)) if window
                         else c.usage.get(resource))
                if usage is None:
                    missing.append(f"{rule.name}: no {resource} usage for container {c.name}")
                    continue
                percent = 100 * usage / request
                if _crossed(rule, percent):
                    hits.append(RuleHit(rule, c.name, percent,
                                        f"{rule.name}: {c.name} {rule.metric.value} {percent:.0f}% ({_span(rule)}) "
                                        f"{_threshold_text(rule)}%"))
            continue
        if window:
            value = signals.sustained.get((rule.metric, rule_value_aggregate(rule), window))
            if value is None:
                missing.append(f"{rule.name}: {rule.metric.value} has no samples covering {window}")
                continue
        else:
            value = workload_metric(rule.metric, signals)
            if value is None:
                missing.append(f"{rule.name}: {rule.metric.value} is not available")
                continue
        if _crossed(rule, value):
            span = f" ({_span(rule)})" if window else ""
            hits.append(RuleHit(rule, None, value,
                                f"{rule.name}: {rule.metric.value} {value:.1f}{span} {_threshold_text(rule)}"))
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


class Hold(str, Enum):
    """Why a step of one resource changed nothing. The decision's reason is chosen from these, never
    from the evidence text."""

    NOT_CONTROLLED = "not in controlledResources"
    NO_REQUEST = "no request to scale from"
    BOUND = "at minAllowed, maxAllowed, the largest node or its limit"
    RECOMMENDATION = "at the recommendation"
    HYSTERESIS = "held by hysteresis"  # lower, the observed peak would come close to firing the increase rule


@dataclass(frozen=True)
class DecreaseFloor:
    """The lowest request a decrease may choose, what sets it, and the sentence saying so."""

    value: float
    hold: Hold
    why: str


@dataclass(frozen=True)
class Step:
    """One resource of one container: the changes, or why there are none."""

    changes: tuple[Change, ...] = ()
    hold: Hold | None = None
    why: str | None = None
    jumped: bool = False  # went straight to the recommendation (scaling.jumpToRecommendation)


def _quantize(resource: str, amount: float, high: float = float("inf")) -> float:
    """The value that will be written (rounded up, as `format_quantity` does), never above `high`."""
    new = float(parse_quantity(format_quantity(resource, amount)))
    if new > high:
        unit = 0.001 if resource == "cpu" else float(2**20)
        new = float(parse_quantity(format_quantity(resource, math.floor(high / unit + 1e-9) * unit)))
    return new


def _step(c: ContainerSignals, policy: ContainerPolicy, resource: str, up: bool, inputs: PolicyInputs,
          evidence: list[str], *, jump_to: float | None = None, floor: DecreaseFloor | None = None) -> Step:
    """One step of one resource of one container, within bounds, with limits following requests.
    `jump_to`: the recommendation target to go to when it is further than one step (in the step's
    direction); `floor`: the lowest request a decrease may choose."""
    if resource not in {r.value for r in policy.controlled_resources}:
        return Step(hold=Hold.NOT_CONTROLLED, why=f"{c.name} {resource} is not in controlledResources")
    current = c.requests.get(resource)
    if not current:
        why = f"{c.name} has no {resource} request to scale from"
        evidence.append(why)
        return Step(hold=Hold.NO_REQUEST, why=why)
    step = inputs.spec.scaling.step_percent / 100
    low, high = _bounds(policy, resource, inputs.node_capacity)
    if up:
        stepped = current * (1 + step)
        jumped = jump_to is not None and jump_to > stepped
        new = _quantize(resource, min(jump_to if jumped else stepped, high), high)  # type: ignore[type-var]
        if new <= current:
            why = f"{c.name} {resource} is already at its ceiling {format_quantity(resource, high)}"
            evidence.append(why)
            return Step(hold=Hold.BOUND, why=why)
    else:
        floor = floor or DecreaseFloor(low, Hold.BOUND, f"{c.name} {resource} is at its minAllowed "
                                                        f"{format_quantity(resource, low)}")
        stepped = current * (1 - step)
        jumped = jump_to is not None and jump_to < stepped
        # Rounded up to what will be written: never below the floor.
        new = _quantize(resource, max(jump_to if jumped else stepped, floor.value))  # type: ignore[type-var]
        if new >= current:
            evidence.append(floor.why)
            return Step(hold=floor.hold, why=floor.why)
        if floor.value > stepped and floor.hold is Hold.HYSTERESIS:
            evidence.append(floor.why)  # a shorter step than asked: say why
    changes = [Change(c.name, resource, "requests", current, new)]
    limit = c.limits.get(resource)
    if limit and policy.controlled_values is ControlledValues.REQUESTS_AND_LIMITS:
        new_limit = float(parse_quantity(format_quantity(resource, limit * new / current)))
        changes.append(Change(c.name, resource, "limits", limit, new_limit))
    elif limit and new > limit:
        # RequestsOnly must not produce a request above the limit the API server would refuse.
        why = f"{c.name} {resource} request held at its limit {format_quantity(resource, limit)}"
        evidence.append(why)
        if limit <= current:
            return Step(hold=Hold.BOUND, why=why)
        changes = [Change(c.name, resource, "requests", current, limit)]
    return Step(tuple(changes), jumped=jumped)


def observed_peak(c: ContainerSignals, resource: str) -> tuple[float, str] | None:
    """The highest usage of `resource` the signals know of, and where it was seen: the peak over the
    recommendation window, any sustained maximum, the recent series."""
    seen = []
    if (peak := c.history.get(f"{resource}_peak")) is not None:
        seen.append((peak, "peak over the recommendation window"))
    seen += [(v, f"highest over {window}") for (r, agg, window), v in c.sustained.items() if r == resource and agg == "max"]
    series = c.cpu_series if resource == "cpu" else c.memory_series if resource == "memory" else ()
    if len(series):
        seen.append((float(max(series)), "highest of the recent series"))
    return max(seen, key=lambda s: s[0], default=None)


def _hysteresis_floor(spec: PerformancePolicySpec, c: ContainerSignals, resource: str) -> DecreaseFloor | None:
    """The lowest request at which the observed peak stays under HYSTERESIS x the lowest increase
    threshold on this resource: a decrease below it would set up the next increase (flapping)."""
    ups = [r for r in spec.rules if RESOURCE_OF_METRIC.get(r.metric) == resource
           and r.action is Action.INCREASE_RESOURCES and r.above]
    peak = observed_peak(c, resource)
    if not ups or peak is None:
        return None
    up = min(ups, key=lambda r: r.above)  # type: ignore[arg-type,return-value]
    share = HYSTERESIS * up.above / 100  # type: ignore[operator]
    value = peak[0] / share
    fmt = lambda v: format_quantity(resource, v)  # noqa: E731
    return DecreaseFloor(value, Hold.HYSTERESIS,
                         f"{c.name} {resource} not lowered below {fmt(value)} (hysteresis): its peak {fmt(peak[0])} "
                         f"({peak[1]}) would run above {share:.0%} of a lower request, within {1 - HYSTERESIS:.0%} "
                         f"of {up.name} (above {up.above:g}%)")


def _decrease_floor(inputs: PolicyInputs, c: ContainerSignals, policy: ContainerPolicy, resource: str,
                    rec: ResourceRecommendation | None) -> DecreaseFloor:
    """The highest of minAllowed, the recommendation target and the hysteresis floor (ties: the bound
    first, then the recommendation, so the reason names the plainest cause)."""
    low, _ = _bounds(policy, resource, inputs.node_capacity)
    floors = [DecreaseFloor(low, Hold.BOUND, f"{c.name} {resource} is at its minAllowed {format_quantity(resource, low)}")]
    if rec:
        floors.append(DecreaseFloor(rec.target, Hold.RECOMMENDATION, f"{c.name} {resource} is at its recommendation "
                                                                     f"{format_quantity(resource, rec.target)}"))
    hysteresis = _hysteresis_floor(inputs.spec, c, resource)
    if hysteresis:
        floors.append(hysteresis)
    return max(floors, key=lambda f: f.value)


def _gap(c: ContainerSignals, resource: str, up: bool, inputs: PolicyInputs,
         rec: ResourceRecommendation | None, floor: DecreaseFloor | None) -> str | None:
    """A sentence when the recommendation (for a decrease: where decreases stop) is more than one
    step away in the step's direction; None otherwise."""
    current = c.requests.get(resource)
    if rec is None or not current:
        return None
    step = inputs.spec.scaling.step_percent / 100
    fmt = lambda v: format_quantity(resource, v)  # noqa: E731
    if up:
        goal, goal_text = rec.target, f"the recommendation {fmt(rec.target)}"
        if goal <= current * (1 + step):
            return None
    else:
        goal = floor.value if floor else rec.target
        goal_text = (f"the recommendation {fmt(goal)}" if not floor or floor.hold is Hold.RECOMMENDATION
                     else f"its lowest allowed request {fmt(goal)} ({floor.hold.value}; recommendation {fmt(rec.target)})")
        if goal >= current * (1 - step):
            return None
    return (f"{c.name} {resource} request {fmt(current)} is {abs(goal - current) / goal:.0%} "
            f"{'below' if up else 'above'} {goal_text}")


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


@dataclass
class _Plan:
    """What the chosen rules would change, and structurally why the rest cannot change."""

    changes: list[Change] = field(default_factory=list)
    holds: list[tuple[Hold, str]] = field(default_factory=list)  # (why nothing changed, the sentence)
    gaps: list[tuple[str, str]] = field(default_factory=list)  # (resource, recommendation-gap sentence)
    explained: bool = False  # OptimizeResources: some resource explains the latency


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
    plan = _plan(action, chosen, inputs, evidence)
    rule = chosen[0].rule.name
    return replace(_finish(action, rule, plan, evidence, inputs), investigations=investigations,
                   unavailable=tuple(missing))


def _plan(action: Action, chosen: list[RuleHit], inputs: PolicyInputs, evidence: list[str]) -> _Plan:
    spec, plan, seen = inputs.spec, _Plan(), set()
    up = action is not Action.DECREASE_RESOURCES
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
                if resource is None and inputs.bottleneck is not None:
                    # Correlation sees co-movement only: a steadily saturated resource (throttled in
                    # every period, flat) does not move with latency, but the thresholds still see it.
                    steady, steady_why = _bottleneck(c)
                    if steady is not None:
                        resource, why = steady, f"{why}; but {steady_why} throughout (steady saturation)"
                evidence.append(why)
                if resource is None:
                    continue
                plan.explained = True
            recommendations = recommend(c, policy, inputs.node_capacity)
            for r in [resource] if resource else [r.value for r in policy.controlled_resources]:
                if (c.name, r) in seen:
                    continue
                seen.add((c.name, r))
                rec = recommendations.get(r)
                floor = None if up else _decrease_floor(inputs, c, policy, r, rec)
                jump_to = rec.target if rec and spec.scaling.jump_to_recommendation else None
                step = _step(c, policy, r, up, inputs, evidence, jump_to=jump_to, floor=floor)
                plan.changes += step.changes
                if step.hold:
                    plan.holds.append((step.hold, step.why or step.hold.value))
                elif not step.jumped and (gap := _gap(c, r, up, inputs, rec, floor)):
                    plan.gaps.append((r, gap))
    return plan


def _finish(action: Action, rule: str, plan: _Plan, evidence: list[str], inputs: PolicyInputs) -> Decision:
    spec, now, changes = inputs.spec, inputs.now, plan.changes
    if action is Action.OPTIMIZE_RESOURCES and not plan.explained:
        return Decision(Reason.NOT_A_RESOURCE_BOTTLENECK,
                        "latency is high but no resource explains it: not a resource bottleneck "
                        "(look at queries, caching or downstream services)",
                        action=action, rule=rule, evidence=tuple(evidence))
    gaps = [g for r, g in plan.gaps if r not in inputs.hpa_resources]
    conflicting = [ch for ch in changes if ch.resource in inputs.hpa_resources]
    if conflicting:
        evidence.append(f"an HorizontalPodAutoscaler scales this workload on {', '.join(sorted(inputs.hpa_resources))}")
        changes = [ch for ch in changes if ch.resource not in inputs.hpa_resources]
        if not changes:
            return Decision(Reason.HPA_CONFLICT, "an HPA scales this workload on the same resource: "
                            "kubetune reports instead of fighting it", action=action, rule=rule, evidence=tuple(evidence))
    if not changes:
        holds = [h for h, _ in plan.holds]
        if holds and all(h is Hold.HYSTERESIS for h in holds):
            return Decision(Reason.HELD_BY_HYSTERESIS, f"{rule} fired but the decrease is held by hysteresis: "
                            + "; ".join(why for _, why in plan.holds), action=action, rule=rule, evidence=tuple(evidence))
        what = ", ".join(dict.fromkeys(h.value for h in holds)) or "nothing to change"
        return Decision(Reason.AT_BOUND, f"{rule} fired but every resource is at its bound ({what})",
                        action=action, rule=rule, evidence=tuple(evidence))
    reason = {Action.INCREASE_RESOURCES: Reason.SCALED_UP, Action.DECREASE_RESOURCES: Reason.SCALED_DOWN,
              Action.OPTIMIZE_RESOURCES: Reason.OPTIMIZED}[action]
    summary = ", ".join(ch.describe() for ch in changes if ch.value == "requests")
    held = dict(action=action, rule=rule, changes=tuple(changes), evidence=tuple(evidence))

    def gap(held_back_by: str) -> tuple[str, ...]:
        return tuple(f"{g}; {held_back_by}" for g in gaps)

    rolled_back = [a for a in inputs.past_actions if a.action is action and a.rule == rule and a.verification
                   and a.verification.state is VerificationState.ROLLED_BACK]
    if rolled_back:
        last = rolled_back[0].verification.deadline or rolled_back[0].time
        retry = RetryBackoff().check(now, last, len(rolled_back))
        if not retry.allowed:
            return Decision(Reason.BACKOFF, f"{rule} wants {summary}; {retry.message}",
                            recommendation_gap=gap("backing off after a rollback"), **held)
    applied = [a for a in inputs.past_actions if a.applied and a.changes]
    cooldown = parse_duration(spec.scaling.cooldown)
    if applied and now - applied[0].time < cooldown:
        until = applied[0].time + cooldown
        # An absolute time, not "for 4m59s more": the message stays the same from cycle to cycle, so
        # the status is not rewritten every evaluation of a cooling-down policy.
        return Decision(Reason.COOLDOWN, f"{rule} wants {summary}; cooling down until {until:%Y-%m-%dT%H:%M:%SZ} "
                        f"(cooldown {spec.scaling.cooldown})",
                        recommendation_gap=gap(f"cooldown {spec.scaling.cooldown}"), **held)
    last_hour = [a for a in applied if now - a.time < RATE_LIMIT_WINDOW]
    if len(last_hour) >= spec.scaling.max_changes_per_hour:
        return Decision(Reason.RATE_LIMITED, f"{rule} wants {summary}; {len(last_hour)} changes in the last "
                        f"hour reached maxChangesPerHour",
                        recommendation_gap=gap(f"maxChangesPerHour {spec.scaling.max_changes_per_hour} reached"), **held)
    auto = spec.mode is Mode.AUTO
    verb = "" if auto else "recommended (mode Recommend): "
    return Decision(reason, f"{verb}{summary}", apply=auto,
                    recommendation_gap=gap(f"one step is at most stepPercent {spec.scaling.step_percent}%"), **held)
