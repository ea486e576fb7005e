"""Explain: what one evaluation found and did, as the policy's status (conditions, signals, containers)
and Events. The report is built up stage by stage and written once, at the end, by the `Publisher`,
which writes a status only when more than the live figures changed and posts the policy's Event only
when its reason changes.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from kubetune.api.performancepolicy import ActionRecord, Metric, PerformancePolicyStatus
from kubetune.decisions import LATENCY_PERCENTILE, Decision, container_policy, recommend
from kubetune.gates import ConditionUpdate, PolicyFacts, Verdict
from kubetune.kube import Kube
from kubetune.predictions import Insights
from kubetune.reasons import ACTIONS, ROUTINE, ConditionType, Reason
from kubetune.records import PolicyRecord, workload_involved
from kubetune.status import condition, condition_is_true, containers_status, signals_status, with_conditions

# Live figures (signals, utilisation) are written at most this often when nothing else changed.
STATUS_REFRESH = 60.0
# A reason that is not an action is announced by an Event at most this often per policy: data that comes
# and goes flips a policy NoData -> NoRuleFired -> NoData..., and an Event per flip was 735 Events a
# cycle at 1,000 policies in the benchmark. As client-go's EventCorrelator, repeats are dropped; the
# conditions still say the reason of every evaluation.
EVENT_REPEAT = timedelta(minutes=10)
# Where a rule's metric comes from, for telling "not configured" apart from "no data".
CONFIGURED = {
    Metric.ERROR_RATE_PERCENT: lambda m: bool(m and m.error_rate),
    Metric.THROUGHPUT_RPS: lambda m: bool(m and m.throughput),
}


@dataclass(frozen=True)
class Event:
    reason: Reason
    message: str
    warning: bool = False
    on_workload: bool = False  # else on the policy


@dataclass
class Report:
    """What one evaluation found and did, built up stage by stage, written once at the end."""

    status: PerformancePolicyStatus
    reason: Reason = Reason.NO_RULE_FIRED
    message: str = ""
    warning: bool = False
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    high_load: bool = False  # an IncreaseResources rule holds (status.signals.highLoad)

    def set(self, type_: ConditionType, ok: bool, reason: Reason, message: str) -> None:
        self.conditions.append(ConditionUpdate(type_, ok, reason, message))

    def sets(self, type_: ConditionType) -> bool:
        return any(c.type is type_ for c in self.conditions)

    def replace_last_action(self, record: ActionRecord) -> None:
        self.status = self.status.model_copy(update={"last_action": record})


def unconfigured_rules(policy: PolicyRecord) -> set[str]:
    """Rules on application metrics the policy does not configure: skipped by design, not missing data."""
    metrics = policy.spec.metrics
    latency = metrics.latency if metrics else None
    out = set()
    for rule in policy.spec.rules:
        if rule.metric in LATENCY_PERCENTILE:
            if latency is None or LATENCY_PERCENTILE[rule.metric] not in latency.percentiles:
                out.add(rule.name)
        elif rule.metric in CONFIGURED and not CONFIGURED[rule.metric](metrics):
            out.add(rule.name)
    return out


def explain_verdict(report: Report, facts: PolicyFacts, verdict: Verdict) -> Report:
    """The report of a policy stopped by a gate."""
    report.reason, report.message, report.warning = verdict.reason, verdict.message, verdict.warning
    report.conditions.extend(verdict.conditions)
    if facts.workload is not None:
        report.set(ConditionType.TARGET_FOUND, True, Reason.FOUND, f"{facts.policy.target.kind} {facts.policy.target.name}")
        report.status = report.status.model_copy(update={"containers": containers_status(
            facts.signals, facts.resources, {})})
    return report


def explain_decision(facts: PolicyFacts, decision: Decision, insights: Insights, report: Report,
                     node_capacity: Mapping[str, float], now: datetime) -> None:
    """Conditions, live figures and Events for a decision. Pure apart from reading the report."""
    policy, spec, signals = facts.policy, facts.policy.spec, facts.signals
    previous = policy.status
    report.reason, report.message = decision.reason, decision.message
    report.warning = decision.reason not in ROUTINE
    report.set(ConditionType.TARGET_FOUND, True, Reason.FOUND, f"{policy.target.kind} {policy.target.name}")
    skipped = unconfigured_rules(policy)
    missing = [line for line in decision.unavailable if line.split(":", 1)[0] not in skipped]
    if missing:
        report.set(ConditionType.METRICS_AVAILABLE, False, Reason.RULES_UNEVALUABLE, "; ".join(missing))
    else:
        note = f" (rules {', '.join(sorted(skipped))} skipped: their metrics are not configured)" if skipped else ""
        report.set(ConditionType.METRICS_AVAILABLE, True, Reason.AVAILABLE,
                   "every signal the rules use is available" + note)
    report.set(ConditionType.READY, True, Reason.EVALUATED, f"{decision.reason.value}: {decision.message}")
    if not report.sets(ConditionType.DEGRADED) and not condition_is_true(previous, ConditionType.DEGRADED):
        report.set(ConditionType.DEGRADED, False, Reason.AS_EXPECTED, "the last action succeeded or none was needed")
    anomalies = "; ".join(insights.anomalies)
    if anomalies and not condition_is_true(previous, ConditionType.ANOMALY_DETECTED):
        report.events.append(Event(Reason.ANOMALOUS, anomalies, warning=True))
    report.set(ConditionType.ANOMALY_DETECTED, bool(anomalies), Reason.ANOMALOUS if anomalies else Reason.NO_ANOMALY,
               anomalies or "every signal is within its usual range")
    _investigations(decision, insights, report, previous)
    gap = "; ".join(decision.recommendation_gap)
    if gap and not condition_is_true(previous, ConditionType.CONVERGING):
        report.events.append(Event(Reason.FAR_FROM_RECOMMENDATION, gap, warning=True))
    report.set(ConditionType.CONVERGING, bool(gap),
               Reason.FAR_FROM_RECOMMENDATION if gap else Reason.NEAR_RECOMMENDATION,
               gap or "within one step of the recommendation")
    recommendations = {c.name: recommend(c, container_policy(spec, c.name), node_capacity)
                       for c in signals.containers}
    report.status = report.status.model_copy(update={
        "signals": signals_status(signals, now, trend=insights.trend, anomaly=bool(anomalies),
                                  high_load=report.high_load),
        "containers": containers_status(signals, facts.resources, recommendations)})

def _investigations(decision: Decision, insights: Insights, report: Report, previous: PerformancePolicyStatus) -> None:
    """Investigate rules that hold (whatever else acted), with the evidence that goes with them:
    the hits, what kubetune changed last, which signals are anomalous."""
    if not decision.investigations:
        report.set(ConditionType.INVESTIGATING, False, Reason.NOTHING_TO_INVESTIGATE, "no Investigate rule holds")
        return
    lines = [h.evidence for h in decision.investigations]
    last = report.status.last_action
    if last and last.applied:
        changes = ", ".join(f"{c.container} {c.resource.value} {c.from_}->{c.to}" for c in last.changes) or "nothing"
        lines.append(f"last change: {last.action.value} at {last.time:%Y-%m-%dT%H:%M:%SZ} ({changes})")
    else:
        lines.append("kubetune changed nothing recently")
    lines += [f"anomalous: {a}" for a in insights.anomalies]
    message = "; ".join(lines)
    old = condition(previous, ConditionType.INVESTIGATING)
    rules = sorted(h.rule.name for h in decision.investigations)
    if old is None or old.status.value != "True" or not all(r in old.message for r in rules):
        report.events.append(Event(Reason.INVESTIGATE, message, warning=True))
    report.set(ConditionType.INVESTIGATING, True, Reason.INVESTIGATE, message)


def announced_reason(status: PerformancePolicyStatus) -> str | None:
    """The reason the policy's Ready condition already carries (a decision's reason leads its message),
    so a restarted operator or a new leader does not post every policy's Event again."""
    ready = condition(status, ConditionType.READY)
    if ready is None:
        return None
    return ready.message.split(":", 1)[0] if ready.reason == Reason.EVALUATED.value else ready.reason


def last_action_time(status: PerformancePolicyStatus) -> str | None:
    """The time of the lastAction a status read from the API holds, as written: what a write was decided on."""
    return status.last_action.to_dict()["time"] if status.last_action else None


class Publisher:
    """Writes a report: the status when it changed, the Events it carries."""

    def __init__(self, kube: Kube, clock: Callable[[], datetime]):
        self.kube, self.clock = kube, clock
        self.last_reason: dict[tuple[str, str], Reason] = {}
        self.announced: dict[tuple[tuple[str, str], Reason], datetime] = {}  # (policy, reason) -> last Event
        self.last_status: dict[tuple[str, str], tuple[str, float]] = {}

    async def publish(self, policy: PolicyRecord, report: Report) -> None:
        now = self.clock()
        status = report.status.model_copy(update={
            "observed_generation": policy.generation,
            "conditions": with_conditions(report.status.conditions,
                                          [(c.type, c.status, c.reason, c.message) for c in report.conditions],
                                          generation=policy.generation, now=now)})
        payload = status.to_dict()
        stable = self._status_changed(policy.key, payload)
        if stable is not None:
            await asyncio.to_thread(self.kube.patch_policy_status, policy.namespace, policy.name, payload,
                                    last_action_time(policy.status))
            # Only a write that landed counts: marked before, a write the API refused (a restarting API
            # server, etcd down) kept the status from being written again for STATUS_REFRESH.
            self.last_status[policy.key] = (stable, time.monotonic())
        events = list(report.events)
        if self.last_reason.get(policy.key, announced_reason(policy.status)) != report.reason:
            self.last_reason[policy.key] = report.reason
            if self._worth_an_event(policy.key, report.reason, now):
                events.insert(0, Event(report.reason, report.message, report.warning))
        for e in events:
            involved = workload_involved(policy.target) if e.on_workload else policy.involved()
            await asyncio.to_thread(self.kube.event, involved, "Warning" if e.warning else "Normal",
                                    e.reason.value, e.message)

    def _worth_an_event(self, key: tuple[str, str], reason: Reason, now: datetime) -> bool:
        """Whether a change to `reason` gets an Event: always for an action, else once per EVENT_REPEAT."""
        last = self.announced.get((key, reason))
        if reason not in ACTIONS and last is not None and now - last < EVENT_REPEAT:
            return False
        self.announced[(key, reason)] = now
        return True

    def _status_changed(self, key: tuple[str, str], payload: Mapping[str, Any]) -> str | None:
        """The status without its live figures when a write is worth its API call (anything but the live
        figures — signals but highLoad, utilisation — changed, or the figures are older than STATUS_REFRESH),
        else None. At 1,000 policies, writing every evaluation cost 1,000 patches (and as many watch
        events) per cycle."""
        # highLoad is not a live figure: the node planner raises process priority on it.
        stable = json.dumps({**payload, "signals": (payload.get("signals") or {}).get("highLoad"), "containers": [
            {k: v for k, v in c.items() if k != "utilization"} for c in payload.get("containers") or []]},
            sort_keys=True, default=str)
        last = self.last_status.get(key)
        if last and last[0] == stable and time.monotonic() - last[1] < STATUS_REFRESH:
            return None
        return stable
