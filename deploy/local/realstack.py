#!/usr/bin/env python3
"""The chart installed for real on the real node, and a real service under real load beside it.

    stack = RealStack(state_dir, cluster, node, prometheus, workload_namespace="demo")
    stack.start()      # images built (cached) and imported, Prometheus reachable from pods, `helm install`
    svc = DemoService(cluster, prometheus, "demo", "checkout", work_cpu_ms=25, cpu="100m")
    svc.deploy()       # on the real node; Prometheus scrapes it as a PodMonitor would
    with httpload.LoadRun(httpload.LoadSpec(svc.url(), rate=2, duration=60)) as load: ...
    stack.stop()       # `helm uninstall`, namespaces, the relay, the agent's journal

What it takes beyond `helm install` (facts of the real node, see realnode.py):
- Images: images.py builds the project's image from the Dockerfile and the demo service's; both are
  imported into the node's containerd and the chart runs with `image.pullPolicy: Never`.
- Prometheus (the harness's LocalPrometheus) listens on loopback. Pods reach the host only at the
  host end of the node's veth (realnode.HOST_ADDRESS: the CNI gives pods a route to that one address),
  so a relay listens there (and nowhere else) and forwards to Prometheus on loopback; the operator's
  `operator.prometheus.url` is http://HOST_ADDRESS:<port>.
- The agent runs with hostNetwork, i.e. in the node's network namespace, where the `kubernetes`
  Service address (KUBERNETES_SERVICE_HOST, as in-cluster clients use it) had no route: the node
  gets one to `lo` and an OUTPUT DNAT to its API server relay, as kube-proxy would give it.
- The webhook's Service is reached by the API server at its pod address (localcluster starts the
  API server with --enable-aggregator-routing: no kube-proxy, and a ClusterIP would leave the machine).
- Everything the chart runs is pinned to the real node (operator.nodeSelector, agent.nodeSelector,
  the node's taint tolerated): kwok nodes get none of it. The operator watches only the workload
  namespaces and the webhook sees only them, so other tests' operators and pods are never touched.
- The agent's journal is a hostPath under the state dir (not /run/kubetune) and is removed on stop.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import images  # noqa: E402  (a script folder, not a package)
import localcluster  # noqa: E402
import realnode  # noqa: E402
from localcluster import SetupError  # noqa: E402

CHART = HERE.parent / "helm" / "kubetune"
RELEASE = "kubetune"
RELEASE_NAMESPACE = "kubetune-system"
ON_REAL_NODE = {"nodeSelector": {realnode.NODE_LABEL: "true"},
                "tolerations": [{"key": realnode.NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}]}


def _image_repository_and_tag(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def chart_values(prometheus_url: str, namespaces: list[str], journal_dir: Path) -> dict:
    """Chart values for the real node: the local image, everything on the real node, intervals short
    enough for a test (the same code paths as production values)."""
    repository, tag = _image_repository_and_tag(images.PROJECT_IMAGE)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # The harness applies deploy/crds itself (tests/conftest.py `crds`, demo.sh): Helm would refuse
        # to adopt CRDs it did not create.
        "crds": {"install": False},
        "operator": {
            # One replica with leader election: the Lease is taken over from a killed pod's identity
            # after leaseDuration; the node has room for two but the tests need one.
            "replicas": 1,
            "leaderElection": {"enabled": True, "leaseDuration": 8, "renewDeadline": 6, "retryPeriod": 2},
            "watchNamespaces": namespaces,
            "prometheus": {"url": prometheus_url, "timeout": 5},
            # cAdvisor on a real kubelet samples a container every ~10 s (its own timestamps): rate()
            # needs two samples, so 30 s, not the 10 s the synthetic exporter allows. A 5 s step: at 2 s
            # the latency correlation has its 20 samples 40 s after load starts, and a steadily starved
            # service (flat latency, flat throttling) is then judged "not a resource bottleneck".
            "rateWindow": "30s", "queryStep": "5s", "recommendationWindow": "5m",
            "recommendationRefresh": "10s", "tick": 1,
            **ON_REAL_NODE,
        },
        # No cert-manager here: Helm generates the webhook's serving certificate.
        "webhook": {"enabled": True, "certManager": {"enabled": False},
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}},
        "agent": {"nodeSelector": ON_REAL_NODE["nodeSelector"], "journalDir": str(journal_dir),
                  "collectionIntervalSeconds": 5},
    }


def route_service_address_for_host_network_pods(node: realnode.RealNode, api_port: int) -> None:
    """In the node's network namespace: KUBERNETES_SERVICE_HOST (10.96.0.1:443) reaches the API server
    relay for the node's own processes (hostNetwork pods), as it does for pods (realnode's PREROUTING
    rule). A route to `lo`, never off the node, so nothing can leave the machine if the rule is gone."""
    inside = ["nsenter", f"--net={node.netns}"]
    ip, iptables = realnode.debian_tool("ip", "iproute2"), realnode.debian_tool("iptables", "iptables")
    rule = ["-t", "nat", "OUTPUT", "-d", f"{realnode.KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"127.0.0.1:{api_port}"]
    steps = [[*inside, ip, "route", "replace", f"{realnode.KUBERNETES_SERVICE_IP}/32", "dev", "lo"],
             [*inside, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]]
    if subprocess.run([*inside, iptables, rule[0], rule[1], "-C", *rule[2:]], capture_output=True).returncode:
        steps.append([*inside, iptables, rule[0], rule[1], "-A", *rule[2:]])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise SetupError(f"real node: `{' '.join(step[2:])}` failed: {done.stderr.strip()[:200]}")


@dataclass
class RealStack:
    """The kubetune chart on the real node, with the image built here and Prometheus reachable from pods."""

    state_dir: Path
    cluster: localcluster.LocalCluster
    node: realnode.RealNode
    prometheus: localcluster.LocalPrometheus
    workload_namespaces: list[str]
    release: str = RELEASE
    namespace: str = RELEASE_NAMESPACE
    tie_to_parent: bool = True
    extra_values: dict = field(default_factory=dict)
    procs: localcluster.Processes = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prometheus_url_for_pods(self) -> str:
        return f"http://{realnode.HOST_ADDRESS}:{self.prometheus.port}"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "agent-journal"

    @property
    def operator_deployment(self) -> str:
        """The chart's name for it (kubetune.fullname: the release alone when it contains "kubetune")."""
        fullname = self.release if "kubetune" in self.release else f"{self.release}-kubetune"
        return f"{fullname}-operator"

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([localcluster.binary("helm"), *args], capture_output=True, text=True,
                              env=self.cluster.env, timeout=timeout)
        if check and done.returncode:
            raise SetupError(f"helm {args[0]} failed: {done.stderr.strip()[-1500:]}")
        return done

    def start(self) -> None:
        self.state_dir = self.state_dir.resolve()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = localcluster.Processes(self.state_dir, self.tie_to_parent)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _timed(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 1)

    def _start(self) -> None:
        started = time.monotonic()
        try:
            archives = [images.build_project(), images.build_demo_service()]
        except images.ImageBuildError as e:
            raise SetupError(str(e)) from None
        self._timed("images built (or cached)", started)
        started = time.monotonic()
        for archive in archives:
            self.node.import_image(archive)
        self._timed("images imported", started)
        api_port = int(yaml.safe_load(Path(self.cluster.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
                       .rsplit(":", 1)[1])
        route_service_address_for_host_network_pods(self.node, api_port)
        # Pods reach Prometheus at the host end of the veth, and only there.
        self.procs.start("prometheus-relay", [
            realnode.debian_tool("socat", "socat"),
            f"TCP-LISTEN:{self.prometheus.port},bind={realnode.HOST_ADDRESS},fork,reuseaddr",
            f"TCP:127.0.0.1:{self.prometheus.port}"])
        for job in self.node.scrape_configs():
            self.prometheus.add_scrape_config(job)
        for ns in [self.namespace, *self.workload_namespaces]:
            self.cluster.kubectl("create", "namespace", ns, check=False)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        values = chart_values(self.prometheus_url_for_pods, self.workload_namespaces, self.journal_dir)
        _merge(values, self.extra_values)
        (self.state_dir / "values.yaml").write_text(yaml.safe_dump(values))
        started = time.monotonic()
        done = self.helm("install", self.release, str(CHART), "--namespace", self.namespace, "-f",
                         str(self.state_dir / "values.yaml"), "--wait", "--timeout", "180s", check=False)
        if done.returncode:
            raise SetupError(f"helm install on the real node failed: {done.stderr.strip()[-600:]}; "
                             f"pods: {self.describe_pods()}")
        self._timed("helm install --wait", started)

    def describe_pods(self) -> str:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-o", "json", check=False)
        if out.returncode:
            return out.stderr.strip()[:300]
        lines = []
        for pod in json.loads(out.stdout)["items"]:
            statuses = pod["status"].get("containerStatuses", [])
            states = ", ".join(f"{s['name']} ready={s['ready']} restarts={s['restartCount']} {list(s['state'])[0]}"
                               f"{': ' + str(next(iter(s['state'].values())).get('reason', '')) if s['state'] else ''}"
                               for s in statuses)
            lines.append(f"{pod['metadata']['name']} on {pod['spec'].get('nodeName')}: "
                         f"{pod['status'].get('phase')} ({states or pod['status'].get('conditions')})")
        return "; ".join(lines) or "none"

    def pods(self, component: str) -> list[dict]:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l",
                                   f"app.kubernetes.io/component={component}", "-o", "json")
        return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]

    def logs(self, component: str, tail: int = 60, previous: bool = False) -> str:
        args = ["logs", "-n", self.namespace, "-l", f"app.kubernetes.io/component={component}", f"--tail={tail}"]
        return self.cluster.kubectl(*args, *(["--previous"] if previous else []), check=False).stdout

    def uninstall(self) -> None:
        """`helm uninstall --wait`, if the release is there."""
        with contextlib.suppress(SetupError, subprocess.SubprocessError, OSError):
            if self.helm("status", self.release, "-n", self.namespace, check=False).returncode == 0:
                self.helm("uninstall", self.release, "-n", self.namespace, "--wait", "--timeout", "120s", check=False)

    def stop(self) -> None:
        self.uninstall()
        for ns in [*self.workload_namespaces, self.namespace]:
            self.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        with contextlib.suppress(AttributeError):
            self.procs.stop_all()
        shutil.rmtree(self.journal_dir, ignore_errors=True)


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# --- the demo service ----------------------------------------------------------------------------

@dataclass
class DemoService:
    """deploy/local/demo-service as a Deployment on the real node, scraped by Prometheus with the
    `namespace` and `pod` labels a PodMonitor gives (the operator's latency queries select on them)."""

    cluster: localcluster.LocalCluster
    prometheus: localcluster.LocalPrometheus
    namespace: str
    name: str = "demo"
    work_cpu_ms: float = 25
    cpu: str = "100m"
    cpu_limit: str | None = None  # None = the request (a Guaranteed CPU share)
    memory: str = "128Mi"
    replicas: int = 1
    _targets: set[str] = field(default_factory=set)

    CONTAINER = "app"

    def manifest(self) -> dict:
        resources = {"requests": {"cpu": self.cpu, "memory": self.memory},
                     "limits": {"cpu": self.cpu_limit or self.cpu, "memory": self.memory}}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": self.name}},
                     "template": {"metadata": {"labels": {"app": self.name}},
                                  "spec": {**ON_REAL_NODE, "terminationGracePeriodSeconds": 2,
                                           "containers": [{
                                               "name": self.CONTAINER, "image": images.DEMO_SERVICE_IMAGE,
                                               "imagePullPolicy": "Never",
                                               "env": [{"name": "WORK_CPU_MS", "value": str(self.work_cpu_ms)}],
                                               "ports": [{"name": "http", "containerPort": 8080}],
                                               "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                                                  "periodSeconds": 2},
                                               "resources": resources}]}}},
        }

    def deploy(self, timeout: float = 120) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(self.manifest()))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.pods()
            if len(pods) == self.replicas and all(_ready(p) for p in pods):
                self.sync_targets()
                return pods
            time.sleep(0.5)
        raise SetupError(f"{self.namespace}/{self.name}: {self.replicas} Ready pods not seen in {timeout:.0f} s: "
                         f"{[(p['metadata']['name'], p['status'].get('phase')) for p in self.pods()]}")

    def pods(self) -> list[dict]:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l", f"app={self.name}", "-o", "json")
        return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]

    def sync_targets(self) -> None:
        """One Prometheus target per running pod (its address, labelled namespace and pod)."""
        wanted = {}
        for pod in self.pods():
            if pod["status"].get("podIP") and pod["status"].get("phase") == "Running":
                name = f"{self.namespace}-{pod['metadata']['name']}"
                wanted[name] = pod
                self.prometheus.add_target(name, f"{pod['status']['podIP']}:8080",
                                           {"namespace": self.namespace, "pod": pod["metadata"]["name"],
                                            "container": self.CONTAINER})
        for gone in self._targets - set(wanted):
            self.prometheus.remove_target(gone)
        self._targets = set(wanted)

    def url(self, pod: dict | None = None) -> str:
        pod = pod or self.pods()[0]
        return f"http://{pod['status']['podIP']}:8080/"

    def remove(self) -> None:
        for target in self._targets:
            self.prometheus.remove_target(target)
        self._targets = set()
        self.cluster.kubectl("delete", "deployment", self.name, "-n", self.namespace, "--wait=false", check=False)


def _ready(pod: dict) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


# --- reading a container from the host -----------------------------------------------------------

def container_cgroup_file(pod: dict, container: str, name: str) -> Path:
    """A cgroup file of a real-node container, from the host (v1: under the controller named by the
    file's prefix; v2: the unified tree), under realnode.CGROUP_ROOT."""
    uid = pod["metadata"]["uid"]
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    controller = {"cpu": "cpu", "memory": "memory", "cpuset": "cpuset"}[name.split(".")[0]]
    roots = [Path("/sys/fs/cgroup", controller, realnode.CGROUP_ROOT), Path("/sys/fs/cgroup", realnode.CGROUP_ROOT)]
    for root in roots:
        found = list(root.glob(f"kubepods/**/pod{uid}/{container_id}/{name}"))
        if found:
            return found[0]
    raise FileNotFoundError(f"{name} of container {container} ({container_id[:12]}) of pod {pod['metadata']['name']}")


def container_pids(pod: dict, container: str) -> list[int]:
    """Host PIDs of a real-node container's processes (from its cgroup.procs)."""
    path = container_cgroup_file(pod, container, "cpu.shares" if Path("/sys/fs/cgroup/cpu").is_dir() else "cpu.max")
    return [int(p) for p in (path.parent / "cgroup.procs").read_text().split()]


# --- the demo (make demo) ----------------------------------------------------------------------------

DEMO_NAMESPACE = "demo"
# The scripted load: (seconds, requests per second). At 35 ms of CPU a request, 2/s needs 70m: the
# 100m CFS quota makes every request wait over 200 ms (p95 above the `slow` rule) until kubetune doubles
# it; 6/s (210m) then runs the pod hot (high-load); 0.5/s leaves it idle (low-load steps it down).
DEMO_PROFILE = [(180, 2.0), (180, 6.0), (240, 0.5)]
DEMO_POLICY = HERE / "demo-realnode.yaml"


def run_demo_load(url: str, rounds: int = 5) -> None:
    """The scripted load, `rounds` times over (bounded: about an hour), one summary line per phase."""
    import httpload
    for round_ in range(rounds):
        for seconds, rate in DEMO_PROFILE:
            spec = httpload.LoadSpec(url, rate=rate, concurrency=16, duration=seconds,
                                     max_requests=int(seconds * rate) + 1, timeout=10)
            s = httpload.run_load(spec).summary()
            print(f"{time.strftime('%H:%M:%S')} round {round_ + 1}: {rate:g}/s for {seconds} s -> p50 {s['p50_ms']} ms, "
                  f"p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, {s['errors']} errors", flush=True)


def _attach(state_dir: Path) -> tuple[localcluster.LocalCluster, realnode.RealNode, localcluster.LocalPrometheus]:
    """The cluster, real node and Prometheus `localcluster.py up --real-node --state-dir` started."""
    cluster = localcluster.LocalCluster(state_dir / "kube", tie_to_parent=False)
    owner = realnode.running_owner()
    if not owner or owner["state_dir"] != str((state_dir / "realnode").resolve()):
        raise SetupError(f"no real node runs from {state_dir / 'realnode'}: "
                         f"`localcluster.py up --real-node --state-dir {state_dir}` first")
    node = realnode.RealNode(state_dir / "realnode", cluster, tie_to_parent=False, init_pid=owner["init_pid"])
    url = (state_dir / "prometheus-url").read_text().strip()
    prometheus = localcluster.LocalPrometheus(state_dir / "prometheus", port=int(url.rsplit(":", 1)[1]),
                                              tie_to_parent=False)
    prometheus._config = yaml.safe_load((prometheus.state_dir / "prometheus.yml").read_text())
    return cluster, node, prometheus


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="kubetune's chart on the real node, and the demo service under load")
    parser.add_argument("command", choices=["up", "down", "load"])
    parser.add_argument("--state-dir", type=Path, default=localcluster.DEFAULT_STATE_DIR)
    parser.add_argument("--url", help="load: the demo service's URL")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "load":
        run_demo_load(args.url)
        return 0
    if args.command == "down":
        stopped = localcluster.stop_recorded(state_dir / "realstack")
        if (state_dir / "kube" / "kubeconfig").exists():
            cluster = localcluster.LocalCluster(state_dir / "kube", tie_to_parent=False)
            subprocess.run([localcluster.binary("helm"), "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait",
                            "--timeout", "60s"], capture_output=True, env=cluster.env, timeout=90)
        shutil.rmtree(state_dir / "realstack" / "agent-journal", ignore_errors=True)
        print(f"stopped: helm release {RELEASE}{', ' + ', '.join(stopped) if stopped else ''}")
        return 0
    try:
        cluster, node, prometheus = _attach(state_dir)
        localcluster.stop_recorded(state_dir / "realstack")
        stack = RealStack(state_dir / "realstack", cluster, node, prometheus, [DEMO_NAMESPACE], tie_to_parent=False)
        stack.uninstall()  # a previous demo's release
        stack.start()
        svc = DemoService(cluster, prometheus, DEMO_NAMESPACE, "checkout", work_cpu_ms=35, cpu="100m")
        svc.deploy()
        cluster.kubectl("apply", "-f", str(DEMO_POLICY))
        stack.procs.start("load", [sys.executable, str(Path(__file__).resolve()), "load", "--url", svc.url()])
    except SetupError as e:
        print(f"kubetune real stack: {e}", file=sys.stderr)
        return 2
    print(f"kubetune installed on {realnode.NODE_NAME} ({', '.join(f'{k} {v} s' for k, v in stack.timings.items())}); "
          f"demo service {svc.url()} under a scripted load (log: {state_dir / 'realstack' / 'logs' / 'load.log'})")
    return 0


if __name__ == "__main__":
    sys.modules.setdefault("realstack", sys.modules[__name__])
    sys.exit(main())
