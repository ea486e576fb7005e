"""The property-based and API differential tests under hypothesis' `bench` profile (tests/conftest.py:
2,000 examples per property, 10,000 specs per kind for the differential; fresh randomness each run,
unlike the derandomised `ci` profile of the default run).

    python -m pytest tests/bench/bench_properties.py -m bench -s

Runs them as a separate pytest (the profile is chosen when tests/conftest.py loads) and prints each
test's outcome, examples and time from hypothesis' statistics. A failure here is a real bug found by
examples the default run does not draw: its output carries the `@reproduce_failure` line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[2]
TESTS = ["tests/unit/test_decisions_properties.py", "tests/unit/test_nodetuning_properties.py",
         "tests/unit/test_parser_properties.py", "tests/cluster/test_api_differential.py"]


def test_properties_with_the_bench_profile():
    env = {**os.environ, "HYPOTHESIS_PROFILE": "bench"}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "unit or cluster",
                          "-o", "timeout=3600", "--hypothesis-show-statistics", "-s", *TESTS],
                         cwd=REPO, env=env, capture_output=True, text=True)
    print(f"\nbench profile: {time.monotonic() - started:.0f} s wall")
    # Hypothesis' statistics: a block per test with "during generate phase (X seconds): ... N passing".
    for block in re.split(r"\n(?=tests/\S+::)", run.stdout):
        name = block.split(":\n", 1)[0].strip()
        generated = re.search(r"during generate phase \(([\d.]+) seconds\):.*?- (\d+) passing", block, re.DOTALL)
        if "::" in name and generated:
            print(f"  {name}: {generated.group(2)} examples in {float(generated.group(1)):.1f} s")
    print("\n".join(line for line in run.stdout.splitlines() if "examples, " in line and "accepted" in line))
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
