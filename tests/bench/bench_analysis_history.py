"""The cost of the loop's long series at scale (issue 16), with the fakes of the unit tests at the seams
(tests/unit/loopfakes.py), so what is measured is the operator's Python and what it asks:

- the workload history (`kubetune.history.WorkloadHistory`): bytes held at N workloads, queries,
  series and samples per fill and per 5-minute refresh, the peak the parsed answers allocate
  (tracemalloc; the fake answers with the lists prometheus-api-client's JSON parse gives) and the size
  of one fill query's JSON text (MiB) as Prometheus would send it;
- the forecaster's one-hour CPU series per workload in the cycle's answer (samples per cycle);
- the loop's cycle time with the history (the first cycle after a step judges eight days per signal,
  the others reuse the verdicts) against the same cycle without it.

    .venv/bin/python -m pytest tests/bench/bench_analysis_history.py -m bench -s
    KUBETUNE_BENCH_SCALES=1000 ...

Prints figures; asserts nothing about time or memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import tracemalloc
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from kubetune.evaluation import Evaluator
from kubetune.history import FILL_CHUNK_STEPS, WorkloadHistory
from kubetune.metrics import OperatorMetrics
from kubetune.settings import OperatorSettings
from tests.bench.bench_loop import scenario
from tests.unit.loopfakes import FakeKube, FakePrometheus

pytestmark = pytest.mark.bench

SCALES = tuple(int(n) for n in os.environ.get("KUBETUNE_BENCH_SCALES", "100,1000").split(","))
START = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
MIB = 2**20


def matrices(workloads: int):
    """query_range answers for every workload's container `app` (namespace team-<i % 10>, as
    bench_loop.scenario names them): a daily curve with noise, cores and bytes."""
    def family(level: float):
        def answer(start: float, end: float, step: float) -> list[dict]:
            times = np.arange(start, end + step / 2, step)
            daily = 1 + 0.5 * np.sin(2 * np.pi * times / 86_400)
            rng = np.random.default_rng(int(start))
            return [{"metric": {"namespace": f"team-{i % 10}", "workload": f"app-{i}", "container": "app"},
                     "values": [[float(t), repr(float(v))] for t, v in
                                zip(times, level * daily * (1 + 0.05 * rng.standard_normal(times.size)))]}
                    for i in range(workloads)]
        return answer
    return [("container_cpu_usage_cores", family(0.3)), ("container_memory_working_set_bytes", family(200 * MIB))]


def traced(call):
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    result = call()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, (after - before) / MIB, (peak - before) / MIB


def history_figures(workloads: int) -> None:
    prom = FakePrometheus(matrices=matrices(workloads))
    history = WorkloadHistory(prom)
    namespaces = {f"team-{i % 10}" for i in range(workloads)}
    fill, held, fill_peak = traced(lambda: history.refresh(namespaces, START.timestamp()))
    chunk_json = len(json.dumps(matrices(workloads)[0][1](0, (FILL_CHUNK_STEPS - 1) * 300, 300))) / MIB
    step, _, step_peak = traced(lambda: history.refresh(namespaces, START.timestamp() + 300))
    series = len(history.series)
    print(f"{workloads:>9} {series:>7} {history.nbytes() / MIB:>10.1f} {held:>13.1f} {fill.queries:>7}"
          f" {fill.samples:>13,} {fill_peak:>10.1f} {chunk_json:>13.1f} {step.queries:>7} {step.samples:>9,}"
          f" {step_peak:>9.2f}")


def cycle_seconds(policies: int, *, with_history: bool) -> tuple[float, float]:
    """(first cycle after the step moved, median of the next 3) in seconds."""
    view, prom = scenario(policies)
    # bench_loop's policies detect anomalies; the workload hour for the forecaster as the owner join gives it.
    hour = tuple(0.3 + 0.01 * ((k * 7) % 5) for k in range(240))
    prom.batch["series:cpu:workload"] = {(f"team-{i % 10}", f"app-{i}", "app"): hour for i in range(policies)}
    if with_history:
        prom.matrices = matrices(policies)
    clock = [START]
    evaluator = Evaluator(OperatorSettings(), prom, FakeKube(), OperatorMetrics(), clock=lambda: clock[0])

    def one() -> float:
        view.policies = [replace(p, status_json=evaluator.kube.by_policy.get(p.key, p.status_json)) for p in view.policies]
        evaluator.last_run.clear()
        started = time.perf_counter()
        asyncio.run(evaluator.cycle(view))
        return time.perf_counter() - started

    one(), one()  # the fill, first decisions and status writes
    clock[0] = START + timedelta(minutes=5)
    first = one()
    rest = []
    for k in range(3):
        clock[0] = START + timedelta(minutes=5, seconds=30 * (k + 1))
        rest.append(one())
    return first, statistics.median(rest)


def test_bench_workload_history_memory_and_queries():
    print("\nworkload history: CPU and memory per workload (1 container), 8 days at 5 min, float32")
    print(f"{'workloads':>9} {'series':>7} {'array MiB':>10} {'held MiB (tm)':>13} {'fill q':>7} {'fill samples':>13}"
          f" {'fill peak':>10} {'chunk JSON':>13} {'step q':>7} {'step smp':>9} {'step peak':>9}")
    for workloads in SCALES:
        history_figures(workloads)
    print("\nforecaster's hour per workload (series:cpu:workload), 15 s step: "
          + ", ".join(f"{n:,} workloads -> {n * 240:,} samples a cycle" for n in SCALES))
    print("\nloop cycle (fakes at the seams, bench_loop's scenario), seconds")
    print(f"{'policies':>9} {'no history: 1st':>16} {'steady':>7} {'history: 1st after step':>24} {'steady':>7}")
    for policies in SCALES:
        without = cycle_seconds(policies, with_history=False)
        with_ = cycle_seconds(policies, with_history=True)
        print(f"{policies:>9} {without[0]:>16.2f} {without[1]:>7.2f} {with_[0]:>24.2f} {with_[1]:>7.2f}")
