"""Node-tuning resolution (pure): NodeTuningPolicies matched by node labels plus the per-service process
tuning of PerformancePolicies -> one NodeTuning spec per node, and what each NodeTuningPolicy did.

Plain data in (node labels, policy records, pods, the block devices the agents report), wire-form
dicts out; no I/O. `kubetune.nodeplanner` applies the result.

How a node's plan is resolved:
- A NodeTuningPolicy applies to a node when its `nodeSelector` matches the node's labels (matchLabels
  and matchExpressions, as Kubernetes does: `NotIn` and `DoesNotExist` also match a missing label).
  `mode: Off` policies are matched (and counted in `matchedNodes`) but contribute nothing.
- Field by field, the highest `priority` wins. The fields are: each knob (`sysctl.<name>`,
  `block.<device>.scheduler|readAheadKb`), each adaptive rule (`cpu.governor`, `cpu.thermal`,
  `memory.swappiness`, `memory.vfsCachePressure`, and the two dirty ratios together, since their
  ordering constraint only holds within one policy) and each thresholds section (cpu, memory, disk,
  network). Equal top priorities with different values are a Conflict: the knob or rule is left out
  (the node keeps, or gets back, its original value), a thresholds section falls back to the defaults.
- The node's mode is the most cautious one among the contributing NodeTuningPolicies (Recommend over
  Auto); it is the mode of the node's process entries too.
- `io.devices` rules become concrete `block.<device>.*` knobs from the devices the node's agent
  reports in `NodeTuning.status.blockDevices` (by the class the agent derived from the rotational
  flag / NVMe name, or by a glob over the name); within one policy the first rule that sets a
  setting wins. Until the agent has reported, there are no block knobs.
- Every node gets a NodeTuning, so every node running the agent is monitored with the default
  thresholds from the start: a node no policy reaches has a plan with nothing to tune (`mode: Auto`,
  so what the agent journaled earlier is restored rather than only planned) and the default
  thresholds (`monitoring_spec`). The operator creates it, keeping the contract: operator writes
  spec, agent writes status. A node whose agent never reports then shows `AgentNotReporting`.
- Process tuning comes from PerformancePolicies in `Auto` mode (a Recommend policy promises to change
  nothing), for the pods of their target that are on a known node and not finished, and only on nodes
  an admin's NodeTuningPolicy (not `Off`) covers: a tenant never gets more than the node's admin
  allows, and no admin policy allows nothing (the node's plan stays monitoring only, `NoNodePolicy`
  on the tenant's policy). On a node whose admin policy is `Recommend` the entries are planned only.
  `nice` is clamped to the operator's floor and to the highest `processTuning.minNice` among the
  node's NodeTuningPolicies; CPU pinning needs every matching NodeTuningPolicy to allow it. The limits
  are the most restrictive of all matching policies, not priority-merged: they are safety caps, and
  `processTuning` is always present (defaulted), so a priority merge would let any higher-priority
  policy silently lift another admin's cap.
- Pinned CPUs are dedicated: a container gets ceil(CPU request) CPUs, taken from the top of the node's
  allocatable CPUs down, never CPU 0 (housekeeping). Fairness, in this order: first come (an
  assignment already in the node's NodeTuning is kept while it stays valid, so a newcomer never takes
  a pinning away and pods do not move between CPUs); the admin's share (`maxPinnedCpusPerNamespace`,
  the smallest among the node's policies: no namespace holds more on the node, kept assignments
  included); then newcomers of the namespace holding the fewest pinned CPUs on the node first (after
  a rollout, the tenant whose old pods left gets CPUs back before a tenant that already has some).
  What a policy does not get is a `ProcessIssue`, reported on the policy by the planner.
- Not here: per-service socket buffers are not node knobs (tcp_rmem/tcp_wmem are per network
  namespace) and belong in the pod's `securityContext.sysctls` through the webhook or rollout path.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from kubetune.api.common import LabelSelector, Mode, SelectorOperator
from kubetune.api.nodetuning import (
    AdaptiveRules,
    BlockDevice,
    Knob,
    NodeTuningMode,
    NodeTuningSpec,
    ProcessEntry,
    block_knob,
    sysctl_knob,
)
from kubetune.api.nodetuningpolicy import CPUTuning, MemoryTuning, NodeThresholds, NodeTuningPolicySpec
from kubetune.api.performancepolicy import ProcessTuning
from kubetune.reasons import Reason
from kubetune.status import set_condition
from kubetune.workloads import PodRecord

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_LABELS = {MANAGED_BY_LABEL: "kubetune"}
MAX_KNOBS, MAX_PROCESSES = 128, 256  # the NodeTuning schema's limits
FINISHED_PHASES = ("Succeeded", "Failed")
THRESHOLD_SECTIONS = ("cpu", "memory", "disk", "network")


@dataclass(frozen=True)
class NodeTuningPolicyRecord:
    """What the index keeps of a NodeTuningPolicy."""

    name: str
    uid: str
    generation: int
    spec: NodeTuningPolicySpec | None
    spec_error: str | None
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"NodeTuningPolicy/{self.name}"


@dataclass(frozen=True)
class NodeFacts:
    labels: Mapping[str, str]
    cpus: int = 0
    """Whole CPUs the node can allocate (CPU ids 0..cpus-1); 0 = unknown, no pinning."""


@dataclass(frozen=True)
class ProcessRequest:
    """One PerformancePolicy's process tuning and the pods of its target."""

    policy: str  # "PerformancePolicy/<namespace>/<name>"
    tuning: ProcessTuning
    pods: tuple[PodRecord, ...]


@dataclass(frozen=True)
class Conflict:
    node: str
    field: str
    candidates: tuple[tuple[str, str], ...]  # (policy ref, value) at the top priority
    priority: int

    def describe(self) -> str:
        values = ", ".join(f"{p}={v}" for p, v in self.candidates)
        return f"node {self.node}: {self.field} at priority {self.priority}: {values}"


@dataclass(frozen=True)
class ProcessIssue:
    """Why a PerformancePolicy's process tuning is not (fully) applied on one node."""

    node: str
    reason: Reason
    message: str


@dataclass
class PolicyOutcome:
    matched_nodes: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


@dataclass
class Resolution:
    specs: dict[str, dict[str, Any]]
    """node -> NodeTuningSpec in wire form; a node absent here needs no NodeTuning."""
    policies: dict[str, PolicyOutcome]
    """NodeTuningPolicy name -> matched nodes and conflicts."""
    conflicts: dict[str, list[Conflict]]
    """node -> its conflicts."""
    why: dict[str, dict[str, str]]
    """node -> field ('mode', 'adaptive', 'thresholds', 'processes') -> why it has its value."""
    notes: list[str] = field(default_factory=list)
    """Requests that could not be met in full (no CPUs left to pin, too many entries)."""
    process_issues: dict[str, list[ProcessIssue]] = field(default_factory=dict)
    """PerformancePolicy ref -> why its process tuning is not (fully) applied, node by node."""
    process_nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    """PerformancePolicy ref -> node -> that node's mode, where the policy has process entries."""
    requested: frozenset[str] = frozenset()
    """The PerformancePolicy refs that ask for process tuning (each gets a ProcessTuning condition)."""


# --- label selectors ------------------------------------------------------------------------------


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; `{}` matches everything."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for e in selector.match_expressions:
        present = e.key in labels
        if e.operator is SelectorOperator.IN and not (present and labels[e.key] in e.values):
            return False
        if e.operator is SelectorOperator.NOT_IN and present and labels[e.key] in e.values:
            return False
        if e.operator is SelectorOperator.EXISTS and not present:
            return False
        if e.operator is SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True


# --- one policy's fields on one node --------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    policy: str
    priority: int
    value: Any      # a knob's value string, or a model (adaptive rule, thresholds section)
    text: str       # canonical text, for comparing and for messages
    source: str     # where in the policy it comes from


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return json.dumps([v.to_dict() if v is not None else None for v in value], sort_keys=True)
    return json.dumps(value.to_dict(), sort_keys=True)


def device_knobs(spec: NodeTuningPolicySpec, devices: Sequence[BlockDevice]) -> dict[str, tuple[str, str]]:
    """`block.<device>.<setting>` -> (value, which rule) for the node's reported devices."""
    out: dict[str, tuple[str, str]] = {}
    if not spec.io:
        return out
    for device in devices:
        for setting, attr in (("scheduler", "scheduler"), ("readAheadKb", "read_ahead_kb")):
            for i, rule in enumerate(spec.io.devices):
                matched = (rule.device_class is device.device_class if rule.device_class is not None
                           else fnmatch.fnmatchcase(device.name, rule.device_pattern or ""))
                value = getattr(rule, attr)
                if matched and value is not None:
                    how = (f"class {device.device_class.value}" if rule.device_class is not None
                           else f"pattern {rule.device_pattern}")
                    out[block_knob(device.name, setting)] = (getattr(value, "value", str(value)),
                                                             f"io.devices[{i}] ({how})")
                    break
    return out


def policy_fields(spec: NodeTuningPolicySpec, devices: Sequence[BlockDevice]) -> dict[str, tuple[Any, str]]:
    """field -> (value, source) for everything the policy sets on a node with these devices."""
    fields: dict[str, tuple[Any, str]] = {}
    for i, s in enumerate(spec.sysctls):
        fields[sysctl_knob(s.name)] = (s.value, f"sysctls[{i}]")
    fields.update(device_knobs(spec, devices))
    if spec.cpu:
        if spec.cpu.governor:
            fields["adaptive.cpu.governor"] = (spec.cpu.governor, "cpu.governor")
        if spec.cpu.thermal:
            fields["adaptive.cpu.thermal"] = (spec.cpu.thermal, "cpu.thermal")
    if spec.memory:
        m = spec.memory
        if m.swappiness:
            fields["adaptive.memory.swappiness"] = (m.swappiness, "memory.swappiness")
        if m.vfs_cache_pressure:
            fields["adaptive.memory.vfsCachePressure"] = (m.vfs_cache_pressure, "memory.vfsCachePressure")
        if m.dirty_ratio or m.dirty_background_ratio:
            fields["adaptive.memory.dirtyRatios"] = ((m.dirty_ratio, m.dirty_background_ratio),
                                                     "memory.dirtyRatio/dirtyBackgroundRatio")
    for section in THRESHOLD_SECTIONS:
        fields[f"thresholds.{section}"] = (getattr(spec.thresholds, section), f"thresholds.{section}")
    return fields


@dataclass(frozen=True)
class Winner:
    candidate: Candidate
    overridden: tuple[Candidate, ...]

    def reason(self) -> str:
        c = self.candidate
        text = f"{c.source}, priority {c.priority}"
        if self.overridden:
            text += "; overrides " + ", ".join(f"{o.policy} (priority {o.priority}: {o.text})" for o in self.overridden)
        return text[:256]


def merge(candidates: Iterable[Candidate], node: str, name: str) -> Winner | Conflict | None:
    """The highest priority wins; equal top priorities with different values conflict."""
    cands = list(candidates)
    if not cands:
        return None
    top = max(c.priority for c in cands)
    at_top = sorted((c for c in cands if c.priority == top), key=lambda c: c.policy)
    if len({c.text for c in at_top}) > 1:
        return Conflict(node, name, tuple((c.policy, c.text) for c in at_top), top)
    winner = at_top[0]
    overridden = tuple(sorted((c for c in cands if c.priority < top and c.text != winner.text),
                              key=lambda c: (-c.priority, c.policy)))
    return Winner(winner, overridden)


# --- process tuning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessLimits:
    min_nice: int
    allow_cpu_pinning: bool
    why: str
    covered: bool = True
    """An admin's NodeTuningPolicy (not Off) covers the node; without one, no process tuning at all."""
    namespace_share: int | None = None
    """The most pinned CPUs one namespace may hold on the node; None = no share."""


def process_limits(policies: Sequence[NodeTuningPolicyRecord], floor: int) -> ProcessLimits:
    """The most restrictive limits of the node's NodeTuningPolicies and the operator's floor."""
    if not policies:
        return ProcessLimits(floor, False, "no NodeTuningPolicy (not Off) covers the node: no process tuning",
                             covered=False)
    nices = [(floor, "operator floor")] + [(p.spec.process_tuning.min_nice, p.ref) for p in policies]
    min_nice, source = max(nices, key=lambda n: n[0])
    forbidding = [p.ref for p in policies if not p.spec.process_tuning.allow_cpu_pinning]
    pin_why = f"pinning not allowed by {', '.join(forbidding)}" if forbidding else "pinning allowed"
    shares = [(p.spec.process_tuning.max_pinned_cpus_per_namespace, p.ref) for p in policies
              if p.spec.process_tuning.max_pinned_cpus_per_namespace is not None]
    share = min(shares) if shares else None
    if share and not forbidding:
        pin_why += f", at most {share[0]} CPUs per namespace ({share[1]})"
    return ProcessLimits(min_nice, not forbidding, f"minNice {min_nice} ({source}); {pin_why}",
                         namespace_share=share[0] if share else None)


def _cpu_count(pod: PodRecord, container: str) -> int:
    c = next((c for c in pod.containers if c.name == container), None)
    request = c.requests.get("cpu") if c else None
    return max(1, math.ceil(request - 1e-9)) if request else 0


Issues = list[tuple[str, ProcessIssue]]  # (PerformancePolicy ref, issue)


def process_entries(node: str, facts: NodeFacts, requests: Sequence[ProcessRequest], limits: ProcessLimits,
                    previous_cpus: Mapping[tuple[str, str], tuple[int, ...]], issues: Issues) -> list[ProcessEntry]:
    wanted: list[tuple[ProcessRequest, PodRecord, str]] = []
    # One entry per container (the NodeTuning is keyed by pod and container): the planner drops the loser
    # of two policies on one workload, and should two requests still reach a container, the first policy
    # by name keeps it.
    taken: set[tuple[str, str]] = set()
    for req in sorted(requests, key=lambda r: r.policy):
        for pod in sorted(req.pods, key=lambda p: (p.namespace, p.name)):
            if pod.node != node or pod.phase in FINISHED_PHASES or not pod.uid:
                continue
            for c in pod.containers:
                if (not req.tuning.containers or c.name in req.tuning.containers) and (pod.uid, c.name) not in taken:
                    taken.add((pod.uid, c.name))
                    wanted.append((req, pod, c.name))
    if not limits.covered:
        for policy in sorted({req.policy for req, _, _ in wanted}):
            issues.append((policy, ProcessIssue(node, Reason.NO_NODE_POLICY,
                                                f"node {node} has no NodeTuningPolicy allowing process tuning; not applied")))
        return []
    cpus = pinned_cpus(node, facts, [w for w in wanted if w[0].tuning.cpu_pinning], limits, previous_cpus, issues)
    entries = []
    for req, pod, name in wanted:
        t = req.tuning
        nice = None if t.nice is None else max(t.nice, limits.min_nice)
        entry = ProcessEntry(pod_uid=pod.uid, namespace=pod.namespace, pod_name=pod.name, container_name=name,
                             nice=nice, io_class=t.io_class, io_priority=t.io_priority,
                             cpus=cpus.get((pod.uid, name), ()), policy=req.policy[:320])
        if entry.nice is not None or entry.io_class is not None or entry.io_priority is not None or entry.cpus:
            entries.append(entry)
    return entries


# --- the whole resolution -------------------------------------------------------------------------


def pinned_cpus(node: str, facts: NodeFacts, pinning: Sequence[tuple[ProcessRequest, PodRecord, str]],
                limits: ProcessLimits, previous_cpus: Mapping[tuple[str, str], tuple[int, ...]],
                issues: Issues) -> dict[tuple[str, str], tuple[int, ...]]:
    """(pod UID, container) -> its dedicated CPUs: first come, within the namespace share, then the
    namespace holding the fewest first; what is not met goes to `issues`."""
    cpus: dict[tuple[str, str], tuple[int, ...]] = {}
    if pinning and not limits.allow_cpu_pinning:
        for policy in sorted({req.policy for req, _, _ in pinning}):
            issues.append((policy, ProcessIssue(node, Reason.PINNING_NOT_ALLOWED, f"node {node}: {limits.why}")))
        return cpus
    free = set(range(1, facts.cpus))
    held: dict[str, int] = {}  # namespace -> CPUs pinned on this node
    share = limits.namespace_share

    def within_share(pod: PodRecord, count: int) -> bool:
        return share is None or held.get(pod.namespace, 0) + count <= share

    def take(pod: PodRecord, name: str, chosen: Iterable[int]) -> None:
        cpus[(pod.uid, name)] = tuple(sorted(chosen))
        free.difference_update(chosen)
        held[pod.namespace] = held.get(pod.namespace, 0) + len(cpus[(pod.uid, name)])

    for req, pod, name in pinning:  # first come: a valid earlier assignment is kept
        count, kept = _cpu_count(pod, name), previous_cpus.get((pod.uid, name), ())
        if count and len(kept) == count and set(kept) <= free and within_share(pod, count):
            take(pod, name, kept)
    waiting = [w for w in pinning if (w[1].uid, w[2]) not in cpus]
    while waiting:
        # The namespace holding the fewest pinned CPUs here goes first; ties by policy, pod, container.
        req, pod, name = min(waiting, key=lambda w: (held.get(w[1].namespace, 0), w[0].policy, w[1].name, w[2]))
        waiting.remove((req, pod, name))
        count, what = _cpu_count(pod, name), f"{pod.namespace}/{pod.name}/{name}"
        if not count:
            issues.append((req.policy, ProcessIssue(node, Reason.NOT_PINNED, f"{what} has no CPU request; not pinned")))
        elif not within_share(pod, count):
            issues.append((req.policy, ProcessIssue(
                node, Reason.CPU_SHARE_REACHED,
                f"{what} needs {count} dedicated CPUs, namespace {pod.namespace} holds {held.get(pod.namespace, 0)} "
                f"of its share of {share} on node {node}; not pinned")))
        elif len(free) < count:
            issues.append((req.policy, ProcessIssue(
                node, Reason.NOT_PINNED, f"{what} needs {count} dedicated CPUs, node {node} has {len(free)} left; not pinned")))
        else:
            take(pod, name, sorted(free)[-count:])
    return cpus


def _previous_cpus(spec: Mapping[str, Any] | None) -> dict[tuple[str, str], tuple[int, ...]]:
    return {(p.get("podUID", ""), p.get("containerName", "")): tuple(p.get("cpus") or ())
            for p in (spec or {}).get("processes") or []}


def resolve_node_tunings(nodes: Mapping[str, NodeFacts], node_policies: Iterable[NodeTuningPolicyRecord],
                         process_requests: Iterable[ProcessRequest], block_devices: Mapping[str, Sequence[BlockDevice]],
                         *, min_nice: int, existing: Mapping[str, Mapping[str, Any]] | None = None) -> Resolution:
    """Every node's NodeTuning spec (wire form), what each NodeTuningPolicy matched and the conflicts.

    `existing` (node -> current spec) only keeps CPU pinning assignments stable."""
    existing = existing or {}
    valid = sorted((p for p in node_policies if p.spec is not None), key=lambda p: p.name)
    requests = list(process_requests)
    outcomes = {p.name: PolicyOutcome() for p in valid}
    result = Resolution(specs={}, policies=outcomes, conflicts={}, why={},
                        requested=frozenset(r.policy for r in requests))
    for node in sorted(nodes):
        facts = nodes[node]
        matched = [p for p in valid if selector_matches(p.spec.node_selector, facts.labels)]
        for p in matched:
            outcomes[p.name].matched_nodes.append(node)
        active = [p for p in matched if p.spec.mode is not Mode.OFF]
        by_field: dict[str, list[Candidate]] = {}
        for p in active:
            for name, (value, source) in policy_fields(p.spec, block_devices.get(node, ())).items():
                by_field.setdefault(name, []).append(Candidate(p.ref, p.spec.priority, value, _text(value), source))
        winners: dict[str, Winner] = {}
        conflicts: list[Conflict] = []
        for name in sorted(by_field):
            merged = merge(by_field[name], node, name)
            if isinstance(merged, Conflict):
                conflicts.append(merged)
                for ref, _ in merged.candidates:
                    outcomes[ref.split("/", 1)[1]].conflicts.append(merged)
            elif merged:
                winners[name] = merged
        issues: Issues = []
        limits = process_limits(active, min_nice)
        processes = process_entries(node, facts, requests, limits, _previous_cpus(existing.get(node)),
                                    issues) if requests else []
        if len(processes) > MAX_PROCESSES:
            result.notes.append(f"node {node}: {len(processes)} process entries, only the first {MAX_PROCESSES} kept")
            processes = processes[:MAX_PROCESSES]
        for policy, issue in issues:
            result.notes.append(f"{policy}: {issue.message}")
            result.process_issues.setdefault(policy, []).append(issue)
        if conflicts:
            result.conflicts[node] = conflicts
        result.specs[node], result.why[node] = _spec(active, winners, processes)
        for entry in processes:
            result.process_nodes.setdefault(entry.policy, {})[node] = result.specs[node]["mode"]
        result.why[node]["processes"] = f"limits on {node}: {limits.why}"
    return result


def _spec(active: Sequence[NodeTuningPolicyRecord], winners: Mapping[str, Winner], processes: list[ProcessEntry]
          ) -> tuple[dict[str, Any], dict[str, str]]:
    why: dict[str, str] = {}
    cautious = [p.ref for p in active if p.spec.mode is Mode.RECOMMEND]
    mode = NodeTuningMode.RECOMMEND if cautious else NodeTuningMode.AUTO
    if cautious:
        why["mode"] = f"Recommend: {', '.join(cautious)} in Recommend mode"
    elif active:  # process entries exist only where an admin's policy is active
        why["mode"] = f"Auto: every contributing policy is Auto ({', '.join(p.ref for p in active)})"
    else:
        why["mode"] = "Auto: no policy contributes; nothing to tune, the default thresholds are watched"
    knobs = [Knob(key=k, value=w.candidate.value, policy=w.candidate.policy, reason=w.reason())
             for k, w in winners.items() if not k.startswith(("adaptive.", "thresholds."))][:MAX_KNOBS]

    def won(name: str) -> Any:
        w = winners.get(name)
        return w.candidate.value if w else None

    governor, thermal = won("adaptive.cpu.governor"), won("adaptive.cpu.thermal")
    dirty = won("adaptive.memory.dirtyRatios") or (None, None)
    cpu = CPUTuning(governor=governor, thermal=thermal) if governor or thermal else None
    memory_parts = {"swappiness": won("adaptive.memory.swappiness"),
                    "vfs_cache_pressure": won("adaptive.memory.vfsCachePressure"),
                    "dirty_ratio": dirty[0], "dirty_background_ratio": dirty[1]}
    memory = MemoryTuning(**memory_parts) if any(v is not None for v in memory_parts.values()) else None
    adaptive = None
    adaptive_winners = {k: w for k, w in winners.items() if k.startswith("adaptive.")}
    if cpu or memory:
        refs = sorted({w.candidate.policy for w in adaptive_winners.values()})
        adaptive = AdaptiveRules(cpu=cpu, memory=memory, policy=",".join(refs)[:320])
        why["adaptive"] = "; ".join(f"{k[len('adaptive.'):]} from {w.candidate.policy} ({w.reason()})"
                                    for k, w in sorted(adaptive_winners.items()))
    sections = {s: won(f"thresholds.{s}") for s in THRESHOLD_SECTIONS}
    thresholds = NodeThresholds(**{s: v for s, v in sections.items() if v is not None})
    why["thresholds"] = "; ".join(f"{s} from {winners[f'thresholds.{s}'].candidate.policy}" if v is not None
                                  else f"{s}: defaults" for s, v in sections.items())
    spec = NodeTuningSpec(mode=mode, knobs=tuple(sorted(knobs, key=lambda k: k.key)), adaptive=adaptive,
                          processes=tuple(sorted(processes, key=lambda p: (p.namespace, p.pod_name, p.container_name))),
                          thresholds=thresholds)
    return spec.to_dict(), why


def monitoring_spec() -> dict[str, Any]:
    """The NodeTuning spec of a node no policy reaches: nothing to tune, default thresholds."""
    return _spec([], {}, [])[0]


# --- staleness: the agent stopped reporting -------------------------------------------------------

STALE_AFTER_INTERVALS = 3
DEFAULT_AGENT_INTERVAL_SECONDS = 10.0  # the agent's default; a NodeTuning it never reported on has none


def stale_agent_message(heartbeat: datetime | None, interval_seconds: float | None, created: datetime | None,
                        now: datetime) -> str | None:
    """Why the node's agent counts as not reporting, or None while it reports: its heartbeat is older
    than three of its own reporting intervals (or it never reported, three intervals after the
    NodeTuning was created, which gives a starting agent time for its first two samples)."""
    interval = interval_seconds or DEFAULT_AGENT_INTERVAL_SECONDS
    limit = STALE_AFTER_INTERVALS * interval
    if heartbeat is None:
        if created is None or (now - created).total_seconds() <= limit:
            return None
        return (f"no node agent has reported since the NodeTuning was created {created.isoformat()} "
                f"(is the agent's DaemonSet scheduled on this node?)")
    age = (now - heartbeat).total_seconds()
    if age <= limit:
        return None
    return (f"the node agent's last heartbeat was {age:.0f}s ago at {heartbeat.isoformat()}, more than "
            f"{STALE_AFTER_INTERVALS} reporting intervals of {interval:g}s; thresholds and knobs are not "
            f"watched on this node until it reports again")


# --- status and explanations ----------------------------------------------------------------------


def normalised_spec(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A NodeTuning spec as the API server returned it, in the same form `resolve_node_tunings` writes
    (server defaults filled in, empty lists left out), so the two compare; None if it does not parse."""
    if spec is None:
        return None
    try:
        return NodeTuningSpec.model_validate(dict(spec)).to_dict()
    except ValueError:
        return None


def policy_status(record: NodeTuningPolicyRecord, outcome: PolicyOutcome | None, now: datetime) -> dict[str, Any]:
    """The NodeTuningPolicy's status: matchedNodes, Ready and Conflict conditions."""
    conditions = list(record.status.get("conditions") or [])

    def cond(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, ok, reason, message, generation=record.generation, now=now)

    if record.spec is None:
        cond("Ready", False, "InvalidSpec", record.spec_error or "invalid spec")
        return {"observedGeneration": record.generation, "matchedNodes": 0, "conditions": conditions}
    outcome = outcome or PolicyOutcome()
    n = len(outcome.matched_nodes)
    if record.spec.mode is Mode.OFF:
        cond("Ready", True, "ModeOff", f"mode is Off: the policy is ignored on the {n} matched nodes")
    else:
        cond("Ready", True, "Resolved", f"resolved into the NodeTunings of {n} nodes"
                                        + (f": {', '.join(outcome.matched_nodes[:20])}" if n else ""))
    if outcome.conflicts:
        shown = "; ".join(c.describe() for c in outcome.conflicts[:10])
        more = f" (and {len(outcome.conflicts) - 10} more)" if len(outcome.conflicts) > 10 else ""
        cond("Conflict", True, "EqualPriority",
             f"policies of equal priority set different values, left unchanged: {shown}{more}")
    else:
        cond("Conflict", False, "NoConflict", "no policy of equal priority sets a different value")
    return {"observedGeneration": record.generation, "matchedNodes": n, "conditions": conditions}


# The ProcessTuning condition's reason when issues differ: the one that withholds the most first.
ISSUE_ORDER = (Reason.NO_NODE_POLICY, Reason.PINNING_NOT_ALLOWED, Reason.CPU_SHARE_REACHED, Reason.NOT_PINNED)


def process_tuning_condition(issues: Sequence[ProcessIssue], nodes: Mapping[str, str]) -> tuple[bool, Reason, str]:
    """A PerformancePolicy's ProcessTuning condition (status, reason, message) from what the resolution
    did with its process tuning: `issues` node by node, `nodes` (node -> mode) where it has entries."""
    where = ", ".join(f"{n} ({'Recommend: planned only' if m == NodeTuningMode.RECOMMEND.value else m})"
                      for n, m in sorted(nodes.items()))
    if not issues:
        if not nodes:
            return True, Reason.PLANNED, "no running pod of the target is on a node yet"
        return True, Reason.PLANNED, f"in the NodeTunings of {len(nodes)} nodes: {where}"
    reason = next(r for r in ISSUE_ORDER if any(i.reason is r for i in issues))
    messages = list(dict.fromkeys(i.message for i in issues))
    text = "; ".join(messages[:10]) + (f" (and {len(messages) - 10} more)" if len(messages) > 10 else "")
    return False, reason, text + (f"; applied on {where}" if nodes else "")


def conflicts_annotation(conflicts: Sequence[Conflict]) -> str:
    """The NodeTuning's `kubetune.io/conflicts` annotation: knobs left out because policies disagree."""
    return "; ".join(f"{c.field}: Conflict ({', '.join(f'{p}={v}' for p, v in c.candidates)})"
                     for c in conflicts)[:4096]


def describe_changes(node: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                     why: Mapping[str, str] | None = None) -> list[str]:
    """One line per change between two NodeTuning specs: what, from, to, why."""
    why = why or {}
    if new is None:
        return [f"NodeTuning {node}: deleted (the node is gone)"]
    old = old or {}
    lines = []
    prefix = f"NodeTuning {node}" + (": created" if not old else "")
    if old.get("mode") != new.get("mode"):
        lines.append(f"{prefix}: mode {old.get('mode', 'unset')} -> {new.get('mode')} (why: {why.get('mode', '')})")
    before = {k["key"]: k for k in old.get("knobs") or []}
    after = {k["key"]: k for k in new.get("knobs") or []}
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key), after.get(key)
        if b and a and b["value"] == a["value"] and b.get("policy") == a.get("policy"):
            continue
        reason = f"{a['policy']}: {a.get('reason', '')}" if a else "no policy sets it any more; the agent restores the original"
        lines.append(f"{prefix}: {key} {b['value'] if b else 'unset'} -> {a['value'] if a else 'unset'} (why: {reason})")
    defaults = {"adaptive": {}, "thresholds": NodeThresholds().to_dict()}
    for section in ("adaptive", "thresholds"):
        b, a = old.get(section) or defaults[section], new.get(section) or defaults[section]
        for part in sorted(b.keys() | a.keys()):
            if part != "policy" and b.get(part) != a.get(part):
                lines.append(f"{prefix}: {section}.{part} {json.dumps(b.get(part), sort_keys=True)} -> "
                             f"{json.dumps(a.get(part), sort_keys=True)} (why: {why.get(section, 'no policy sets it')})")
    ident = lambda p: (p.get("podUID"), p.get("containerName"))  # noqa: E731
    pb = {ident(p): p for p in old.get("processes") or []}
    pa = {ident(p): p for p in new.get("processes") or []}
    for key in sorted(pb.keys() | pa.keys(), key=str):
        b, a = pb.get(key), pa.get(key)
        if b == a:
            continue
        p = a or b
        settings = lambda e: {k: v for k, v in (e or {}).items() if k in ("nice", "ioClass", "ioPriority", "cpus")} or "unset"  # noqa: E731
        lines.append(f"{prefix}: process {p['namespace']}/{p['podName']}/{p['containerName']} {settings(b)} -> "
                     f"{settings(a)} (why: {a['policy'] + '; ' + why.get('processes', '') if a else 'pod or policy gone'})")
    return lines
