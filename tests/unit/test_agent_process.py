"""Cgroup path parsing for both kubelet cgroup drivers, and process target validation."""

from __future__ import annotations

import pytest

from kubetune_agent.process import (
    ContainerRef,
    ProcessTarget,
    check_process_target,
    normalise_container_id,
    parse_cgroup_path,
    parse_proc_cgroup,
)

pytestmark = pytest.mark.unit

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UNDERSCORED = UID.replace("-", "_")
CID = "3f" * 32


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # cgroupfs driver
        (f"/kubepods/burstable/pod{UID}/{CID}", ContainerRef(UID, CID)),
        (f"/kubepods/besteffort/pod{UID}/{CID}", ContainerRef(UID, CID)),
        (f"/kubepods/pod{UID}/{CID}", ContainerRef(UID, CID)),  # Guaranteed
        (f"/kubepods/burstable/pod{UID}", ContainerRef(UID, None)),
        # systemd driver: the UID's dashes become underscores
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UNDERSCORED}.slice/"
         f"cri-containerd-{CID}.scope", ContainerRef(UID, CID)),
        (f"/kubepods.slice/kubepods-pod{UNDERSCORED}.slice/crio-{CID}.scope", ContainerRef(UID, CID)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UNDERSCORED}.slice/"
         f"docker-{CID}.scope", ContainerRef(UID, CID)),
        (f"/kubepods.slice/kubepods-pod{UNDERSCORED}.slice/crio-conmon-{CID}.scope",
         ContainerRef(UID, None)),  # conmon is not the container
        # nested under a kind node's own cgroup, upper-case UID
        (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UNDERSCORED.upper()}.slice/"
         f"cri-containerd-{CID}.scope", ContainerRef(UID, CID)),
        ("/system.slice/containerd.service", None),
        ("/", None),
        (f"/kubepods/burstable/podnot-a-uid/{CID}", None),
    ],
    ids=lambda v: str(v)[-40:],
)
def test_parse_cgroup_path(path, expected):
    assert parse_cgroup_path(path) == expected


def test_parse_proc_cgroup_prefers_the_line_naming_the_container():
    text = "\n".join([
        "12:pids:/",
        f"4:memory:/kubepods/burstable/pod{UID}",
        f"3:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}",
        "0::/",
    ])
    assert parse_proc_cgroup(text) == ContainerRef(UID, CID)
    assert parse_proc_cgroup("0::/user.slice/session-1.scope") is None


def test_container_id_from_pod_status():
    assert normalise_container_id(f"containerd://{CID}") == CID
    assert normalise_container_id(CID.upper()) == CID


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (ProcessTarget(UID, nice=-5, io_class="best-effort", io_priority=2, cpus=(0, 1)), None),
        (ProcessTarget(UID, io_class="BestEffort", io_priority=7), None),
        (ProcessTarget(UID, io_class="idle"), None),
        (ProcessTarget(UID, nice=-21), "nice -21 is outside -20..19"),
        (ProcessTarget(UID, nice=20), "nice 20 is outside -20..19"),
        (ProcessTarget(UID, io_class="urgent"), "ioClass 'urgent' is not one of none, realtime, best-effort, idle"),
        (ProcessTarget(UID, io_class="best-effort", io_priority=8), "ioPriority 8 is outside 0..7"),
        (ProcessTarget(UID, io_class="idle", io_priority=3), "ioPriority needs ioClass realtime or best-effort"),
        (ProcessTarget(UID, cpus=(0, 4)), "cpus [0, 4] must be a non-empty subset of 0..3"),
        (ProcessTarget(UID, cpus=()), "cpus [] must be a non-empty subset of 0..3"),
    ],
    ids=lambda v: str(v)[-30:],
)
def test_check_process_target(target, problem):
    assert check_process_target(target, cpu_count=4) == problem


def test_target_matches_pod_or_container():
    ref = ContainerRef(UID, CID)
    assert ProcessTarget(UNDERSCORED).matches(ref)
    assert ProcessTarget(UID, container_id=f"containerd://{CID}").matches(ref)
    assert not ProcessTarget(UID, container_id="ab" * 32).matches(ref)
