"""A real local Kubernetes control plane and Prometheus, as plain processes on loopback.

etcd, kube-apiserver (RBAC on, client-certificate auth, service-account keys), kube-controller-manager,
kube-scheduler and kwok (simulating nodes and the pods on them) run from the pinned binaries that
build-binaries.sh caches; Prometheus is Debian's package. No Docker engine is needed.

    python deploy/local/localcluster.py up [--nodes 3]    # start, write .kubetune/cluster/kubeconfig, return
    python deploy/local/localcluster.py up --real-node    # also one real kubelet node (realnode.py)
    python deploy/local/localcluster.py down              # stop everything `up` started
    python deploy/local/localcluster.py status

The test suite uses the same classes (tests/conftest.py); there each process dies with the test
session (PR_SET_PDEATHSIG), so a killed pytest leaves no orphans. Setup problems raise SetupError,
whose message is one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_STATE_DIR = REPO / ".kubetune" / "cluster"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


class SetupError(Exception):
    """The local cluster cannot start; the message says what is wrong and how to fix it."""


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))


def versions() -> dict[str, str]:
    pins = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def binary(name: str) -> str:
    """Path of a pinned binary from the cache (or Debian's, for prometheus)."""
    if name == "prometheus":
        found = shutil.which("prometheus")
        if not found:
            raise SetupError("prometheus is not installed: run `make setup` (apt-get install prometheus)")
        return found
    pins = versions()
    version = {"etcd": pins["ETCD_VERSION"], "kwok": pins["KWOK_VERSION"], "helm": pins["HELM_VERSION"]}.get(
        name, pins["KUBERNETES_VERSION"])
    path = cache_dir() / "bin" / f"{name}-{version}"
    if not os.access(path, os.X_OK):
        raise SetupError(f"{name} {version} is not built: run `deploy/local/build-binaries.sh` (or `make setup`)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SetupError(f"port {port} on 127.0.0.1 ({what}) is in use: stop what holds it "
                             f"(`python deploy/local/localcluster.py down`?) or pick another port") from None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel kills it when the test session dies.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Processes:
    """The processes one cluster started, in start order; recorded in pids.json for `down`."""

    state_dir: Path
    tie_to_parent: bool
    pids: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.state_dir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,
                                preexec_fn=_die_with_parent if self.tie_to_parent else None)
        self.pids[name] = proc.pid
        (self.state_dir / "pids.json").write_text(json.dumps(self.pids))
        return proc

    def check_alive(self, name: str) -> None:
        pid = self.pids[name]
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            finished = 0 if _alive(pid) else pid
        if finished:
            log = self.state_dir / "logs" / f"{name}.log"
            last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["(no output)"]
            raise SetupError(f"{name} exited during start-up: {last[0][:300]} (full log: {log})")

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `timeout`."""
        pid = self.pids.pop(name, None)
        if pid is None:
            return
        terminate_group(pid, timeout)
        (self.state_dir / "pids.json").write_text(json.dumps(self.pids))

    def stop_all(self, timeout: float = 10.0) -> None:
        for name in reversed(list(self.pids)):
            self.stop(name, timeout)


def terminate_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL what is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the processes a previous `up` recorded (used by `down`, and before a fresh `up`)."""
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        return []
    procs = Processes(state_dir, tie_to_parent=False, pids=json.loads(pids_file.read_text()))
    names = [n for n, pid in procs.pids.items() if _alive(pid)]
    procs.stop_all()
    pids_file.unlink(missing_ok=True)
    return names


# --- certificates -------------------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None, client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (group system:masters), service-account keys."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubetune-local-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            *[x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")]]
    server = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), server_key, ca_name,
                   ca_key, sans=sans)
    admin_key = _key()
    admin = _cert(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "kubetune-admin")]),
                  admin_key, ca_name, ca_key, client=True)
    # The API server's identity towards kubelets (exec, logs, port-forward on a real node).
    kubelet_client_key = _key()
    kubelet_client = _cert(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                      x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client")]),
                           kubelet_client_key, ca_name, ca_key, client=True)
    for name, cert in (("ca", ca), ("apiserver", server), ("admin", admin), ("apiserver-kubelet-client", kubelet_client)):
        (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki / "ca.key", ca_key)
    _write_key(pki / "apiserver.key", server_key)
    _write_key(pki / "admin.key", admin_key)
    _write_key(pki / "apiserver-kubelet-client.key", kubelet_client_key)
    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def client_certificate(pki: Path, out: Path, user: str, groups: list[str]) -> tuple[Path, Path]:
    """A client certificate the cluster CA in `pki` signs for `user` in `groups` (e.g. a kubelet's
    system:node:<name> in system:nodes). Returns (out.crt, out.key)."""
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = _key()
    subject = x509.Name([*[x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups],
                         x509.NameAttribute(NameOID.COMMON_NAME, user)])
    cert = _cert(subject, key, ca.subject, ca_key, client=True)
    crt_path, key_path = out.with_suffix(".crt"), out.with_suffix(".key")
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return crt_path, key_path


def serving_certificate(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signs for 127.0.0.1/localhost: for a webhook the local API server
    calls on loopback. Returns (ca.crt, tls.crt, tls.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    cert = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key, ca_name, ca_key,
                 sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[2], key)
    return paths


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kubetune-local",
        "clusters": [{"name": "kubetune-local",
                      "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "kubetune-admin", "user": {"client-certificate": str(pki / "admin.crt"),
                                                      "client-key": str(pki / "admin.key")}}],
        "contexts": [{"name": "kubetune-local", "context": {"cluster": "kubetune-local", "user": "kubetune-admin"}}],
    }
    path.write_text(yaml.safe_dump(config))


# Inserted into kwok's pod-ready stage: report each container's resources in its status, as a
# kubelet with in-place resize does. The API server allows pods/resize only for pods whose running
# containers report resources. kwok does not act on a resize afterwards (status keeps the old values);
# a real kubelet does.
CONTAINER_RESOURCES_TEMPLATE = """        {{ with .resources }}
        resources:{{ YAML . 2 }}
        {{ end }}
"""


def kwok_config(path: Path) -> Path:
    stages = cache_dir() / f"kwok-stages-{versions()['KWOK_VERSION']}"
    if not (stages / "pod-ready.yaml").exists():
        raise SetupError(f"kwok's stages are missing in {stages}: run `deploy/local/build-binaries.sh`")
    ready = (stages / "pod-ready.yaml").read_text()
    anchor = "        restartCount: 0\n"
    if anchor not in ready:
        raise SetupError(f"kwok's pod-ready stage changed shape ({stages / 'pod-ready.yaml'}); update localcluster.py")
    ready = ready.replace(anchor, anchor + CONTAINER_RESOURCES_TEMPLATE, 1)
    documents = [ready] + [(stages / f"pod-{name}.yaml").read_text() for name in ("complete", "delete")]
    path.write_text("\n---\n".join(d.strip() for d in documents) + "\n")
    return path


def kwok_node(name: str, index: int) -> dict:
    """A fake node kwok manages: labelled, schedulable, no taint (so DaemonSets land on it)."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "kwok.8x32",
                                "kubetune.io/pool": "general" if index % 2 == 0 else "batch"}},
        "spec": {},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }


# --- the cluster --------------------------------------------------------------------------------

@dataclass
class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback."""

    state_dir: Path
    nodes: int = 3
    apiserver_port: int = 0  # 0: pick a free port
    tie_to_parent: bool = True
    procs: Processes = field(init=False)
    # How etcd and the API server were started, so a fault test can stop and start them again.
    _argv: dict[str, list[str]] = field(init=False, default_factory=dict)
    _ready: dict[str, Callable[[], bool]] = field(init=False, default_factory=dict)

    @property
    def kubeconfig(self) -> str:
        return str(self.state_dir / "kubeconfig")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([binary("kubectl"), *args], input=input, capture_output=True, text=True,
                              env=self.env, check=check, timeout=timeout)

    def start(self, timeout: float = 120.0) -> None:
        for tool in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"):
            binary(tool)  # fail early, with the fix, if a binary is missing
        if self.apiserver_port:
            check_port_free(self.apiserver_port, "kube-apiserver")
        stop_recorded(self.state_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        (self.state_dir / "logs").mkdir(parents=True)
        self.procs = Processes(self.state_dir, self.tie_to_parent)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pki = self.state_dir / "pki"
        make_pki(pki)
        etcd_port, peer_port = free_port(), free_port()
        api_port = self.apiserver_port or free_port()
        server = f"https://127.0.0.1:{api_port}"
        write_kubeconfig(self.state_dir / "kubeconfig", server, pki)
        self._argv["etcd"] = [
            binary("etcd"), "--name", "default", "--data-dir", str(self.state_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            # A throwaway test store: durability buys nothing and fsync dominates on slow disks.
            "--unsafe-no-fsync", "--quota-backend-bytes", str(4 << 30), "--log-level", "warn"]
        self._ready["etcd"] = lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).ok
        self.procs.start("etcd", self._argv["etcd"])
        self._wait("etcd", deadline, self._ready["etcd"])
        self._argv["kube-apiserver"] = [
            binary("kube-apiserver"), "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"), "--authorization-mode", "Node,RBAC",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged=true",
            # A real node (realnode.py) is reached by its InternalIP, never by resolving its hostname.
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            # Loopback is not a valid Endpoints address; nothing here needs the kubernetes Service endpoints.
            "--endpoint-reconciler-type", "none", "--profiling=false",
            # Webhooks behind a Service (the chart's) are called at their pod's address: there is no
            # kube-proxy on this machine, and a ClusterIP would follow the default route off it.
            "--enable-aggregator-routing=true"]
        self.procs.start("kube-apiserver", self._argv["kube-apiserver"])
        ca, cert = str(pki / "ca.crt"), (str(pki / "admin.crt"), str(pki / "admin.key"))
        self._ready["kube-apiserver"] = lambda: requests.get(f"{server}/readyz", verify=ca, cert=cert, timeout=2).ok
        self._wait("kube-apiserver", deadline, self._ready["kube-apiserver"])
        self.start_controller_manager()
        self.procs.start("kube-scheduler", [binary("kube-scheduler"), *self._common_flags(), "--secure-port",
                                            str(free_port())])
        self.procs.start("kwok", [
            binary("kwok"), "--kubeconfig", self.kubeconfig, "--manage-all-nodes=false",
            "--config", str(kwok_config(self.state_dir / "kwok.yaml")),
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--cidr", "10.244.0.1/16", "--node-ip", "127.0.0.1",
            "--server-address", f"127.0.0.1:{free_port()}"])
        nodes = [kwok_node(f"kwok-node-{i}", i) for i in range(self.nodes)]
        created = self.kubectl("apply", "-f", "-", check=False,
                               input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
        if created.returncode:
            raise SetupError(f"creating the kwok nodes failed: {created.stderr.strip()[:300]}")
        self._wait("kwok nodes Ready", deadline, lambda: self.ready_nodes() >= self.nodes)
        # Pods need the namespace's default ServiceAccount, which the controller-manager creates.
        self._wait("default ServiceAccount", deadline,
                   lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0)

    def _common_flags(self) -> list[str]:
        return ["--kubeconfig", self.kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1"]

    def start_controller_manager(self, *extra_flags: str) -> None:
        """(Re)start kube-controller-manager; the benchmarks raise its client rate with extra flags."""
        pki = self.state_dir / "pki"
        self.procs.stop("kube-controller-manager")
        self.procs.start("kube-controller-manager", [
            binary("kube-controller-manager"), *self._common_flags(), "--secure-port", str(free_port()),
            "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
            "--use-service-account-credentials=false", *extra_flags])

    # --- faults: stop and start a control-plane part as it was started (tests/cluster/test_api_faults.py)

    def restart_apiserver(self, timeout: float = 120.0, kill: bool = False) -> None:
        """Stop kube-apiserver (SIGTERM, or SIGKILL when `kill`), start it again with the same flags and
        port, and return once it is ready."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs.pids["kube-apiserver"], signal.SIGKILL)
        self.procs.stop("kube-apiserver")
        self._start_again("kube-apiserver", timeout)

    def stop_etcd(self) -> None:
        """Stop etcd: the API server stays up and answers errors (or nothing) until start_etcd()."""
        self.procs.stop("etcd")

    def start_etcd(self, timeout: float = 120.0) -> None:
        """Start etcd again on its data and ports, and return once the API server is ready on it."""
        self._start_again("etcd", timeout)
        self._wait("kube-apiserver", time.monotonic() + timeout, self._ready["kube-apiserver"])

    def _start_again(self, name: str, timeout: float) -> None:
        self.procs.start(name, self._argv[name])
        self._wait(name, time.monotonic() + timeout, self._ready[name])

    def ready_nodes(self) -> int:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode:
            return 0
        # Ready, and the node-lifecycle controller has lifted its not-ready taint (pods can land).
        return sum(any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                   and not n["spec"].get("taints") for n in json.loads(out.stdout)["items"])

    def _wait(self, what: str, deadline: float, ready) -> None:
        while time.monotonic() < deadline:
            for name in self.procs.pids:
                self.procs.check_alive(name)
            with contextlib.suppress(requests.RequestException, subprocess.SubprocessError):
                if ready():
                    return
            time.sleep(0.3)
        raise SetupError(f"timed out waiting for {what}; logs are in {self.state_dir / 'logs'}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process (SIGTERM, SIGKILL after `timeout`; a throwaway test cluster needs no grace)."""
        self.procs.stop_all(timeout)
        (self.state_dir / "pids.json").unlink(missing_ok=True)


@dataclass
class ExistingCluster:
    """A cluster someone else runs (kind on a laptop), named by KUBECONFIG."""

    kubeconfig: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        kubectl = shutil.which("kubectl")
        with contextlib.suppress(SetupError):
            kubectl = binary("kubectl")
        if not kubectl:
            raise SetupError("kubectl not found: run `deploy/local/build-binaries.sh` or install kubectl")
        return subprocess.run([kubectl, *args], input=input, capture_output=True, text=True, env=self.env,
                              check=check, timeout=timeout)

    def stop(self) -> None:
        pass


# --- Prometheus ---------------------------------------------------------------------------------

@dataclass
class LocalPrometheus:
    """Debian's Prometheus on loopback; targets come from files in sd_dir (file-based service discovery),
    so tests add and remove scrape targets at run time without a reload."""

    state_dir: Path
    port: int = 0
    scrape_interval: str = "1s"
    tie_to_parent: bool = True
    procs: Processes = field(init=False)
    _config: dict = field(init=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sd_dir(self) -> Path:
        return self.state_dir / "targets"

    def start(self, timeout: float = 60.0) -> None:
        prometheus = binary("prometheus")
        if self.port:
            check_port_free(self.port, "prometheus")
        else:
            self.port = free_port()
        stop_recorded(self.state_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        (self.state_dir / "logs").mkdir(parents=True)
        self.sd_dir.mkdir()
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval,
                       "scrape_timeout": self.scrape_interval},
            "rule_files": [str(self.state_dir / "rules" / "*.yaml")],
            "scrape_configs": [{"job_name": "kubetune-local",
                                "file_sd_configs": [{"files": [str(self.sd_dir / "*.json")], "refresh_interval": "1s"}]}],
        }
        (self.state_dir / "rules").mkdir()
        self._config = config
        (self.state_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.procs = Processes(self.state_dir, self.tie_to_parent)
        self.procs.start("prometheus", [
            prometheus, f"--config.file={self.state_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.state_dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d", "--log.level=warn"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.procs.check_alive("prometheus")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=1).ok:
                    return
            time.sleep(0.2)
        self.stop()
        raise SetupError(f"Prometheus did not become ready; log: {self.state_dir / 'logs' / 'prometheus.log'}")

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape `address` (host:port) as job `name`; picked up within a second."""
        tmp = self.sd_dir / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": [address], "labels": {"job": name, **(labels or {})}}]))
        tmp.rename(self.sd_dir / f"{name}.json")  # atomic: Prometheus never reads half a file

    def remove_target(self, name: str) -> None:
        (self.sd_dir / f"{name}.json").unlink(missing_ok=True)

    def add_scrape_config(self, job: dict) -> None:
        """Add (or replace, by job_name) a whole scrape config and reload: for targets that need more
        than file-SD gives, e.g. a kubelet's https endpoints with a client certificate."""
        jobs = [j for j in self._config["scrape_configs"] if j["job_name"] != job["job_name"]]
        self._config["scrape_configs"] = [*jobs, job]
        tmp = self.state_dir / ".prometheus.yml.tmp"
        tmp.write_text(yaml.safe_dump(self._config))
        tmp.rename(self.state_dir / "prometheus.yml")
        reload = requests.post(f"{self.url}/-/reload", timeout=10)
        if not reload.ok:
            raise SetupError(f"Prometheus refused the scrape config {job['job_name']}: {reload.text.strip()[:300]}")

    def stop(self) -> None:
        self.procs.stop_all()
        (self.state_dir / "pids.json").unlink(missing_ok=True)


# --- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--apiserver-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--prometheus-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--real-node", action="store_true",
                        help="also start one real kubelet node with containerd (needs root; see realnode.py)")
    args = parser.parse_args(argv)
    args.state_dir = args.state_dir.resolve()  # the kubeconfig names its certificates by absolute path
    cluster_dir, prom_dir = args.state_dir / "kube", args.state_dir / "prometheus"
    node_dir = args.state_dir / "realnode"
    import realnode  # here, not at the top: realnode imports this module
    try:
        if args.command == "down":
            stopped = realnode.stop_recorded(node_dir) if node_dir.exists() else []
            stopped += stop_recorded(cluster_dir) + stop_recorded(prom_dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        elif args.command == "status":
            for d in (cluster_dir, prom_dir):
                pids = json.loads((d / "pids.json").read_text()) if (d / "pids.json").exists() else {}
                for name, pid in pids.items():
                    print(f"{name:24} pid {pid:<8} {'running' if _alive(pid) else 'DEAD'}")
            if not (cluster_dir / "pids.json").exists():
                print("not running")
            if owner := realnode.running_owner():
                print(f"{'real node ' + realnode.NODE_NAME:24} pid {owner['init_pid']:<8} running")
        else:
            start = time.monotonic()
            cluster = LocalCluster(cluster_dir, nodes=args.nodes, apiserver_port=args.apiserver_port,
                                   tie_to_parent=False)
            cluster.start()
            prometheus = LocalPrometheus(prom_dir, port=args.prometheus_port, tie_to_parent=False)
            prometheus.start()
            (args.state_dir / "prometheus-url").write_text(prometheus.url)
            if args.real_node:
                node = realnode.RealNode(node_dir, cluster, tie_to_parent=False)
                node.start()
                for job in node.scrape_configs():
                    prometheus.add_scrape_config(job)
            real = f" and real node {realnode.NODE_NAME} (taint {realnode.NODE_TAINT})" if args.real_node else ""
            print(f"cluster up in {time.monotonic() - start:.1f} s: {args.nodes} kwok nodes{real}\n"
                  f"  export KUBECONFIG={cluster.kubeconfig}\n"
                  f"  export PATH={cache_dir() / 'bin'}:$PATH\n"
                  f"  Prometheus: {prometheus.url} (targets: {prometheus.sd_dir}/*.json)")
    except SetupError as e:
        print(f"kubetune local cluster: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if node_dir.exists():
            realnode.stop_recorded(node_dir)
        stop_recorded(cluster_dir)
        stop_recorded(prom_dir)
        return 130
    return 0


if __name__ == "__main__":
    # realnode.py imports this module by name: let it find this run's copy (one SetupError class).
    sys.modules.setdefault("localcluster", sys.modules[__name__])
    sys.exit(main())
