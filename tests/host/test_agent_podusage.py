"""Top pods from real cgroups: kubelet-shaped pod cgroups on this machine's cgroup v1 cpuacct and
memory hierarchies (`kubepods/burstable/pod<uid>`), a CPU burner in one pod and a memory hog in
another, and a critical breach that the agent investigates. What is created is removed in a
``finally``: the processes are killed first, then the cgroups (only those this test made) removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kubetune.api import NodeTuningSpec
from kubetune_agent.agent import NodeAgent
from kubetune_agent.collectors import NodeCollector
from kubetune_agent.contract import investigation_events, plan_from_spec
from kubetune_agent.executor import KnobExecutor
from kubetune_agent.podusage import PodUsageReader, Resource, rank
from kubetune_agent.process import ProcessTuner

pytestmark = pytest.mark.host

CGROUP = Path("/sys/fs/cgroup")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@pytest.fixture
def pod_cgroups(host):
    """make(uid, command) -> the process, running in the pod's cpuacct and memory cgroups."""
    if not (CGROUP / "cpuacct" / "cpuacct.usage").exists() or not (CGROUP / "memory" / "memory.stat").exists():
        pytest.skip("no cgroup v1 cpuacct and memory hierarchies here")
    made: list[Path] = []
    processes: list[subprocess.Popen] = []

    def mkdir(path: Path) -> None:
        if not path.exists():
            path.mkdir()
            made.append(path)

    def make(uid: str, code: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        for controller in ("cpuacct", "memory"):
            for part in ("kubepods", "kubepods/burstable", f"kubepods/burstable/pod{uid}"):
                mkdir(CGROUP / controller / part)
            (CGROUP / controller / f"kubepods/burstable/pod{uid}" / "cgroup.procs").write_text(str(process.pid))
        return process

    try:
        yield make
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for path in reversed(made):
            for _ in range(50):  # a killed process leaves its cgroup a moment later
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        assert not [p for p in made if p.exists()], "cgroups left behind"


def test_the_busiest_pods_come_from_their_cgroups(host, pod_cgroups):
    burner, hog = str(uuid.uuid4()), str(uuid.uuid4())
    burner_process = pod_cgroups(burner, "while True: pass")
    hog_process = pod_cgroups(hog, "import time\nx = bytearray(b'\\x01') * (300 << 20)\nprint('ready', flush=True)\n"
                                    "time.sleep(60)")
    assert hog_process.stdout.readline().strip() == "ready"
    reader = PodUsageReader(host)
    spent, started = cpu_seconds(burner_process.pid), time.monotonic()
    first = reader.read()
    assert {burner, hog} <= set(first)
    time.sleep(1.0)
    second = reader.read()
    spent, seconds = cpu_seconds(burner_process.pid) - spent, time.monotonic() - started
    cpu = rank(first, second, Resource.CPU, seconds)
    memory = rank(None, second, Resource.MEMORY, 0.0)
    # The burner's CPUs from its cgroup match its own CPU time (clock ticks of 10 ms: the slack).
    assert cpu[0].uid == burner and abs(cpu[0].value - spent / seconds) <= 0.05, (cpu, spent / seconds)
    # The hog's memory was charged to its cgroup when touched (the write moves later pages only).
    assert memory[0].uid == hog and memory[0].value >= 200 << 20, memory


def test_a_critical_memory_breach_is_investigated_naming_the_top_pod(host, journal, pod_cgroups):
    hog = str(uuid.uuid4())
    process = pod_cgroups(hog, "import time\nx = bytearray(b'\\x01') * (300 << 20)\nprint('ready', flush=True)\n"
                               "time.sleep(60)")
    assert process.stdout.readline().strip() == "ready"
    agent = NodeAgent(NodeCollector(host), KnobExecutor(host, journal), ProcessTuner(host, journal),
                      pods=PodUsageReader(host))
    # Recommend, memory critical at 1 %: this machine is above it; swappiness adaptive in range.
    spec = NodeTuningSpec.model_validate({"mode": "Recommend", "thresholds": {"memory": {"warningPercent": 0.5,
                                                                                         "criticalPercent": 1}},
                                          "adaptive": {"memory": {"swappiness": {"min": 10, "max": 60}}}})
    plan = plan_from_spec(spec, {})
    agent.cycle(plan, now=0.0)  # first sample: no rates yet
    report = agent.cycle(plan, now=1.0)
    [investigation] = [i for i in report.investigations if i.threshold.metric == "memory_used_percent"]
    assert investigation.resource == Resource.MEMORY and investigation.top[0].uid == hog
    # Under a breached memory level the swappiness rule goes to its pressure end, only planned.
    [swappiness] = investigation.responses
    assert (swappiness.key, swappiness.desired, swappiness.state.value) == ("vm.swappiness", "60", "Planned")
    [event] = investigation_events(report, {hog: "shop/memory-hog"})
    assert event.reason == "Investigate" and event.warning
    assert "top pods by memory: shop/memory-hog " in event.message
    assert "adaptive response planned, nothing written (mode Recommend): vm.swappiness" in event.message
    # One Event per transition: the next cycle, still breached, investigates nothing new.
    assert agent.cycle(plan, now=2.0).investigations == ()
