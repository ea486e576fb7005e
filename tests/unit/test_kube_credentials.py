"""kube.py's one credential loader: what each kubeconfig form becomes (a table), exec credential plugins
(a script the test writes prints the ExecCredential), the in-cluster service account token re-read on a
401, and the errors that name what is missing. The real API server accepting what the loader builds is
tests/cluster/test_kube_credentials.py."""

from __future__ import annotations

import base64
import datetime as dt
import json
import stat
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kubetune import kube
from kubetune.kube import ApiClient, ApiError, KubeError, TokenFileAuth, kubeconfig_client, load_api_client
from tests.unit.apistub import ApiStub

pytestmark = pytest.mark.unit

SERVER = "https://203.0.113.7:6443"  # never contacted by the table tests
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, user: dict, cluster: dict | None = None, *, context: str = "dev",
                     current: str | None = "dev", namespace: str | None = None) -> Path:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": current,
              "clusters": [{"name": "c", "cluster": {"server": SERVER, **(cluster or {})}}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": context, "context": {"cluster": "c", "user": "u",
                                                         **({"namespace": namespace} if namespace else {})}}]}
    path.write_text(yaml.safe_dump(config))
    return path


FORMS = [
    ("token", {"token": "abc"}, {}, lambda c: c.auth.current().token == "abc" and c.session.verify is True),
    ("basic-auth", {"username": "ann", "password": "pw"}, {},
     lambda c: (c.auth.current().username, c.auth.current().password) == ("ann", "pw")),
    ("cert-data", {"client-certificate-data": b64(PEM), "client-key-data": b64(b"KEY")}, {},
     lambda c: [Path(p).read_bytes() for p in c.auth.current().cert] == [PEM, b"KEY"]
     and stat.S_IMODE(Path(c.auth.current().cert[1]).stat().st_mode) == 0o600),
    ("cert-paths-relative-to-the-kubeconfig", {"client-certificate": "pki/a.crt", "client-key": "pki/a.key"}, {},
     lambda c: [Path(p).name for p in c.auth.current().cert] == ["a.crt", "a.key"]
     and Path(c.auth.current().cert[0]).parent.name == "pki" and Path(c.auth.current().cert[0]).is_absolute()),
    ("ca-data", {"token": "t"}, {"certificate-authority-data": b64(PEM)},
     lambda c: Path(c.session.verify).read_bytes() == PEM),
    ("ca-path", {"token": "t"}, {"certificate-authority": "/etc/ca.crt"}, lambda c: c.session.verify == "/etc/ca.crt"),
    ("insecure", {"token": "t"}, {"insecure-skip-tls-verify": True}, lambda c: c.session.verify is False),
]


@pytest.mark.parametrize("user,cluster,check", [f[1:] for f in FORMS], ids=[f[0] for f in FORMS])
def test_each_kubeconfig_form_becomes_the_client_kubectl_would_use(tmp_path, user, cluster, check):
    client = kubeconfig_client(str(write_kubeconfig(tmp_path / "config", user, cluster, namespace="shop")))
    assert client.server == SERVER and client.namespace == "shop"
    assert check(client)


def test_a_token_file_is_read_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    client = kubeconfig_client(str(write_kubeconfig(tmp_path / "config", {"tokenFile": "token"})))
    assert client.auth.current().token == "from-file"


def test_kubeconfig_lists_several_files_and_the_first_to_name_an_entry_wins(tmp_path, monkeypatch):
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({"current-context": "dev", "contexts": [
        {"name": "dev", "context": {"cluster": "c", "user": "u"}}]}))
    second = write_kubeconfig(tmp_path / "second", {"token": "second"}, current="other")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    client = load_api_client()
    assert client.server == SERVER and client.auth.current().token == "second"


ERRORS = [
    ("missing-context", dict(current="prod"), "context 'prod' not found (contexts: dev)"),
    ("no-current-context", dict(current=None), "no current-context set"),
    ("removed-auth-provider", dict(user={"auth-provider": {"name": "gcp", "config": {}}}),
     "uses the 'gcp' auth-provider plugin, which kubetune does not support"),
    ("exec-api-version", dict(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}),
     "exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported"),
]


@pytest.mark.parametrize("change,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_a_kubeconfig_that_cannot_work_is_a_kube_error_naming_the_problem(tmp_path, change, message):
    path = write_kubeconfig(tmp_path / "config", change.get("user", {"token": "t"}), current=change.get("current", "dev"))
    with pytest.raises(KubeError) as raised:
        load_api_client(str(path))
    assert message in str(raised.value) and str(path) in str(raised.value)


def test_a_missing_kubeconfig_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(KubeError, match=r"no usable Kubernetes configuration in .*nowhere .*set KUBECONFIG or --kubeconfig"):
        load_api_client(str(tmp_path / "nowhere"))


# --- exec credential plugins -----------------------------------------------------------------------


def exec_plugin(tmp_path: Path, api_version: str, status: str) -> Path:
    """A plugin that counts its runs in `runs` and prints an ExecCredential; `status` is a Python
    expression over `n` (the run's number) for the status object."""
    script = tmp_path / "plugin.py"
    script.write_text(textwrap.dedent(f"""\
        import json, os, sys
        runs = os.path.join(os.path.dirname(__file__), "runs")
        n = (len(open(runs).read()) if os.path.exists(runs) else 0) + 1
        open(runs, "a").write("x")
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        assert info["kind"] == "ExecCredential" and os.environ["PLUGIN_REGION"] == "eu", info
        print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential", "status": {status}}}))
        """))
    return script


def exec_user(script: Path, api_version: str) -> dict:
    return {"exec": {"apiVersion": api_version, "command": sys.executable, "args": [str(script)],
                     "env": [{"name": "PLUGIN_REGION", "value": "eu"}]}}


def runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text())


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_an_exec_plugin_token_is_sent_and_cached_until_it_expires(tmp_path, api_version):
    script = exec_plugin(tmp_path, api_version,
                         '{"token": f"token-{n}", "expirationTimestamp": "2030-01-01T00:00:00Z"}')
    with ApiStub(lambda request: (200, {"kind": "NodeList", "items": []})) as stub:
        path = write_kubeconfig(tmp_path / "config", exec_user(script, api_version), {"server": stub.url})
        client = load_api_client(str(path))
        client.call("GET", "/api/v1/nodes")
        client.call("GET", "/api/v1/nodes")
        assert [r.headers["Authorization"] for r in stub.requests] == ["Bearer token-1"] * 2 and runs(tmp_path) == 1
        client.auth.now = lambda: dt.datetime(2030, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)  # past its expiry
        client.call("GET", "/api/v1/nodes")
    assert stub.requests[-1].headers["Authorization"] == "Bearer token-2" and runs(tmp_path) == 2


def test_an_exec_credential_the_server_rejects_is_fetched_again_once(tmp_path):
    script = exec_plugin(tmp_path, "client.authentication.k8s.io/v1", '{"token": f"token-{n}"}')

    def answer(request):  # revoked before its (absent) expiry: only the server can tell
        return (401, {"kind": "Status", "message": "Unauthorized"}) if request.headers["Authorization"] == "Bearer token-1" \
            else (200, {"items": []})

    with ApiStub(answer) as stub:
        path = write_kubeconfig(tmp_path / "config", exec_user(script, "client.authentication.k8s.io/v1"),
                                {"server": stub.url})
        assert load_api_client(str(path)).call("GET", "/api/v1/nodes") == {"items": []}
    assert [r.headers["Authorization"] for r in stub.requests] == ["Bearer token-1", "Bearer token-2"]


def test_an_exec_plugin_client_certificate_is_used_as_files(tmp_path):
    script = exec_plugin(tmp_path, "client.authentication.k8s.io/v1",
                         '{"clientCertificateData": "CERT", "clientKeyData": "KEY"}')
    client = load_api_client(str(write_kubeconfig(tmp_path / "config", exec_user(script, "client.authentication.k8s.io/v1"))))
    assert [Path(p).read_text() for p in client.auth.current().cert] == ["CERT", "KEY"]


def test_a_failing_exec_plugin_is_named_with_its_output(tmp_path):
    script = tmp_path / "plugin.py"
    script.write_text("import sys; sys.exit('login expired: run aws sso login')")
    client = load_api_client(str(write_kubeconfig(tmp_path / "config", exec_user(script, "client.authentication.k8s.io/v1"))))
    with pytest.raises(KubeError, match=r"list nodes: kubeconfig .*config: user 'u': exec plugin .* exited 1: login expired: run aws sso login"):
        kube.send(client, "list nodes", "GET", "/api/v1/nodes")


# --- in-cluster token rotation -----------------------------------------------------------------------
# A local stub server: the real API server cannot be made to reject a token that was valid a moment ago.


def test_a_401_reads_the_rotated_service_account_token_again_once(tmp_path):
    token = tmp_path / "token"
    token.write_text("old")
    auth = TokenFileAuth(token)
    token.write_text("new")  # the kubelet rotated it; the process still holds the old one

    accepted = {"Bearer new"}

    def answer(request):
        return (200, {"items": []}) if request.headers["Authorization"] in accepted else (401, {"message": "Unauthorized"})

    with ApiStub(answer) as stub:
        assert ApiClient(stub.url, auth=auth).call("GET", "/api/v1/pods") == {"items": []}
        assert [r.headers["Authorization"] for r in stub.requests] == ["Bearer old", "Bearer new"]
        accepted.clear()  # the account was deleted: no token file can help
        with pytest.raises(ApiError) as raised:  # still refused after one re-read: the 401 stands
            ApiClient(stub.url, auth=auth).call("GET", "/api/v1/pods")
    assert raised.value.status == 401 and len(stub.requests) == 4


def test_a_service_account_token_older_than_a_minute_is_read_again(tmp_path):
    token, now = tmp_path / "token", [0.0]
    token.write_text("first")
    auth = TokenFileAuth(token, clock=lambda: now[0])
    token.write_text("second")
    now[0] = kube.TOKEN_MAX_AGE - 1
    assert auth.current().token == "first"
    now[0] = kube.TOKEN_MAX_AGE + 1
    assert auth.current().token == "second"


def test_in_cluster_the_service_account_is_used(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(PEM)
    (tmp_path / "namespace").write_text("kubetune")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = kube.in_cluster_client(tmp_path)
    assert (client.server, client.namespace, client.session.verify) == ("https://[fd00::1]:443", "kubetune",
                                                                         str(tmp_path / "ca.crt"))
    assert client.auth.current().token == "sa-token"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert kube.in_cluster_client(tmp_path) is None  # outside a pod: the kubeconfig is used


def test_the_agent_and_the_operator_post_the_same_event_shape():
    body = kube.event_body({"kind": "Node", "name": "n1", "apiVersion": "v1", "uid": "n1"}, "Warning", "Hot", "x" * 2000,
                           component="kubetune-agent", host="n1", name_prefix="n1.kubetune-",
                           now=dt.datetime(2026, 11, 29, 23, 0, tzinfo=dt.timezone.utc))
    assert body["metadata"] == {"generateName": "n1.kubetune-"} and len(body["message"]) == 1024
    assert body["firstTimestamp"] == "2026-11-29T23:00:00Z" and body["source"] == {"component": "kubetune-agent", "host": "n1"}
    assert json.loads(json.dumps(body))["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n1"}
