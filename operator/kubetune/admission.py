"""What the mutating admission webhook gives a new pod. Pure.

A workload resized in place keeps its template's resources (Git's objects stay untouched), so a pod
the controller creates later (a restart, a scale-up, a rollout) would start with the template's values.
The webhook gives it what its running siblings were resized to — the values kubetune set — when a
policy in Auto mode resizes the workload in place. The webhook fails open: an operator outage never
blocks pod creation, the pod then starts with the template's values and the loop resizes it later.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from kubetune.api.common import Mode
from kubetune.api.performancepolicy import ScalingMethod
from kubetune.records import PolicyRecord, workload_owners
from kubetune.signals import current_resources
from kubetune.workloads import PodRecord, WorkloadRef, container_resources, format_quantity, owning_workload


def target_policy(ref: WorkloadRef, policies: Iterable[PolicyRecord]) -> PolicyRecord | None:
    """The policy that owns `ref` (the oldest, as in the evaluation loop) if it resizes in place."""
    policy = workload_owners(policies).get(ref)
    if policy is None:
        return None
    if policy.spec.mode is not Mode.AUTO or policy.spec.scaling.method is ScalingMethod.ROLLOUT:
        return None
    return policy


def new_pod_containers(pod: Mapping[str, Any], policies: Iterable[PolicyRecord],
                       pods_by_workload: Mapping[WorkloadRef, Iterable[PodRecord]]) -> tuple[list[dict], str] | None:
    """The pod's containers with their siblings' resources, and why; None = leave the pod alone."""
    ref = owning_workload(pod)
    if ref is None or target_policy(ref, policies) is None:
        return None
    own = container_resources(pod["spec"].get("containers") or [])
    current = {c.name: c for c in current_resources(list(pods_by_workload.get(ref, ())), own)}
    containers, changed = [], []
    for container, res in zip(pod["spec"]["containers"], own):
        want = current.get(res.name)
        if want is None or (want.requests, want.limits) == (res.requests, res.limits):
            containers.append(dict(container))
            continue
        resources = {"requests": {r: format_quantity(r, v) for r, v in want.requests.items()},
                     "limits": {r: format_quantity(r, v) for r, v in want.limits.items()}}
        containers.append({**container, "resources": {k: v for k, v in resources.items() if v}})
        changed.append(res.name)
    if not changed:
        return None
    return containers, f"{ref.kind} {ref.name} was resized in place; containers {', '.join(changed)} get the running pods' resources"


# The kernel's defaults for the minimum and default TCP buffer; kubetune sets only the maximum.
TCP_RMEM_DEFAULTS = (4096, 131072)
TCP_WMEM_DEFAULTS = (4096, 16384)


def socket_buffer_sysctls(pod: Mapping[str, Any], policies: Iterable[PolicyRecord]) -> list[dict[str, str]] | None:
    """The pod's securityContext.sysctls with the policy's TCP buffer ceilings (net.ipv4.tcp_rmem and
    tcp_wmem are namespaced, and allowed as safe sysctls since Kubernetes 1.32); None = no change.
    Only for an Auto policy: Recommend and Off change nothing."""
    ref = owning_workload(pod)
    owners = sorted((p for p in policies if p.spec and ref and p.target == ref), key=lambda p: (p.created, p.name))
    if not owners or owners[0].spec.mode is not Mode.AUTO or not owners[0].spec.process_tuning:
        return None
    buffers = owners[0].spec.process_tuning.socket_buffers
    if not buffers:
        return None
    wanted = {}
    if buffers.receive_max_bytes:
        wanted["net.ipv4.tcp_rmem"] = " ".join(map(str, (*TCP_RMEM_DEFAULTS, buffers.receive_max_bytes)))
    if buffers.send_max_bytes:
        wanted["net.ipv4.tcp_wmem"] = " ".join(map(str, (*TCP_WMEM_DEFAULTS, buffers.send_max_bytes)))
    existing = list(((pod.get("spec") or {}).get("securityContext") or {}).get("sysctls") or [])
    # The pod's own settings win: a team that set a sysctl itself meant it.
    names = {s["name"] for s in existing}
    added = [{"name": k, "value": v} for k, v in wanted.items() if k not in names]
    return existing + added if added else None
