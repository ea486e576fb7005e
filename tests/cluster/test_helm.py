"""The Helm chart (deploy/helm/kubetune) against the real API server: lint, server-side dry run,
install onto the kwok nodes, a `kubectl auth can-i` matrix per ServiceAccount, and an uninstall that
leaves nothing behind.

CRDs: templates/crds.yaml renders files/crds/, symlinks to deploy/crds (one source), behind
`crds.install`. The session fixture `crds` server-side applies deploy/crds first, so the test release
installs with `crds.install=false` (as a cluster whose CRDs are managed apart does) and never removes
a CRD; the CRD templates are checked by rendering and a server dry run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

import localcluster
from kubetune.settings import ENV_PREFIX, OperatorSettings
from kubetune_agent import settings as agent_settings

from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kubetune"
# Variables the chart sets that the operator's settings do not read (none: every one is read).
OPERATOR_ENV_PENDING: set[str] = set()
EVERYTHING = ["--set", "webhook.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true",
              "--set", "monitoring.prometheusRule.enabled=true", "--set", "operator.podDisruptionBudget.enabled=true"]
# The chart's kubeVersion floor (in-place resize); `helm template` and `lint` otherwise assume v1.20.
KUBE_VERSION = ["--kube-version", "1.35.0"]


@pytest.fixture(scope="module")
def helm(cluster):
    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run([localcluster.binary("helm"), *args], capture_output=True, text=True,
                              env=cluster.env, timeout=timeout)
        if check and done.returncode:
            pytest.fail(f"helm {' '.join(args)}: {done.stderr.strip()[-2000:]}", pytrace=False)
        return done
    return run


def render(helm, *args: str, namespace: str = "default") -> list[dict]:
    out = helm("template", "rel", str(CHART), "--namespace", namespace, *KUBE_VERSION, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_crds_in_the_chart_are_deploy_crds():
    """files/crds/ links every generated CRD (adding a kind without a link fails here), and nothing else;
    no crds/ folder (Helm would install it before the templates and never upgrade it)."""
    generated = {p.name for p in (REPO / "deploy" / "crds").glob("*.yaml")}
    linked = {p.name: p for p in (CHART / "files" / "crds").glob("*.yaml") if p.is_symlink()}
    assert set(linked) == generated
    for name, link in linked.items():
        assert link.resolve() == (REPO / "deploy" / "crds" / name).resolve()
    assert {p.name for p in (CHART / "files" / "crds").iterdir() if not p.is_symlink()} == set()
    assert not (CHART / "crds").exists()


def test_crds_render_as_templates_behind_install_and_keep(helm):
    def crds(*args: str) -> dict[str, dict]:
        return {d["metadata"]["name"]: d for d in render(helm, *args) if d["kind"] == "CustomResourceDefinition"}

    rendered = crds()
    generated = {p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text()) for p in (REPO / "deploy" / "crds").glob("*.yaml")}
    assert set(rendered) == set(generated)
    for name, crd in rendered.items():
        assert crd["spec"] == generated[name]["spec"]  # the generated text, untouched (integers stay integers)
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert all("annotations" not in c["metadata"] for c in crds("--set", "crds.keep=false").values())
    assert crds("--set", "crds.install=false") == {}


def test_chart_requires_the_kubernetes_version_of_in_place_resize(helm):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.35.0-0" and chart["home"] and chart["sources"]
    done = helm("template", "rel", str(CHART), "--kube-version", "1.34.2", check=False)
    assert done.returncode != 0 and "chart requires kubeVersion: >=1.35.0-0" in done.stderr, done.stderr


@pytest.mark.parametrize("values", [[], EVERYTHING, ["--set", "agent.enabled=false", "--set", "operator.replicas=1",
                                              "--set", "operator.leaderElection.enabled=false"],
                                    ["--set", "monitoring.podMonitor.enabled=true", "--set", "crds.install=false"]],
                         ids=["defaults", "everything", "operator-only", "podmonitor-no-crds"])
def test_lint(helm, values):
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), *KUBE_VERSION, *values).stdout


@pytest.mark.parametrize("bad, where", [
    (["nope=1"], "additional properties 'nope'"),
    (["webhook.failurePolicy=Fail"], "/webhook/failurePolicy"),
    (["webhook.timeoutSeconds=30"], "/webhook/timeoutSeconds"),
    (["operator.minNice=-40"], "/operator/minNice"),
    (["agent.metricsPort=0"], "/agent/metricsPort"),
    (["agent.healthPort=0"], "/agent/healthPort"),
    (["operator.resources.requests.cpu=lots"], "/operator/resources/requests/cpu"),
    (["agent.resources.limits.memory=1GB"], "/agent/resources/limits/memory"),
    (["webhook.certManager.duration=forever"], "/webhook/certManager/duration"),
    (["webhook.certManager.renewBefore=30d"], "/webhook/certManager/renewBefore"),
    # Both would scrape every target twice.
    (["monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"], "/monitoring/podMonitor/enabled"),
], ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_schema_rejects_unknown_and_unsafe_values(helm, bad, where):
    done = helm("template", "rel", str(CHART), *KUBE_VERSION, *[a for b in bad for a in ("--set", b)], check=False)
    assert done.returncode != 0 and "schema" in done.stderr and where in done.stderr, done.stderr


def test_schema_accepts_quantities_as_numbers_and_strings(helm):
    docs = render(helm, "--set", "operator.resources.requests.cpu=2", "--set-string", "agent.resources.limits.cpu=1500m")
    workloads = {d["kind"]: d["spec"]["template"]["spec"]["containers"][0]["resources"] for d in docs
                 if d["kind"] in ("Deployment", "DaemonSet")}
    assert workloads["Deployment"]["requests"]["cpu"] == 2 and workloads["DaemonSet"]["limits"]["cpu"] == "1500m"


def test_several_replicas_need_leader_election(helm):
    # Several replicas without leader election would all act: refused with the reason.
    done = helm("template", "rel", str(CHART), *KUBE_VERSION, "--set", "operator.replicas=3", "--set",
                "operator.leaderElection.enabled=false", check=False)
    assert done.returncode != 0 and "operator.leaderElection.enabled=true" in done.stderr, done.stderr


def test_rendered_env_matches_the_settings_classes(helm):
    docs = render(helm, *EVERYTHING)
    workloads = {d["kind"]: d for d in docs if d["kind"] in ("Deployment", "DaemonSet")}
    operator_env = {e["name"] for e in workloads["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    known = {ENV_PREFIX + name.upper() for name in OperatorSettings.model_fields}
    assert {n for n in operator_env if n.startswith(ENV_PREFIX)} - known == OPERATOR_ENV_PENDING
    # every operator setting is a chart value, so no knob needs extraEnv
    # The Lease's namespace and this replica's identity come from the pod (POD_NAMESPACE, POD_NAME).
    assert known <= operator_env | {"KUBETUNE_PROMETHEUS_BEARER_TOKEN_FILE", "KUBETUNE_PROMETHEUS_CA_FILE",
                                    "KUBETUNE_LEADER_ELECTION_NAMESPACE", "KUBETUNE_LEADER_ELECTION_IDENTITY"}
    agent_env = {e["name"] for e in workloads["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    agent_known = {getattr(agent_settings, n) for n in dir(agent_settings) if n.startswith("ENV_")}
    assert agent_env == agent_known


def test_security_posture(helm):
    docs = {d["kind"]: d for d in render(helm)}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    agent = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert agent["hostPID"] and agent["hostNetwork"] and agent["containers"][0]["securityContext"]["privileged"]
    assert agent["priorityClassName"] == "system-node-critical"
    assert agent["tolerations"] == [{"operator": "Exists"}]
    mounts = {m["mountPath"]: m for m in agent["containers"][0]["volumeMounts"]}
    assert {"/host/proc", "/host/sys", "/run/kubetune"} <= set(mounts)
    assert not any(m.get("readOnly") for m in mounts.values())
    env = {e["name"]: e for e in agent["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # The agent serves its probes (kubetune_agent.main.serve_health) on the port the chart passes it.
    container = agent["containers"][0]
    assert container["args"] == ["--health-port=9611"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["health"] == 9611
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_template_applies_with_server_dry_run(helm, cluster, crds, namespace):
    # Monitoring objects need the Prometheus Operator's CRDs, which this cluster does not have;
    # promtool checks the rules (test_prometheus_rules_are_valid).
    # The Helm-generated certificate: this cluster has no cert-manager for the default one.
    docs = render(helm, "--set", "webhook.enabled=true", "--set", "webhook.certManager.enabled=false",
                  "--set", f"operator.watchNamespaces={{{namespace}}}",
                  namespace=namespace)
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                           input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(docs)


def test_webhook_renders_the_same_every_time_by_default(helm):
    """GitOps tools run `helm template` on every sync: the default webhook (cert-manager) must render
    identically, with the CA injected by cert-manager, not generated by Helm."""
    first, second = (helm("template", "rel", str(CHART), *KUBE_VERSION, "--set", "webhook.enabled=true").stdout
                     for _ in range(2))
    assert first == second
    docs = {d["kind"]: d for d in yaml.safe_load_all(first) if d}
    config = docs["MutatingWebhookConfiguration"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "default/rel-kubetune-webhook"
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert docs["Certificate"]["spec"]["secretName"] == "rel-kubetune-webhook-tls" and "Secret" not in docs
    # The Helm-generated certificate is the documented trade-off: a new one on every render.
    generated = [helm("template", "rel", str(CHART), *KUBE_VERSION, "--set", "webhook.enabled=true",
                      "--set", "webhook.certManager.enabled=false").stdout for _ in range(2)]
    assert generated[0] != generated[1]


def test_prometheus_rules_are_valid(helm, tmp_path):
    promtool = localcluster.shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    rule = next(d for d in render(helm, *EVERYTHING) if d["kind"] == "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_valid_json(helm):
    cm = next(d for d in render(helm) if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["kubetune.json"])["panels"]


# --- a real install ------------------------------------------------------------------------------

OPERATOR_MAY = [
    *[(v, "performancepolicies.kubetune.io", "") for v in ("get", "list", "watch", "patch")],
    *[(v, "nodetuningpolicies.kubetune.io", "") for v in ("get", "list", "watch", "patch")],
    *[(v, r, "status") for r in ("performancepolicies.kubetune.io", "nodetuningpolicies.kubetune.io")
      for v in ("get", "patch", "update")],
    *[(v, "nodetunings.kubetune.io", "") for v in ("get", "list", "watch", "create", "update", "patch", "delete")],
    *[(v, "nodetunings.kubetune.io", "status") for v in ("get", "patch")],
    *[(v, "pods", "") for v in ("get", "list", "watch")],
    ("get", "pods", "resize"), ("patch", "pods", "resize"),
    *[(v, f"{r}.apps", "") for r in ("deployments", "statefulsets", "daemonsets") for v in ("get", "list", "watch", "patch")],
    *[(v, r, "") for r in ("nodes", "namespaces", "horizontalpodautoscalers.autoscaling",
                          "customresourcedefinitions.apiextensions.k8s.io") for v in ("get", "list", "watch")],
    *[(v, r, "") for r in ("events", "events.events.k8s.io") for v in ("create", "patch")],
# Leases (leader election) only in the release namespace: checked apart, below.
]
OPERATOR_MAY_NOT = [
    ("get", "secrets", ""), ("list", "secrets", ""), ("delete", "pods", ""), ("create", "pods", ""),
    ("update", "pods", ""), ("create", "pods", "exec"), ("create", "pods", "eviction"),
    ("create", "deployments.apps", ""), ("delete", "deployments.apps", ""), ("update", "deployments.apps", ""),
    ("create", "performancepolicies.kubetune.io", ""), ("update", "performancepolicies.kubetune.io", ""),
    ("delete", "performancepolicies.kubetune.io", ""), ("delete", "nodetuningpolicies.kubetune.io", ""),
    ("patch", "nodes", ""), ("delete", "nodes", ""), ("get", "configmaps", ""), ("delete", "namespaces", ""),
    ("patch", "horizontalpodautoscalers.autoscaling", ""), ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""), ("create", "serviceaccounts", "token"),
    ("delete", "events", ""), ("list", "events", ""), ("update", "leases.coordination.k8s.io", ""),
]
AGENT_MAY = [
    *[(v, "nodetunings.kubetune.io", "") for v in ("get", "list", "watch")],
    *[(v, "nodetunings.kubetune.io", "status") for v in ("get", "patch", "update")],
    *[(v, r, "") for r in ("events", "events.events.k8s.io") for v in ("create", "patch")],
    ("get", "nodes", ""), ("get", "pods", ""), ("list", "pods", ""),
]
AGENT_MAY_NOT = [
    ("patch", "nodetunings.kubetune.io", ""), ("create", "nodetunings.kubetune.io", ""),
    ("delete", "nodetunings.kubetune.io", ""), ("get", "performancepolicies.kubetune.io", ""),
    ("get", "nodetuningpolicies.kubetune.io", ""), ("get", "secrets", ""), ("list", "secrets", ""),
    ("delete", "pods", ""), ("patch", "pods", "resize"), ("list", "nodes", ""),
    ("patch", "nodes", ""), ("patch", "nodes", "status"), ("get", "configmaps", ""),
    ("patch", "deployments.apps", ""), ("create", "pods", "exec"),
]


def can_i(cluster, who: str, verb: str, resource: str, subresource: str, namespace: str) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", who, "-n", namespace]
    if subresource:
        args += ["--subresource", subresource]
    done = cluster.kubectl(*args, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


@pytest.fixture
def release(helm, cluster, crds, namespace):
    """The chart installed into a fresh namespace (webhook on, to cover its objects), uninstalled after."""
    name = f"kt-{uuid.uuid4().hex[:6]}"
    # crds.install=false: the `crds` fixture applied them outside Helm, and Helm refuses to adopt objects it
    # does not own (as on a cluster whose CRDs are managed apart).
    # The Helm-generated webhook certificate: this cluster has no cert-manager.
    helm("install", name, str(CHART), "--namespace", namespace, "--set", "webhook.enabled=true", "--set", "crds.install=false",
         "--set", "webhook.certManager.enabled=false",
         "--set", f"operator.watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s")
    yield name
    helm("uninstall", name, "--namespace", namespace, "--wait", check=False)


def pods(cluster, namespace: str, component: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}", "-o", "json")
    return json.loads(out.stdout)["items"]


def running_on_nodes(items: list[dict]) -> set[str]:
    return {p["spec"]["nodeName"] for p in items if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")}


def test_install_runs_on_kwok_nodes_rbac_matrix_and_clean_uninstall(helm, cluster, release, namespace):
    nodes = {n["metadata"]["name"] for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    # Operator: two replicas (leader election), on two different nodes (soft anti-affinity), Running
    # (kwok marks pods Running without executing them), and a PodDisruptionBudget keeping one.
    def on_two_nodes():
        found = running_on_nodes(pods(cluster, namespace, "operator"))
        return found if len(found) == 2 else None

    operator = wait_for("two operator pods Running on two nodes", on_two_nodes)
    assert operator <= nodes
    deployment = json.loads(cluster.kubectl("get", "deployment", "-n", namespace, f"{release}-kubetune-operator",
                                            "-o", "json").stdout)
    assert deployment["status"].get("availableReplicas") == 2
    pdb = json.loads(cluster.kubectl("get", "pdb", "-n", namespace, f"{release}-kubetune-operator", "-o", "json").stdout)
    assert pdb["spec"]["minAvailable"] == 1
    # Agent: one pod per node, on every node (tolerations: Exists).
    wait_for("an agent pod Running on every node",
             lambda: running_on_nodes(pods(cluster, namespace, "agent")) == nodes)
    assert len(pods(cluster, namespace, "agent")) == len(nodes)

    for sa, may, may_not in [(f"{release}-kubetune-operator", OPERATOR_MAY, OPERATOR_MAY_NOT),
                             (f"{release}-kubetune-agent", AGENT_MAY, AGENT_MAY_NOT)]:
        who = f"system:serviceaccount:{namespace}:{sa}"
        wrong = [f"{sa} cannot {v} {r}{'/' + s if s else ''}" for v, r, s in may
                 if not can_i(cluster, who, v, r, s, "default")]
        wrong += [f"{sa} can {v} {r}{'/' + s if s else ''}" for v, r, s in may_not
                  if can_i(cluster, who, v, r, s, "default")]
        assert not wrong, "\n".join(wrong)
    operator_sa = f"system:serviceaccount:{namespace}:{release}-kubetune-operator"
    assert all(can_i(cluster, operator_sa, v, "leases.coordination.k8s.io", "", namespace)
               for v in ("get", "create", "update", "patch")), "the Lease in the release namespace"
    assert not can_i(cluster, operator_sa, "update", "leases.coordination.k8s.io", "", "kube-system")

    # `kubetune check` reads the same RBAC through SubjectAccessReviews: both accounts pass.
    check = subprocess.run([sys.executable, "-m", "kubetune.cli", "check", "--prometheus-url", "http://127.0.0.1:1",
                            "--kubeconfig", cluster.kubeconfig, "--namespace", namespace],
                           capture_output=True, text=True, timeout=120, env=cluster.env)
    lines = {line[2:].split(":")[0]: line for line in check.stdout.splitlines()}
    assert lines["operator permissions"].startswith("✓") and lines["agent permissions"].startswith("✓"), check.stdout
    # kwok marks the operator pods Ready, so the webhook Service has endpoints (EndpointSlices).
    assert lines["webhook"].startswith(f"✓ webhook: {release}-kubetune-webhook: 2 ready endpoint(s)"), check.stdout

    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={release}"
    namespaced = ("deployments,daemonsets,replicasets,pods,services,serviceaccounts,secrets,configmaps,roles,"
                  "rolebindings,poddisruptionbudgets")
    cluster_wide = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations"

    def leftovers() -> list[str]:
        found = cluster.kubectl("get", namespaced, "-n", namespace, "-l", selector, "-o", "name").stdout.split()
        found += cluster.kubectl("get", cluster_wide, "-l", selector, "-o", "name").stdout.split()
        return found

    wait_for("nothing of the release left", lambda: not leftovers() or None, timeout=60)
    # Pods of the DaemonSet carry only selector labels; none may remain in the namespace either.
    wait_for("no pods left", lambda: not json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "json").stdout)["items"], timeout=60)
    # The CRDs stay (not the release's), so other tests and users' policies are untouched.
    for crd in ("performancepolicies.kubetune.io", "nodetunings.kubetune.io"):
        cluster.kubectl("get", "crd", crd)


def test_notes_tell_the_pod_security_label(helm, cluster, namespace):
    done = helm("install", "notes", str(CHART), "--namespace", namespace, "--dry-run=server", "--set", "crds.install=false")
    notes = done.stdout.split("NOTES:", 1)[1]
    assert f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=privileged" in notes
    done = helm("install", "notes", str(CHART), "--namespace", namespace, "--dry-run=server", "--set", "crds.install=false",
                "--set", "agent.enabled=false")
    assert "pod-security" not in done.stdout.split("NOTES:", 1)[1]  # the operator alone meets "restricted"


# --- release packaging ------------------------------------------------------------------------------

PACKAGE = REPO / "deploy" / "release" / "package-chart.sh"


def package(tmp_path, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELM": localcluster.binary("helm"), "OUT": str(tmp_path / "dist"),
           "CHART": str(chart)}
    return subprocess.run(["bash", str(PACKAGE), *args], capture_output=True, text=True, timeout=180, env=env, cwd=REPO)


def test_chart_packages_as_a_self_contained_archive(helm, tmp_path):
    done = package(tmp_path)
    assert done.returncode == 0, done.stderr
    archive = tmp_path / "dist" / "kubetune-0.1.0.tgz"
    assert done.stdout.strip().startswith(f"{archive} sha256:")
    # The archive holds the linked CRDs' and rules' content: it renders the same as the source tree.
    # (Without the webhook: its self-signed certificate is new on every render.)
    stable = ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.prometheusRule.enabled=true"]
    from_archive = helm("template", "rel", str(archive), *KUBE_VERSION, *stable).stdout
    from_tree = helm("template", "rel", str(CHART), *KUBE_VERSION, *stable).stdout
    assert from_archive == from_tree and "kind: CustomResourceDefinition" in from_archive
    shown = yaml.safe_load(helm("show", "chart", str(archive)).stdout)
    assert (shown["version"], shown["appVersion"], shown["kubeVersion"]) == ("0.1.0", "0.1.0", ">=1.35.0-0")


def test_packaging_refuses_a_chart_version_other_than_the_package_version(tmp_path):
    chart = tmp_path / "kubetune"
    subprocess.run(["cp", "-rL", str(CHART), str(chart)], check=True)
    (chart / "Chart.yaml").write_text((chart / "Chart.yaml").read_text().replace("version: 0.1.0", "version: 0.2.0"))
    done = package(tmp_path, chart=chart)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "package-chart: Chart.yaml version 0.2.0 / appVersion 0.1.0 differ from pyproject.toml's 0.1.0: set all three"]
    assert package(tmp_path, "https://registry.example/charts").stderr.strip().endswith(
        "push target must be oci://REGISTRY/PATH, got https://registry.example/charts")
