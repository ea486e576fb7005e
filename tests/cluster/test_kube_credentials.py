"""The real API server accepts what kube.py's one loader builds (the operator's, the agent's and the CLIs'
credentials): the test cluster's kubeconfig as it is, the same certificates inline as data, a
ServiceAccount token, an exec credential plugin that asks kubectl for one, and the in-cluster form
(token file, ca.crt, KUBERNETES_SERVICE_HOST/PORT). Each identity is confirmed by a SelfSubjectReview:
the server says who it authenticated."""

from __future__ import annotations

import base64
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

import localcluster  # deploy/local, on the path through tests/conftest.py
from kubetune import kube
from kubetune.kube import KubeError, load_api_client

pytestmark = pytest.mark.cluster

REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def who(client: kube.ApiClient) -> str:
    answer = kube.send(client, "review self", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", REVIEW)
    return answer["status"]["userInfo"]["username"]


def kubeconfig(path: Path, server: str, ca: bytes, user: dict) -> str:
    path.write_text(yaml.safe_dump({
        "current-context": "t", "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
        "clusters": [{"name": "t", "cluster": {"server": server,
                                               "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "u", "user": user}]}))
    return str(path)


@pytest.fixture
def admin(cluster):
    return load_api_client(cluster.kubeconfig)


def test_the_cluster_kubeconfig_as_it_is(admin):
    assert who(admin)  # whoever the kubeconfig names; the server accepted its credentials
    assert kube.send(admin, "list nodes", "GET", "/api/v1/nodes")["kind"] == "NodeList"


def test_client_certificate_and_ca_as_inline_data(cluster, admin, tmp_path):
    credentials = admin.auth.current()
    if credentials.cert is None:
        pytest.skip("this cluster's kubeconfig authenticates without a client certificate")
    cert, key = (Path(p).read_bytes() for p in credentials.cert)
    path = kubeconfig(tmp_path / "config", admin.server, Path(admin.ca_path).read_bytes(),
                      {"client-certificate-data": base64.b64encode(cert).decode(),
                       "client-key-data": base64.b64encode(key).decode()})
    assert who(load_api_client(path)) == who(admin)


def test_a_service_account_token_and_its_permissions(cluster, admin, namespace, tmp_path):
    token = cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    client = load_api_client(kubeconfig(tmp_path / "config", admin.server, Path(admin.ca_path).read_bytes(),
                                        {"token": token}))
    assert who(client) == f"system:serviceaccount:{namespace}:default"
    with pytest.raises(KubeError) as raised:  # authenticated, not authorised: the 403 is named, not retried
        kube.send(client, "list nodes", "GET", "/api/v1/nodes")
    assert raised.value.status == 403 and str(raised.value).startswith("list nodes: nodes is forbidden")


def test_an_exec_credential_plugin(cluster, admin, namespace, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(textwrap.dedent(f"""\
        import json, subprocess
        token = subprocess.run([{localcluster.binary("kubectl")!r}, "--kubeconfig", {cluster.kubeconfig!r},
                                "create", "token", "default", "-n", {namespace!r}],
                               capture_output=True, text=True, check=True).stdout.strip()
        print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                          "status": {{"token": token}}}}))
        """))
    client = load_api_client(kubeconfig(tmp_path / "config", admin.server, Path(admin.ca_path).read_bytes(),
                                        {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                  "command": sys.executable, "args": [str(plugin)]}}))
    assert who(client) == f"system:serviceaccount:{namespace}:default"


def test_the_in_cluster_service_account(cluster, admin, namespace, tmp_path, monkeypatch):
    # The pod's projected volume, as a directory: this process is not in a pod.
    (tmp_path / "token").write_text(cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip())
    (tmp_path / "ca.crt").write_bytes(Path(admin.ca_path).read_bytes())
    (tmp_path / "namespace").write_text(namespace)
    server = urlsplit(admin.server)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", server.hostname)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port or 443))
    client = kube.in_cluster_client(tmp_path)
    assert client.namespace == namespace and who(client) == f"system:serviceaccount:{namespace}:default"
