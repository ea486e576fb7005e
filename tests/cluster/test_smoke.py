"""Smoke tests proving the cluster tier is real: a real API server with RBAC, a scheduler and
controller-manager placing pods on kwok nodes, CRDs and watches, a kopf operator, a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import kubernetes
import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.kubetune.io"},
    "spec": {"group": "smoke.kubetune.io", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                               "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}


@pytest.fixture(scope="module")
def widget_crd(cluster):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.smoke.kubetune.io")
    yield
    cluster.kubectl("delete", "crd", "widgets.smoke.kubetune.io", "--wait=false", check=False)


def test_kwok_nodes_are_ready(cluster):
    nodes = json.loads(cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)["items"]
    assert len(nodes) >= 3
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        assert not node["spec"].get("taints"), "DaemonSets must land on the kwok nodes"


def test_rbac_is_enforced(cluster, namespace):
    """The chart's RBAC can only be tested where RBAC is on: an unprivileged ServiceAccount is refused."""
    sa = f"system:serviceaccount:{namespace}:default"
    result = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, "--as", sa, check=False)
    assert result.stdout.strip() == "no"


def test_deployment_gets_running_pods(cluster, namespace):
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10",
                                                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment))

    def running_pods():
        pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running if len(running) == 2 else None

    pods = wait_for("2 Running pods (scheduler + controller-manager + kwok)", running_pods)
    assert all(p["spec"]["nodeName"].startswith("kwok-node-") for p in pods)
    assert all(p["status"].get("podIP") for p in pods)


def test_custom_object_is_created_and_watched(cluster, namespace, widget_crd):
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(cluster.kubeconfig))
    seen: list[tuple[str, int]] = []

    def watch():
        stream = kubernetes.watch.Watch().stream(api.list_namespaced_custom_object, "smoke.kubetune.io", "v1",
                                                 namespace, "widgets", timeout_seconds=30)
        for event in stream:
            seen.append((event["type"], event["object"]["spec"]["size"]))
            if event["type"] == "MODIFIED":
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(1)  # let the watch open before the object appears
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "smoke.kubetune.io/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": namespace},
         "spec": {"size": 1}}))
    cluster.kubectl("patch", "widget", "w1", "-n", namespace, "--type=merge", "-p", '{"spec":{"size":2}}')
    watcher.join(timeout=40)
    assert seen == [("ADDED", 1), ("MODIFIED", 2)]


KOPF_OPERATOR = textwrap.dedent('''
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.persistence.finalizer = "smoke.kubetune.io/finalizer"
        settings.watching.server_timeout = 30

    @kopf.on.create("smoke.kubetune.io", "v1", "widgets")
    def created(spec, patch, **_):
        patch.status["doubled"] = spec["size"] * 2
''')


def test_kopf_operator_handles_an_object(cluster, namespace, widget_crd, tmp_path):
    (tmp_path / "smoke_operator.py").write_text(KOPF_OPERATOR)
    log = open(tmp_path / "kopf.log", "w")
    operator = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
         str(tmp_path / "smoke_operator.py")], env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "smoke.kubetune.io/v1", "kind": "Widget", "metadata": {"name": "w2", "namespace": namespace},
             "spec": {"size": 21}}))

        def doubled():
            obj = json.loads(cluster.kubectl("get", "widget", "w2", "-n", namespace, "-o", "json").stdout)
            return obj.get("status", {}).get("doubled")

        assert wait_for("the kopf handler's status patch", doubled) == 42
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        # The finalizer kopf added must not block namespace deletion once the operator is gone.
        cluster.kubectl("patch", "widget", "w2", "-n", namespace, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)


def test_prometheus_scrapes_a_target_and_the_client_reads_it(prometheus):
    registry = CollectorRegistry()
    Gauge("kubetune_smoke_value", "A value the test publishes.", registry=registry).set(42)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        prometheus.add_target("smoke", f"127.0.0.1:{server.server_port}")
        client = PrometheusConnect(url=prometheus.url, disable_ssl=True)
        result = wait_for("Prometheus to scrape the smoke target",
                          lambda: client.custom_query('kubetune_smoke_value{job="smoke"}'))
        assert float(result[0]["value"][1]) == 42
    finally:
        prometheus.remove_target("smoke")
        server.shutdown()
