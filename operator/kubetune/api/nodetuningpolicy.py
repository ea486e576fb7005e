"""NodeTuningPolicy (cluster-scoped): node-wide tuning for the nodes a label selector matches.
Written by cluster admins; the operator resolves the policies matching each node into its NodeTuning.

Also owns the sysctl allow-list and the node-level sections (CPU, memory, thresholds) that NodeTuning
reuses as the agent's adaptive rules.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from kubetune.api.common import (
    AGE_COLUMN,
    conditions_field,
    Condition,
    CRDInfo,
    Duration,
    KubeModel,
    KubeObject,
    LabelSelector,
    LessThan,
    LIST_SET,
    Mode,
    Percent,
    PrinterColumn,
    cel,
    defaulted_section,
    list_map,
    optional_list,
    unique_by,
    UNIQUE_ITEMS,
    validations,
)
from kubetune.constants import NODE_TUNING_POLICY

# Condition type the operator sets on a NodeTuningPolicy.
READY = "Ready"

# --- sysctls ----------------------------------------------------------------------------------------

# Keys a NodeTuningPolicy may set, and why each is safe to tune: all are numeric capacity or
# timing knobs whose worst misuse costs performance or memory, not security or connectivity.
# Left out on purpose: security switches (kernel.kptr_restrict, kernel.yama.*, kernel.core_pattern,
# kernel.modprobe, kernel.sysrq), routing and filtering that the CNI and kube-proxy own
# (net.ipv4.ip_forward, net.ipv4.conf.*, net.bridge.*, net.netfilter.*), memory accounting the
# kubelet relies on (vm.overcommit_*, vm.nr_hugepages, vm.min_free_kbytes, vm.panic_on_oom), and the
# keys the memory section already owns (vm.swappiness, vm.vfs_cache_pressure, vm.dirty_ratio,
# vm.dirty_background_ratio), so one knob never has two owners.
SYSCTL_ALLOW_LIST: dict[str, str] = {
    "net.core.rmem_max": "largest socket receive buffer an application may request (bytes)",
    "net.core.wmem_max": "largest socket send buffer an application may request (bytes)",
    "net.core.rmem_default": "default socket receive buffer (bytes)",
    "net.core.wmem_default": "default socket send buffer (bytes)",
    "net.core.somaxconn": "largest accept queue of a listening socket",
    "net.core.netdev_max_backlog": "packets queued on input when the interface receives faster than the kernel processes",
    "net.ipv4.tcp_rmem": "TCP receive buffer: min, default, max (bytes)",
    "net.ipv4.tcp_wmem": "TCP send buffer: min, default, max (bytes)",
    "net.ipv4.tcp_max_syn_backlog": "half-open connections remembered per listener",
    "net.ipv4.tcp_fin_timeout": "seconds an orphaned connection stays in FIN-WAIT-2",
    "net.ipv4.tcp_keepalive_time": "seconds of idle before TCP keepalive probes start",
    "net.ipv4.tcp_keepalive_intvl": "seconds between keepalive probes",
    "net.ipv4.tcp_keepalive_probes": "unanswered keepalive probes before a connection is dropped",
    "net.ipv4.tcp_slow_start_after_idle": "restart slow start after an idle period (0 or 1)",
    "net.ipv4.tcp_mtu_probing": "packetization-layer path MTU discovery (0, 1 or 2)",
    "net.ipv4.ip_local_port_range": "ephemeral port range: first, last",
    "vm.max_map_count": "memory map areas a process may have (Elasticsearch, databases)",
    "kernel.sched_autogroup_enabled": "group tasks by session for CPU fairness (0 or 1)",
    "fs.file-max": "open files across the node",
    "fs.aio-max-nr": "asynchronous I/O requests across the node (databases)",
    "fs.inotify.max_user_watches": "inotify watches per user",
    "fs.inotify.max_user_instances": "inotify instances per user",
}

# Every allow-listed value is one or more non-negative integers separated by spaces or tabs.
SYSCTL_VALUE_PATTERN = r"^[0-9]+([ \t]+[0-9]+)*$"


def _allow_listed(name: str) -> str:
    if name not in SYSCTL_ALLOW_LIST:
        raise ValueError(f"sysctl {name!r} is not on the allow-list (see docs/api.md)")
    return name


SysctlName = Annotated[str, Field(max_length=64, json_schema_extra={"enum": list(SYSCTL_ALLOW_LIST)}),
                       AfterValidator(_allow_listed)]


class Sysctl(KubeModel):
    """One kernel parameter from the allow-list and the value to set."""

    name: SysctlName
    """The parameter, e.g. `net.core.somaxconn`; only keys on the allow-list in docs/api.md."""
    value: str = Field(pattern=SYSCTL_VALUE_PATTERN, max_length=64)
    """The value: integers separated by spaces, e.g. `4096` or `4096 87380 6291456`."""


# --- CPU --------------------------------------------------------------------------------------------


class Governor(str, Enum):
    """A cpufreq scaling governor. `userspace` is not offered: kubetune sets frequency limits, not frequencies."""

    PERFORMANCE = "performance"
    POWERSAVE = "powersave"
    SCHEDUTIL = "schedutil"
    ONDEMAND = "ondemand"
    CONSERVATIVE = "conservative"


_HYSTERESIS = LessThan("low_load_below_percent", "high_load_above_percent")


class GovernorPolicy(KubeModel):
    """The CPU frequency governor by load level, switched by the node agent from its own samples.
    The gap between the two thresholds is the hysteresis that stops flapping."""

    model_config = ConfigDict(json_schema_extra=validations(_HYSTERESIS.rule))

    high_load: Governor = Governor.PERFORMANCE
    """The governor while CPU utilisation is above highLoadAbovePercent."""
    low_load: Governor = Governor.POWERSAVE
    """The governor while CPU utilisation is below lowLoadBelowPercent."""
    default: Governor = Governor.SCHEDUTIL
    """The governor between the two thresholds, and at start."""
    high_load_above_percent: Percent = 75
    """Node CPU utilisation above which the load is high."""
    low_load_below_percent: Percent = 25
    """Node CPU utilisation below which the load is low."""
    sustained_for: Duration = "1m"
    """How long a load level must hold before the governor changes."""

    check_hysteresis = _HYSTERESIS.validator


class ThermalPolicy(KubeModel):
    """Frequency reduction while the CPU is thermally throttled."""

    reduce_frequency: bool = True
    """Cap the maximum CPU frequency while the CPU reports thermal throttling, and lift the cap after."""
    max_frequency_percent: int = Field(default=80, ge=30, le=100)
    """The cap, in percent of the CPU's maximum frequency."""


class CPUTuning(KubeModel):
    """CPU frequency tuning; an unset part is left alone."""

    governor: GovernorPolicy | None = None
    """The governor per load level."""
    thermal: ThermalPolicy | None = None
    """Frequency reduction under thermal throttling."""


# --- memory -----------------------------------------------------------------------------------------

_MIN_LE_MAX = "min must not be greater than max"


class _Range(KubeModel):
    """A range the node agent moves a kernel value within, by memory pressure."""

    model_config = ConfigDict(json_schema_extra=validations(cel("self.min <= self.max", _MIN_LE_MAX)))

    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.min > self.max:
            raise ValueError(_MIN_LE_MAX)
        return self


class SwappinessRange(_Range):
    """vm.swappiness bounds (the kernel accepts 0 to 200). The agent lowers swappiness when swap use
    grows and raises it toward max while memory pressure is high and swap is little used."""

    min: int = Field(default=10, ge=0, le=200)
    """The lowest vm.swappiness the agent sets."""
    max: int = Field(default=60, ge=0, le=200)
    """The highest vm.swappiness the agent sets."""


class CachePressureRange(_Range):
    """vm.vfs_cache_pressure bounds (1 to 1000; 0 is refused: the kernel would never reclaim
    dentries and inodes). The agent raises it under memory pressure."""

    min: int = Field(default=50, ge=1, le=1000)
    """The lowest vm.vfs_cache_pressure the agent sets."""
    max: int = Field(default=150, ge=1, le=1000)
    """The highest vm.vfs_cache_pressure the agent sets."""


class DirtyRatioRange(_Range):
    """vm.dirty_ratio bounds, in percent of available memory (1 to 100). The agent lowers it when
    write-back stalls show up as disk latency."""

    min: int = Field(default=10, ge=1, le=100)
    """The lowest vm.dirty_ratio the agent sets."""
    max: int = Field(default=40, ge=1, le=100)
    """The highest vm.dirty_ratio the agent sets."""


class DirtyBackgroundRatioRange(_Range):
    """vm.dirty_background_ratio bounds, in percent of available memory (1 to 100)."""

    min: int = Field(default=5, ge=1, le=100)
    """The lowest vm.dirty_background_ratio the agent sets."""
    max: int = Field(default=10, ge=1, le=100)
    """The highest vm.dirty_background_ratio the agent sets."""


_BACKGROUND_BELOW_DIRTY = "dirtyBackgroundRatio.max must be less than dirtyRatio.min"


class MemoryTuning(KubeModel):
    """Adaptive memory tuning; an unset range is left alone."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.dirtyRatio) || !has(self.dirtyBackgroundRatio) || self.dirtyBackgroundRatio.max < self.dirtyRatio.min",
        _BACKGROUND_BELOW_DIRTY)))

    swappiness: SwappinessRange | None = None
    """Adaptive vm.swappiness."""
    vfs_cache_pressure: CachePressureRange | None = None
    """Adaptive vm.vfs_cache_pressure."""
    dirty_ratio: DirtyRatioRange | None = None
    """Adaptive vm.dirty_ratio."""
    dirty_background_ratio: DirtyBackgroundRatioRange | None = None
    """Adaptive vm.dirty_background_ratio; must stay below dirtyRatio (else the kernel halves dirtyRatio)."""

    @model_validator(mode="after")
    def _background_below_dirty(self) -> MemoryTuning:
        if self.dirty_ratio and self.dirty_background_ratio and self.dirty_background_ratio.max >= self.dirty_ratio.min:
            raise ValueError(_BACKGROUND_BELOW_DIRTY)
        return self


# --- I/O --------------------------------------------------------------------------------------------


class IOScheduler(str, Enum):
    """A blk-mq I/O scheduler."""

    MQ_DEADLINE = "mq-deadline"
    BFQ = "bfq"
    KYBER = "kyber"
    NONE = "none"


# The legacy single-queue names people still write, and the blk-mq scheduler that replaced each.
IO_SCHEDULER_ALIASES = {"deadline": IOScheduler.MQ_DEADLINE, "cfq": IOScheduler.BFQ, "noop": IOScheduler.NONE}

SchedulerName = Annotated[
    IOScheduler,
    BeforeValidator(lambda v: IO_SCHEDULER_ALIASES.get(v, v) if isinstance(v, str) else v),
    WithJsonSchema({"type": "string", "enum": [s.value for s in IOScheduler] + list(IO_SCHEDULER_ALIASES)}),
]
"""An I/O scheduler; `deadline`, `cfq` and `noop` are accepted and stored by the model as
`mq-deadline`, `bfq` and `none`."""


class DeviceClass(str, Enum):
    """A kind of block device, as the node agent detects it."""

    NVME = "NVMe"
    SSD = "SSD"
    HDD = "HDD"


# A glob over /sys/block names (`*`, `?`, `[a-c]`): no slash, no "..", no leading dot.
DEVICE_GLOB_PATTERN = r"^[a-zA-Z0-9*?\[\]-]+([_.][a-zA-Z0-9*?\[\]-]+)*$"

_ONE_MATCH = "exactly one of deviceClass or devicePattern must be set"
_SOMETHING_TO_SET = "at least one of scheduler or readAheadKb must be set"


class DeviceRule(KubeModel):
    """Scheduler and read-ahead for the block devices of one class or name pattern."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.deviceClass) != has(self.devicePattern)", _ONE_MATCH),
        cel("has(self.scheduler) || has(self.readAheadKb)", _SOMETHING_TO_SET),
    ))

    device_class: DeviceClass | None = None
    """Match devices of this class: `NVMe`, `SSD` (non-rotational) or `HDD` (rotational)."""
    device_pattern: str | None = Field(default=None, pattern=DEVICE_GLOB_PATTERN, max_length=64)
    """Match devices whose /sys/block name fits this glob, e.g. `sd*`, `nvme?n1`, `dm-*`."""
    scheduler: SchedulerName | None = None
    """The I/O scheduler; `deadline`, `cfq` and `noop` mean `mq-deadline`, `bfq` and `none`."""
    read_ahead_kb: int | None = Field(default=None, ge=0, le=16384)
    """Read-ahead in KiB (queue/read_ahead_kb)."""

    @model_validator(mode="after")
    def _well_formed(self) -> DeviceRule:
        if (self.device_class is None) == (self.device_pattern is None):
            raise ValueError(_ONE_MATCH)
        if self.scheduler is None and self.read_ahead_kb is None:
            raise ValueError(_SOMETHING_TO_SET)
        return self


class IOTuning(KubeModel):
    """Block device tuning."""

    devices: tuple[DeviceRule, ...] = optional_list(16)
    """Rules for block devices; for each device and setting, the first matching rule that sets it wins."""


# --- process tuning limits and thresholds -----------------------------------------------------------


class ProcessTuningLimits(KubeModel):
    """How far PerformancePolicies may raise process priority on these nodes (tenants write those
    policies; admins set these limits)."""

    min_nice: int = Field(default=-10, ge=-20, le=19)
    """The lowest (most favoured) nice value a PerformancePolicy may set; lower requests are clamped."""
    allow_cpu_pinning: bool = True
    """Whether PerformancePolicies may pin containers to dedicated CPUs."""
    max_pinned_cpus_per_namespace: int | None = Field(default=None, ge=1, le=4096)
    """The most dedicated CPUs the pods of one namespace may have pinned on one node; unset = no share
    (first come: a pinning is never taken away by a newcomer)."""


_PERCENT_LEVELS = LessThan("warning_percent", "critical_percent")
_LATENCY_LEVELS = LessThan("latency_warning_ms", "latency_critical_ms")


class CPUThresholds(KubeModel):
    """Node CPU utilisation levels that raise warnings and the Degraded condition."""

    model_config = ConfigDict(json_schema_extra=validations(_PERCENT_LEVELS.rule))

    warning_percent: Percent = 70
    """Warning level."""
    critical_percent: Percent = 85
    """Critical level."""
    sustained_for: Duration = "5m"
    """How long a level must hold before it counts."""

    check_levels = _PERCENT_LEVELS.validator


class MemoryThresholds(KubeModel):
    """Node memory and swap levels."""

    model_config = ConfigDict(json_schema_extra=validations(_PERCENT_LEVELS.rule))

    warning_percent: Percent = 75
    """Memory use warning level."""
    critical_percent: Percent = 90
    """Memory use critical level."""
    swap_warning_percent: Percent = 20
    """Swap use warning level."""

    check_levels = _PERCENT_LEVELS.validator


class DiskThresholds(KubeModel):
    """Block device latency and queue levels."""

    model_config = ConfigDict(json_schema_extra=validations(_LATENCY_LEVELS.rule))

    latency_warning_ms: float = Field(default=50, ge=0)
    """Average I/O latency warning level, ms."""
    latency_critical_ms: float = Field(default=100, ge=0)
    """Average I/O latency critical level, ms."""
    queue_depth_warning: int = Field(default=8, ge=1, le=4096)
    """Average queue depth warning level."""

    check_levels = _LATENCY_LEVELS.validator


# host:port, the host an IPv4 address, a DNS name or a bracketed IPv6 address.
LATENCY_TARGET_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?):[0-9]{1,5}$"


class NetworkThresholds(KubeModel):
    """Network levels."""

    bandwidth_warning_percent: Percent = 80
    """Interface throughput warning level, in percent of link speed (the busier direction of the
    busiest link that reports a speed; a link whose driver reports no speed is named, not guessed)."""
    latency_warning_ms: float = Field(default=50, ge=0)
    """Network latency warning level, ms: the TCP connect time to the latency targets (the worst one)."""
    latency_targets: Annotated[tuple[Annotated[str, Field(pattern=LATENCY_TARGET_PATTERN, max_length=260)], ...],
                               UNIQUE_ITEMS] = \
        optional_list(8, **LIST_SET)
    """`host:port` endpoints whose TCP connect time is the node's network latency, e.g.
    `10.0.0.10:53`; empty = the Kubernetes API endpoint the node agent uses. Prefer IP addresses: a
    name adds its resolution time."""
    packet_loss_warning_percent: Percent = 0.1
    """Dropped or errored packets warning level, in percent of packets."""


class NodeThresholds(KubeModel):
    """Node monitoring thresholds: crossing one is reported (metrics, Degraded condition, Events)."""

    cpu: CPUThresholds = defaulted_section(CPUThresholds)
    """CPU."""
    memory: MemoryThresholds = defaulted_section(MemoryThresholds)
    """Memory and swap."""
    disk: DiskThresholds = defaulted_section(DiskThresholds)
    """Block devices."""
    network: NetworkThresholds = defaulted_section(NetworkThresholds)
    """Network."""


# --- spec and status --------------------------------------------------------------------------------


class NodeTuningPolicySpec(KubeModel):
    """Node-wide tuning for the nodes the selector matches. A section left out leaves that part of
    the node alone."""

    node_selector: LabelSelector
    """The nodes this policy applies to, by label; `{}` selects every node."""
    priority: int = Field(default=0, ge=0, le=1000)
    """When several policies match a node and set the same knob, the highest priority wins; equal
    priorities with different values leave the knob unchanged and report a Conflict."""
    mode: Mode = Mode.RECOMMEND
    """`Off` ignores the policy; `Recommend` publishes the plan in each node's NodeTuning without
    writing anything; `Auto` applies it."""
    cpu: CPUTuning | None = None
    """CPU governor and thermal frequency reduction."""
    memory: MemoryTuning | None = None
    """Adaptive swappiness, cache pressure and dirty ratios."""
    io: IOTuning | None = None
    """Block device scheduler and read-ahead."""
    sysctls: Annotated[tuple[Sysctl, ...], unique_by("name")] = optional_list(32, **list_map("name"))
    """Kernel parameters from the allow-list."""
    process_tuning: ProcessTuningLimits = defaulted_section(ProcessTuningLimits)
    """Limits on the process tuning PerformancePolicies may ask for on these nodes."""
    thresholds: NodeThresholds = defaulted_section(NodeThresholds)
    """Node monitoring thresholds."""


class NodeTuningPolicyStatus(KubeModel):
    """What the operator did with the policy."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status was computed for."""
    conditions: tuple[Condition, ...] = conditions_field()
    """Ready: the policy was resolved into the matched nodes' NodeTunings."""
    matched_nodes: int = Field(default=0, ge=0)
    """How many nodes the selector matches."""


class NodeTuningPolicy(KubeObject):
    """Node-wide, bounded, reversible tuning for the nodes matched by a label selector."""

    crd = CRDInfo(
        names=NODE_TUNING_POLICY,
        printer_columns=(
            PrinterColumn("Priority", ".spec.priority", "integer"),
            PrinterColumn("Mode", ".spec.mode"),
            PrinterColumn("Nodes", ".status.matchedNodes", "integer", priority=1),
            AGE_COLUMN,
        ),
    )

    kind: Literal["NodeTuningPolicy"] = "NodeTuningPolicy"
    """NodeTuningPolicy."""
    spec: NodeTuningPolicySpec
    """The desired tuning."""
    status: NodeTuningPolicyStatus | None = None
    """The observed state."""
