"""The join of the recommendation window's per-pod answers with a workload (soak defect 2): the pods it
had over the window, gone ones included, found by the names its controller gives them — and never the
pods of a workload whose name merely starts with the same words."""

from __future__ import annotations

import pytest

from kubetune.signals import PastPods, workload_signals
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

pytestmark = pytest.mark.unit

NS = "shop"
APP = (ContainerResources("app", {"cpu": 0.5}, {}),)


def peak_seen(kind: str, workload: str, peaks: dict[tuple[str, str], float], running: list[str] = (),
              known: set[str] = frozenset()) -> float | None:
    """The cpu_peak the join gives `workload`: `peaks` is Prometheus' answer per (namespace, pod);
    `running`: the workload's pods in the index now; `known`: the other workloads of the namespace."""
    results = {"cpu_peak": {(ns, pod, "app"): v for (ns, pod), v in peaks.items()}}
    past = PastPods(results).of(WorkloadRef(NS, kind, workload), lambda name: name in known)
    pods = [PodRecord(NS, name, f"uid-{name}", "node-a", "Running", APP) for name in running]
    signals = workload_signals(results, NS, pods, APP, past_pods=past)
    return signals.containers[0].history.get("cpu_peak")


ROWS = [
    # kind, workload, the answer's pods, running now, other known workloads, the peak the join must see
    ("a replaced Deployment pod counts", "Deployment", "api",
     {(NS, "api-7c9d8f6b5-bcdfg"): 0.45, (NS, "api-6d4f8b9c7-hkmnp"): 0.1}, ["api-6d4f8b9c7-hkmnp"], set(), 0.45),
    ("api-gateway's pods are not api's", "Deployment", "api",
     {(NS, "api-gateway-5b9c8d7f4-xzvtr"): 2.0, (NS, "api-6d4f8b9c7-hkmnp"): 0.1}, ["api-6d4f8b9c7-hkmnp"], set(), 0.1),
    ("a known DaemonSet api-x claims api-x-<5>", "Deployment", "api",
     {(NS, "api-x-bcdfg"): 2.0, (NS, "api-6d4f8b9c7-hkmnp"): 0.1}, ["api-6d4f8b9c7-hkmnp"], {"api-x"}, 0.1),
    ("another namespace's pod of the same name", "Deployment", "api",
     {("other", "api-7c9d8f6b5-bcdfg"): 2.0, (NS, "api-6d4f8b9c7-hkmnp"): 0.1}, ["api-6d4f8b9c7-hkmnp"], set(), 0.1),
    ("a StatefulSet's ordinals, one gone", "StatefulSet", "db",
     {(NS, "db-0"): 0.2, (NS, "db-1"): 0.7, (NS, "db-backup-0"): 3.0}, ["db-0"], set(), 0.7),
    ("a DaemonSet's pods, not a Deployment's of the same prefix", "DaemonSet", "agent",
     {(NS, "agent-bcdfg"): 0.3, (NS, "agent-7c9d8f6b5-hkmnp"): 1.0}, [], set(), 0.3),
    ("a running pod counts whatever its name", "Deployment", "web",
     {(NS, "web-1"): 0.4}, ["web-1"], set(), 0.4),
    ("nothing of the workload in the answer", "Deployment", "api",
     {(NS, "apiserver-7c9d8f6b5-bcdfg"): 1.0}, [], set(), None),
]


@pytest.mark.parametrize("kind, workload, peaks, running, known, expected",
                         [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_the_recommendation_history_is_the_workloads_pods_over_the_window(kind, workload, peaks, running, known, expected):
    assert peak_seen(kind, workload, peaks, running, known) == expected


def test_recent_usage_is_of_the_running_pods_alone():
    # A gone pod's last rate is not the workload's usage now: only the window's history reads it.
    results = {"cpu": {(NS, "api-7c9d8f6b5-bcdfg", "app"): 0.45, (NS, "api-6d4f8b9c7-hkmnp", "app"): 0.1}}
    pods = [PodRecord(NS, "api-6d4f8b9c7-hkmnp", "uid", "node-a", "Running", APP)]
    signals = workload_signals(results, NS, pods, APP, past_pods={"api-7c9d8f6b5-bcdfg"})
    assert signals.containers[0].usage["cpu"] == 0.1
