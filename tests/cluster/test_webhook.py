"""The mutating admission webhook: a pod created after an in-place resize starts with the resized
values (the template, and so Git, still holds the old ones); and it fails open."""

from __future__ import annotations

import base64
import json

import pytest

import localcluster
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
