"""Real sysctls on this machine: apply, read back, remove from the plan, original back exactly."""

from __future__ import annotations

import pytest

from kubetune_agent.executor import KnobExecutor, KnobTarget, TuningState

pytestmark = pytest.mark.host

SYSCTLS = {
    "vm.swappiness": "proc/sys/vm/swappiness",
    "vm.vfs_cache_pressure": "proc/sys/vm/vfs_cache_pressure",
    "vm.dirty_ratio": "proc/sys/vm/dirty_ratio",
    "vm.dirty_background_ratio": "proc/sys/vm/dirty_background_ratio",
}


def different(value: str, low: int, high: int) -> str:
    """A valid value other than ``value``."""
    return str(low + 1 if int(value) != low + 1 else low + 2) if high > low + 2 else str(low)


@pytest.fixture
def originals(saved_host_files):
    return saved_host_files(*SYSCTLS.values())


def test_apply_read_back_and_restore_exactly(host, journal, originals):
    executor = KnobExecutor(host, journal)
    targets = [
        KnobTarget("vm.swappiness", different(originals[SYSCTLS["vm.swappiness"]], 5, 200), "test"),
        KnobTarget("vm.vfs_cache_pressure", different(originals[SYSCTLS["vm.vfs_cache_pressure"]], 50, 1000)),
        KnobTarget("vm.dirty_ratio", different(originals[SYSCTLS["vm.dirty_ratio"]], 30, 100)),
        KnobTarget("vm.dirty_background_ratio", different(originals[SYSCTLS["vm.dirty_background_ratio"]], 3, 20)),
    ]
    results = executor.reconcile(targets)
    assert [r.state for r in results] == [TuningState.APPLIED] * 4, results
    for target in targets:
        assert host.read(SYSCTLS[target.key]) == target.value
        assert journal.get("knobs", target.key)["original"] == {SYSCTLS[target.key]: originals[SYSCTLS[target.key]]}

    restored = executor.reconcile([])
    assert [r.state for r in restored] == [TuningState.RESTORED] * 4, restored
    assert {path: host.read(path) for path in SYSCTLS.values()} == originals
    assert journal.entries("knobs") == {}


def test_recommend_mode_writes_nothing(host, journal, originals):
    target = different(originals[SYSCTLS["vm.swappiness"]], 5, 200)
    (result,) = KnobExecutor(host, journal).reconcile([KnobTarget("vm.swappiness", target, "why")], dry_run=True)
    assert result.state is TuningState.PLANNED
    assert result.message == f"{originals[SYSCTLS['vm.swappiness']]} -> {target}: why"
    assert host.read(SYSCTLS["vm.swappiness"]) == originals[SYSCTLS["vm.swappiness"]]
    assert journal.entries("knobs") == {}


def test_out_of_range_is_refused_and_nothing_written(host, journal, originals):
    (result,) = KnobExecutor(host, journal).reconcile([KnobTarget("vm.swappiness", "201")])
    assert (result.state, result.message) == (TuningState.REFUSED, "201 is outside 0..200")
    assert host.read(SYSCTLS["vm.swappiness"]) == originals[SYSCTLS["vm.swappiness"]]


def test_another_writer_is_reported_as_conflict(host, journal, originals):
    executor = KnobExecutor(host, journal)
    executor.reconcile([KnobTarget("vm.swappiness", "17")])
    host.write(SYSCTLS["vm.swappiness"], "23")  # as `sysctl -w vm.swappiness=23` would
    (result,) = executor.reconcile([KnobTarget("vm.swappiness", "17")])
    assert result.state is TuningState.CONFLICT
    assert result.message.startswith("vm.swappiness was changed to 23 by another writer")
    assert host.read(SYSCTLS["vm.swappiness"]) == "23"
