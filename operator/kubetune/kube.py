"""The one interface to the Kubernetes API for everything kopf does not do itself: resizing pods,
patching workload templates, writing policy status, Events and NodeTuning objects.

Synchronous (the official client); the evaluation loop calls it through `asyncio.to_thread`.
Every method is idempotent: patches carry the full desired value, not a delta.

Throttling and conflicts are answered here, once for every caller: a 429 (or a 5xx carrying Retry-After,
as an API server shedding load sends) is retried after the wait the server asks for, as client-go does;
a 409 on a patch without a resourceVersion is retried (the server applies it to the object as it is
then), except a policy status write, which first re-reads the status and gives up rather than
overwrite an action another writer recorded. A Lease update (resourceVersion-guarded) is never retried:
its 409 means another candidate won.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from typing import Any, Callable, Mapping

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubetune import constants
from kubetune.workloads import WorkloadRef

log = logging.getLogger(__name__)

WORKLOAD_PATCH = {"Deployment": "patch_namespaced_deployment", "StatefulSet": "patch_namespaced_stateful_set",
                  "DaemonSet": "patch_namespaced_daemon_set"}


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 = no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def load_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """An API client: `kubeconfig` when given, else in-cluster, else KUBECONFIG / ~/.kube/config.
    Raises KubeError naming what was looked for and how to fix it."""
    try:
        if kubeconfig:
            return kubernetes.config.new_client_from_config(config_file=kubeconfig)
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return kubernetes.client.ApiClient()
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = " ".join(str(e).split())[:120]
        raise KubeError(f"no usable Kubernetes configuration in {where} ({detail}): "
                        f"set KUBECONFIG or --kubeconfig, or run inside a cluster") from None


def connection_reason(error: Exception) -> str:
    """One clause for a request that got no answer (urllib3's text nests three exceptions)."""
    import urllib3

    if isinstance(error, urllib3.exceptions.MaxRetryError):
        pool = error.pool
        return f"cannot connect to the API server {pool.scheme}://{pool.host}:{pool.port}" if pool else \
            "cannot connect to the API server"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):  # e.g. its etcd is gone: the request hangs
        pool = error.pool
        where = f" {pool.scheme}://{pool.host}:{pool.port}" if pool else ""
        limit = re.search(r"read timeout=([\d.]+)", str(error))
        return f"the API server{where} gave no answer within {limit.group(1) if limit else 'the timeout'} s"
    return " ".join(str(error).split())[:200]


# Retries of one call: client-go allows 10, but the evaluation loop's next cycle is the retry after
# these, and one policy must not hold its evaluation slot for minutes.
MAX_ATTEMPTS = 4
MAX_WAIT = 10.0  # seconds: a longer Retry-After is cut to this (the next cycle asks again anyway)
# No answer within this many seconds (connect, read) is a failed call: without a timeout a request
# stuck on an API server whose etcd is gone held the policy's slot until the server's own 60 s.
REQUEST_TIMEOUT = (5, 30)


def retry_wait(status: int, headers: Mapping[str, str] | None, attempt: int) -> float | None:
    """Seconds to wait before attempt `attempt + 1` of a call answered `status`, or None: do not retry.
    429 always retries (Retry-After, else 1, 2, 4 s); a 5xx only with Retry-After (the server says it is
    temporary; a bare 500 is not known to be)."""
    if attempt + 1 >= MAX_ATTEMPTS:
        return None
    after = (headers or {}).get("Retry-After")
    try:
        seconds = float(after) if after is not None else None
    except ValueError:  # an HTTP date: not sent by API servers; wait as if none was given
        seconds = None
    if status == 429:
        return min(MAX_WAIT, max(0.0, seconds if seconds is not None else 2.0 ** attempt))
    if 500 <= status < 600 and seconds is not None:
        return min(MAX_WAIT, max(0.0, seconds))
    return None


def _message(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message", e.reason)
    except Exception:
        return e.reason


def _call(what: str, fn, *args, on_conflict: Callable[[], bool] | None = None,
          sleep: Callable[[float], None] = time.sleep, **kwargs):
    """`fn(*args, **kwargs)`, retried on throttling (see retry_wait) and, when `on_conflict` is given and
    answers True (checked again on every 409), on a conflict; every failure is a KubeError naming `what`."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    for attempt in range(MAX_ATTEMPTS):
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            wait = retry_wait(e.status, e.headers, attempt)
            if e.status == 409 and on_conflict is not None and attempt + 1 < MAX_ATTEMPTS:
                if not on_conflict():
                    raise KubeError(f"{what}: {_message(e)}; changed by another writer since it was read, "
                                    "not overwritten (the next cycle decides on what is there now)", 409) from None
                wait = 0.0
            if wait is None:
                raise KubeError(f"{what}: {_message(e)}", e.status) from None
            log.info("%s: HTTP %s, retrying in %.1f s (attempt %d of %d)", what, e.status, wait, attempt + 2,
                     MAX_ATTEMPTS)
            sleep(wait)
        except Exception as e:  # connection errors
            raise KubeError(f"{what}: {connection_reason(e)}") from e
    raise AssertionError("unreachable: the last attempt returns or raises")


def _always() -> bool:
    return True


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None):
        if api_client is None:
            api_client = load_api_client()
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self.calls = 0  # API calls made, for the operator's metrics and the benchmark
        self.sleep: Callable[[float], None] = time.sleep  # the wait between retries (tests record it)

    def _count(self) -> None:
        self.calls += 1

    def _apply(self, what: str, path: str, body: Mapping[str, Any], *, manager: str) -> None:
        """Server-side apply of `body` at `path` as field manager `manager`, taking over its fields
        (force): the whole intent is sent, so a conflict is retried as it stands."""
        _call(what, self.custom.api_client.call_api, path, "PATCH",
              query_params=[("fieldManager", manager), ("force", "true")],
              header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
              body=body, auth_settings=["BearerToken"], _return_http_data_only=True, on_conflict=_always,
              sleep=self.sleep)

    # --- workloads and pods ----------------------------------------------------------------------

    def resize_pod(self, namespace: str, name: str, containers: Mapping[str, Mapping[str, Any]]) -> None:
        """pods/resize: change running containers' resources in place (stable since Kubernetes 1.35)."""
        self._count()
        body = {"spec": {"containers": [{"name": c, "resources": r} for c, r in containers.items()]}}
        _call(f"resize pod {namespace}/{name}", self.core.patch_namespaced_pod_resize, name, namespace, body,
              on_conflict=_always, sleep=self.sleep)

    def patch_template(self, ref: WorkloadRef, containers: Mapping[str, Mapping[str, Any]]) -> None:
        """Patch the workload's pod template; its controller rolls the change out."""
        self._count()
        body = {"spec": {"template": {"spec": {"containers": [{"name": c, "resources": r}
                                                              for c, r in containers.items()]}}}}
        _call(f"patch {ref.kind} {ref.namespace}/{ref.name}", getattr(self.apps, WORKLOAD_PATCH[ref.kind]),
              ref.name, ref.namespace, body, on_conflict=_always, sleep=self.sleep)

    # --- policy status and Events ----------------------------------------------------------------

    def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any],
                            read_last_action: str | None = None) -> None:
        """Merge `status` into the policy's status. `read_last_action` is the time of the lastAction the
        caller decided on (None: there was none). On a 409 the status is read again and the write retried
        only if its lastAction is still that one or the one being written: an action another writer
        recorded in between is never overwritten."""
        self._count()
        names = constants.PERFORMANCE_POLICY
        writing = (status.get("lastAction") or {}).get("time")

        def unchanged() -> bool:
            self._count()
            current = _call(f"read {names.kind} {namespace}/{name}", self.custom.get_namespaced_custom_object,
                            constants.GROUP, constants.VERSION, namespace, names.plural, name, sleep=self.sleep)
            recorded = ((current.get("status") or {}).get("lastAction") or {}).get("time")
            return recorded in (read_last_action, writing)

        _call(f"patch status of {names.kind} {namespace}/{name}", self.custom.patch_namespaced_custom_object_status,
              constants.GROUP, constants.VERSION, namespace, names.plural, name, {"status": status},
              on_conflict=unchanged, sleep=self.sleep)

    def apply_policy_condition(self, namespace: str, name: str, condition: Mapping[str, Any] | None,
                               condition_type: str) -> None:
        """Server-side apply of one condition of the policy's status, as the node-tuning loop's own field
        manager (conditions are a list-map keyed by type): the evaluation's other conditions are never
        overwritten by it. None = remove the condition this manager set."""
        self._count()
        names = constants.PERFORMANCE_POLICY
        body = {"apiVersion": constants.API_VERSION, "kind": names.kind,
                "metadata": {"name": name, "namespace": namespace},
                "status": {"conditions": [dict(condition)] if condition else []}}
        self._apply(f"apply {condition_type} condition of {names.kind} {namespace}/{name}",
                    f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{namespace}/{names.plural}/{name}/status",
                    body, manager="kubetune-node-planner")

    def event(self, involved: Mapping[str, str], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `involved` (apiVersion, kind, name, namespace, uid); never raises:
        an Event is an explanation, not worth failing a cycle over."""
        self._count()
        now = dt.datetime.now(dt.timezone.utc)
        namespace = involved.get("namespace") or "default"
        body = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{involved['name']}.", namespace=namespace),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=involved.get("apiVersion"), kind=involved["kind"], name=involved["name"],
                namespace=involved.get("namespace"), uid=involved.get("uid")),
            type=type_, reason=reason, message=message[:1024], first_timestamp=now, last_timestamp=now, count=1,
            source=kubernetes.client.V1EventSource(component="kubetune-operator"),
            reporting_component="kubetune.io/operator", reporting_instance="kubetune-operator")
        try:
            _call(f"post Event {reason}", self.core.create_namespaced_event, namespace, body, sleep=self.sleep)
        except KubeError as e:
            log.warning("could not post Event %s on %s/%s: %s", reason, involved["kind"], involved["name"], e)

    # --- leader election ----------------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count()
        try:
            lease = _call(f"get Lease {namespace}/{name}", self.coordination.read_namespaced_lease, name, namespace,
                          sleep=self.sleep)
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return self.coordination.api_client.sanitize_for_serialization(lease)

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self._count()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
        _call(f"create Lease {namespace}/{name}", self.coordination.create_namespaced_lease, namespace, body,
              sleep=self.sleep)

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str) -> None:
        """Patch the Lease's spec only if it is still at `resource_version` (409 otherwise)."""
        self._count()
        body = {"metadata": {"resourceVersion": resource_version}, "spec": dict(spec)}
        _call(f"update Lease {namespace}/{name}", self.coordination.patch_namespaced_lease, name, namespace, body,
              sleep=self.sleep)

    # --- NodeTuning --------------------------------------------------------------------------------

    def apply_node_tuning(self, name: str, spec: Mapping[str, Any], labels: Mapping[str, str],
                          annotations: Mapping[str, str] | None = None) -> None:
        """Create the node's NodeTuning, or replace its spec (server-side apply: the operator owns spec,
        the agent owns status, neither overwrites the other). Labels and annotations the operator applied
        before and leaves out now are removed."""
        self._count()
        names = constants.NODE_TUNING
        metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if annotations:
            metadata["annotations"] = dict(annotations)
        body = {"apiVersion": constants.API_VERSION, "kind": names.kind, "metadata": metadata, "spec": dict(spec)}
        self._apply(f"apply NodeTuning {name}", f"/apis/{constants.GROUP}/{constants.VERSION}/{names.plural}/{name}",
                    body, manager="kubetune-operator")

    def patch_node_tuning_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the NodeTuning's status (the operator only writes its Ready condition
        there, when the node's agent stopped reporting)."""
        self._count()
        names = constants.NODE_TUNING
        _call(f"patch status of {names.kind} {name}", self.custom.patch_cluster_custom_object_status,
              constants.GROUP, constants.VERSION, names.plural, name, {"status": dict(status)},
              on_conflict=_always, sleep=self.sleep)

    def patch_node_tuning_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        self._count()
        names = constants.NODE_TUNING_POLICY
        _call(f"patch status of {names.kind} {name}", self.custom.patch_cluster_custom_object_status,
              constants.GROUP, constants.VERSION, names.plural, name, {"status": status},
              on_conflict=_always, sleep=self.sleep)

    def delete_node_tuning(self, name: str) -> None:
        self._count()
        names = constants.NODE_TUNING
        try:
            _call(f"delete NodeTuning {name}", self.custom.delete_cluster_custom_object,
                  constants.GROUP, constants.VERSION, names.plural, name, sleep=self.sleep)
        except KubeError as e:
            if e.status != 404:
                raise
