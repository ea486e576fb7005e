"""The evaluation loop, the hot path. Each cycle takes the policies falling due (`start_by`), asks
Prometheus one batched query per metric family, and runs each policy through

    gather (gather.py) -> gates (gates.py) -> upkeep and decide (decisions.py) -> act (actuator.py)
    -> report (status.py)

Only the actuator changes workloads; the gates, the decision and the status are pure. Before a change
is made its intent is written to the policy's status (lastAction), so an operator killed between the
write and the change finds the intent on restart and finishes it instead of deciding again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping

from kubetune.actuator import Actuator
from kubetune.api.common import Mode, parse_duration
from kubetune.api.performancepolicy import Action, VerificationResult, VerificationState
from kubetune.decisions import Decision, PolicyInputs, container_sustained_keys, decide, evaluate_rules
from kubetune.explain import Event, Publisher, Report, explain_decision, explain_verdict, last_action_time
from kubetune.gates import CLUSTER_GATES, METRIC_GATES, PolicyFacts, first_verdict
from kubetune.gather import (ANALYSIS_WINDOW, FORECAST_WINDOW, PolicyMetrics, cluster_facts, history_sources,
                             request_counters)
from kubetune.history import WorkloadHistory
from kubetune.kube import Kube, KubeError
from kubetune.loops import run_every
from kubetune.metrics import OperatorMetrics
from kubetune.predictions import AnalysisCache, Insights, analyse
from kubetune.memory import release_freed_memory
from kubetune.prometheus import Prometheus, PrometheusUnavailable, Samples
from kubetune.promql import WORKLOAD_CPU_SERIES, QueryPlan, cycle_queries, workload_cpu_series
from kubetune.reasons import ConditionType, Reason
from kubetune.records import ClusterView, PolicyRecord, conflicting
from kubetune.settings import OperatorSettings
from kubetune.signals import HISTORY_QUERIES, PastPods
from kubetune.status import record_decision
from kubetune.upkeep import Upkeep

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# Cycles start at least this far apart: policies falling due within it share one cycle and its queries.
MIN_CYCLE_GAP = 1.0
# The forecaster's hour per workload is asked at most this often (seconds): its subquery evaluates rate()
# and the owner join at every step of the hour for every pod of its namespaces — at 10,000 pods on two
# busy CPUs longer than the query timeout, which failed whole cycles — and a minute moves 4 of 240 points.
FORECAST_REFRESH = 60.0
# How many recent cycles' durations set the lead (the longest of them: one quick cycle must not shrink it).
RECENT_CYCLES = 3


def start_by(policy: PolicyRecord, last_run: Mapping[tuple[str, str], float], lead: float, tick: float) -> float:
    """The latest moment (on the loop's monotonic clock) to start evaluating `policy` again.

    A policy's interval bounds its reaction: a condition that began holding just after one evaluation
    read Prometheus must be acted on within an interval of that read. An evaluation acts up to a cycle
    after it starts, so it starts `lead` (how long cycles take) before the interval is up; at most half
    an interval early, which bounds the extra evaluations a slow cycle costs. An invalid or switched-off
    policy is only reported, once a tick."""
    last = last_run.get(policy.key)
    if last is None:
        return float("-inf")
    if policy.spec is None or policy.spec.mode is Mode.OFF:
        return last + tick
    interval = parse_duration(policy.spec.interval).total_seconds()
    return last + interval - min(lead, interval / 2)


def due_policies(policies: Iterable[PolicyRecord], last_run: Mapping[tuple[str, str], float], clock: float,
                 lead: float = 0.0, tick: float = 0.0) -> list[PolicyRecord]:
    """The policies to evaluate in a cycle starting at `clock`: none unless some policy's start-by moment
    has come (a tick alone pulls nothing forward); then also those whose moment comes before the next
    cycle could start (a cycle, or the minimum gap, from now) — still at most half an interval early."""
    lookahead = max(lead, MIN_CYCLE_GAP)
    early = [p for p in policies if start_by(p, last_run, lead + lookahead, tick) <= clock]
    # A policy that must start now is among them: an earlier start-by only moves it earlier.
    return early if any(start_by(p, last_run, lead, tick) <= clock for p in early) else []


def query_plan(policies: Iterable[PolicyRecord], with_history: bool) -> QueryPlan:
    namespaces, held, histograms, counters = set(), set(), set(), set()
    series = forecast = False
    for p in policies:
        if not p.spec or p.spec.mode is Mode.OFF:
            continue
        namespaces.add(p.namespace)
        series = series or p.spec.prediction.enabled or p.spec.anomaly_detection.enabled
        forecast = forecast or p.spec.prediction.enabled
        held |= container_sustained_keys(p.spec)
        latency = p.spec.metrics.latency if p.spec.metrics else None
        if latency and latency.histogram:
            histograms.add(latency.histogram)
        error, throughput = request_counters(p.spec)
        if error:
            counters |= {(error[0], error[1]), (error[0], None)}
        if throughput:
            counters.add((throughput, None))
    return QueryPlan(frozenset(namespaces), frozenset(held), frozenset(histograms), with_history,
                     series_window=ANALYSIS_WINDOW if series else None, counters=frozenset(counters),
                     forecast_window=FORECAST_WINDOW if forecast else None)


@dataclass
class Batch:
    """The cycle's batched Prometheus answer, or why there is none."""

    results: Mapping[str, Samples] | None
    error: str | None = None
    # The detector's baselines that are current, by source (`history_sources`)
    histories: Mapping[str, WorkloadHistory] = field(default_factory=dict)
    # The pods the recommendation window's answers name, by workload name (gone ones included)
    past_pods: PastPods = field(default_factory=lambda: PastPods({}))


class Evaluator:
    def __init__(self, settings: OperatorSettings, prometheus: Prometheus, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings, self.prometheus, self.kube, self.metrics, self.clock = settings, prometheus, kube, metrics, clock
        self.actuator = Actuator(kube)
        self.gather = PolicyMetrics(prometheus, settings)
        self.upkeep = Upkeep(self.actuator, self.gather, metrics)
        self.publisher = Publisher(kube, clock)
        self.last_run: dict[tuple[str, str], float] = {}
        self.recent_cycles: deque[float] = deque(maxlen=RECENT_CYCLES)  # seconds, start to last action
        self.last_history_fetch = float("-inf")
        self.history_cache: dict[str, Samples] = {}
        self.past_pods = PastPods({})  # indexes history_cache; rebuilt with it
        self.histories: dict[str, WorkloadHistory] = {}
        self.forecast_cache: Samples = {}
        self.forecast_namespaces: frozenset[str] = frozenset()
        self.forecast_fetched = float("-inf")
        self.analysis_cache = AnalysisCache()
        self.active: Callable[[], bool] = lambda: True
        self.owns: Callable[[str], bool] = lambda namespace: True

    async def run_forever(self, view: Callable[[], ClusterView], ready: asyncio.Event | None = None,
                          active: Callable[[], bool] = lambda: True, owns: Callable[[str], bool] = lambda ns: True) -> None:
        self.active, self.owns = active, owns
        await run_every(self.settings.tick, lambda: self.cycle(view()), name="evaluation", ready=ready,
                        on_failure=self.metrics.cycle_failures.inc, active=active, clock=time.monotonic,
                        next_start=lambda: self.next_start(view()), min_gap=MIN_CYCLE_GAP)

    def lead(self) -> float:
        return max(self.recent_cycles, default=0.0)

    def next_start(self, view: ClusterView) -> float:
        """When the next cycle must start (monotonic): the earliest start-by moment of the policies this
        replica evaluates."""
        return min((start_by(p, self.last_run, self.lead(), self.settings.tick)
                    for p in view.policies if self.owns(p.namespace)), default=float("inf"))

    async def cycle(self, view: ClusterView) -> bool:
        """Evaluate the policies falling due; False when there were none."""
        clock = time.monotonic()
        policies = list(view.policies)
        # Sharded: only the namespaces of the shards this replica holds (conflicts still see every policy).
        due = due_policies([p for p in policies if self.owns(p.namespace)], self.last_run, clock, self.lead(),
                           self.settings.tick)
        if not due:
            return False
        self.analysis_cache.next_cycle()
        start = time.perf_counter()
        batch = await self._fetch(due, clock)
        conflicts = conflicting(policies)
        # Policies are independent (each its own workload); their API calls and own queries overlap,
        # a few at a time: one after the other, 1,000 policies' writes alone took a 20 s cycle.
        slots = asyncio.Semaphore(self.settings.evaluation_concurrency)

        async def one(policy: PolicyRecord) -> None:
            async with slots:
                if not self.active() or not self.owns(policy.namespace):
                    return  # leadership (or this shard) lost mid-cycle: the new holder evaluates it
                self.last_run[policy.key] = clock
                try:
                    await self.evaluate(policy, view, batch, conflicts.get(policy.key))
                except KubeError as e:
                    log.warning("policy %s/%s: %s", policy.namespace, policy.name, e)

        await asyncio.gather(*(one(p) for p in due))
        self.recent_cycles.append(time.monotonic() - clock)
        self.metrics.cycle_seconds.observe(time.perf_counter() - start)
        del batch  # the cycle's answers: freed before the heap is trimmed
        await asyncio.to_thread(release_freed_memory)
        return True

    async def _fetch(self, due: list[PolicyRecord], clock: float) -> Batch:
        # History queries (a day of usage) are heavy; their answer changes slowly.
        with_history = clock - self.last_history_fetch >= self.settings.duration("recommendation_refresh").total_seconds()
        plan = query_plan(due, with_history)
        queries = cycle_queries(replace(plan, forecast_window=None), rate_window=self.settings.rate_window,
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
            self.past_pods = PastPods(self.history_cache)
        if plan.forecast_window:
            results[WORKLOAD_CPU_SERIES] = await self._forecast_hour(plan, clock)
        return Batch({**self.history_cache, **results}, histories=await self._baselines(due),
                     past_pods=self.past_pods)

    async def _forecast_hour(self, plan: QueryPlan, clock: float) -> Samples:
        """The forecaster's hour per workload, asked again once a FORECAST_REFRESH or when a namespace is
        new to it. Optional evidence: if Prometheus cannot answer it, the last answer (or none: the
        forecaster then reads the recent per-pod series) serves, and the cycle goes on."""
        wanted = plan.namespaces | self.forecast_namespaces
        if clock - self.forecast_fetched < FORECAST_REFRESH and wanted <= self.forecast_namespaces:
            return self.forecast_cache
        self.forecast_fetched = clock  # a failure is not asked again within the refresh either
        query = workload_cpu_series(wanted, rate_window=self.settings.rate_window, window=plan.forecast_window,
                                    step=self.settings.query_step)
        try:
            answer, stats = await asyncio.to_thread(self.prometheus.fetch, [query])
        except PrometheusUnavailable as e:
            self.metrics.prometheus_failures.inc()
            log.warning("the forecaster's hour per workload: %s; forecasts use the last answer or the recent "
                        "per-pod series until it answers", e)
            return self.forecast_cache
        self.metrics.observe_queries(stats)
        self.forecast_cache, self.forecast_namespaces = answer[query.name], wanted
        return self.forecast_cache

    async def _baselines(self, due: list[PolicyRecord]) -> dict[str, WorkloadHistory]:
        """The detector's eight-day baselines per source, refreshed when the 5-minute step moves; a source
        whose query failed is left out (its signals are judged on their recent series)."""
        wanted: dict[str, set[str]] = {}
        queries = {}
        for p in due:
            if p.spec and p.spec.mode is not Mode.OFF and p.spec.anomaly_detection.enabled:
                for name, source in history_sources(p.spec).items():
                    wanted.setdefault(name, set()).add(p.namespace)
                    queries[name] = source
        now, current = self.clock().timestamp(), {}
        for name, namespaces in wanted.items():
            history = self.histories.setdefault(name, WorkloadHistory(self.prometheus, queries=queries[name]))
            try:  # the namespaces already held are kept: policies with other intervals are due in other cycles
                await asyncio.to_thread(history.refresh, namespaces | history.namespaces, now)
            except PrometheusUnavailable as e:
                log.warning("workload history %s not refreshed, judged on the recent series: %s", name, e)
                continue
            if history.current(now):
                current[name] = history
        return current

    async def evaluate(self, policy: PolicyRecord, view: ClusterView, batch: Batch,
                       conflict_with: PolicyRecord | None = None) -> None:
        now = self.clock()
        self.metrics.evaluations.inc()
        report = Report(policy.status)
        facts = cluster_facts(policy, view, conflict_with)
        verdict = first_verdict(CLUSTER_GATES, facts)
        if verdict is None:
            facts = await self._gather(facts, batch, now, view)
            verdict = first_verdict(METRIC_GATES, facts)
        if verdict is not None:
            return await self.publisher.publish(policy, explain_verdict(report, facts, verdict))
        await self.upkeep.run(facts, report, now)
        decision, insights = await self._decide(facts, report, view, now)
        if decision.apply:
            await self._act(facts, decision, report, now)
        explain_decision(facts, decision, insights, report, view.node_capacity, now)
        await self.publisher.publish(policy, report)

    # --- gather ---------------------------------------------------------------------------------------

    async def _gather(self, facts: PolicyFacts, batch: Batch, now: datetime, view: ClusterView) -> PolicyFacts:
        if batch.results is None:
            return PolicyFacts(**{**facts.__dict__, "prometheus_error": batch.error})
        signals = self.gather.joined(facts, batch.results, batch.histories, view.workloads.keys(), batch.past_pods)
        try:
            if self.gather.needs_queries(facts.policy.spec):
                signals = await asyncio.to_thread(self.gather.completed, facts, signals, now)
        except PrometheusUnavailable as e:
            return PolicyFacts(**{**facts.__dict__, "prometheus_error": str(e)})
        return PolicyFacts(**{**facts.__dict__, "signals": signals})

    # --- decide ---------------------------------------------------------------------------------------

    async def _decide(self, facts: PolicyFacts, report: Report, view: ClusterView,
                      now: datetime) -> tuple[Decision, Insights]:
        spec, signals = facts.policy.spec, facts.signals
        step = self.settings.duration("query_step").total_seconds()
        full = parse_duration(ANALYSIS_WINDOW).total_seconds() / step
        warmup = int(self.settings.duration("rate_window").total_seconds() / step)
        insights = analyse(spec, signals, step, warmup_points=warmup if any(
            len(c.cpu_series) < full for c in signals.containers) else 0, cache=self.analysis_cache)
        bottleneck = None
        acting = {h.rule.action for h in evaluate_rules(spec, signals)[0]}
        report.high_load = Action.INCREASE_RESOURCES in acting  # for the status; raises process priority
        if Action.OPTIMIZE_RESOURCES in acting:
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
            "lastAction": record.to_dict(), "history": [r.to_dict() for r in report.status.history]},
            last_action_time(policy.status))
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
