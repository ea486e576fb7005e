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

Faults (docs/node-agent.md, "Journal faults"):

- **One process per node.** ``Journal(..., lock=True)`` takes an exclusive ``flock`` on
  ``<journal_dir>/lock`` in ``acquire`` and reads the journal only once it holds it. During a DaemonSet rolling
  update the new agent finds the old one holding it and stands by (``acquire`` is False) until the
  old process exits, when the kernel releases the lock, even after SIGKILL.
- **A change that cannot be persisted is not made**: ``update``/``remove`` write the new journal
  first and change the in-memory copy only if that worked, so a full disk leaves both as they were.
- **An unreadable journal** (truncated, garbage, empty, not the expected shape) is renamed to
  ``journal.json.corrupt`` for the admin and ``problem`` says why: the originals are unknown, so
  nothing may be tuned or restored (the live values may be the agent's own). The copy's presence is
  the block: it holds across restarts, and ``check`` lifts it once the admin has deleted every
  ``journal.json.corrupt*`` (after restoring the values it lists, or putting a repaired
  ``journal.json`` back).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import AgentError

JOURNAL_VERSION = 1
SECTIONS = ("knobs", "threads")
LOCK_FILE = "lock"
CORRUPT_SUFFIX = ".corrupt"


class Journal:
    """Sections of JSON entries keyed by string; every change is persisted before it returns."""

    def __init__(self, directory: Path, file_name: str = "journal.json", *, lock: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / file_name
        self.problem: str | None = None  # why the journal cannot be used; None when it can
        self._data: dict[str, dict[str, Any]] = _empty()
        self._lock_fd: int | None = None
        self._locking = lock
        if not lock:
            self._data = self._load()
        # With lock=True nothing is read until ``acquire``: the first cycle with a plan takes the
        # lock, so `--metrics-only` (which never writes) never holds it.

    # ---- one process per node ------------------------------------------------------------

    @property
    def held(self) -> bool:
        return not self._locking or self._lock_fd is not None

    def acquire(self) -> bool:
        """Take the node's journal lock if it is free (never waits); read the journal when first
        taken. True when this process may use the journal."""
        if self.held:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # who holds it, for the standby's message; the lock is the flock, not this text
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full directory: the message says "pid ?", the lock holds all the same
        self._lock_fd = fd
        self._data = self._load()
        return True

    def holder(self) -> str:
        """The PID written by the process holding the lock ("" if unknown)."""
        try:
            return (self.directory / LOCK_FILE).read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor drops the flock
            self._lock_fd = None

    # ---- reading -------------------------------------------------------------------------

    def corrupt_copies(self) -> list[Path]:
        return sorted(self.directory.glob(self.path.name + CORRUPT_SUFFIX + "*"))

    def _load(self) -> dict[str, dict[str, Any]]:
        self.problem = None
        data: Any = None
        if self.path.exists():
            raw = self.path.read_bytes()
            try:
                data = json.loads(raw)
                _check_shape(data)
            except (ValueError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                copy = self._keep_corrupt_copy()
                self.problem = (f"journal {self.path} is unreadable ({_short(error)}); moved to {copy}. "
                                "The original values are unknown, so nothing is tuned or restored until "
                                f"an admin restores the values it lists (or puts a repaired journal back) "
                                f"and deletes {copy}")
                return _empty()
        copies = self.corrupt_copies()
        if copies:
            self.problem = (f"{copies[0]} is kept for the admin: nothing is tuned or restored until they "
                            "have checked the values it lists and deleted it")
            return _empty()
        if data is None:
            return _empty()
        if data.get("version") != JOURNAL_VERSION:
            raise AgentError(f"{self.path}: journal version {data.get('version')!r} is not "
                             f"{JOURNAL_VERSION}; refusing to guess the originals")
        return _empty() | {section: dict(data.get(section, {})) for section in SECTIONS}

    def _keep_corrupt_copy(self) -> Path:
        copy = self.directory / (self.path.name + CORRUPT_SUFFIX)
        number = 1
        while copy.exists():
            copy = self.directory / f"{self.path.name}{CORRUPT_SUFFIX}.{number}"
            number += 1
        os.replace(self.path, copy)
        return copy

    def check(self) -> str | None:
        """Why the journal cannot be used now, else None. A block lifts once the admin has deleted
        every corrupt copy: the journal (repaired, or none) is then read again."""
        if self.problem is not None and not self.corrupt_copies():
            self._data = self._load()
        return self.problem

    def entries(self, section: str) -> dict[str, Any]:
        """A copy of one section."""
        return dict(self._data[section])

    def get(self, section: str, key: str) -> Any | None:
        return self._data[section].get(key)

    # ---- changing: the file first, then memory -------------------------------------------

    def put(self, section: str, key: str, entry: Any) -> None:
        self.update(section, {key: entry})

    def update(self, section: str, entries: dict[str, Any]) -> None:
        """Add or replace several entries with one durable write; raises OSError (nothing changed)
        when the journal cannot be written."""
        self._commit(section, {**self._data[section], **entries})

    def remove(self, section: str, *keys: str) -> None:
        remaining = {key: entry for key, entry in self._data[section].items() if key not in keys}
        if len(remaining) != len(self._data[section]):
            self._commit(section, remaining)

    def _commit(self, section: str, content: dict[str, Any]) -> None:
        if self.problem is not None or not self.held:
            # A journal we could not read must never be overwritten with what we think it holds.
            raise AgentError(f"journal {self.path} not written: {self.problem or 'the lock is not held'}")
        data = {**self._data, section: content}
        self._persist(data)
        self._data = data

    def _persist(self, data: dict[str, dict[str, Any]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {"version": JOURNAL_VERSION, **data}
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


def _empty() -> dict[str, dict[str, Any]]:
    return {section: {} for section in SECTIONS}


def _check_shape(data: Any) -> None:
    """Raises TypeError unless ``data`` looks like a journal: sections of entries, knob entries with
    per-file string originals (what a restore would write)."""
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__}, not an object")
    if not isinstance(data.get("version"), int):
        raise TypeError("no version number")
    for section in SECTIONS:
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise TypeError(f"section {section!r} is not an object of entries")
    for key, entry in data.get("knobs", {}).items():
        original = entry.get("original")
        if not isinstance(original, dict) or not all(isinstance(v, str) for v in original.values()):
            raise TypeError(f"knob {key!r} has no per-file original values")


def _short(error: Exception) -> str:
    return str(error)[:200]
