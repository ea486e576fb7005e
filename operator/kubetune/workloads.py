"""What the operator keeps of pods and workloads: small frozen records built from API objects, and
the pod -> workload mapping. Pure: API objects (dicts) in, records out.

The index holds these records, not the objects, so the operator's memory stays small at tens of
thousands of pods: a record is a few names and four numbers per container.
"""

from __future__ import annotations

import math
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

from kubetune.api.common import parse_quantity

RESOURCES = ("cpu", "memory")


@dataclass(frozen=True)
class ContainerResources:
    """One container's requests and limits in base units (cores, bytes); None = not set."""

    name: str
    requests: Mapping[str, float]
    limits: Mapping[str, float]


@dataclass(frozen=True)
class PodRecord:
    namespace: str
    name: str
    uid: str
    node: str | None
    phase: str | None
    containers: tuple[ContainerResources, ...]
    resize_pending: str | None = None  # the PodResizePending reason (Deferred / Infeasible), if any
    resize_in_progress: bool = False


@dataclass(frozen=True)
class WorkloadRef:
    namespace: str
    kind: str
    name: str


def _amounts(section: Mapping[str, Any] | None) -> dict[str, float]:
    section = section or {}
    return {r: float(parse_quantity(section[r])) for r in RESOURCES if section.get(r) is not None}


# The pods of a workload run the same containers: one record per distinct (name, requests, limits),
# shared while some pod or template holds it. Records are frozen and their mappings never changed.
_CONTAINERS: weakref.WeakValueDictionary[tuple, ContainerResources] = weakref.WeakValueDictionary()


def resources_key(c: ContainerResources) -> tuple:
    """What makes two containers' resources the same: the name, the requests and the limits."""
    return c.name, tuple(sorted(c.requests.items())), tuple(sorted(c.limits.items()))


def _shared(c: ContainerResources) -> ContainerResources:
    return _CONTAINERS.setdefault(resources_key(c), c)


def container_resources(containers: list[Mapping[str, Any]]) -> tuple[ContainerResources, ...]:
    return tuple(_shared(ContainerResources(sys.intern(c["name"]), _amounts((c.get("resources") or {}).get("requests")),
                                            _amounts((c.get("resources") or {}).get("limits"))))
                 for c in containers)


def pod_record(pod: Mapping[str, Any]) -> PodRecord:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    pending = conditions.get("PodResizePending")
    node, phase = spec.get("nodeName"), status.get("phase")
    # Interned: 10,000 pods name a few namespaces, nodes and phases (one string each, not one a pod).
    return PodRecord(
        namespace=sys.intern(meta["namespace"]), name=meta["name"], uid=meta.get("uid", ""),
        node=sys.intern(node) if node else node, phase=sys.intern(phase) if phase else phase,
        containers=container_resources(spec.get("containers") or []),
        resize_pending=(pending.get("reason") or "Pending") if pending and pending.get("status") == "True" else None,
        resize_in_progress=conditions.get("PodResizeInProgress", {}).get("status") == "True",
    )


def owning_workload(pod: Mapping[str, Any]) -> WorkloadRef | None:
    """The Deployment, StatefulSet or DaemonSet a pod belongs to, from its owner reference.

    A ReplicaSet made by a Deployment is named `<deployment>-<pod-template-hash>`, and the pod carries
    that hash as a label, so the Deployment's name is known without reading the ReplicaSet.
    """
    meta = pod["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None:
        return None
    kind, name = owner["kind"], owner["name"]
    if kind == "ReplicaSet":
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if not template_hash or not name.endswith("-" + template_hash):
            return None  # a bare ReplicaSet: not a workload kubetune resizes
        return WorkloadRef(meta["namespace"], "Deployment", name[: -len(template_hash) - 1])
    if kind in ("StatefulSet", "DaemonSet"):
        return WorkloadRef(meta["namespace"], kind, name)
    return None


def template_containers(workload: Mapping[str, Any]) -> tuple[ContainerResources, ...]:
    return container_resources(workload["spec"]["template"]["spec"].get("containers") or [])


def format_quantity(resource: str, amount: float) -> str:
    """Base units back to the quantity kubectl users read: millicores for CPU, Mi for memory
    (rounded up, so a step never lands below what was computed)."""
    if resource == "cpu":
        return f"{max(1, math.ceil(amount * 1000 - 1e-6))}m"
    return f"{max(1, math.ceil(amount / 2**20 - 1e-9))}Mi"
