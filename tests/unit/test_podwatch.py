"""The operator's own pod list+watch: PodRecords by owning workload, from paged lists and watch events."""

from __future__ import annotations

import json

import pytest

from kubetune.kube import ApiClient
from kubetune.podwatch import Gone, PodWatch
from kubetune.workloads import WorkloadRef
from tests.unit.apistub import ApiStub

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


class Cluster(ApiStub):
    """The pod list and watch endpoints of an API server (a local stub: the paging and the ERROR
    event must come in a given order): `pages` answer lists in order, `events` answers a watch."""

    def __init__(self, pages=(), events=()):
        super().__init__(self._answer)
        self.pages, self.events = list(pages), list(events)

    def _answer(self, request):
        if request.query.get("watch") == "true":
            return 200, self.events
        return 200, self.pages.pop(0)

    def api(self):
        return ApiClient(self.url)


def page(items, version="10", token=None):
    return {"metadata": {"resourceVersion": version, **({"continue": token} if token else {})}, "items": items}


def names(watch, ref):
    return sorted(p.name for p in watch.get(ref, ()))


def test_pods_are_kept_by_owning_workload_and_ownerless_pods_are_not():
    watch = PodWatch(ApiClient("http://127.0.0.1:9"))  # never called
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    watch.apply("ADDED", pod("api-abc12-y", "u2", cpu="200m"))
    watch.apply("ADDED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    watch.apply("ADDED", pod("bare", "u4", owner=None))
    assert set(watch) == {API, DB} and len(watch) == 2
    assert names(watch, API) == ["api-abc12-x", "api-abc12-y"]
    assert sorted(c.requests["cpu"] for p in watch[API] for c in p.containers) == [0.1, 0.2]
    assert watch.get(WorkloadRef("ns", "Deployment", "other"), ()) == ()


def test_modified_replaces_a_pod_and_deleted_or_orphaned_removes_it():
    watch = PodWatch(ApiClient("http://127.0.0.1:9"))  # never called
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    watch.apply("ADDED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    watch.apply("MODIFIED", pod("api-abc12-x", "u1", cpu="300m"))
    assert [c.requests["cpu"] for p in watch[API] for c in p.containers] == [0.3]
    watch.apply("MODIFIED", pod("api-abc12-x", "u1", owner=None))  # orphaned: no longer the workload's
    assert API not in watch
    watch.apply("DELETED", pod("db-0", "u3", owner=("StatefulSet", "db")))
    assert len(watch) == 0


def test_pods_with_the_same_resources_share_one_container_record_and_a_resize_gets_its_own():
    # Memory at 10,000 pods (issue 12): 1,143 bytes a pod record before, 358 with shared records.
    watch = PodWatch(ApiClient("http://127.0.0.1:9"))  # never called
    for name, uid, cpu in (("api-abc12-x", "u1", "100m"), ("api-abc12-y", "u2", "100m"), ("api-abc12-z", "u3", "200m")):
        watch.apply("ADDED", json.loads(json.dumps(pod(name, uid, cpu=cpu))))  # fresh strings, as read
    x, y, z = sorted(watch[API], key=lambda p: p.name)
    assert x.containers[0] is y.containers[0] and x.namespace is y.namespace and x.node is y.node
    assert z.containers[0] is not x.containers[0] and z.containers[0].requests == {"cpu": 0.2}
    watch.apply("MODIFIED", pod("api-abc12-x", "u1", cpu="200m"))  # resized in place
    assert [p.containers[0].requests["cpu"] for p in sorted(watch[API], key=lambda p: p.name)] == [0.2, 0.1, 0.2]


def test_a_read_is_a_snapshot_later_events_do_not_change():
    watch = PodWatch(ApiClient("http://127.0.0.1:9"))  # never called
    watch.apply("ADDED", pod("api-abc12-x", "u1"))
    pods = watch[API]
    watch.apply("ADDED", pod("api-abc12-y", "u2"))
    assert [p.name for p in pods] == ["api-abc12-x"]


def test_the_list_is_read_in_pages_and_replaces_only_its_namespace():
    with Cluster(pages=[page([pod("api-abc12-x", "u1")], token="next"),
                        page([pod("api-abc12-y", "u2")], version="42")]) as cluster:
        watch = PodWatch(cluster.api(), ["ns", "other"], page_size=1)
        watch.apply("ADDED", pod("api-abc12-gone", "u0"))  # in ns, but not in the new listing
        watch.apply("ADDED", pod("web-abc12-z", "u9", owner=("ReplicaSet", "web-abc12"), namespace="other"))
        assert watch.list("ns") == "42"
        assert [(r.path, r.query) for r in cluster.requests] == [
            ("/api/v1/namespaces/ns/pods", {"limit": "1"}),
            ("/api/v1/namespaces/ns/pods", {"limit": "1", "continue": "next"})]
        assert names(watch, API) == ["api-abc12-x", "api-abc12-y"]
        assert names(watch, WorkloadRef("other", "Deployment", "web")) == ["web-abc12-z"]
        assert not watch.synced.is_set()  # "other" is not listed yet
        cluster.pages.append(page([]))
        watch.list("other")
    assert watch.synced.is_set() and set(watch) == {API}


def test_the_watch_applies_events_from_the_listed_version_and_returns_the_last_one():
    with Cluster(events=[{"type": "ADDED", "object": pod("api-abc12-x", "u1", version="11")},
                         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                         {"type": "DELETED", "object": pod("api-abc12-x", "u1", version="13")},
                         {"type": "ADDED", "object": pod("db-0", "u3", owner=("StatefulSet", "db"), version="14")}]) \
            as cluster:
        watch = PodWatch(cluster.api())
        assert watch.watch(None, "10") == "14"
    request = cluster.requests[0]
    assert request.path == "/api/v1/pods"
    assert request.query == {"watch": "true", "resourceVersion": "10", "allowWatchBookmarks": "true",
                             "timeoutSeconds": "300"}
    assert set(watch) == {DB}


def test_an_expired_version_asks_for_a_new_list():
    with Cluster(events=[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]) as cluster:
        with pytest.raises(Gone):
            PodWatch(cluster.api()).watch("ns", "10")


def test_the_thread_lists_then_watches_and_signals_synced():
    with Cluster(pages=[page([pod("api-abc12-x", "u1")])]) as cluster:
        watch = PodWatch(cluster.api())
        watch.start()
        assert watch.synced.wait(5)
        watch.stop()
    assert names(watch, API) == ["api-abc12-x"]
