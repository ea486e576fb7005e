"""The node-tuning loop: every tick, resolve the NodeTuning plan of every node from the indexes
(`kubetune.nodetuning`, pure), apply only what differs from the NodeTunings that exist (server-side
apply; a node no policy reaches gets the monitoring-only plan), delete the kubetune-managed NodeTunings
of nodes that are gone, mark a NodeTuning whose agent stopped reporting (Ready=False,
AgentNotReporting, and a Warning Event on it), and report on each NodeTuningPolicy (matchedNodes,
Ready, Conflict). A plan change on an existing NodeTuning is a Normal Event on it, so
`kubectl describe nt NODE` tells what the operator asked and when the agent went quiet.

One operator per cluster is assumed for node tuning: an operator restricted to some namespaces sees
only their PerformancePolicies, so two such installs would overwrite each other's process entries.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from kubetune import constants
from kubetune.api.common import LabelSelector, Mode, parse_quantity
from kubetune.api.nodetuning import AGENT_NOT_REPORTING, READY, BlockDevice
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
    process_tuning_condition,
    resolve_node_tunings,
    selector_matches,
    stale_agent_message,
)
from kubetune.reasons import ConditionType
from kubetune.status import condition, set_condition
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
    uid: str = ""
    generation: int | None = None
    created: datetime | None = None
    heartbeat: datetime | None = None
    interval_seconds: float | None = None
    conditions: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_LABELS[MANAGED_BY_LABEL]

    @property
    def marked_not_reporting(self) -> bool:
        ready = next((c for c in self.conditions if c.get("type") == READY), {})
        return ready.get("status") == "False" and ready.get("reason") == AGENT_NOT_REPORTING


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def node_tuning_record(meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> NodeTuningRecord:
    devices = []
    for d in status.get("blockDevices") or []:
        try:
            devices.append(BlockDevice.model_validate(dict(d)))
        except ValueError:
            continue  # one odd device must not hide the others
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k == CONFLICTS_ANNOTATION}
    interval = status.get("reportingIntervalSeconds")
    return NodeTuningRecord(dict(meta.get("labels") or {}), annotations, normalised_spec(spec), tuple(devices),
                            uid=meta.get("uid", ""), generation=meta.get("generation"), created=_time(meta.get("creationTimestamp")),
                            heartbeat=_time(status.get("heartbeatTime")),
                            interval_seconds=float(interval) if isinstance(interval, (int, float)) else None,
                            conditions=tuple(dict(c) for c in status.get("conditions") or []))


def node_facts(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> NodeFacts:
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


def agent_nodes(nodes: Mapping[str, NodeFacts], agent_selector: Mapping[str, str]) -> dict[str, NodeFacts]:
    """The nodes the agent DaemonSet's nodeSelector selects: only they get a NodeTuning (elsewhere no
    agent would read it, and it would only show AgentNotReporting)."""
    selector = LabelSelector.model_validate({"matchLabels": dict(agent_selector)})
    return {node: facts for node, facts in nodes.items() if selector_matches(selector, facts.labels)}


def resolve(view: NodeView, min_nice: int, agent_selector: Mapping[str, str] | None = None) -> Resolution:
    return resolve_node_tunings(
        agent_nodes(view.nodes, agent_selector or {}), view.node_policies,
        process_requests(view.performance_policies, view.pods),
        {node: rec.block_devices for node, rec in view.node_tunings.items()},
        min_nice=min_nice, existing={node: rec.spec for node, rec in view.node_tunings.items() if rec.spec})


def process_tuning_update(policy: PolicyRecord, result: Resolution, now: datetime
                          ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the ProcessTuning condition the policy should carry, the one it carries), as wire dicts; None =
    none. A policy that no longer asks for process tuning loses the condition."""
    ref = f"PerformancePolicy/{policy.namespace}/{policy.name}"
    if ref not in result.requested and not policy.mentions(ConditionType.PROCESS_TUNING.value):
        return None, None  # neither asks for it nor carries it: the status need not be parsed
    current = condition(policy.status, ConditionType.PROCESS_TUNING)
    observed = current.to_dict() if current else None
    if ref not in result.requested:
        return None, observed
    ok, reason, message = process_tuning_condition(result.process_issues.get(ref, ()), result.process_nodes.get(ref, {}))
    (desired,) = set_condition([observed] if observed else [], ConditionType.PROCESS_TUNING.value, ok, reason.value,
                               message, generation=policy.generation, now=now)
    return desired, observed


def process_tuning_event(before: tuple | None, after: tuple | None) -> str | None:
    """The Event type for a ProcessTuning condition going from `before` to `after` ((status, reason,
    message, generation) or None), or None: a Warning while something is withheld, a Normal one when it
    is met again after that; nothing when what it says did not change, or for a condition met from the start."""
    if not after or after[:3] == (before or ())[:3]:
        return None
    if after[0] == "False":
        return "Warning"
    return "Normal" if before and before[0] == "False" else None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class NodePlanner:
    """Applies the resolved plans, marks silent agents and reports on NodeTuningPolicies."""

    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings, self.kube, self.metrics, self.clock = settings, kube, metrics, clock
        # What was last written and what the index showed then: while the index still shows the old
        # state (its watch lags the write), the write is not repeated.
        self.sent: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.noted: set[str] = set()
        # The ProcessTuning condition each policy's last Event said, so a condition applied again
        # (dropped by a concurrent evaluation write) is not announced twice.
        self.announced: dict[tuple[str, str], Any] = {}

    async def run_forever(self, view: Callable[[], NodeView], ready: asyncio.Event | None = None,
                          active: Callable[[], bool] = lambda: True) -> None:
        await run_every(self.settings.tick, lambda: self.cycle(view()), name="node-tuning", ready=ready, active=active)

    def _unchanged(self, key: tuple[str, str], desired: Any, observed: Any) -> bool:
        if observed == desired:
            self.sent.pop(key, None)
            return True
        return self.sent.get(key) == (desired, observed)

    async def cycle(self, view: NodeView) -> None:
        result = resolve(view, self.settings.min_nice, self.settings.agent_node_selector)
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
            lines = describe_changes(node, rec.spec if rec else None, spec, result.why.get(node))
            for line in lines or [f"NodeTuning {node}: labels/annotations updated ({annotations or 'no conflicts'})"]:
                log.info("%s", line)
            if rec and rec.uid and lines:
                await asyncio.to_thread(self.kube.event, self._involved(node, rec), "Normal", "PlanChanged",
                                        "; ".join(line.removeprefix(f"NodeTuning {node}: ") for line in lines))
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
        for node, rec in current.items():
            await self._mark_stale(node, rec, now)
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
        for policy in view.performance_policies:
            await self._report_process_tuning(policy, result, now)

    async def _report_process_tuning(self, policy: PolicyRecord, result: Resolution, now: datetime) -> None:
        """The policy's ProcessTuning condition, and one Event when what it says changes (a Warning
        while something is withheld, a Normal one when it is met again). Written by server-side apply
        as its own field manager, so it never overwrites the evaluation's conditions. The evaluation
        writes the whole status by merge patch: one made from a read older than this write drops the
        condition, and the next tick applies it again (no second Event: `announced` remembers it)."""
        desired, observed = process_tuning_update(policy, result, now)
        key = ("pt", f"{policy.namespace}/{policy.name}")
        said = lambda c: c and (c["status"], c["reason"], c["message"], c.get("observedGeneration"))  # noqa: E731
        if said(desired) == said(observed):
            self.sent.pop(key, None)
            if desired is None:
                self.announced.pop(key, None)
            else:
                self.announced.setdefault(key, said(observed))
            return
        # Written, and the index still shows the status as it was before the write: the watch lags.
        # A different status without the condition means another write replaced it: apply again.
        if self.sent.get(key) == (said(desired), policy.status_json):
            return
        try:
            await asyncio.to_thread(self.kube.apply_policy_condition, policy.namespace, policy.name, desired,
                                    ConditionType.PROCESS_TUNING.value)
        except KubeError as e:
            log.warning("PerformancePolicy %s/%s: %s", policy.namespace, policy.name, e)
            return
        self.sent[key] = (said(desired), policy.status_json)
        before = self.announced.get(key, said(observed))
        self.announced[key] = said(desired)
        if event_type := process_tuning_event(before, said(desired)):
            await asyncio.to_thread(self.kube.event, policy.involved(), event_type, desired["reason"], desired["message"])

    @staticmethod
    def _involved(node: str, rec: NodeTuningRecord) -> dict[str, str]:
        return {"apiVersion": constants.API_VERSION, "kind": constants.NODE_TUNING.kind, "name": node,
                "uid": rec.uid}

    async def _mark_stale(self, node: str, rec: NodeTuningRecord, now: datetime) -> None:
        """Ready=False, AgentNotReporting, and one Warning Event, when the node's agent went quiet;
        the agent sets Ready=True again with its next report."""
        message = stale_agent_message(rec.heartbeat, rec.interval_seconds, rec.created, now)
        key = ("stale", node)
        if message is None or rec.marked_not_reporting:
            self.sent.pop(key, None)
            return
        if key in self.sent:
            return  # written; the index has not caught up yet
        conditions = set_condition(rec.conditions, READY, False, AGENT_NOT_REPORTING, message,
                                   generation=rec.generation, now=now)
        try:
            await asyncio.to_thread(self.kube.patch_node_tuning_status, node, {"conditions": conditions})
        except KubeError as e:
            log.warning("NodeTuning %s: %s", node, e)
            return
        self.sent[key] = ("marked", rec.heartbeat)
        log.warning("NodeTuning %s: Ready False (AgentNotReporting): %s", node, message)
        if rec.uid:
            await asyncio.to_thread(self.kube.event, self._involved(node, rec), "Warning", AGENT_NOT_REPORTING, message)
