"""Status as Kubernetes API conventions want it: metav1.Conditions that keep lastTransitionTime
while their status holds, and a PerformancePolicy status built from one decision. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from kubetune.decisions import Decision, WorkloadSignals
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


def _resources(res: ContainerResources) -> dict[str, Any]:
    def fmt(amounts: Mapping[str, float]) -> dict[str, str]:
        return {r: format_quantity(r, v) for r, v in amounts.items()}

    return {"requests": fmt(res.requests), "limits": fmt(res.limits)}


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def signals_status(signals: WorkloadSignals, now: datetime, *, trend: str | None = None,
                   anomaly: bool | None = None) -> dict[str, Any]:
    cpu = [100 * c.usage["cpu"] / c.requests["cpu"] for c in signals.containers
           if c.usage.get("cpu") is not None and c.requests.get("cpu")]
    memory = [100 * c.usage["memory"] / c.requests["memory"] for c in signals.containers
              if c.usage.get("memory") is not None and c.requests.get("memory")]
    out = {
        "cpuUtilization": _round(max(cpu)) if cpu else None,
        "memoryUtilization": _round(max(memory)) if memory else None,
        **{f"latencyP{p}Ms": _round(v) for p, v in signals.latency_ms.items() if p in (50, 90, 95, 99)},
        "errorRatePercent": _round(signals.error_rate_percent, 2),
        "throughputRps": _round(signals.throughput_rps),
        "trend": trend, "anomaly": anomaly, "sampledAt": _time(now),
    }
    return {k: v for k, v in out.items() if v is not None}


def containers_status(signals: WorkloadSignals, resources: tuple[ContainerResources, ...],
                      recommendations: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_name = {c.name: c for c in signals.containers}
    result = []
    for res in resources:
        entry: dict[str, Any] = {"name": res.name, "current": _resources(res)}
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
        result.append(entry)
    return result


def action_record(decision: Decision, now: datetime, *, applied: bool, verification: Mapping[str, Any] | None = None,
                  message: str | None = None) -> dict[str, Any]:
    record = {
        "time": _time(now), "action": decision.action.value if decision.action else None, "rule": decision.rule or "",
        "applied": applied,
        "changes": [{"container": ch.container, "resource": ch.resource, "value": ch.value,
                     **({"from": format_quantity(ch.resource, ch.old)} if ch.old is not None else {}),
                     "to": format_quantity(ch.resource, ch.new)} for ch in decision.changes][:16],
        "evidence": [e[:512] for e in ((message,) if message else ()) + decision.evidence][:16],
    }
    if verification:
        record["verification"] = dict(verification)
    return record
