"""The operator's own pod list+watch: PodRecords by owning workload, from paged lists and watch events."""

from __future__ import annotations

import json

import pytest

from kubetune.podwatch import Gone, PodWatch
from kubetune.workloads import WorkloadRef

pytestmark = pytest.mark.unit
API = WorkloadRef("ns", "Deployment", "api")
DB = WorkloadRef("ns", "StatefulSet", "db")


def pod(name, uid, owner=("ReplicaSet", "api-abc12"), namespace="ns", cpu="100m", version="1"):
    meta = {"namespace": namespace, "name": name, "uid": uid, "resourceVersion": version,
            "labels": {"pod-template-hash": "abc12"}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": "n1", "containers": [
        {"name": "app", "resources": {"requests": {"cpu": cpu}}}]}, "status": {"phase": "Running"}}


class Response:
    """What the client returns with _preload_content=False: `.data` for a list, a byte stream for a watch."""

    def __init__(self, data=b"", lines=()):
        self.data = data
        self.chunks = [("".join(json.dumps(line) + "\n" for line in lines)).encode()]
        self.closed = False

    def stream(self, amt=None, decode_content=False):
        yield from self.chunks

    def close(self):
        self.closed = True

    def release_conn(self):
        pass


class Core:
    """CoreV1Api's two pod listings: `pages` answer lists in order, `events` answers a watch."""

    def __init__(self, pages=(), events=()):
        self.pages, self.events, self.calls = list(pages), list(events), []

    def list_pod_for_all_namespaces(self, **kwargs):
        return self._answer(None, kwargs)

    def list_namespaced_pod(self, namespace, **kwargs):
        return self._answer(namespace, kwargs)

    def _answer(self, namespace, kwargs):
        self.calls.append((namespace, kwargs))
        if kwargs.get("watch"):
            return Response(lines=self.events)
        return Response(data=json.dumps(self.pages.pop(0)).encode())


def page(items, version="10", token=None):
    return {"metadata": {"resourceVersion": version, **({"continue": token} if token else {})}, "items": items}


def names(watch, ref):
    return sorted(p.name for p in watch.get(ref, ()))


def test_pods_are_kept_by_owning_workload_and_ownerless_pods_are_not():
    watch = PodWatch(Core())
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    watch.apply("ADDED", pod("api-abc12-y", "u2", cpu="200m"))
    watch.apply("ADDED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    watch.apply("ADDED", pod("bare", "u4", owner=None))
    assert set(watch) == {API, DB} and len(watch) == 2
    assert names(watch, API) == ["api-abc12-x", "api-abc12-y"]
    assert sorted(c.requests["cpu"] for p in watch[API] for c in p.containers) == [0.1, 0.2]
    assert watch.get(WorkloadRef("ns", "Deployment", "other"), ()) == ()


def test_modified_replaces_a_pod_and_deleted_or_orphaned_removes_it():
    watch = PodWatch(Core())
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    watch.apply("ADDED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    watch.apply("MODIFIED", pod("api-abc12-x", "u1", cpu="300m"))
    assert [c.requests["cpu"] for p in watch[API] for c in p.containers] == [0.3]
    watch.apply("MODIFIED", pod("api-abc12-x", "u1", owner=None))  # orphaned: no longer the workload's
    assert API not in watch
    watch.apply("DELETED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    assert len(watch) == 0


def test_a_read_is_a_snapshot_later_events_do_not_change():
    watch = PodWatch(Core())
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    pods = watch[API]
    watch.apply("ADDED", pod("api-abc12-y", "u2"))
    assert [p.name for p in pods] == ["api-abc12-x"]


def test_the_list_is_read_in_pages_and_replaces_only_its_namespace():
    core = Core(pages=[page([pod("api-abc12-x", "u1")], token="next"), page([pod("api-abc12-y", "u2")], version="42")])
    watch = PodWatch(core, ["ns", "other"], page_size=1)
    watch.apply("ADDED", pod("api-abc12-gone", "u0"))  # in ns, but not in the new listing
    watch.apply("ADDED", pod("web-abc12-z", "u9", owner=("ReplicaSet", "web-abc12"), namespace="other"))
    assert watch.list("ns") == "42"
    assert [kwargs for _, kwargs in core.calls] == [
        {"limit": 1, "_preload_content": False, "_request_timeout": (30, 330)},
        {"limit": 1, "_continue": "next", "_preload_content": False, "_request_timeout": (30, 330)}]
    assert names(watch, API) == ["api-abc12-x", "api-abc12-y"]
    assert names(watch, WorkloadRef("other", "Deployment", "web")) == ["web-abc12-z"]
    assert not watch.synced.is_set()  # "other" is not listed yet
    core.pages.append(page([]))
    watch.list("other")
    assert watch.synced.is_set() and set(watch) == {API}


def test_the_watch_applies_events_from_the_listed_version_and_returns_the_last_one():
    core = Core(events=[{"type": "ADDED", "object": pod("api-abc12-x", "u1", version="11")},
                        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                        {"type": "DELETED", "object": pod("api-abc12-x", "u1", version="13")},
                        {"type": "ADDED", "object": pod("db-0", "u3", owner=("StatefulSet", "db"), version="14")}])
    watch = PodWatch(core)
    assert watch.watch(None, "10") == "14"
    namespace, kwargs = core.calls[0]
    assert namespace is None and kwargs["watch"] and kwargs["resource_version"] == "10"
    assert kwargs["allow_watch_bookmarks"] and kwargs["timeout_seconds"] == 300
    assert set(watch) == {DB}


def test_an_expired_version_asks_for_a_new_list():
    core = Core(events=[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}])
    with pytest.raises(Gone):
        PodWatch(core).watch("ns", "10")


def test_the_thread_lists_then_watches_and_signals_synced():
    core = Core(pages=[page([pod("api-abc12-x", "u1")])])
    watch = PodWatch(core)
    watch.start()
    assert watch.synced.wait(5)
    watch.stop()
    assert names(watch, API) == ["api-abc12-x"]
