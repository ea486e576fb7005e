"""The operator's own /metrics: what it evaluated, decided and did, and what Prometheus cost it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubetune.prometheus import QueryStats


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluations = Counter("kubetune_policy_evaluations_total", "Policy evaluations.", registry=r)
        self.decisions = Counter("kubetune_decisions_total", "Decisions by action and reason.", ["action", "reason"],
                                 registry=r)
        self.actions = Counter("kubetune_actions_total", "Changes made to workloads, by result.", ["result"], registry=r)
        self.cycle_seconds = Histogram("kubetune_evaluation_cycle_duration_seconds", "Duration of one evaluation cycle.",
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.cycle_failures = Counter("kubetune_evaluation_cycle_failures_total", "Cycles that failed.", registry=r)
        self.prometheus_queries = Counter("kubetune_prometheus_queries_total", "Prometheus queries made.", registry=r)
        self.prometheus_seconds = Histogram("kubetune_prometheus_query_duration_seconds", "Prometheus query time.",
                                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=r)
        self.prometheus_failures = Counter("kubetune_prometheus_failures_total", "Cycles without Prometheus data.",
                                           registry=r)
        self.leader = Gauge("kubetune_leader", "Shards (Leases) this replica holds; 0 = standby, 1 = leader "
                            "when there is one shard.", registry=r)
        self.node_tunings = Gauge("kubetune_node_tunings", "NodeTuning objects the operator maintains.", registry=r)

    def observe_queries(self, stats: QueryStats) -> None:
        self.prometheus_queries.inc(stats.queries)
        for seconds in stats.per_query.values():
            self.prometheus_seconds.observe(seconds)
