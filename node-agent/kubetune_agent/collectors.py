"""Host metrics: one ``NodeSample`` of raw counters and gauges per collection cycle.

Each /proc file is read once per cycle, through ``HostFS`` (so the host root applies), and parsed
by a pure function of its text, so recorded snapshots replay through the very code a node runs:

- ``/proc/stat``: CPU seconds per mode, CPU count, context switches, interrupts, soft interrupts;
- ``/proc/loadavg``; ``/proc/meminfo`` (memory, cache, swap); ``/proc/vmstat`` (page faults,
  swap in/out);
- ``/proc/diskstats`` for disks, every field, including the two that give queue depth (I/Os in
  progress, weighted time doing I/O);
- ``/proc/net/dev`` for per-interface counters;
- ``/proc/net/snmp`` and ``/proc/net/sockstat{,6}`` for TCP: established (CurrEstab), time-wait and
  orphaned sockets, sockets in use, retransmitted and received segments. Not psutil.net_connections
  (it maps every socket to its process by scanning every process's file descriptors) and not
  /proc/net/tcp (the kernel renders one line per socket: 5 ms for 400 sockets here, the largest
  cost of a cycle); node_exporter's default collectors make the same choice;
- ``thermal_throttle`` counters under /sys/devices/system/cpu.

Why not psutil for these, as the architecture first said: psutil reads /proc/stat, /proc/meminfo and
/proc/vmstat twice each per cycle (cpu_times + cpu_stats, virtual_memory + swap_memory), honours
the host root only through a process-wide global, and cannot be fed a recorded snapshot. psutil
stays where it reads something /proc lacks: link speed (``net_if_stats``, an ethtool ioctl), read
at most once a minute because it changes only when a link renegotiates.

Network latency is the TCP connect time to ``host:port`` targets (the kernel's smoothed RTTs are
only reachable over netlink INET_DIAG, not via psutil or /proc): one connect per target per cycle,
one second timeout. The agent's default target is the Kubernetes API endpoint it already uses.

Rates (utilisation, IOPS, latency, bandwidth) are derived from two samples by ``summarise``, a
pure function.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import psutil

from .hostfs import HostFS
from .knobs import bracketed

SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's sector size
IGNORED_DISKS = re.compile(r"^(ram|loop|fd|zram)\d+$")
USER_HZ = os.sysconf("SC_CLK_TCK")  # /proc/stat's unit (100 on every Linux ABI, whatever CONFIG_HZ is)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
LINK_SPEED_REFRESH_SECONDS = 60.0

# The /proc files of one sample, by name; each read once per cycle.
PROC_FILES = {
    "stat": "proc/stat",
    "loadavg": "proc/loadavg",
    "meminfo": "proc/meminfo",
    "vmstat": "proc/vmstat",
    "diskstats": "proc/diskstats",
    "net_dev": "proc/net/dev",
    "snmp": "proc/net/snmp",
    "sockstat": "proc/net/sockstat",
    "sockstat6": "proc/net/sockstat6",
}


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
    speed_mbps: int | None = None  # link speed; None: unknown (virtual link, driver reports none)
    up: bool = True


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
    # Busiest direction of the busiest link, in percent of its speed; None when no link that is up
    # reports a speed (``unknown_speed_links`` names those that do not).
    network_bandwidth_percent: float | None = None
    unknown_speed_links: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # metric -> why it has no value


# ---- parsers: text of one /proc file -> figures (pure) ---------------------------------------------


def parse_stat(text: str) -> tuple[dict[str, float], int, int, int, int]:
    """/proc/stat -> (CPU seconds per mode over all CPUs, CPU count, context switches, interrupts,
    soft interrupts). Older kernels print fewer mode columns; the missing ones are left out."""
    seconds: dict[str, float] = {}
    count = switches = interrupts = soft = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            seconds = {mode: int(v) / USER_HZ for mode, v in zip(CPU_MODES, rest.split(), strict=False)}
        elif name.startswith("cpu"):
            count += 1
        elif name == "ctxt":
            switches = int(rest)
        elif name == "intr":
            interrupts = int(rest.split(None, 1)[0])
        elif name == "softirq":
            soft = int(rest.split(None, 1)[0])
    return seconds, count, switches, interrupts, soft


def parse_cpu(stat: str, loadavg: str) -> CpuSample:
    seconds, count, switches, interrupts, soft = parse_stat(stat)
    load1, load5, load15 = (float(x) for x in loadavg.split()[:3])
    return CpuSample(seconds, load1, load5, load15, switches, interrupts, soft, count or 1)


def parse_keyed(text: str) -> dict[str, int]:
    """``name value [kB]`` lines (/proc/meminfo, /proc/vmstat) -> {name: value}; kB become bytes."""
    values = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2:
            try:
                values[words[0].rstrip(":")] = int(words[1]) * (1024 if len(words) > 2 and words[2] == "kB" else 1)
            except ValueError:
                continue
    return values


def parse_memory(meminfo: str, vmstat: str, page_size: int) -> MemorySample:
    """Used memory is total - MemAvailable (the kernel's estimate of what can be had without
    swapping: what psutil and `free` call available)."""
    m, v = parse_keyed(meminfo), parse_keyed(vmstat)
    total = m["MemTotal"]
    available = m.get("MemAvailable", m.get("MemFree", 0) + m.get("Cached", 0) + m.get("Buffers", 0))
    swap_total = m.get("SwapTotal", 0)
    return MemorySample(
        total, available, round(100.0 * (total - available) / total, 1) if total else 0.0,
        m.get("Cached", 0), m.get("Buffers", 0), swap_total, swap_total - m.get("SwapFree", 0),
        v.get("pswpin", 0) * page_size, v.get("pswpout", 0) * page_size,
        v.get("pgfault", 0), v.get("pgmajfault", 0))


def parse_diskstats(text: str, devices: Callable[[str], bool]) -> tuple[DiskSample, ...]:
    """/proc/diskstats -> one DiskSample per device ``devices`` accepts. Fields (after major, minor,
    name): reads, reads merged, sectors read, ms reading, writes, writes merged, sectors written,
    ms writing, I/Os in progress, ms doing I/O, weighted ms doing I/O."""
    samples = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or not devices(fields[2]):
            continue
        f = [int(x) for x in fields[3:14]]
        samples.append(DiskSample(fields[2], f[0], f[4], f[2] * SECTOR_BYTES, f[6] * SECTOR_BYTES,
                                  f[3] / 1000, f[7] / 1000, f[8], f[9] / 1000, f[10] / 1000))
    return tuple(samples)


def parse_net_dev(text: str, links: Mapping[str, tuple[bool, int | None]] | None = None
                  ) -> tuple[NetworkSample, ...]:
    """/proc/net/dev -> one NetworkSample per interface; ``links``: name -> (up, speed in Mb/s or
    None), from ``link_states``. Columns: receive bytes packets errs drop fifo frame compressed
    multicast, then transmit bytes packets errs drop ..."""
    links = links or {}
    samples = []
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        f = [int(x) for x in counters.split()]
        up, speed = links.get(name.strip(), (True, None))
        samples.append(NetworkSample(name.strip(), f[0], f[8], f[1], f[9], f[2], f[10], f[3], f[11],
                                     speed, up))
    return tuple(samples)


def parse_tcp(snmp: str, sockstat: str, sockstat6: str) -> TcpSample:
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    counters = dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))
    sockets: dict[str, int] = {}
    for table in (sockstat, sockstat6):
        for line in table.splitlines():
            if line.startswith(("TCP:", "TCP6:")):
                words = line.split()[1:]
                for name, value in zip(words[::2], words[1::2], strict=True):
                    sockets[name] = sockets.get(name, 0) + int(value)
    return TcpSample(counters["CurrEstab"], sockets.get("tw", 0), sockets.get("orphan", 0),
                     sockets.get("inuse", 0), counters["InSegs"], counters["RetransSegs"])


def link_states() -> dict[str, tuple[bool, int | None]]:
    """Interface -> (up, link speed in Mb/s or None when the driver reports none), from psutil
    (ethtool ioctl; psutil reports an unknown speed as 0)."""
    return {name: (s.isup, s.speed or None) for name, s in psutil.net_if_stats().items()}


def parse_sample(texts: Mapping[str, str], *, monotonic: float, page_size: int,
                 disks: Callable[[str], bool], links: Mapping[str, tuple[bool, int | None]],
                 tcp_connect_seconds: Mapping[str, float | None] | None = None,
                 thermal_throttle_events: int | None = None) -> NodeSample:
    """A NodeSample from the texts of ``PROC_FILES`` (pure: a recorded snapshot replays here)."""
    return NodeSample(
        monotonic=monotonic,
        cpu=parse_cpu(texts["stat"], texts["loadavg"]),
        memory=parse_memory(texts["meminfo"], texts["vmstat"], page_size),
        disks=parse_diskstats(texts["diskstats"], disks),
        networks=parse_net_dev(texts["net_dev"], links),
        tcp=parse_tcp(texts["snmp"], texts["sockstat"], texts.get("sockstat6", "")),
        tcp_connect_seconds=dict(tcp_connect_seconds or {}),
        thermal_throttle_events=thermal_throttle_events,
    )


class NodeCollector:
    """Takes ``NodeSample`` s of this host: /proc and /sys are read through ``HostFS``."""

    def __init__(self, fs: HostFS, latency_targets: Sequence[str] = (),
                 ignored_disks: re.Pattern[str] = IGNORED_DISKS,
                 link_states: Callable[[], Mapping[str, tuple[bool, int | None]]] = link_states) -> None:
        self.fs = fs
        self.latency_targets = tuple(latency_targets)
        self.ignored_disks = ignored_disks
        self._link_states = link_states
        self._links: Mapping[str, tuple[bool, int | None]] = {}
        self._links_read_at = -LINK_SPEED_REFRESH_SECONDS
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        # Resolved and checked once: HostFS resolves every path against the root (realpath), which
        # cost more than the parsing itself when done for each file on every cycle. /proc and /sys
        # are kernel filesystems, so a checked path cannot be swapped for a symlink afterwards.
        self._paths = {name: fs.path(relative) for name, relative in PROC_FILES.items()
                       if fs.exists(relative)}
        cpus = [n for n in fs.list("sys/devices/system/cpu") if re.fullmatch(r"cpu\d+", n)]
        self._throttle_files = [
            fs.path(f"sys/devices/system/cpu/{cpu}/thermal_throttle/{name}")
            for cpu in cpus for name in ("core_throttle_count", "package_throttle_count")
            if fs.exists(f"sys/devices/system/cpu/{cpu}/thermal_throttle/{name}")
        ]
        self._whole_disks: frozenset[str] = frozenset()
        self._block_listed_at = -LINK_SPEED_REFRESH_SECONDS

    def read_texts(self) -> dict[str, str]:
        texts = {}
        for name, path in self._paths.items():
            with open(path) as handle:
                texts[name] = handle.read()
        return texts

    def sample(self, latency_targets: Sequence[str] | None = None) -> NodeSample:
        """One sample; ``latency_targets`` overrides the collector's own for this sample."""
        started = time.process_time()
        now = time.monotonic()
        if now - self._links_read_at >= LINK_SPEED_REFRESH_SECONDS:
            self._links, self._links_read_at = self._link_states(), now
            self._whole_disks = frozenset(d for d in self.fs.list("sys/block") if not self.ignored_disks.match(d))
        targets = self.latency_targets if latency_targets is None else tuple(latency_targets)
        sample = parse_sample(
            self.read_texts(), monotonic=now, page_size=self.page_size,
            disks=self._whole_disks.__contains__, links=self._links,
            tcp_connect_seconds={t: tcp_connect_seconds(t) for t in targets},
            thermal_throttle_events=self.thermal_throttle_events())
        return replace(sample, collection_seconds=time.process_time() - started)

    def refresh_devices(self) -> None:
        """Re-read link speeds and the block device list at the next sample (a device appeared)."""
        self._links_read_at = -LINK_SPEED_REFRESH_SECONDS

    def thermal_throttle_events(self) -> int | None:
        if not self._throttle_files:
            return None
        total = 0
        for path in self._throttle_files:
            with open(path) as handle:
                total += int(handle.read())
        return total


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
    bandwidth: float | None = None
    unknown_speed: list[str] = []
    for net in current.networks:
        old = nets_before.get(net.device)
        if old is None or net.device == "lo":
            continue
        rx = (net.receive_bytes - old.receive_bytes) / interval
        tx = (net.transmit_bytes - old.transmit_bytes) / interval
        receive += rx
        transmit += tx
        packets += (net.receive_packets + net.transmit_packets - old.receive_packets
                    - old.transmit_packets) / interval
        losses += (net.receive_errors + net.transmit_errors + net.receive_drops + net.transmit_drops
                   - old.receive_errors - old.transmit_errors - old.receive_drops
                   - old.transmit_drops) / interval
        if not net.up:
            continue
        if net.speed_mbps:
            # Full duplex: each direction has the whole link speed; the busier one counts.
            used = 100.0 * max(rx, tx) * 8 / (net.speed_mbps * 1_000_000)
            bandwidth = used if bandwidth is None else max(bandwidth, used)
        else:
            unknown_speed.append(net.device)
    connects = [s for s in current.tcp_connect_seconds.values() if s is not None]
    memory = current.memory
    throttled = (current.thermal_throttle_events or 0) - (previous.thermal_throttle_events or 0)
    missing = {}
    if bandwidth is None:
        missing["network_bandwidth_percent"] = (
            f"link speed unknown for {', '.join(unknown_speed[:8])}"
            f"{f' and {len(unknown_speed) - 8} more' if len(unknown_speed) > 8 else ''} (the driver reports none)"
            if unknown_speed else "no network link is up")
    if not connects:
        missing["tcp_connect_ms"] = (
            f"no TCP connect succeeded to {', '.join(current.tcp_connect_seconds)}"
            if current.tcp_connect_seconds else "no latency target")
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
        network_bandwidth_percent=round(bandwidth, 3) if bandwidth is not None else None,
        unknown_speed_links=tuple(unknown_speed),
        missing=missing,
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
