"""Process tuning: nice, I/O priority and CPU affinity for the threads of a container's processes.

A container's host PIDs are found through ``/proc/<pid>/cgroup``: kubelet names the cgroup of a
pod ``pod<uid>`` (cgroupfs driver: ``/kubepods/burstable/pod<uid>/<container-id>``) or
``kubepods-<qos>-pod<uid_with_underscores>.slice`` (systemd driver:
``/kubepods.slice/.../cri-containerd-<container-id>.scope``); both are parsed, on cgroup v1 and v2.

Every thread is tuned (nice and ioprio are per thread on Linux; setting the process only covers
its main thread). Before a thread is changed its original settings go to the journal (section
``threads``, one durable write per cycle); a thread the agent tuned is not touched again unless
the target changes, so a process that renices itself is not fought over. New processes and threads
are picked up on the next cycle. When a target leaves the plan, each of its still-living threads
(same start time) gets its originals back.

The agent must run with ``hostPID: true`` so the PIDs read under the host root are the PIDs psutil
acts on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from .errors import AgentError
from .executor import TuningState, journal_blocked
from .hostfs import HostFS
from .journal import Journal

log = logging.getLogger(__name__)

SECTION = "threads"

_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_POD_SEGMENT = re.compile(rf"(?:^|-)pod({_UID})(?:\.slice)?$")
_CONTAINER_SEGMENT = re.compile(r"^(?:(?:cri-containerd|crio|docker|containerd)-)?([0-9a-f]{64})(?:\.scope)?$")

IO_CLASSES = {
    "none": psutil.IOPRIO_CLASS_NONE,
    "realtime": psutil.IOPRIO_CLASS_RT,
    "best-effort": psutil.IOPRIO_CLASS_BE,
    "idle": psutil.IOPRIO_CLASS_IDLE,
}
_IO_CLASS_ALIASES = {"rt": "realtime", "be": "best-effort", "besteffort": "best-effort"}


@dataclass(frozen=True)
class ContainerRef:
    """Pod UID (with dashes) and container ID (64 hex digits; None for the pod-level cgroup)."""

    pod_uid: str
    container_id: str | None


def parse_cgroup_path(path: str) -> ContainerRef | None:
    """The pod and container a kubelet-shaped cgroup path belongs to, or None."""
    segments = [s for s in path.strip().split("/") if s]
    for index, segment in enumerate(segments):
        pod = _POD_SEGMENT.search(segment)
        if pod is None:
            continue
        container = None
        if index + 1 < len(segments):
            match = _CONTAINER_SEGMENT.match(segments[index + 1])
            container = match.group(1) if match else None
        return ContainerRef(normalise_uid(pod.group(1)), container)
    return None


def parse_proc_cgroup(text: str) -> ContainerRef | None:
    """The container of a ``/proc/<pid>/cgroup`` file (``hierarchy:controllers:path`` lines)."""
    found = None
    for line in text.splitlines():
        ref = parse_cgroup_path(line.split(":", 2)[-1])
        if ref is not None and (found is None or ref.container_id):
            found = ref  # prefer a line that names the container over a pod-level one
    return found


def normalise_uid(uid: str) -> str:
    return uid.replace("_", "-").lower()


def normalise_container_id(container_id: str) -> str:
    """``containerd://abc…`` (as in pod status) -> ``abc…``."""
    return container_id.rpartition("://")[2].lower()


@dataclass(frozen=True)
class ProcessTarget:
    """Settings for every thread of one container (or of the whole pod if container_id is None)."""

    pod_uid: str
    container_id: str | None = None
    nice: int | None = None
    io_class: str | None = None
    io_priority: int | None = None
    cpus: tuple[int, ...] | None = None
    name: str = ""  # namespace/pod/container, for logs and status
    reason: str = ""

    def matches(self, ref: ContainerRef) -> bool:
        if normalise_uid(self.pod_uid) != ref.pod_uid:
            return False
        return self.container_id is None or normalise_container_id(self.container_id) == ref.container_id

    def settings(self) -> dict:
        """The settings to enforce, canonical, for comparison with what the journal says we wrote."""
        io_class = _IO_CLASS_ALIASES.get((self.io_class or "").lower(), (self.io_class or "").lower())
        return {"nice": self.nice, "ioClass": io_class or None, "ioPriority": self.io_priority,
                "cpus": sorted(self.cpus) if self.cpus is not None else None}


def check_process_target(target: ProcessTarget, cpu_count: int) -> str | None:
    """Why the target is refused, or None when it is valid."""
    wanted = target.settings()
    if target.nice is not None and not -20 <= target.nice <= 19:
        return f"nice {target.nice} is outside -20..19"
    if wanted["ioClass"] is not None and wanted["ioClass"] not in IO_CLASSES:
        return f"ioClass {target.io_class!r} is not one of {', '.join(IO_CLASSES)}"
    if target.io_priority is not None and not 0 <= target.io_priority <= 7:
        return f"ioPriority {target.io_priority} is outside 0..7"
    if target.io_priority is not None and wanted["ioClass"] not in ("realtime", "best-effort"):
        return "ioPriority needs ioClass realtime or best-effort"
    if target.cpus is not None and (not target.cpus or any(not 0 <= c < cpu_count for c in target.cpus)):
        return f"cpus {list(target.cpus)} must be a non-empty subset of 0..{cpu_count - 1}"
    return None


@dataclass(frozen=True)
class ProcessResult:
    name: str
    pod_uid: str
    container_id: str | None
    state: TuningState
    threads: int = 0
    message: str = ""


class ProcessTuner:
    """Applies ``ProcessTarget`` settings to matching threads and restores them when removed."""

    def __init__(self, fs: HostFS, journal: Journal) -> None:
        self.fs = fs
        self.journal = journal

    def find_threads(self, targets: Sequence[ProcessTarget]) -> dict[int, list[tuple[int, int]]]:
        """For each target index, the (pid, tid) of every thread of its processes on this host."""
        found: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(targets))}
        if not targets:
            return found
        for name in self.fs.list("proc"):
            if not name.isdigit():
                continue
            try:
                ref = parse_proc_cgroup(self.fs.read(f"proc/{name}/cgroup"))
            except OSError:  # the process exited
                continue
            if ref is None:
                continue
            for index, target in enumerate(targets):
                if target.matches(ref):
                    tids = self.fs.list(f"proc/{name}/task")
                    found[index].extend((int(name), int(tid)) for tid in tids if tid.isdigit())
                    break
        return found

    def reconcile(self, targets: Sequence[ProcessTarget], *, dry_run: bool = False) -> list[ProcessResult]:
        blocked = journal_blocked(self.journal)
        if blocked:
            return [ProcessResult(t.name, t.pod_uid, t.container_id, TuningState.FAILED, message=blocked)
                    for t in targets]
        results: list[ProcessResult] = []
        cpu_count = psutil.cpu_count() or 1
        valid: list[ProcessTarget] = []
        for target in targets:
            problem = check_process_target(target, cpu_count)
            if problem:
                results.append(ProcessResult(target.name, target.pod_uid, target.container_id,
                                             TuningState.REFUSED, message=problem))
            else:
                valid.append(target)
        threads = self.find_threads(valid)
        tuned: set[str] = set()
        for index, target in enumerate(valid):
            results.append(self._apply(target, threads[index], dry_run))
            tuned.update(str(tid) for _, tid in threads[index])
        if not dry_run:
            self._restore_untargeted(tuned)
        return results

    def _apply(self, target: ProcessTarget, threads: list[tuple[int, int]], dry_run: bool) -> ProcessResult:
        wanted = target.settings()
        journal = self.journal.entries(SECTION)
        pending: dict[str, tuple[psutil.Process, dict, dict]] = {}
        for pid, tid in threads:
            entry = journal.get(str(tid))
            try:
                thread = psutil.Process(tid)
                start = thread.create_time()
                if entry and entry["startTime"] == start and entry["written"] == wanted:
                    continue  # tuned earlier; not fought over if the process changed it since
                current = read_thread_settings(thread)
            except psutil.Error:
                continue
            if entry is None or entry["startTime"] != start:
                entry = {"pid": pid, "startTime": start, "podUid": normalise_uid(target.pod_uid),
                         "original": current}
            # A setting the plan no longer names (e.g. a priority raise that ended) gets its original back.
            effective = {**wanted, **{k: entry["original"].get(k) for k, v in (entry.get("written") or {}).items()
                                      if v is not None and wanted.get(k) is None}}
            if _differs(current, effective):
                pending[str(tid)] = (thread, {**entry, "written": wanted}, effective)
        summary = ", ".join(f"{k}={v}" for k, v in wanted.items() if v is not None)
        if dry_run:
            return ProcessResult(target.name, target.pod_uid, target.container_id, TuningState.PLANNED,
                                 len(pending), f"would set {summary} on {len(pending)} of "
                                 f"{len(threads)} threads")
        if pending:
            try:
                self.journal.update(SECTION, {tid: entry for tid, (_, entry, _) in pending.items()})
            except (OSError, AgentError) as error:
                # No journal entry, no change: the originals would be lost.
                return ProcessResult(target.name, target.pod_uid, target.container_id, TuningState.FAILED,
                                     len(threads), f"not changed: the originals could not be journaled ({error})")
        failures = []
        for tid, (thread, _, effective) in pending.items():
            try:
                write_thread_settings(thread, effective)
            except (psutil.Error, OSError, ValueError) as error:
                failures.append(f"thread {tid}: {error}")
        if pending:
            log.info("process %s: set %s on %d threads (%s)", target.name or target.pod_uid, summary,
                     len(pending) - len(failures), target.reason or "plan")
        state = TuningState.FAILED if failures else TuningState.APPLIED
        message = "; ".join(failures[:3]) or (f"{len(threads)} threads at {summary}" if threads
                                              else "no processes of this container on the node yet")
        return ProcessResult(target.name, target.pod_uid, target.container_id, state, len(threads), message)

    def _restore_untargeted(self, tuned: set[str]) -> None:
        """Give threads that are no longer targeted their originals back; forget dead threads."""
        leaving = {tid: e for tid, e in self.journal.entries(SECTION).items() if tid not in tuned}
        for tid, entry in leaving.items():
            try:
                thread = psutil.Process(int(tid))
                if thread.create_time() != entry["startTime"]:
                    continue  # the TID was reused by another thread: not ours to touch
                write_thread_settings(thread, entry["original"])
                log.info("process thread %s (pid %s): restored %s, target left the plan",
                         tid, entry["pid"], entry["original"])
            except (psutil.Error, OSError, ValueError):
                continue  # exited: nothing to restore
        if leaving:
            try:
                self.journal.remove(SECTION, *leaving)
            except (OSError, AgentError) as error:  # kept: the next cycle restores them again
                log.warning("process threads %s: journal entries kept: %s", ", ".join(leaving), error)


def read_thread_settings(thread: psutil.Process) -> dict:
    io = thread.ionice()
    io_class = next(name for name, value in IO_CLASSES.items() if value == io.ioclass)
    return {"nice": thread.nice(), "ioClass": io_class, "ioPriority": io.value,
            "cpus": sorted(thread.cpu_affinity())}


def write_thread_settings(thread: psutil.Process, settings: dict) -> None:
    """Set the given (non-None) settings on one thread; psutil acts on the TID itself."""
    if settings.get("nice") is not None:
        thread.nice(settings["nice"])
    if settings.get("ioClass") is not None:
        io_class = IO_CLASSES[settings["ioClass"]]
        with_value = io_class in (psutil.IOPRIO_CLASS_RT, psutil.IOPRIO_CLASS_BE)
        thread.ionice(io_class, settings.get("ioPriority") if with_value else None)
    if settings.get("cpus") is not None:
        thread.cpu_affinity(settings["cpus"])


def _differs(current: dict, wanted: dict) -> bool:
    return any(value is not None and current.get(key) != value for key, value in wanted.items())


__all__ = ["ContainerRef", "ProcessResult", "ProcessTarget", "ProcessTuner",
           "check_process_target", "normalise_container_id", "parse_cgroup_path", "parse_proc_cgroup"]
