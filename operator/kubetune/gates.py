"""The gates a policy passes before anything is decided: a chain of pure checks, each returning a
verdict (why this policy stops here, and the conditions that say so) or None (go on). The first
verdict wins, as in cert-manager's issuing controller: the order below is the order a user fixes
things in (a spec that cannot be read says nothing about its target; a missing target says nothing
about its metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from kubetune.api.common import Mode
from kubetune.decisions import WorkloadSignals
from kubetune.promql import pods_regex
from kubetune.reasons import ConditionType, Reason
from kubetune.records import PolicyRecord, WorkloadRecord
from kubetune.tenancy import refused_template
from kubetune.workloads import ContainerResources, PodRecord


@dataclass(frozen=True)
class PolicyFacts:
    """What the loop gathered for one policy: from the indexes first, then from Prometheus."""

    policy: PolicyRecord
    conflict_with: PolicyRecord | None = None
    workload: WorkloadRecord | None = None
    pods: tuple[PodRecord, ...] = ()
    resources: tuple[ContainerResources, ...] = ()  # what the workload runs with now
    prometheus_error: str | None = None
    signals: WorkloadSignals | None = None

    @property
    def running(self) -> list[PodRecord]:
        return [p for p in self.pods if p.phase == "Running"]


@dataclass(frozen=True)
class ConditionUpdate:
    type: ConditionType
    status: bool
    reason: Reason
    message: str


@dataclass(frozen=True)
class Verdict:
    """Why evaluation stops here: the reason for the Event and the conditions to set."""

    reason: Reason
    message: str
    conditions: tuple[ConditionUpdate, ...]
    warning: bool = True


Gate = Callable[[PolicyFacts], Verdict | None]


def _stop(reason: Reason, message: str, *conditions: tuple[ConditionType, bool], warning: bool = True) -> Verdict:
    return Verdict(reason, message, tuple(ConditionUpdate(t, ok, reason, message) for t, ok in conditions), warning)


def invalid_spec(f: PolicyFacts) -> Verdict | None:
    if f.policy.spec is None:
        return _stop(Reason.INVALID_SPEC, f.policy.spec_error or "invalid spec", (ConditionType.READY, False))
    return None


def mode_off(f: PolicyFacts) -> Verdict | None:
    if f.policy.spec.mode is Mode.OFF:
        return _stop(Reason.MODE_OFF, "mode is Off: nothing is evaluated or changed", (ConditionType.READY, True),
                     warning=False)
    return None


def conflict(f: PolicyFacts) -> Verdict | None:
    if f.conflict_with is None:
        return None
    ref = f.policy.spec.target_ref
    return _stop(Reason.CONFLICT, f"PerformancePolicy {f.conflict_with.name} already targets {ref.kind.value} "
                 f"{ref.name}; this policy is ignored until that one is removed", (ConditionType.READY, False))


def unconfined_query(f: PolicyFacts) -> Verdict | None:
    """A metrics template that cannot be confined to the policy's namespace: nothing is queried for the
    policy (its templates run with the operator's Prometheus access, which reaches every namespace)."""
    metrics = f.policy.spec.metrics
    if metrics is None:
        return None
    templates = [(field, query, latency) for field, query, latency in (
        ("spec.metrics.latency.query", metrics.latency.query if metrics.latency else None, True),
        ("spec.metrics.errorRate.query", metrics.error_rate.query if metrics.error_rate else None, False),
        ("spec.metrics.throughput.query", metrics.throughput.query if metrics.throughput else None, False)) if query]
    refusal = refused_template(templates, namespace=f.policy.namespace, workload=f.policy.spec.target_ref.name,
                               pod_regex=pods_regex(p.name for p in f.running))
    if refusal is None:
        return None
    return _stop(Reason.QUERY_NOT_CONFINED, refusal.message, (ConditionType.METRICS_AVAILABLE, False),
                 (ConditionType.READY, False))


def target_missing(f: PolicyFacts) -> Verdict | None:
    if f.workload is not None:
        return None
    t = f.policy.target
    return _stop(Reason.TARGET_NOT_FOUND, f"{t.kind} {t.namespace}/{t.name} not found",
                 (ConditionType.TARGET_FOUND, False), (ConditionType.READY, False))


def prometheus_down(f: PolicyFacts) -> Verdict | None:
    if f.prometheus_error is None:
        return None
    return _stop(Reason.PROMETHEUS_UNAVAILABLE, f"Prometheus is unavailable, no action taken: {f.prometheus_error}",
                 (ConditionType.METRICS_AVAILABLE, False), (ConditionType.READY, False))


def no_data(f: PolicyFacts) -> Verdict | None:
    if f.signals is not None and any(c.usage.get("cpu") is not None for c in f.signals.containers):
        return None
    t = f.policy.target
    return _stop(Reason.NO_DATA, f"no CPU usage series for the {len(f.running)} running pods of {t.kind} {t.name} "
                 "(container_cpu_usage_seconds_total); no action taken",
                 (ConditionType.METRICS_AVAILABLE, False), (ConditionType.READY, False))


# Checked on the indexes alone, before Prometheus is asked anything for the policy.
CLUSTER_GATES: tuple[Gate, ...] = (invalid_spec, mode_off, conflict, unconfined_query, target_missing)
# Checked once the policy's metrics are gathered.
METRIC_GATES: tuple[Gate, ...] = (prometheus_down, no_data)


def first_verdict(gates: Sequence[Gate], facts: PolicyFacts) -> Verdict | None:
    for gate in gates:
        verdict = gate(facts)
        if verdict is not None:
            return verdict
    return None
