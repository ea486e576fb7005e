"""`kubetune check`: is this installation able to do its job? Self-validation, as `linkerd check` does.

Each check is a pure function of plain data (what `gather_check_input` read) returning one
`CheckResult`: passed or not, what was found, and the fix when it failed. `gather_check_input` is the
only I/O: the Prometheus HTTP API through `kubetune.prometheus`, the Kubernetes API through
`kubetune.kube.load_api_client`. Nothing is changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubetune import constants
from kubetune.kube import KubeError, load_api_client, send

# The cAdvisor series every workload rule reads (promql.py builds its queries on them).
CADVISOR_SERIES = ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes")
# The recording-rule groups of deploy/prometheus/kubetune-rules.yaml (a unit test keeps them equal).
RULE_GROUPS = ("kubetune.container.rules", "kubetune.workload.rules", "kubetune.hourly.rules", "kubetune.daily.rules")
# rate() needs at least this many samples in its window to be stable (the operator's rate window).
RATE_WINDOW_SAMPLES = 4
# The operator calls a NodeTuning heartbeat stale after three reporting intervals (nodeplanner).
STALE_INTERVALS = 3

# (verb, resource, API group, subresource) the ServiceAccounts must and must not be allowed: the
# least privilege docs/operations.md describes (a subset that catches a missing or widened role).
Permission = tuple[str, str, str, str]
OPERATOR_NEEDS: tuple[Permission, ...] = (
    ("list", "performancepolicies", "kubetune.io", ""), ("patch", "performancepolicies", "kubetune.io", "status"),
    ("list", "nodetuningpolicies", "kubetune.io", ""), ("patch", "nodetuningpolicies", "kubetune.io", "status"),
    ("create", "nodetunings", "kubetune.io", ""), ("patch", "nodetunings", "kubetune.io", ""),
    ("delete", "nodetunings", "kubetune.io", ""), ("list", "pods", "", ""), ("patch", "pods", "", "resize"),
    ("patch", "deployments", "apps", ""), ("patch", "statefulsets", "apps", ""), ("patch", "daemonsets", "apps", ""),
    ("list", "nodes", "", ""), ("create", "events", "", ""),
)
OPERATOR_MUST_NOT: tuple[Permission, ...] = (
    ("get", "secrets", "", ""), ("delete", "pods", "", ""), ("create", "pods", "", "exec"),
    ("update", "performancepolicies", "kubetune.io", ""), ("patch", "nodes", "", ""),
)
AGENT_NEEDS: tuple[Permission, ...] = (
    ("list", "nodetunings", "kubetune.io", ""), ("watch", "nodetunings", "kubetune.io", ""),
    ("patch", "nodetunings", "kubetune.io", "status"), ("create", "events", "", ""),
)
AGENT_MUST_NOT: tuple[Permission, ...] = (
    ("patch", "nodetunings", "kubetune.io", ""), ("get", "secrets", "", ""),
    ("get", "performancepolicies", "kubetune.io", ""), ("patch", "nodes", "", ""),
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str
    fix: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        return f"{mark} {self.name}: {self.message}" + (f" — fix: {self.fix}" if not self.ok and self.fix else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class ServiceAccountAccess:
    """What the API server answered for one ServiceAccount: permission -> allowed."""

    name: str  # namespace/name
    allowed: Mapping[Permission, bool]


@dataclass(frozen=True)
class CheckInput:
    """Everything the checks judge, as plain data; None = could not be read (the reason in `errors`)."""

    prometheus_url: str
    prometheus_error: str | None = None
    series_counts: Mapping[str, int] = field(default_factory=dict)  # cAdvisor series -> number of series
    samples_in_5m: float | None = None  # mean samples per cAdvisor CPU series over the last 5 minutes
    rule_groups: Sequence[str] | None = None
    rate_window_seconds: float = 60.0
    kube_error: str | None = None
    nodes: Sequence[str] = ()
    node_tunings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # node -> status
    webhook: Mapping[str, Any] | None = None  # {"name", "service", "ready_endpoints"}; None = not installed
    service_accounts: Mapping[str, ServiceAccountAccess | None] = field(default_factory=dict)  # role -> access
    policies: Sequence[Mapping[str, Any]] = ()  # PerformancePolicy objects
    namespace: str = "kubetune"
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


# --- the checks: pure ---------------------------------------------------------------------------------


def check_prometheus(data: CheckInput) -> CheckResult:
    if data.prometheus_error:
        return CheckResult("prometheus", False, data.prometheus_error,
                           "give the Prometheus HTTP API URL the operator uses (--prometheus-url; the chart's "
                           "operator.prometheus.url)")
    return CheckResult("prometheus", True, f"answers at {data.prometheus_url}")


def check_cadvisor(data: CheckInput) -> CheckResult:
    if data.prometheus_error:
        return CheckResult("cadvisor", False, "not checked: Prometheus does not answer", "fix the prometheus check first")
    missing = [s for s in CADVISOR_SERIES if not data.series_counts.get(s)]
    if missing:
        return CheckResult("cadvisor", False, f"no {', '.join(missing)} series in Prometheus",
                           "scrape the kubelets' /metrics/cadvisor (kube-prometheus-stack does by default)")
    counts = ", ".join(f"{data.series_counts[s]} {s}" for s in CADVISOR_SERIES)
    if not data.samples_in_5m:
        return CheckResult("cadvisor", True, f"{counts}; scrape interval unknown (no samples in the last 5 minutes)")
    interval = 300 / data.samples_in_5m
    needed = RATE_WINDOW_SAMPLES * interval
    if data.rate_window_seconds < needed:
        return CheckResult("cadvisor", False,
                           f"{counts}; scrape interval ~{interval:.0f}s, but the rate window "
                           f"{data.rate_window_seconds:g}s holds fewer than {RATE_WINDOW_SAMPLES} samples",
                           f"set operator.rateWindow (KUBETUNE_RATE_WINDOW) to at least {math.ceil(needed)}s")
    return CheckResult("cadvisor", True, f"{counts}; scrape interval ~{interval:.0f}s")


def check_rules(data: CheckInput) -> CheckResult:
    if data.prometheus_error or data.rule_groups is None:
        return CheckResult("recording rules", False, "not checked: Prometheus does not answer /api/v1/rules",
                           "fix the prometheus check first")
    missing = [g for g in RULE_GROUPS if g not in data.rule_groups]
    if missing:
        return CheckResult("recording rules", False, f"groups not loaded: {', '.join(missing)}",
                           "load deploy/prometheus/kubetune-rules.yaml (rule_files) or set "
                           "monitoring.prometheusRule.enabled=true with the Prometheus Operator")
    return CheckResult("recording rules", True, f"{len(RULE_GROUPS)} kubetune groups loaded")


def _heartbeat(status: Mapping[str, Any]) -> datetime | None:
    text = status.get("heartbeatTime")
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def check_agents(data: CheckInput) -> CheckResult:
    if data.kube_error:
        return CheckResult("node agents", False, f"not checked: {data.kube_error}", "fix the Kubernetes access first")
    if not data.nodes:
        return CheckResult("node agents", True, "no nodes")
    stale, missing = [], []
    for node in sorted(data.nodes):
        status = data.node_tunings.get(node)
        beat = _heartbeat(status or {})
        if status is None or beat is None:
            missing.append(node)
            continue
        interval = float(status.get("reportingIntervalSeconds") or 10)
        if (data.now - beat).total_seconds() > STALE_INTERVALS * interval:
            stale.append(node)
    if missing or stale:
        parts = ([f"never reported on {', '.join(missing)}"] if missing else []) + \
                ([f"stale on {', '.join(stale)}"] if stale else [])
        return CheckResult("node agents", False,
                           f"{len(data.nodes) - len(missing) - len(stale)} of {len(data.nodes)} nodes reporting; "
                           + "; ".join(parts),
                           f"kubectl -n {data.namespace} get pods -l app.kubernetes.io/component=agent -o wide "
                           "(docs/runbooks.md#kubetunenodeagentnotready)")
    return CheckResult("node agents", True, f"reporting on all {len(data.nodes)} nodes")


def check_webhook(data: CheckInput) -> CheckResult:
    if data.kube_error:
        return CheckResult("webhook", False, f"not checked: {data.kube_error}", "fix the Kubernetes access first")
    if data.webhook is None:
        return CheckResult("webhook", True, "not installed (new pods start with their template's resources)")
    if not data.webhook.get("ready_endpoints"):
        return CheckResult("webhook", False, f"{data.webhook['name']}: service {data.webhook['service']} has no ready "
                                             "endpoint (pods are admitted without it: it fails open)",
                           f"kubectl -n {data.namespace} get pods -l app.kubernetes.io/component=operator")
    return CheckResult("webhook", True, f"{data.webhook['name']}: {data.webhook['ready_endpoints']} ready endpoint(s)")


def _permission(p: Permission) -> str:
    verb, resource, group, sub = p
    return f"{verb} {resource}{'.' + group if group else ''}{'/' + sub if sub else ''}"


def check_permissions(data: CheckInput, role: str, needs: Sequence[Permission],
                      must_not: Sequence[Permission]) -> CheckResult:
    name = f"{role} permissions"
    if data.kube_error:
        return CheckResult(name, False, f"not checked: {data.kube_error}", "fix the Kubernetes access first")
    access = data.service_accounts.get(role)
    if access is None:
        return CheckResult(name, False, f"no {role} ServiceAccount in namespace {data.namespace}",
                           "--namespace names the release's namespace")
    lacking = [_permission(p) for p in needs if not access.allowed.get(p)]
    extra = [_permission(p) for p in must_not if access.allowed.get(p)]
    if lacking or extra:
        parts = ([f"cannot {', '.join(lacking)}"] if lacking else []) + ([f"can {', '.join(extra)}"] if extra else [])
        return CheckResult(name, False, f"{access.name} " + "; ".join(parts),
                           "reinstall the chart's RBAC (rbac.create=true) and remove extra bindings to the account")
    return CheckResult(name, True, f"{access.name} has the {len(needs)} permissions checked and none of "
                                   f"the {len(must_not)} it must not have")


def check_policy_metrics(data: CheckInput) -> CheckResult:
    if data.kube_error:
        return CheckResult("policy metrics", False, f"not checked: {data.kube_error}", "fix the Kubernetes access first")
    lacking = []
    for policy in data.policies:
        for condition in (policy.get("status") or {}).get("conditions", []):
            if condition.get("type") == "MetricsAvailable" and condition.get("status") == "False":
                meta = policy["metadata"]
                lacking.append(f"{meta['namespace']}/{meta['name']} ({condition.get('reason', '')})")
    if lacking:
        return CheckResult("policy metrics", False, f"{len(lacking)} of {len(data.policies)} policies lack metrics: "
                                                    + ", ".join(lacking[:5]) + (" …" if len(lacking) > 5 else ""),
                           "kubectl describe pp <name>: the MetricsAvailable condition names the query")
    return CheckResult("policy metrics", True, f"all {len(data.policies)} policies have their metrics")


def run_checks(data: CheckInput) -> list[CheckResult]:
    return [
        check_prometheus(data), check_cadvisor(data), check_rules(data), check_agents(data), check_webhook(data),
        check_permissions(data, "operator", OPERATOR_NEEDS, OPERATOR_MUST_NOT),
        check_permissions(data, "agent", AGENT_NEEDS, AGENT_MUST_NOT),
        check_policy_metrics(data),
    ]


# --- gathering: the only I/O --------------------------------------------------------------------------


def _gather_prometheus(prometheus) -> dict[str, Any]:
    from kubetune.prometheus import PrometheusUnavailable

    try:
        prometheus.instant_query("vector(1)")
        counts = {}
        for series in CADVISOR_SERIES:
            result = prometheus.instant_query(f'count({series}{{container!="",container!="POD"}})')
            counts[series] = int(float(result[0]["value"][1])) if result else 0
        result = prometheus.instant_query(
            'avg(count_over_time(container_cpu_usage_seconds_total{container!="",container!="POD"}[5m]))')
        samples = float(result[0]["value"][1]) if result else None
        groups = prometheus.rule_groups()
    except PrometheusUnavailable as e:
        return {"prometheus_error": str(e)}
    return {"series_counts": counts, "samples_in_5m": samples, "rule_groups": groups}


def _service_account(api: Any, namespace: str, component: str) -> str | None:
    accounts = send(api, "list ServiceAccounts", "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                    params={"labelSelector": f"app.kubernetes.io/component={component}"})["items"]
    return accounts[0]["metadata"]["name"] if accounts else None


def _access(api: Any, namespace: str, account: str, permissions: Sequence[Permission]) -> ServiceAccountAccess:
    allowed = {}
    for p in permissions:
        verb, resource, group, sub = p
        attributes = {"verb": verb, "resource": resource, "group": group, "namespace": "default",
                      **({"subresource": sub} if sub else {})}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": f"system:serviceaccount:{namespace}:{account}",
                           "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                           "resourceAttributes": attributes}}
        answer = send(api, f"review {_permission(p)}", "POST",
                      "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        allowed[p] = bool((answer.get("status") or {}).get("allowed"))
    return ServiceAccountAccess(f"{namespace}/{account}", allowed)


def _gather_kube(kubeconfig: str | None, namespace: str) -> dict[str, Any]:
    try:
        api = load_api_client(kubeconfig)
    except KubeError as e:
        return {"kube_error": str(e)}

    def custom(plural: str) -> list[dict]:
        return send(api, f"list {plural}", "GET", f"/apis/{constants.GROUP}/{constants.VERSION}/{plural}")["items"]

    try:
        nodes = [n["metadata"]["name"] for n in send(api, "list nodes", "GET", "/api/v1/nodes")["items"]]
        tunings = {item["metadata"]["name"]: item.get("status") or {} for item in custom(constants.NODE_TUNING.plural)}
        policies = custom(constants.PERFORMANCE_POLICY.plural)
        webhook = None
        for config in send(api, "list MutatingWebhookConfigurations", "GET",
                           "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                           params={"labelSelector": "app.kubernetes.io/part-of=kubetune"})["items"]:
            for hook in config.get("webhooks") or []:
                service = (hook.get("clientConfig") or {}).get("service")
                if service is None:
                    continue
                slices = send(api, "list EndpointSlices", "GET",
                              f"/apis/discovery.k8s.io/v1/namespaces/{service['namespace']}/endpointslices",
                              params={"labelSelector": f"kubernetes.io/service-name={service['name']}"})["items"]
                ready = sum(1 for piece in slices for endpoint in piece.get("endpoints") or []
                            if (endpoint.get("conditions") or {}).get("ready") is not False)
                webhook = {"name": config["metadata"]["name"], "service": f"{service['namespace']}/{service['name']}",
                           "ready_endpoints": ready}
        accounts: dict[str, ServiceAccountAccess | None] = {}
        for role, needs, must_not in (("operator", OPERATOR_NEEDS, OPERATOR_MUST_NOT),
                                      ("agent", AGENT_NEEDS, AGENT_MUST_NOT)):
            account = _service_account(api, namespace, role)
            accounts[role] = _access(api, namespace, account, (*needs, *must_not)) if account else None
    except KubeError as e:
        return {"kube_error": f"Kubernetes API: {e}"}
    return {"nodes": nodes, "node_tunings": tunings, "policies": policies, "webhook": webhook,
            "service_accounts": accounts}


def gather_check_input(prometheus, *, kubeconfig: str | None, namespace: str, rate_window_seconds: float) -> CheckInput:
    return CheckInput(prometheus_url=prometheus.settings.prometheus_url, namespace=namespace,
                      rate_window_seconds=rate_window_seconds, **_gather_prometheus(prometheus),
                      **_gather_kube(kubeconfig, namespace))
