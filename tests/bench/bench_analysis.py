"""Benchmark: one evaluation cycle of `analyse_batch` on 10,000 series x 300 samples, on one core.

Run with `.venv/bin/python -m pytest tests/bench/bench_analysis.py -m bench -s`, or directly as a
script (`python tests/bench/bench_analysis.py`). The measurement runs in a child process whose
BLAS/OpenMP pools are limited to one thread through the environment (they are sized when numpy is
imported, so this must happen before the import) and which is pinned to one CPU, so the figure is
what one core does. It prints figures against the target; it asserts nothing about time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

SERIES = 10_000
SAMPLES = 300
CYCLES = 5
TARGET_SECONDS = 1.0
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def measure(series: int = SERIES, samples: int = SAMPLES, cycles: int = CYCLES) -> None:
    """Time `cycles` calls of analyse_batch and print them (runs inside the single-core child)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np

    from kubetune.analysis import analyse_batch

    rng = np.random.default_rng(42)
    t = np.arange(samples) * 15.0
    # A realistic mix: noisy levels, a third of them trending, some spikes, 5 % of series with gaps.
    values = rng.uniform(20, 80, (series, 1)) + rng.normal(0, 5, (series, samples))
    values[: series // 3] += rng.uniform(-0.02, 0.02, (series // 3, 1)) * t
    values[rng.integers(0, series, series // 100), -1] += 60.0
    gappy = rng.choice(series, series // 20, replace=False)
    values[gappy[:, None], rng.integers(0, samples, (gappy.size, 10))] = np.nan
    thresholds = np.full(series, 80.0)

    timings = []
    for _ in range(cycles):
        start = time.perf_counter()
        result = analyse_batch(values, step=15.0, horizon=900.0, thresholds=thresholds)
        timings.append(time.perf_counter() - start)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"analyse_batch: {series} series x {samples} samples, CPUs {affinity}, numpy {np.__version__}")
    print("  per cycle (s): " + ", ".join(f"{s:.3f}" for s in timings))
    print(f"  first {timings[0]:.3f} s, best {min(timings):.3f} s, median {sorted(timings)[len(timings) // 2]:.3f} s"
          f" -- target <= {TARGET_SECONDS:.1f} s per cycle on one core")
    print(f"  anomalies flagged {int(result.anomaly.sum())}, predicted crossings "
          f"{int(np.isfinite(result.time_to_crossing).sum())}")  # type: ignore[arg-type]


@pytest.mark.bench
def test_bench_analyse_batch() -> None:
    environment = {**os.environ, **ONE_THREAD}
    completed = subprocess.run(
        [sys.executable, __file__], env=environment, capture_output=True, text=True, check=True, timeout=600
    )
    print()
    print(completed.stdout, end="")


if __name__ == "__main__":
    measure()
