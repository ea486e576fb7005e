"""kopf wiring and nothing else: indexes that keep small records of what the operator watches, and
the start-up hook that runs the evaluation and node-tuning loops over them.

kubetune adds no finalizers: policies are only read (results go to status), and the node agent restores
a node's originals when its NodeTuning loses a knob, so deleting a policy or uninstalling the chart
never leaves an object stuck.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from kubetune import constants
from kubetune.admission import new_pod_containers, socket_buffer_sysctls
from kubetune.api.common import parse_quantity
from kubetune.api.performancepolicy import PerformancePolicySpec
from kubetune.evaluation import Evaluator
from kubetune.records import ClusterView, PolicyRecord, WorkloadRecord, encode_status
from kubetune.kube import Kube, KubeError, load_api_client
from kubetune.leadership import AlwaysLeading, ElectionTiming, ShardedLeadership
from kubetune.metrics import OperatorMetrics
from kubetune.api.nodetuningpolicy import NodeTuningPolicySpec
from kubetune.nodeplanner import NodePlanner, NodeView, node_facts, node_tuning_record
from kubetune.nodetuning import NodeTuningPolicyRecord
from kubetune.podwatch import PodWatch
from kubetune.prometheus import Prometheus
from kubetune.settings import OperatorSettings, SettingsError
from kubetune.workloads import WorkloadRef, template_containers

log = logging.getLogger("kubetune")
PP, NTP, NT = constants.PERFORMANCE_POLICY, constants.NODE_TUNING_POLICY, constants.NODE_TUNING


def spec_error(error: ValidationError) -> str:
    return "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())[:1024]


# --- indexes: small records, not objects ----------------------------------------------------------
# Pods are not a kopf index: at 10,000 pods kopf's per-object start-up is quadratic (see podwatch.py).


@kopf.index(constants.GROUP, constants.VERSION, PP.plural)
def policy_index(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any):
    try:
        parsed, error = PerformancePolicySpec.model_validate(dict(spec)), None
    except ValidationError as e:
        parsed, error = None, spec_error(e)
    return {(meta["namespace"], meta["name"]): PolicyRecord(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], generation=meta.get("generation", 0),
        created=meta.get("creationTimestamp", ""), spec=parsed, spec_error=error, status_json=encode_status(status))}


def _workload_record(kind: str, body: kopf.Body) -> dict[WorkloadRef, WorkloadRecord]:
    meta = body["metadata"]
    return {WorkloadRef(meta["namespace"], kind, meta["name"]): WorkloadRecord(meta["uid"], template_containers(body))}


@kopf.index("apps", "v1", "deployments")
def deployment_index(body: kopf.Body, **_: Any):
    return _workload_record("Deployment", body)


@kopf.index("apps", "v1", "statefulsets")
def statefulset_index(body: kopf.Body, **_: Any):
    return _workload_record("StatefulSet", body)


@kopf.index("apps", "v1", "daemonsets")
def daemonset_index(body: kopf.Body, **_: Any):
    return _workload_record("DaemonSet", body)


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def hpa_index(spec: kopf.Spec, namespace: str, **_: Any):
    target = spec.get("scaleTargetRef", {})
    resources = frozenset(m[m["type"][0].lower() + m["type"][1:]]["name"] for m in spec.get("metrics") or []
                          if m.get("type") in ("Resource", "ContainerResource"))
    return {WorkloadRef(namespace, target.get("kind", ""), target.get("name", "")): resources}


@kopf.index("nodes")
def node_index(name: str, status: kopf.Status, labels: kopf.Labels, **_: Any):
    return {name: (dict(labels), dict(status.get("allocatable") or {}))}


@kopf.index(constants.GROUP, constants.VERSION, NTP.plural)
def node_tuning_policy_index(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any):
    try:
        parsed, error = NodeTuningPolicySpec.model_validate(dict(spec)), None
    except ValidationError as e:
        parsed, error = None, spec_error(e)
    return {meta["name"]: NodeTuningPolicyRecord(name=meta["name"], uid=meta["uid"], generation=meta.get("generation", 0),
                                                 spec=parsed, spec_error=error, status=dict(status))}


@kopf.index(constants.GROUP, constants.VERSION, NT.plural)
def node_tuning_index(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any):
    return {meta["name"]: node_tuning_record(meta, spec, status)}


@kopf.on.event("nodes")
async def indexes_ready(memo: kopf.Memo, **_: Any) -> None:
    # kopf calls event handlers only once every index is filled: until then, an empty index would
    # look like "no policy applies" and the node-tuning loop would delete every NodeTuning.
    if memo.get("indexes_ready"):
        memo.indexes_ready.set()


# --- admission: new pods of workloads resized in place -----------------------------------------------


# Registered by main() only when the webhook is enabled: kopf refuses to start with admission
# handlers and no server to serve them.
def pod_resources(body: kopf.Body, patch: kopf.Patch, policy_index: kopf.Index, memo: kopf.Memo,
                  **_: Any) -> None:
    policies = [p for store in policy_index.values() for p in store]
    name = f'{body["metadata"].get("namespace")}/{body["metadata"].get("name") or body["metadata"].get("generateName")}'
    result = new_pod_containers(body, policies, memo.get("pods") or {})
    if result:
        patch.spec["containers"], why = result
        log.info("admission: pod %s: %s", name, why)
    sysctls = socket_buffer_sysctls(body, policies)
    if sysctls:
        patch.spec["securityContext"] = {**(body["spec"].get("securityContext") or {}), "sysctls": sysctls}
        log.info("admission: pod %s: TCP buffer ceilings %s", name, sysctls)


# --- the loops --------------------------------------------------------------------------------------


def _single(index: kopf.Index) -> dict:
    return {key: next(iter(store)) for key, store in index.items()}


def cluster_view(indices: dict[str, Any]) -> ClusterView:
    nodes = _single(indices["node_index"])
    capacity: dict[str, float] = {}
    for _, allocatable in nodes.values():
        for r in ("cpu", "memory"):
            if r in allocatable:
                capacity[r] = max(capacity.get(r, 0.0), float(parse_quantity(allocatable[r])))
    hpas: dict[WorkloadRef, frozenset[str]] = {}
    for ref, store in indices["hpa_index"].items():
        hpas[ref] = frozenset().union(*store)
    workloads = {}
    for name in ("deployment_index", "statefulset_index", "daemonset_index"):
        workloads.update(_single(indices[name]))
    return ClusterView(policies=[p for store in indices["policy_index"].values() for p in store],
                       pods=indices["pod_index"], workloads=workloads, hpas=hpas, node_capacity=capacity)


def node_view(indices: dict[str, Any]) -> NodeView:
    return NodeView(nodes={name: node_facts(*facts) for name, facts in _single(indices["node_index"]).items()},
                    node_policies=[p for store in indices["node_tuning_policy_index"].values() for p in store],
                    performance_policies=[p for store in indices["policy_index"].values() for p in store],
                    pods=indices["pod_index"], node_tunings=_single(indices["node_tuning_index"]))


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from our own loader (kopf's fallbacks lack exec plugins and the --kubeconfig
    of the CLIs): one loader for every client. kopf calls it again after a 401, so a rotated token or
    an expired exec credential is read anew."""
    try:
        client = load_api_client()
        credentials, insecure = client.credentials()
    except KubeError as e:
        raise kopf.LoginError(str(e)) from None
    cert, key = credentials.cert or (None, None)
    return kopf.ConnectionInfo(server=client.server, ca_path=client.ca_path, insecure=insecure,
                               token=credentials.token, username=credentials.username,
                               password=credentials.password, certificate_path=cert, private_key_path=key,
                               default_namespace=client.namespace, expiration=credentials.expires)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config: OperatorSettings = memo.config
    # Our own prefix for anything kopf stores on objects, so two kopf operators never mix state.
    settings.persistence.finalizer = constants.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=constants.GROUP)
    # Watches end server-side after 5 min and are re-opened: a watch silently broken by a proxy or
    # load balancer is noticed within minutes instead of never. The client waits a little longer.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    if config.webhook_port:
        # The chart (or the test) owns the MutatingWebhookConfiguration, with failurePolicy Ignore.
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0", port=config.webhook_port, host=config.webhook_host, certfile=config.webhook_cert_file,
            pkeyfile=config.webhook_key_file)
        settings.admission.managed = None
    settings.posting.level = logging.WARNING  # kopf's own Events only for problems; ours explain decisions
    memo.pods = PodWatch(load_api_client(), config.namespaces, server_timeout=settings.watching.server_timeout,
                         client_timeout=settings.watching.client_timeout,
                         connect_timeout=settings.watching.connect_timeout)
    memo.pods.start()
    indices = {name: kwargs[name] for name in ("policy_index", "deployment_index", "statefulset_index",
                                               "daemonset_index", "hpa_index", "node_index",
                                               "node_tuning_policy_index", "node_tuning_index")}
    indices["pod_index"] = memo.pods
    metrics: OperatorMetrics = memo.metrics
    evaluator = Evaluator(config, Prometheus(config), Kube(), metrics)
    memo.indexes_ready = asyncio.Event()  # kopf's indexes
    ready = asyncio.Event()  # and the pods

    async def all_ready() -> None:
        started = time.monotonic()
        await memo.indexes_ready.wait()
        await memo.pods.wait_synced()
        log.info("indexes filled, pods of %d workloads listed: %.1f s after start-up", len(memo.pods),
                 time.monotonic() - started)
        ready.set()

    memo.readiness = asyncio.create_task(all_ready())
    # Blocking calls (Kubernetes, Prometheus) run in threads: enough for the concurrent evaluations,
    # the pod watch and kopf's own, whatever the CPU count.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(config.evaluation_concurrency + 8, thread_name_prefix="kubetune"))
    memo.leadership = leadership(config, metrics)
    if isinstance(memo.leadership, ShardedLeadership):
        memo.election = asyncio.create_task(memo.leadership.run())
    memo.evaluation = asyncio.create_task(evaluator.run_forever(
        lambda: cluster_view(indices), ready=ready, active=lambda: memo.leadership.leading,
        owns=memo.leadership.owns))
    memo.node_planning = asyncio.create_task(NodePlanner(config, Kube(), metrics).run_forever(
        lambda: node_view(indices), ready=ready, active=lambda: memo.leadership.leads_nodes))


def leadership(config: OperatorSettings, metrics: OperatorMetrics) -> ShardedLeadership | AlwaysLeading:
    if not config.leader_election:
        metrics.leader.set(1)
        return AlwaysLeading()
    namespace = config.leader_election_namespace or os.environ.get("POD_NAMESPACE") or _service_account_namespace()
    identity = config.leader_election_identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    timing = ElectionTiming(config.lease_duration, config.renew_deadline, config.retry_period)
    return ShardedLeadership(Kube(), namespace, config.leader_election_lease, identity, timing,
                             shards=config.shards, fair_share=config.fair_share, on_change=metrics.leader.set)


def _service_account_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else "default"


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in (memo.get("readiness"), memo.get("election"), memo.get("evaluation"), memo.get("node_planning")):
        if task:
            task.cancel()
    if isinstance(memo.get("leadership"), ShardedLeadership):
        await asyncio.to_thread(memo.leadership.release)  # the next leader need not wait out the lease
    if memo.get("pods"):
        memo.pods.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    from kubetune import __version__
    from kubetune.settings import settings_help

    # Parsed before anything else: `--help` must never reach a cluster (a live KUBECONFIG would be acted on).
    parser = argparse.ArgumentParser(
        prog="kubetune-operator", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=settings_help(),
        description="The kubetune operator: watches PerformancePolicies and NodeTuningPolicies, reads Prometheus "
                    "and acts within each policy's bounds. Configured by environment variables only; the Helm "
                    "chart sets them from its values.")
    parser.add_argument("--version", action="version", version=f"kubetune-operator {__version__}")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        config = OperatorSettings.from_env()
    except SettingsError as e:
        print(f"kubetune-operator: bad configuration: {e}", file=sys.stderr)
        sys.exit(2)
    metrics = OperatorMetrics()
    if config.webhook_port:
        kopf.on.mutate("pods", operation="CREATE", id="mutate-pods")(pod_resources)
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
    kopf.run(
        # Standalone in every replica: indexes stay warm and the webhook serves everywhere; only the
        # loops follow the Lease (leadership.py). kopf peering would freeze a standby's watches too.
        clusterwide=not config.namespaces, namespaces=config.namespaces, standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None,
        memo=kopf.Memo(config=config, metrics=metrics),
    )


if __name__ == "__main__":
    main()
