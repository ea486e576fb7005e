"""PerformancePolicy (namespaced): what "performing well" means for one workload, and what kubetune
may do about it. Written by users; the operator only writes its status.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from kubetune.api.common import (
    AGE_COLUMN,
    conditions_field,
    DNS_LABEL_PATTERN,
    LIST_SET,
    Condition,
    CRDInfo,
    Duration,
    KubeModel,
    KubeObject,
    Mode,
    ObjectName,
    Percent,
    PrinterColumn,
    Quantity,
    cel,
    defaulted_section,
    duration_at_least,
    list_map,
    optional_list,
    parse_quantity,
    unique_by,
    UNIQUE_ITEMS,
    validations,
)
from kubetune.constants import PERFORMANCE_POLICY

# Condition types the operator sets on a PerformancePolicy.
READY = "Ready"
TARGET_FOUND = "TargetFound"
METRICS_AVAILABLE = "MetricsAvailable"
DEGRADED = "Degraded"


# --- target and bounds ------------------------------------------------------------------------------


class TargetKind(str, Enum):
    """A workload kind kubetune can resize."""

    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class TargetRef(KubeModel):
    """The workload this policy tunes, in the policy's namespace."""

    api_version: Literal["apps/v1"] = "apps/v1"
    """The workload's API version; only `apps/v1`."""
    kind: TargetKind
    """`Deployment`, `StatefulSet` or `DaemonSet`."""
    name: ObjectName
    """The workload's name."""


class ResourceName(str, Enum):
    CPU = "cpu"
    MEMORY = "memory"


class ControlledValues(str, Enum):
    """Which container resource values kubetune changes."""

    REQUESTS_AND_LIMITS = "RequestsAndLimits"
    REQUESTS_ONLY = "RequestsOnly"


class Resources(KubeModel):
    """CPU and memory amounts; an unset resource means no value."""

    cpu: Quantity | None = None
    """CPU, e.g. `250m` or `2`."""
    memory: Quantity | None = None
    """Memory, e.g. `512Mi` or `8Gi`."""


def _min_le_max(resource: str) -> dict[str, str]:
    return cel(
        f"!has(self.minAllowed) || !has(self.maxAllowed) || !has(self.minAllowed.{resource})"
        f" || !has(self.maxAllowed.{resource})"
        # string(): an int-or-string quantity may be an integer (`cpu: 2`); quantity() takes strings.
        f" || quantity(string(self.minAllowed.{resource})).compareTo(quantity(string(self.maxAllowed.{resource}))) <= 0",
        f"minAllowed.{resource} must not be greater than maxAllowed.{resource}",
        field_path=f".minAllowed.{resource}",
    )


CONTAINER_NAME_PATTERN = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"


class ContainerPolicy(KubeModel):
    """Bounds and controlled resources for one container of the target (`*` = every container
    without its own entry)."""

    model_config = ConfigDict(json_schema_extra=validations(_min_le_max("cpu"), _min_le_max("memory")))

    name: str = Field(pattern=CONTAINER_NAME_PATTERN, max_length=63)
    """The container name, or `*` for every container not listed by name."""
    controlled_resources: Annotated[tuple[ResourceName, ...], UNIQUE_ITEMS] = Field(
        default=(ResourceName.CPU, ResourceName.MEMORY), min_length=1, max_length=2, json_schema_extra=LIST_SET)
    """The resources kubetune may change: `cpu`, `memory` or both."""
    controlled_values: ControlledValues = ControlledValues.REQUESTS_AND_LIMITS
    """`RequestsAndLimits` scales limits in proportion to requests; `RequestsOnly` leaves limits alone."""
    min_allowed: Resources | None = None
    """The lowest requests kubetune will set; unset resources have no lower bound beyond one step."""
    max_allowed: Resources | None = None
    """The highest requests kubetune will set; unset resources are bounded only by the step size and rate limit."""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ContainerPolicy:
        for resource in ("cpu", "memory"):
            low = getattr(self.min_allowed, resource, None)
            high = getattr(self.max_allowed, resource, None)
            if low is not None and high is not None and parse_quantity(low) > parse_quantity(high):
                raise ValueError(f"minAllowed.{resource} must not be greater than maxAllowed.{resource}")
        return self


DEFAULT_CONTAINERS = (ContainerPolicy(name="*"),)


# --- scaling ----------------------------------------------------------------------------------------


class ScalingMethod(str, Enum):
    """How a resource change reaches the pods."""

    IN_PLACE = "InPlace"
    ROLLOUT = "Rollout"
    IN_PLACE_OR_ROLLOUT = "InPlaceOrRollout"


class Scaling(KubeModel):
    """How and how fast kubetune changes resources."""

    method: ScalingMethod = ScalingMethod.IN_PLACE_OR_ROLLOUT
    """`InPlace` resizes running pods (pods/resize) and gives new pods the same values through the
    admission webhook, leaving the workload in Git untouched; `Rollout` patches the workload's pod
    template (a GitOps tool will see drift); `InPlaceOrRollout` resizes in place and rolls out only
    when a pod cannot be resized."""
    step_percent: int = Field(default=25, ge=1, le=100)
    """The largest change of one resource in one action, in percent of its current value."""
    cooldown: Duration = "5m"
    """The least time between two actions on this workload."""
    max_changes_per_hour: int = Field(default=4, ge=1, le=60)
    """The most actions on this workload in any hour."""
    jump_to_recommendation: bool = False
    """When a rule fires and the recommendation target is more than one step away in the rule's
    direction, change the request straight to the target in one action (as the VPA does) instead of
    `stepPercent` steps. Still bounded by minAllowed/maxAllowed, the largest node, cooldown and
    maxChangesPerHour, and still verified and rolled back on regression."""


# --- rules ------------------------------------------------------------------------------------------


class Metric(str, Enum):
    """A signal a rule can watch. Utilisation is in percent of the container requests; latency in
    milliseconds; error rate in percent of requests; throughput in requests per second."""

    CPU_UTILIZATION = "cpuUtilization"
    MEMORY_UTILIZATION = "memoryUtilization"
    LATENCY_P50_MS = "latencyP50Ms"
    LATENCY_P90_MS = "latencyP90Ms"
    LATENCY_P95_MS = "latencyP95Ms"
    LATENCY_P99_MS = "latencyP99Ms"
    ERROR_RATE_PERCENT = "errorRatePercent"
    THROUGHPUT_RPS = "throughputRps"


class Action(str, Enum):
    """What kubetune does when a rule fires."""

    INCREASE_RESOURCES = "IncreaseResources"
    DECREASE_RESOURCES = "DecreaseResources"
    OPTIMIZE_RESOURCES = "OptimizeResources"
    INVESTIGATE = "Investigate"


_ABOVE_OR_BELOW = "exactly one of above or below must be set"


class Rule(KubeModel):
    """When a metric crosses a threshold (for long enough), take an action."""

    model_config = ConfigDict(json_schema_extra=validations(cel("has(self.above) != has(self.below)", _ABOVE_OR_BELOW)))

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The rule's name, unique in the policy; it appears in status, Events and logs."""
    metric: Metric
    """The signal to watch."""
    above: float | None = Field(default=None, ge=0)
    """Fire when the metric is above this value. Exactly one of `above` and `below`."""
    below: float | None = Field(default=None, ge=0)
    """Fire when the metric is below this value. Exactly one of `above` and `below`."""
    sustained_for: Duration | None = Field(default=None, alias="for")
    """How long the condition must hold without a break before the rule fires; unset = the value
    over the last evaluation interval."""
    action: Action
    """`IncreaseResources`, `DecreaseResources`, `OptimizeResources` (find the bottleneck first and
    change only what explains it) or `Investigate` (report evidence, change nothing)."""

    @model_validator(mode="after")
    def _one_threshold(self) -> Rule:
        if (self.above is None) == (self.below is None):
            raise ValueError(_ABOVE_OR_BELOW)
        return self


def default_rules() -> tuple[Rule, ...]:
    """The rules a policy gets when it sets none: scale up on sustained high CPU, down on sustained
    low CPU, look for the bottleneck when p95 latency is high, investigate errors."""
    return (
        Rule(name="high-load", metric=Metric.CPU_UTILIZATION, above=80, sustained_for="5m",
             action=Action.INCREASE_RESOURCES),
        Rule(name="low-load", metric=Metric.CPU_UTILIZATION, below=20, sustained_for="15m",
             action=Action.DECREASE_RESOURCES),
        Rule(name="slow", metric=Metric.LATENCY_P95_MS, above=200, action=Action.OPTIMIZE_RESOURCES),
        Rule(name="errors", metric=Metric.ERROR_RATE_PERCENT, above=1, action=Action.INVESTIGATE),
    )


# --- application metrics ----------------------------------------------------------------------------

PROMETHEUS_METRIC_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
PromQLTemplate = Annotated[str, Field(min_length=1, max_length=4096)]

_HISTOGRAM_OR_QUERY = "exactly one of histogram or query must be set"


class LatencyMetric(KubeModel):
    """Where the workload's request latency comes from."""

    model_config = ConfigDict(json_schema_extra=validations(cel("has(self.histogram) != has(self.query)", _HISTOGRAM_OR_QUERY)))

    histogram: str | None = Field(default=None, pattern=PROMETHEUS_METRIC_PATTERN, max_length=200)
    """A Prometheus histogram in seconds, without the `_bucket` suffix, e.g.
    `http_request_duration_seconds`; kubetune computes the percentiles over the target's pods."""
    query: PromQLTemplate | None = None
    """A PromQL template returning the latency in seconds; `$quantile` (e.g. 0.95), `$namespace`,
    `$workload` and `$pods` (a regex of the target's pod names) are substituted."""
    percentiles: Annotated[tuple[Annotated[int, Field(ge=1, le=99)], ...], UNIQUE_ITEMS] = Field(
        default=(50, 90, 95, 99), min_length=1, max_length=8, json_schema_extra=LIST_SET)
    """The percentiles reported in status and usable by rules (`latencyP95Ms` needs 95)."""

    @model_validator(mode="after")
    def _one_source(self) -> LatencyMetric:
        if (self.histogram is None) == (self.query is None):
            raise ValueError(_HISTOGRAM_OR_QUERY)
        return self


# Label matchers of a request counter, e.g. `code=~"5.."` or `code=~"5..",method!="OPTIONS"`.
_MATCHER = r'[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"([^"\\]|\\.)*"'
LABEL_MATCHERS_PATTERN = rf"^\s*{_MATCHER}(\s*,\s*{_MATCHER})*\s*$"
_NOT_OWN_LABELS = "matchers must not name the namespace or pod labels: kubetune selects the target's pods itself"
_QUERY_OR_COUNTER = "exactly one of query or counter must be set"
_FAILED_WITH_COUNTER = "failed is set together with counter, and only then"


def _own_labels_untouched(value: str | None) -> str | None:
    if value is not None and re.search(r'(^|,)\s*(namespace|pod)\s*[=!]', value):
        raise ValueError(_NOT_OWN_LABELS)
    return value


LabelMatchers = Annotated[str, Field(pattern=LABEL_MATCHERS_PATTERN, max_length=1024),
                          AfterValidator(_own_labels_untouched)]


class ThroughputMetric(KubeModel):
    """Requests per second: a request `counter` kubetune sums over the target's pods (one query for
    every policy using the same counter), or a PromQL `query` template (one query per policy)."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.query) != has(self.counter)", _QUERY_OR_COUNTER)))

    counter: str | None = Field(default=None, pattern=PROMETHEUS_METRIC_PATTERN, max_length=200)
    """A Prometheus counter of requests, e.g. `http_requests_total`."""
    query: PromQLTemplate | None = None
    """A PromQL template returning requests per second; `$namespace`, `$workload`, `$pods` and
    `$rate` are substituted, and every selector is confined to the policy's namespace."""

    @model_validator(mode="after")
    def _one_source(self) -> ThroughputMetric:
        if (self.query is None) == (self.counter is None):
            raise ValueError(_QUERY_OR_COUNTER)
        return self


class ErrorRateMetric(KubeModel):
    """The share of failed requests: a request `counter` with the matchers of `failed` requests
    (summed over the target's pods, one query per counter for every policy using it), or a PromQL
    `query` template returning the ratio (0 to 1; one query per policy)."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.query) != has(self.counter)", _QUERY_OR_COUNTER),
        cel("has(self.counter) == has(self.failed)", _FAILED_WITH_COUNTER),
        cel(r"!has(self.failed) || !self.failed.matches('(^|,)\\s*(namespace|pod)\\s*[=!]')", _NOT_OWN_LABELS)))

    counter: str | None = Field(default=None, pattern=PROMETHEUS_METRIC_PATTERN, max_length=200)
    """A Prometheus counter of requests, e.g. `http_requests_total`."""
    failed: LabelMatchers | None = None
    """Label matchers selecting the failed requests of `counter`, e.g. `code=~"5.."`."""
    query: PromQLTemplate | None = None
    """A PromQL template returning the ratio (0 to 1) of failed requests; `$namespace`, `$workload`,
    `$pods` and `$rate` are substituted, and every selector is confined to the policy's namespace."""

    @model_validator(mode="after")
    def _one_source(self) -> ErrorRateMetric:
        if (self.query is None) == (self.counter is None):
            raise ValueError(_QUERY_OR_COUNTER)
        if (self.counter is None) != (self.failed is None):
            raise ValueError(_FAILED_WITH_COUNTER)
        return self


class ApplicationMetrics(KubeModel):
    """Application signals beyond CPU and memory; a rule on a signal that is not configured is
    skipped and reported in the MetricsAvailable condition."""

    latency: LatencyMetric | None = None
    """Request latency."""
    error_rate: ErrorRateMetric | None = None
    """The share of failed requests."""
    throughput: ThroughputMetric | None = None
    """Requests per second."""


# --- analysis, verification, process tuning ---------------------------------------------------------


class Prediction(KubeModel):
    """Trend prediction: act on where a metric is heading, not only where it is."""

    enabled: bool = True
    """Predict metrics from their recent trend."""
    horizon: duration_at_least("1m") = "15m"  # type: ignore[valid-type]
    """How far ahead to predict."""


class AnomalyDetection(KubeModel):
    """Flag signals that are far from their usual range."""

    enabled: bool = True
    """Detect anomalies."""
    threshold: float = Field(default=3.0, ge=1, le=10)
    """How many standard deviations from the recent mean count as an anomaly."""


class Verification(KubeModel):
    """Check every change afterwards and undo it if things got worse."""

    window: duration_at_least("1m") = "10m"  # type: ignore[valid-type]
    """How long after a change to compare the signals with those before it."""
    rollback_on_regression: bool = True
    """Restore the previous resources when the change made the watched signals worse."""
    max_regression_percent: Percent = 10
    """How much worse (in percent) a signal may get before the change counts as a regression."""


class IOClass(str, Enum):
    """Linux I/O scheduling class (ionice). RealTime is not offered: it can starve the node."""

    BEST_EFFORT = "BestEffort"
    IDLE = "Idle"


class SocketBuffers(KubeModel):
    """TCP buffer ceilings inside the pod's network namespace (net.ipv4.tcp_rmem/tcp_wmem maximum)."""

    receive_max_bytes: int | None = Field(default=None, ge=4096, le=268435456)
    """The largest TCP receive buffer, in bytes."""
    send_max_bytes: int | None = Field(default=None, ge=4096, le=268435456)
    """The largest TCP send buffer, in bytes."""


_IO_PRIORITY_CLASS = "ioPriority applies only to the BestEffort ioClass"


class ProcessTuning(KubeModel):
    """Priority, I/O priority, CPU pinning and socket buffers for the target's processes, applied by
    the node agent on the nodes running them, within the limits the node's NodeTuningPolicy allows."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.ioPriority) || !has(self.ioClass) || self.ioClass == 'BestEffort'", _IO_PRIORITY_CLASS)))

    containers: Annotated[tuple[Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)], ...], UNIQUE_ITEMS] = \
        optional_list(32, **LIST_SET)
    """The containers to tune; empty = every container."""
    nice: int | None = Field(default=None, ge=-20, le=19)
    """The nice value (-20 = highest priority, 19 = lowest); unset = leave as is."""
    io_class: IOClass | None = None
    """The I/O scheduling class; unset = leave as is."""
    io_priority: int | None = Field(default=None, ge=0, le=7)
    """The priority within the BestEffort class (0 = highest); unset = leave as is."""
    cpu_pinning: bool = False
    """Pin the containers to dedicated CPUs (as many as their CPU request, rounded up)."""
    socket_buffers: SocketBuffers | None = None
    """TCP buffer ceilings for the pods."""

    @model_validator(mode="after")
    def _priority_needs_best_effort(self) -> ProcessTuning:
        if self.io_priority is not None and self.io_class is IOClass.IDLE:
            raise ValueError(_IO_PRIORITY_CLASS)
        return self


# --- spec -------------------------------------------------------------------------------------------


class PerformancePolicySpec(KubeModel):
    """What performing well means for one workload, and what kubetune may do about it."""

    target_ref: TargetRef
    """The workload to tune."""
    mode: Mode = Mode.RECOMMEND
    """`Off` does nothing; `Recommend` computes and reports recommendations and changes nothing;
    `Auto` applies them."""
    interval: duration_at_least("10s") = "30s"  # type: ignore[valid-type]
    """How often the policy is evaluated."""
    containers: Annotated[tuple[ContainerPolicy, ...], unique_by("name")] = Field(
        default=DEFAULT_CONTAINERS, max_length=32,
        json_schema_extra={**list_map("name"), "default": [c.to_dict() for c in DEFAULT_CONTAINERS]})
    """Per-container bounds; a container matches its own entry, else `*`, else is left alone."""
    scaling: Scaling = defaulted_section(Scaling)
    """How and how fast resources change."""
    rules: Annotated[tuple[Rule, ...], unique_by("name")] = Field(
        default_factory=default_rules, max_length=16,
        json_schema_extra={**list_map("name"), "default": [r.to_dict() for r in default_rules()]})
    """When to act; the default is the four rules high-load, low-load, slow and errors. An empty
    list disables rules (recommendations are still reported)."""
    metrics: ApplicationMetrics | None = None
    """Application metrics (latency, error rate, throughput) from Prometheus."""
    prediction: Prediction = defaulted_section(Prediction)
    """Trend prediction."""
    anomaly_detection: AnomalyDetection = defaulted_section(AnomalyDetection)
    """Anomaly detection."""
    verification: Verification = defaulted_section(Verification)
    """Verification and rollback of every change."""
    process_tuning: ProcessTuning | None = None
    """Process priority, I/O priority, CPU pinning and socket buffers; unset = none."""


# --- status -----------------------------------------------------------------------------------------


class ContainerResources(KubeModel):
    """A container's requests and limits."""

    requests: Resources = defaulted_section(Resources)
    """Requests."""
    limits: Resources = defaulted_section(Resources)
    """Limits."""


class Recommendation(KubeModel):
    """Recommended requests: the target, and the range within which no change is needed."""

    target: Resources
    """The recommended requests."""
    lower_bound: Resources | None = None
    """Below this, the container is under-provisioned."""
    upper_bound: Resources | None = None
    """Above this, the container is over-provisioned."""


class Utilization(KubeModel):
    """Usage in percent of requests (can exceed 100)."""

    cpu: float | None = Field(default=None, ge=0)
    """CPU usage in percent of the CPU request."""
    memory: float | None = Field(default=None, ge=0)
    """Memory working set in percent of the memory request."""


class ContainerStatus(KubeModel):
    """One container's resources, recommendation and utilisation."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The container name."""
    current: ContainerResources | None = None
    """The resources the pods run with now."""
    recommendation: Recommendation | None = None
    """What kubetune recommends."""
    utilization: Utilization | None = None
    """Usage in percent of requests."""


class Trend(str, Enum):
    RISING = "Rising"
    FALLING = "Falling"
    STEADY = "Steady"


class Signals(KubeModel):
    """The workload's latest signals; unset = not available."""

    cpu_utilization: float | None = Field(default=None, ge=0)
    """CPU usage in percent of requests, across the target's pods."""
    memory_utilization: float | None = Field(default=None, ge=0)
    """Memory working set in percent of requests."""
    latency_p50_ms: float | None = Field(default=None, ge=0)
    """50th percentile latency, ms."""
    latency_p90_ms: float | None = Field(default=None, ge=0)
    """90th percentile latency, ms."""
    latency_p95_ms: float | None = Field(default=None, ge=0)
    """95th percentile latency, ms."""
    latency_p99_ms: float | None = Field(default=None, ge=0)
    """99th percentile latency, ms."""
    error_rate_percent: float | None = Field(default=None, ge=0, le=100)
    """Failed requests in percent."""
    throughput_rps: float | None = Field(default=None, ge=0)
    """Requests per second."""
    trend: Trend | None = None
    """Where CPU utilisation is heading over the prediction horizon."""
    anomaly: bool | None = None
    """Whether any signal is anomalous now."""
    high_load: bool | None = None
    """Whether an IncreaseResources rule holds now. With `processTuning` set, the node agent raises the
    target's process priority (nice 5 lower, within the node's `minNice`) while it does."""
    sampled_at: datetime | None = None
    """When the signals were read."""


class ChangedValue(str, Enum):
    REQUESTS = "requests"
    LIMITS = "limits"


class ResourceChange(KubeModel):
    """One value changed (or recommended) by an action."""

    container: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The container."""
    resource: ResourceName
    """`cpu` or `memory`."""
    value: ChangedValue = ChangedValue.REQUESTS
    """`requests` or `limits`."""
    from_: Quantity | None = Field(default=None, alias="from")
    """The value before; unset = there was none."""
    to: Quantity | None = None
    """The value after; unset = removed."""


class VerificationState(str, Enum):
    PENDING = "Pending"
    PASSED = "Passed"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class VerificationResult(KubeModel):
    """How a change fared afterwards."""

    state: VerificationState
    """`Pending` until the verification window ends, then `Passed`, `RolledBack`, `Failed` (a
    regression that could not be rolled back) or `Skipped` (nothing was changed)."""
    message: str = Field(default="", max_length=1024)
    """What the comparison found."""
    deadline: datetime | None = None
    """When the verification window ends."""


class ActionRecord(KubeModel):
    """One action kubetune took or recommended, with its reasons."""

    time: datetime
    """When the action was decided."""
    action: Action
    """The action."""
    rule: str = Field(max_length=63)
    """The rule that fired."""
    applied: bool
    """Whether the changes were made (`Auto`) or only recommended (`Recommend`)."""
    changes: tuple[ResourceChange, ...] = optional_list(16)
    """The values changed or recommended."""
    evidence: tuple[Annotated[str, Field(max_length=512)], ...] = optional_list(16)
    """The observations behind the decision, one per line."""
    verification: VerificationResult | None = None
    """How the change fared afterwards."""


class PerformancePolicyStatus(KubeModel):
    """What kubetune observed and did; written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status was computed for."""
    conditions: tuple[Condition, ...] = conditions_field()
    """Ready, TargetFound, MetricsAvailable and Degraded."""
    containers: tuple[ContainerStatus, ...] = optional_list(32, **list_map("name"))
    """Per-container resources, recommendation and utilisation."""
    signals: Signals | None = None
    """The workload's latest signals."""
    last_action: ActionRecord | None = None
    """The most recent action."""
    history: tuple[ActionRecord, ...] = optional_list(80)
    """Earlier actions, newest first: the operator's history limit (at most 20), and beyond it every change
    applied within the last hour (maxChangesPerHour, at most 60, counts them)."""


class PerformancePolicy(KubeObject):
    """Rules, bounds and analysis settings that keep one workload performing well."""

    crd = CRDInfo(
        names=PERFORMANCE_POLICY,
        printer_columns=(
            PrinterColumn("Target", ".spec.targetRef.name", description="The workload tuned"),
            PrinterColumn("Kind", ".spec.targetRef.kind", priority=1),
            PrinterColumn("Mode", ".spec.mode"),
            # As VPA's columns: the first container's recommended requests, where its users look.
            PrinterColumn("CPU", ".status.containers[0].recommendation.target.cpu",
                          description="Recommended CPU request of the first container"),
            PrinterColumn("Memory", ".status.containers[0].recommendation.target.memory",
                          description="Recommended memory request of the first container"),
            PrinterColumn("Last action", ".status.lastAction.action"),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            AGE_COLUMN,
        ),
    )

    kind: Literal["PerformancePolicy"] = "PerformancePolicy"
    """PerformancePolicy."""
    spec: PerformancePolicySpec
    """The desired behaviour."""
    status: PerformancePolicyStatus | None = None
    """The observed state."""
