"""Every condition type and reason the operator writes on a PerformancePolicy, in one place.

A reason is a CamelCase word a user can grep for in `kubectl describe`, alerts and dashboards, so it
is part of the API: the loop, the decisions and the tests name these members, never string literals.
"""

from __future__ import annotations

from enum import Enum


class ConditionType(str, Enum):
    READY = "Ready"  # evaluated this generation, and why not when False
    TARGET_FOUND = "TargetFound"
    METRICS_AVAILABLE = "MetricsAvailable"  # every signal the rules use could be read
    DEGRADED = "Degraded"  # the last action failed, was rolled back, or cannot reach its pods
    ANOMALY_DETECTED = "AnomalyDetected"
    INVESTIGATING = "Investigating"  # an Investigate rule holds; the message has the evidence
    CONVERGING = "Converging"  # far from the recommendation and held back by the step size or rate limit
    # Written by the node-tuning loop (nodeplanner.py), not the evaluation: whether the policy's
    # processTuning is in its pods' NodeTunings. The evaluation keeps it, as every type it does not set.
    PROCESS_TUNING = "ProcessTuning"


class Reason(str, Enum):
    # Ready / gates, first verdict wins.
    EVALUATED = "Evaluated"
    INVALID_SPEC = "InvalidSpec"
    MODE_OFF = "ModeOff"
    CONFLICT = "Conflict"
    QUERY_NOT_CONFINED = "QueryNotConfined"  # a metrics template reaches outside the policy's namespace
    TARGET_NOT_FOUND = "TargetNotFound"
    FOUND = "Found"
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    NO_DATA = "NoData"
    # MetricsAvailable.
    AVAILABLE = "Available"
    RULES_UNEVALUABLE = "RulesUnevaluable"
    # Decisions.
    NO_RULE_FIRED = "NoRuleFired"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    OPTIMIZED = "Optimized"
    NOT_A_RESOURCE_BOTTLENECK = "NotAResourceBottleneck"
    AT_BOUND = "AtBound"
    COOLDOWN = "Cooldown"
    RATE_LIMITED = "RateLimited"
    HPA_CONFLICT = "HPAConflict"
    INVESTIGATE = "Investigate"
    BACKOFF = "Backoff"
    HELD_BY_HYSTERESIS = "HeldByHysteresis"  # a decrease would let the observed peak come close to the increase rule
    # The actuator and verification.
    COMPLETED = "Completed"  # a recorded change finished on pods that did not have it yet
    ROLLED_BACK = "RolledBack"
    ROLLED_OUT = "RolledOut"  # an in-place resize the kubelet found infeasible, rolled out instead
    RESIZE_INFEASIBLE = "ResizeInfeasible"
    ACTION_FAILED = "ActionFailed"
    AS_EXPECTED = "AsExpected"
    # Analysis.
    ANOMALOUS = "Anomalous"
    NO_ANOMALY = "NoAnomaly"
    NOTHING_TO_INVESTIGATE = "NothingToInvestigate"
    FAR_FROM_RECOMMENDATION = "FarFromRecommendation"
    NEAR_RECOMMENDATION = "NearRecommendation"
    # ProcessTuning (the node-tuning loop), the first that applies on any node wins.
    PLANNED = "Planned"  # in the NodeTunings of the nodes its pods run on
    NO_NODE_POLICY = "NoNodePolicy"  # a node no admin NodeTuningPolicy (not Off) covers: nothing applied there
    PINNING_NOT_ALLOWED = "PinningNotAllowed"  # the node's NodeTuningPolicy has allowCpuPinning false
    CPU_SHARE_REACHED = "CPUShareReached"  # the namespace holds its maxPinnedCpusPerNamespace on the node
    NOT_PINNED = "NotPinned"  # no CPUs left on the node (or no CPU request to size the pinning)


# Decisions that are routine: a Normal Event, and only when the reason changes.
# Reasons that announce a change kubetune made (or failed to make): always posted as an Event.
ACTIONS = frozenset({Reason.SCALED_UP, Reason.SCALED_DOWN, Reason.OPTIMIZED, Reason.COMPLETED, Reason.ROLLED_BACK,
                     Reason.ROLLED_OUT, Reason.ACTION_FAILED})
ROUTINE = frozenset({Reason.NO_RULE_FIRED, Reason.MODE_OFF, Reason.SCALED_UP, Reason.SCALED_DOWN,
                     Reason.OPTIMIZED, Reason.COOLDOWN, Reason.COMPLETED, Reason.HELD_BY_HYSTERESIS})
