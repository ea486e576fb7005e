"""The evaluation loop, the hot path. Every tick it takes the policies whose interval has elapsed, asks
Prometheus one batched query per metric family, and runs each policy through

    gather (gather.py) -> gates (gates.py) -> upkeep and decide (decisions.py) -> act (actuator.py)
    -> report (status.py)

Only the actuator changes workloads; the gates, the decision and the status are pure. Before a change
is made its intent is written to the policy's status (lastAction), so an operator killed between the
write and the change finds the intent on restart and finishes it instead of deciding again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from kubetune.actuator import Actuator, Applied, infeasible_pods, outstanding_changes, recorded_changes
from kubetune.api.common import Mode, parse_duration
from kubetune.api.performancepolicy import (
    Action,
    ActionRecord,
    Metric,
    PerformancePolicyStatus,
    ScalingMethod,
    VerificationResult,
    VerificationState,
)
from kubetune.decisions import (
    LATENCY_PERCENTILE,
    Change,
    Decision,
    PolicyInputs,
    container_policy,
    container_sustained_keys,
    decide,
    evaluate_rules,
    recommend,
)
from kubetune.gates import CLUSTER_GATES, METRIC_GATES, ConditionUpdate, PolicyFacts, Verdict, first_verdict
from kubetune.gather import ANALYSIS_WINDOW, PolicyMetrics, cluster_facts
from kubetune.kube import Kube, KubeError
from kubetune.loops import run_every
from kubetune.metrics import OperatorMetrics
from kubetune.predictions import Insights, analyse
from kubetune.prometheus import Prometheus, PrometheusUnavailable, Samples
from kubetune.promql import QueryPlan, cycle_queries
from kubetune.reasons import ROUTINE, ConditionType, Reason
from kubetune.records import ClusterView, PolicyRecord, conflicting, workload_involved
from kubetune.settings import OperatorSettings
from kubetune.status import (
    condition,
    condition_is_true,
    containers_status,
    record_decision,
    signals_status,
    verifying,
    with_conditions,
)
from kubetune.verification import Tolerance, verify_action
from kubetune.workloads import ContainerResources

log = logging.getLogger(__name__)

# Live figures (signals, utilisation) are written at most this often when nothing else changed.
STATUS_REFRESH = 60.0
HISTORY_QUERIES = ("cpu_p50", "cpu_p90", "cpu_peak", "memory_peak", "oom_kills")
# Where a rule's metric comes from, for telling "not configured" apart from "no data".
CONFIGURED = {
    Metric.ERROR_RATE_PERCENT: lambda m: bool(m and m.error_rate),
    Metric.THROUGHPUT_RPS: lambda m: bool(m and m.throughput),
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def due_policies(policies: Iterable[PolicyRecord], last_run: Mapping[tuple[str, str], float], clock: float) -> list[PolicyRecord]:
    due = []
    for p in policies:
        if p.spec is None or p.spec.mode is Mode.OFF:
            due.append(p)  # still reported: an invalid or switched-off policy says so in status
            continue
        if clock - last_run.get(p.key, float("-inf")) >= parse_duration(p.spec.interval).total_seconds():
            due.append(p)
    return due


def query_plan(policies: Iterable[PolicyRecord], with_history: bool) -> QueryPlan:
    namespaces, held, histograms = set(), set(), set()
    series = False
    for p in policies:
        if not p.spec or p.spec.mode is Mode.OFF:
            continue
        namespaces.add(p.namespace)
        series = series or p.spec.prediction.enabled or p.spec.anomaly_detection.enabled
        held |= container_sustained_keys(p.spec)
        latency = p.spec.metrics.latency if p.spec.metrics else None
        if latency and latency.histogram:
            histograms.add(latency.histogram)
    return QueryPlan(frozenset(namespaces), frozenset(held), frozenset(histograms), with_history,
                     series_window=ANALYSIS_WINDOW if series else None)


@dataclass
class Batch:
    """The cycle's batched Prometheus answer, or why there is none."""

    results: Mapping[str, Samples] | None
    error: str | None = None


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

    def set(self, type_: ConditionType, ok: bool, reason: Reason, message: str) -> None:
        self.conditions.append(ConditionUpdate(type_, ok, reason, message))

    def sets(self, type_: ConditionType) -> bool:
        return any(c.type is type_ for c in self.conditions)

    def replace_last_action(self, record: ActionRecord) -> None:
        self.status = self.status.model_copy(update={"last_action": record})


def _verification(record: ActionRecord, state: VerificationState, message: str) -> ActionRecord:
    old = record.verification
    return record.model_copy(update={"verification": VerificationResult(
        state=state, message=message[:1024], deadline=old.deadline if old else None)})


def _resources_before(record: ActionRecord, resources: tuple[ContainerResources, ...]) -> tuple[ContainerResources, ...]:
    """The resources as they were before `record` (its `from` values put back)."""
    before = {c.name: (dict(c.requests), dict(c.limits)) for c in resources}
    for ch in recorded_changes(record):
        if ch.old is not None and ch.container in before:
            before[ch.container][0 if ch.value == "requests" else 1][ch.resource] = ch.old
    return tuple(ContainerResources(name, req, lim) for name, (req, lim) in before.items())


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


class Evaluator:
    def __init__(self, settings: OperatorSettings, prometheus: Prometheus, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings, self.prometheus, self.kube, self.metrics, self.clock = settings, prometheus, kube, metrics, clock
        self.actuator = Actuator(kube)
        self.gather = PolicyMetrics(prometheus, settings)
        self.last_run: dict[tuple[str, str], float] = {}
        self.last_reason: dict[tuple[str, str], Reason] = {}
        self.last_status: dict[tuple[str, str], tuple[str, float]] = {}
        self.last_history_fetch = float("-inf")
        self.history_cache: dict[str, Samples] = {}
        self.active: Callable[[], bool] = lambda: True

    async def run_forever(self, view: Callable[[], ClusterView], ready: asyncio.Event | None = None,
                          active: Callable[[], bool] = lambda: True) -> None:
        self.active = active
        await run_every(self.settings.tick, lambda: self.cycle(view()), name="evaluation", ready=ready,
                        on_failure=self.metrics.cycle_failures.inc, active=active)

    async def cycle(self, view: ClusterView) -> None:
        clock = time.monotonic()
        policies = list(view.policies)
        due = due_policies(policies, self.last_run, clock)
        if not due:
            return
        start = time.perf_counter()
        batch = await self._fetch(due, clock)
        conflicts = conflicting(policies)
        for policy in due:
            if not self.active():
                break  # leadership lost mid-cycle: the new leader evaluates the rest
            self.last_run[policy.key] = clock
            try:
                await self.evaluate(policy, view, batch, conflicts.get(policy.key))
            except KubeError as e:
                log.warning("policy %s/%s: %s", policy.namespace, policy.name, e)
        self.metrics.cycle_seconds.observe(time.perf_counter() - start)

    async def _fetch(self, due: list[PolicyRecord], clock: float) -> Batch:
        # History queries (a day of usage) are heavy; their answer changes slowly.
        with_history = clock - self.last_history_fetch >= self.settings.duration("recommendation_refresh").total_seconds()
        queries = cycle_queries(query_plan(due, with_history), rate_window=self.settings.rate_window,
                                step=self.settings.query_step, history=self.settings.recommendation_window)
        try:
            results, stats = await asyncio.to_thread(self.prometheus.fetch, queries)
        except PrometheusUnavailable as e:
            self.metrics.prometheus_failures.inc()
            return Batch(None, f"{self.settings.prometheus_url}: {e}")
        self.metrics.observe_queries(stats)
        if with_history:
            self.last_history_fetch = clock
            self.history_cache = {k: v for k, v in results.items() if k in HISTORY_QUERIES}
        return Batch({**self.history_cache, **results})

    async def evaluate(self, policy: PolicyRecord, view: ClusterView, batch: Batch,
                       conflict_with: PolicyRecord | None = None) -> None:
        now = self.clock()
        self.metrics.evaluations.inc()
        report = Report(policy.status)
        facts = cluster_facts(policy, view, conflict_with)
        verdict = first_verdict(CLUSTER_GATES, facts)
        if verdict is None:
            facts = await self._gather(facts, batch, now)
            verdict = first_verdict(METRIC_GATES, facts)
        if verdict is not None:
            return await self._publish(policy, self._stopped(report, facts, verdict))
        await self._upkeep(facts, report, now)
        decision, insights = await self._decide(facts, report, view, now)
        if decision.apply:
            await self._act(facts, decision, report, now)
        self._explain(facts, decision, insights, report, view, now)
        await self._publish(policy, report)

    # --- gather ---------------------------------------------------------------------------------------

    async def _gather(self, facts: PolicyFacts, batch: Batch, now: datetime) -> PolicyFacts:
        if batch.results is None:
            return PolicyFacts(**{**facts.__dict__, "prometheus_error": batch.error})
        signals = self.gather.joined(facts, batch.results)
        try:
            if self.gather.needs_queries(facts.policy.spec):
                signals = await asyncio.to_thread(self.gather.completed, facts, signals, now)
        except PrometheusUnavailable as e:
            return PolicyFacts(**{**facts.__dict__, "prometheus_error": str(e)})
        return PolicyFacts(**{**facts.__dict__, "signals": signals})

    def _stopped(self, report: Report, facts: PolicyFacts, verdict: Verdict) -> Report:
        report.reason, report.message, report.warning = verdict.reason, verdict.message, verdict.warning
        report.conditions.extend(verdict.conditions)
        if facts.workload is not None:
            report.set(ConditionType.TARGET_FOUND, True, Reason.FOUND, f"{facts.policy.target.kind} {facts.policy.target.name}")
            report.status = report.status.model_copy(update={"containers": containers_status(
                facts.signals, facts.resources, {})})
        return report

    # --- upkeep: what earlier actions still owe -----------------------------------------------------

    async def _upkeep(self, facts: PolicyFacts, report: Report, now: datetime) -> None:
        if facts.policy.spec.mode is Mode.AUTO:
            await self._finish_recorded(facts, report)
        await self._verify(facts, report, now)

    async def _finish_recorded(self, facts: PolicyFacts, report: Report) -> None:
        """Bring pods (or the template) to the values kubetune recorded: an operator stopped between
        recording and acting, a pod created from the unchanged template after an in-place resize, a
        resize the kubelet found infeasible (rolled out instead under InPlaceOrRollout)."""
        policy, spec, target = facts.policy, facts.policy.spec, facts.policy.target
        records = policy.past_actions()
        infeasible = infeasible_pods(facts.pods)
        try:
            if spec.scaling.method is ScalingMethod.ROLLOUT:
                missing = self._template_missing(records, facts)
                if missing:
                    applied = await asyncio.to_thread(self.actuator.roll_out, target, missing, facts.workload.template)
                    self._completed(report, target, missing, applied)
                return
            if infeasible:
                await self._infeasible(facts, report, infeasible)
            skip = {p.name for p in infeasible} | {p.name for p in facts.pods if p.resize_pending or p.resize_in_progress}
            owed = {name: changes for name, changes in outstanding_changes(records, facts.workload.template, facts.pods).items()
                    if name not in skip}
            if owed:
                applied = await asyncio.to_thread(self.actuator.resize_pods, owed, {p.name: p for p in facts.pods})
                self._completed(report, target, [ch for changes in owed.values() for ch in changes], applied)
        except KubeError as e:
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"finishing the recorded change failed: {e}")

    @staticmethod
    def _template_missing(records: tuple[ActionRecord, ...], facts: PolicyFacts) -> list[Change]:
        last = records[0] if records else None
        if not verifying(last):
            return []
        template = {c.name: c for c in facts.workload.template}
        return [ch for ch in recorded_changes(last) if ch.container in template and
                (template[ch.container].requests if ch.value == "requests" else template[ch.container].limits
                 ).get(ch.resource) != ch.new]

    def _completed(self, report: Report, target, changes: list[Change], applied: Applied) -> None:
        summary = ", ".join(sorted({ch.describe() for ch in changes}))[:600]
        log.info("Completed %s/%s %s: %s", target.kind, target.name, summary, applied.how)
        report.events.append(Event(Reason.COMPLETED, f"recorded change finished {applied.how}: {summary}",
                                   on_workload=True))

    async def _infeasible(self, facts: PolicyFacts, report: Report, pods) -> None:
        names = ", ".join(p.name for p in pods)[:300]
        last = facts.policy.status.last_action
        if facts.policy.spec.scaling.method is ScalingMethod.IN_PLACE_OR_ROLLOUT and last and last.applied:
            changes = recorded_changes(last, undo=last.verification is not None
                                       and last.verification.state is VerificationState.ROLLED_BACK)
            applied = await asyncio.to_thread(self.actuator.roll_out, facts.policy.target, changes,
                                              facts.workload.template)
            message = f"the kubelet cannot resize {names} in place (Infeasible); rolled out instead"
            report.events.append(Event(Reason.ROLLED_OUT, message, warning=True, on_workload=True))
            log.info("RolledOut %s/%s: %s (%s)", facts.policy.target.kind, facts.policy.target.name, message, applied.how)
            return
        report.set(ConditionType.DEGRADED, True, Reason.RESIZE_INFEASIBLE,
                   f"the kubelet cannot resize {names} in place (Infeasible) and the scaling method is "
                   f"{facts.policy.spec.scaling.method.value}: the pods keep their old resources")

    async def _verify(self, facts: PolicyFacts, report: Report, now: datetime) -> None:
        """Once the verification window of the last applied action has passed, compare the signals
        before and after it; roll it back (to the recorded previous values) if it made things worse."""
        last = report.status.last_action
        if not verifying(last) or last.verification.deadline is None or now < last.verification.deadline:
            return
        spec = facts.policy.spec
        try:
            windows = await asyncio.to_thread(self.gather.verification_windows, facts, last,
                                              _resources_before(last, facts.resources))
        except PrometheusUnavailable as e:
            if now - last.verification.deadline >= parse_duration(spec.verification.window):
                report.replace_last_action(_verification(last, VerificationState.FAILED, f"not verified: {e}"))
            return
        result = verify_action(windows, Tolerance(relative=spec.verification.max_regression_percent / 100))
        if not result.should_roll_back:
            report.replace_last_action(_verification(last, VerificationState.PASSED, result.message))
            return
        if not spec.verification.rollback_on_regression or spec.mode is not Mode.AUTO:
            why = "rollback disabled" if spec.mode is Mode.AUTO else f"mode {spec.mode.value}: not rolled back"
            report.replace_last_action(_verification(last, VerificationState.FAILED, f"regressed, {why}: {result.message}"))
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"the last change regressed ({why})")
            return
        undo = recorded_changes(last, undo=True)
        target = facts.policy.target
        try:
            applied = await asyncio.to_thread(self.actuator.apply, target, spec.scaling.method, undo,
                                              facts.resources, facts.pods)
        except KubeError as e:
            self.metrics.actions.labels(result="failed").inc()
            report.replace_last_action(_verification(last, VerificationState.FAILED,
                                                     f"regressed, rollback failed: {e}; {result.message}"))
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"rollback failed: {e}")
            return
        self.metrics.actions.labels(result="rolled_back").inc()
        message = f"rolled back {applied.how}: {result.message}"
        for change in undo:
            log.info("RolledBack %s/%s %s (%s)", target.kind, target.name, change.describe(), result.message[:300])
        report.replace_last_action(_verification(last, VerificationState.ROLLED_BACK, message))
        report.set(ConditionType.DEGRADED, True, Reason.ROLLED_BACK, message)
        report.events += [Event(Reason.ROLLED_BACK, f"kubetune: {message}", warning=True),
                          Event(Reason.ROLLED_BACK, f"kubetune: {message}", warning=True, on_workload=True)]

    # --- decide ---------------------------------------------------------------------------------------

    async def _decide(self, facts: PolicyFacts, report: Report, view: ClusterView,
                      now: datetime) -> tuple[Decision, Insights]:
        spec, signals = facts.policy.spec, facts.signals
        step = self.settings.duration("query_step").total_seconds()
        full = parse_duration(ANALYSIS_WINDOW).total_seconds() / step
        warmup = int(self.settings.duration("rate_window").total_seconds() / step)
        insights = analyse(spec, signals, step, warmup_points=warmup if any(
            len(c.cpu_series) < full for c in signals.containers) else 0)
        bottleneck = None
        if any(h.rule.action is Action.OPTIMIZE_RESOURCES for h in evaluate_rules(spec, signals)[0]):
            try:
                bottleneck = await asyncio.to_thread(self.gather.bottleneck, facts, now)
            except PrometheusUnavailable as e:
                log.warning("policy %s/%s: latency correlation skipped: %s", facts.policy.namespace,
                            facts.policy.name, e)
        status = report.status
        past = ((status.last_action,) if status.last_action else ()) + tuple(status.history)
        decision = decide(PolicyInputs(spec=spec, signals=signals, now=now, past_actions=past,
                                       node_capacity=view.node_capacity,
                                       hpa_resources=view.hpas.get(facts.policy.target, frozenset()),
                                       predicted_hits=insights.predicted_hits, bottleneck=bottleneck))
        self.metrics.decisions.labels(action=decision.action.value if decision.action else "None",
                                      reason=decision.reason.value).inc()
        report.status = record_decision(report.status, decision, now, history_limit=self.settings.history_limit)
        return decision, insights

    # --- act ------------------------------------------------------------------------------------------

    async def _act(self, facts: PolicyFacts, decision: Decision, report: Report, now: datetime) -> None:
        policy, target = facts.policy, facts.policy.target
        window = policy.spec.verification.window
        deadline = now + parse_duration(window)
        record = report.status.last_action.model_copy(update={"verification": VerificationResult(
            state=VerificationState.PENDING, message=f"applying, then verifying for {window}", deadline=deadline)})
        # Intent first, already Pending: a crash before or during the change leaves a record that a
        # restarted operator (or the next leader) finishes, and whose cooldown stops a second change.
        await asyncio.to_thread(self.kube.patch_policy_status, policy.namespace, policy.name, {
            "lastAction": record.to_dict(), "history": [r.to_dict() for r in report.status.history]})
        try:
            applied = await asyncio.to_thread(self.actuator.apply, target, policy.spec.scaling.method,
                                              decision.changes, facts.resources, facts.pods)
        except KubeError as e:
            self.metrics.actions.labels(result="failed").inc()
            report.replace_last_action(record.model_copy(update={
                "applied": False, "evidence": ((f"failed: {e}"[:512],) + record.evidence)[:16],
                "verification": VerificationResult(state=VerificationState.SKIPPED, message="not applied")}))
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, str(e))
            log.warning("policy %s/%s: %s failed: %s", policy.namespace, policy.name, decision.action.value, e)
            return
        self.metrics.actions.labels(result="applied").inc()
        report.replace_last_action(record.model_copy(update={"verification": VerificationResult(
            state=VerificationState.PENDING, message=f"verifying for {window} ({applied.how})", deadline=deadline)}))
        report.set(ConditionType.DEGRADED, False, Reason.AS_EXPECTED, f"{decision.action.value} applied {applied.how}")
        for change in decision.changes:
            log.info("%s %s/%s %s: %s (rule %s, %s)", decision.action.value, target.kind, target.name,
                     change.describe(), applied.how, decision.rule, "; ".join(decision.evidence)[:300])
        report.events.append(Event(decision.reason, f"kubetune policy {policy.name}: {decision.message} ({applied.how})",
                                   on_workload=True))

    # --- report ---------------------------------------------------------------------------------------

    def _explain(self, facts: PolicyFacts, decision: Decision, insights: Insights, report: Report,
                 view: ClusterView, now: datetime) -> None:
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
        self._investigations(decision, insights, report, previous)
        gap = "; ".join(decision.recommendation_gap)
        if gap and not condition_is_true(previous, ConditionType.CONVERGING):
            report.events.append(Event(Reason.FAR_FROM_RECOMMENDATION, gap, warning=True))
        report.set(ConditionType.CONVERGING, bool(gap),
                   Reason.FAR_FROM_RECOMMENDATION if gap else Reason.NEAR_RECOMMENDATION,
                   gap or "within one step of the recommendation")
        recommendations = {c.name: recommend(c, container_policy(spec, c.name), view.node_capacity)
                           for c in signals.containers}
        high_load = any(h.rule.action is Action.INCREASE_RESOURCES for h in evaluate_rules(spec, signals)[0])
        report.status = report.status.model_copy(update={
            "signals": signals_status(signals, now, trend=insights.trend, anomaly=bool(anomalies), high_load=high_load),
            "containers": containers_status(signals, facts.resources, recommendations)})

    @staticmethod
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

    async def _publish(self, policy: PolicyRecord, report: Report) -> None:
        now = self.clock()
        status = report.status.model_copy(update={
            "observed_generation": policy.generation,
            "conditions": with_conditions(report.status.conditions,
                                          [(c.type, c.status, c.reason, c.message) for c in report.conditions],
                                          generation=policy.generation, now=now)})
        payload = status.to_dict()
        if self._status_changed(policy.key, payload):
            await asyncio.to_thread(self.kube.patch_policy_status, policy.namespace, policy.name, payload)
        events = list(report.events)
        if self.last_reason.get(policy.key) != report.reason:
            self.last_reason[policy.key] = report.reason
            events.insert(0, Event(report.reason, report.message, report.warning))
        for e in events:
            involved = workload_involved(policy.target) if e.on_workload else policy.involved()
            await asyncio.to_thread(self.kube.event, involved, "Warning" if e.warning else "Normal",
                                    e.reason.value, e.message)

    def _status_changed(self, key: tuple[str, str], payload: Mapping[str, Any]) -> bool:
        """Whether a status write is worth its API call: anything but the live figures (signals but
        highLoad, utilisation) changed, or the figures are older than STATUS_REFRESH. At 1,000 policies, writing
        every evaluation cost 1,000 patches (and as many watch events) per cycle."""
        # highLoad is not a live figure: the node planner raises process priority on it.
        stable = json.dumps({**payload, "signals": (payload.get("signals") or {}).get("highLoad"), "containers": [
            {k: v for k, v in c.items() if k != "utilization"} for c in payload.get("containers") or []]},
            sort_keys=True, default=str)
        clock = time.monotonic()
        last = self.last_status.get(key)
        if last and last[0] == stable and clock - last[1] < STATUS_REFRESH:
            return False
        self.last_status[key] = (stable, clock)
        return True
