"""The typed registry of host knobs: everything the agent may ever write is declared in this file.

Each knob is declared once with its path relative to the host root (under ``proc/sys/`` or
``sys/``), whether it is per device, and how it is read, validated and written. Keys:

    vm.swappiness, vm.vfs_cache_pressure,   the adaptive memory sysctls
    vm.dirty_ratio, vm.dirty_background_ratio
    sysctl.<name>                           the other allow-listed sysctls (``SYSCTLS`` below)
    cpu.governor                            every CPU's scaling_governor
    cpu.maxFrequencyPercent                 every CPU's scaling_max_freq, as % of cpuinfo_max_freq
    block.<dev>.scheduler                   /sys/block/<dev>/queue/scheduler
    block.<dev>.readAheadKb                 /sys/block/<dev>/queue/read_ahead_kb

The keys are the NodeTuning API's (``kubetune.api.nodetuning.KNOB_KEY_PATTERN``); this module
does not import the API so the agent's core stays plain data.

A knob turns a target value into the exact per-file values to write (``plan``) and reads the
same per-file values back (``read``), so the executor compares like with like, journals exact
originals and restores them byte for byte. Plan (dry run) and write share this one validation.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import AgentError, KnobRefused, KnobUnsupported
from .hostfs import HostFS

FileValues = dict[str, str]
"""Relative host path -> the value as written to (and read back from) that file."""

ALLOWED_PREFIXES = ("proc/sys/", "sys/")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9]+([_.-][A-Za-z0-9]+)*$")  # no slash, no "..", no leading dot
CPU_DIR = "sys/devices/system/cpu"


# ---- value checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class IntRange:
    """One integer within [low, high]."""

    low: int
    high: int

    def canonical(self, key: str, value: str) -> str:
        number = _integer(key, value)
        if not self.low <= number <= self.high:
            raise KnobRefused(key, f"{number} is outside {self.low}..{self.high}")
        return str(number)


@dataclass(frozen=True)
class IntVector:
    """``count`` integers within [low, high], separated by whitespace, optionally non-decreasing."""

    count: int
    low: int
    high: int
    ascending: bool = True

    def canonical(self, key: str, value: str) -> str:
        parts = _KERNEL_SEPARATORS.split(str(value).strip(" \t\n"))
        if len(parts) != self.count:
            raise KnobRefused(key, f"{value!r} must be {self.count} integers")
        numbers = [IntRange(self.low, self.high).canonical(key, part) for part in parts]
        if self.ascending and [int(n) for n in numbers] != sorted(int(n) for n in numbers):
            raise KnobRefused(key, f"{value!r} must be in non-decreasing order")
        return " ".join(numbers)


ValueCheck = IntRange | IntVector


# What the kernel's proc_dointvec reads: blanks, an optional minus, digits, blanks. Python's int()
# also takes "+5", "1_000" and non-ASCII digits, which the kernel refuses; a leading zero is refused
# because the kernel reads "010" as octal 8.
_KERNEL_INTEGER = re.compile(r"[ \t\n]*(-?(0|[1-9][0-9]*))[ \t\n]*")
_KERNEL_SEPARATORS = re.compile(r"[ \t\n]+")


def _integer(key: str, value: str) -> int:
    match = _KERNEL_INTEGER.fullmatch(str(value))
    if not match:
        raise KnobRefused(key, f"{value!r} is not an integer as the kernel reads one (decimal digits, no leading zero)")
    return int(match.group(1))


# ---- knobs --------------------------------------------------------------------------------


class Knob(ABC):
    """One kind of host setting. ``device`` is the block device for per-device knobs, else None."""

    name: str  # the key, or the key pattern with <dev> for per-device knobs
    per_device: bool = False
    description: str = ""

    @abstractmethod
    def path_templates(self) -> tuple[str, ...]:
        """Declared paths relative to the host root; checked when the registry is built."""

    @abstractmethod
    def files(self, fs: HostFS, device: str | None) -> tuple[str, ...]:
        """The files this knob touches on this node; raises KnobUnsupported when absent."""

    @abstractmethod
    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        """Validate ``value`` and return what to write per file; raises KnobRefused."""

    def read(self, fs: HostFS, device: str | None) -> FileValues:
        """The current per-file values, in the form ``plan`` produces."""
        return {path: " ".join(fs.read(path).split()) for path in self.files(fs, device)}

    def display(self, values: Mapping[str, str]) -> str:
        """One string for status: the value if all files agree, else ``label=value`` pairs."""
        distinct = set(values.values())
        if len(distinct) <= 1:
            return next(iter(distinct), "")
        return ",".join(f"{_cpu_label(path)}={value}" for path, value in values.items())


@dataclass(frozen=True)
class SysctlKnob(Knob):
    """An allow-listed sysctl under /proc/sys; its key is ``key_prefix`` + the sysctl name."""

    sysctl: str
    check: ValueCheck
    description: str = ""
    key_prefix: str = "sysctl."

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.key_prefix + self.sysctl

    @property
    def path(self) -> str:
        return "proc/sys/" + self.sysctl.replace(".", "/")

    def path_templates(self) -> tuple[str, ...]:
        return (self.path,)

    def files(self, fs: HostFS, device: str | None) -> tuple[str, ...]:
        if not fs.exists(self.path):
            raise KnobUnsupported(self.name, f"{self.path} does not exist on this node")
        return (self.path,)

    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        canonical = self.check.canonical(key, value)
        return {path: canonical for path in self.files(fs, device)}


class _CpuKnob(Knob):
    """A cpufreq file on every CPU that has cpufreq; Unsupported where the node has none."""

    file_name: str

    def path_templates(self) -> tuple[str, ...]:
        return (f"{CPU_DIR}/<cpu>/cpufreq/{self.file_name}",)

    def cpus(self, fs: HostFS) -> list[str]:
        names = [n for n in fs.list(CPU_DIR) if re.fullmatch(r"cpu\d+", n)]
        found = [n for n in names if fs.exists(f"{CPU_DIR}/{n}/cpufreq/{self.file_name}")]
        if not found:
            raise KnobUnsupported(self.name, "this node has no cpufreq (no scaling files under "
                                             f"/{CPU_DIR}/cpu*/cpufreq)")
        return sorted(found, key=lambda n: int(n[3:]))

    def files(self, fs: HostFS, device: str | None) -> tuple[str, ...]:
        return tuple(f"{CPU_DIR}/{cpu}/cpufreq/{self.file_name}" for cpu in self.cpus(fs))


class CpuGovernorKnob(_CpuKnob):
    name = "cpu.governor"
    file_name = "scaling_governor"
    description = "scaling governor of every CPU, one of scaling_available_governors"

    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        wanted = str(value).strip()
        result: FileValues = {}
        for path in self.files(fs, device):
            available = fs.read(path.replace("scaling_governor", "scaling_available_governors"))
            if wanted not in available.split():
                raise KnobRefused(key, f"governor {wanted!r} is not available ({available})")
            result[path] = wanted
        return result


class CpuMaxFreqKnob(_CpuKnob):
    name = "cpu.maxFrequencyPercent"
    file_name = "scaling_max_freq"
    description = "every CPU's scaling_max_freq as a percentage (30..100) of its cpuinfo_max_freq"
    check = IntRange(30, 100)

    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        percent = int(self.check.canonical(key, value))
        result: FileValues = {}
        for path in self.files(fs, device):
            hardware_max = int(fs.read(path.replace("scaling_max_freq", "cpuinfo_max_freq")))
            hardware_min = int(fs.read(path.replace("scaling_max_freq", "cpuinfo_min_freq")))
            result[path] = str(max(hardware_min, hardware_max * percent // 100))
        return result

    def percent(self, fs: HostFS) -> dict[str, int]:
        """Current scaling_max_freq of each CPU as % of its hardware maximum."""
        result = {}
        for path, khz in self.read(fs, None).items():
            hardware_max = int(fs.read(path.replace("scaling_max_freq", "cpuinfo_max_freq")))
            result[_cpu_label(path)] = round(int(khz) * 100 / hardware_max)
        return result


class _BlockKnob(Knob):
    """A file under /sys/block/<dev>/queue; the device name may not leave /sys/block."""

    per_device = True
    file_name: str

    def path_templates(self) -> tuple[str, ...]:
        return (f"sys/block/<dev>/queue/{self.file_name}",)

    def files(self, fs: HostFS, device: str | None) -> tuple[str, ...]:
        key = self.name.replace("<dev>", str(device))
        check_device_name(key, device)
        path = f"sys/block/{device}/queue/{self.file_name}"
        if not fs.exists(path):
            raise KnobUnsupported(key, f"no block device {device!r} with /{path} on this node")
        return (path,)


class BlockSchedulerKnob(_BlockKnob):
    name = "block.<dev>.scheduler"
    file_name = "scheduler"
    description = ("I/O scheduler; classic names deadline/cfq/noop mean mq-deadline/bfq/none; "
                   "auto picks by the rotational flag")

    def read(self, fs: HostFS, device: str | None) -> FileValues:
        return {path: bracketed(fs.read(path)) for path in self.files(fs, device)}

    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        (path,) = self.files(fs, device)
        available = [name.strip("[]") for name in fs.read(path).split()]
        rotational = fs.read(f"sys/block/{device}/queue/rotational") == "1"
        return {path: choose_scheduler(key, str(value), available, rotational)}


SCHEDULER_ALIASES = {"deadline": "mq-deadline", "cfq": "bfq", "noop": "none"}


def choose_scheduler(key: str, value: str, available: list[str], rotational: bool) -> str:
    """The multi-queue scheduler for ``value``: classic names mapped, ``auto`` by the rotational
    flag (spinning disks: bfq, else mq-deadline; SSD/NVMe: none, else mq-deadline)."""
    wanted = SCHEDULER_ALIASES.get(value.strip(), value.strip())
    if wanted == "auto":
        preferences = ("bfq", "mq-deadline") if rotational else ("none", "mq-deadline")
        wanted = next((name for name in preferences if name in available), available[0])
    if wanted not in available:
        raise KnobRefused(key, f"scheduler {value!r} is not available ({' '.join(available)})")
    return wanted


class BlockReadAheadKnob(_BlockKnob):
    name = "block.<dev>.readAheadKb"
    file_name = "read_ahead_kb"
    description = "read-ahead in KiB (0..65536)"
    check = IntRange(0, 65536)

    def plan(self, fs: HostFS, device: str | None, key: str, value: str) -> FileValues:
        return {path: self.check.canonical(key, value) for path in self.files(fs, device)}


def bracketed(text: str) -> str:
    """The selected entry of a sysfs list such as ``none [mq-deadline] kyber bfq``."""
    match = re.search(r"\[([^\]]+)\]", text)
    return match.group(1) if match else text.strip()


def check_device_name(key: str, device: str | None) -> None:
    if device is None or len(device) > 64 or not DEVICE_NAME.fullmatch(device):
        raise KnobRefused(key, f"device name {device!r} is not a plain /sys/block entry name")


def _cpu_label(path: str) -> str:
    match = re.search(r"/(cpu\d+)/", path)
    return match.group(1) if match else path


# ---- the allow-list -----------------------------------------------------------------------

ADAPTIVE = ""  # the four vm knobs are keyed by their sysctl name alone
SYSCTLS: tuple[SysctlKnob, ...] = (
    SysctlKnob("vm.swappiness", IntRange(0, 200), "tendency to swap anonymous memory", ADAPTIVE),
    SysctlKnob("vm.vfs_cache_pressure", IntRange(1, 1000), "reclaim of dentry/inode caches", ADAPTIVE),
    SysctlKnob("vm.dirty_ratio", IntRange(1, 100), "% of memory dirty before writers block", ADAPTIVE),
    SysctlKnob("vm.dirty_background_ratio", IntRange(1, 100), "% dirty before background flush", ADAPTIVE),
    SysctlKnob("net.core.rmem_max", IntRange(4096, 2**31 - 1), "max socket receive buffer"),
    # The kernel's floor for send buffers is SOCK_MIN_SNDBUF, 2 * (2048 + the aligned sk_buff) = 4608.
    SysctlKnob("net.core.wmem_max", IntRange(4608, 2**31 - 1), "max socket send buffer"),
    SysctlKnob("net.core.rmem_default", IntRange(4096, 2**31 - 1), "default receive buffer"),
    SysctlKnob("net.core.wmem_default", IntRange(4608, 2**31 - 1), "default send buffer"),
    SysctlKnob("net.core.somaxconn", IntRange(128, 65535), "listen() backlog limit"),
    SysctlKnob("net.core.netdev_max_backlog", IntRange(100, 1_000_000), "input queue length"),
    SysctlKnob("net.ipv4.tcp_rmem", IntVector(3, 4096, 2**31 - 1), "TCP receive buffer min/default/max"),
    SysctlKnob("net.ipv4.tcp_wmem", IntVector(3, 4096, 2**31 - 1), "TCP send buffer min/default/max"),
    SysctlKnob("net.ipv4.tcp_max_syn_backlog", IntRange(128, 1_000_000), "half-open connection queue"),
    SysctlKnob("net.ipv4.tcp_fin_timeout", IntRange(5, 120), "FIN-WAIT-2 timeout, seconds"),
    SysctlKnob("net.ipv4.tcp_keepalive_time", IntRange(30, 7200), "idle seconds before keepalive"),
    SysctlKnob("net.ipv4.tcp_keepalive_intvl", IntRange(1, 300), "seconds between keepalive probes"),
    SysctlKnob("net.ipv4.tcp_keepalive_probes", IntRange(1, 20), "unanswered probes before drop"),
    SysctlKnob("net.ipv4.tcp_slow_start_after_idle", IntRange(0, 1), "slow start after idle"),
    SysctlKnob("net.ipv4.tcp_mtu_probing", IntRange(0, 2), "path MTU probing"),
    SysctlKnob("net.ipv4.ip_local_port_range", IntVector(2, 1024, 65535), "ephemeral port range"),
    SysctlKnob("vm.max_map_count", IntRange(65530, 2**31 - 1), "memory map areas per process"),
    SysctlKnob("kernel.sched_autogroup_enabled", IntRange(0, 1), "autogroup scheduling"),
    SysctlKnob("fs.file-max", IntRange(65536, 2**63 - 1), "system-wide open file limit"),
    SysctlKnob("fs.aio-max-nr", IntRange(65536, 2**31 - 1), "asynchronous I/O requests"),
    SysctlKnob("fs.inotify.max_user_watches", IntRange(8192, 4_194_304), "inotify watches per user"),
    SysctlKnob("fs.inotify.max_user_instances", IntRange(128, 65536), "inotify instances per user"),
)


# ---- the registry -------------------------------------------------------------------------


class KnobRegistry:
    """Resolves a key to its knob (and device); refuses unknown keys. Checks itself when built."""

    def __init__(self, knobs: Iterable[Knob]) -> None:
        self.knobs: dict[str, Knob] = {}
        for knob in knobs:
            if knob.name in self.knobs:
                raise AgentError(f"knob {knob.name!r} is declared twice")
            if knob.per_device != ("<dev>" in knob.name):
                raise AgentError(f"knob {knob.name!r}: per-device knobs and only they name <dev>")
            for template in knob.path_templates():
                if not template.startswith(ALLOWED_PREFIXES) or ".." in template.split("/"):
                    raise AgentError(f"knob {knob.name!r}: path {template!r} is outside proc/sys, sys")
            if isinstance(knob, SysctlKnob):
                knob.check.canonical(knob.name, _sample_value(knob.check))
            self.knobs[knob.name] = knob

    def resolve(self, key: str) -> tuple[Knob, str | None]:
        """The knob for ``key`` and its device (None unless per-device); KnobRefused if unknown."""
        if key in self.knobs and not self.knobs[key].per_device:
            return self.knobs[key], None
        for knob in self.knobs.values():
            if not knob.per_device:
                continue
            prefix, _, suffix = knob.name.partition("<dev>")
            if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix + suffix):
                device = key[len(prefix) : len(key) - len(suffix)]
                check_device_name(key, device)
                return knob, device
        raise KnobRefused(key, "unknown knob: not in the agent's allow-list")


def _sample_value(check: ValueCheck) -> str:
    if isinstance(check, IntVector):
        return " ".join([str(check.low)] * check.count)
    return str(check.low)


def default_registry() -> KnobRegistry:
    return KnobRegistry(
        [*SYSCTLS, CpuGovernorKnob(), CpuMaxFreqKnob(), BlockSchedulerKnob(), BlockReadAheadKnob()]
    )
