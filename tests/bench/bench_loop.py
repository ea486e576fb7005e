"""The evaluation loop's own cost, without an API server or Prometheus: one cycle over N policies of
10 pods each, with the in-memory fakes of the unit tests at the two seams, so what is measured is the
operator's Python (join, analysis, decisions, status building) and nothing else. The full-system
figures (API calls, Prometheus time, RSS of the real process) come from bench_operator.py.

    .venv/bin/python -m pytest tests/bench/bench_loop.py -m bench -s
    KUBETUNE_BENCH_PROFILE=1 ...   # also print the top of a cProfile of one cycle

Prints the median cycle time and the peak memory the cycle allocated (tracemalloc) per policy count;
asserts nothing about time.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import statistics
import time
import tracemalloc
from dataclasses import replace

import pytest

from kubetune.evaluation import Evaluator
from kubetune.predictions import AnalysisCache
from kubetune.metrics import OperatorMetrics
from kubetune.records import ClusterView, PolicyRecord, WorkloadRecord
from kubetune.settings import OperatorSettings
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef
from tests.unit.loopfakes import FakeKube, FakePrometheus, spec

pytestmark = pytest.mark.bench

SCALES = tuple(int(n) for n in os.environ.get("KUBETUNE_BENCH_SCALES", "100,1000,2000").split(","))
REPLICAS = 10
CYCLES = 3
TARGET_SECONDS = 5.0


def scenario(policies: int) -> tuple[ClusterView, FakePrometheus]:
    """Every policy with the default rules, prediction and anomaly detection on (the defaults), its
    pods' usage, 5-minute series and a day's history in the batched answer."""
    res = (ContainerResources("app", {"cpu": 0.5, "memory": 256 * 2**20}, {"cpu": 1.0, "memory": 512 * 2**20}),)
    body = spec(prediction={"enabled": True}, anomalyDetection={"enabled": True}, mode="Auto")
    records, pods, workloads = [], {}, {}
    batch: dict[str, dict] = {k: {} for k in ("cpu", "memory", "cpu_min_5m", "cpu_max_15m", "series:cpu",
                                              "series:memory", "cpu_p50", "cpu_p90", "cpu_peak", "memory_peak")}
    for i in range(policies):
        ns, name = f"team-{i % 10}", f"app-{i}"
        ref = WorkloadRef(ns, "Deployment", name)
        records.append(PolicyRecord(ns, name, f"uid-{i}", 1, "2026-11-27T10:00:00Z",
                                    body.model_copy(update={"target_ref": body.target_ref.model_copy(update={"name": name})}),
                                    None, {}))
        workloads[ref] = WorkloadRecord(f"w-{i}", res)
        pods[ref] = tuple(PodRecord(ns, f"{name}-{j}", f"p-{i}-{j}", "node", "Running", res) for j in range(REPLICAS))
        load = 0.15 + 0.2 * (i % 3)  # 30 %, 70 %, 110 % of the request: some scale, some do not
        for p in pods[ref]:
            key = (ns, p.name, "app")
            batch["cpu"][key] = load
            batch["memory"][key] = 200 * 2**20
            batch["cpu_min_5m"][key] = load
            batch["cpu_max_15m"][key] = load
            # 5 minutes at the default 15 s step: 20 points
            # (+ i: every policy's series differs, as real ones do, so no analysis is shared between them)
            batch["series:cpu"][key] = tuple(load + 0.01 * ((k * 7) % 5) + 1e-9 * i for k in range(20))
            batch["series:memory"][key] = tuple(200 * 2**20 + 2**20 * ((k * 3) % 4) + i for k in range(20))
            batch["cpu_p50"][key], batch["cpu_p90"][key], batch["cpu_peak"][key] = load, load * 1.1, load * 1.3
            batch["memory_peak"][key] = 220 * 2**20
    return ClusterView(policies=records, pods=pods, workloads=workloads), FakePrometheus(batch=batch)


def one_cycle(evaluator: Evaluator, view: ClusterView, new_series: bool = False) -> float:
    # As the index would after the watch events: each policy carries the status last written.
    statuses = evaluator.kube.by_policy
    view.policies = [replace(p, status_json=statuses.get(p.key, p.status_json)) for p in view.policies]
    evaluator.last_run.clear()  # every policy due
    if new_series:  # as if every series had gained a point since the last cycle: nothing analysed is reused
        evaluator.analysis_cache = AnalysisCache()
    start = time.perf_counter()
    asyncio.run(evaluator.cycle(view))
    return time.perf_counter() - start


def measure(policies: int) -> tuple[float, float, float, int]:
    view, prom = scenario(policies)
    evaluator = Evaluator(OperatorSettings(), prom, FakeKube(), OperatorMetrics())
    one_cycle(evaluator, view)  # warm: imports, first decisions and status writes
    one_cycle(evaluator, view)  # steady state from here: statuses read back, actions in cooldown
    writes_before = len(evaluator.kube.of("status"))
    times = [one_cycle(evaluator, view) for _ in range(CYCLES)]
    writes = (len(evaluator.kube.of("status")) - writes_before) // CYCLES
    new = [one_cycle(evaluator, view, new_series=True) for _ in range(CYCLES)]
    tracemalloc.start()
    one_cycle(evaluator, view)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if os.environ.get("KUBETUNE_BENCH_PROFILE"):
        profile = cProfile.Profile()
        profile.enable()
        one_cycle(evaluator, view)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return statistics.median(times), statistics.median(new), peak / 2**20, writes


def test_bench_evaluation_loop():
    print(f"\nevaluation loop alone (fakes at the seams), {REPLICAS} pods per policy, median of {CYCLES} cycles")
    print("(cycle s: every series as in the cycle before, so analysis results are reused — most cycles, since a")
    print(" series gains a point once per 15 s query step; new series: every one changed, nothing reused)")
    print(f"{'policies':>9} {'cycle s':>8} {'new series s':>13} {'target s':>9} {'per policy ms':>14} "
          f"{'peak alloc MiB':>15} {'status writes':>14}")
    for policies in SCALES:
        seconds, new, peak, writes = measure(policies)
        print(f"{policies:>9} {seconds:>8.2f} {new:>13.2f} {TARGET_SECONDS:>9.1f} {1000 * seconds / policies:>14.2f} "
              f"{peak:>15.1f} {writes:>14}")
