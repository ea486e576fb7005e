"""Known answers for the collectors: two recorded /proc snapshots 10 s apart (tests/data/node-snapshot,
whose README lists what moved between them) go through the agent's own reading and parsing, and every
figure of ``summarise`` is checked against a sum worked by hand here. A snapshot is a fake host root by
necessity: the point is a fixed input with a known answer, which the live /proc of this machine is not
(tests/host/test_agent_collectors.py reads it under real load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.api import NodeTuningSpec
from kubetune_agent.adaptive import ThresholdLevel, ThresholdReason, ThresholdState, evaluate_thresholds
from kubetune_agent.collectors import (
    IGNORED_DISKS,
    NodeCollector,
    NodeSummary,
    parse_sample,
    parse_stat,
    summarise,
)
from kubetune_agent.contract import thresholds
from kubetune_agent.hostfs import HostFS

pytestmark = pytest.mark.unit

SNAPSHOT = Path(__file__).parent.parent / "data" / "node-snapshot"
# eth0 negotiated 1 Gb/s; cni0 is a bridge (no speed); ifb0 is down.
LINKS = {"lo": (True, None), "eth0": (True, 1000), "cni0": (True, None), "ifb0": (False, None)}


def sample_at(name: str, monotonic: float, links=LINKS):
    collector = NodeCollector(HostFS(SNAPSHOT / name))
    texts = collector.read_texts()
    assert set(texts) >= {"stat", "meminfo", "vmstat", "diskstats", "net_dev", "snmp"}
    whole = frozenset(d for d in collector.fs.list("sys/block") if not IGNORED_DISKS.match(d))
    return parse_sample(texts, monotonic=monotonic, page_size=4096, disks=whole.__contains__, links=links)


@pytest.fixture(scope="module")
def summary() -> NodeSummary:
    return summarise(sample_at("t0", 100.0), sample_at("t1", 110.0))


def test_cpu_utilisation_is_the_busy_share_of_all_ticks(summary):
    # 2000 ticks passed: user 1200 + system 300 + idle 400 + iowait 100. Idle and iowait are not
    # busy: (2000 - 500) / 2000 = 75 %. Inverting it (idle share) would give 25.
    assert summary.cpu_utilization_percent == 75.0
    assert summary.load1_per_cpu == 1.5  # load1 3.00 over 2 cpuN lines


def test_memory_and_swap_from_meminfo(summary):
    # used = total - available = 20000000 - 1600000 kB = 92 % of 20000000 kB.
    assert summary.memory_used_percent == 92.0
    # swap used = 4000000 - 3000000 kB = 25 % of 4000000 kB.
    assert summary.swap_used_percent == 25.0
    assert summary.major_page_faults_per_second == 50.0  # 500 in 10 s


def test_disk_iops_latency_and_queue_depth(summary):
    # vda: 1000 reads + sdb: 10 reads in 10 s = 101/s; vda: 1000 writes = 100/s.
    assert summary.disk_read_iops == 101.0
    assert summary.disk_write_iops == 100.0
    # vda: (60000 + 180000) ms over 2000 I/Os = 120 ms each; sdb: 50 ms / 10 = 5 ms; the worst
    # device counts. Without the ms -> s -> ms conversions this would be 0.12 or 120000.
    # loop0 (1000000 ms for 100 reads = 10 s each) is a loop device and does not count.
    assert summary.disk_latency_ms == 120.0
    # vda: 100000 ms of weighted I/O time in 10 s = 10 I/Os in flight on average.
    assert summary.disk_queue_depth == 10.0


def test_network_throughput_bandwidth_and_loss(summary):
    # eth0 received 1.1e9 bytes in 10 s (lo excluded; cni0 moved nothing).
    assert summary.network_receive_bytes_per_second == 110_000_000.0
    assert summary.network_transmit_bytes_per_second == 5_000_000.0
    # The busier direction: 110e6 B/s * 8 = 880 Mb/s of 1000 Mb/s = 88 %.
    assert summary.network_bandwidth_percent == 88.0
    # cni0 is up without a speed: named, not guessed; ifb0 is down and lo is loopback.
    assert summary.unknown_speed_links == ("cni0",)
    # 2000 drops over 998000 packets + 2000 lost = 0.2 %.
    assert summary.network_drops_errors_per_second == 200.0
    assert summary.network_loss_percent == 0.2
    assert summary.tcp_established == 42


def test_no_link_speed_means_no_bandwidth_figure_and_says_why():
    unknown = {name: (up, None) for name, (up, _) in LINKS.items()}
    summary = summarise(sample_at("t0", 0.0, unknown), sample_at("t1", 10.0, unknown))
    assert summary.network_bandwidth_percent is None
    assert summary.missing["network_bandwidth_percent"] == "link speed unknown for eth0, cni0 (the driver reports none)"


def test_every_row_of_the_default_thresholds_table_against_the_snapshot(summary):
    """docs/api.md's defaults: CPU 70/85 % for 5m, memory 75/90 %, swap 20 %, disk latency
    50/100 ms and queue depth 8, bandwidth 80 % of link speed, latency 50 ms, loss 0.1 %."""
    values = {name: getattr(summary, name) for name in NodeSummary.__dataclass_fields__}
    values["tcp_connect_ms"] = 12.5  # a connect time (tests/host measures a real one)
    plan = thresholds(NodeTuningSpec())
    statuses, state = evaluate_thresholds(values, plan, ThresholdState(), now=0.0, missing=summary.missing)
    got = {(s.metric, s.level.value): s.reason.value for s in statuses}
    assert got == {
        # 75 % is above the warning level 70 but has not held for 5m yet; below critical 85.
        ("cpu_utilization_percent", "warning"): "BreachPending",
        ("cpu_utilization_percent", "critical"): "WithinThresholds",
        ("memory_used_percent", "warning"): "ThresholdExceeded",  # 92 > 75
        ("memory_used_percent", "critical"): "ThresholdExceeded",  # 92 > 90
        ("swap_used_percent", "warning"): "ThresholdExceeded",  # 25 > 20
        ("disk_latency_ms", "warning"): "ThresholdExceeded",  # 120 > 50
        ("disk_latency_ms", "critical"): "ThresholdExceeded",  # 120 > 100
        ("disk_queue_depth", "warning"): "ThresholdExceeded",  # 10 > 8
        ("network_bandwidth_percent", "warning"): "ThresholdExceeded",  # 88 > 80
        ("tcp_connect_ms", "warning"): "WithinThresholds",  # 12.5 <= 50
        ("network_loss_percent", "warning"): "ThresholdExceeded",  # 0.2 > 0.1
    }
    # Five minutes later the CPU warning level has held for its sustained period.
    later, _ = evaluate_thresholds(values, plan, state, now=300.0, missing=summary.missing)
    cpu = next(s for s in later if s.metric == "cpu_utilization_percent" and s.level is ThresholdLevel.WARNING)
    assert cpu.breached and cpu.message == ("cpu_utilization_percent 75 > warning level 70 for 300s "
                                            "(sustained period 300s)")


def test_a_level_without_a_value_says_why():
    plan = thresholds(NodeTuningSpec())
    statuses, _ = evaluate_thresholds({"network_bandwidth_percent": None}, plan, ThresholdState(), 0.0,
                                      missing={"network_bandwidth_percent": "link speed unknown for eth0"})
    bandwidth = next(s for s in statuses if s.metric == "network_bandwidth_percent")
    assert bandwidth.reason is ThresholdReason.NO_DATA and not bandwidth.breached
    assert bandwidth.message == "network_bandwidth_percent: link speed unknown for eth0"


def test_proc_stat_columns_and_counts():
    seconds, count, switches, interrupts, soft = parse_stat((SNAPSHOT / "t0" / "proc" / "stat").read_text())
    assert seconds["user"] == 1924.86 and seconds["idle"] == 888.2 and seconds["guest_nice"] == 0.0
    assert (count, switches, interrupts, soft) == (2, 19182303, 8283954, 2682997)
