"""Pods without kopf: a list+watch per namespace (or one for the cluster) in a thread, keeping only
the `PodRecord`s of pods that a workload owns, by that workload. Part of the Kubernetes interface.

Why not a kopf index, like the other objects: kopf gives every object a worker task, and at start-up
every worker waits on one shared condition until all objects are indexed, which wakes all of them
again for each object indexed — quadratic: 10,000 pods did not finish indexing in 6 minutes on two
CPUs, and the operator held 570 MiB. Here a pod costs one JSON parse and one small record; the list
is read in pages, so only a page of pod JSON is alive at a time.

The records are a `Mapping[WorkloadRef, tuple[PodRecord, ...]]`, the shape `cluster_view()` and the
webhook read (a kopf index maps a key to a collection of values). The watch thread writes, the event
loop reads; one lock covers both, and a read returns a tuple that later events do not change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kubetune.kube import ApiClient, ApiError, Gone
from kubetune.workloads import PodRecord, WorkloadRef, owning_workload, pod_record

log = logging.getLogger(__name__)


class PodWatch(Mapping[WorkloadRef, tuple[PodRecord, ...]]):
    def __init__(self, api: ApiClient, namespaces: Iterable[str] = (), *, page_size: int = 100,
                 server_timeout: int = 300, client_timeout: float = 330, connect_timeout: float = 30):
        self.api = api
        self.scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)  # None: the whole cluster
        self.page_size, self.server_timeout = page_size, server_timeout
        self.request_timeout = (connect_timeout, client_timeout)
        self._lock = threading.Lock()
        self._by_uid: dict[str, tuple[WorkloadRef, PodRecord]] = {}
        self._by_ref: dict[WorkloadRef, dict[str, PodRecord]] = {}
        self._listed: set[str | None] = set()
        self.synced = threading.Event()  # every scope listed once
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- the Mapping the loops read ----------------------------------------------------------------

    def __getitem__(self, ref: WorkloadRef) -> tuple[PodRecord, ...]:
        with self._lock:
            return tuple(self._by_ref[ref].values())

    def __iter__(self) -> Iterator[WorkloadRef]:
        with self._lock:
            return iter(list(self._by_ref))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_ref)

    # --- updates: from the watch threads, and from tests -------------------------------------------

    def _put(self, uid: str, ref: WorkloadRef | None, record: PodRecord | None) -> None:
        """Set or remove one pod (lock held)."""
        old = self._by_uid.pop(uid, None)
        if old is not None:
            pods = self._by_ref[old[0]]
            del pods[uid]
            if not pods:
                del self._by_ref[old[0]]
        if ref is not None and record is not None:
            self._by_uid[uid] = (ref, record)
            self._by_ref.setdefault(ref, {})[uid] = record

    def apply(self, event_type: str, pod: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of one pod."""
        uid = pod["metadata"]["uid"]
        ref = None if event_type == "DELETED" else owning_workload(pod)
        record = pod_record(pod) if ref is not None else None
        with self._lock:
            self._put(uid, ref, record)

    def replace(self, scope: str | None, pods: Iterable[tuple[str, WorkloadRef, PodRecord]]) -> None:
        """A scope's full listing (uid, workload, record): pods of the scope not in it are gone."""
        listed = {uid: (ref, record) for uid, ref, record in pods}
        with self._lock:
            for uid, (ref, record) in list(self._by_uid.items()):
                if (scope is None or record.namespace == scope) and uid not in listed:
                    self._put(uid, None, None)
            for uid, (ref, record) in listed.items():
                self._put(uid, ref, record)
            self._listed.add(scope)
            if self._listed.issuperset(self.scopes):
                self.synced.set()

    async def wait_synced(self) -> None:
        while not self.synced.is_set():
            await asyncio.sleep(0.2)

    # --- the watch threads ---------------------------------------------------------------------------

    def start(self) -> None:
        for scope in self.scopes:
            thread = threading.Thread(target=self._run, args=(scope,), name=f"podwatch-{scope or 'cluster'}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()  # the threads are daemons: a watch in progress ends with the process at worst

    @staticmethod
    def _path(scope: str | None) -> str:
        return "/api/v1/pods" if scope is None else f"/api/v1/namespaces/{scope}/pods"

    def _run(self, scope: str | None) -> None:
        version, delay = None, 1.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self.list(scope)
                version = self.watch(scope, version)
                delay = 1.0
                self._stop.wait(0.1)  # as kopf: no tight loop if the server ends watches at once
            except Gone:
                version = None
            except Exception as e:  # the API server restarting, a network blip: back off and go on
                log.warning("pods in %s: %s; again in %.0f s", scope or "the cluster", e, delay)
                if isinstance(e, ApiError) and e.status == 410:
                    version = None
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def list(self, scope: str | None) -> str:
        """List the scope's pods a page at a time; returns the list's resourceVersion."""
        records: list[tuple[str, WorkloadRef, PodRecord]] = []
        token = None
        while True:
            params = {"limit": self.page_size, **({"continue": token} if token else {})}
            page = self.api.call("GET", self._path(scope), params=params, timeout=self.request_timeout)
            for pod in page.get("items") or []:
                ref = owning_workload(pod)
                if ref is not None:
                    records.append((pod["metadata"]["uid"], ref, pod_record(pod)))
            token = page["metadata"].get("continue")
            if not token:
                self.replace(scope, records)
                return page["metadata"]["resourceVersion"]

    def watch(self, scope: str | None, version: str) -> str:
        """Follow events from `version` until the server ends the watch; returns the last version seen."""
        events = self.api.watch(self._path(scope), {"resourceVersion": version, "allowWatchBookmarks": "true",
                                                    "timeoutSeconds": self.server_timeout}, self.request_timeout)
        try:
            for event in events:
                if self._stop.is_set():
                    break
                kind, pod = event.get("type"), event.get("object") or {}
                version = pod["metadata"].get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(kind, pod)
        finally:
            events.close()  # the stream's connection, also when stopped mid-watch
        return version
