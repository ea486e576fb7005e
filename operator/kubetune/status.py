"""Status as Kubernetes API conventions want it: metav1.Conditions that keep lastTransitionTime
while their status holds, and a PerformancePolicy status built, as the typed models that generate the
CRD, from one evaluation. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from kubetune.api.performancepolicy import (
    ActionRecord,
    Condition,
    ContainerStatus,
    PerformancePolicyStatus,
    Signals,
    VerificationResult,
    VerificationState,
)
from kubetune.decisions import RATE_LIMIT_WINDOW, Decision, ResourceRecommendation, WorkloadSignals
from kubetune.reasons import ConditionType, Reason
from kubetune.workloads import ContainerResources, format_quantity


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: Iterable[Mapping[str, Any]], type_: str, status: bool | str, reason: str,
                  message: str, *, generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """`conditions` with `type_` set; lastTransitionTime moves only when the status changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    result, found = [], False
    for c in conditions:
        if c.get("type") != type_:
            result.append(dict(c))
            continue
        found = True
        moved = c.get("status") != value
        result.append({"type": type_, "status": value, "reason": reason, "message": message[:32768],
                       "lastTransitionTime": _time(now) if moved else c.get("lastTransitionTime", _time(now)),
                       "observedGeneration": generation})
    if not found:
        result.append({"type": type_, "status": value, "reason": reason, "message": message[:32768],
                       "lastTransitionTime": _time(now), "observedGeneration": generation})
    return result


def with_conditions(conditions: Iterable[Condition], updates: Iterable[tuple[ConditionType, bool, Reason, str]],
                    *, generation: int | None, now: datetime) -> tuple[Condition, ...]:
    """Typed conditions with the updates applied (the last update of a type wins). Conditions that
    would not change are not rebuilt: most evaluations change none, and validation is the cost."""
    conditions = tuple(conditions)
    current = {c.type: c for c in conditions}
    last = {u[0]: u for u in updates}
    changed = [(t, ok, reason, message) for t, ok, reason, message in last.values()
               if not _unchanged(current.get(t.value), ok, reason, message, generation)]
    if not changed:
        return conditions
    result: list[Mapping[str, Any]] = [c.to_dict() for c in conditions]
    for type_, ok, reason, message in changed:
        result = set_condition(result, type_.value, ok, reason.value, message, generation=generation, now=now)
    return tuple(Condition.model_validate(c) for c in result)


def _unchanged(old: Condition | None, ok: bool, reason: Reason, message: str, generation: int | None) -> bool:
    return (old is not None and old.status.value == ("True" if ok else "False") and old.reason == reason.value
            and old.message == message[:32768] and old.observed_generation == generation)


def condition(status: PerformancePolicyStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_.value), None)


def condition_is_true(status: PerformancePolicyStatus, type_: ConditionType) -> bool:
    c = condition(status, type_)
    return c is not None and c.status.value == "True"


def _quantities(amounts: Mapping[str, float]) -> dict[str, str]:
    return {r: format_quantity(r, v) for r, v in amounts.items()}


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def signals_status(signals: WorkloadSignals, now: datetime, *, trend: str | None = None,
                   anomaly: bool | None = None, high_load: bool | None = None) -> Signals:
    cpu = [100 * c.usage["cpu"] / c.requests["cpu"] for c in signals.containers
           if c.usage.get("cpu") is not None and c.requests.get("cpu")]
    memory = [100 * c.usage["memory"] / c.requests["memory"] for c in signals.containers
              if c.usage.get("memory") is not None and c.requests.get("memory")]
    return Signals.model_validate({
        "cpuUtilization": _round(max(cpu)) if cpu else None,
        "memoryUtilization": _round(max(memory)) if memory else None,
        **{f"latencyP{p}Ms": _round(v) for p, v in signals.latency_ms.items() if p in (50, 90, 95, 99)},
        "errorRatePercent": _round(signals.error_rate_percent, 2),
        "throughputRps": _round(signals.throughput_rps),
        "trend": trend, "anomaly": anomaly, "highLoad": high_load, "sampledAt": now,
    })


def containers_status(signals: WorkloadSignals | None, resources: tuple[ContainerResources, ...],
                      recommendations: Mapping[str, Mapping[str, ResourceRecommendation]]) -> tuple[ContainerStatus, ...]:
    by_name = {c.name: c for c in signals.containers} if signals else {}
    result = []
    for res in resources:
        entry: dict[str, Any] = {"name": res.name, "current": {"requests": _quantities(res.requests),
                                                               "limits": _quantities(res.limits)}}
        c = by_name.get(res.name)
        if c:
            utilization = {r: round(100 * c.usage[r] / res.requests[r], 1)
                           for r in ("cpu", "memory") if c.usage.get(r) is not None and res.requests.get(r)}
            if utilization:
                entry["utilization"] = utilization
        rec = recommendations.get(res.name)
        if rec:
            entry["recommendation"] = {
                "target": {r: format_quantity(r, v.target) for r, v in rec.items()},
                "lowerBound": {r: format_quantity(r, v.lower) for r, v in rec.items()},
                "upperBound": {r: format_quantity(r, v.upper) for r, v in rec.items()},
            }
        result.append(ContainerStatus.model_validate(entry))
    return tuple(result)


def action_record(decision: Decision, now: datetime, *, applied: bool,
                  verification: VerificationResult | None = None) -> ActionRecord:
    return ActionRecord.model_validate({
        "time": now, "action": decision.action.value, "rule": decision.rule or "", "applied": applied,
        "changes": [{"container": ch.container, "resource": ch.resource, "value": ch.value,
                     **({"from": format_quantity(ch.resource, ch.old)} if ch.old is not None else {}),
                     "to": format_quantity(ch.resource, ch.new)} for ch in decision.changes][:16],
        "evidence": [e[:512] for e in decision.evidence][:16],
        **({"verification": verification} if verification else {}),
    })


def verifying(record: ActionRecord | None) -> bool:
    """An applied action whose verification is still running: it stays lastAction until verified."""
    return bool(record and record.applied and record.verification
                and record.verification.state is VerificationState.PENDING)


# Decisions held back by time: they are not new actions, the status says so in the Ready condition.
NOT_RECORDED = frozenset({Reason.COOLDOWN, Reason.RATE_LIMITED, Reason.BACKOFF})
COMPARED = ("action", "rule", "changes", "applied")


def record_decision(status: PerformancePolicyStatus, decision: Decision, now: datetime, *,
                    history_limit: int) -> PerformancePolicyStatus:
    """The status with the decision recorded as lastAction (the previous one moved to history).

    Not recorded: a decision without an action, one held back by cooldown, rate limit or backoff,
    a recommendation identical to the last one (no repeat every cycle) — and any recommendation while
    an applied change is still being verified: that change stays lastAction, so its verification and
    rollback happen."""
    if decision.action is None or decision.reason in NOT_RECORDED:
        return status
    last = status.last_action
    if not decision.apply and verifying(last):
        return status
    record = action_record(decision, now, applied=decision.apply, verification=None if decision.apply else
                           VerificationResult(state=VerificationState.SKIPPED, message="not applied"))
    if last and not decision.apply and {k: getattr(last, k) for k in COMPARED} == {k: getattr(record, k) for k in COMPARED}:
        return status
    history = ((last,) if last else ()) + tuple(status.history)
    # Every change applied within the last hour stays, whatever the limit: maxChangesPerHour (up to 60) is
    # counted from them, and with only the newest `history_limit` (10 by default) kept, a limit above it
    # was never reached and recorded recommendations pushed real changes out (found by the soak).
    kept = tuple(r for i, r in enumerate(history)
                 if i < history_limit or (r.applied and r.changes and now - r.time < RATE_LIMIT_WINDOW))
    return status.model_copy(update={"last_action": record, "history": kept})
