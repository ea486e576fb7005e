"""Small in-memory fakes of the two seams the evaluation loop talks through: the Kubernetes API
(`kubetune.kube.Kube`) and Prometheus (`kubetune.prometheus.Prometheus`). The cluster tier runs the
same loop against a real API server and a real Prometheus; these exist so every gate, action and
defect has a fast table test. Each fake keeps an ordered call log, so tests can assert order
(intent written before the change) as well as content."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

import numpy as np

from kubetune.api.common import parse_quantity
from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.kube import KubeError
from kubetune.prometheus import PrometheusUnavailable, QueryStats
from kubetune.records import ClusterView, PolicyRecord, WorkloadRecord
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
NS, APP = "shop", "web"
REF = WorkloadRef(NS, "Deployment", APP)
MI = 2**20


@dataclass
class FakeKube:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the policy's status as the API server holds it
    by_policy: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # the same, per policy
    refuse_resize: KubeError | None = None

    def resize_pod(self, namespace: str, name: str, containers: Mapping[str, Any]) -> None:
        if self.refuse_resize:
            self.calls.append(("resize-refused", name))
            raise self.refuse_resize
        self.calls.append(("resize", (name, dict(containers))))

    def patch_template(self, ref: WorkloadRef, containers: Mapping[str, Any]) -> None:
        self.calls.append(("template", dict(containers)))

    def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any],
                            read_last_action: str | None = None) -> None:
        self.calls.append(("status", dict(status)))
        self.status.update(status)  # a JSON merge patch of top-level fields
        self.by_policy.setdefault((namespace, name), {}).update(status)

    def event(self, involved: Mapping[str, str], type_: str, reason: str, message: str) -> None:
        self.calls.append(("event", (involved["kind"], type_, reason, message)))

    def of(self, kind: str) -> list[Any]:
        return [payload for k, payload in self.calls if k == kind]

    def events(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        return [(t, r, m) for k, t, r, m in self.of("event") if kind is None or k == kind]

    def reasons(self, kind: str | None = None) -> list[str]:
        return [r for _, r, _ in self.events(kind)]


@dataclass
class FakePrometheus:
    """`batch`: the cycle's answers by query name. `scalars` and `ranges`: (substring of the PromQL,
    answer) pairs for the per-policy queries, the first match wins; a range answer is a function of
    the evaluation time `at` returning ((t, v), ...). `matrices`: the same for /api/v1/query_range (the
    workload history), a function of (start, end, step) returning the raw matrix; `range_queries` logs
    each (expr, start, end, step)."""

    batch: dict[str, dict] = field(default_factory=dict)
    scalars: list[tuple[str, float | None]] = field(default_factory=list)
    ranges: list[tuple[str, Callable[[float], tuple]]] = field(default_factory=list)
    down: bool = False
    asked: list[str] = field(default_factory=list)
    matrices: list[tuple[str, Callable[[float, float, float], list[dict]]]] = field(default_factory=list)
    range_queries: list[tuple[str, float, float, float]] = field(default_factory=list)

    def fetch(self, queries):
        if self.down:
            raise PrometheusUnavailable("query cpu failed: connection refused")
        self.asked += [q.expr for q in queries]
        # Range answers (given as tuples here) as Prometheus.fetch returns them: float64 arrays.
        return {q.name: {k: np.array(v, dtype=np.float64) if isinstance(v, tuple) else v
                         for k, v in self.batch.get(q.name, {}).items()} for q in queries}, QueryStats(queries=len(queries))

    def range_series(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        if self.down:
            raise PrometheusUnavailable("connection refused")
        self.range_queries.append((expr, start, end, step))
        return next((f(start, end, step) for needle, f in self.matrices if needle in expr), [])

    def scalar(self, expr: str) -> float | None:
        self.asked.append(expr)
        return next((v for needle, v in self.scalars if needle in expr), None)

    def series(self, expr: str, at: float):
        self.asked.append(expr)
        return next((f(at) for needle, f in self.ranges if needle in expr), ())


def spec(**overrides) -> PerformancePolicySpec:
    body = {"targetRef": {"kind": "Deployment", "name": APP}, "mode": "Auto", "interval": "10s",
            "containers": [{"name": "*", "minAllowed": {"cpu": "100m", "memory": "64Mi"},
                            "maxAllowed": {"cpu": "2", "memory": "4Gi"}}],
            "prediction": {"enabled": False}, "anomalyDetection": {"enabled": False}}
    body.update(overrides)
    return PerformancePolicySpec.model_validate(body)


def policy(body: PerformancePolicySpec | None = None, *, status: Mapping[str, Any] | None = None, name: str = "pp",
           created: str = "2026-11-27T10:00:00Z", spec_error: str | None = None) -> PolicyRecord:
    return PolicyRecord(NS, name, f"uid-{name}", 1, created, body if body is not None or spec_error else spec(),
                        spec_error, status or {})


def resources(cpu: str = "500m", cpu_limit: str | None = "1", memory: str = "256Mi",
              memory_limit: str | None = "512Mi") -> tuple[ContainerResources, ...]:
    req = {"cpu": float(parse_quantity(cpu)), "memory": float(parse_quantity(memory))}
    lim = {k: float(parse_quantity(v)) for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    return (ContainerResources("app", req, lim),)


def pod(name: str, res: tuple[ContainerResources, ...] | None = None, *, phase: str = "Running",
        resize_pending: str | None = None) -> PodRecord:
    return PodRecord(NS, name, f"uid-{name}", "node-a", phase, res or resources(), resize_pending=resize_pending)


def view(p: PolicyRecord | list[PolicyRecord], pods: list[PodRecord], template=None, **kw) -> ClusterView:
    policies = p if isinstance(p, list) else [p]
    return ClusterView(policies=policies, pods={REF: tuple(pods)},
                       workloads={REF: WorkloadRecord("uid-web", template or resources())}, **kw)


def cpu_batch(pods: list[str], *, now: float, min5: float | None = None, max15: float | None = None,
              memory: float = 200 * MI, series: tuple[float, ...] | None = None, **extra: float) -> dict[str, dict]:
    """cAdvisor answers for container `app` of `pods`: CPU in cores now and over the default rules'
    windows, memory in bytes; `extra` adds per-container families (cpu_throttling, ...)."""
    def each(value):
        return {(NS, p, "app"): value for p in pods}

    batch = {"cpu": each(now), "memory": each(memory), **{k: each(v) for k, v in extra.items()}}
    if min5 is not None:
        batch["cpu_min_5m"] = each(min5)
    if max15 is not None:
        batch["cpu_max_15m"] = each(max15)
    if series is not None:
        batch["series:cpu"] = each(series)
    return batch


def later(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)
