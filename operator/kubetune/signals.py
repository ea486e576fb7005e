"""Join one cycle's Prometheus samples with the pod index into each workload's signals. Pure.

CPU is averaged over the workload's pods (utilisation of the container as a whole); memory takes the
maximum (one pod near its limit is enough to matter). "Sustained" values are the per-pod minimum or
maximum over the window, averaged over pods: for "above X for W" that is never higher than the
minimum of the average, for "below" never lower than its maximum, so the join can only make a rule
fire later, never sooner.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from statistics import fmean
from typing import Callable, Collection, Iterable, Mapping

import numpy as np

from kubetune.decisions import ContainerSignals, Series, WorkloadSignals
from kubetune.history import WorkloadHistory
from kubetune.promql import WORKLOAD_CPU_SERIES, histogram_quantile, request_query_name
from kubetune.prometheus import Samples
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef, resources_key

HISTORY_QUERIES = ("cpu_p50", "cpu_p90", "cpu_peak", "memory_peak", "oom_kills")

# What follows `<workload>-` in the names controllers give pods: Deployment `<pod-template-hash>-<5>`,
# StatefulSet `<ordinal>`, DaemonSet `<5>`; hash and suffix are in Kubernetes' safe alphabet (no vowels,
# no 0, 1, 3), so `api-gateway-...` never reads as a pod of `api`.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
POD_NAME_SUFFIX = {"Deployment": re.compile(f"{_SAFE}{{1,10}}-{_SAFE}{{5}}"), "StatefulSet": re.compile(r"\d+"),
                   "DaemonSet": re.compile(f"{_SAFE}{{5}}")}


class PastPods:
    """The pods the recommendation window's per-pod answers name, found again by workload name: after a
    rollout the workload's history is in pods that no longer run, so the pod index no longer knows them.
    Built by the loop once per history answer (the join then costs a lookup per policy, not a scan)."""

    def __init__(self, results: Mapping[str, Samples]):
        self.by_prefix: dict[tuple[str, str], set[str]] = {}
        for namespace, pod in {key[:2] for q in HISTORY_QUERIES for key in results.get(q) or ()}:
            i = pod.find("-")
            while i > 0:
                self.by_prefix.setdefault((namespace, pod[:i]), set()).add(pod)
                i = pod.find("-", i + 1)

    def of(self, ref: WorkloadRef, is_workload: Callable[[str], bool]) -> set[str]:
        """The pods named as `ref`'s controller names them, except those a known workload with a longer
        name claims (`api-x-bcdfg` is `api-x`'s DaemonSet pod when `api-x` exists, not `api`'s)."""
        shape = POD_NAME_SUFFIX.get(ref.kind)
        if shape is None:
            return set()
        found = set()
        for pod in self.by_prefix.get((ref.namespace, ref.name), ()):
            start = len(ref.name) + 1
            if shape.fullmatch(pod, start) and not any(
                    is_workload(pod[:i]) for i in range(start, len(pod)) if pod[i] == "-"):
                found.add(pod)
        return found


def current_resources(pods: Iterable[PodRecord], template: tuple[ContainerResources, ...]) -> tuple[ContainerResources, ...]:
    """What the workload runs with: the most common resources among its running pods (after an
    in-place resize the pods, not the template, hold the truth); the template when none run."""
    running = {_key(p.containers): p.containers for p in pods if p.phase == "Running"}
    if not running:
        return template
    counts = Counter(_key(p.containers) for p in pods if p.phase == "Running")
    return running[counts.most_common(1)[0][0]]


def _key(containers: tuple[ContainerResources, ...]) -> tuple:
    return tuple(resources_key(c) for c in containers)


def _mean_right_aligned(series: list[np.ndarray]) -> np.ndarray:
    """The mean over pods per step, aligned on the newest sample (a new pod has a shorter series;
    subquery steps are aligned to absolute time, so the newest samples coincide)."""
    if not series:
        return np.empty(0)
    rows = np.full((len(series), max(s.size for s in series)), np.nan)
    for row, s in zip(rows, series):
        row[row.size - s.size:] = s
    return np.nanmean(rows, axis=0)


def pods_total(samples: Samples, namespace: str, pods: list[str]) -> float | None:
    """The sum over `pods` of a per-pod answer (requests per second); None when no pod has a series."""
    found = [v for pod in pods if (v := samples.get((namespace, pod))) is not None]
    return sum(found) if found else None


def _per_container(samples: Samples, namespace: str, pods: list[str], container: str) -> list[float]:
    return [v for pod in pods if (v := samples.get((namespace, pod, container))) is not None]


def workload_signals(results: Mapping[str, Samples], namespace: str, pods: list[PodRecord],
                     resources: tuple[ContainerResources, ...], *, histogram: str | None = None,
                     percentiles: Iterable[int] = (), past_pods: Collection[str] = ()) -> WorkloadSignals:
    """The cAdvisor families and histogram latency of one workload; application metrics from the
    policy's own templates are added by the caller (gather.py). The recommendation window's history is
    of the running pods and `past_pods` (those gone since: a rollout must not forget the peak); the
    recent families are of the running pods alone."""
    names = [p.name for p in pods if p.phase == "Running"]
    history_names = names + sorted(set(past_pods) - set(names))
    containers = []
    for res in resources:
        def values(query: str) -> list[float]:
            pods_asked = history_names if query in HISTORY_QUERIES else names
            return _per_container(results.get(query, {}), namespace, pods_asked, res.name)

        cpu, memory = values("cpu"), values("memory")
        usage = {k: v for k, v in (("cpu", fmean(cpu) if cpu else None), ("memory", max(memory, default=None)))
                 if v is not None}
        sustained = {}
        for query in results:
            parts = query.split("_", 2)
            if len(parts) == 3 and parts[1] in ("min", "max") and parts[0] in ("cpu", "memory"):
                found = values(query)
                if found:
                    sustained[(parts[0], parts[1], parts[2])] = fmean(found) if parts[0] == "cpu" else max(found)
        history = {}
        for query in HISTORY_QUERIES:
            found = values(query)
            if found:
                history[query] = sum(found) if query == "oom_kills" else max(found)
        throttling, faults = values("cpu_throttling"), values("major_faults")
        def series(query: str) -> Series:
            return _mean_right_aligned([v for v in values(query) if isinstance(v, np.ndarray) and v.size])

        containers.append(ContainerSignals(
            name=res.name, requests=res.requests, limits=res.limits, usage=usage, sustained=sustained,
            throttling=fmean(throttling) if throttling else None,
            major_faults_per_second=max(faults) if faults else None, history=history,
            cpu_series=series("series:cpu"), memory_series=series("series:memory")))
    latency = {}
    if histogram:
        buckets: dict[float, float] = {}
        for (ns, pod, le), rate in results.get(f"latency:{histogram}", {}).items():
            if ns == namespace and pod in names:
                buckets[float(le)] = buckets.get(float(le), 0.0) + rate
        for p in percentiles:
            seconds = histogram_quantile(p / 100, buckets)
            if seconds is not None:
                latency[p] = seconds * 1000
    return WorkloadSignals(containers=tuple(containers), latency_ms=latency)


def with_workload_series(signals: WorkloadSignals, results: Mapping[str, Samples], history: WorkloadHistory | None,
                         namespace: str, workload: str, *, full_points: int, warmup_points: int) -> WorkloadSignals:
    """`signals` with what the owner join knows of the workload: the forecaster's one-hour CPU series in
    place of the per-pod recent one, and the detector's eight-day CPU and memory history. Either is left
    as it was when the join has nothing (no kube-state-metrics, or a workload younger than a scrape).

    A one-hour series shorter than `full_points` began inside the window: its first `warmup_points`
    are rate() over a counter younger than its window, ramping up from zero, and are dropped."""
    found = results.get(WORKLOAD_CPU_SERIES, {})
    containers = []
    for c in signals.containers:
        changes = {}
        series = found.get((namespace, workload, c.name))
        if isinstance(series, np.ndarray) and series.size:
            changes["cpu_series"] = series[warmup_points:] if len(series) < full_points else series
        if history is not None:
            changes["cpu_history"] = history.get("cpu", namespace, workload, c.name)
            changes["memory_history"] = history.get("memory", namespace, workload, c.name)
        containers.append(replace(c, **changes) if changes else c)
    return replace(signals, containers=tuple(containers),
                   history_step_seconds=history.step if history is not None else signals.history_step_seconds)


def with_workload_histories(signals: WorkloadSignals, histories: Mapping[str, WorkloadHistory], namespace: str,
                            workload: str, *, histogram: str | None, error: tuple[str, str] | None,
                            throughput: str | None) -> WorkloadSignals:
    """`signals` with the workload-level histories the policy's sources have (batched per histogram and
    request counter through the owner join; keys as `gather.history_sources` names them): p95 latency in
    ms, error rate in percent, throughput in requests per second. Templates have none: per policy, they
    cannot be batched."""
    changes = {}
    if histogram and (found := histories.get(f"latency:{histogram}")) is not None:
        changes["latency_history"] = 1000.0 * found.get("latency", namespace, workload)
    if error and (found := histories.get(request_query_name(*error))) is not None:
        changes["error_rate_history"] = 100.0 * found.share("failed", "requests", namespace, workload)
    if throughput and (found := histories.get(request_query_name(throughput, None))) is not None:
        changes["throughput_history"] = found.get("requests", namespace, workload)
    return replace(signals, **changes) if changes else signals
