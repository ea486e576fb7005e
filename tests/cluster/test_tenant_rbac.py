"""The chart's tenant ClusterRoles (templates/tenant-rbac.yaml) against the real API server: aggregated
by kube-controller-manager into `edit`/`admin` and `view`, so a user bound to `edit` in one namespace
manages PerformancePolicies there and nowhere else, reads but never writes their status, and a `view`
user only reads."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

import localcluster
from tests.cluster.test_helm import can_i
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubetune"
PP = "performancepolicies.kubetune.io"


@pytest.fixture
def tenant_roles(cluster, crds, namespace):
    rendered = subprocess.run([localcluster.binary("helm"), "template", f"tr-{uuid.uuid4().hex[:6]}", str(CHART),
                               "--namespace", namespace, "--kube-version", "1.35.0",
                               "--show-only", "templates/tenant-rbac.yaml"],
                              capture_output=True, text=True, env=cluster.env, check=True).stdout
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d]
    cluster.kubectl("apply", "-f", "-", input=rendered)
    yield names
    cluster.kubectl("delete", "clusterrole", *names, "--ignore-not-found", "--wait=false", check=False)


def may(cluster, user: str, verb: str, resource: str, namespace: str, subresource: str = "") -> bool:
    return can_i(cluster, user, verb, resource, subresource, namespace)


def bind(cluster, namespace: str, user: str, role: str) -> None:
    cluster.kubectl("create", "rolebinding", f"{user}-{role}", "-n", namespace, f"--clusterrole={role}", f"--user={user}")


def test_edit_and_view_in_one_namespace(cluster, tenant_roles, namespace):
    other = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", other)
    try:
        editor, viewer = f"alice-{uuid.uuid4().hex[:4]}", f"bob-{uuid.uuid4().hex[:4]}"
        bind(cluster, namespace, editor, "edit")
        bind(cluster, namespace, viewer, "view")
        # The aggregation controller copies the rules into edit/admin/view within a moment.
        wait_for("edit aggregates the tenant role", lambda: may(cluster, editor, "create", PP, namespace), timeout=60)
        wait_for("view aggregates the tenant role", lambda: may(cluster, viewer, "list", PP, namespace), timeout=60)
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert may(cluster, editor, verb, PP, namespace), f"edit cannot {verb}"
            assert not may(cluster, editor, verb, PP, other), f"edit can {verb} in a namespace it is not bound in"
        assert may(cluster, editor, "get", PP, namespace, "status")
        for verb in ("update", "patch"):
            assert not may(cluster, editor, verb, PP, namespace, "status"), f"edit can {verb} status"
        for verb in ("get", "list", "watch"):
            assert may(cluster, viewer, verb, PP, namespace), f"view cannot {verb}"
        for verb in ("create", "update", "patch", "delete"):
            assert not may(cluster, viewer, verb, PP, namespace), f"view can {verb}"
        # Cluster-scoped kubetune objects stay with cluster admins.
        for resource in ("nodetuningpolicies.kubetune.io", "nodetunings.kubetune.io"):
            assert not may(cluster, editor, "create", resource, namespace)
            assert not may(cluster, editor, "patch", resource, namespace)
        edit = json.loads(cluster.kubectl("get", "clusterrole", "edit", "-o", "json").stdout)
        assert any(PP.split(".")[0] in r.get("resources", []) for r in edit["rules"])
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
