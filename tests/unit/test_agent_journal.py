"""Journal: durable, atomic, survives a restart, refuses what it cannot read."""

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
