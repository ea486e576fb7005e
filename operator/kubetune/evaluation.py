"""The evaluation loop, the hot path: every tick, take the policies whose interval has elapsed, ask
Prometheus one batched query per metric family, join the answers with the pod index, decide, act,
and report in status, Events and /metrics.

Only this module and the actuators change anything; the decisions themselves are pure
(`kubetune.decisions`). Before an action is made, its intent is written to the policy's status
(lastAction), so an operator killed between the write and the change, once restarted, sees the
action in its history (cooldown) and does not make it twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from kubetune.api.common import Mode, parse_duration, parse_quantity
from kubetune.api.performancepolicy import Action, ActionRecord, PerformancePolicySpec, ScalingMethod
from kubetune.analysis import BottleneckReason, ResourceSignal, find_bottleneck
from kubetune.decisions import Change, Decision, evaluate_rules, PolicyInputs, container_policy, decide, recommend, rule_value_aggregate
from kubetune.kube import Kube, KubeError
from kubetune.reasons import Reason
from kubetune.loops import run_every
from kubetune.metrics import OperatorMetrics
from kubetune.predictions import analyse
from kubetune.verification import MetricKind, MetricWindows, Tolerance, verify_action
from kubetune.prometheus import Prometheus, PrometheusUnavailable, Samples
from kubetune.promql import CONTAINERS_ONLY, QueryPlan, cycle_queries, policy_query, workload_pods, workload_series
from kubetune.settings import OperatorSettings
from kubetune.signals import current_resources, workload_signals
from kubetune.status import action_record, containers_status, set_condition, signals_status
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef, format_quantity

log = logging.getLogger(__name__)

# The window of recent samples trend prediction and anomaly detection look at.
ANALYSIS_WINDOW = "5m"
# Live figures (signals, utilisation) are written at most this often when nothing else changed.
STATUS_REFRESH = 60.0
# Reasons that are not worth a Warning Event.
QUIET_REASONS = {Reason.NO_RULE_FIRED, Reason.MODE_OFF, Reason.SCALED_UP, Reason.SCALED_DOWN, Reason.OPTIMIZED,
                 Reason.COOLDOWN}


@dataclass(frozen=True)
class PolicyRecord:
    """What the index keeps of a PerformancePolicy."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    spec: PerformancePolicySpec | None
    spec_error: str | None
    status: Mapping[str, Any]

    @property
    def target(self) -> WorkloadRef | None:
        return WorkloadRef(self.namespace, self.spec.target_ref.kind.value, self.spec.target_ref.name) if self.spec else None

    def involved(self) -> dict[str, str]:
        return {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy", "name": self.name,
                "namespace": self.namespace, "uid": self.uid}


@dataclass(frozen=True)
class WorkloadRecord:
    uid: str
    template: tuple[ContainerResources, ...]


@dataclass
class ClusterView:
    """The indexes, as plain mappings (kopf's indexes in the operator, dicts in tests)."""

    policies: Iterable[PolicyRecord]
    pods: Mapping[WorkloadRef, Iterable[PodRecord]]
    workloads: Mapping[WorkloadRef, WorkloadRecord]
    hpas: Mapping[WorkloadRef, frozenset[str]] = field(default_factory=dict)
    node_capacity: Mapping[str, float] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def due_policies(policies: Iterable[PolicyRecord], last_run: Mapping[tuple[str, str], float], clock: float) -> list[PolicyRecord]:
    due = []
    for p in policies:
        if p.spec is None or p.spec.mode is Mode.OFF:
            due.append(p)  # still reported: an invalid or switched-off policy says so in status
            continue
        if clock - last_run.get((p.namespace, p.name), float("-inf")) >= parse_duration(p.spec.interval).total_seconds():
            due.append(p)
    return due


def conflicting(policies: Iterable[PolicyRecord]) -> dict[tuple[str, str], PolicyRecord]:
    """Policies that target a workload an older policy already targets -> that older policy."""
    owners: dict[WorkloadRef, PolicyRecord] = {}
    for p in sorted((p for p in policies if p.spec), key=lambda p: (p.created, p.name)):
        owners.setdefault(p.target, p)
    return {(p.namespace, p.name): owners[p.target] for p in policies
            if p.spec and owners[p.target] is not p}


def query_plan(policies: Iterable[PolicyRecord], with_history: bool) -> QueryPlan:
    namespaces, sustained, histograms = set(), set(), set()
    series = False
    for p in policies:
        if not p.spec or p.spec.mode is Mode.OFF:
            continue
        namespaces.add(p.namespace)
        series = series or p.spec.prediction.enabled or p.spec.anomaly_detection.enabled
        for rule in p.spec.rules:
            resource = {"cpuUtilization": "cpu", "memoryUtilization": "memory"}.get(rule.metric.value)
            if resource and rule.sustained_for:
                sustained.add((resource, rule_value_aggregate(rule), rule.sustained_for))
        latency = p.spec.metrics.latency if p.spec.metrics else None
        if latency and latency.histogram:
            histograms.add(latency.histogram)
    return QueryPlan(frozenset(namespaces), frozenset(sustained), frozenset(histograms), with_history,
                     series_window=ANALYSIS_WINDOW if series else None)


def past_actions(status: Mapping[str, Any]) -> tuple[ActionRecord, ...]:
    records = [status.get("lastAction"), *(status.get("history") or [])]
    return tuple(ActionRecord.model_validate(r) for r in records if r)


def unfinished_changes(last_action: Mapping[str, Any] | None,
                       resources: tuple[ContainerResources, ...]) -> list[Change]:
    """The changes of an applied, still-verifying action that the resources do not show yet."""
    if not last_action or not last_action.get("applied") or \
            (last_action.get("verification") or {}).get("state") != "Pending":
        return []
    by_name = {c.name: c for c in resources}
    missing = []
    for ch in last_action.get("changes") or []:
        c = by_name.get(ch["container"])
        if c is None or "to" not in ch:
            continue
        want = float(parse_quantity(ch["to"]))
        have = (c.requests if ch.get("value", "requests") == "requests" else c.limits).get(ch["resource"])
        if have is None or abs(have - want) > 1e-9:
            old = float(parse_quantity(ch["from"])) if ch.get("from") else None
            missing.append(Change(ch["container"], ch["resource"], ch.get("value", "requests"), old, want))
    return missing


def resources_patch(decision: Decision, current: tuple[ContainerResources, ...]) -> dict[str, dict[str, dict[str, str]]]:
    """The full requests/limits of each changed container, with the decision's changes applied."""
    by_name = {c.name: c for c in current}
    patch: dict[str, dict[str, dict[str, str]]] = {}
    for ch in decision.changes:
        c = by_name[ch.container]
        entry = patch.setdefault(ch.container, {
            "requests": {r: format_quantity(r, v) for r, v in c.requests.items()},
            "limits": {r: format_quantity(r, v) for r, v in c.limits.items()}})
        entry[ch.value][ch.resource] = format_quantity(ch.resource, ch.new)
    return {name: {k: v for k, v in entry.items() if v} for name, entry in patch.items()}


class Evaluator:
    def __init__(self, settings: OperatorSettings, prometheus: Prometheus, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings, self.prometheus, self.kube, self.metrics, self.clock = settings, prometheus, kube, metrics, clock
        self.last_run: dict[tuple[str, str], float] = {}
        self.last_reason: dict[tuple[str, str], str] = {}
        self.last_status: dict[tuple[str, str], tuple[str, float]] = {}
        self.last_history_fetch = float("-inf")
        self.history_cache: dict[str, Samples] = {}

    async def run_forever(self, view: Callable[[], ClusterView], ready: asyncio.Event | None = None) -> None:
        await run_every(self.settings.tick, lambda: self.cycle(view()), name="evaluation", ready=ready,
                        on_failure=self.metrics.cycle_failures.inc)

    async def cycle(self, view: ClusterView) -> None:
        clock = time.monotonic()
        policies = list(view.policies)
        due = due_policies(policies, self.last_run, clock)
        if not due:
            return
        start = time.perf_counter()
        # History queries (a day of usage) are heavy; their answer changes slowly.
        with_history = (clock - self.last_history_fetch
                        >= self.settings.duration("recommendation_refresh").total_seconds())
        queries = cycle_queries(query_plan(due, with_history), rate_window=self.settings.rate_window,
                                step=self.settings.query_step, history=self.settings.recommendation_window)
        results: dict[str, Samples] | None = None
        prometheus_error = None
        try:
            results, stats = await asyncio.to_thread(self.prometheus.fetch, queries)
            self.metrics.observe_queries(stats)
            if with_history:
                self.last_history_fetch = clock
                self.history_cache = {k: v for k, v in results.items() if k in ("cpu_p50", "cpu_p90", "cpu_peak",
                                                                                  "memory_peak", "oom_kills")}
            else:
                results = {**self.history_cache, **results}
        except PrometheusUnavailable as e:
            prometheus_error = str(e)
            self.metrics.prometheus_failures.inc()
        conflicts = conflicting(policies)
        for policy in due:
            self.last_run[(policy.namespace, policy.name)] = clock
            try:
                await self.evaluate(policy, view, results, prometheus_error, conflicts.get((policy.namespace, policy.name)))
            except KubeError as e:
                log.warning("policy %s/%s: %s", policy.namespace, policy.name, e)
        self.metrics.cycle_seconds.observe(time.perf_counter() - start)

    async def evaluate(self, policy: PolicyRecord, view: ClusterView, results: Mapping[str, Samples] | None,
                       prometheus_error: str | None, conflict_with: PolicyRecord | None) -> None:
        now = self.clock()
        key = (policy.namespace, policy.name)
        status = dict(policy.status)
        conditions = list(status.get("conditions") or [])
        gen = policy.generation

        def cond(type_, ok, reason, message):
            nonlocal conditions
            conditions = set_condition(conditions, type_, ok, reason, message, generation=gen, now=now)

        async def report(reason: str, message: str, warning: bool, extra: Mapping[str, Any] = {}):
            payload = {**extra, "observedGeneration": gen, "conditions": conditions}
            if self._status_changed(key, payload):
                await asyncio.to_thread(self.kube.patch_policy_status, policy.namespace, policy.name, payload)
            if self.last_reason.get(key) != reason:
                self.last_reason[key] = reason
                await asyncio.to_thread(self.kube.event, policy.involved(), "Warning" if warning else "Normal",
                                        reason, message)

        self.metrics.evaluations.inc()
        if policy.spec is None:
            cond("Ready", False, "InvalidSpec", policy.spec_error or "invalid spec")
            return await report("InvalidSpec", policy.spec_error or "invalid spec", True)
        spec = policy.spec
        if spec.mode is Mode.OFF:
            cond("Ready", True, "ModeOff", "mode is Off: nothing is evaluated or changed")
            return await report("ModeOff", "mode is Off", False)
        if conflict_with is not None:
            message = (f"PerformancePolicy {conflict_with.name} already targets {spec.target_ref.kind.value} "
                       f"{spec.target_ref.name}; this policy is ignored until that one is removed")
            cond("Ready", False, "Conflict", message)
            return await report("Conflict", message, True)
        target = policy.target
        workload = view.workloads.get(target)
        if workload is None:
            message = f"{target.kind} {target.namespace}/{target.name} not found"
            cond("TargetFound", False, "TargetNotFound", message)
            cond("Ready", False, "TargetNotFound", message)
            return await report("TargetNotFound", message, True)
        cond("TargetFound", True, "Found", f"{target.kind} {target.name}")
        pods = list(view.pods.get(target, ()))
        # A rollout's truth is the template (old pods linger while it rolls); in place, the pods'.
        resources = (workload.template if spec.scaling.method is ScalingMethod.ROLLOUT
                     else current_resources(pods, workload.template))
        unfinished = unfinished_changes(status.get("lastAction"), resources)
        if unfinished and spec.mode is Mode.AUTO:
            # The intent was recorded but the change did not (fully) land: an operator stopped
            # between the two, or new pods came from the template. Finish it, idempotently.
            completion = Decision(Reason.SCALED_UP, "completing the recorded action", changes=tuple(unfinished))
            how = await asyncio.to_thread(self._actuate, target, spec.scaling.method,
                                          resources_patch(completion, resources), pods)
            log.info("policy %s/%s: completed the recorded action %s", policy.namespace, policy.name, how)
            resources = workload.template if spec.scaling.method is ScalingMethod.ROLLOUT else resources
        app: dict[str, float | None] = {}
        if results is not None:
            try:
                app = await self._application_metrics(policy, pods)
            except PrometheusUnavailable as e:
                results, prometheus_error = None, str(e)
        if results is None:
            message = f"Prometheus at {self.settings.prometheus_url} is unavailable, no action taken: {prometheus_error}"
            cond("MetricsAvailable", False, "PrometheusUnavailable", message)
            cond("Ready", False, "PrometheusUnavailable", message)
            return await report("PrometheusUnavailable", message, True)
        latency = spec.metrics.latency if spec.metrics else None
        signals = workload_signals(results, policy.namespace, pods, resources,
                                   histogram=latency.histogram if latency else None,
                                   percentiles=latency.percentiles if latency else (), **app)
        if not any(c.usage.get("cpu") is not None for c in signals.containers):
            message = (f"no CPU usage series for the {len([p for p in pods if p.phase == 'Running'])} running pods of "
                       f"{target.kind} {target.name} (container_cpu_usage_seconds_total); no action taken")
            cond("MetricsAvailable", False, "NoData", message)
            cond("Ready", True, "NoData", message)
            return await report("NoData", message, True,
                                {"containers": containers_status(signals, resources, {})})
        verified = await self._verify_last_action(policy, status, resources, pods, now)
        if verified:
            status["lastAction"] = verified
        step = self.settings.duration("query_step").total_seconds()
        full = parse_duration(ANALYSIS_WINDOW).total_seconds() / step
        warmup = int(self.settings.duration("rate_window").total_seconds() / step)
        insights = analyse(spec, signals, step, warmup_points=warmup if any(
            len(c.cpu_series) < full for c in signals.containers) else 0)
        bottleneck = None
        slow = [h for h in evaluate_rules(spec, signals)[0] if h.rule.action is Action.OPTIMIZE_RESOURCES]
        if slow and latency and latency.histogram:
            try:
                bottleneck = await asyncio.to_thread(self._correlate, policy, now)
            except PrometheusUnavailable as e:
                log.warning("policy %s/%s: latency correlation skipped: %s", policy.namespace, policy.name, e)
        decision = decide(PolicyInputs(spec=spec, signals=signals, now=now, past_actions=past_actions(status),
                                       node_capacity=view.node_capacity, hpa_resources=view.hpas.get(target, frozenset()),
                                       predicted_hits=insights.predicted_hits, bottleneck=bottleneck))
        anomalous = bool(insights.anomalies)
        if anomalous and next((c for c in conditions if c["type"] == "AnomalyDetected"), {}).get("status") != "True":
            await asyncio.to_thread(self.kube.event, policy.involved(), "Warning", "AnomalyDetected",
                                    "; ".join(insights.anomalies))
        cond("AnomalyDetected", anomalous, "Anomalous" if anomalous else "NoAnomaly",
             "; ".join(insights.anomalies) or "every signal is within its usual range")
        self.metrics.decisions.labels(action=decision.action.value if decision.action else "None",
                                      reason=decision.reason.value).inc()
        cond("MetricsAvailable", True, "Available",
             "; ".join(decision.unavailable) or "every signal the rules use is available")
        recommendations = {c.name: recommend(c, container_policy(spec, c.name), view.node_capacity)
                           for c in signals.containers}
        extra: dict[str, Any] = {"signals": signals_status(signals, now, trend=insights.trend, anomaly=anomalous),
                                 "containers": containers_status(signals, resources, recommendations)}
        if verified:
            extra["lastAction"] = verified
        extra.update(self._record(status, decision, now))
        if decision.apply:
            await self._act(policy, target, decision, resources, pods, extra, cond, now)
        cond("Ready", True, decision.reason.value, decision.message)
        if "Degraded" not in {c["type"] for c in conditions}:
            cond("Degraded", False, "AsExpected", "the last action succeeded or none was needed")
        await report(decision.reason.value, decision.message, decision.reason not in QUIET_REASONS, extra)

    def _status_changed(self, key: tuple[str, str], payload: Mapping[str, Any]) -> bool:
        """Whether a status write is worth its API call: anything but the live figures (signals,
        utilisation) changed, or the figures are older than STATUS_REFRESH. At 1,000 policies, writing
        every evaluation cost 1,000 patches (and as many watch events) per cycle."""
        stable = json.dumps({**payload, "signals": None, "containers": [
            {k: v for k, v in c.items() if k != "utilization"} for c in payload.get("containers") or []]},
            sort_keys=True, default=str)
        clock = time.monotonic()
        last = self.last_status.get(key)
        if last and last[0] == stable and clock - last[1] < STATUS_REFRESH:
            return False
        self.last_status[key] = (stable, clock)
        return True

    def _record(self, status: Mapping[str, Any], decision: Decision, now: datetime) -> dict[str, Any]:
        """A new lastAction (and the previous one moved to history) when the decision is an action
        that differs from the last recorded one; recommendations are not repeated every cycle."""
        if decision.action is None or decision.reason in (Reason.COOLDOWN, Reason.RATE_LIMITED, Reason.BACKOFF):
            return {}
        record = action_record(decision, now, applied=decision.apply,
                               verification=None if decision.apply else {"state": "Skipped", "message": "not applied"})
        last = status.get("lastAction")
        same = last and not decision.apply and {k: last.get(k) for k in ("action", "rule", "changes", "applied")} == \
            {k: record.get(k) for k in ("action", "rule", "changes", "applied")}
        if same:
            return {}
        history = ([last] if last else []) + list(status.get("history") or [])
        return {"lastAction": record, "history": history[: self.settings.history_limit]}

    async def _act(self, policy: PolicyRecord, target: WorkloadRef, decision: Decision,
                   resources: tuple[ContainerResources, ...], pods: list[PodRecord], extra: dict[str, Any], cond,
                   now: datetime) -> None:
        # Intent first: written before the change, so a crash in between cannot cause a second change.
        await asyncio.to_thread(self.kube.patch_policy_status, policy.namespace, policy.name,
                                {"lastAction": extra["lastAction"], "history": extra["history"]})
        patch = resources_patch(decision, resources)
        method = policy.spec.scaling.method
        try:
            how = await asyncio.to_thread(self._actuate, target, method, patch, pods)
        except KubeError as e:
            self.metrics.actions.labels(result="failed").inc()
            extra["lastAction"] = {**extra["lastAction"], "applied": False,
                                   "evidence": [f"failed: {e}"[:512], *extra["lastAction"]["evidence"]][:16]}
            cond("Degraded", True, "ActionFailed", str(e))
            log.warning("policy %s/%s: %s failed: %s", policy.namespace, policy.name, decision.action.value, e)
            return
        self.metrics.actions.labels(result="applied").inc()
        window = policy.spec.verification.window
        extra["lastAction"] = {**extra["lastAction"], "verification": {
            "state": "Pending", "message": f"verifying for {window} ({how})",
            "deadline": (now + parse_duration(window)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        cond("Degraded", False, "AsExpected", f"{decision.action.value} applied {how}")
        for change in decision.changes:
            log.info("%s %s/%s %s: %s (rule %s, %s)", decision.action.value, target.kind, target.name,
                     change.describe(), how, decision.rule, "; ".join(decision.evidence)[:300])
        workload = {"apiVersion": "apps/v1", "kind": target.kind, "name": target.name, "namespace": target.namespace}
        await asyncio.to_thread(self.kube.event, workload, "Normal", decision.reason.value,
                                f"kubetune policy {policy.name}: {decision.message} ({how})")

    def _actuate(self, target: WorkloadRef, method: ScalingMethod, patch, pods: list[PodRecord]) -> str:
        if method is ScalingMethod.ROLLOUT:
            self.kube.patch_template(target, patch)
            return "by rollout"
        running = [p for p in pods if p.phase == "Running"]
        try:
            for pod in running:
                self.kube.resize_pod(pod.namespace, pod.name, patch)
            return f"in place on {len(running)} pods"
        except KubeError as e:
            if method is ScalingMethod.IN_PLACE or e.status not in (400, 403, 422):
                raise
            # The API server refused the resize (e.g. a change that needs a restart): roll out instead.
            self.kube.patch_template(target, patch)
            return f"by rollout (in-place resize refused: {e})"

    async def _verify_last_action(self, policy: PolicyRecord, status: Mapping[str, Any],
                                  resources: tuple[ContainerResources, ...], pods: list[PodRecord],
                                  now: datetime) -> dict[str, Any] | None:
        """Once the verification window of the last applied action has passed, compare the signals
        before and after it; roll it back (to the recorded previous values) if it made things worse."""
        last = status.get("lastAction")
        verification = (last or {}).get("verification") or {}
        if not last or not last.get("applied") or verification.get("state") != "Pending" or \
                now < _parse_time(verification["deadline"]):
            return None
        spec = policy.spec
        try:
            result = await asyncio.to_thread(self._compare, policy, last, resources, pods)
        except PrometheusUnavailable as e:
            return None if now - _parse_time(verification["deadline"]) < parse_duration(spec.verification.window) else \
                {**last, "verification": {**verification, "state": "Failed", "message": f"not verified: {e}"[:1024]}}
        if not result.should_roll_back:
            return {**last, "verification": {**verification, "state": "Passed", "message": result.message[:1024]}}
        if not spec.verification.rollback_on_regression:
            return {**last, "verification": {**verification, "state": "Failed",
                                             "message": f"regressed, rollback disabled: {result.message}"[:1024]}}
        undo = Decision(Reason.SCALED_DOWN, "rollback", changes=tuple(
            Change(ch["container"], ch["resource"], ch.get("value", "requests"), float(parse_quantity(ch["to"])),
                   float(parse_quantity(ch["from"]))) for ch in last.get("changes") or [] if ch.get("from")))
        target = policy.target
        try:
            how = await asyncio.to_thread(self._actuate, target, spec.scaling.method, resources_patch(undo, resources), pods)
        except KubeError as e:
            self.metrics.actions.labels(result="failed").inc()
            return {**last, "verification": {**verification, "state": "Failed",
                                             "message": f"regressed, rollback failed: {e}; {result.message}"[:1024]}}
        self.metrics.actions.labels(result="rolled_back").inc()
        message = f"rolled back {how}: {result.message}"
        for change in undo.changes:
            log.info("RolledBack %s/%s %s (%s)", target.kind, target.name, change.describe(), result.message[:300])
        for involved in (policy.involved(), {"apiVersion": "apps/v1", "kind": target.kind, "name": target.name,
                                             "namespace": target.namespace}):
            await asyncio.to_thread(self.kube.event, involved, "Warning", "RolledBack", f"kubetune: {message}")
        return {**last, "verification": {**verification, "state": "RolledBack", "message": message[:1024]}}

    def _compare(self, policy: PolicyRecord, last: Mapping[str, Any], resources: tuple[ContainerResources, ...],
                 pods: list[PodRecord]):
        """Before/after samples of CPU utilisation, latency and error rate around the action."""
        spec, s = policy.spec, self.settings
        window = parse_duration(spec.verification.window)
        acted = _parse_time(last["time"])
        at = (acted + window).timestamp()
        span = f"{int(2 * window.total_seconds())}s"
        selector = workload_pods(policy.namespace, spec.target_ref.name)
        before_requests = {c.name: dict(c.requests) for c in resources}
        for ch in last.get("changes") or []:
            if ch.get("value", "requests") == "requests" and ch.get("from") and ch["container"] in before_requests:
                before_requests[ch["container"]][ch["resource"]] = float(parse_quantity(ch["from"]))
        cpu_before = sum(r.get("cpu", 0.0) for r in before_requests.values())
        cpu_after = sum(c.requests.get("cpu", 0.0) for c in resources)
        queries: list[tuple[str, MetricKind, str, Callable[[float, bool], float]]] = []
        if cpu_before and cpu_after:
            usage = (f"avg(sum by (pod) (rate(container_cpu_usage_seconds_total{{{selector},{CONTAINERS_ONLY}}}"
                     f"[{s.rate_window}])))")
            queries.append(("cpuUtilization", MetricKind.UTILIZATION, usage,
                            lambda v, after: 100 * v / (cpu_after if after else cpu_before)))
        latency = spec.metrics.latency if spec.metrics else None
        if latency and latency.histogram:
            queries.append(("latencyP95Ms", MetricKind.LATENCY,
                            f"histogram_quantile(0.95, sum by (le) (rate({latency.histogram}_bucket{{{selector}}}"
                            f"[{s.rate_window}])))", lambda v, after: 1000 * v))
        if spec.metrics and spec.metrics.error_rate:
            expr = policy_query(spec.metrics.error_rate.query, namespace=policy.namespace,
                                workload=spec.target_ref.name, pods=[p.name for p in pods], rate_window=s.rate_window)
            queries.append(("errorRatePercent", MetricKind.ERROR_RATE, expr, lambda v, after: 100 * v))
        windows = []
        for name, kind, expr, scale in queries:
            samples = self.prometheus.series(workload_series(expr, span, s.query_step), at)
            windows.append(MetricWindows(name, kind, [scale(v, False) for t, v in samples if t < acted.timestamp()],
                                         [scale(v, True) for t, v in samples if t >= acted.timestamp()]))
        return verify_action(windows, Tolerance(relative=spec.verification.max_regression_percent / 100))

    def _correlate(self, policy: PolicyRecord, now: datetime) -> tuple[str | None, str] | None:
        """Which resource's recent series moves with p95 latency (only asked when a latency rule
        fires, so its per-policy queries are rare). None when there are too few samples to tell."""
        spec, s = policy.spec, self.settings
        selector = workload_pods(policy.namespace, spec.target_ref.name)
        containers = f"{selector},{CONTAINERS_ONLY}"

        def series(expr: str) -> dict[float, float]:
            return dict(self.prometheus.series(workload_series(expr, ANALYSIS_WINDOW, s.query_step), now.timestamp()))

        latency = series(f"histogram_quantile(0.95, sum by (le) (rate({spec.metrics.latency.histogram}_bucket"
                         f"{{{selector}}}[{s.rate_window}])))")
        candidates = {
            ResourceSignal.CPU_THROTTLING: series(
                f"sum(rate(container_cpu_cfs_throttled_periods_total{{{containers}}}[{s.rate_window}])) / "
                f"sum(rate(container_cpu_cfs_periods_total{{{containers}}}[{s.rate_window}]))"),
            ResourceSignal.MEMORY_PRESSURE: series(f"max(container_memory_working_set_bytes{{{containers}}})"),
            ResourceSignal.MAJOR_PAGE_FAULTS: series(
                f'sum(rate(container_memory_failures_total{{failure_type="pgmajfault",scope="container",'
                f'{containers}}}[{s.rate_window}]))'),
        }
        times = sorted(latency)
        result = find_bottleneck([latency[t] for t in times],
                                 {name: [values.get(t, float("nan")) for t in times] for name, values in candidates.items()})
        if result.reason is BottleneckReason.INSUFFICIENT_DATA:
            return None
        resource = {ResourceSignal.CPU_THROTTLING: "cpu", ResourceSignal.MEMORY_PRESSURE: "memory",
                    ResourceSignal.MAJOR_PAGE_FAULTS: "memory"}.get(result.resource) if result.resource else None
        return resource, result.message

    async def _application_metrics(self, policy: PolicyRecord, pods: list[PodRecord]) -> dict[str, float | None]:
        """The user's error-rate and throughput templates: one query each per policy (they are the
        policy's own PromQL, so they cannot be batched with other policies')."""
        metrics = policy.spec.metrics
        out: dict[str, float | None] = {}
        if not metrics:
            return out
        names = [p.name for p in pods if p.phase == "Running"]
        for field_name, source, scale in (("error_rate_percent", metrics.error_rate, 100.0),
                                          ("throughput_rps", metrics.throughput, 1.0)):
            if source:
                expr = policy_query(source.query, namespace=policy.namespace, workload=policy.spec.target_ref.name,
                                    pods=names, rate_window=self.settings.rate_window)
                value = await asyncio.to_thread(self.prometheus.scalar, expr)
                out[field_name] = None if value is None else value * scale
        return out
