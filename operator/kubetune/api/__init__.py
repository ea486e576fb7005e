"""kubetune's API: the pydantic models of PerformancePolicy, NodeTuningPolicy and NodeTuning, the
single source of truth for deploy/crds (see `kubetune.api.crdgen`).

Pure data: no I/O and no kopf, so the node agent can import it. Parse an object the API server
returned with `PerformancePolicy.model_validate(obj)`; write one with `.to_dict()`.
"""

from kubetune.api.common import (
    Condition,
    ConditionStatus,
    Duration,
    KubeModel,
    KubeObject,
    LabelSelector,
    LabelSelectorRequirement,
    Mode,
    Percent,
    Quantity,
    parse_duration,
    parse_quantity,
)
from kubetune.api.nodetuning import (
    AdaptiveRules,
    BlockDevice,
    Knob,
    KnobState,
    KnobStatus,
    MetricsSummary,
    NodeTuning,
    NodeTuningMode,
    NodeTuningSpec,
    NodeTuningStatus,
    ProcessEntry,
    ProcessStatus,
    block_knob,
    sysctl_knob,
)
from kubetune.api.nodetuningpolicy import (
    IO_SCHEDULER_ALIASES,
    SYSCTL_ALLOW_LIST,
    CPUThresholds,
    CPUTuning,
    DeviceClass,
    DeviceRule,
    DiskThresholds,
    Governor,
    GovernorPolicy,
    IOScheduler,
    IOTuning,
    MemoryThresholds,
    MemoryTuning,
    NetworkThresholds,
    NodeThresholds,
    NodeTuningPolicy,
    NodeTuningPolicySpec,
    NodeTuningPolicyStatus,
    ProcessTuningLimits,
    Sysctl,
    ThermalPolicy,
)
from kubetune.api.performancepolicy import (
    Action,
    ActionRecord,
    AnomalyDetection,
    ApplicationMetrics,
    ContainerPolicy,
    ContainerStatus,
    ControlledValues,
    IOClass,
    LatencyMetric,
    Metric,
    PerformancePolicy,
    PerformancePolicySpec,
    PerformancePolicyStatus,
    Prediction,
    ProcessTuning,
    Resources,
    Rule,
    Scaling,
    ScalingMethod,
    Signals,
    TargetKind,
    TargetRef,
    Verification,
    default_rules,
)


def crd_manifests() -> list[dict]:
    """Every kubetune CRD as a dict (see `kubetune.api.crdgen`)."""
    from kubetune.api.crdgen import crd_manifests as generate  # PyYAML only when asked for

    return generate()


__all__ = [name for name in dir() if not name.startswith("_")]
