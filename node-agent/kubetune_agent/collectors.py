"""Host metrics: one ``NodeSample`` of raw counters and gauges per collection cycle.

psutil first: CPU times and stats, load average, memory, swap and per-interface network counters.
Read directly, because psutil has no such figure:

- ``/proc/vmstat`` for page faults (``pgfault``, ``pgmajfault``);
- ``/proc/diskstats`` for disks, read once for every field, because psutil lacks the two that
  give queue depth (I/Os in progress, weighted time doing I/O);
- ``/proc/net/snmp`` and ``/proc/net/sockstat`` for TCP: established (CurrEstab), time-wait and
  orphaned sockets, sockets in use, retransmitted and received segments. Not psutil.net_connections
  (it maps every socket to its process by scanning every process's file descriptors) and not
  /proc/net/tcp (the kernel renders one line per socket: 5 ms for 400 sockets here, the largest
  cost of a cycle); node_exporter's default collectors make the same choice;
- ``thermal_throttle`` counters under /sys/devices/system/cpu.

Network latency is the TCP connect time to configured ``host:port`` targets (the kernel's smoothed
RTTs are only reachable over netlink INET_DIAG, not via psutil or /proc): one connect per target
per cycle, one second timeout. Use IP addresses: a host name adds resolution time.

Rates (utilisation, IOPS, latency) are derived from two samples by ``summarise``, a pure function.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import psutil

from .hostfs import HostFS
from .knobs import bracketed

SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's sector size
IGNORED_DISKS = re.compile(r"^(ram|loop|fd|zram)\d+$")


@dataclass(frozen=True)
class CpuSample:
    seconds: dict[str, float]  # cumulative CPU seconds per mode, all CPUs
    load1: float
    load5: float
    load15: float
    context_switches: int
    interrupts: int
    soft_interrupts: int
    count: int


@dataclass(frozen=True)
class MemorySample:
    total_bytes: int
    available_bytes: int
    used_percent: float
    cached_bytes: int
    buffers_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    swap_in_bytes: int
    swap_out_bytes: int
    page_faults: int
    major_page_faults: int


@dataclass(frozen=True)
class DiskSample:
    device: str
    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    read_seconds: float
    write_seconds: float
    io_in_progress: int
    io_seconds: float
    weighted_io_seconds: float


@dataclass(frozen=True)
class NetworkSample:
    device: str
    receive_bytes: int
    transmit_bytes: int
    receive_packets: int
    transmit_packets: int
    receive_errors: int
    transmit_errors: int
    receive_drops: int
    transmit_drops: int


@dataclass(frozen=True)
class TcpSample:
    established: int
    time_wait: int
    orphaned: int
    in_use: int  # IPv4 and IPv6 sockets
    received_segments: int
    retransmitted_segments: int


@dataclass(frozen=True)
class NodeSample:
    monotonic: float
    cpu: CpuSample
    memory: MemorySample
    disks: tuple[DiskSample, ...]
    networks: tuple[NetworkSample, ...]
    tcp: TcpSample
    tcp_connect_seconds: dict[str, float | None]  # target -> seconds, None when it failed
    thermal_throttle_events: int | None  # None: the node has no thermal_throttle counters
    collection_seconds: float = 0.0


@dataclass(frozen=True)
class NodeSummary:
    """Rates over the interval between two samples; what adaptive rules and status use."""

    interval_seconds: float
    cpu_utilization_percent: float
    load1_per_cpu: float
    memory_used_percent: float
    swap_used_percent: float
    major_page_faults_per_second: float
    disk_read_iops: float
    disk_write_iops: float
    disk_latency_ms: float  # worst device: time per completed I/O
    disk_queue_depth: float  # worst device: average I/Os in flight
    network_receive_bytes_per_second: float
    network_transmit_bytes_per_second: float
    network_drops_errors_per_second: float
    network_loss_percent: float  # drops + errors per packet, both directions, lo excluded
    tcp_established: int
    tcp_connect_ms: float | None  # worst configured target; None if none configured or all failed
    thermal_throttle_events: int  # new events in the interval


class NodeCollector:
    """Takes ``NodeSample`` s of this host. Sysfs/proc files are read through ``HostFS``."""

    def __init__(self, fs: HostFS, latency_targets: Sequence[str] = ()) -> None:
        self.fs = fs
        self.latency_targets = tuple(latency_targets)
        cpus = [n for n in fs.list("sys/devices/system/cpu") if re.fullmatch(r"cpu\d+", n)]
        self._throttle_files = [
            f"sys/devices/system/cpu/{cpu}/thermal_throttle/{name}"
            for cpu in cpus for name in ("core_throttle_count", "package_throttle_count")
            if fs.exists(f"sys/devices/system/cpu/{cpu}/thermal_throttle/{name}")
        ]

    def sample(self) -> NodeSample:
        started = time.process_time()
        sample = NodeSample(
            monotonic=time.monotonic(),
            cpu=self.cpu(),
            memory=self.memory(),
            disks=self.disks(),
            networks=self.networks(),
            tcp=self.tcp(),
            tcp_connect_seconds={t: tcp_connect_seconds(t) for t in self.latency_targets},
            thermal_throttle_events=self.thermal_throttle_events(),
        )
        return replace(sample, collection_seconds=time.process_time() - started)

    def cpu(self) -> CpuSample:
        stats = psutil.cpu_stats()
        load1, load5, load15 = os.getloadavg()
        return CpuSample(psutil.cpu_times()._asdict(), load1, load5, load15, stats.ctx_switches,
                         stats.interrupts, stats.soft_interrupts, psutil.cpu_count() or 1)

    def memory(self) -> MemorySample:
        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        vmstat = dict(line.split() for line in self.fs.read("proc/vmstat").splitlines())
        return MemorySample(memory.total, memory.available, memory.percent, memory.cached,
                            memory.buffers, swap.total, swap.used, swap.sin, swap.sout,
                            int(vmstat.get("pgfault", 0)), int(vmstat.get("pgmajfault", 0)))

    def disks(self) -> tuple[DiskSample, ...]:
        whole_disks = {d for d in self.fs.list("sys/block") if not IGNORED_DISKS.match(d)}
        samples = []
        for line in self.fs.read("proc/diskstats").splitlines():
            fields = line.split()
            if len(fields) < 14 or fields[2] not in whole_disks:
                continue
            f = [int(x) for x in fields[3:14]]
            samples.append(DiskSample(fields[2], f[0], f[4], f[2] * SECTOR_BYTES, f[6] * SECTOR_BYTES,
                                      f[3] / 1000, f[7] / 1000, f[8], f[9] / 1000, f[10] / 1000))
        return tuple(samples)

    def networks(self) -> tuple[NetworkSample, ...]:
        return tuple(
            NetworkSample(name, c.bytes_recv, c.bytes_sent, c.packets_recv, c.packets_sent,
                          c.errin, c.errout, c.dropin, c.dropout)
            for name, c in psutil.net_io_counters(pernic=True).items()
        )

    def tcp(self) -> TcpSample:
        snmp = [line.split() for line in self.fs.read("proc/net/snmp").splitlines() if line.startswith("Tcp:")]
        counters = dict(zip(snmp[0][1:], map(int, snmp[1][1:]), strict=True))
        sockets: dict[str, int] = {}
        for table in ("proc/net/sockstat", "proc/net/sockstat6"):
            for line in self.fs.read(table).splitlines():
                if line.startswith(("TCP:", "TCP6:")):
                    words = line.split()[1:]
                    for name, value in zip(words[::2], words[1::2], strict=True):
                        sockets[name] = sockets.get(name, 0) + int(value)
        return TcpSample(counters["CurrEstab"], sockets.get("tw", 0), sockets.get("orphan", 0),
                         sockets.get("inuse", 0), counters["InSegs"], counters["RetransSegs"])

    def thermal_throttle_events(self) -> int | None:
        if not self._throttle_files:
            return None
        return sum(int(self.fs.read(path)) for path in self._throttle_files)


def tcp_connect_seconds(target: str, timeout: float = 1.0) -> float | None:
    """Seconds to open (and close) a TCP connection to ``host:port``; None if it failed."""
    host, _, port = target.rpartition(":")
    started = time.perf_counter()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return time.perf_counter() - started
    except OSError:
        return None


def summarise(previous: NodeSample, current: NodeSample) -> NodeSummary:
    """Rates between two samples (pure)."""
    interval = max(current.monotonic - previous.monotonic, 1e-9)
    busy = {m: current.cpu.seconds[m] - previous.cpu.seconds.get(m, 0.0) for m in current.cpu.seconds
            if m not in ("guest", "guest_nice")}  # guest time is already counted in user and nice
    total = sum(busy.values()) or 1e-9
    idle = busy.get("idle", 0.0) + busy.get("iowait", 0.0)
    before = {d.device: d for d in previous.disks}
    reads = writes = 0.0
    latency_ms = queue = 0.0
    for disk in current.disks:
        old = before.get(disk.device)
        if old is None:
            continue
        done = (disk.reads - old.reads) + (disk.writes - old.writes)
        spent = (disk.read_seconds - old.read_seconds) + (disk.write_seconds - old.write_seconds)
        reads += (disk.reads - old.reads) / interval
        writes += (disk.writes - old.writes) / interval
        latency_ms = max(latency_ms, spent * 1000 / done if done else 0.0)
        queue = max(queue, (disk.weighted_io_seconds - old.weighted_io_seconds) / interval)
    nets_before = {n.device: n for n in previous.networks}
    receive = transmit = losses = packets = 0.0
    for net in current.networks:
        old = nets_before.get(net.device)
        if old is None or net.device == "lo":
            continue
        receive += (net.receive_bytes - old.receive_bytes) / interval
        transmit += (net.transmit_bytes - old.transmit_bytes) / interval
        packets += (net.receive_packets + net.transmit_packets - old.receive_packets
                    - old.transmit_packets) / interval
        losses += (net.receive_errors + net.transmit_errors + net.receive_drops + net.transmit_drops
                   - old.receive_errors - old.transmit_errors - old.receive_drops
                   - old.transmit_drops) / interval
    connects = [s for s in current.tcp_connect_seconds.values() if s is not None]
    memory = current.memory
    throttled = (current.thermal_throttle_events or 0) - (previous.thermal_throttle_events or 0)
    return NodeSummary(
        interval_seconds=interval,
        cpu_utilization_percent=round(100.0 * (total - idle) / total, 2),
        load1_per_cpu=round(current.cpu.load1 / current.cpu.count, 3),
        memory_used_percent=memory.used_percent,
        swap_used_percent=round(100.0 * memory.swap_used_bytes / memory.swap_total_bytes, 2)
        if memory.swap_total_bytes else 0.0,
        major_page_faults_per_second=round(
            (memory.major_page_faults - previous.memory.major_page_faults) / interval, 3),
        disk_read_iops=round(reads, 2),
        disk_write_iops=round(writes, 2),
        disk_latency_ms=round(latency_ms, 3),
        disk_queue_depth=round(queue, 3),
        network_receive_bytes_per_second=round(receive, 1),
        network_transmit_bytes_per_second=round(transmit, 1),
        network_drops_errors_per_second=round(losses, 3),
        network_loss_percent=round(100.0 * losses / (packets + losses), 3) if packets + losses else 0.0,
        tcp_established=current.tcp.established,
        tcp_connect_ms=round(max(connects) * 1000, 3) if connects else None,
        thermal_throttle_events=max(throttled, 0),
    )


@dataclass(frozen=True)
class BlockDeviceInfo:
    """A whole block device, for the operator to resolve device rules into knobs."""

    name: str
    rotational: bool
    scheduler: str
    available_schedulers: tuple[str, ...]
    read_ahead_kb: int | None


def block_devices(fs: HostFS) -> list[BlockDeviceInfo]:
    devices = []
    for name in fs.list("sys/block"):
        queue = f"sys/block/{name}/queue"
        if IGNORED_DISKS.match(name) or not fs.exists(f"{queue}/scheduler"):
            continue
        listed = fs.read(f"{queue}/scheduler")
        read_ahead = fs.read(f"{queue}/read_ahead_kb")
        devices.append(BlockDeviceInfo(
            name, fs.read(f"{queue}/rotational") == "1", bracketed(listed),
            tuple(s.strip("[]") for s in listed.split()), int(read_ahead) if read_ahead.isdigit() else None))
    return devices
