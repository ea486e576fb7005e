"""Test harness: the agent's knob work in a subprocess, with an optional crash point.

    python agent_harness.py JOURNAL_DIR PLAN_JSON          # one reconcile, then exit
    python agent_harness.py --loop JOURNAL_DIR PLAN_JSON   # NodeAgent cycles until killed

PLAN_JSON is a list of {"key", "value"}. The journal is opened as the agent opens it (with the
node's lock). One-shot mode prints one JSON line per result, then {"journal": <problem or null>}.
Loop mode runs ``NodeAgent.cycle`` every 0.2 s and prints one JSON line per cycle:
{"pid", "standby", "knobs": [...]}, as the agent's watch loop would see each report.

With KUBETUNE_TEST_CRASH_AT=journal|write and KUBETUNE_TEST_CRASH_KEY=<key> the process SIGKILLs
itself right after the journal write for that key, or right after the knob write of that key's
(last) file (also during a restore): as abrupt as a node agent OOM kill.
KUBETUNE_TEST_EXTRA_SYSCTL=<name>:<low>:<high> adds one sysctl to the registry (the EPERM test
needs a sysctl whose kernel handler checks a capability; none of the allow-list's does).
Test-only: the crash points and the extra knob live here, not in the agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from kubetune_agent.agent import AgentPlan, NodeAgent
from kubetune_agent.collectors import NodeCollector
from kubetune_agent.executor import KnobExecutor, KnobTarget
from kubetune_agent.hostfs import HostFS
from kubetune_agent.journal import Journal
from kubetune_agent.knobs import IntRange, KnobRegistry, SysctlKnob, default_registry
from kubetune_agent.process import ProcessTuner

CRASH_AT = os.environ.get("KUBETUNE_TEST_CRASH_AT", "")
CRASH_KEY = os.environ.get("KUBETUNE_TEST_CRASH_KEY", "")
EXTRA_SYSCTL = os.environ.get("KUBETUNE_TEST_EXTRA_SYSCTL", "")


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


def registry() -> KnobRegistry:
    if not EXTRA_SYSCTL:
        return default_registry()
    name, low, high = EXTRA_SYSCTL.split(":")
    return KnobRegistry([*default_registry().knobs.values(), SysctlKnob(name, IntRange(int(low), int(high)))])


def main() -> None:
    loop = sys.argv[1] == "--loop"
    journal_dir, plan = Path(sys.argv[1 + loop]), json.loads(sys.argv[2 + loop])
    targets = [KnobTarget(t["key"], t["value"]) for t in plan]
    fs = CrashingHostFS(Path("/"))
    journal = CrashingJournal(journal_dir, lock=True)
    executor = KnobExecutor(fs, journal, registry())
    if CRASH_KEY:
        knob, device = executor.registry.resolve(CRASH_KEY)
        fs.crash_paths = {knob.files(fs, device)[-1]}
    if not loop:
        for result in executor.reconcile(targets):
            print(json.dumps(asdict(result)))
        print(json.dumps({"journal": journal.problem}))
        return
    agent = NodeAgent(NodeCollector(fs), executor, ProcessTuner(fs, journal))
    while True:
        report = agent.cycle(AgentPlan(dry_run=False, knobs=tuple(targets)))
        print(json.dumps({"pid": os.getpid(), "standby": report.standby,
                          "knobs": [asdict(r) for r in report.knobs]}), flush=True)
        time.sleep(0.2)


# ---- for the tests: run the harness as a separate process --------------------------------


def run_agent(journal_dir: Path, plan: list[dict], crash_at: str = "", crash_key: str = "",
              wrapper: tuple[str, ...] = (), extra_sysctl: str = ""):
    """One reconcile in a new process (``wrapper`` goes before python: setpriv, unshare...).
    Returns (exit code, results by key, the journal's problem, stderr)."""
    env = {**os.environ, "KUBETUNE_TEST_CRASH_AT": crash_at, "KUBETUNE_TEST_CRASH_KEY": crash_key,
           "KUBETUNE_TEST_EXTRA_SYSCTL": extra_sysctl}
    done = subprocess.run([*wrapper, sys.executable, __file__, str(journal_dir), json.dumps(plan)],
                          env=env, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    problem = next((line["journal"] for line in lines if "journal" in line), None)
    return done.returncode, {r["key"]: r for r in lines if "key" in r}, problem, done.stderr


def start_loop(journal_dir: Path, plan: list[dict], output: Path) -> subprocess.Popen:
    """An agent process cycling until killed; its report lines go to ``output``."""
    with open(output, "w") as sink:
        return subprocess.Popen([sys.executable, __file__, "--loop", str(journal_dir), json.dumps(plan)],
                                stdout=sink, stderr=subprocess.STDOUT, text=True)


def cycles(output: Path) -> list[dict]:
    """The cycle reports a loop process has printed so far (a half-written last line is skipped)."""
    reports = []
    for line in output.read_text().splitlines():
        try:
            reports.append(json.loads(line))
        except ValueError:
            continue  # a log line, or the line being written
    return [r for r in reports if isinstance(r, dict) and "pid" in r]


if __name__ == "__main__":
    main()
