"""Node agent faults on this machine's real kernel settings: a write the kernel refuses (EPERM, a
read-only /proc/sys or /sys), a full journal directory, a corrupted journal, SIGKILL during a
restore, and two agent processes on one node at once.

For each: no original value is lost, no knob is fought over, the failure is reported naming the
knob and the error, and normal work resumes when the fault ends. Faults are made for real and only
for the agent under test: capabilities dropped for one process (setpriv), a read-only bind mount
in a private mount namespace (unshare -m; the host's /sys is never remounted), a 64 KiB tmpfs on a
directory the test owns. Every knob is put back by ``saved_host_files`` whatever happens.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest

from kubetune_agent.executor import KnobExecutor, KnobTarget, TuningState
from kubetune_agent.journal import Journal
from tests.host.agent_harness import cycles, run_agent, start_loop
from tests.waiting import wait_for

pytestmark = pytest.mark.host

SWAPPINESS, DIRTY_RATIO = "proc/sys/vm/swappiness", "proc/sys/vm/dirty_ratio"
DMESG_RESTRICT = "proc/sys/kernel/dmesg_restrict"


def other(value: str, *choices: str) -> str:
    """The first of ``choices`` that differs from ``value``."""
    return next(choice for choice in choices if choice != value)


def journaled(journal_dir) -> dict:
    return json.loads((journal_dir / "journal.json").read_text())["knobs"]


def read_only(path: str) -> tuple[str, ...]:
    """Run the agent in its own mount namespace where ``path`` is a read-only bind mount of itself
    (what a container runtime does to /proc/sys and /sys): the write fails with EROFS."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', path)


# kernel.dmesg_restrict: its handler refuses a write without CAP_SYS_ADMIN with EPERM (none of the
# allow-listed knobs checks a capability: as root they fail only by EROFS or EACCES). The harness adds
# it to the registry for this test only; the agent never writes it.
NO_CAPABILITIES = ("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--ambient-caps=-all")
WRITE_FAULTS = {
    "eperm": ("sysctl.kernel.dmesg_restrict", lambda device: DMESG_RESTRICT, ("1", "0"), NO_CAPABILITIES,
              "Operation not permitted"),
    "read-only-proc-sys": ("vm.swappiness", lambda device: SWAPPINESS, ("23", "24"), read_only("/proc/sys"),
                           "Read-only file system"),
    # read_ahead_kb is kept in whole pages: the targets are multiples of 4.
    "read-only-sys": ("block.{device}.readAheadKb", lambda device: f"sys/block/{device}/queue/read_ahead_kb",
                      ("256", "512"), read_only("/sys"), "Read-only file system"),
}


@pytest.mark.parametrize("fault", WRITE_FAULTS)
def test_a_write_the_kernel_refuses_is_reported_and_the_original_kept(host, tmp_path, saved_host_files,
                                                                      request, fault):
    key, path_of, choices, wrapper, error = WRITE_FAULTS[fault]
    device = request.getfixturevalue("loop_device") if "{device}" in key else None
    key, path = key.format(device=device), path_of(device)
    if fault == "eperm" and not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    original = saved_host_files(path)[path]
    target = other(original, *choices)
    plan, journal_dir = [{"key": key, "value": target}], tmp_path / "journal"
    extra = "kernel.dmesg_restrict:0:1"

    for attempt in (1, 2):  # the fault holds for two cycles: reported each time, nothing lost
        code, results, _, stderr = run_agent(journal_dir, plan, wrapper=wrapper, extra_sysctl=extra)
        assert code == 0, stderr
        assert (results[key]["state"], host.read(path)) == ("Failed", original), results
        assert results[key]["message"].startswith("write failed:") and error in results[key]["message"]
        assert journaled(journal_dir)[key]["original"] == {path: original}

    code, results, _, stderr = run_agent(journal_dir, plan, extra_sysctl=extra)  # the fault ends
    assert (results[key]["state"], results[key]["original"], host.read(path)) == ("Applied", original, target)

    # The plan is removed while the fault is back: the restore fails, is reported, and the journal
    # keeps the original for the next try.
    code, results, _, stderr = run_agent(journal_dir, [], wrapper=wrapper, extra_sysctl=extra)
    assert code == 0, stderr
    assert (results[key]["state"], host.read(path)) == ("Failed", target), results
    assert error in results[key]["message"]
    assert journaled(journal_dir)[key]["original"] == {path: original}

    code, results, _, stderr = run_agent(journal_dir, [], extra_sysctl=extra)
    assert (results[key]["state"], host.read(path)) == ("Restored", original), results
    assert journaled(journal_dir) == {}


@pytest.fixture
def tiny_journal_dir(tmp_path):
    """A 64 KiB tmpfs on a directory this test owns (a mount on the test's own temp dir, not on
    anything another process uses), unmounted afterwards."""
    directory = tmp_path / "journal"
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "kubetune-test", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=False)


def fill(directory) -> None:
    """Fill the file system under ``directory`` to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == 28, error  # ENOSPC
    try:  # the last partial block
        with open(directory / "filler-tail", "wb", buffering=0) as filler:
            while True:
                filler.write(b"\0")
    except OSError:
        pass


def test_a_full_journal_directory_means_no_write_until_there_is_space(host, saved_host_files, tiny_journal_dir):
    originals = saved_host_files(SWAPPINESS, DIRTY_RATIO)
    swappiness, dirty = other(originals[SWAPPINESS], "23", "24"), other(originals[DIRTY_RATIO], "31", "32")
    executor = KnobExecutor(host, Journal(tiny_journal_dir, lock=True))
    (result,) = executor.reconcile([KnobTarget("vm.swappiness", swappiness)])
    assert result.state is TuningState.APPLIED

    fill(tiny_journal_dir)
    plan = [KnobTarget("vm.swappiness", swappiness), KnobTarget("vm.dirty_ratio", dirty)]
    results = {r.key: r for r in executor.reconcile(plan)}
    assert results["vm.swappiness"].state is TuningState.APPLIED  # unchanged: no journal write needed
    # A change whose original cannot be journaled is not made.
    assert results["vm.dirty_ratio"].state is TuningState.FAILED
    assert results["vm.dirty_ratio"].message.startswith("not written: the original could not be journaled")
    assert "No space left on device" in results["vm.dirty_ratio"].message
    assert host.read(DIRTY_RATIO) == originals[DIRTY_RATIO]

    # vm.swappiness leaves the plan: its original goes back; the journal keeps the entry it cannot drop.
    results = {r.key: r for r in executor.reconcile([KnobTarget("vm.dirty_ratio", dirty)])}
    assert results["vm.swappiness"].state is TuningState.RESTORED
    assert "journal entry kept" in results["vm.swappiness"].message
    assert host.read(SWAPPINESS) == originals[SWAPPINESS] and host.read(DIRTY_RATIO) == originals[DIRTY_RATIO]
    on_disk = journaled(tiny_journal_dir)
    assert set(on_disk) == {"vm.swappiness"} and on_disk["vm.swappiness"]["original"] == {SWAPPINESS: originals[SWAPPINESS]}
    executor.journal.release()

    # Restarted on the still full directory: it reads the journal and changes nothing.
    executor = KnobExecutor(host, Journal(tiny_journal_dir, lock=True))
    results = {r.key: r for r in executor.reconcile([KnobTarget("vm.dirty_ratio", dirty)])}
    assert (results["vm.swappiness"].state, results["vm.dirty_ratio"].state) == (TuningState.RESTORED, TuningState.FAILED)
    assert host.read(DIRTY_RATIO) == originals[DIRTY_RATIO]

    for name in ("filler", "filler-tail"):  # the fault ends: normal work resumes
        (tiny_journal_dir / name).unlink(missing_ok=True)
    results = {r.key: r for r in executor.reconcile([KnobTarget("vm.dirty_ratio", dirty)])}
    assert (results["vm.swappiness"].state, results["vm.dirty_ratio"].state) == (TuningState.RESTORED, TuningState.APPLIED)
    assert results["vm.dirty_ratio"].original == originals[DIRTY_RATIO] and host.read(DIRTY_RATIO) == dirty
    assert executor.reconcile([])[0].state is TuningState.RESTORED
    assert {path: host.read(path) for path in originals} == originals and journaled(tiny_journal_dir) == {}


CORRUPTIONS = {
    "truncated": lambda text: text[: len(text) // 2],
    "garbage": lambda text: "\x00\x17 not a journal \xff" * 20,
    "empty": lambda text: "",
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupted_journal_stops_tuning_and_is_kept_for_the_admin(host, tmp_path, saved_host_files, corruption):
    original = saved_host_files(SWAPPINESS)[SWAPPINESS]
    target = other(original, "23", "24")
    plan, journal_dir = [{"key": "vm.swappiness", "value": target}], tmp_path / "journal"
    code, results, _, stderr = run_agent(journal_dir, plan)
    assert results["vm.swappiness"]["state"] == "Applied", stderr
    corrupt = CORRUPTIONS[corruption]((journal_dir / "journal.json").read_text())
    (journal_dir / "journal.json").write_text(corrupt)

    # Restarted (twice: the block outlives restarts), with the plan and then without it: the live
    # value (the agent's own) is never taken as an original, and nothing is restored to a guess.
    for cycle_plan in (plan, plan, []):
        code, results, problem, stderr = run_agent(journal_dir, cycle_plan)
        assert code == 0, stderr
        assert problem and "journal.json.corrupt" in problem, problem
        assert {k: r["state"] for k, r in results.items()} == ({"vm.swappiness": "Failed"} if cycle_plan else {})
        assert all(r["message"].startswith("not tuned: ") for r in results.values())
        assert host.read(SWAPPINESS) == target
        assert not (journal_dir / "journal.json").exists()
        assert (journal_dir / "journal.json.corrupt").read_text() == corrupt

    # The admin puts the original back by hand and deletes the copy: the agent resumes.
    host.write(SWAPPINESS, original)
    (journal_dir / "journal.json.corrupt").unlink()
    code, results, problem, stderr = run_agent(journal_dir, plan)
    assert problem is None and results["vm.swappiness"]["state"] == "Applied", stderr
    assert results["vm.swappiness"]["original"] == original
    code, results, _, _ = run_agent(journal_dir, [])
    assert results["vm.swappiness"]["state"] == "Restored" and host.read(SWAPPINESS) == original


def test_sigkill_between_restoring_two_knobs_then_restart_finishes_the_restore(host, tmp_path, saved_host_files):
    originals = saved_host_files(SWAPPINESS, DIRTY_RATIO)
    plan = [{"key": "vm.swappiness", "value": other(originals[SWAPPINESS], "23", "24")},
            {"key": "vm.dirty_ratio", "value": other(originals[DIRTY_RATIO], "31", "32")}]
    journal_dir = tmp_path / "journal"
    code, results, _, stderr = run_agent(journal_dir, plan)
    assert {k: r["state"] for k, r in results.items()} == {"vm.swappiness": "Applied", "vm.dirty_ratio": "Applied"}

    # The plan is removed; the agent dies right after restoring the first knob (the journal lists
    # keys sorted: vm.dirty_ratio first), before dropping its entry and before the second.
    code, _, _, stderr = run_agent(journal_dir, [], crash_at="write", crash_key="vm.dirty_ratio")
    assert code == -signal.SIGKILL, stderr
    assert host.read(DIRTY_RATIO) == originals[DIRTY_RATIO] and host.read(SWAPPINESS) == plan[0]["value"]
    assert set(journaled(journal_dir)) == {"vm.swappiness", "vm.dirty_ratio"}

    code, results, _, stderr = run_agent(journal_dir, [])  # restarted, still no plan
    assert code == 0, stderr
    assert {k: r["state"] for k, r in results.items()} == {"vm.swappiness": "Restored", "vm.dirty_ratio": "Restored"}
    assert results["vm.dirty_ratio"]["message"] == "already at its original value"
    assert {path: host.read(path) for path in originals} == originals and journaled(journal_dir) == {}


def test_two_agent_processes_on_one_node_never_fight_and_keep_the_original(host, tmp_path, saved_host_files):
    """A DaemonSet rolling update: the old pod still runs while the new one starts, both with the
    node's journal directory. The new one stands by until the old one dies (SIGKILL here, the worst
    case), then takes over with the original the old one journaled."""
    original = saved_host_files(SWAPPINESS)[SWAPPINESS]
    old_target, new_target = [v for v in ("21", "22", "23") if v != original][:2]
    journal_dir = tmp_path / "journal"
    old = start_loop(journal_dir, [{"key": "vm.swappiness", "value": old_target}], tmp_path / "old.out")
    new = None
    try:
        wait_for("the old agent to apply its plan",
                 lambda: any(r["knobs"] and r["knobs"][0]["state"] == "Applied" for r in cycles(tmp_path / "old.out")),
                 timeout=60, every=0.1)
        new = start_loop(journal_dir, [{"key": "vm.swappiness", "value": new_target}], tmp_path / "new.out")
        standing_by = wait_for("three cycles of the new agent",
                               lambda: (lambda r: r if len(r) >= 3 else None)(cycles(tmp_path / "new.out")),
                               timeout=60, every=0.1)
        assert all(r["standby"] and f"pid {old.pid}" in r["standby"] and not r["knobs"] for r in standing_by)
        seen = len(cycles(tmp_path / "old.out"))
        wait_for("the old agent to cycle again", lambda: len(cycles(tmp_path / "old.out")) > seen + 1,
                 timeout=60, every=0.1)
        # Nobody fought: the old agent's value held and it never saw another writer.
        assert host.read(SWAPPINESS) == old_target
        assert {k["state"] for r in cycles(tmp_path / "old.out") for k in r["knobs"]} == {"Applied"}

        old.send_signal(signal.SIGKILL)
        old.wait()
        took_over = wait_for("the new agent to take over",
                             lambda: next((r for r in cycles(tmp_path / "new.out") if not r["standby"]), None),
                             timeout=60, every=0.1)
        (knob,) = took_over["knobs"]
        assert (knob["state"], knob["original"], host.read(SWAPPINESS)) == ("Applied", original, new_target)
        assert {k["state"] for r in cycles(tmp_path / "new.out") if not r["standby"] for k in r["knobs"]} == {"Applied"}
    finally:
        for process in (old, new):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    code, results, _, stderr = run_agent(journal_dir, [])  # the policy is removed
    assert (results["vm.swappiness"]["state"], host.read(SWAPPINESS)) == ("Restored", original), stderr
    assert journaled(journal_dir) == {}
