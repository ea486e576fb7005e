"""One real kubelet node beside the kwok nodes: pods that execute, with real cgroups.

kubelet and containerd (v2, both built from Go modules by build-binaries.sh), Debian's runc and CNI
plugins, joined to a LocalCluster's API server. They run in a network and mount namespace of their own:

- network: the kubelet refuses a loopback node IP and the API server's node proxy refuses non-global
  addresses, so the node gets NODE_ADDRESS on a veth pair to the host (no default route; nothing can
  leave the machine). Pods get POD_CIDR on a CNI bridge; the host routes POD_CIDR through the veth, so
  Prometheus and load generators on the host reach pods. The loopback-only API server is reached
  through a relay (socat over a unix socket), at 127.0.0.1:<its port> for the kubelet and at
  10.96.0.1:443 (the `kubernetes` Service) for pods.
- mounts: containerd's overlay mounts, pod netns files, kubelet volumes and the fixed paths the
  binaries insist on (/run/containerd, /var/lib/cni, /var/log/containers, /var/lib/kubelet) live in the
  private mount namespace and vanish with it; the host sees none of them.
- cgroups: everything (kubelet, containerd, shims, containers) lives under CGROUP_ROOT in every
  hierarchy; the kubelet's cgroupRoot is CGROUP_ROOT, so pods are in <hierarchy>/CGROUP_ROOT/kubepods/...

Cleaning up: stop() (and `localcluster.py down`) SIGTERMs the node's init process, which stops the
kubelet and containerd, kills every process left under CGROUP_ROOT, unmounts, and removes the cgroups.
The init process gets SIGTERM also when the test session dies (PR_SET_PDEATHSIG), so a killed pytest
leaves nothing behind; if init itself was SIGKILLed, the next start() or `down` cleans the leftovers.
One real node per machine: the cgroup root and the veth name are fixed.

    node = RealNode(state_dir, cluster)        # cluster: a started LocalCluster
    node.start()                               # node `real-node-0` Ready, pause image imported
    node.import_image(archive)                 # an OCI archive (ociarchive.py); pods use imagePullPolicy: Never
    for job in node.scrape_configs(): prometheus.add_scrape_config(job)
    node.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import localcluster  # noqa: E402  (a script folder, not a package)
import ociarchive  # noqa: E402
from localcluster import SetupError  # noqa: E402

NODE_NAME = "real-node-0"
NODE_LABEL = "kubetune.io/real-node"
# Only pods that tolerate it land on the real node: other tests' pods expect kwok to "run" them.
NODE_TAINT = f"{NODE_LABEL}=true:NoSchedule"
CGROUP_ROOT = "kubetune-realnode"
HOST_VETH = "kt-realnode"
# Addresses exist only on the veth pair and inside the node's namespaces; there is no default route.
HOST_ADDRESS, NODE_ADDRESS, LINK_PREFIX = "10.209.255.1", "10.209.255.2", 30
POD_CIDR, POD_GATEWAY = "10.209.0.0/24", "10.209.0.1"
SERVICE_CIDR, KUBERNETES_SERVICE_IP = "10.96.0.0/16", "10.96.0.1"
CNI_BIN_DIR = Path("/usr/lib/cni")
# Paths containerd and the kubelet use whatever their configuration says; a tmpfs over each in the
# node's mount namespace keeps them off the host.
PRIVATE_PATHS = [Path("/run/containerd"), Path("/var/lib/cni"), Path("/var/log/containers"),
                 Path("/var/lib/kubelet")]  # the kubelet's device-plugin socket ignores --root-dir
OWNER_FILE = Path("/run/kubetune-realnode.json")  # which state dir and init pid hold the node
PAUSE_IMAGE = "kubetune.local/pause:1"
BUSYBOX_IMAGE = "kubetune.local/busybox:1"


def _pin(name: str) -> str:
    return localcluster.versions()[name]


def node_binary(name: str) -> str:
    """Path of a pinned kubelet/containerd binary in the cache."""
    version = _pin("CONTAINERD_VERSION") if name.startswith(("containerd", "ctr")) else _pin("KUBERNETES_VERSION")
    path = localcluster.cache_dir() / "bin" / f"{name}-{version}"
    if not os.access(path, os.X_OK):
        raise SetupError(f"{name} {version} is not built: run `deploy/local/build-binaries.sh` (or `make setup`)")
    return str(path)


def debian_tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise SetupError(f"{name} is missing: run `make setup` (apt-get install {package})")
    return found


# --- cgroups ------------------------------------------------------------------------------------

def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(line.split()[4]))
    return mounts


def tracking_hierarchy() -> Path:
    """The hierarchy whose CGROUP_ROOT subtree holds every node process (one is enough to find them)."""
    hierarchies = cgroup_hierarchies()
    for path in hierarchies:
        unified = path == Path("/sys/fs/cgroup") and (path / "cgroup.controllers").exists()
        if path.name == "pids" or unified:
            return path
    raise SetupError(f"no usable cgroup hierarchy (neither v1 pids nor v2 at /sys/fs/cgroup; found "
                     f"{', '.join(map(str, hierarchies)) or 'none'}): the kubelet needs one")


def make_cgroup_root() -> None:
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        try:
            root.mkdir(exist_ok=True)
        except OSError as e:
            raise SetupError(f"cannot create cgroup {root} ({e.strerror}): the real node needs writable cgroups") from None
        # A v1 cpuset cgroup takes no tasks until it has CPUs and memory nodes.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (root / name).exists() and not (root / name).read_text().strip():
                (root / name).write_text((hierarchy / name).read_text())
    (tracking_hierarchy() / CGROUP_ROOT / "runtime").mkdir(exist_ok=True)


def processes_in_cgroup_root() -> list[int]:
    pids = []
    for hierarchy in cgroup_hierarchies():
        for directory, _, files in os.walk(hierarchy / CGROUP_ROOT):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
    return sorted(set(pids) - {os.getpid()})


def kill_cgroup_root(timeout: float = 20.0) -> None:
    """SIGKILL every process under CGROUP_ROOT (containers, shims, runtimes) until none is left."""
    deadline = time.monotonic() + timeout
    while pids := processes_in_cgroup_root():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise SetupError(f"processes {pids[:10]} under cgroup {CGROUP_ROOT} survive SIGKILL")
        time.sleep(0.1)


def remove_cgroup_root() -> None:
    for hierarchy in cgroup_hierarchies():
        for directory, _, _ in os.walk(hierarchy / CGROUP_ROOT, topdown=False):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(directory)


def join_cgroup(pid: int, relative: str) -> None:
    (tracking_hierarchy() / relative / "cgroup.procs").write_text(str(pid))


# --- kernel tunables ----------------------------------------------------------------------------

# The kubelet sets these host-wide sysctls at start (not namespaced); they are put back on stop.
KUBELET_KERNEL_TUNABLES = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]


def save_kernel_tunables(state: Path) -> None:
    saved = {}
    for key in KUBELET_KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            saved[key] = Path("/proc/sys", key).read_text().strip()
    (state / "kernel-tunables.json").write_text(json.dumps(saved))


def restore_kernel_tunables(state: Path) -> None:
    saved_file = state / "kernel-tunables.json"
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads(saved_file.read_text()).items():
            path = Path("/proc/sys", key)
            if path.read_text().strip() != value:
                path.write_text(value)
        saved_file.unlink()


# --- mounts -------------------------------------------------------------------------------------

def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` in this process's mount namespace, deepest last."""
    prefix = str(path).rstrip("/")
    points = [line.split()[4].replace("\\040", " ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [Path(p) for p in points if p == prefix or p.startswith(prefix + "/")]


def remove_created_dirs(state: Path) -> None:
    """rmdir the PRIVATE_PATHS the node created on the host as mount points (if still empty)."""
    record = state / "created-dirs.json"
    with contextlib.suppress(OSError, ValueError):
        for created in json.loads(record.read_text()):
            with contextlib.suppress(OSError):
                os.rmdir(created)
        record.unlink()


def unmount_under(path: Path) -> None:
    for point in reversed(mounts_under(path)):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True)


# --- images -------------------------------------------------------------------------------------

def _image_cache() -> Path:
    directory = localcluster.cache_dir() / "images"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def pause_image() -> Path:
    """An OCI archive of PAUSE_IMAGE: pause/pause.c built static. Cached by the source's hash."""
    source = HERE / "pause" / "pause.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    archive = _image_cache() / f"pause-{digest}.tar"
    if archive.exists():
        return archive
    gcc = debian_tool("gcc", "gcc libc6-dev")
    work = _image_cache() / f"pause-{digest}.build"
    work.mkdir(exist_ok=True)
    built = subprocess.run([gcc, "-static", "-O2", "-s", "-o", str(work / "pause"), str(source)],
                           capture_output=True, text=True)
    if built.returncode:
        raise SetupError(f"building the pause binary failed (apt-get install libc6-dev?): {built.stderr.strip()[:300]}")
    layer = ociarchive.file_layer(work / "layer.tar", [ociarchive.File("pause", work / "pause")])
    ociarchive.write_oci_archive(archive, PAUSE_IMAGE, [layer], entrypoint=["/pause"])
    shutil.rmtree(work)
    return archive


BUSYBOX_APPLETS = ["sh", "cat", "echo", "ls", "mkdir", "sleep", "ps", "nproc", "dd", "wget", "httpd", "env", "true"]


def busybox_image() -> Path:
    """An OCI archive of BUSYBOX_IMAGE: Debian's static busybox with a few applet links."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise SetupError("/bin/busybox is missing: run `make setup` (apt-get install busybox-static)")
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()[:16]
    archive = _image_cache() / f"busybox-{digest}.tar"
    if archive.exists():
        return archive
    entries = [ociarchive.File("bin/busybox", busybox), *[ociarchive.Symlink(f"bin/{a}", "busybox") for a in BUSYBOX_APPLETS],
               ociarchive.Directory("tmp", 0o1777)]
    layer = ociarchive.file_layer(_image_cache() / f"busybox-{digest}.layer", entries)
    ociarchive.write_oci_archive(archive, BUSYBOX_IMAGE, [layer], cmd=["/bin/sh"])
    layer.unlink()
    return archive


# --- configuration ------------------------------------------------------------------------------

def containerd_config(state: Path) -> str:
    return f"""version = 3
root = "{state / 'containerd' / 'root'}"
state = "{state / 'containerd' / 'state'}"

[grpc]
  address = "{state / 'containerd.sock'}"

[ttrpc]
  address = "{state / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state / 'containerd' / 'opt'}"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{debian_tool('runc', 'runc')}"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{state / 'cni' / 'net.d'}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
"""


def cni_config(state: Path) -> dict:
    return {
        "cniVersion": "1.0.0", "name": "kubetune-realnode",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True, "hairpinMode": True,
            # No default route and no masquerading: pods reach only the node, the host end of the
            # veth and the API server relay; nothing they send can leave the machine.
            "isDefaultGateway": False, "ipMasq": False,
            "ipam": {"type": "host-local", "dataDir": str(state / "cni" / "ipam"),
                     "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                     "routes": [{"dst": f"{HOST_ADDRESS}/32"}, {"dst": SERVICE_CIDR}]},
        }],
    }


def kubelet_config(state: Path, pki: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_ADDRESS, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{state / 'containerd.sock'}",
        # Facts of this kind of machine: cgroup v1, no systemd, swap possibly on, no resolver to copy.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False, "resolvConf": "",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "podLogsDir": str(state / "pod-logs"), "volumePluginDir": str(state / "volume-plugins"),
        "registerWithTaints": [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}],
        # A test machine's disk may be fuller than a server's: evict and collect images only when nearly full.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "clusterDomain": "cluster.local", "serializeImagePulls": False,
    }


def kubelet_kubeconfig(path: Path, server: str, pki: Path, cert: Path, key: Path) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "node", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "local", "user": "node"}}],
    }))


def kubelet_argv(state: Path, name: str) -> list[str]:
    return [node_binary("kubelet"), "--config", str(state / "kubelet.yaml"),
            "--kubeconfig", str(state / "kubelet.kubeconfig"), "--root-dir", str(state / "kubelet"),
            "--cert-dir", str(state / "kubelet" / "pki"),
            "--hostname-override", name, "--node-ip", NODE_ADDRESS, "--node-labels", f"{NODE_LABEL}=true",
            # cAdvisor finds containers (and labels series with container=) only through containerd's socket.
            "--containerd", str(state / "containerd.sock")]


def containerd_argv(state: Path) -> list[str]:
    return [node_binary("containerd"), "--config", str(state / "containerd.toml"), "--log-level", "warn"]


# --- checks -------------------------------------------------------------------------------------

def check_prerequisites() -> None:
    """Raise SetupError, one line with the fix, for the first thing the node lacks."""
    if os.geteuid() != 0:
        raise SetupError("the real node needs root (it creates namespaces, cgroups and mounts): run as root")
    for name in ("kubelet", "containerd", "ctr", "containerd-shim-runc-v2"):
        node_binary(name)
    for tool, package in (("runc", "runc"), ("socat", "socat"), ("ip", "iproute2"), ("unshare", "util-linux"),
                          ("nsenter", "util-linux"), ("iptables", "iptables")):
        debian_tool(tool, package)
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).exists():
            raise SetupError(f"CNI plugin {CNI_BIN_DIR / plugin} is missing: run `make setup` "
                             "(apt-get install containernetworking-plugins)")
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode:
        raise SetupError(f"cannot create network/mount namespaces ({probe.stderr.strip()[:200]}): "
                         "the real node needs them (a container without CAP_SYS_ADMIN cannot run it)")
    tracking_hierarchy()


def running_owner() -> dict | None:
    """The state dir and init pid of a real node that is running on this machine, if any."""
    with contextlib.suppress(OSError, ValueError):
        owner = json.loads(OWNER_FILE.read_text())
        # The pid may have been reused since: it must still be a node's init.
        cmdline = Path(f"/proc/{owner['init_pid']}/cmdline").read_bytes()
        if localcluster._alive(owner["init_pid"]) and b"node-init" in cmdline:
            return owner
    return None


# --- the node -----------------------------------------------------------------------------------

@dataclass
class RealNode:
    """containerd + kubelet for node `name`, joined to a started LocalCluster, in namespaces of their own."""

    state_dir: Path
    cluster: localcluster.LocalCluster
    name: str = NODE_NAME
    tie_to_parent: bool = True
    init_pid: int = 0
    procs: localcluster.Processes = field(init=False)
    _init: subprocess.Popen | None = field(init=False, default=None, repr=False)

    local = True  # images, cgroups and the kubelet's endpoints are reachable from this machine
    address = NODE_ADDRESS
    pod_cidr = POD_CIDR
    label = f"{NODE_LABEL}=true"
    taint = NODE_TAINT

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd.sock"

    @property
    def netns(self) -> str:
        return f"/proc/{self.init_pid}/ns/net"

    def start(self, timeout: float = 120.0) -> None:
        check_prerequisites()
        owner = running_owner()
        if owner:
            raise SetupError(f"a real node already runs on this machine (state {owner['state_dir']}, pid "
                             f"{owner['init_pid']}): one per machine; stop it (`localcluster.py down`) first")
        self.state_dir = self.state_dir.resolve()
        clean_leftovers(self.state_dir)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = localcluster.Processes(self.state_dir, self.tie_to_parent)
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        pause = pause_image()
        self._write_configuration()
        make_cgroup_root()
        self.procs.start("relay-host", [debian_tool("socat", "socat"),
                                        f"UNIX-LISTEN:{self.state_dir / 'api.sock'},fork,mode=600",
                                        f"TCP:127.0.0.1:{self._api_port()}"])
        save_kernel_tunables(self.state_dir)
        self._start_init()
        self._connect_network()
        self._wait("containerd", deadline, lambda: self.ctr("version", timeout=5).returncode == 0)
        self.import_image(pause)
        self._wait(f"node {self.name} Ready", deadline, self.ready)

    def _api_port(self) -> int:
        server = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
        return int(server.rsplit(":", 1)[1])

    def _write_configuration(self) -> None:
        state, pki = self.state_dir, self.cluster.state_dir / "pki"
        (state / "pki").mkdir(exist_ok=True)
        cert, key = localcluster.client_certificate(pki, state / "pki" / "kubelet-client", f"system:node:{self.name}",
                                                    ["system:nodes"])
        kubelet_kubeconfig(state / "kubelet.kubeconfig", f"https://127.0.0.1:{self._api_port()}", pki, cert, key)
        (state / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(state, pki)))
        (state / "containerd.toml").write_text(containerd_config(state))
        (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (state / "cni" / "net.d" / "10-kubetune.conflist").write_text(json.dumps(cni_config(state), indent=1))
        # containerd finds its shim by name on PATH.
        (state / "bin").mkdir(exist_ok=True)
        shim = state / "bin" / "containerd-shim-runc-v2"
        shim.unlink(missing_ok=True)
        shim.symlink_to(node_binary("containerd-shim-runc-v2"))
        (state / "node.json").write_text(json.dumps({
            "containerd": containerd_argv(state), "kubelet": kubelet_argv(state, self.name),
            "relay": [debian_tool("socat", "socat"), f"TCP-LISTEN:{self._api_port()},fork,reuseaddr",
                      f"UNIX-CONNECT:{state / 'api.sock'}"],
            "path": f"{state / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}))

    def _start_init(self) -> None:
        log = open(self.state_dir / "logs" / "node-init.log", "ab")
        # SIGTERM, not SIGKILL, when the test session dies: init then cleans up after itself.
        tie = _die_with_parent_gracefully if self.tie_to_parent else None
        init = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "slave", "--",
                                 sys.executable, str(Path(__file__).resolve()), "node-init", str(self.state_dir)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=tie)
        self.init_pid = init.pid
        self._init = init
        join_cgroup(init.pid, f"{CGROUP_ROOT}/runtime")
        OWNER_FILE.write_text(json.dumps({"state_dir": str(self.state_dir), "init_pid": init.pid}))

    def _connect_network(self) -> None:
        """The veth pair, addresses, routes and the API server's Service address, then tell init to go on."""
        ip = debian_tool("ip", "iproute2")
        inside = ["nsenter", f"--net={self.netns}"]
        steps = [
            [ip, "link", "add", HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", str(self.init_pid)],
            [ip, "addr", "add", f"{HOST_ADDRESS}/{LINK_PREFIX}", "dev", HOST_VETH],
            [ip, "link", "set", HOST_VETH, "up"],
            [*inside, ip, "addr", "add", f"{NODE_ADDRESS}/{LINK_PREFIX}", "dev", "eth0"],
            [*inside, ip, "link", "set", "eth0", "up"],
            [*inside, ip, "link", "set", "lo", "up"],
            [ip, "route", "add", POD_CIDR, "via", NODE_ADDRESS, "dev", HOST_VETH],
            [*inside, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            # Pods reach the API server as in-cluster clients do: the `kubernetes` Service's address,
            # sent to the relay on the bridge's address (no kube-proxy here).
            [*inside, debian_tool("iptables", "iptables"), "-t", "nat", "-A", "PREROUTING", "-d",
             f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443", "-j", "DNAT",
             "--to-destination", f"{POD_GATEWAY}:{self._api_port()}"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                raise SetupError(f"real node network: `{' '.join(step[-6:])}` failed: {done.stderr.strip()[:200]}")
        (self.state_dir / "network-ready").touch()

    def _wait(self, what: str, deadline: float, ready) -> None:
        while time.monotonic() < deadline:
            if self._init.poll() is not None:
                raise SetupError(f"the real node stopped during start-up: {_last_line(self.state_dir, 'node-init')} "
                                 f"(logs: {self.state_dir / 'logs'})")
            with contextlib.suppress(requests.RequestException, subprocess.SubprocessError, OSError):
                if ready():
                    return
            time.sleep(0.3)
        raise SetupError(f"timed out waiting for {what}; kubelet: {_last_line(self.state_dir, 'kubelet')} "
                         f"(logs: {self.state_dir / 'logs'})")

    def ready(self) -> bool:
        out = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
        if out.returncode:
            return False
        conditions = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([node_binary("ctr"), "--address", str(self.containerd_socket), "--namespace", "k8s.io",
                               *args], capture_output=True, text=True, timeout=timeout)

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive into the node's image store (pods then use imagePullPolicy: Never)."""
        done = self.ctr("images", "import", str(archive))
        if done.returncode:
            raise SetupError(f"importing {archive} into the real node failed: {done.stderr.strip()[:300]}")

    def scrape_configs(self) -> list[dict]:
        """Prometheus jobs for the kubelet's /metrics and /metrics/cadvisor, as kube-prometheus-stack
        has them (job=kubelet, a metrics_path label, https with the kubelet's self-signed certificate)."""
        pki = self.cluster.state_dir / "pki"
        # cAdvisor samples containers about every 10 s: scraping more often adds load, not data.
        return [{"job_name": f"kubelet{path.replace('/', '-')}", "scheme": "https", "metrics_path": path,
                 "honor_labels": True, "scrape_interval": "5s", "scrape_timeout": "4s",
                 "tls_config": {"insecure_skip_verify": True, "cert_file": str(pki / "admin.crt"),
                                "key_file": str(pki / "admin.key")},
                 "static_configs": [{"targets": [f"{NODE_ADDRESS}:10250"],
                                     "labels": {"job": "kubelet", "metrics_path": path, "node": self.name}}]}
                for path in ("/metrics", "/metrics/cadvisor")]

    def stop(self) -> None:
        stop_init(self.init_pid)
        self.init_pid = 0
        with contextlib.suppress(AttributeError):
            self.procs.stop_all()
        clean_leftovers(self.state_dir)
        self.cluster.kubectl("delete", "node", self.name, "--wait=false", check=False, timeout=10)


@dataclass
class ExistingRealNode:
    """A node of a cluster someone else runs (KUBECONFIG), labelled kubetune.io/real-node=true: its pods
    run, but its images, cgroups and kubelet are out of reach from here."""

    name: str
    local = False
    label = f"{NODE_LABEL}=true"
    taint = NODE_TAINT


def _last_line(state: Path, name: str) -> str:
    log = state / "logs" / f"{name}.log"
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "(no output)"
    return "(no log)"


def _die_with_parent_gracefully() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_init(pid: int, timeout: float = 60.0) -> None:
    """SIGTERM the node's init process and wait for its clean-up (SIGKILL after `timeout`)."""
    if pid and localcluster._alive(pid):
        localcluster.terminate_group(pid, timeout)  # init leads a process group of its own


def clean_leftovers(state_dir: Path) -> None:
    """Remove what a real node leaves when its init was killed: processes, cgroups, the veth, its state.
    Idempotent; the namespaces go with their last process. A node running from another state dir is
    left alone (its cgroups and veth have the same fixed names)."""
    owner = running_owner()
    if owner and owner["state_dir"] != str(state_dir):
        return
    if owner:
        stop_init(owner["init_pid"])
    kill_cgroup_root()
    remove_cgroup_root()
    subprocess.run(["ip", "link", "del", HOST_VETH], capture_output=True)
    restore_kernel_tunables(state_dir)
    remove_created_dirs(state_dir)
    OWNER_FILE.unlink(missing_ok=True)
    for part in ("containerd", "kubelet", "pod-logs", "cni", "network-ready", "api.sock", "containerd.sock",
                 "containerd.sock.ttrpc"):
        path = state_dir / part
        if mounts_under(path):
            continue  # never delete through a mount someone still holds
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stop_recorded(state_dir: Path) -> list[str]:
    """`localcluster.py down`: stop the real node started from state_dir and clean its leftovers."""
    state_dir = state_dir.resolve()
    owner = running_owner()
    stopped = [f"real node {NODE_NAME}"] if owner and owner["state_dir"] == str(state_dir) else []
    clean_leftovers(state_dir)
    return stopped + localcluster.stop_recorded(state_dir)


# --- inside the node's namespaces ---------------------------------------------------------------

class NodeInit:
    """The node's first process, in its own network and mount namespace: starts containerd, the API relay
    and the kubelet, and on SIGTERM stops them and removes everything they made."""

    def __init__(self, state: Path):
        self.state = state
        self.config = json.loads((state / "node.json").read_text())
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, *_):
        self.stopping = True

    def run(self) -> int:
        try:
            self._mount_private_paths()
            self._wait_for(lambda: (self.state / "network-ready").exists())
            env = {**os.environ, "PATH": self.config["path"]}
            self._spawn("containerd", self.config["containerd"], env)
            self._wait_for(lambda: (self.state / "containerd.sock").exists())
            self._spawn("relay-node", self.config["relay"], env)
            self._spawn("kubelet", self.config["kubelet"], env)
            while not self.stopping:
                time.sleep(0.2)
        finally:
            self._teardown()
        return 0

    def _mount_private_paths(self) -> None:
        created = []
        for path in PRIVATE_PATHS:
            if not path.exists():
                path.mkdir(parents=True)
                created.append(str(path))
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(path)], check=True)
        (self.state / "created-dirs.json").write_text(json.dumps(created))

    def _wait_for(self, ready) -> None:
        while not self.stopping and not ready():
            time.sleep(0.05)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        if self.stopping:
            return
        log = open(self.state / "logs" / f"{name}.log", "ab")
        self.children[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=env, start_new_session=True,
                                               preexec_fn=localcluster._die_with_parent)

    def _teardown(self) -> None:
        for name in ("kubelet", "relay-node", "containerd"):
            child = self.children.get(name)
            if child and child.poll() is None:
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
        # Back to the root cgroup, so the whole CGROUP_ROOT tree can go.
        join_cgroup(os.getpid(), "")
        kill_cgroup_root()
        for child in self.children.values():
            child.poll()
        unmount_under(self.state)
        remove_cgroup_root()
        for path in PRIVATE_PATHS:
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True)
        remove_created_dirs(self.state)
        for part in ("containerd", "kubelet", "pod-logs"):
            shutil.rmtree(self.state / part, ignore_errors=True)
        restore_kernel_tunables(self.state)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(OWNER_FILE.read_text())["init_pid"] == os.getpid():
                OWNER_FILE.unlink()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "node-init":
        return NodeInit(Path(argv[1])).run()
    print("usage: realnode.py node-init STATE_DIR  (started by RealNode; see localcluster.py up --real-node)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
