"""Journal: durable, atomic, survives a restart, refuses what it cannot read, one holder at a time.

The real faults (a full tmpfs, a corrupted file, two agent processes) are in
tests/host/test_agent_faults.py; here the journal's own rules, in one process."""

from __future__ import annotations

import json
import os

import pytest

from kubetune_agent.errors import AgentError
from kubetune_agent.journal import Journal

pytestmark = pytest.mark.unit

ENTRY = {"original": {"proc/sys/vm/swappiness": "60"}, "written": {"proc/sys/vm/swappiness": "10"}}


def test_entries_survive_a_restart(tmp_path):
    Journal(tmp_path).put("knobs", "vm.swappiness", ENTRY)
    assert Journal(tmp_path).get("knobs", "vm.swappiness") == ENTRY
    document = json.loads((tmp_path / "journal.json").read_text())
    assert document["version"] == 1 and document["knobs"] == {"vm.swappiness": ENTRY}


def test_failed_rename_leaves_the_previous_journal_whole(tmp_path, monkeypatch):
    journal = Journal(tmp_path)
    journal.put("knobs", "vm.swappiness", ENTRY)
    before = (tmp_path / "journal.json").read_bytes()

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        journal.put("knobs", "vm.dirty_ratio", ENTRY)
    assert (tmp_path / "journal.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]  # no temp file left behind
    assert journal.get("knobs", "vm.dirty_ratio") is None  # memory follows the file, not the wish


def test_persist_writes_a_temp_file_fsyncs_then_renames(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b)))
    Journal(tmp_path).put("threads", "42", {"nice": 0})
    assert calls == ["fsync", "rename", "fsync"]  # file, rename, directory


def test_remove_many_and_update_many(tmp_path):
    journal = Journal(tmp_path)
    journal.update("threads", {"1": {}, "2": {}, "3": {}})
    journal.remove("threads", "1", "3", "missing")
    assert Journal(tmp_path).entries("threads") == {"2": {}}


def test_unknown_version_is_refused(tmp_path):
    (tmp_path / "journal.json").write_text('{"version": 99, "knobs": {}}')
    with pytest.raises(AgentError, match="journal version 99"):
        Journal(tmp_path)


CORRUPT = {
    "half-a-document": '{"version": 1, "knobs": {"vm.swappiness": {"orig',
    "garbage": "\x00\x01garbage",
    "empty": "",
    "not-an-object": "[1, 2]",
    "no-version": '{"knobs": {}}',
    "original-not-per-file": '{"version": 1, "knobs": {"vm.swappiness": {"original": "60"}}}',
}


@pytest.mark.parametrize("text", CORRUPT.values(), ids=CORRUPT.keys())
def test_an_unreadable_journal_is_kept_aside_and_blocks_every_write(tmp_path, text):
    (tmp_path / "journal.json").write_text(text)
    journal = Journal(tmp_path)
    assert "is unreadable" in journal.problem and "journal.json.corrupt" in journal.problem
    assert (tmp_path / "journal.json.corrupt").read_text() == text and not (tmp_path / "journal.json").exists()
    with pytest.raises(AgentError, match="not written"):
        journal.put("knobs", "vm.swappiness", ENTRY)
    assert Journal(tmp_path).problem, "the copy blocks a restarted agent too"


def test_the_block_lifts_when_the_admin_deletes_the_copy_and_a_repaired_journal_is_read(tmp_path):
    (tmp_path / "journal.json").write_text("{")
    journal = Journal(tmp_path)
    assert journal.check() == journal.problem is not None
    (tmp_path / "journal.json").write_text(json.dumps({"version": 1, "knobs": {"vm.swappiness": ENTRY}}))
    (tmp_path / "journal.json.corrupt").unlink()
    assert journal.check() is None
    assert journal.get("knobs", "vm.swappiness") == ENTRY


def test_a_second_corrupt_journal_does_not_overwrite_the_first_copy(tmp_path):
    (tmp_path / "journal.json.corrupt").write_text("first")
    (tmp_path / "journal.json").write_text("second")
    Journal(tmp_path)
    assert [(p.name, p.read_text()) for p in sorted(tmp_path.glob("journal.json.corrupt*"))] == [
        ("journal.json.corrupt", "first"), ("journal.json.corrupt.1", "second")]


def test_one_holder_at_a_time_and_the_next_reads_what_the_first_wrote(tmp_path):
    # Two descriptions of one lock file conflict even inside one process (flock), which is what
    # two agent processes on a node do; the two-process version is in the host tier.
    first, second = Journal(tmp_path, lock=True), Journal(tmp_path, lock=True)
    assert first.acquire() and not second.acquire()
    assert second.holder() == str(os.getpid())
    with pytest.raises(AgentError, match="lock is not held"):
        second.put("knobs", "vm.swappiness", ENTRY)
    first.put("knobs", "vm.swappiness", ENTRY)
    first.release()
    assert second.acquire() and second.get("knobs", "vm.swappiness") == ENTRY
    second.release()
