"""What the operator keeps of PerformancePolicies and workloads, and who owns a workload. Pure.

The evaluation loop, the admission webhook and the node planner all read these records, so they live
here rather than in the hot loop: "which policy owns a workload" is decided once, below.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from kubetune.api.performancepolicy import ActionRecord, PerformancePolicySpec, PerformancePolicyStatus
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

log = logging.getLogger(__name__)

EMPTY_STATUS = PerformancePolicyStatus()
# Parsed statuses kept for the policies being evaluated now (a few at a time, evaluation_concurrency at
# most 64): an evaluation reads its policy's status several times, and parses it once.
PARSED_STATUSES = 128


def encode_status(raw: Mapping[str, Any] | bytes | None) -> bytes:
    """A policy's status as compact JSON: what the index keeps (1.8 KiB a policy where the parsed model
    took 14: issue 12's RSS budget at 1,000 policies)."""
    if isinstance(raw, bytes):
        return raw
    return json.dumps(dict(raw or {}), separators=(",", ":")).encode()


@functools.lru_cache(maxsize=PARSED_STATUSES)
def parse_status(raw: bytes) -> PerformancePolicyStatus:
    """A policy's status as the typed model; a status this version cannot read (written by another
    version, or edited by hand) counts as empty rather than stopping the policy's evaluation."""
    try:
        return PerformancePolicyStatus.model_validate_json(raw)
    except ValidationError as e:
        log.warning("unreadable PerformancePolicy status ignored: %s", str(e)[:300])
        return EMPTY_STATUS


@dataclass(frozen=True)
class PolicyRecord:
    """What the index keeps of a PerformancePolicy: its spec parsed (or why it could not be), and its
    status as compact JSON (`status` parses it: the typed model the operator writes). The status may be
    given as the API server holds it (a mapping) or already encoded."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    spec: PerformancePolicySpec | None
    spec_error: str | None
    status_json: bytes = b"{}"

    def __post_init__(self) -> None:
        object.__setattr__(self, "status_json", encode_status(self.status_json))

    @property
    def status(self) -> PerformancePolicyStatus:
        return parse_status(self.status_json)

    def mentions(self, text: str) -> bool:
        """Whether `text` occurs anywhere in the status: a test that needs no parsing, for passes over
        every policy (a "yes" where it is only in a message costs a parse, nothing else)."""
        return text.encode() in self.status_json

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def target(self) -> WorkloadRef | None:
        return WorkloadRef(self.namespace, self.spec.target_ref.kind.value, self.spec.target_ref.name) if self.spec else None

    def involved(self) -> dict[str, str]:
        """The policy as an Event's involvedObject."""
        return {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy", "name": self.name,
                "namespace": self.namespace, "uid": self.uid}

    def past_actions(self) -> tuple[ActionRecord, ...]:
        """lastAction and history, newest first."""
        last = self.status.last_action
        return ((last,) if last else ()) + tuple(self.status.history)


def workload_involved(ref: WorkloadRef) -> dict[str, str]:
    """A workload as an Event's involvedObject."""
    return {"apiVersion": "apps/v1", "kind": ref.kind, "name": ref.name, "namespace": ref.namespace}


@dataclass(frozen=True)
class WorkloadRecord:
    uid: str
    template: tuple[ContainerResources, ...]


@dataclass
class ClusterView:
    """The indexes, as plain mappings (kopf's indexes in the operator, dicts in tests)."""

    policies: Iterable[PolicyRecord]
    pods: Mapping[WorkloadRef, Iterable[PodRecord]]
    workloads: Mapping[WorkloadRef, WorkloadRecord]
    hpas: Mapping[WorkloadRef, frozenset[str]] = field(default_factory=dict)
    node_capacity: Mapping[str, float] = field(default_factory=dict)


def workload_owners(policies: Iterable[PolicyRecord]) -> dict[WorkloadRef, PolicyRecord]:
    """Each targeted workload -> the policy that owns it: the oldest (then the first by name).
    A younger policy on the same workload is reported as a conflict and otherwise ignored."""
    owners: dict[WorkloadRef, PolicyRecord] = {}
    for p in sorted((p for p in policies if p.spec), key=lambda p: (p.created, p.name)):
        owners.setdefault(p.target, p)
    return owners


def conflicting(policies: Iterable[PolicyRecord]) -> dict[tuple[str, str], PolicyRecord]:
    """Policies that target a workload an older policy already targets -> that older policy."""
    policies = list(policies)
    owners = workload_owners(policies)
    return {p.key: owners[p.target] for p in policies if p.spec and owners[p.target] is not p}
