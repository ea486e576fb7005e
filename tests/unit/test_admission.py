"""What the admission webhook gives a new pod."""

from __future__ import annotations

import pytest

from kubetune.admission import new_pod_containers
from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.records import PolicyRecord
from kubetune.workloads import ContainerResources, PodRecord, WorkloadRef

pytestmark = pytest.mark.unit
REF = WorkloadRef("ns", "Deployment", "api")


def new_pod(cpu="500m"):
    return {"metadata": {"namespace": "ns", "generateName": "api-abc12-", "labels": {"pod-template-hash": "abc12"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "api-abc12", "controller": True}]},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}}


def policy(mode="Auto", method="InPlace"):
    spec = PerformancePolicySpec.model_validate({"targetRef": {"kind": "Deployment", "name": "api"}, "mode": mode,
                                                 "scaling": {"method": method}})
    return PolicyRecord("ns", "p", "uid", 1, "2026-01-01T00:00:00Z", spec, None, {})


def siblings(cpu):
    return {REF: [PodRecord("ns", f"api-abc12-{i}", "u", "n", "Running", (ContainerResources("app", {"cpu": cpu}, {}),))
                  for i in range(2)]}


def test_a_new_pod_gets_its_resized_siblings_values():
    containers, why = new_pod_containers(new_pod(), [policy()], siblings(0.6))
    assert containers[0]["resources"] == {"requests": {"cpu": "600m"}}
    assert containers[0]["image"] == "x"  # everything else is kept
    assert "resized in place" in why


@pytest.mark.parametrize("policies,pods", [
    ([policy(mode="Recommend")], siblings(0.6)),
    ([policy(method="Rollout")], siblings(0.6)),
    ([], siblings(0.6)),
    ([policy()], siblings(0.5)),  # siblings run with the template's values: nothing to give
    ([policy()], {}),  # no siblings (a full restart): the template's values
], ids=["recommend-mode", "rollout-method", "no-policy", "same-values", "no-siblings"])
def test_pods_are_left_alone(policies, pods):
    assert new_pod_containers(new_pod(), policies, pods) is None


def test_socket_buffer_ceilings_become_pod_sysctls():
    from kubetune.admission import socket_buffer_sysctls
    spec = PerformancePolicySpec.model_validate({
        "targetRef": {"kind": "Deployment", "name": "api"}, "mode": "Auto",
        "processTuning": {"socketBuffers": {"receiveMaxBytes": 16777216, "sendMaxBytes": 8388608}}})
    record = PolicyRecord("ns", "p", "uid", 1, "2026-01-01T00:00:00Z", spec, None, {})
    pod = new_pod()
    pod["spec"]["securityContext"] = {"sysctls": [{"name": "net.ipv4.tcp_wmem", "value": "4096 65536 1048576"}]}
    assert socket_buffer_sysctls(pod, [record]) == [
        {"name": "net.ipv4.tcp_wmem", "value": "4096 65536 1048576"},  # the pod's own setting wins
        {"name": "net.ipv4.tcp_rmem", "value": "4096 131072 16777216"}]
    recommend = PolicyRecord("ns", "p", "uid", 1, "2026-01-01T00:00:00Z",
                             spec.model_copy(update={"mode": policy(mode="Recommend").spec.mode}), None, {})
    assert socket_buffer_sysctls(new_pod(), [recommend]) is None
