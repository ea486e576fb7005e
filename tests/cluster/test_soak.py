"""The soak, short: five policies under loads that flap around their thresholds for 3 minutes of operator
time (tests/cluster/soakrun.py; the 30-minute version is tests/bench/bench_soak.py).

What a user would check afterwards, from the Deployment's template, the policy's status and the Events:
no hour with more changes than maxChangesPerHour (3 minutes show only part of an hour: the limit is
checked against what they show, and maxChangesPerHour 1 binds within them), no value set back within a
cooldown, every change within min/max and stepPercent, the three records agreeing. The operator's RSS
is printed, not asserted (a figure of this machine), unless it doubles.
"""

from __future__ import annotations

import os

import pytest

from tests.cluster import soakrun

pytestmark = pytest.mark.cluster
MINUTES = float(os.environ.get("KUBETUNE_SOAK_MINUTES", "3"))


# The run itself lasts MINUTES; setup, rollouts and teardown on a shared machine take a few more.
@pytest.mark.timeout(MINUTES * 60 + 600)
def test_flapping_load_stays_within_every_policys_limits(cluster, crds, prometheus, namespace, tmp_path):
    record = soakrun.run_soak(cluster, prometheus.url, prometheus.add_target, prometheus.remove_target,
                              namespace, tmp_path, MINUTES)
    verdict = soakrun.judge(record)
    print("\n".join(verdict.lines))
    assert not verdict.problems, "\n".join(verdict.problems)
    # The soak exercised what it claims to: changes were made, and the limiter held one policy back.
    assert sum(len(c) for c in record.template_changes.values()) > 0, "no policy changed anything"
    assert record.events[("PerformancePolicy", "square", "RateLimited")] > 0, f"maxChangesPerHour 1 never held square back: {dict(record.events)}"
