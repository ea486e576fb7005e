"""The mutating admission webhook: a pod created after an in-place resize starts with the resized
values (the template, and so Git, still holds the old ones); and it fails open."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid

import pytest

import localcluster
from tests.cluster.test_helm import helm, render  # noqa: F401  (helm is a fixture)
from tests.cluster.test_operator import MI, Operator, deploy, policy, running_pods, template_cpu
from tests.waiting import wait_for
from tests.cluster.test_operator import exporter, exporter_and_address  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster


@pytest.fixture
def webhook(cluster, namespace, tmp_path):
    if not isinstance(cluster, localcluster.LocalCluster):
        pytest.skip("the webhook runs on this machine's loopback, which only the local API server can reach")
    ca, cert, key = localcluster.serving_certificate(tmp_path / "webhook", "kubetune-webhook")
    port = localcluster.free_port()
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"kubetune-{namespace}"},
        "webhooks": [{
            "name": "pods.kubetune.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            # As the chart: an operator outage must never block pod creation.
            "failurePolicy": "Ignore", "timeoutSeconds": 5,
            "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate-pods",
                             "caBundle": base64.b64encode(ca.read_bytes()).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        }],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    yield {"KUBETUNE_WEBHOOK_PORT": str(port), "KUBETUNE_WEBHOOK_CERT_FILE": str(cert),
           "KUBETUNE_WEBHOOK_KEY_FILE": str(key)}
    cluster.kubectl("delete", "mutatingwebhookconfiguration", f"kubetune-{namespace}", check=False)


def pod_cpus(cluster, namespace):
    return sorted(p["spec"]["containers"][0]["resources"]["requests"]["cpu"] for p in running_pods(cluster, namespace, "api"))


def test_new_pods_get_the_in_place_values(cluster, crds, namespace, exporter, prometheus, webhook, tmp_path):
    op = Operator(cluster, prometheus.url, namespace, tmp_path / "operator.log")
    op.env.update(webhook)
    op.start()
    try:
        deploy(cluster, namespace)
        exporter.set_load(namespace, "api", cpu_cores=0.45, memory_bytes=100 * MI)
        policy(cluster, namespace, mode="Auto", scaling={"method": "InPlace", "stepPercent": 20, "cooldown": "10m"},
               verification={"window": "1m"})
        wait_for("both pods resized in place", lambda: pod_cpus(cluster, namespace) == ["600m", "600m"], timeout=120)
        # A pod the controller creates now (here: a scale-up) comes from the unchanged template...
        cluster.kubectl("scale", "deployment", "api", "-n", namespace, "--replicas=3")
        wait_for("three running pods", lambda: len(running_pods(cluster, namespace, "api")) == 3)
        # ... and still starts with the resized values, given by the webhook at admission.
        assert pod_cpus(cluster, namespace) == ["600m", "600m", "600m"]
        assert template_cpu(cluster, namespace) == "500m"
        assert "admission: pod" in op.log_path.read_text()
    finally:
        op.stop()


def test_the_webhook_fails_open(cluster, crds, namespace, webhook):
    # No operator listens on the webhook's port: pods are still created, with the template's values.
    deploy(cluster, namespace, replicas=1)
    assert pod_cpus(cluster, namespace) == ["500m"]


# --- the chart's webhook: fails open, quickly, and never sees kube-system or its own namespace -------


def chart_webhook(helm, release_namespace: str, *values: str) -> dict:
    docs = render(helm, "--set", "webhook.enabled=true", *values, namespace=release_namespace)
    (config,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    return config


def test_chart_webhook_fails_open_within_seconds_and_excludes_system_namespaces(helm):
    extra = {"key": "team", "operator": "Exists"}
    (hook,) = chart_webhook(helm, "kubetune-system", "--set-json",
                            f"webhook.namespaceSelector={json.dumps({'matchExpressions': [extra]})}")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert 1 <= hook["timeoutSeconds"] <= 5
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["kube-system", "kubetune-system"]} in expressions
    assert extra in expressions  # a user's selector narrows further, never replaces the exclusion


class HangingBackend:
    """A webhook backend that accepts connections and never answers (an operator stuck, not down),
    counting the connections the API server opens."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.server.close()
        for conn in self.held:
            conn.close()


def create_pod(cluster, namespace: str, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                     # kwok nodes only: a real kubelet must not run the probe pod in kube-system
                     "nodeSelector": {"type": "kwok"}, "tolerations": [{"operator": "Exists"}]}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))


def test_pods_of_kube_system_and_the_release_namespace_never_wait_for_a_hanging_webhook(cluster, helm):
    """The chart's own webhook configuration, pointed at a backend that hangs: pods in kube-system and
    in the operator's namespace are created without the API server ever calling it (the operator's
    own pods can restart while it is down: no deadlock); a tenant's pod is still created (fail open)."""
    if not isinstance(cluster, localcluster.LocalCluster):
        pytest.skip("the backend runs on this machine's loopback, which only the local API server can reach")
    run = uuid.uuid4().hex[:6]
    release_ns, tenant_ns, mark = f"kt-release-{run}", f"kt-tenant-{run}", f"kubetune.io/e2e-webhook-{run}"
    backend = HangingBackend()
    escaped = mark.replace(".", "\\.")  # helm --set splits keys at dots
    config = chart_webhook(helm, release_ns, "--set", f"webhook.namespaceSelector.matchLabels.{escaped}=yes")
    config["metadata"] = {"name": f"kubetune-hanging-{run}"}
    hook = config["webhooks"][0]
    # The chart reaches the operator through its Service; here the API server reaches this process.
    hook["clientConfig"] = {"url": f"https://127.0.0.1:{backend.port}/mutate-pods"}
    try:
        for ns in (release_ns, tenant_ns):
            cluster.kubectl("create", "namespace", ns)
        # Only namespaces carrying this run's label are selected, so other tests' pods never reach
        # the hanging backend; kube-system and the release namespace carry it too.
        for ns in (release_ns, tenant_ns, "kube-system"):
            cluster.kubectl("label", "namespace", ns, f"{mark}=yes")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        wait_for("the webhook configured", lambda: cluster.kubectl(
            "get", "mutatingwebhookconfiguration", config["metadata"]["name"], check=False).returncode == 0)
        create_pod(cluster, "kube-system", f"kt-probe-{run}")
        create_pod(cluster, release_ns, "operator-restarted")
        assert backend.held == []  # never called for either
        create_pod(cluster, tenant_ns, "tenant")  # waits for the timeout, then is admitted unchanged
        assert len(backend.held) >= 1
        for ns, name in (("kube-system", f"kt-probe-{run}"), (release_ns, "operator-restarted"), (tenant_ns, "tenant")):
            cluster.kubectl("get", "pod", name, "-n", ns)
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", config["metadata"]["name"], "--ignore-not-found",
                        check=False)
        cluster.kubectl("delete", "pod", f"kt-probe-{run}", "-n", "kube-system", "--ignore-not-found", "--wait=false",
                        check=False)
        cluster.kubectl("label", "namespace", "kube-system", f"{mark}-", check=False)
        for ns in (release_ns, tenant_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        backend.close()
