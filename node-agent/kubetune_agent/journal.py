"""The on-host journal of original values, so every change the agent makes can be undone.

One JSON file, ``<journal_dir>/journal.json``, rewritten whole on every change: write a temp
file, fsync it, rename it over the journal (atomic), fsync the directory. A reader therefore sees
the old journal or the new one, never half of either, even if the agent is SIGKILLed or the node
loses power mid-write. It lives on a hostPath under /run/kubetune: it survives agent restarts and
is cleared by a reboot, when the kernel's values are reset anyway (TuneD's choice).

Format (version 1)::

    {"version": 1,
     "knobs":   {"vm.swappiness": {"original": {"proc/sys/vm/swappiness": "60"},
                                   "written":  {"proc/sys/vm/swappiness": "10"},
                                   "recordedAt": "2025-01-01T00:00:00+00:00"}},
     "threads": {"1234": {"pid": 1200, "startTime": 81234, "podUid": "...",
                          "nice": 0, "ioClass": 2, "ioPriority": 4, "cpus": [0, 1]}}}

``original`` is what was there before the agent's first write of the key; ``written`` is what the
agent last wrote (recorded *before* the write, so a crash between the two is recognisable:
the live value then still equals ``original``). The entry leaves the journal when the original
is restored.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import AgentError

JOURNAL_VERSION = 1
SECTIONS = ("knobs", "threads")


class Journal:
    """Sections of JSON entries keyed by string; every change is persisted before it returns."""

    def __init__(self, directory: Path, file_name: str = "journal.json") -> None:
        self.directory = Path(directory)
        self.path = self.directory / file_name
        self._data = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        empty: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        if not self.path.exists():
            return empty
        data = json.loads(self.path.read_text())
        if data.get("version") != JOURNAL_VERSION:
            raise AgentError(f"{self.path}: journal version {data.get('version')!r} is not "
                             f"{JOURNAL_VERSION}; refusing to guess the originals")
        return empty | {section: dict(data.get(section, {})) for section in SECTIONS}

    def entries(self, section: str) -> dict[str, Any]:
        """A copy of one section."""
        return dict(self._data[section])

    def get(self, section: str, key: str) -> Any | None:
        return self._data[section].get(key)

    def put(self, section: str, key: str, entry: Any) -> None:
        self.update(section, {key: entry})

    def update(self, section: str, entries: dict[str, Any]) -> None:
        """Add or replace several entries with one durable write."""
        self._data[section].update(entries)
        self._persist()

    def remove(self, section: str, *keys: str) -> None:
        removed = [self._data[section].pop(key, None) for key in keys]
        if any(entry is not None for entry in removed):
            self._persist()

    def _persist(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {"version": JOURNAL_VERSION, **self._data}
        handle, temp_path = tempfile.mkstemp(prefix=".journal-", dir=self.directory)
        try:
            with os.fdopen(handle, "w") as temp:
                json.dump(document, temp, indent=1, sort_keys=True)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_path, self.path)
        except BaseException:
            Path(temp_path).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
