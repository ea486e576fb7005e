"""Node-scoped agent credentials against the real API server: the chart's ValidatingAdmissionPolicy
(templates/agent-node-restriction.yaml) lets the agent's ServiceAccount write the status of the
NodeTuning named after the node its token is bound to, and nothing else — as NodeRestriction does for
kubelets. The tokens are real TokenRequests bound to pods that sit on kwok nodes: the API server puts the
pod's node in the token, and in the caller's extra info as authentication.kubernetes.io/node-name.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

import localcluster
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubetune"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
# The chart objects this needs: the agent's ServiceAccount, its RBAC, and the policy under test.
TEMPLATES = ("templates/serviceaccounts.yaml", "templates/rbac.yaml", "templates/agent-node-restriction.yaml")


@pytest.fixture
def agent_chart(cluster, crds, namespace):
    """The chart's agent ServiceAccount, RBAC and node restriction applied (not a whole release: no pod
    of the chart is needed to mint its tokens); returns the agent ServiceAccount's name."""
    release = f"kc-{uuid.uuid4().hex[:6]}"
    show = [arg for t in TEMPLATES for arg in ("--show-only", t)]
    rendered = subprocess.run([localcluster.binary("helm"), "template", release, str(CHART), "--namespace", namespace,
                               "--kube-version", "1.35.0", *show], capture_output=True, text=True, env=cluster.env,
                              check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    cluster.kubectl("apply", "-f", "-", input=rendered)
    sa = next(d["metadata"]["name"] for d in docs
              if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-agent"))
    yield sa
    cluster_wide = [f"{d['kind'].lower()}/{d['metadata']['name']}" for d in docs if "namespace" not in d["metadata"]]
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", *cluster_wide, check=False)


@pytest.fixture
def node_tunings(cluster, crds):
    """Two kwok nodes, each with its NodeTuning (created here when the session has none yet)."""
    nodes = sorted(cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout.split())[:2]
    assert len(nodes) == 2, f"two nodes needed, found {nodes}"
    created = []
    for node in nodes:
        if cluster.kubectl("get", "nodetuning", node, check=False).returncode:
            cluster.kubectl("create", "-f", "-", input=json.dumps(
                {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": node}, "spec": {}}))
            created.append(node)
    yield nodes
    if created:
        cluster.kubectl("delete", "nodetuning", *created, "--ignore-not-found", check=False)


def pod_on(cluster, namespace: str, sa: str, node: str) -> str:
    """A pod of the agent's ServiceAccount bound to `node` (nodeName set: no scheduling to wait for)."""
    name = f"agent-{node}"[:60]
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"serviceAccountName": sa, "nodeName": node, "automountServiceAccountToken": False,
                 "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "agent", "image": "kubetune/kubetune:test"}]}}))
    return name


def token(cluster, namespace: str, sa: str, pod: str | None = None) -> str:
    bound = ["--bound-object-kind", "Pod", "--bound-object-name", pod] if pod else []
    return cluster.kubectl("create", "token", sa, "-n", namespace, "--duration", "10m", *bound).stdout.strip()


def as_token(cluster, tmp_path: Path, bearer: str):
    """kubectl authenticating with `bearer` only (the session's kubeconfig carries an admin client cert,
    which the API server would prefer)."""
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cl = config["clusters"][0]["cluster"]
    ca = tmp_path / f"ca-{uuid.uuid4().hex[:6]}.crt"
    if "certificate-authority-data" in cl:
        ca.write_bytes(base64.b64decode(cl["certificate-authority-data"]))
    else:
        ca.write_text(Path(cl["certificate-authority"]).read_text())

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([localcluster.binary("kubectl"), "--kubeconfig", "/dev/null", "--server", cl["server"],
                               "--certificate-authority", str(ca), "--token", bearer, *args],
                              capture_output=True, text=True, timeout=60)
    return kubectl


def patch_status(kubectl, node: str) -> subprocess.CompletedProcess:
    body = {"status": {"heartbeatTime": "2026-11-29T12:00:00Z"}}
    return kubectl("patch", "nodetuning", node, "--subresource", "status", "--type", "merge", "-p", json.dumps(body))


def test_agent_token_writes_only_its_own_nodes_nodetuning(cluster, namespace, agent_chart, node_tunings, tmp_path):
    node_a, node_b = node_tunings
    on_a = as_token(cluster, tmp_path, token(cluster, namespace, agent_chart, pod_on(cluster, namespace, agent_chart, node_a)))
    # The API server (1.35) names the pod's node in the caller's extra info; the policy relies on it.
    whoami = json.loads(on_a("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["extra"][NODE_NAME_KEY] == [node_a]

    # A new policy is enforced once the API server's informer has it (about a second).
    other = wait_for("node B's NodeTuning refused to node A's agent",
                     lambda: (done := patch_status(on_a, node_b)).returncode and done, timeout=30)
    assert "forbidden" in other.stderr.lower(), other.stderr
    assert f"may write only NodeTuning {node_a}, not {node_b}" in other.stderr
    # RBAC still lets it read (admission sees no reads), and never write the spec.
    assert on_a("get", "nodetuning", node_b).returncode == 0
    own = patch_status(on_a, node_a)
    assert own.returncode == 0, own.stderr


def test_agent_token_without_a_node_writes_nothing(cluster, namespace, agent_chart, node_tunings, tmp_path):
    node_a, _ = node_tunings
    unbound = as_token(cluster, tmp_path, token(cluster, namespace, agent_chart))
    assert NODE_NAME_KEY not in json.loads(unbound("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"].get("extra", {})
    refused = wait_for("an unbound agent token refused", lambda: (done := patch_status(unbound, node_a)).returncode and done,
                       timeout=30)
    assert "carry no node" in refused.stderr, refused.stderr


def test_other_service_accounts_are_not_restricted_by_it(cluster, namespace, agent_chart, node_tunings):
    # The admin (the operator has its own ServiceAccount, matched by RBAC only) writes any NodeTuning's status.
    _, node_b = node_tunings
    done = cluster.kubectl("patch", "nodetuning", node_b, "--subresource", "status", "--type", "merge", "-p",
                           json.dumps({"status": {"heartbeatTime": "2026-11-29T12:00:00Z"}}), check=False)
    assert done.returncode == 0, done.stderr
