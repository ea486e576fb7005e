"""The report's only I/O: usage history from the Prometheus HTTP API (through `kubetune.prometheus`)
and today's pods, workloads and nodes from the Kubernetes API (through `kubetune.kube`)."""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from kubetune.api.common import parse_quantity
from kubetune.prometheus import Prometheus, PrometheusUnavailable
from kubetune.promql import CONTAINERS_ONLY, cpu_usage
from kubetune.report.build import (DAY, ContainerUsage, FloatArray, ReportError, ReportInput, _sum_rows,
                                   prometheus_duration)
from kubetune.workloads import RESOURCES, owning_workload, template_containers


def _matrix(result: list[dict], keys: Sequence[str], start: float, step: float, length: int) -> dict[tuple, FloatArray]:
    series = {}
    for item in result:
        values = np.full(length, np.nan)
        for t, v in item.get("values", []):
            index = round((float(t) - start) / step)
            if 0 <= index < length:
                values[index] = float(v)
        series[tuple(item["metric"].get(k, "") for k in keys)] = values
    return series


def _cluster_state(kubeconfig: str | None, namespace: str | None) -> tuple[list[dict], dict, list[dict]]:
    """Pods, workloads {(namespace, name): (kind, object)} and nodes, as plain API dicts."""
    from kubetune.kube import KubeError, load_api_client, send

    try:
        api = load_api_client(kubeconfig)
    except KubeError as e:
        raise ReportError(str(e)) from None
    scope = f"/namespaces/{namespace}" if namespace else ""

    def listing(group: str, plural: str) -> list[dict]:
        return send(api, f"list {plural}", "GET", f"{group}{scope}/{plural}").get("items") or []

    try:
        pods = listing("/api/v1", "pods")
        workloads = {}
        for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets"), ("DaemonSet", "daemonsets")):
            for obj in listing("/apis/apps/v1", plural):
                workloads[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = (kind, obj)
        nodes = send(api, "list nodes", "GET", "/api/v1/nodes").get("items") or []
    except KubeError as e:
        hint = " (the report lists pods, workloads and nodes)" if e.status else ": check the kubeconfig's server"
        raise ReportError(f"Kubernetes API: {e}{hint}") from None
    return pods, workloads, nodes


def _pod_workload(namespace: str, pod: str, live: Mapping[tuple[str, str], tuple[str, str]],
                  names_by_namespace: Mapping[str, list[str]]) -> str | None:
    """A pod's workload: its owner when the pod still exists, else the longest workload name
    `<workload>-` its name starts with (how controllers name pods; covers pods gone in a rollout)."""
    if (namespace, pod) in live:
        return live[(namespace, pod)][1]
    return next((w for w in names_by_namespace.get(namespace, []) if pod.startswith(w + "-")), None)


def gather(prometheus: Prometheus, *, kubeconfig: str | None = None, namespace: str | None = None,
           range_seconds: float = 7 * DAY, step: float = 3600.0, rate_window: float | None = None,
           end: float | None = None, progress: Callable[[str], None] = lambda message: None) -> ReportInput:
    """Read the window from Prometheus and today's pods, workloads and nodes from the cluster."""
    def query_range(what: str, expr: str) -> list[dict]:
        progress(f"reading {what} ({length} samples per series)")
        try:
            return prometheus.range_query(expr, start, end, step)
        except PrometheusUnavailable as e:
            raise ReportError(f"Prometheus: {e}") from None

    end = math.floor((time.time() if end is None else end) / step) * step
    start = end - math.floor(range_seconds / step) * step
    length = int(round((end - start) / step)) + 1
    window = prometheus_duration(rate_window or max(step, 60.0))
    selector = f'namespace="{namespace}"' if namespace else 'namespace!=""'
    keys = ("namespace", "pod", "container")
    notes = []

    try:
        prometheus.instant_query("vector(1)")  # reachable and answering, before the long queries
    except PrometheusUnavailable as e:
        raise ReportError(f"Prometheus: {e}") from None
    cpu = _matrix(query_range("CPU usage", cpu_usage(selector, window)), keys, start, step, length)
    memory = _matrix(query_range(
        "memory usage", f"max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{{{CONTAINERS_ONLY},{selector}}}[{window}]))"),
        keys, start, step, length)
    requested_raw = query_range(
        "requests", f"sum by (namespace, pod, container, resource) (kube_pod_container_resource_requests{{{selector},resource=~\"cpu|memory\"}})")
    requested = _matrix(requested_raw, (*keys, "resource"), start, step, length)
    if not requested_raw:
        notes.append("kube-state-metrics series (kube_pod_container_resource_requests) not found: requests are "
                     "today's pod templates, drawn flat over the window")
    try:
        oom = {tuple(item["metric"].get(k, "") for k in keys): float(item["value"][1]) for item in prometheus.instant_query(
            f"sum by (namespace, pod, container) (increase(container_oom_events_total{{{CONTAINERS_ONLY},{selector}}}"
            f"[{prometheus_duration(max(end - start, step))}]))", end)}
    except PrometheusUnavailable as e:
        raise ReportError(f"Prometheus: {e}") from None

    progress("reading pods, workloads and nodes")
    pods, workloads, nodes = _cluster_state(kubeconfig, namespace)
    live = {}
    replicas: dict[tuple[str, str], int] = defaultdict(int)
    for pod in pods:
        ref = owning_workload(pod)
        if ref is None or (ref.namespace, ref.name) not in workloads:
            continue
        live[(ref.namespace, pod["metadata"]["name"])] = (ref.kind, ref.name)
        if (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            replicas[(ref.namespace, ref.name)] += 1
    names_by_namespace: dict[str, list[str]] = defaultdict(list)
    for ns, name in workloads:
        names_by_namespace[ns].append(name)
    for names in names_by_namespace.values():
        names.sort(key=len, reverse=True)

    grouped: dict[tuple[str, str, str], list[tuple[str, str, str]]] = defaultdict(list)
    unowned = set()
    for key in set(cpu) | set(memory):
        ns, pod, container = key
        workload = _pod_workload(ns, pod, live, names_by_namespace)
        if workload is None:
            unowned.add((ns, pod))
            continue
        grouped[(ns, workload, container)].append(key)
    if unowned:
        notes.append(f"{len(unowned)} pods with usage belong to no Deployment, StatefulSet or DaemonSet "
                     f"(bare pods, Jobs, deleted workloads) and are left out")

    empty = np.full(length, np.nan)
    containers = []
    for (ns, workload, container), series_keys in sorted(grouped.items()):
        kind, obj = workloads[(ns, workload)]
        template = {c.name: c for c in template_containers(obj)}
        if container not in template:
            continue  # a container the workload no longer has: nothing to rightsize
        cpu_rows = np.vstack([cpu.get(k, empty) for k in series_keys])
        memory_rows = np.vstack([memory.get(k, empty) for k in series_keys])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
            cpu_per_pod = np.nanmean(cpu_rows, axis=0)
            memory_per_pod = np.nanmax(memory_rows, axis=0)
        requested_series = {}
        for resource in RESOURCES:
            rows = [requested[(*k, resource)] for k in series_keys if (*k, resource) in requested]
            if rows:
                requested_series[resource] = _sum_rows(rows, length)
        containers.append(ContainerUsage(
            namespace=ns, workload=workload, kind=kind, container=container,
            replicas=replicas.get((ns, workload), 0), requests=dict(template[container].requests),
            limits=dict(template[container].limits), cpu=_sum_rows(list(cpu_rows), length), cpu_per_pod=cpu_per_pod,
            memory=_sum_rows(list(memory_rows), length), memory_per_pod=memory_per_pod, requested=requested_series,
            oom_kills=sum(oom.get(k, 0.0) for k in series_keys if math.isfinite(oom.get(k, 0.0)))))
    if not containers:
        notes.append("no container usage of any workload in the window")

    allocatable: dict[str, float] = defaultdict(float)
    largest: dict[str, float] = defaultdict(float)
    for node in nodes:
        for resource in RESOURCES:
            amount = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
            if amount is not None:
                value = float(parse_quantity(amount))
                allocatable[resource] += value
                largest[resource] = max(largest[resource], value)
    return ReportInput(start=start, step=step, containers=tuple(containers), allocatable=dict(allocatable),
                       largest_node=dict(largest), notes=tuple(notes), source=prometheus.settings.prometheus_url, namespace=namespace)
