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


@pytest.mark.bench
@pytest.mark.timeout(3600)  # one predictions.analyse call per judged sample: ~10 minutes on one idle core
def test_bench_loop_analysis_quality() -> None:
    """The same figures with the detector and forecaster called as the loop calls them, next to the
    harness's (tests/bench/loop_analysis_quality.py)."""
    from tests.bench.loop_analysis_quality import main as loop_main
    print()
    loop_main([])
