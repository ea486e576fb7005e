"""NodeTuning (cluster-scoped, named after its node): the operator -> node agent contract.

The operator writes the spec (the concrete plan resolved from every NodeTuningPolicy and
PerformancePolicy that reaches the node); the agent writes the status (what it really applied,
with the originals it will restore).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import Field

from kubetune.api.common import (
    AGE_COLUMN,
    conditions_field,
    DEVICE_NAME_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    LIST_SET,
    Condition,
    CRDInfo,
    DeviceName,
    KubeModel,
    KubeObject,
    PrinterColumn,
    defaulted_section,
    list_map,
    optional_list,
)
from kubetune.api.nodetuningpolicy import SYSCTL_ALLOW_LIST, CPUTuning, DeviceClass, MemoryTuning, NodeThresholds
from kubetune.api.performancepolicy import IOClass
from kubetune.constants import NODE_TUNING

# Condition types the agent sets on a NodeTuning (Ready also by the operator: AgentNotReporting).
APPLIED = "Applied"
DEGRADED = "Degraded"
READY = "Ready"
AGENT_REPORTING = "AgentReporting"
AGENT_NOT_REPORTING = "AgentNotReporting"

# --- knob keys --------------------------------------------------------------------------------------

CPU_GOVERNOR = "cpu.governor"
CPU_MAX_FREQUENCY_PERCENT = "cpu.maxFrequencyPercent"
VM_SWAPPINESS = "vm.swappiness"
VM_VFS_CACHE_PRESSURE = "vm.vfs_cache_pressure"
VM_DIRTY_RATIO = "vm.dirty_ratio"
VM_DIRTY_BACKGROUND_RATIO = "vm.dirty_background_ratio"
FIXED_KNOBS = (CPU_GOVERNOR, CPU_MAX_FREQUENCY_PERCENT, VM_SWAPPINESS, VM_VFS_CACHE_PRESSURE, VM_DIRTY_RATIO,
               VM_DIRTY_BACKGROUND_RATIO)
BLOCK_SETTINGS = ("scheduler", "readAheadKb")

# Every key the agent may be asked to set; anything else is refused by the API server.
_DEVICE = DEVICE_NAME_PATTERN.strip("^$")
KNOB_KEY_PATTERN = (
    "^("
    + "|".join(re.escape(k) for k in FIXED_KNOBS)
    + rf"|block\.{_DEVICE}\.({'|'.join(BLOCK_SETTINGS)})"
    + r"|sysctl\.(" + "|".join(re.escape(k) for k in SYSCTL_ALLOW_LIST) + ")"
    + ")$"
)


def block_knob(device: str, setting: Literal["scheduler", "readAheadKb"]) -> str:
    """The key of a block device knob, e.g. `block.sda.scheduler`."""
    key = f"block.{device}.{setting}"
    if not re.fullmatch(KNOB_KEY_PATTERN, key):
        raise ValueError(f"invalid block device knob {key!r}")
    return key


def sysctl_knob(name: str) -> str:
    """The key of an allow-listed sysctl knob, e.g. `sysctl.net.core.somaxconn`."""
    if name not in SYSCTL_ALLOW_LIST:
        raise ValueError(f"sysctl {name!r} is not on the allow-list")
    return f"sysctl.{name}"


KnobKey = Annotated[str, Field(pattern=KNOB_KEY_PATTERN, max_length=128)]
# Letters, digits, spaces, tabs, dot, underscore, dash: enough for every knob, and no newline or
# control character can reach a /proc or /sys write.
KnobValue = Annotated[str, Field(pattern=r"^[a-zA-Z0-9 \t._-]*$", max_length=256)]
# What the agent read from the node may also be per-CPU (`cpu0=powersave,cpu1=schedutil`).
ObservedValue = Annotated[str, Field(pattern=r"^[a-zA-Z0-9 \t._,=-]*$", max_length=1024)]
PolicyRef = Annotated[str, Field(max_length=320)]


# --- spec -------------------------------------------------------------------------------------------


class NodeTuningMode(str, Enum):
    """Whether the agent writes (`Auto`) or only plans (`Recommend`)."""

    RECOMMEND = "Recommend"
    AUTO = "Auto"


class Knob(KubeModel):
    """One host setting with a fixed desired value."""

    key: KnobKey
    """`cpu.governor`, `cpu.maxFrequencyPercent`, `vm.swappiness`, `vm.vfs_cache_pressure`,
    `vm.dirty_ratio`, `vm.dirty_background_ratio`, `block.<device>.scheduler`,
    `block.<device>.readAheadKb` or `sysctl.<allow-listed name>`."""
    value: KnobValue
    """The value to set, as written to the kernel, e.g. `performance`, `30`, `4096 87380 6291456`."""
    policy: PolicyRef
    """The policy the value comes from, e.g. `NodeTuningPolicy/db-pool`."""
    reason: str = Field(default="", max_length=256)
    """Why the value was chosen."""


class AdaptiveRules(KubeModel):
    """Rules the agent evaluates itself from its own samples, so node reactions are fast and do not
    need Prometheus; each names the range or levels it may move a knob within."""

    cpu: CPUTuning | None = None
    """Governor by load level and frequency reduction under thermal throttling."""
    memory: MemoryTuning | None = None
    """Swappiness, cache pressure and dirty ratios within ranges, by memory pressure."""
    policy: PolicyRef = ""
    """The policy these rules come from."""


class ProcessEntry(KubeModel):
    """Process tuning for one container running on this node."""

    pod_uid: str = Field(alias="podUID", pattern=r"^[a-zA-Z0-9-]+$", max_length=64)
    """The pod's UID, used to find its processes through their cgroup."""
    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The pod's namespace."""
    pod_name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    """The pod's name."""
    container_name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The container's name."""
    nice: int | None = Field(default=None, ge=-20, le=19)
    """The nice value for every thread; unset = leave as is."""
    io_class: IOClass | None = None
    """The I/O scheduling class; unset = leave as is."""
    io_priority: int | None = Field(default=None, ge=0, le=7)
    """The priority within the BestEffort class; unset = leave as is."""
    cpus: tuple[Annotated[int, Field(ge=0, le=4095)], ...] = optional_list(256, **LIST_SET)
    """CPUs to pin every thread to; empty = no pinning."""
    policy: PolicyRef = ""
    """The PerformancePolicy asking for it, e.g. `PerformancePolicy/shop/checkout`."""


class NodeTuningSpec(KubeModel):
    """The resolved plan for one node, written by the operator."""

    mode: NodeTuningMode = NodeTuningMode.RECOMMEND
    """`Recommend`: compute and publish the plan in status, write nothing; `Auto`: apply it."""
    knobs: tuple[Knob, ...] = optional_list(128, **list_map("key"))
    """Host settings with fixed values."""
    adaptive: AdaptiveRules | None = None
    """Rules the agent evaluates locally; the knobs they move are not also listed in `knobs`."""
    processes: tuple[ProcessEntry, ...] = optional_list(256, **list_map("podUID", "containerName"))
    """Process tuning for containers on this node."""
    thresholds: NodeThresholds = defaulted_section(NodeThresholds)
    """Node monitoring thresholds."""


# --- status -----------------------------------------------------------------------------------------


class KnobState(str, Enum):
    """Where a knob stands."""

    APPLIED = "Applied"          # written and read back equal to desired
    PENDING = "Pending"          # accepted, not yet written
    PLANNED = "Planned"          # Recommend mode: would be written
    FAILED = "Failed"            # the write raised, or the value read back differs
    UNSUPPORTED = "Unsupported"  # the node lacks it (no cpufreq, no such device or scheduler)
    REFUSED = "Refused"          # the agent's validation refused the value
    CONFLICT = "Conflict"        # policies of equal priority disagree, or another writer changed the value
    RESTORED = "Restored"        # no longer desired; the original value is back


class KnobStatus(KubeModel):
    """One knob as the agent last saw it."""

    key: KnobKey
    """The knob."""
    original: ObservedValue | None = None
    """The value before kubetune first wrote it (journaled on the node); restored when no longer desired."""
    desired: KnobValue | None = None
    """The value the plan asks for."""
    current: ObservedValue | None = None
    """The value read back from the node."""
    state: KnobState
    """Applied, Pending, Planned, Failed, Unsupported, Refused, Conflict or Restored."""
    message: str = Field(default="", max_length=1024)
    """Why the knob is in this state."""


class ProcessStatus(KubeModel):
    """Process tuning for one container, as applied."""

    pod_uid: str = Field(alias="podUID", pattern=r"^[a-zA-Z0-9-]+$", max_length=64)
    """The pod's UID."""
    container_name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The container's name."""
    state: KnobState
    """Applied, Pending, Planned, Failed, Unsupported or Refused."""
    processes: int = Field(default=0, ge=0)
    """How many processes were tuned."""
    message: str = Field(default="", max_length=1024)
    """Why the entry is in this state."""


class BlockDevice(KubeModel):
    """A block device on the node, reported so the operator can resolve device rules into knobs."""

    name: DeviceName
    """The name under /sys/block."""
    device_class: DeviceClass
    """NVMe, SSD or HDD."""
    scheduler: str = Field(default="", max_length=32)
    """The active I/O scheduler."""
    available_schedulers: tuple[Annotated[str, Field(max_length=32)], ...] = optional_list(8)
    """The schedulers the kernel offers for it."""
    read_ahead_kb: int | None = Field(default=None, ge=0)
    """The current read-ahead, KiB."""


class MetricsSummary(KubeModel):
    """The node's latest figures, from the agent's own samples."""

    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    """CPU utilisation, percent."""
    load1: float | None = Field(default=None, ge=0)
    """One-minute load average."""
    memory_percent: float | None = Field(default=None, ge=0, le=100)
    """Memory in use, percent."""
    swap_percent: float | None = Field(default=None, ge=0, le=100)
    """Swap in use, percent."""
    disk_latency_ms_max: float | None = Field(default=None, ge=0)
    """The highest average I/O latency across block devices, ms."""
    network_drops_per_second: float | None = Field(default=None, ge=0)
    """Dropped plus errored packets per second across interfaces."""
    network_bandwidth_percent: float | None = Field(default=None, ge=0)
    """The busier direction of the busiest link, in percent of its speed; unset when no link reports
    a speed."""
    network_latency_ms: float | None = Field(default=None, ge=0)
    """TCP connect time to the latency targets (the worst one), ms."""


class NodeTuningStatus(KubeModel):
    """What the agent applied, written by the agent."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation of the plan last processed."""
    conditions: tuple[Condition, ...] = conditions_field()
    """Ready (the agent reports; the operator sets False, AgentNotReporting, when the heartbeat is
    stale), Applied (every knob is Applied, Unsupported or Restored), Degraded (a critical level or
    another writer) and Warning (a warning level is crossed)."""
    knobs: tuple[KnobStatus, ...] = optional_list(256, **list_map("key"))
    """Per knob: original, desired, current and state."""
    processes: tuple[ProcessStatus, ...] = optional_list(256, **list_map("podUID", "containerName"))
    """Per container: process tuning state."""
    block_devices: tuple[BlockDevice, ...] = optional_list(64, **list_map("name"))
    """The node's block devices."""
    metrics: MetricsSummary | None = None
    """The node's latest figures."""
    heartbeat_time: datetime | None = None
    """When the agent last reported; a stale heartbeat means the agent is down."""
    reporting_interval_seconds: float | None = Field(default=None, ge=0)
    """How often the agent reports; the operator calls a heartbeat older than three intervals stale."""


class NodeTuning(KubeObject):
    """The tuning plan for one node (named after it) and what its node agent applied."""

    crd = CRDInfo(
        names=NODE_TUNING,
        printer_columns=(
            PrinterColumn("Mode", ".spec.mode", priority=1),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Applied", '.status.conditions[?(@.type=="Applied")].status'),
            PrinterColumn("Degraded", '.status.conditions[?(@.type=="Degraded")].status'),
            PrinterColumn("Warning", '.status.conditions[?(@.type=="Warning")].status', priority=1),
            PrinterColumn("Heartbeat", ".status.heartbeatTime", "date"),
            AGE_COLUMN,
        ),
    )

    kind: Literal["NodeTuning"] = "NodeTuning"
    """NodeTuning."""
    spec: NodeTuningSpec
    """The plan, written by the operator."""
    status: NodeTuningStatus | None = None
    """What the agent applied."""
