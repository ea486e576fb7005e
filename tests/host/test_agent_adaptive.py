"""Adaptive caching through the agent's cycle on this machine's real sysctls: the rules choose
vm.vfs_cache_pressure and the dirty ratios from memory pressure, the one executor writes them
(journal, read back), and they come back exactly when the rules leave the plan.

The memory figures are scripted (this machine's real pressure is whatever it is); the samples,
the executor, the journal and the sysctls are real.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from kubetune_agent.adaptive import CachePressureRule, DirtyRule
from kubetune_agent.agent import AdaptivePlan, AgentPlan, NodeAgent
from kubetune_agent.collectors import NodeCollector, summarise
from kubetune_agent.executor import KnobExecutor, KnobTarget, TuningState
from kubetune_agent.process import ProcessTuner

pytestmark = pytest.mark.host

PATHS = {
    "vm.vfs_cache_pressure": "proc/sys/vm/vfs_cache_pressure",
    "vm.dirty_ratio": "proc/sys/vm/dirty_ratio",
    "vm.dirty_background_ratio": "proc/sys/vm/dirty_background_ratio",
}
CACHING = AdaptivePlan(cache_pressure=CachePressureRule(minimum=61, maximum=143),
                       dirty=DirtyRule(ratio=(11, 37), background=(3, 9), latency_high_ms=1e9))


class ScriptedAgent(NodeAgent):
    """The real agent with the memory figure of each cycle set by the test."""

    memory_used_percent = 50.0

    def sample(self, latency_targets=()):
        sample = self.collector.sample(latency_targets or None)
        summary = summarise(self.previous or sample, sample)
        self.previous = sample
        return sample, replace(summary, memory_used_percent=self.memory_used_percent, disk_latency_ms=1.0)


@pytest.fixture
def agent(host, journal, saved_host_files):
    saved_host_files(*PATHS.values())
    return ScriptedAgent(NodeCollector(host), KnobExecutor(host, journal), ProcessTuner(host, journal))


def cycle(agent, memory, plan):
    agent.memory_used_percent = memory
    report = agent.cycle(plan, now=0)
    return {r.key: r for r in report.knobs}, [r.key for r in report.knobs]


def live(host):
    return {key: host.read(path) for key, path in PATHS.items()}


def test_caching_adapts_to_memory_pressure_and_is_restored_exactly(host, journal, agent):
    originals = live(host)
    plan = AgentPlan(dry_run=False, adaptive=CACHING)

    results, order = cycle(agent, 50, plan)  # relaxed: cache pressure min, dirty ratios the middle
    assert {k: r.state for k, r in results.items()} == dict.fromkeys(PATHS, TuningState.APPLIED), results
    assert live(host) == {"vm.vfs_cache_pressure": "61", "vm.dirty_ratio": "24", "vm.dirty_background_ratio": "6"}
    assert results["vm.vfs_cache_pressure"].original == originals["vm.vfs_cache_pressure"]
    entries = json.loads(journal.path.read_text())["knobs"]
    assert {k: entries[k]["original"] for k in PATHS} == {k: {PATHS[k]: v} for k, v in originals.items()}

    results, order = cycle(agent, 95, plan)  # pressure: reclaim metadata, write back sooner
    assert live(host) == {"vm.vfs_cache_pressure": "143", "vm.dirty_ratio": "11", "vm.dirty_background_ratio": "3"}
    assert order.index("vm.dirty_background_ratio") < order.index("vm.dirty_ratio")  # lowering: background first
    assert "adaptive: memory 95%" in results["vm.dirty_ratio"].message

    cycle(agent, 80, plan)  # the band: nothing moves
    assert live(host)["vm.vfs_cache_pressure"] == "143" and live(host)["vm.dirty_ratio"] == "11"

    results, order = cycle(agent, 40, plan)
    assert live(host) == {"vm.vfs_cache_pressure": "61", "vm.dirty_ratio": "24", "vm.dirty_background_ratio": "6"}
    assert order.index("vm.dirty_ratio") < order.index("vm.dirty_background_ratio")  # raising: dirty first

    # The rules leave the plan: every original back, byte for byte, and out of the journal.
    results, _ = cycle(agent, 40, AgentPlan(dry_run=False))
    assert {k: r.state for k, r in results.items()} == dict.fromkeys(PATHS, TuningState.RESTORED), results
    assert live(host) == originals
    assert journal.entries("knobs") == {}


def test_recommend_plans_the_caching_targets_and_writes_nothing(host, journal, agent):
    originals = live(host)
    results, _ = cycle(agent, 95, AgentPlan(dry_run=True, adaptive=CACHING))
    assert {k: r.state for k, r in results.items()} == dict.fromkeys(PATHS, TuningState.PLANNED), results
    assert {k: r.desired for k, r in results.items()} == {
        "vm.vfs_cache_pressure": "143", "vm.dirty_ratio": "11", "vm.dirty_background_ratio": "3"}
    assert live(host) == originals and journal.entries("knobs") == {}


def test_a_lone_background_range_stays_below_the_planned_dirty_ratio(host, journal, agent):
    plan = AgentPlan(dry_run=False, knobs=(KnobTarget("vm.dirty_ratio", "7", "fixed by a policy"),),
                     adaptive=AdaptivePlan(dirty=DirtyRule(ratio=None, background=(2, 20))))
    results, _ = cycle(agent, 50, plan)  # the middle of 2..20 is 11, but dirty_ratio will be 7
    assert results["vm.dirty_background_ratio"].state is TuningState.APPLIED
    assert live(host)["vm.dirty_background_ratio"] == "6" and live(host)["vm.dirty_ratio"] == "7"
