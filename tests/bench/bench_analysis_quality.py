"""Benchmark: the analysis quality harness (tests/bench/analysis_quality.py) as part of `make bench`.

Prints the detector's and the forecaster's figures before / after issue 16 and against the naive
baselines; asserts nothing (the figures and their targets are in docs/analysis.md).
"""

from __future__ import annotations

import pytest

from tests.bench.analysis_quality import main


@pytest.mark.bench
@pytest.mark.timeout(1800)  # minutes on a loaded shared machine; the suite's default is 300 s
def test_bench_analysis_quality() -> None:
    print()
    main([])
