"""The actuator: the only code that changes workloads. It takes typed changes (`decisions.Change`) and
makes them land: in place (pods/resize), by rollout (the pod template), or in place with a rollout
for the pods that cannot be resized. Idempotent: a patch carries a container's full requests and
limits, so repeating it changes nothing.

What to change is decided elsewhere (decisions.py, and `outstanding_changes` below from the recorded
actions); this module only knows how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from kubetune.api.common import parse_quantity
from kubetune.api.performancepolicy import ActionRecord, ScalingMethod, VerificationState
from kubetune.decisions import Change
from kubetune.kube import Kube, KubeError
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef, format_quantity

# The API server's answers to a resize it will not do in place (e.g. a change that needs a restart).
RESIZE_REFUSED = (400, 403, 422)
INFEASIBLE = "Infeasible"

Resources = Mapping[str, Mapping[str, Mapping[str, str]]]  # container -> requests/limits -> resource -> quantity


def resources_patch(changes: Iterable[Change], current: Sequence[ContainerResources]) -> dict[str, dict[str, dict[str, str]]]:
    """The full requests/limits of each changed container, with the changes applied."""
    by_name = {c.name: c for c in current}
    patch: dict[str, dict[str, dict[str, str]]] = {}
    for ch in changes:
        c = by_name.get(ch.container)
        if c is None:
            continue
        entry = patch.setdefault(ch.container, {
            "requests": {r: format_quantity(r, v) for r, v in c.requests.items()},
            "limits": {r: format_quantity(r, v) for r, v in c.limits.items()}})
        entry[ch.value][ch.resource] = format_quantity(ch.resource, ch.new)
    return {name: {k: v for k, v in entry.items() if v} for name, entry in patch.items()}


def recorded_changes(record: ActionRecord, *, undo: bool = False) -> tuple[Change, ...]:
    """An action record's changes as typed changes; `undo` swaps from and to (a rollback)."""
    changes = []
    for ch in record.changes:
        if ch.to is None or (undo and ch.from_ is None):
            continue
        old = float(parse_quantity(ch.from_)) if ch.from_ is not None else None
        new = float(parse_quantity(ch.to))
        changes.append(Change(ch.container, ch.resource.value, ch.value.value, new, old) if undo
                       else Change(ch.container, ch.resource.value, ch.value.value, old, new))
    return tuple(changes)


def desired_values(records: Sequence[ActionRecord]) -> dict[tuple[str, str, str], tuple[float, frozenset[float]]]:
    """(container, resource, value) -> (what kubetune last set, every value it replaced on the way).
    Records are newest first; a rolled-back action set its `from` back."""
    desired: dict[tuple[str, str, str], tuple[float, frozenset[float]]] = {}
    replaced: dict[tuple[str, str, str], set[float]] = {}
    for record in records:
        if not record.applied:
            continue
        rolled_back = record.verification is not None and record.verification.state is VerificationState.ROLLED_BACK
        for ch in recorded_changes(record):
            key = (ch.container, ch.resource, ch.value)
            if ch.old is not None:
                replaced.setdefault(key, set()).add(ch.old)
            if rolled_back:
                replaced.setdefault(key, set()).add(ch.new)
            if key not in desired:
                value = ch.old if rolled_back else ch.new
                if value is not None:
                    desired[key] = (value, frozenset())
    return {key: (value, frozenset(replaced.get(key, ()))) for key, (value, _) in desired.items()}


def _value(resources: ContainerResources, value: str, resource: str) -> float | None:
    return (resources.requests if value == "requests" else resources.limits).get(resource)


def outstanding_changes(records: Sequence[ActionRecord], template: Sequence[ContainerResources],
                        pods: Iterable[PodRecord]) -> dict[str, tuple[Change, ...]]:
    """Running pods that do not have what kubetune set -> the changes that bring them there.

    A pod counts only when it runs with the template's value and that value is one kubetune replaced:
    it came from the unchanged template (an operator stopped between recording and acting, a new pod
    after an in-place resize, a restart). A template the user changed to a new value is the user's
    decision, and pods that run it are left alone."""
    desired = desired_values(records)
    template_by_name = {c.name: c for c in template}
    out: dict[str, tuple[Change, ...]] = {}
    for pod in pods:
        if pod.phase != "Running":
            continue
        changes = []
        for c in pod.containers:
            base = template_by_name.get(c.name)
            for (container, resource, value), (want, replaced) in desired.items():
                if container != c.name or base is None:
                    continue
                have, from_template = _value(c, value, resource), _value(base, value, resource)
                if have is not None and abs(have - want) > 1e-9 and have == from_template and have in replaced:
                    changes.append(Change(container, resource, value, have, want))
        if changes:
            out[pod.name] = tuple(changes)
    return out


@dataclass(frozen=True)
class Applied:
    """How a change landed, in words for status and Events, and whether pods will restart."""

    how: str
    rolled_out: bool = False


class Actuator:
    def __init__(self, kube: Kube):
        self.kube = kube

    def apply(self, target: WorkloadRef, method: ScalingMethod, changes: Sequence[Change],
              current: Sequence[ContainerResources], pods: Iterable[PodRecord]) -> Applied:
        """Make `changes` land on the workload. Raises KubeError when they could not."""
        patch = resources_patch(changes, current)
        if method is ScalingMethod.ROLLOUT:
            self.kube.patch_template(target, patch)
            return Applied("by rollout", rolled_out=True)
        running = [p for p in pods if p.phase == "Running"]
        try:
            for pod in running:
                self.kube.resize_pod(pod.namespace, pod.name, patch)
        except KubeError as e:
            if method is ScalingMethod.IN_PLACE or e.status not in RESIZE_REFUSED:
                raise
            self.kube.patch_template(target, patch)
            return Applied(f"by rollout (in-place resize refused: {e})", rolled_out=True)
        return Applied(f"in place on {len(running)} pods")

    def resize_pods(self, pods: Mapping[str, Sequence[Change]], by_name: Mapping[str, PodRecord]) -> Applied:
        """Bring individual pods to recorded values (each pod's own current resources are the base)."""
        for name, changes in pods.items():
            pod = by_name[name]
            self.kube.resize_pod(pod.namespace, name, resources_patch(changes, pod.containers))
        return Applied(f"in place on {len(pods)} pods ({', '.join(sorted(pods))[:200]})")

    def roll_out(self, target: WorkloadRef, changes: Sequence[Change],
                 template: Sequence[ContainerResources]) -> Applied:
        """Put recorded values into the template, for pods the kubelet could not resize."""
        self.kube.patch_template(target, resources_patch(changes, template))
        return Applied("by rollout", rolled_out=True)


def infeasible_pods(pods: Iterable[PodRecord]) -> list[PodRecord]:
    """Pods whose kubelet refused the last resize (not enough room on the node, or a policy)."""
    return [p for p in pods if p.phase == "Running" and p.resize_pending == INFEASIBLE]
