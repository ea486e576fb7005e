"""Block knobs on a loop device this test creates (never a disk in use)."""

from __future__ import annotations

import pytest

from kubetune_agent.executor import KnobExecutor, KnobTarget, TuningState
from kubetune_agent.knobs import bracketed

pytestmark = pytest.mark.host


def test_scheduler_and_read_ahead_apply_and_restore(host, journal, loop_device):
    queue = f"sys/block/{loop_device}/queue"
    original_scheduler = bracketed(host.read(f"{queue}/scheduler"))
    original_read_ahead = host.read(f"{queue}/read_ahead_kb")
    available = host.read(f"{queue}/scheduler").replace("[", "").replace("]", "").split()
    if "mq-deadline" not in available:
        pytest.skip(f"mq-deadline is not available for {loop_device} here ({available})")
    classic, expected = ("deadline", "mq-deadline") if original_scheduler != "mq-deadline" else ("noop", "none")
    new_read_ahead = "256" if original_read_ahead != "256" else "512"
    executor = KnobExecutor(host, journal)

    results = executor.reconcile([
        KnobTarget(f"block.{loop_device}.scheduler", classic, "classic name"),
        KnobTarget(f"block.{loop_device}.readAheadKb", new_read_ahead),
    ])
    assert [r.state for r in results] == [TuningState.APPLIED] * 2, results
    assert bracketed(host.read(f"{queue}/scheduler")) == expected
    assert host.read(f"{queue}/read_ahead_kb") == new_read_ahead

    results = executor.reconcile([])
    assert [r.state for r in results] == [TuningState.RESTORED] * 2, results
    assert bracketed(host.read(f"{queue}/scheduler")) == original_scheduler
    assert host.read(f"{queue}/read_ahead_kb") == original_read_ahead


def test_auto_scheduler_follows_the_rotational_flag(host, journal, loop_device):
    queue = f"sys/block/{loop_device}/queue"
    rotational = host.read(f"{queue}/rotational") == "1"
    (result,) = KnobExecutor(host, journal).reconcile(
        [KnobTarget(f"block.{loop_device}.scheduler", "auto")], dry_run=True)
    available = host.read(f"{queue}/scheduler").replace("[", "").replace("]", "").split()
    preferred = [s for s in (("bfq", "mq-deadline") if rotational else ("none", "mq-deadline")) if s in available]
    assert result.desired == (preferred[0] if preferred else available[0])


@pytest.mark.parametrize("key", ["block.../loop0.scheduler", "block.loop0/../vda.readAheadKb"])
def test_escaping_device_names_are_refused(host, journal, key):
    (result,) = KnobExecutor(host, journal).reconcile([KnobTarget(key, "none")])
    assert result.state is TuningState.REFUSED and "not a plain /sys/block entry name" in result.message


def test_absent_device_is_unsupported(host, journal):
    (result,) = KnobExecutor(host, journal).reconcile([KnobTarget("block.nosuchdisk9.readAheadKb", "128")])
    assert result.state is TuningState.UNSUPPORTED
