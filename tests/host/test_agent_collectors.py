"""The collectors under real load on this machine, read back through the agent's own code.

Each test makes the load itself and compares what the agent derives with an independent measure of
that load: a CPU burner's own CPU time, the bytes a memory hog holds, the I/Os a direct-I/O writer
completed on a loop device, the bytes sent over a veth pair, a TCP connect held up by a traffic
shaper. Other work on this machine adds noise, so the bounds say which way it can push a figure.
Everything made here is removed in a ``finally`` (processes killed, loop device detached, veth and
network namespace deleted).
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kubetune.api import NodeTuningSpec
from kubetune_agent.adaptive import ThresholdState, evaluate_thresholds
from kubetune_agent.collectors import NodeCollector, link_states, summarise, tcp_connect_seconds
from kubetune_agent.contract import thresholds

pytestmark = pytest.mark.host

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def test_a_cpu_burner_raises_cpu_utilisation_by_its_share(host):
    collector = NodeCollector(host)
    cpus = os.cpu_count() or 1
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.3)  # started and spinning
        spent = sum(cpu_seconds(b.pid) for b in burners)
        before = collector.sample()
        time.sleep(2.0)
        after = collector.sample()
        spent = sum(cpu_seconds(b.pid) for b in burners) - spent
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    summary = summarise(before, after)
    share = 100.0 * spent / (summary.interval_seconds * cpus)
    # The burners' own CPU time is a floor (other work only adds busy time); one clock tick of
    # rounding per burner is the slack. An inverted figure (the idle share) would fail here.
    slack = 100.0 * cpus / TICKS / (summary.interval_seconds * cpus) + 2
    # Other work on a busy machine takes CPU from the burners; their share must still be clearly
    # above the slack for the floor to say anything.
    assert share > slack + 5, f"the burners got only {share:.0f}% of the CPUs: too busy a machine to tell"
    assert share - slack <= summary.cpu_utilization_percent <= 100.0, (share, summary)


def test_a_memory_hog_moves_memory_used_by_what_it_holds(host):
    collector = NodeCollector(host)
    total = collector.sample().memory.total_bytes
    available = collector.sample().memory.available_bytes
    size = min(2 << 30, available // 4)
    expected = 100.0 * size / total
    hog = subprocess.Popen([sys.executable, "-c", f"import sys, time\nx = bytearray(b'\\x01') * {size}\n"
                            "print('ready', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        before_hog = collector.sample()
        assert hog.stdout.readline().strip() == "ready"
        with_hog = collector.sample()
    finally:
        hog.kill()
        hog.wait()
    moved = with_hog.memory.used_percent - before_hog.memory.used_percent
    # The hog's pages are all touched (filled with 1s); other processes on this machine allocate and
    # free meanwhile, hence the band.
    assert 0.7 * expected <= moved <= 1.3 * expected + 0.5, (moved, expected, size)
    after_hog = collector.sample()
    assert after_hog.memory.used_percent < with_hog.memory.used_percent - 0.5 * expected


def test_direct_io_on_a_loop_device_shows_iops_and_latency(host, loop_device):
    # Loop devices are left out of node metrics (node_exporter's default too); here one is the disk.
    collector = NodeCollector(host, ignored_disks=re.compile(r"^(ram|fd|zram)\d+$"))
    count, block = 400, 4096
    buffer = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    buffer.write(b"k" * block)
    fd = os.open(f"/dev/{loop_device}", os.O_RDWR | os.O_DIRECT)  # no O_SYNC: each would add a flush
    try:
        before = collector.sample()
        started = time.perf_counter()
        for i in range(count):
            os.pwritev(fd, [buffer], (i * 2 % 8192) * block)  # every other block: nothing to merge
        for i in range(count):
            os.preadv(fd, [buffer], (i * 2 % 8192) * block)
        wall = time.perf_counter() - started
        after = collector.sample()
    finally:
        os.close(fd)
    only = lambda s: replace(s, disks=tuple(d for d in s.disks if d.device == loop_device))  # noqa: E731
    summary = summarise(only(before), only(after))
    done_writes = round(summary.disk_write_iops * summary.interval_seconds)
    done_reads = round(summary.disk_read_iops * summary.interval_seconds)
    # Synchronous direct I/O: one request per call, none merged; udev may read a few blocks.
    assert count <= done_writes <= count + 8, (done_writes, summary)
    assert count <= done_reads <= count + 64, (done_reads, summary)
    # The kernel's time per completed I/O cannot exceed the wall time the test waited per call.
    per_call_ms = wall * 1000 / (2 * count)
    assert 0 < summary.disk_latency_ms <= per_call_ms * 1.05, (summary.disk_latency_ms, per_call_ms)
    # One I/O in flight at a time: the average queue depth is the busy share, at most 1.
    assert 0 < summary.disk_queue_depth <= 1.05, summary.disk_queue_depth


@pytest.fixture
def veth(host):
    """A veth pair: ktv0 here (10.213.0.1), ktv1 in the network namespace ktprobe (10.213.0.2)."""
    if not shutil.which("ip"):
        pytest.skip("iproute2 is not installed")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=check, capture_output=True, text=True)

    run("ip", "link", "del", "ktv0", check=False)
    run("ip", "netns", "del", "ktprobe", check=False)
    try:
        run("ip", "netns", "add", "ktprobe")
        run("ip", "link", "add", "ktv0", "type", "veth", "peer", "name", "ktv1")
        run("ip", "link", "set", "ktv1", "netns", "ktprobe")
        run("ip", "addr", "add", "10.213.0.1/30", "dev", "ktv0")
        run("ip", "link", "set", "ktv0", "up")
        run("ip", "-n", "ktprobe", "addr", "add", "10.213.0.2/30", "dev", "ktv1")
        run("ip", "-n", "ktprobe", "link", "set", "ktv1", "up")
        yield run
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot make a veth pair here: {error.stderr.strip()}")
    finally:
        run("ip", "link", "del", "ktv0", check=False)
        run("ip", "netns", "del", "ktprobe", check=False)


def test_bandwidth_is_measured_against_the_link_speed_the_driver_reports(host, veth):
    collector = NodeCollector(host)
    states = link_states()
    assert states["ktv0"] == (True, 10000), states["ktv0"]  # veth reports 10 Gb/s
    assert Path("/sys/class/net/ktv0/speed").read_text().strip() == "10000"
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload, packets = b"b" * 1400, 20000
    before = collector.sample()
    started = time.monotonic()
    for _ in range(packets):
        sender.sendto(payload, ("10.213.0.2", 9))
    time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    after = collector.sample()
    sender.close()
    only = lambda s: replace(s, networks=tuple(n for n in s.networks if n.device == "ktv0"))  # noqa: E731
    summary = summarise(only(before), only(after))
    # On the wire: payload + UDP 8 + IPv4 20 + Ethernet 14 bytes per packet (a little more: ARP);
    # the figure is rounded to 0.001 points.
    wire = packets * (len(payload) + 42)
    expected = 100.0 * wire * 8 / (summary.interval_seconds * 10_000 * 1_000_000)
    assert expected - 0.001 <= summary.network_bandwidth_percent <= expected * 1.02 + 0.001, (summary, expected)
    assert summary.unknown_speed_links == ()


def test_a_link_without_a_speed_is_named_not_guessed(host):
    """This machine's eth0 is a virtio NIC whose driver reports no speed (-1 in sysfs)."""
    unknown = [name for name, (up, speed) in link_states().items() if up and speed is None and name != "lo"]
    if not unknown:
        pytest.skip("every link that is up reports a speed here")
    collector = NodeCollector(host)
    before = collector.sample()
    time.sleep(0.2)
    summary = summarise(before, collector.sample())
    assert set(unknown) <= set(summary.unknown_speed_links)
    if summary.network_bandwidth_percent is None:
        assert summary.missing["network_bandwidth_percent"].startswith("link speed unknown for ")


def test_the_latency_probe_measures_a_real_connect_and_crosses_the_50_ms_level(host, veth):
    """A token bucket of 100 kbit/s on ktv0 with two 1400-byte packets queued ahead of the SYN holds
    the connect up by about 120 ms; without them the connect is quick."""
    server = subprocess.Popen(["ip", "netns", "exec", "ktprobe", sys.executable, "-c",
                               "import socket, time\ns = socket.socket()\ns.bind(('10.213.0.2', 7000))\n"
                               "s.listen(64)\nprint('ready', flush=True)\ntime.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        target = "10.213.0.2:7000"
        quick = tcp_connect_seconds(target)
        assert quick is not None and quick < 0.05, quick
        veth("tc", "qdisc", "add", "dev", "ktv0", "root", "tbf", "rate", "100kbit", "burst", "1540",
             "latency", "2s")
        collector = NodeCollector(host, latency_targets=(target,))
        before = collector.sample()
        filler = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(2):
            filler.sendto(b"f" * 1400, ("10.213.0.2", 9))
        filler.close()
        after = collector.sample()
    finally:
        server.kill()
        server.wait()
    summary = summarise(before, after)
    assert 50 < summary.tcp_connect_ms < 1000, summary.tcp_connect_ms
    statuses, _ = evaluate_thresholds({"tcp_connect_ms": summary.tcp_connect_ms}, thresholds(NodeTuningSpec()),
                                      ThresholdState(), 0.0)
    latency = next(s for s in statuses if s.metric == "tcp_connect_ms")
    assert latency.breached and "warning level 50" in latency.message, latency
    # Nothing listens any more: the probe fails, and the summary says so instead of a figure.
    failed = summarise(after, collector.sample())
    assert failed.tcp_connect_ms is None
    assert failed.missing["tcp_connect_ms"] == f"no TCP connect succeeded to {target}"
