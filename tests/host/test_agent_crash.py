"""Crash safety: SIGKILL the agent right after the journal write, or right after the knob write,
restart it, remove the plan: every original value is back exactly."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from kubetune_agent.knobs import bracketed
from tests.host import agent_harness

pytestmark = pytest.mark.host

SYSCTLS = {"vm.swappiness": "proc/sys/vm/swappiness", "vm.dirty_ratio": "proc/sys/vm/dirty_ratio"}


def run_agent(journal_dir: Path, plan: list[dict], crash_at: str = "", crash_key: str = ""):
    code, results, _, stderr = agent_harness.run_agent(journal_dir, plan, crash_at, crash_key)
    return code, results, stderr


def live(host, paths: dict[str, str]) -> dict[str, str]:
    return {key: bracketed(host.read(path)) for key, path in paths.items()}


@pytest.mark.parametrize("crash_at", ["journal", "write"])
@pytest.mark.parametrize("crash_key", ["vm.dirty_ratio", "block"])
def test_sigkill_then_restart_then_remove_restores_everything(host, tmp_path, saved_host_files,
                                                              loop_device, crash_at, crash_key):
    paths = {**SYSCTLS, f"block.{loop_device}.scheduler": f"sys/block/{loop_device}/queue/scheduler"}
    saved_host_files(*SYSCTLS.values())
    originals = live(host, paths)
    targets = {"vm.swappiness": "13" if originals["vm.swappiness"] != "13" else "14",
               "vm.dirty_ratio": "33" if originals["vm.dirty_ratio"] != "33" else "34",
               f"block.{loop_device}.scheduler":
                   "mq-deadline" if originals[f"block.{loop_device}.scheduler"] != "mq-deadline" else "none"}
    plan = [{"key": key, "value": value} for key, value in targets.items()]
    key = f"block.{loop_device}.scheduler" if crash_key == "block" else crash_key
    journal_dir = tmp_path / "journal"

    code, _, stderr = run_agent(journal_dir, plan, crash_at, key)
    assert code == -signal.SIGKILL, stderr
    journal = json.loads((journal_dir / "journal.json").read_text())
    assert key in journal["knobs"], "the original was journaled before the crash"
    assert live(host, paths)[key] == (originals[key] if crash_at == "journal" else targets[key])

    code, results, stderr = run_agent(journal_dir, plan)  # restart: reconciles, does not roll back
    assert code == 0, stderr
    assert {k: r["state"] for k, r in results.items()} == dict.fromkeys(targets, "Applied")
    assert {k: r["original"] for k, r in results.items()} == originals
    assert live(host, paths) == targets

    code, results, stderr = run_agent(journal_dir, [])  # the plan is removed
    assert code == 0, stderr
    assert {k: r["state"] for k, r in results.items()} == dict.fromkeys(targets, "Restored")
    assert live(host, paths) == originals
    assert json.loads((journal_dir / "journal.json").read_text())["knobs"] == {}
