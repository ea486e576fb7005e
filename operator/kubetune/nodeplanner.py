"""The node-tuning loop: every tick, resolve the NodeTuning plan of every node from the indexes
(`kubetune.nodetuning`, pure), apply only what differs from the NodeTunings that exist (server-side
apply), delete the kubetune-managed NodeTunings nothing asks for any more (the agent then restores the
node's originals), and report on each NodeTuningPolicy (matchedNodes, Ready, Conflict).

One operator per cluster is assumed for node tuning: an operator restricted to some namespaces sees
only their PerformancePolicies, so two such installs would overwrite each other's process entries.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from kubetune import constants
from kubetune.api.common import Mode
from kubetune.api.nodetuning import BlockDevice
from kubetune.api.performancepolicy import ProcessTuning
from kubetune.records import PolicyRecord, conflicting
from kubetune.kube import Kube, KubeError
from kubetune.loops import run_every
from kubetune.metrics import OperatorMetrics
from kubetune.nodetuning import (
    MANAGED_BY_LABEL,
    MANAGED_LABELS,
    NodeFacts,
    NodeTuningPolicyRecord,
    ProcessRequest,
    Resolution,
    conflicts_annotation,
    describe_changes,
    normalised_spec,
    policy_status,
    resolve_node_tunings,
)
from kubetune.settings import OperatorSettings
from kubetune.workloads import PodRecord, WorkloadRef

log = logging.getLogger(__name__)

CONFLICTS_ANNOTATION = f"{constants.ANNOTATION_PREFIX}conflicts"


@dataclass(frozen=True)
class NodeTuningRecord:
    """What the index keeps of a NodeTuning: our labels and annotation, the spec, the agent's devices."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    spec: Mapping[str, Any] | None
    block_devices: tuple[BlockDevice, ...]

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_LABELS[MANAGED_BY_LABEL]


def node_tuning_record(meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> NodeTuningRecord:
    devices = []
    for d in status.get("blockDevices") or []:
        try:
            devices.append(BlockDevice.model_validate(dict(d)))
        except ValueError:
            continue  # one odd device must not hide the others
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k == CONFLICTS_ANNOTATION}
    return NodeTuningRecord(dict(meta.get("labels") or {}), annotations, normalised_spec(spec), tuple(devices))


def node_facts(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> NodeFacts:
    from kubernetes.utils import parse_quantity
    try:
        cpus = math.floor(float(parse_quantity(allocatable["cpu"]))) if "cpu" in allocatable else 0
    except ValueError:
        cpus = 0
    return NodeFacts(dict(labels), cpus)


@dataclass
class NodeView:
    """The indexes the loop reads, as plain mappings (kopf's indexes in the operator, dicts in tests)."""

    nodes: Mapping[str, NodeFacts]
    node_policies: Iterable[NodeTuningPolicyRecord]
    performance_policies: Iterable[PolicyRecord]
    pods: Mapping[WorkloadRef, Iterable[PodRecord]]
    node_tunings: Mapping[str, NodeTuningRecord]


# Under high load (an IncreaseResources rule holds) a policy with processTuning gets this much
# higher priority than it asks for, still clamped to the node's minNice; back when the load falls.
HIGH_LOAD_NICE_BOOST = 5


def process_tuning(policy: PolicyRecord) -> ProcessTuning:
    """The policy's process tuning, with the priority raise while its workload is under high load."""
    tuning = policy.spec.process_tuning
    signals = policy.status.signals
    if signals is None or not signals.high_load:
        return tuning
    return tuning.model_copy(update={"nice": max((tuning.nice or 0) - HIGH_LOAD_NICE_BOOST, -20)})


def process_requests(policies: Iterable[PolicyRecord], pods: Mapping[WorkloadRef, Iterable[PodRecord]]
                     ) -> list[ProcessRequest]:
    """The process tuning of Auto PerformancePolicies (a policy that lost a target conflict asks nothing)."""
    policies = list(policies)
    losers = conflicting(policies)
    return [ProcessRequest(f"PerformancePolicy/{p.namespace}/{p.name}", process_tuning(p), tuple(pods.get(p.target, ())))
            for p in policies
            if p.spec and p.spec.mode is Mode.AUTO and p.spec.process_tuning and (p.namespace, p.name) not in losers]


def resolve(view: NodeView, min_nice: int) -> Resolution:
    return resolve_node_tunings(
        view.nodes, view.node_policies, process_requests(view.performance_policies, view.pods),
        {node: rec.block_devices for node, rec in view.node_tunings.items()},
        min_nice=min_nice, existing={node: rec.spec for node, rec in view.node_tunings.items() if rec.spec})


def _now() -> datetime:
    return datetime.now(timezone.utc)


class NodePlanner:
    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings, self.kube, self.metrics, self.clock = settings, kube, metrics, clock
        # What was last written and what the index showed then: while the index still shows the old
        # state (its watch lags the write), the write is not repeated.
        self.sent: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.noted: set[str] = set()

    async def run_forever(self, view: Callable[[], NodeView], ready: asyncio.Event | None = None,
                          active: Callable[[], bool] = lambda: True) -> None:
        await run_every(self.settings.tick, lambda: self.cycle(view()), name="node-tuning", ready=ready, active=active)

    def _unchanged(self, key: tuple[str, str], desired: Any, observed: Any) -> bool:
        if observed == desired:
            self.sent.pop(key, None)
            return True
        return self.sent.get(key) == (desired, observed)

    async def cycle(self, view: NodeView) -> None:
        result = resolve(view, self.settings.min_nice)
        current = dict(view.node_tunings)
        for node, spec in result.specs.items():
            annotations = ({CONFLICTS_ANNOTATION: conflicts_annotation(result.conflicts[node])}
                           if node in result.conflicts else {})
            rec = current.get(node)
            desired = (spec, True, annotations)
            observed = (rec.spec, rec.managed, dict(rec.annotations)) if rec else None
            if self._unchanged(("nt", node), desired, observed):
                continue
            try:
                await asyncio.to_thread(self.kube.apply_node_tuning, node, spec, MANAGED_LABELS, annotations)
            except KubeError as e:
                log.warning("NodeTuning %s: %s", node, e)
                continue
            self.sent[("nt", node)] = (desired, observed)
            for line in describe_changes(node, rec.spec if rec else None, spec, result.why.get(node)) or \
                    [f"NodeTuning {node}: labels/annotations updated ({annotations or 'no conflicts'})"]:
                log.info("%s", line)
        for node, rec in current.items():
            if node in result.specs or not rec.managed or self._unchanged(("nt", node), "deleted", ("present", rec.spec)):
                continue
            try:
                await asyncio.to_thread(self.kube.delete_node_tuning, node)
            except KubeError as e:
                log.warning("NodeTuning %s: %s", node, e)
                continue
            self.sent[("nt", node)] = ("deleted", ("present", rec.spec))
            for line in describe_changes(node, rec.spec, None):
                log.info("%s", line)
        self.metrics.node_tunings.set(len(result.specs))
        now = self.clock()
        for record in view.node_policies:
            status = policy_status(record, result.policies.get(record.name), now)
            observed = {k: record.status.get(k) for k in status}
            if self._unchanged(("ntp", record.name), status, observed):
                continue
            try:
                await asyncio.to_thread(self.kube.patch_node_tuning_policy_status, record.name, status)
                self.sent[("ntp", record.name)] = (status, observed)
            except KubeError as e:
                log.warning("NodeTuningPolicy %s: %s", record.name, e)
        for note in result.notes:
            if note not in self.noted:
                log.warning("process tuning: %s", note)
        self.noted = set(result.notes)
