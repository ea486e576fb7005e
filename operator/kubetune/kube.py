"""The one interface to the Kubernetes API for everything kopf does not do itself: resizing pods,
patching workload templates, writing policy status, Events and NodeTuning objects; and the one place
that turns a kubeconfig or a pod's service account into credentials (kopf's login, the pod watch, the
node agent and the CLIs all use `load_api_client`).

Synchronous, on `requests` (not the official `kubernetes` client: its generated models cost ~45 MiB of
the operator's memory, and kopf imports it whenever it is installed); the evaluation loop calls it
through `asyncio.to_thread`. Every method is idempotent: patches carry the full desired value, not a delta.

Throttling and conflicts are answered here, once for every caller: a 429 (or a 5xx carrying Retry-After,
as an API server shedding load sends) is retried after the wait the server asks for, as client-go does;
a 409 on a patch without a resourceVersion is retried (the server applies it to the object as it is
then), except a policy status write, which first re-reads the status and gives up rather than
overwrite an action another writer recorded. A Lease update (resourceVersion-guarded) is never retried:
its 409 means another candidate won.

Credentials: in-cluster, the service account's token, re-read when older than a minute and once on a
401 (bound tokens rotate, as client-go re-reads them); from a kubeconfig, a token or token file, a
client certificate (path or data), basic auth, or an `exec` credential plugin (ExecCredential v1 or
v1beta1, cached until its expirationTimestamp and run again on a 401). The removed `auth-provider`
plugins (gcp, azure, oidc) are refused with a KubeError naming the exec plugin that replaces them.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import quote, urlsplit

import requests
import yaml

from kubetune import constants

if TYPE_CHECKING:  # the node agent imports this module: it needs no pydantic models to talk to the API
    from kubetune.workloads import WorkloadRef

log = logging.getLogger(__name__)

WORKLOAD_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
# Built-in kinds take a strategic merge patch (a container list is merged by name); custom objects
# only a JSON merge patch; server-side apply its own type (JSON is YAML).
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_MAX_AGE = 60.0  # seconds: a service account token file older than this is read again (client-go's period)
EXEC_TIMEOUT = 60.0  # seconds an exec credential plugin may take (a browser login is not run: no terminal)


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 = no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class ApiError(Exception):
    """The API server answered an error status; `message` is its Status message."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{status} {message}")
        self.status, self.message, self.headers = status, message, dict(headers or {})

    @classmethod
    def of(cls, response: requests.Response) -> ApiError:
        try:
            message = response.json().get("message") or response.reason
        except ValueError:
            message = response.reason or response.text[:200]
        return cls(response.status_code, message, response.headers)


class Gone(Exception):
    """The resource version of a watch is too old (HTTP 410): list again."""


# --- credentials -------------------------------------------------------------------------------------


_private_files: list[str] = []


def _private_file(data: bytes) -> str:
    """A file only this user can read holding `data` (certificate or key data: requests takes paths);
    removed when the process ends."""
    fd, path = tempfile.mkstemp(prefix="kubetune-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if not _private_files:
        atexit.register(lambda: [Path(p).unlink(missing_ok=True) for p in _private_files])
    _private_files.append(path)
    return path


@dataclass(frozen=True)
class Credentials:
    """What one request authenticates with: headers, and a client certificate and key (paths)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None
    cert: tuple[str, str] | None = None
    expires: dt.datetime | None = None


class Auth:
    """How a client gets its credentials; `renew()` after a 401 says whether anything new is worth a retry."""

    def current(self) -> Credentials:
        return Credentials()

    def renew(self) -> bool:
        return False


@dataclass
class StaticAuth(Auth):
    credentials: Credentials

    def current(self) -> Credentials:
        return self.credentials


class TokenFileAuth(Auth):
    """A token file that its owner rewrites (a bound service account token rotates hourly): read again
    when older than TOKEN_MAX_AGE, and at once on a 401."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.monotonic):
        self.path, self.clock = Path(path), clock
        self._lock = threading.Lock()
        self._token, self._read_at = self._read(), clock()

    def _read(self) -> str:
        return self.path.read_text().strip()

    def current(self) -> Credentials:
        with self._lock:
            if self.clock() - self._read_at > TOKEN_MAX_AGE:
                self._token, self._read_at = self._read(), self.clock()
            return Credentials(token=self._token)

    def renew(self) -> bool:
        with self._lock:
            token = self._read()
            self._read_at = self.clock()
            changed, self._token = token != self._token, token
        log.info("API server answered 401: token file %s read again (%s)", self.path,
                 "changed" if changed else "unchanged")
        return True  # retried once even if unchanged: the server may have been reading an older one


class ExecAuth(Auth):
    """A kubeconfig `exec` credential plugin (client.authentication.k8s.io v1 / v1beta1 ExecCredential):
    its token or client certificate, cached until its expirationTimestamp, fetched again on a 401."""

    API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")

    def __init__(self, spec: Mapping[str, Any], user: str, base_dir: Path,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        """`user` names the kubeconfig user in errors."""
        self.user, self.now = user, now
        self.api_version = spec.get("apiVersion") or ""
        if self.api_version not in self.API_VERSIONS:
            raise KubeError(f"{user}: exec.apiVersion {self.api_version!r} is not supported "
                            f"(use {' or '.join(self.API_VERSIONS)})")
        command = str(spec.get("command") or "")
        if not command:
            raise KubeError(f"{user}: exec.command is empty")
        # As client-go: a relative command with a path separator is relative to the kubeconfig's folder.
        if os.sep in command and not os.path.isabs(command):
            command = str(base_dir / command)
        self.argv = [command, *map(str, spec.get("args") or [])]
        self.env = {e["name"]: str(e["value"]) for e in spec.get("env") or []}
        self.hint = spec.get("installHint") or ""
        self._lock = threading.Lock()
        self._cached: Credentials | None = None

    def _run(self) -> Credentials:
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        what = f"{self.user}: exec plugin {self.argv[0]}"
        try:
            done = subprocess.run(self.argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=EXEC_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KubeError(f"{what}: {e}" + (f" ({self.hint.strip()})" if self.hint else "")) from None
        if done.returncode != 0:
            stderr = " ".join(done.stderr.decode(errors="replace").split())[:300]
            raise KubeError(f"{what} exited {done.returncode}: {stderr}")
        try:
            status = json.loads(done.stdout)["status"]
        except (ValueError, KeyError, TypeError):
            raise KubeError(f"{what}: its output is not an ExecCredential with a status") from None
        cert = None
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            cert = (_private_file(status["clientCertificateData"].encode()),
                    _private_file(status["clientKeyData"].encode()))
        if not status.get("token") and cert is None:
            raise KubeError(f"{what}: the ExecCredential has neither a token nor a client certificate and key")
        expires = status.get("expirationTimestamp")
        return Credentials(token=status.get("token"), cert=cert,
                           expires=dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None)

    def current(self) -> Credentials:
        with self._lock:
            if self._cached is None or (self._cached.expires is not None and self._cached.expires <= self.now()):
                self._cached = self._run()
            return self._cached

    def renew(self) -> bool:
        with self._lock:
            self._cached = self._run()
        return True


class ApiClient:
    """A `requests.Session` to one API server: its URL, how its certificate is checked, and the credentials."""

    def __init__(self, server: str, *, ca_path: str | None = None, insecure: bool = False, auth: Auth | None = None,
                 namespace: str | None = None):
        self.server = server.rstrip("/")
        self.ca_path, self.insecure = ca_path, insecure
        self.auth = auth or Auth()
        self.namespace = namespace  # the kubeconfig context's or the service account's
        self.session = requests.Session()
        self.session.verify = False if insecure else (ca_path or True)
        if insecure:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", stream: bool = False,
                timeout: tuple[float, float] | None = None) -> requests.Response:
        """One request; an error status raises ApiError, no answer a requests exception. A 401 asks the
        credentials to renew once (a rotated token, an expired exec credential) and tries again."""
        data = None if body is None else json.dumps(body)
        for renewed in (False, True):
            credentials = self.auth.current()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            if credentials.token:
                headers["Authorization"] = f"Bearer {credentials.token}"
            response = self.session.request(
                method, self.server + path, params=params, data=data, headers=headers, stream=stream,
                timeout=timeout or REQUEST_TIMEOUT, cert=credentials.cert,
                # Per request: requests lets REQUESTS_CA_BUNDLE override the session's own CA otherwise.
                verify=self.session.verify,
                auth=(credentials.username, credentials.password) if credentials.username else None)
            if response.status_code == 401 and not renewed and self.auth.renew():
                response.close()
                continue
            if response.status_code >= 400:
                error = ApiError.of(response)
                response.close()
                raise error
            return response
        raise AssertionError("unreachable: the second pass returns or raises")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request`, answering the decoded JSON body (None when empty)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def watch(self, path: str, params: Mapping[str, Any], timeout: tuple[float, float]) -> Iterator[dict]:
        """The events of a watch on the collection at `path`, until the server ends it; an ERROR event
        with code 410 raises Gone (list again), any other ERROR a RuntimeError."""
        response = self.request("GET", path, params={**params, "watch": "true"}, stream=True, timeout=timeout)
        try:
            for line in response.iter_lines(chunk_size=None):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise Gone(status.get("message", ""))
                    raise RuntimeError(f"watch error: {status.get('message', status)}")
                yield event
        finally:
            response.close()

    def credentials(self) -> tuple[Credentials, bool]:
        """The current credentials, for kopf's login (its own HTTP client)."""
        return self.auth.current(), self.insecure


def _kubeconfig_paths(kubeconfig: str | None) -> list[Path]:
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    return [Path(p.strip()).expanduser() for p in listed] or [Path("~/.kube/config").expanduser()]


def _file_or_data(entry: Mapping[str, Any], key: str, base: Path) -> str | None:
    """A path for `key` (relative to the kubeconfig that names it) or for `key-data` (written once to a
    private file)."""
    if entry.get(f"{key}-data"):
        return _private_file(base64.b64decode(entry[f"{key}-data"]))
    if entry.get(key):
        return str(base / Path(entry[key]).expanduser())
    return None


def kubeconfig_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An ApiClient from a kubeconfig (`kubeconfig`, else every file KUBECONFIG lists, merged as kubectl
    does: the first to name an entry wins, else ~/.kube/config) and its current context."""
    paths = _kubeconfig_paths(kubeconfig)
    where = os.pathsep.join(map(str, paths))
    current, entries = None, {"contexts": {}, "clusters": {}, "users": {}}
    for path in paths:
        if not path.exists() and not kubeconfig and len(paths) > 1:
            continue  # kubectl skips a missing file of a list
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a kubeconfig mapping")
        current = current or config.get("current-context")
        for kind, single in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in config.get(kind) or []:
                entries[kind].setdefault(item["name"], (item.get(single) or {}, path.parent))
    name = context or current
    if not name:
        raise KubeError(f"kubeconfig {where}: no current-context set (kubectl config use-context NAME)")
    if name not in entries["contexts"]:
        raise KubeError(f"kubeconfig {where}: context {name!r} not found "
                        f"(contexts: {', '.join(sorted(entries['contexts'])) or 'none'})")
    ctx, _ = entries["contexts"][name]
    if ctx.get("cluster") not in entries["clusters"]:
        raise KubeError(f"kubeconfig {where}: cluster {ctx.get('cluster')!r} of context {name!r} not found")
    cluster, cluster_dir = entries["clusters"][ctx["cluster"]]
    user, user_dir = entries["users"].get(ctx.get("user"), ({}, Path.cwd()))
    if not cluster.get("server"):
        raise KubeError(f"kubeconfig {where}: cluster {ctx['cluster']!r} has no server")
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise KubeError(f"kubeconfig {where}: user {ctx.get('user')!r} uses the {provider!r} auth-provider plugin, "
                        "which kubetune does not support (client-go removed the gcp and azure providers): use its "
                        "exec credential plugin instead (gke-gcloud-auth-plugin, kubelogin, aws eks get-token)")
    auth: Auth
    if user.get("exec"):
        auth = ExecAuth(user["exec"], f"kubeconfig {where}: user {ctx.get('user')!r}", user_dir)
    elif user.get("tokenFile"):
        auth = TokenFileAuth(user_dir / user["tokenFile"])
    else:
        cert = _file_or_data(user, "client-certificate", user_dir)
        key = _file_or_data(user, "client-key", user_dir)
        auth = StaticAuth(Credentials(token=user.get("token"), username=user.get("username"),
                                      password=user.get("password"), cert=(cert, key) if cert and key else None))
    return ApiClient(cluster["server"], ca_path=_file_or_data(cluster, "certificate-authority", cluster_dir),
                     insecure=bool(cluster.get("insecure-skip-tls-verify")), auth=auth,
                     namespace=ctx.get("namespace"))


def in_cluster_client(directory: Path = SERVICE_ACCOUNT_DIR) -> ApiClient | None:
    """The pod's service account, or None outside a pod."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (directory / "token").exists():
        return None
    host = f"[{host}]" if ":" in host else host
    namespace = directory / "namespace"
    return ApiClient(f"https://{host}:{port}", ca_path=str(directory / "ca.crt"), auth=TokenFileAuth(directory / "token"),
                     namespace=namespace.read_text().strip() if namespace.exists() else None)


def load_api_client(kubeconfig: str | None = None) -> ApiClient:
    """An API client: `kubeconfig` when given, else in-cluster, else KUBECONFIG / ~/.kube/config.
    Raises KubeError naming what was looked for and how to fix it."""
    try:
        return (None if kubeconfig else in_cluster_client()) or kubeconfig_client(kubeconfig)
    except KubeError:
        raise
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = " ".join(str(e).split())[:120]
        raise KubeError(f"no usable Kubernetes configuration in {where} ({detail}): "
                        f"set KUBECONFIG or --kubeconfig, or run inside a cluster") from None


def connection_reason(error: Exception) -> str:
    """One clause for a request that got no answer (requests' text nests three exceptions)."""
    request = getattr(error, "request", None)
    parts = urlsplit(request.url) if request is not None and request.url else None
    where = f" {parts.scheme}://{parts.netloc}" if parts else ""
    if isinstance(error, requests.exceptions.ReadTimeout):  # e.g. its etcd is gone: the request hangs
        limit = re.search(r"read timeout=([\d.]+)", str(error))
        return f"the API server{where} gave no answer within {limit.group(1) if limit else 'the timeout'} s"
    if isinstance(error, requests.exceptions.SSLError):
        reason = re.search(r"\[SSL[^\]]*\] ([^(]+)", str(error))
        return f"TLS with the API server{where} failed: {reason.group(1).strip() if reason else 'see the CA'}"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"cannot connect to the API server{where}"
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


def _call(what: str, fn, *args, on_conflict: Callable[[], bool] | None = None,
          sleep: Callable[[float], None] = time.sleep, **kwargs):
    """`fn(*args, **kwargs)`, retried on throttling (see retry_wait) and, when `on_conflict` is given and
    answers True (checked again on every 409), on a conflict; every failure is a KubeError naming `what`."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return fn(*args, **kwargs)
        except ApiError as e:
            wait = retry_wait(e.status, e.headers, attempt)
            if e.status == 409 and on_conflict is not None and attempt + 1 < MAX_ATTEMPTS:
                if not on_conflict():
                    raise KubeError(f"{what}: {e.message}; changed by another writer since it was read, "
                                    "not overwritten (the next cycle decides on what is there now)", 409) from None
                wait = 0.0
            if wait is None:
                raise KubeError(f"{what}: {e.message}", e.status) from None
            log.info("%s: HTTP %s, retrying in %.1f s (attempt %d of %d)", what, e.status, wait, attempt + 2,
                     MAX_ATTEMPTS)
            sleep(wait)
        except KubeError as e:  # credentials that could not be had (an exec plugin that failed)
            raise KubeError(f"{what}: {e}", e.status) from None
        except Exception as e:  # connection errors
            raise KubeError(f"{what}: {connection_reason(e)}") from e
    raise AssertionError("unreachable: the last attempt returns or raises")


def _always() -> bool:
    return True


def send(api: ApiClient, what: str, method: str, path: str, body: Any = None, *,
         on_conflict: Callable[[], bool] | None = None, sleep: Callable[[float], None] = time.sleep,
         **kwargs: Any) -> Any:
    """One API call with the retry policy above: its decoded JSON answer, or a KubeError naming `what`."""
    return _call(what, api.call, method, path, body=body, on_conflict=on_conflict, sleep=sleep, **kwargs)


def _custom_path(names: constants.KindNames, name: str = "", namespace: str | None = None) -> str:
    scope = f"/namespaces/{quote(namespace)}" if namespace else ""
    return f"/apis/{constants.GROUP}/{constants.VERSION}{scope}/{names.plural}" + (f"/{quote(name)}" if name else "")


class Kube:
    def __init__(self, api_client: ApiClient | None = None):
        self.api = api_client if api_client is not None else load_api_client()
        self.calls = 0  # API calls made, for the operator's metrics and the benchmark
        self.sleep: Callable[[float], None] = time.sleep  # the wait between retries (tests record it)

    def _count(self) -> None:
        self.calls += 1

    def _send(self, what: str, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
              params: Mapping[str, Any] | None = None, on_conflict: Callable[[], bool] | None = None) -> Any:
        return send(self.api, what, method, path, body, content_type=content_type, params=params,
                    on_conflict=on_conflict, sleep=self.sleep)

    def _apply(self, what: str, path: str, body: Mapping[str, Any], *, manager: str) -> None:
        """Server-side apply of `body` at `path` as field manager `manager`, taking over its fields
        (force): the whole intent is sent, so a conflict is retried as it stands."""
        self._send(what, "PATCH", path, body, content_type=APPLY, params={"fieldManager": manager, "force": "true"},
                   on_conflict=_always)

    # --- workloads and pods ----------------------------------------------------------------------

    def resize_pod(self, namespace: str, name: str, containers: Mapping[str, Mapping[str, Any]]) -> None:
        """pods/resize: change running containers' resources in place (stable since Kubernetes 1.35)."""
        self._count()
        body = {"spec": {"containers": [{"name": c, "resources": r} for c, r in containers.items()]}}
        self._send(f"resize pod {namespace}/{name}", "PATCH",
                   f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}/resize", body,
                   content_type=STRATEGIC, on_conflict=_always)

    def patch_template(self, ref: WorkloadRef, containers: Mapping[str, Mapping[str, Any]]) -> None:
        """Patch the workload's pod template; its controller rolls the change out."""
        self._count()
        body = {"spec": {"template": {"spec": {"containers": [{"name": c, "resources": r}
                                                              for c, r in containers.items()]}}}}
        self._send(f"patch {ref.kind} {ref.namespace}/{ref.name}", "PATCH",
                   f"/apis/apps/v1/namespaces/{quote(ref.namespace)}/{WORKLOAD_PLURAL[ref.kind]}/{quote(ref.name)}",
                   body, content_type=STRATEGIC, on_conflict=_always)

    # --- policy status and Events ----------------------------------------------------------------

    def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any],
                            read_last_action: str | None = None) -> None:
        """Merge `status` into the policy's status. `read_last_action` is the time of the lastAction the
        caller decided on (None: there was none). On a 409 the status is read again and the write retried
        only if its lastAction is still that one or the one being written: an action another writer
        recorded in between is never overwritten."""
        self._count()
        names = constants.PERFORMANCE_POLICY
        path = _custom_path(names, name, namespace)
        writing = (status.get("lastAction") or {}).get("time")

        def unchanged() -> bool:
            self._count()
            current = self._send(f"read {names.kind} {namespace}/{name}", "GET", path)
            recorded = ((current.get("status") or {}).get("lastAction") or {}).get("time")
            return recorded in (read_last_action, writing)

        self._send(f"patch status of {names.kind} {namespace}/{name}", "PATCH", f"{path}/status",
                   {"status": status}, content_type=MERGE, on_conflict=unchanged)

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
                    f"{_custom_path(names, name, namespace)}/status", body, manager="kubetune-node-planner")

    def event(self, involved: Mapping[str, str], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `involved` (apiVersion, kind, name, namespace, uid); never raises:
        an Event is an explanation, not worth failing a cycle over."""
        self._count()
        namespace = involved.get("namespace") or "default"
        body = event_body(involved, type_, reason, message, component="kubetune-operator")
        body["metadata"]["namespace"] = namespace
        body.update(reportingComponent="kubetune.io/operator", reportingInstance="kubetune-operator")
        try:
            self._send(f"post Event {reason}", "POST", f"/api/v1/namespaces/{quote(namespace)}/events", body)
        except KubeError as e:
            log.warning("could not post Event %s on %s/%s: %s", reason, involved["kind"], involved["name"], e)

    # --- leader election ----------------------------------------------------------------------------

    @staticmethod
    def _lease_path(namespace: str, name: str = "") -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases" + (f"/{quote(name)}" if name else "")

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count()
        try:
            return self._send(f"get Lease {namespace}/{name}", "GET", self._lease_path(namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self._count()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
        self._send(f"create Lease {namespace}/{name}", "POST", self._lease_path(namespace), body)

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str) -> None:
        """Patch the Lease's spec only if it is still at `resource_version` (409 otherwise)."""
        self._count()
        body = {"metadata": {"resourceVersion": resource_version}, "spec": dict(spec)}
        self._send(f"update Lease {namespace}/{name}", "PATCH", self._lease_path(namespace, name), body,
                   content_type=STRATEGIC)

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
        self._apply(f"apply NodeTuning {name}", _custom_path(names, name), body, manager="kubetune-operator")

    def patch_node_tuning_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the NodeTuning's status (the operator only writes its Ready condition
        there, when the node's agent stopped reporting)."""
        self._count()
        names = constants.NODE_TUNING
        self._send(f"patch status of {names.kind} {name}", "PATCH", f"{_custom_path(names, name)}/status",
                   {"status": dict(status)}, content_type=MERGE, on_conflict=_always)

    def patch_node_tuning_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        self._count()
        names = constants.NODE_TUNING_POLICY
        self._send(f"patch status of {names.kind} {name}", "PATCH", f"{_custom_path(names, name)}/status",
                   {"status": status}, content_type=MERGE, on_conflict=_always)

    def delete_node_tuning(self, name: str) -> None:
        self._count()
        try:
            self._send(f"delete NodeTuning {name}", "DELETE", _custom_path(constants.NODE_TUNING, name))
        except KubeError as e:
            if e.status != 404:
                raise


def event_body(involved: Mapping[str, str | None], type_: str, reason: str, message: str, *, component: str,
               host: str | None = None, name_prefix: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """A core/v1 Event on `involved` (apiVersion, kind, name, namespace, uid), as the operator and the
    node agent post it."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reference = {"apiVersion": involved.get("apiVersion"), "kind": involved["kind"], "name": involved["name"],
                 "namespace": involved.get("namespace"), "uid": involved.get("uid")}
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": name_prefix or f"{involved['name']}."},
            "involvedObject": {k: v for k, v in reference.items() if v},
            "type": type_, "reason": reason, "message": message[:1024], "firstTimestamp": stamp, "lastTimestamp": stamp,
            "count": 1, "source": {"component": component, **({"host": host} if host else {})}}
