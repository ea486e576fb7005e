"""The PromQL the evaluation loop asks, built as plain data (no I/O).

One query per metric family per cycle, grouped by namespace/pod/container and joined with the pod
index in memory: the number of queries does not grow with the number of policies. It grows only with
the number of distinct `for` windows and latency histograms the policies use (usually two and one).
"Sustained for 5m" is asked of Prometheus (min/max_over_time over a subquery), so a restarted
operator decides exactly as one that never stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from kubetune.api.common import parse_duration
from kubetune.tenancy import confine, substitute

CONTAINER_KEY = ("namespace", "pod", "container")
POD_KEY = ("namespace", "pod")

# The kubelet's cAdvisor series; `container=""` is the pod cgroup and `POD` the pause container.
CONTAINERS_ONLY = 'container!="",container!="POD"'


@dataclass(frozen=True)
class PromQuery:
    """One instant query; its result is keyed by `key` labels."""

    name: str
    expr: str
    key: tuple[str, ...] = CONTAINER_KEY


def regex_literal(name: str) -> str:
    """A Kubernetes object name as a literal inside a PromQL regex string. Names hold only
    [a-z0-9.-]; of these only "." is a regex metacharacter, escaped once for RE2 and once more
    for the PromQL string (Python's re.escape also escapes "-", which PromQL strings refuse)."""
    return name.replace(".", "\\\\.")


def _namespace_matcher(namespaces: Iterable[str]) -> str:
    names = sorted(set(namespaces))
    return f'namespace=~"{"|".join(regex_literal(n) for n in names)}"' if names else 'namespace!=""'


def cpu_usage(ns: str, rate_window: str) -> str:
    return (f"sum by (namespace, pod, container) "
            f"(rate(container_cpu_usage_seconds_total{{{CONTAINERS_ONLY},{ns}}}[{rate_window}]))")


def memory_working_set(ns: str) -> str:
    return f"max by (namespace, pod, container) (container_memory_working_set_bytes{{{CONTAINERS_ONLY},{ns}}})"


@dataclass(frozen=True)
class QueryPlan:
    """What this cycle needs to know, derived from the policies being evaluated."""

    namespaces: frozenset[str]
    # (resource, "min" | "max", window) for sustained conditions.
    sustained: frozenset[tuple[str, str, str]] = frozenset()
    histograms: frozenset[str] = frozenset()
    with_recommendation_history: bool = True
    # The recent CPU usage series for trend prediction and anomaly detection; None = not needed.
    series_window: str | None = None
    # The forecaster's longer per-workload CPU series (owner join); None = not needed.
    forecast_window: str | None = None
    # Request counters of errorRate/throughput (counter, label matchers of failed requests or None).
    counters: frozenset[tuple[str, str | None]] = frozenset()


def cycle_queries(plan: QueryPlan, *, rate_window: str, step: str, history: str) -> list[PromQuery]:
    ns = _namespace_matcher(plan.namespaces)
    usage = {"cpu": cpu_usage(ns, rate_window), "memory": memory_working_set(ns)}
    queries = [PromQuery("cpu", usage["cpu"]), PromQuery("memory", usage["memory"]),
               PromQuery("cpu_throttling",
                         f"sum by (namespace, pod, container) (rate(container_cpu_cfs_throttled_periods_total{{{CONTAINERS_ONLY},{ns}}}[{rate_window}]))"
                         f" / sum by (namespace, pod, container) (rate(container_cpu_cfs_periods_total{{{CONTAINERS_ONLY},{ns}}}[{rate_window}]))"),
               PromQuery("major_faults",
                         f"sum by (namespace, pod, container) (rate(container_memory_failures_total{{failure_type=\"pgmajfault\",scope=\"container\",{CONTAINERS_ONLY},{ns}}}[{rate_window}]))")]
    for resource, agg, window in sorted(plan.sustained):
        # Only series that cover the window count: a pod seen for 10 s has not been idle "for 15m".
        points = max(1, int(0.8 * _seconds(window) / _seconds(step)))
        series = f"({usage[resource]})[{window}:{step}]"
        queries.append(PromQuery(f"{resource}_{agg}_{window}",
                                 f"{agg}_over_time({series}) and on (namespace, pod, container) "
                                 f"count_over_time({series}) >= {points}"))
    if plan.series_window:
        queries.append(PromQuery("series:cpu", f"({usage['cpu']})[{plan.series_window}:{step}]"))
        queries.append(PromQuery("series:memory", f"({usage['memory']})[{plan.series_window}:{step}]"))
    if plan.forecast_window:
        queries.append(workload_cpu_series(plan.namespaces, rate_window=rate_window, window=plan.forecast_window,
                                           step=step))
    for counter, failed in sorted(plan.counters, key=lambda c: (c[0], c[1] or "")):
        # One query per counter (and per failed-request matcher) for every policy using it.
        matchers = f"{failed},{ns}" if failed else ns
        queries.append(PromQuery(request_query_name(counter, failed),
                                 f"sum by (namespace, pod) (rate({counter}{{{matchers}}}[{rate_window}]))", key=POD_KEY))
    for histogram in sorted(plan.histograms):
        queries.append(PromQuery(f"latency:{histogram}",
                                 f"sum by (namespace, pod, le) (rate({histogram}_bucket{{{ns}}}[{rate_window}]))",
                                 key=("namespace", "pod", "le")))
    if plan.with_recommendation_history:
        # A coarse step keeps a day of history cheap: 96 points per series.
        coarse = f"{max(15, _seconds(history) // 96)}s"
        queries += [
            PromQuery("cpu_p50", f"quantile_over_time(0.5, ({usage['cpu']})[{history}:{coarse}])"),
            PromQuery("cpu_p90", f"quantile_over_time(0.9, ({usage['cpu']})[{history}:{coarse}])"),
            PromQuery("cpu_peak", f"max_over_time(({usage['cpu']})[{history}:{coarse}])"),
            PromQuery("memory_peak", f"max_over_time(({usage['memory']})[{history}:{coarse}])"),
            PromQuery("oom_kills", f"sum by (namespace, pod, container) "
                                   f"(increase(container_oom_events_total{{{CONTAINERS_ONLY},{ns}}}[{history}]))"),
        ]
    return queries


# The recording rules' pod -> Deployment/StatefulSet/DaemonSet map (needs kube-state-metrics).
POD_OWNER = "kubetune:pod_workload:owner"
WORKLOAD_KEY = ("namespace", "workload", "container")
# Where the forecaster's one-hour CPU series of a workload is found in the cycle's answer.
WORKLOAD_CPU_SERIES = "series:cpu:workload"


def _by_workload(per_pod: str, ns: str) -> str:
    """`per_pod` (keyed by namespace, pod, container) averaged over each workload's pods through the
    owner join: one series per workload and container, whatever pods it had at each moment."""
    return (f"avg by (namespace, workload, container) ({per_pod} "
            f"* on (namespace, pod) group_left (workload) {POD_OWNER}{{{ns}}})")


def workload_cpu_series(namespaces: Iterable[str], *, rate_window: str, window: str, step: str) -> PromQuery:
    """The forecaster's CPU series (cores, mean over the workload's pods) over `window`: one series per
    workload rather than per pod keeps an hour at 15 s to 1,000 series at 1,000 workloads, not 10,000."""
    ns = _namespace_matcher(namespaces)
    return PromQuery(WORKLOAD_CPU_SERIES, f"({_by_workload(cpu_usage(ns, rate_window), ns)})[{window}:{step}]",
                     WORKLOAD_KEY)


def history_queries(namespaces: Iterable[str]) -> list[PromQuery]:
    """The anomaly detector's baselines, per workload and container, from the recorded 5-minute series
    (range queries at a 5-minute step; empty without kube-state-metrics, which the owner map needs)."""
    ns = _namespace_matcher(namespaces)
    return [PromQuery("history:cpu", _by_workload(f"kubetune:container_cpu_usage_cores:rate5m{{{ns}}}", ns),
                      WORKLOAD_KEY),
            PromQuery("history:memory", _by_workload(f"kubetune:container_memory_working_set_bytes:max{{{ns}}}", ns),
                      WORKLOAD_KEY)]


def latency_history_queries(histogram: str) -> Callable[[Iterable[str]], list[PromQuery]]:
    """The p95 latency (seconds) of each workload from `histogram`, buckets summed over its pods through
    the owner join (over eight days the pods are not today's, so `$pods` cannot select them)."""
    def queries(namespaces: Iterable[str]) -> list[PromQuery]:
        ns = _namespace_matcher(namespaces)
        return [PromQuery("history:latency", f"histogram_quantile(0.95, sum by (namespace, workload, le) "
                          f"(rate({histogram}_bucket{{{ns}}}[5m]) * on (namespace, pod) group_left (workload) "
                          f"{POD_OWNER}{{{ns}}}))", WORKLOAD_KEY)]
    return queries


def request_history_queries(counter: str, failed: str | None) -> Callable[[Iterable[str]], list[PromQuery]]:
    """Requests per second of each workload from a request counter (`history:requests`) and, with
    `failed`, of its failed requests (`history:failed`), summed over its pods through the owner join."""
    def queries(namespaces: Iterable[str]) -> list[PromQuery]:
        ns = _namespace_matcher(namespaces)

        def per_workload(matchers: str) -> str:
            return (f"sum by (namespace, workload) (rate({counter}{{{matchers}}}[5m]) "
                    f"* on (namespace, pod) group_left (workload) {POD_OWNER}{{{ns}}})")
        found = [PromQuery("history:requests", per_workload(ns), WORKLOAD_KEY)]
        return found + ([PromQuery("history:failed", per_workload(f"{failed},{ns}"), WORKLOAD_KEY)] if failed else [])
    return queries


def request_query_name(counter: str, failed: str | None) -> str:
    """The batched query of a request counter: all requests, or those `failed` matches."""
    return f"requests:{counter}" + (f":{failed}" if failed else "")


def workload_series(expr: str, window: str, step: str) -> str:
    """`expr` as a range over `window` at `step` (evaluated at a chosen time: before and after an action)."""
    return f"({expr})[{window}:{step}]"


def sustained(expr: str, aggregate: str, window: str, step: str) -> str:
    """The minimum or maximum of a workload-level `expr` over `window`, only when samples cover most of
    it: "p95 above 200 for 5m" must not hold on the first 10 s of a new workload's latency."""
    points = max(1, int(0.8 * _seconds(window) / _seconds(step)))
    series = workload_series(f"sum({expr})", window, step)
    return f"{aggregate}_over_time({series}) and on () count_over_time({series}) >= {points}"


def workload_pods(namespace: str, workload: str) -> str:
    """Matchers for a workload's pods by name: `<workload>-...` is how its controller names them."""
    return f'namespace="{namespace}",pod=~"{regex_literal(workload)}-.+"'


def pods_regex(pods: Iterable[str]) -> str:
    """$pods: the pods' names as one regex ("^$", matching no pod, when there are none)."""
    return "|".join(regex_literal(p) for p in sorted(pods)) or "^$"


def policy_query(template: str, *, namespace: str, workload: str, pods: Iterable[str], rate_window: str,
                 quantile: float | None = None) -> str:
    """A user's PromQL template with $namespace, $workload, $pods (regex of pod names), $rate and,
    for latency templates, $quantile; confined to `namespace` (tenancy.confine), or QueryNotConfined."""
    return confine(substitute(template, namespace=namespace, workload=workload, pod_regex=pods_regex(pods),
                              rate_window=rate_window, quantile=quantile), namespace)


@dataclass(frozen=True)
class WorkloadQueries:
    """The per-workload PromQL: application metrics from the policy's templates, and the series that
    verification compares and correlation explains. Each is one expression over the workload's pods,
    in the units the rules use (seconds, ratios, cores, bytes) before scaling."""

    namespace: str
    workload: str
    pods: tuple[str, ...]  # the running pods' names, for $pods
    rate_window: str
    nodes: tuple[str, ...] = ()  # the nodes running them, for the node agent's disk series
    latency_histogram: str | None = None
    latency_template: str | None = None
    error_rate_template: str | None = None
    throughput_template: str | None = None
    error_counter: tuple[str, str] | None = None  # (counter, matchers of failed requests)
    throughput_counter: str | None = None

    @property
    def selector(self) -> str:
        return workload_pods(self.namespace, self.workload)

    def _template(self, template: str, quantile: float | None = None) -> str:
        return policy_query(template, namespace=self.namespace, workload=self.workload, pods=self.pods,
                            rate_window=self.rate_window, quantile=quantile)

    def latency_seconds(self, percentile: int) -> str | None:
        q = percentile / 100
        if self.latency_histogram:
            return (f"histogram_quantile({q:g}, sum by (le) (rate({self.latency_histogram}_bucket"
                    f"{{{self.selector}}}[{self.rate_window}])))")
        return self._template(self.latency_template, q) if self.latency_template else None

    def _requests(self, counter: str, failed: str | None = None) -> str:
        matchers = f"{failed},{self.selector}" if failed else self.selector
        return f"sum(rate({counter}{{{matchers}}}[{self.rate_window}]))"

    def error_ratio(self) -> str | None:
        if self.error_counter:
            counter, failed = self.error_counter
            return f"{self._requests(counter, failed)} / {self._requests(counter)}"
        return self._template(self.error_rate_template) if self.error_rate_template else None

    def throughput(self) -> str | None:
        if self.throughput_counter:
            return self._requests(self.throughput_counter)
        return self._template(self.throughput_template) if self.throughput_template else None

    def cpu_cores_per_pod(self) -> str:
        return (f"avg(sum by (pod) (rate(container_cpu_usage_seconds_total{{{self.selector},{CONTAINERS_ONLY}}}"
                f"[{self.rate_window}])))")

    def throttled_share(self) -> str:
        containers = f"{self.selector},{CONTAINERS_ONLY}"
        return (f"sum(rate(container_cpu_cfs_throttled_periods_total{{{containers}}}[{self.rate_window}])) / "
                f"sum(rate(container_cpu_cfs_periods_total{{{containers}}}[{self.rate_window}]))")

    def working_set_bytes(self) -> str:
        return f"max(container_memory_working_set_bytes{{{self.selector},{CONTAINERS_ONLY}}})"

    def node_disk_latency(self) -> str | None:
        """The slowest of the workload's nodes' average I/O latency in seconds, from the node agent's
        counters (the chart's monitors label them with `node`)."""
        if not self.nodes:
            return None
        node = f'node=~"{"|".join(regex_literal(n) for n in sorted(self.nodes))}"'

        def rate(name: str) -> str:
            return f"rate(kubetune_node_disk_{name}_total{{{node}}}[{self.rate_window}])"

        return (f"max(sum by (node) ({rate('read_time_seconds')} + {rate('write_time_seconds')}) / "
                f"sum by (node) ({rate('reads_completed')} + {rate('writes_completed')}))")

    def major_faults(self) -> str:
        return (f'sum(rate(container_memory_failures_total{{failure_type="pgmajfault",scope="container",'
                f'{self.selector},{CONTAINERS_ONLY}}}[{self.rate_window}]))')


def _seconds(duration: str) -> int:
    return int(parse_duration(duration).total_seconds())


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket rates {le: rate}; None without data.

    Done in memory so the buckets of all of a workload's pods can be summed first (PromQL cannot group
    by workload without kube-state-metrics) while Prometheus is still asked once per histogram.
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    if not math.isinf(bounds[-1]):
        return None  # a histogram without +Inf is malformed; Prometheus answers NaN
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound
