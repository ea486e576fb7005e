"""nice / ionice / affinity on real processes placed in kubelet-shaped cgroup paths.

This machine runs cgroup v1 (plus an empty v2 ``unified`` mount); kubelet's paths are made in the
``pids`` hierarchy (cgroupfs driver shape) and in the ``name=systemd`` hierarchy (systemd driver
shape), which is all /proc/<pid>/cgroup needs to show them. The processes are the test's own
multi-threaded Python children; everything is killed, removed and restored at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from kubetune_agent.executor import TuningState
from kubetune_agent.process import ProcessTarget, ProcessTuner, read_thread_settings

pytestmark = pytest.mark.host

CGROUP_ROOT = Path("/sys/fs/cgroup")
CHILD = ("import threading, time\n"
         "for _ in range(3): threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
         "print('ready', flush=True); time.sleep(600)\n")


def kubelet_cgroup(driver: str, pod_uid: str, container_id: str) -> Path:
    if driver == "cgroupfs":
        return CGROUP_ROOT / "pids" / "kubepods" / "burstable" / f"pod{pod_uid}" / container_id
    slice_uid = pod_uid.replace("-", "_")
    return (CGROUP_ROOT / "systemd" / "kubepods.slice" / "kubepods-burstable.slice"
            / f"kubepods-burstable-pod{slice_uid}.slice" / f"cri-containerd-{container_id}.scope")


@pytest.fixture
def container(host, request):
    """(pod_uid, container_id, start) where start() runs a 4-thread process inside the cgroup."""
    driver = request.param
    pod_uid, container_id = str(uuid.uuid4()), uuid.uuid4().hex * 2
    path = kubelet_cgroup(driver, pod_uid, container_id)
    hierarchy = CGROUP_ROOT / ("pids" if driver == "cgroupfs" else "systemd")
    if not (hierarchy / "cgroup.procs").exists():
        pytest.skip(f"no cgroup v1 {hierarchy.name} hierarchy at {hierarchy} on this machine")
    created = [p for p in [path, *path.parents] if hierarchy in p.parents and not p.exists()]
    children: list[subprocess.Popen] = []

    def start() -> psutil.Process:
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline().strip() == "ready"
        (path / "cgroup.procs").write_text(str(child.pid))
        return psutil.Process(child.pid)

    try:
        path.mkdir(parents=True, exist_ok=True)
        yield pod_uid, container_id, start
    finally:
        for child in children:
            child.kill()
            child.wait()
        time.sleep(0.1)  # let the kernel release the emptied cgroups
        for directory in sorted(created, key=lambda p: len(p.parts), reverse=True):
            directory.rmdir()


def thread_settings(process: psutil.Process) -> list[dict]:
    return [read_thread_settings(psutil.Process(t.id)) for t in process.threads()]


@pytest.mark.parametrize("container", ["cgroupfs", "systemd"], indirect=True)
def test_every_thread_is_tuned_new_processes_too_and_restored(host, journal, container):
    pod_uid, container_id, start = container
    first = start()
    original = thread_settings(first)
    assert len(original) == 4
    target = ProcessTarget(pod_uid, f"containerd://{container_id}", nice=5, io_class="best-effort",
                           io_priority=6, cpus=(psutil.cpu_count() - 1,), name="ns/pod/app")
    wanted = {"nice": 5, "ioClass": "best-effort", "ioPriority": 6, "cpus": [psutil.cpu_count() - 1]}
    tuner = ProcessTuner(host, journal)

    (result,) = tuner.reconcile([target])
    assert (result.state, result.threads) == (TuningState.APPLIED, 4), result
    assert thread_settings(first) == [wanted] * 4
    assert len(journal.entries("threads")) == 4

    second = start()  # a process started later is picked up on the next cycle
    (result,) = tuner.reconcile([target])
    assert result.threads == 8
    assert thread_settings(second) == [wanted] * 4

    tuner.reconcile([])
    assert thread_settings(first) == original
    assert thread_settings(second) == original  # the same defaults as the first one's
    assert journal.entries("threads") == {}


@pytest.mark.parametrize("container", ["systemd"], indirect=True)
def test_dry_run_and_pod_level_target(host, journal, container):
    pod_uid, _, start = container
    process = start()
    original = thread_settings(process)
    (result,) = ProcessTuner(host, journal).reconcile([ProcessTarget(pod_uid, nice=-3)], dry_run=True)
    assert result.state is TuningState.PLANNED and result.message == "would set nice=-3 on 4 of 4 threads"
    assert thread_settings(process) == original
    (result,) = ProcessTuner(host, journal).reconcile([ProcessTarget(pod_uid, nice=-3)])
    assert [s["nice"] for s in thread_settings(process)] == [-3] * 4
    ProcessTuner(host, journal).reconcile([])
    assert thread_settings(process) == original


@pytest.mark.parametrize("container", ["cgroupfs"], indirect=True)
def test_a_setting_that_leaves_the_plan_gets_its_original_back(host, journal, container):
    """A priority raise under high load ends: the plan keeps the target (ioClass) but names no nice."""
    pod_uid, container_id, start = container
    process = start()
    original = thread_settings(process)
    tuner = ProcessTuner(host, journal)
    raised = ProcessTarget(pod_uid, f"containerd://{container_id}", nice=-5, io_class="best-effort", io_priority=4)
    tuner.reconcile([raised])
    assert [s["nice"] for s in thread_settings(process)] == [-5] * 4
    tuner.reconcile([ProcessTarget(pod_uid, f"containerd://{container_id}", io_class="best-effort", io_priority=4)])
    assert [s["nice"] for s in thread_settings(process)] == [o["nice"] for o in original]
    assert [s["ioPriority"] for s in thread_settings(process)] == [4] * 4
    tuner.reconcile([])
    assert thread_settings(process) == original
