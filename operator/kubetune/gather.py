"""Gather: what the loop knows about one policy before deciding. From the indexes (pure), then from
Prometheus: the cycle's batched answer joined in memory, plus the policy's own queries (application
metric templates, sustained windows of workload-level rules, and — when needed — the series that
verification compares and correlation explains). The Prometheus calls are synchronous; the loop runs
them through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Collection, Iterable, Mapping

from kubetune.analysis import BottleneckReason, ResourceSignal, find_bottleneck
from kubetune.api.common import parse_duration
from kubetune.api.performancepolicy import ActionRecord, Metric, PerformancePolicySpec, ScalingMethod
from kubetune.decisions import LATENCY_PERCENTILE, WorkloadSignals, workload_sustained_keys
from kubetune.gates import PolicyFacts
from kubetune.prometheus import Prometheus, PrometheusUnavailable, Samples
from kubetune.promql import (PromQuery, WorkloadQueries, history_queries, latency_history_queries,
                             request_history_queries, request_query_name, sustained, workload_series)
from kubetune.records import ClusterView, PolicyRecord
from kubetune.settings import OperatorSettings
from kubetune.history import WorkloadHistory
from kubetune.signals import (POD_NAME_SUFFIX, PastPods, current_resources, pods_total, with_workload_histories,
                              with_workload_series, workload_signals)
from kubetune.tenancy import QueryNotConfined
from kubetune.verification import MetricKind, MetricWindows
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

# The window of recent samples anomaly detection (without history) and correlation look at.
ANALYSIS_WINDOW = "5m"
# The forecaster's window (per workload, through the owner join): it was measured and calibrated on an
# hour (docs/analysis.md); 20 samples are too few to tell a trend from a step.
FORECAST_WINDOW = "1h"
# Which resource each correlated signal points at.
RESOURCE_OF_SIGNAL = {ResourceSignal.CPU_THROTTLING: "cpu", ResourceSignal.MEMORY_PRESSURE: "memory",
                      ResourceSignal.MAJOR_PAGE_FAULTS: "memory"}


def cluster_facts(policy: PolicyRecord, view: ClusterView, conflict_with: PolicyRecord | None) -> PolicyFacts:
    """The policy's target, pods and current resources from the indexes."""
    target = policy.target
    workload = view.workloads.get(target) if target else None
    if workload is None:
        return PolicyFacts(policy, conflict_with)
    pods = tuple(view.pods.get(target, ()))
    # A rollout's truth is the template (old pods linger while it rolls); in place, the pods'.
    resources = (workload.template if policy.spec.scaling.method is ScalingMethod.ROLLOUT
                 else current_resources(pods, workload.template))
    return PolicyFacts(policy, conflict_with, workload, pods, resources)


def workload_queries(policy: PolicyRecord, pods: list[PodRecord], rate_window: str) -> WorkloadQueries:
    """The policy's queries; PrometheusUnavailable (nothing is asked) when a template cannot be confined
    to the policy's namespace here although the `unconfined_query` gate passed it (it depends on $rate)."""
    metrics = policy.spec.metrics
    latency = metrics.latency if metrics else None
    error_counter, throughput_counter = request_counters(policy.spec)
    q = WorkloadQueries(
        policy.namespace, policy.spec.target_ref.name, tuple(p.name for p in pods), rate_window,
        nodes=tuple(sorted({p.node for p in pods if p.node})),
        latency_histogram=latency.histogram if latency else None,
        latency_template=latency.query if latency else None,
        error_rate_template=metrics.error_rate.query if metrics and metrics.error_rate else None,
        throughput_template=metrics.throughput.query if metrics and metrics.throughput else None,
        error_counter=error_counter, throughput_counter=throughput_counter)
    try:
        q.error_ratio(), q.throughput(), q.latency_seconds(95)
    except QueryNotConfined as e:
        raise PrometheusUnavailable(f"query template refused, nothing asked: {e}") from e
    return q


def request_counters(spec: PerformancePolicySpec) -> tuple[tuple[str, str] | None, str | None]:
    """((counter, failed matchers) of errorRate, counter of throughput), each None when not a counter."""
    metrics = spec.metrics
    error = metrics.error_rate if metrics and metrics.error_rate and metrics.error_rate.counter else None
    throughput = metrics.throughput if metrics and metrics.throughput and metrics.throughput.counter else None
    return ((error.counter, error.failed) if error else None), (throughput.counter if throughput else None)


def history_sources(spec: PerformancePolicySpec) -> dict[str, Callable[[Iterable[str]], list[PromQuery]]]:
    """The histories the policy's anomaly detection reads, by name, with their range queries: CPU and
    memory ("usage"), and its latency histogram and request counters (templates have none)."""
    sources: dict[str, Callable[[Iterable[str]], list[PromQuery]]] = {"usage": history_queries}
    latency = spec.metrics.latency if spec.metrics else None
    if latency and latency.histogram:
        sources[f"latency:{latency.histogram}"] = latency_history_queries(latency.histogram)
    error, throughput = request_counters(spec)
    if error:
        sources[request_query_name(*error)] = request_history_queries(*error)
    if throughput:
        sources[request_query_name(throughput, None)] = request_history_queries(throughput, None)
    return sources


@dataclass(frozen=True)
class MetricSource:
    """A workload-level metric: its PromQL and the factor to the unit rules use."""

    expr: str
    scale: float


def metric_sources(spec: PerformancePolicySpec, q: WorkloadQueries) -> dict[Metric, MetricSource]:
    sources: dict[Metric, MetricSource] = {}
    latency = spec.metrics.latency if spec.metrics else None
    for metric, percentile in LATENCY_PERCENTILE.items():
        expr = q.latency_seconds(percentile) if latency and percentile in latency.percentiles else None
        if expr:
            sources[metric] = MetricSource(expr, 1000.0)
    if (expr := q.error_ratio()) is not None:
        sources[Metric.ERROR_RATE_PERCENT] = MetricSource(expr, 100.0)
    if (expr := q.throughput()) is not None:
        sources[Metric.THROUGHPUT_RPS] = MetricSource(expr, 1.0)
    return sources


class PolicyMetrics:
    """The Prometheus half of gathering, for one policy."""

    def __init__(self, prometheus: Prometheus, settings: OperatorSettings):
        self.prometheus, self.settings = prometheus, settings

    def joined(self, facts: PolicyFacts, results: Mapping[str, Samples],
               histories: Mapping[str, WorkloadHistory] | None = None,
               workloads: Collection[WorkloadRef] = (), past_pods: PastPods | None = None) -> WorkloadSignals:
        """The batched answer (and the workload's histories that are current, by `history_sources` name)
        joined with the pods (no query); `past_pods`: the index of the recommendation window's pods, gone
        ones included; `workloads`: the known ones, so a pod of `api-x` is never read as a past pod of `api`."""
        histories = histories or {}
        policy, spec = facts.policy, facts.policy.spec
        latency = spec.metrics.latency if spec.metrics else None
        past = past_pods.of(policy.target, lambda name: any(
            WorkloadRef(policy.namespace, kind, name) in workloads for kind in POD_NAME_SUFFIX)) \
            if past_pods is not None and policy.target else ()
        signals = workload_signals(results, policy.namespace, list(facts.pods), facts.resources,
                                   histogram=latency.histogram if latency else None,
                                   percentiles=latency.percentiles if latency else (), past_pods=past)
        step = self.settings.duration("query_step").total_seconds()
        signals = with_workload_series(
            signals, results, histories.get("usage"), policy.namespace, spec.target_ref.name,
            full_points=int(parse_duration(FORECAST_WINDOW).total_seconds() / step),
            warmup_points=int(parse_duration(self.settings.rate_window).total_seconds() / step))
        error, throughput = request_counters(spec)
        signals = with_workload_histories(signals, histories, policy.namespace, spec.target_ref.name,
                                          histogram=latency.histogram if latency else None, error=error,
                                          throughput=throughput)
        names = [p.name for p in facts.running]
        if error:
            failed = pods_total(results.get(request_query_name(error[0], error[1]), {}), policy.namespace, names)
            total = pods_total(results.get(request_query_name(error[0], None), {}), policy.namespace, names)
            # No requests at all: no request failed (a rule "above 1 %" holds no evidence either way).
            if total is not None:
                signals = replace(signals, error_rate_percent=100 * (failed or 0.0) / total if total > 0 else 0.0)
        if throughput:
            signals = replace(signals, throughput_rps=pods_total(
                results.get(request_query_name(throughput, None), {}), policy.namespace, names))
        return signals

    @staticmethod
    def needs_queries(spec: PerformancePolicySpec) -> bool:
        """Whether the policy asks Prometheus anything of its own: application metric templates, `for`
        windows of workload rules, or (for anomaly detection) its latency and error-rate series."""
        metrics = spec.metrics
        if not metrics:
            return bool(workload_sustained_keys(spec))
        error, throughput = request_counters(spec)
        templates = (metrics.error_rate and not error) or (metrics.throughput and not throughput) \
            or (metrics.latency and metrics.latency.query)
        series = spec.anomaly_detection.enabled and (metrics.latency or metrics.error_rate)
        return bool(templates or series or workload_sustained_keys(spec))

    def completed(self, facts: PolicyFacts, signals: WorkloadSignals, now: datetime) -> WorkloadSignals:
        """`signals` completed with the policy's own queries (synchronous: run it off the event loop)."""
        policy, spec = facts.policy, facts.policy.spec
        latency = spec.metrics.latency if spec.metrics else None
        q = workload_queries(policy, facts.running, self.settings.rate_window)
        sources = metric_sources(spec, q)
        scalar = self.prometheus.scalar

        def value(metric: Metric) -> float | None:
            source = sources.get(metric)
            found = scalar(source.expr) if source else None
            return None if found is None else found * source.scale

        latency_ms = dict(signals.latency_ms)
        if latency and latency.query:  # a template: one query per percentile (histograms came batched)
            latency_ms = {p: v for m, p in LATENCY_PERCENTILE.items() if (v := value(m)) is not None}
        held = {}
        for metric, aggregate, window in workload_sustained_keys(spec):
            source = sources.get(metric)
            if source:
                found = scalar(sustained(source.expr, aggregate, window, self.settings.query_step))
                if found is not None:
                    held[(metric, aggregate, window)] = found * source.scale
        series = {}
        if spec.anomaly_detection.enabled:
            for field_name, metric in (("latency_series", Metric.LATENCY_P95_MS),
                                       ("error_rate_series", Metric.ERROR_RATE_PERCENT)):
                if metric in sources:
                    series[field_name] = tuple(v * sources[metric].scale for _, v in self._series(
                        sources[metric].expr, ANALYSIS_WINDOW, now.timestamp()))
        error, throughput = request_counters(spec)  # counters came batched, in `signals` already
        return replace(signals, latency_ms=latency_ms,
                       error_rate_percent=signals.error_rate_percent if error else value(Metric.ERROR_RATE_PERCENT),
                       throughput_rps=signals.throughput_rps if throughput else value(Metric.THROUGHPUT_RPS),
                       sustained=held, **series)

    def _series(self, expr: str, window: str, at: float) -> tuple[tuple[float, float], ...]:
        return self.prometheus.series(workload_series(expr, window, self.settings.query_step), at)

    def verification_windows(self, facts: PolicyFacts, action: ActionRecord,
                             before: tuple[ContainerResources, ...]) -> list[MetricWindows]:
        """CPU utilisation, p95 latency and error rate in the window before the action and after it."""
        policy, spec = facts.policy, facts.policy.spec
        window = parse_duration(spec.verification.window)
        acted = action.time.timestamp()
        span = f"{int(2 * window.total_seconds())}s"
        q = workload_queries(policy, facts.running, self.settings.rate_window)
        cpu_before = sum(c.requests.get("cpu", 0.0) for c in before)
        cpu_after = sum(c.requests.get("cpu", 0.0) for c in facts.resources)
        queries: list[tuple[str, MetricKind, str, Callable[[float, bool], float]]] = []
        if cpu_before and cpu_after:
            queries.append(("cpuUtilization", MetricKind.UTILIZATION, q.cpu_cores_per_pod(),
                            lambda v, after: 100 * v / (cpu_after if after else cpu_before)))
        latency = q.latency_seconds(95) if spec.metrics and spec.metrics.latency else None
        if latency:
            queries.append(("latencyP95Ms", MetricKind.LATENCY, latency, lambda v, after: 1000 * v))
        if (errors := q.error_ratio()) is not None:
            queries.append(("errorRatePercent", MetricKind.ERROR_RATE, errors, lambda v, after: 100 * v))
        windows = []
        for name, kind, expr, scale in queries:
            samples = self._series(expr, span, acted + window.total_seconds())
            windows.append(MetricWindows(name, kind, [scale(v, False) for t, v in samples if t < acted],
                                         [scale(v, True) for t, v in samples if t >= acted]))
        return windows

    def bottleneck(self, facts: PolicyFacts, now: datetime) -> tuple[str | None, str] | None:
        """Which resource's recent series moves with p95 latency: ("cpu" | "memory" | None, why);
        None when there are too few samples to tell (the decision then uses its thresholds)."""
        q = workload_queries(facts.policy, facts.running, self.settings.rate_window)
        latency_expr = q.latency_seconds(95)
        if latency_expr is None:
            return None
        at = now.timestamp()
        latency = dict(self._series(latency_expr, ANALYSIS_WINDOW, at))
        # The node's disk is a candidate too: when it explains latency, no container resource does.
        candidates = {signal: dict(self._series(expr, ANALYSIS_WINDOW, at)) for signal, expr in (
            (ResourceSignal.CPU_THROTTLING, q.throttled_share()),
            (ResourceSignal.MEMORY_PRESSURE, q.working_set_bytes()),
            (ResourceSignal.MAJOR_PAGE_FAULTS, q.major_faults()),
            (ResourceSignal.NODE_DISK_LATENCY, q.node_disk_latency())) if expr}
        times = sorted(latency)
        result = find_bottleneck([latency[t] for t in times],
                                 {name: [values.get(t, float("nan")) for t in times] for name, values in candidates.items()})
        if result.reason is BottleneckReason.INSUFFICIENT_DATA:
            return None
        return (RESOURCE_OF_SIGNAL.get(result.resource) if result.resource else None), result.message
