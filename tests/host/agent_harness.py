"""Test harness: one agent reconcile in a subprocess, with an optional crash point.

    python agent_harness.py JOURNAL_DIR PLAN_JSON

PLAN_JSON is a list of {"key", "value"}. With KUBETUNE_TEST_CRASH_AT=journal|write and
KUBETUNE_TEST_CRASH_KEY=<key> the process SIGKILLs itself right after the journal write for that
key, or right after the knob write of that key's (last) file: as abrupt as a node agent OOM kill.
The results are printed as JSON lines. Test-only: the crash points live here, not in the agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from kubetune_agent.executor import KnobExecutor, KnobTarget
from kubetune_agent.hostfs import HostFS
from kubetune_agent.journal import Journal

CRASH_AT = os.environ.get("KUBETUNE_TEST_CRASH_AT", "")
CRASH_KEY = os.environ.get("KUBETUNE_TEST_CRASH_KEY", "")


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingJournal(Journal):
    def update(self, section, entries):
        super().update(section, entries)
        if CRASH_AT == "journal" and CRASH_KEY in entries:
            crash()


class CrashingHostFS(HostFS):
    crash_paths: set[str] = set()

    def write(self, relative, value):
        super().write(relative, value)
        if CRASH_AT == "write" and relative in self.crash_paths:
            crash()


def main() -> None:
    journal_dir, plan = Path(sys.argv[1]), json.loads(sys.argv[2])
    fs = CrashingHostFS(Path("/"))
    executor = KnobExecutor(fs, CrashingJournal(journal_dir))
    if CRASH_KEY:
        knob, device = executor.registry.resolve(CRASH_KEY)
        fs.crash_paths = {knob.files(fs, device)[-1]}
    for result in executor.reconcile([KnobTarget(t["key"], t["value"]) for t in plan]):
        print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
