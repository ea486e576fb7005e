"""Pod usage from cgroups, the ranking of a breach's top pods, the investigation's Event text and the
adaptive rules under a breached critical level.

The cgroup v2 tree is written to a temp host root: this machine runs cgroup v1 controllers (the host
tier reads those for real, tests/host/test_agent_podusage.py) and has no systemd-driver kubepods.slice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_agent.adaptive import (
    GovernorRule,
    LoadLevel,
    SwappinessRule,
    ThresholdLevel,
    ThresholdReason,
    ThresholdStatus,
)
from kubetune_agent.agent import AdaptivePlan, CycleReport, Investigation, NodeAgent
from kubetune_agent.contract import investigation_events, status_from_report
from kubetune_agent.executor import KnobResult, TuningState
from kubetune_agent.hostfs import HostFS
from kubetune_agent.main import api_endpoint
from kubetune_agent.podusage import PodRank, PodUsage, PodUsageReader, Resource, blkio_bytes, io_stat_bytes, rank

pytestmark = pytest.mark.unit

UID_A = "0f4a1c2e-1111-4222-8333-444455556666"
UID_B = "9b8c7d6e-aaaa-4bbb-8ccc-ddddeeeeffff"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_systemd_layout(tmp_path):
    base = "sys/fs/cgroup/kubepods.slice"
    a = f"{base}/kubepods-burstable.slice/kubepods-burstable-pod{UID_A.replace('-', '_')}.slice"
    b = f"{base}/kubepods-pod{UID_B.replace('-', '_')}.slice"  # guaranteed pods sit directly under kubepods
    for pod, usec, current, inactive, io in ((a, 2_500_000, 300 << 20, 100 << 20, "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2"),
                                             (b, 500_000, 50 << 20, 0, "")):
        write(tmp_path, f"{pod}/cpu.stat", f"usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n")
        write(tmp_path, f"{pod}/memory.current", str(current))
        write(tmp_path, f"{pod}/memory.stat", f"anon 1\ninactive_file {inactive}\nactive_file 3\n")
        write(tmp_path, f"{pod}/io.stat", io)
    usage = PodUsageReader(HostFS(tmp_path)).read()
    assert usage[UID_A] == PodUsage(UID_A, 2.5, 200 << 20, 12288)  # working set = current - inactive_file
    assert usage[UID_B] == PodUsage(UID_B, 0.5, 50 << 20, 0)


def test_no_pod_cgroups_no_usage(tmp_path):
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    assert PodUsageReader(HostFS(tmp_path)).read() == {}


def test_io_counters_of_both_cgroup_versions():
    assert io_stat_bytes("8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=5 dios=1\n8:16 rbytes=1 wbytes=2") == 123
    v1 = "8:0 Read 100\n8:0 Write 20\n8:0 Sync 120\n8:0 Async 0\n8:0 Discard 7\n8:0 Total 127\nTotal 127"
    assert blkio_bytes(v1) == 120  # Read + Write; Total would count discards too


def test_rank_memory_by_working_set_cpu_and_io_by_rate():
    before = {UID_A: PodUsage(UID_A, 10.0, 100, 1000), UID_B: PodUsage(UID_B, 10.0, 900, 0)}
    after = {UID_A: PodUsage(UID_A, 13.0, 100, 5000), UID_B: PodUsage(UID_B, 11.0, 900, 0),
             "new": PodUsage("new", 1.0, 5, 0)}  # no earlier reading: no rate
    assert rank(before, after, Resource.CPU, 2.0) == [PodRank(UID_A, 1.5, "cpu"), PodRank(UID_B, 0.5, "cpu")]
    assert [r.uid for r in rank(None, after, Resource.MEMORY, 0.0)] == [UID_B, UID_A, "new"]
    assert rank(before, after, Resource.IO, 2.0)[0] == PodRank(UID_A, 2000.0, "io")
    assert rank(before, after, Resource.CPU, 2.0, top=1) == [PodRank(UID_A, 1.5, "cpu")]


def breach(metric: str) -> ThresholdStatus:
    return ThresholdStatus(metric, True, ThresholdReason.THRESHOLD_EXCEEDED,
                           f"{metric} 93 > critical level 90 for 0s (sustained period 0s)", 0.0,
                           ThresholdLevel.CRITICAL, changed=True)


def report(*investigations: Investigation) -> CycleReport:
    return CycleReport(None, None, investigations=investigations)  # type: ignore[arg-type]


def test_the_investigation_event_names_pods_and_the_adaptive_response():
    moved = KnobResult("vm.swappiness", TuningState.PLANNED, desired="60", current="30")
    top = (PodRank(UID_A, 2210 * 2**20, "memory"), PodRank(UID_B, 512 * 2**20, "memory"))
    [event] = investigation_events(report(Investigation(breach("memory_used_percent"), Resource.MEMORY, top,
                                                        (moved,), dry_run=True)), {UID_A: "shop/cache-0"})
    assert (event.reason, event.warning) == ("Investigate", True)
    assert event.message == (
        "memory_used_percent 93 > critical level 90 for 0s (sustained period 0s); top pods by memory: "
        f"shop/cache-0 2210 MiB, pod {UID_B} 512 MiB; adaptive response planned, nothing written (mode "
        "Recommend): vm.swappiness 30 -> 60 (Planned)")
    [event] = investigation_events(report(Investigation(breach("cpu_utilization_percent"), Resource.CPU, (), (),
                                                        dry_run=False)))
    assert event.message.endswith("; no pod cgroup on this node shows cpu use; no adaptive rule of the node's "
                                  "policy acts on it")


def test_a_breached_critical_level_pushes_the_adaptive_rules_to_their_pressure_end():
    from kubetune_agent.collectors import NodeSummary

    agent = NodeAgent(None, None, None)  # type: ignore[arg-type]  (adaptive_targets needs no I/O here)
    calm = NodeSummary(10, cpu_utilization_percent=50, load1_per_cpu=0.5, memory_used_percent=80,
                       swap_used_percent=0, major_page_faults_per_second=0, disk_read_iops=0, disk_write_iops=0,
                       disk_latency_ms=1, disk_queue_depth=0, network_receive_bytes_per_second=0,
                       network_transmit_bytes_per_second=0, network_drops_errors_per_second=0,
                       network_loss_percent=0, tcp_established=0, tcp_connect_ms=None, thermal_throttle_events=0)
    rules = AdaptivePlan(governor=GovernorRule(sustained_seconds=600), swappiness=SwappinessRule())
    # Without a breach: CPU 50 % is the default level, memory 80 % is in the hysteresis band.
    plain = {t.key: t.value for t in agent.adaptive_targets(rules, calm, now=0.0)}
    assert plain == {"cpu.governor": "schedutil", "vm.swappiness": "30"}
    # The policy's critical levels are lower than the rules' own bands (CPU critical at 40 %, memory
    # at 75 %), and breached: the governor goes to high load at once, swappiness to its maximum.
    pressed = {t.key: t.value for t in agent.adaptive_targets(
        rules, calm, now=10.0, pressure=frozenset({"cpu_utilization_percent", "memory_used_percent"}))}
    assert pressed == {"cpu.governor": "performance", "vm.swappiness": "60"}
    assert agent.governor.level is LoadLevel.HIGH


def test_status_carries_ready_and_lists_levels_it_could_not_evaluate():
    from datetime import UTC, datetime

    from kubetune_agent.collectors import CpuSample, MemorySample, NodeSample, TcpSample

    sample = NodeSample(0.0, CpuSample({}, 0.5, 0.4, 0.3, 1, 1, 1, 2), MemorySample(1, 1, 50.0, 0, 0, 0, 0, 0, 0, 0, 0),
                        (), (), TcpSample(0, 0, 0, 0, 0, 0), {}, None)
    unknown = ThresholdStatus("network_bandwidth_percent", False, ThresholdReason.NO_DATA,
                              "network_bandwidth_percent: link speed unknown for eth0 (the driver reports none)",
                              None, ThresholdLevel.WARNING)
    status = status_from_report(CycleReport(sample, None, thresholds=(unknown,)), 2, None, [],
                                datetime(2026, 1, 1, tzinfo=UTC), interval_seconds=10.0)
    conditions = {c.type: c for c in status.conditions}
    assert (conditions["Ready"].status.value, conditions["Ready"].reason) == ("True", "AgentReporting")
    assert conditions["Ready"].message == "the node agent reports every 10s"
    assert conditions["Warning"].status.value == "False"
    assert conditions["Warning"].message.endswith(
        "; not evaluated: network_bandwidth_percent: link speed unknown for eth0 (the driver reports none)")
    assert status.reporting_interval_seconds == 10.0


@pytest.mark.parametrize("url, endpoint", [
    ("https://10.96.0.1:443", "10.96.0.1:443"),
    ("https://127.0.0.1:6443", "127.0.0.1:6443"),
    ("https://kubernetes.default.svc", "kubernetes.default.svc:443"),
    ("https://[fd00::1]:6443", "[fd00::1]:6443"),
    ("", None),
])
def test_the_default_latency_target_is_the_api_endpoint(url, endpoint):
    assert api_endpoint(url) == endpoint
