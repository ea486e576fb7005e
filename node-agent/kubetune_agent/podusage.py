"""Per-pod resource use read from the node's cgroups, so a breach can name the pods behind it without
Prometheus or the kubelet: CPU seconds, memory working set and bytes of block I/O per pod UID.

Pod cgroups are the ones kubelet creates: ``kubepods[/<qos>]/pod<uid>`` (cgroupfs driver) and
``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice`` (systemd driver), under each
hierarchy's mount: cgroup v2 (``sys/fs/cgroup`` or the hybrid ``sys/fs/cgroup/unified``) or the v1
controllers (``cpuacct`` or ``cpu,cpuacct``, ``memory``, ``blkio``). Read only while a critical level
is crossed, so it costs nothing on a healthy node.

Working set = usage minus inactive file pages (what kubelet's eviction and `kubectl top` use): page
cache the kernel can drop at once is not pressure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .hostfs import HostFS
from .process import normalise_uid

_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_POD_DIR = re.compile(rf"^(?:.*-)?pod({_UID})(?:\.slice)?$")
_KUBEPODS = ("kubepods", "kubepods.slice")
_QOS_DIR = re.compile(r"^(?:kubepods-)?(burstable|besteffort|guaranteed)(?:\.slice)?$")


class Resource:
    CPU = "cpu"
    MEMORY = "memory"
    IO = "io"


@dataclass(frozen=True)
class PodUsage:
    uid: str
    cpu_seconds: float | None = None  # cumulative
    memory_bytes: int | None = None  # working set, now
    io_bytes: int | None = None  # cumulative, read + written


@dataclass(frozen=True)
class PodRank:
    """One pod's share of the breached resource: CPU cores, memory bytes or I/O bytes per second."""

    uid: str
    value: float
    resource: str

    def describe(self, name: str | None = None) -> str:
        who = name or f"pod {self.uid}"
        if self.resource == Resource.CPU:
            return f"{who} {self.value:.2f} CPU"
        if self.resource == Resource.MEMORY:
            return f"{who} {self.value / 2**20:.0f} MiB"
        return f"{who} {self.value / 2**20:.1f} MiB/s I/O"


# ---- parsers (pure) ------------------------------------------------------------------------------


def keyed(text: str) -> dict[str, int]:
    """``name value`` lines (cpu.stat, memory.stat) -> {name: value}."""
    values = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            values[words[0]] = int(words[1])
    return values


def io_stat_bytes(text: str) -> int:
    """cgroup v2 io.stat (``8:0 rbytes=1 wbytes=2 ...`` per device) -> read + written bytes."""
    total = 0
    for word in text.split():
        name, _, value = word.partition("=")
        if name in ("rbytes", "wbytes") and value.isdigit():
            total += int(value)
    return total


def blkio_bytes(text: str) -> int:
    """cgroup v1 blkio.throttle.io_service_bytes -> read + written bytes (its ``Total`` line counts
    reads, writes and discards alike, so the per-device Read and Write lines are summed)."""
    total = 0
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[1] in ("Read", "Write") and words[2].isdigit():
            total += int(words[2])
    return total


def rank(before: Mapping[str, PodUsage] | None, after: Mapping[str, PodUsage], resource: str,
         seconds: float, top: int = 3) -> list[PodRank]:
    """The ``top`` pods by ``resource``: memory by working set now; CPU and I/O by their rate
    between the two readings (``seconds`` apart). Pods without a figure are left out."""
    ranks = []
    for uid, now in after.items():
        if resource == Resource.MEMORY:
            if now.memory_bytes is not None:
                ranks.append(PodRank(uid, float(now.memory_bytes), resource))
            continue
        old = (before or {}).get(uid)
        field = "cpu_seconds" if resource == Resource.CPU else "io_bytes"
        a, b = (getattr(old, field) if old else None), getattr(now, field)
        if a is not None and b is not None and seconds > 0:
            ranks.append(PodRank(uid, max(b - a, 0) / seconds, resource))
    return sorted(ranks, key=lambda r: (-r.value, r.uid))[:top]


# ---- the reader ----------------------------------------------------------------------------------


class PodUsageReader:
    """Finds the pod cgroups under each hierarchy of the host root and reads their usage."""

    # (hierarchy under sys/fs/cgroup, cgroup v2?) in the order they are tried per resource.
    CPU = (("", True), ("unified", True), ("cpuacct", False), ("cpu,cpuacct", False))
    MEMORY = (("", True), ("unified", True), ("memory", False))
    IO = (("", True), ("unified", True), ("blkio", False))

    def __init__(self, fs: HostFS) -> None:
        self.fs = fs

    def pod_dirs(self, hierarchy: str) -> dict[str, str]:
        """Pod UID -> its cgroup directory (relative to the host root) in one hierarchy."""
        base = f"sys/fs/cgroup/{hierarchy}".rstrip("/")
        found: dict[str, str] = {}
        for top in _KUBEPODS:
            root = f"{base}/{top}"
            for name in self.fs.list(root):
                self._match(found, root, name)
                if _QOS_DIR.match(name):
                    for pod in self.fs.list(f"{root}/{name}"):
                        self._match(found, f"{root}/{name}", pod)
        return found

    @staticmethod
    def _match(found: dict[str, str], parent: str, name: str) -> None:
        match = _POD_DIR.match(name)
        if match:
            found[normalise_uid(match.group(1))] = f"{parent}/{name}"

    def _first(self, hierarchies: tuple[tuple[str, bool], ...], v2_file: str, v1_file: str
               ) -> tuple[dict[str, str], bool, str]:
        for hierarchy, v2 in hierarchies:
            dirs = self.pod_dirs(hierarchy)
            wanted = v2_file if v2 else v1_file
            if dirs and self.fs.exists(f"{next(iter(dirs.values()))}/{wanted}"):
                return dirs, v2, wanted
        return {}, False, ""

    def _read(self, path: str) -> str | None:
        try:
            return self.fs.read(path)
        except OSError:
            return None  # the pod went away between listing and reading

    def read(self) -> dict[str, PodUsage]:
        cpu: dict[str, float] = {}
        dirs, v2, name = self._first(self.CPU, "cpu.stat", "cpuacct.usage")
        for uid, path in dirs.items():
            text = self._read(f"{path}/{name}")
            if text is not None:
                cpu[uid] = keyed(text).get("usage_usec", 0) / 1e6 if v2 else int(text) / 1e9
        memory: dict[str, int] = {}
        dirs, v2, name = self._first(self.MEMORY, "memory.current", "memory.usage_in_bytes")
        for uid, path in dirs.items():
            usage, stat = self._read(f"{path}/{name}"), self._read(f"{path}/memory.stat")
            if usage is not None:
                inactive = keyed(stat or "").get("inactive_file" if v2 else "total_inactive_file", 0)
                memory[uid] = max(int(usage) - inactive, 0)
        io: dict[str, int] = {}
        dirs, v2, name = self._first(self.IO, "io.stat", "blkio.throttle.io_service_bytes")
        for uid, path in dirs.items():
            text = self._read(f"{path}/{name}")
            if text is not None:
                io[uid] = io_stat_bytes(text) if v2 else blkio_bytes(text)
        return {uid: PodUsage(uid, cpu.get(uid), memory.get(uid), io.get(uid))
                for uid in sorted(cpu.keys() | memory.keys() | io.keys())}
