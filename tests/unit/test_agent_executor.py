"""Executor logic: plan, apply, skip unchanged, journal, read back, conflict, restore.

This machine has no cpufreq (/sys/devices/system/cpu/cpu*/cpufreq is absent), so these tests use
a fake host root holding only a cpufreq tree: the one place a fake root is legitimate. The same
paths on real sysctls are covered in tests/host/.
"""

from __future__ import annotations


import pytest

from kubetune_agent.executor import KnobExecutor, KnobTarget, TuningState
from kubetune_agent.hostfs import HostFS
from kubetune_agent.journal import Journal

pytestmark = pytest.mark.unit

CPUFREQ = "sys/devices/system/cpu/cpu{}/cpufreq"


@pytest.fixture
def fake_cpufreq(tmp_path):
    """Two CPUs with cpufreq: cpu0 on powersave, cpu1 on schedutil; 1.0..3.0 GHz."""
    root = tmp_path / "host"
    for cpu, governor in ((0, "powersave"), (1, "schedutil")):
        directory = root / CPUFREQ.format(cpu)
        directory.mkdir(parents=True)
        (directory / "scaling_governor").write_text(governor + "\n")
        (directory / "scaling_available_governors").write_text("performance powersave schedutil\n")
        (directory / "cpuinfo_max_freq").write_text("3000000\n")
        (directory / "cpuinfo_min_freq").write_text("1000000\n")
        (directory / "scaling_max_freq").write_text("3000000\n")
    return HostFS(root)


@pytest.fixture
def executor(fake_cpufreq, tmp_path):
    return KnobExecutor(fake_cpufreq, Journal(tmp_path / "journal"))


def governors(fs):
    return [fs.read(f"{CPUFREQ.format(cpu)}/scaling_governor") for cpu in (0, 1)]


def only(results):
    (result,) = results
    return result


def test_dry_run_plans_and_writes_nothing(executor, fake_cpufreq, tmp_path):
    result = only(executor.reconcile([KnobTarget("cpu.governor", "performance", "load high")],
                                     dry_run=True))
    assert result.state is TuningState.PLANNED
    assert result.message == "cpu0=powersave,cpu1=schedutil -> performance: load high"
    assert governors(fake_cpufreq) == ["powersave", "schedutil"]
    assert not (tmp_path / "journal" / "journal.json").exists()


def test_apply_journals_per_cpu_originals_then_restores_them_exactly(executor, fake_cpufreq):
    result = only(executor.reconcile([KnobTarget("cpu.governor", "performance")]))
    assert (result.state, result.current) == (TuningState.APPLIED, "performance")
    assert governors(fake_cpufreq) == ["performance", "performance"]
    entry = executor.journal.get("knobs", "cpu.governor")
    assert entry["original"] == {f"{CPUFREQ.format(0)}/scaling_governor": "powersave",
                                 f"{CPUFREQ.format(1)}/scaling_governor": "schedutil"}
    restored = only(executor.reconcile([]))
    assert restored.state is TuningState.RESTORED
    assert governors(fake_cpufreq) == ["powersave", "schedutil"]
    assert executor.journal.entries("knobs") == {}


def test_unchanged_value_is_not_rewritten(executor, fake_cpufreq):
    executor.reconcile([KnobTarget("cpu.governor", "performance")])
    path = fake_cpufreq.path(f"{CPUFREQ.format(0)}/scaling_governor")
    before = path.stat().st_mtime_ns
    result = only(executor.reconcile([KnobTarget("cpu.governor", "performance")]))
    assert (result.state, result.message) == (TuningState.APPLIED, "")
    assert path.stat().st_mtime_ns == before


def test_governor_not_available_is_refused(executor, fake_cpufreq):
    result = only(executor.reconcile([KnobTarget("cpu.governor", "ondemand")]))
    assert result.state is TuningState.REFUSED
    assert "not available (performance powersave schedutil)" in result.message
    assert governors(fake_cpufreq) == ["powersave", "schedutil"]


def test_max_freq_percent_is_written_in_khz_per_cpu(executor, fake_cpufreq):
    only(executor.reconcile([KnobTarget("cpu.maxFrequencyPercent", "80")]))
    assert fake_cpufreq.read(f"{CPUFREQ.format(1)}/scaling_max_freq") == "2400000"
    only(executor.reconcile([KnobTarget("cpu.maxFrequencyPercent", "20")]))  # refused: floor 30
    assert fake_cpufreq.read(f"{CPUFREQ.format(1)}/scaling_max_freq") == "2400000"


def test_another_writer_is_reported_not_fought(executor, fake_cpufreq):
    executor.reconcile([KnobTarget("cpu.governor", "performance")])
    fake_cpufreq.write(f"{CPUFREQ.format(0)}/scaling_governor", "schedutil")  # someone else
    result = only(executor.reconcile([KnobTarget("cpu.governor", "performance")]))
    assert result.state is TuningState.CONFLICT
    assert "cpu.governor was changed to cpu0=schedutil,cpu1=performance by another writer" in result.message
    assert governors(fake_cpufreq) == ["schedutil", "performance"]
    # A new target is a new intent: written, and the first original is kept.
    assert only(executor.reconcile([KnobTarget("cpu.governor", "powersave")])).state is TuningState.APPLIED
    assert executor.journal.get("knobs", "cpu.governor")["original"][
        f"{CPUFREQ.format(1)}/scaling_governor"] == "schedutil"


def test_removal_leaves_another_writers_value(executor, fake_cpufreq):
    executor.reconcile([KnobTarget("cpu.governor", "performance")])
    for cpu in (0, 1):
        fake_cpufreq.write(f"{CPUFREQ.format(cpu)}/scaling_governor", "schedutil")
    result = only(executor.reconcile([]))
    assert result.state is TuningState.CONFLICT
    assert governors(fake_cpufreq) == ["schedutil", "schedutil"]
    assert executor.journal.entries("knobs") == {}


def test_crash_between_journal_and_write_is_reapplied_or_restored(executor, fake_cpufreq, tmp_path):
    """The journal says what we meant to write, the host still has the original."""
    original = {f"{CPUFREQ.format(0)}/scaling_governor": "powersave",
                f"{CPUFREQ.format(1)}/scaling_governor": "schedutil"}
    executor.journal.put("knobs", "cpu.governor", {"original": original, "written": {
        path: "performance" for path in original}, "recordedAt": "t"})
    restarted = KnobExecutor(fake_cpufreq, Journal(tmp_path / "journal"))
    assert only(restarted.reconcile([KnobTarget("cpu.governor", "performance")])).state is TuningState.APPLIED
    assert only(restarted.reconcile([])).state is TuningState.RESTORED
    assert governors(fake_cpufreq) == ["powersave", "schedutil"]


def test_restart_does_not_roll_back(executor, fake_cpufreq, tmp_path):
    executor.reconcile([KnobTarget("cpu.governor", "performance")])
    restarted = KnobExecutor(fake_cpufreq, Journal(tmp_path / "journal"))
    assert governors(fake_cpufreq) == ["performance", "performance"]
    assert only(restarted.reconcile([KnobTarget("cpu.governor", "performance")])).state is TuningState.APPLIED


def test_read_back_mismatch_is_failed_once_then_not_rewritten(fake_cpufreq, tmp_path):
    class ClampingFS(HostFS):
        def write(self, relative, value):
            super().write(relative, str(min(int(value), 2000000)) if "max_freq" in relative else value)

    executor = KnobExecutor(ClampingFS(fake_cpufreq.root), Journal(tmp_path / "journal"))
    first = only(executor.reconcile([KnobTarget("cpu.maxFrequencyPercent", "90")]))
    assert (first.state, first.message) == (TuningState.FAILED, "wrote 2700000, read back 2000000")
    second = only(executor.reconcile([KnobTarget("cpu.maxFrequencyPercent", "90")]))
    assert second.state is TuningState.FAILED and "kernel keeps 2000000" in second.message


def test_duplicate_key_and_unknown_key_are_refused(executor):
    results = executor.reconcile([KnobTarget("cpu.governor", "performance"),
                                  KnobTarget("cpu.governor", "powersave"),
                                  KnobTarget("vm.overcommit_memory", "1")])
    assert [r.state for r in results] == [TuningState.APPLIED, TuningState.REFUSED, TuningState.REFUSED]


def test_missing_cpufreq_is_unsupported_not_an_error(tmp_path):
    (tmp_path / "sys/devices/system/cpu/cpu0").mkdir(parents=True)
    executor = KnobExecutor(HostFS(tmp_path), Journal(tmp_path / "journal"))
    result = only(executor.reconcile([KnobTarget("cpu.governor", "performance")]))
    assert result.state is TuningState.UNSUPPORTED and "no cpufreq" in result.message
    assert not (tmp_path / "journal" / "journal.json").exists()
