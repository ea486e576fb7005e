"""The operator at scale: 1,000 PerformancePolicies over 10,000 kwok pods, synthetic cAdvisor series
scraped by the real Prometheus, the operator as a real process (as the image runs it: OPERATOR_COMMAND).

    .venv/bin/python -m pytest tests/bench/bench_operator.py -m bench -s

Scale: KUBETUNE_BENCH_POLICIES (1000; one Deployment each), KUBETUNE_BENCH_REPLICAS (10 pods per
Deployment), KUBETUNE_BENCH_MEASURE_SECONDS (60 per phase); KUBETUNE_BENCH_MALLOC_ARENA_MAX (2, as the
image; empty for glibc's default); KUBETUNE_BENCH_REACTIONS (5 workloads loaded for the reaction);
KUBETUNE_BENCH_KUBE_STATE_METRICS (1; 0 = off): kube-state-metrics' owner series for the pods and the
shipped recording rules, so the operator keeps workload history and the forecaster's hour as it does
where kube-state-metrics runs (most clusters); KUBETUNE_BENCH_TRACEMALLOC (frames; unset = off): the operator runs under tracemalloc and the report
gets its largest allocations after the 1,000-policy phase, by file and by line — a diagnostic run: the
tracing itself costs time and memory, so its cycle and RSS figures are not the budget's. Pods land on kwok-bench-N nodes of 1,000
pods each (the template names the node, so the scheduler is not the bottleneck).

Figures, each printed next to its target; nothing is asserted on time:
- cycle time: `kubetune_evaluation_cycle_duration_seconds` from the operator's /metrics (sum/count
  delta over the phase, and the largest bucket any cycle fell in); the 1,000-policy window starts once
  the cycle of the 900 new policies' first evaluations has ended (a mass apply's warm-up: how long it
  took is printed on its own line);
- RSS: VmRSS (and VmHWM) of the operator process;
- Prometheus queries per cycle: `kubetune_prometheus_queries_total` delta / cycle count delta, with
  a tenth of the policies and with all of them (constant is the target);
- API calls per cycle: `Kube.calls` is not exported, and `apiserver_request_total` has no user-agent
  label (the local API server keeps no audit log), so the API server's own counters are read through
  `kubectl get --raw /metrics`: the requests on what only the operator writes (PerformancePolicy
  status, Events, Deployments, pods/resize) are the operator's; the total of all requests (kwok's
  node heartbeats and controllers included) is printed beside them;
- reaction: workloads get 95 % CPU one after another, at moments spread over the operator's cycle;
  for each, from the moment its sustained-CPU rule holds in Prometheus (the operator's own query,
  polled every 0.5 s) to the template change seen by a watch.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import loadgen  # deploy/local, on sys.path via tests/conftest.py
import localcluster
from kubetune.promql import QueryPlan, cycle_queries
from tests.waiting import wait_for

pytestmark = pytest.mark.bench

POLICIES = int(os.environ.get("KUBETUNE_BENCH_POLICIES", "1000"))
REPLICAS = int(os.environ.get("KUBETUNE_BENCH_REPLICAS", "10"))
MEASURE = float(os.environ.get("KUBETUNE_BENCH_MEASURE_SECONDS", "60"))
REACTIONS = int(os.environ.get("KUBETUNE_BENCH_REACTIONS", "5"))
TRACEMALLOC = os.environ.get("KUBETUNE_BENCH_TRACEMALLOC", "")
KUBE_STATE_METRICS = os.environ.get("KUBETUNE_BENCH_KUBE_STATE_METRICS", "1") == "1"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "kubetune-rules.yaml"
PODS_PER_NODE = 1000
NAMESPACES = 10
INTERVAL = 10  # s: every policy's interval
# The chart's rateWindow and queryStep: the budgets are for the shipped configuration. (A 2 s step, as
# the e2e tests use for short windows, makes every pod's analysis series 150 points instead of 20.)
RATE_WINDOW, SUSTAINED, STEP = "1m", "1m", "15s"
LABEL = "kubetune.io/bench"
CPU_REQUEST = 0.1  # cores
BATCH = 200  # objects per `kubectl apply`
MIB = 2**20


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def apply_list(cluster, items: list[dict]) -> None:
    for i in range(0, len(items), BATCH):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=bench", "-f", "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[i:i + BATCH]}),
                        timeout=300)


def workload(i: int) -> tuple[str, str]:
    return f"bench-{i % NAMESPACES}", f"w-{i}"


def node_count() -> int:
    return math.ceil(POLICIES * REPLICAS / PODS_PER_NODE)


def deployment(i: int) -> dict:
    ns, name = workload(i)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, LABEL: "true"}},
                                  "spec": {"nodeName": f"kwok-bench-{i % node_count()}",
                                           "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                                           "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                                         "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}}}


def policy(i: int) -> dict:
    ns, name = workload(i)
    # Only a high-load rule: idle workloads decide nothing, so the only action is the one measured.
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "mode": "Auto",
                     "interval": f"{INTERVAL}s",
                     "containers": [{"name": "*", "minAllowed": {"cpu": "50m"}, "maxAllowed": {"cpu": "2"}}],
                     "scaling": {"method": "Rollout", "stepPercent": 20, "cooldown": "10m"},
                     "rules": [{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": SUSTAINED,
                                "action": "IncreaseResources"}]}}


def bench_node(i: int) -> dict:
    node = localcluster.kwok_node(f"kwok-bench-{i}", i)
    for key in ("allocatable", "capacity"):
        node["status"][key]["pods"] = str(PODS_PER_NODE)
    return node


def running_pods(cluster) -> list[tuple[str, str]]:
    out = cluster.kubectl("get", "pods", "-A", "-l", LABEL, "--field-selector", "status.phase=Running",
                          "-o", "custom-columns=NS:.metadata.namespace,NAME:.metadata.name", "--no-headers",
                          timeout=120).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


class OwnerSeries:
    """kube-state-metrics' owner series for the bench's pods (Deployment → ReplicaSet → pod, named as
    the controllers name them), for the shipped recording rules' pod → workload join. kwok has no
    kube-state-metrics; these two families are all of it the operator's queries read."""

    def __init__(self, pods: list[tuple[str, str]]):
        self.pods = pods

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        labels = ["namespace", "owner_kind", "owner_name", "owner_is_controller"]
        pod_owner = GaugeMetricFamily("kube_pod_owner", "pod owners", labels=["pod", *labels])
        replicaset_owner = GaugeMetricFamily("kube_replicaset_owner", "ReplicaSet owners", labels=["replicaset", *labels])
        replicasets = set()
        for namespace, pod in self.pods:
            replicaset = pod.rsplit("-", 1)[0]
            pod_owner.add_metric([pod, namespace, "ReplicaSet", replicaset, "true"], 1)
            if (namespace, replicaset) not in replicasets:
                replicasets.add((namespace, replicaset))
                replicaset_owner.add_metric([replicaset, namespace, "Deployment", replicaset.rsplit("-", 1)[0], "true"], 1)
        return [pod_owner, replicaset_owner]


def serve_kube_state_metrics(prometheus, pods: list[tuple[str, str]]):
    """Serve OwnerSeries as job kube-state-metrics (the rules select on it) and load the shipped rules;
    returns the server, to shut down."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(OwnerSeries(pods))
    port = localcluster.free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus.add_target("kube-state-metrics", f"127.0.0.1:{port}")
    (prometheus.state_dir / "rules" / "kubetune-rules.yaml").write_text(RULES.read_text())
    requests.post(f"{prometheus.url}/-/reload", timeout=30).raise_for_status()
    return server


def unserve_kube_state_metrics(prometheus, server) -> None:
    prometheus.remove_target("kube-state-metrics")
    (prometheus.state_dir / "rules" / "kubetune-rules.yaml").unlink(missing_ok=True)
    requests.post(f"{prometheus.url}/-/reload", timeout=30)
    server.shutdown()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(values: dict, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in values.items()
               if n == name and all(dict(labels).get(k) == want for k, want in match.items()))


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# What only the operator writes (verb, resource, subresource): its share of the API server's requests.
OPERATOR_REQUESTS = (("PATCH", "performancepolicies", "status"), ("POST", "events", ""),
                     ("PATCH", "deployments", ""), ("PATCH", "pods", "resize"))


def api_requests(cluster) -> dict[str, float]:
    values = samples(cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout)
    counts = {f"{verb} {resource}{'/' + sub if sub else ''}": total(values, "apiserver_request_total", verb=verb,
                                                                      resource=resource, subresource=sub)
              for verb, resource, sub in OPERATOR_REQUESTS}
    counts["all"] = total(values, "apiserver_request_total")
    return counts


# The operator as the image runs it: the venv keeps the official `kubernetes` package for test helpers,
# and kopf imports it whenever it is importable (~45 MiB of models the image does not have: issue 12).
OPERATOR_COMMAND = [sys.executable, "-c",
                    "import sys; sys.modules['kubernetes'] = None; from kubetune.main import main; main()"]
# The same under tracemalloc: SIGUSR1 writes the largest allocations to KUBETUNE_BENCH_TRACE_FILE.
TRACED_OPERATOR_COMMAND = [sys.executable, "-c", """
import os, signal, sys, tracemalloc
sys.modules['kubernetes'] = None
tracemalloc.start(int(os.environ['KUBETUNE_BENCH_TRACEMALLOC']))

def dump(*_):
    snapshot = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    lines = [f'traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB; largest by file:']
    for key in ('filename', 'lineno'):
        if key == 'lineno':
            lines.append('largest by line:')
        for stat in snapshot.statistics(key)[:15]:
            lines.append(f'  {stat.size / 2**20:7.1f} MiB {stat.count:9d} blocks  {stat.traceback}')
    with open(os.environ['KUBETUNE_BENCH_TRACE_FILE'], 'w') as out:
        out.write(chr(10).join(lines))

signal.signal(signal.SIGUSR1, dump)
from kubetune.main import main
main()
"""]


class Operator:
    """The operator (OPERATOR_COMMAND) as a process, with the chart's step, rate window and tick (5 s: it paces
    the node-tuning loop and how soon a new policy is seen; the evaluation loop wakes when a policy falls due)."""

    def __init__(self, cluster, prometheus_url: str, log_path: Path):
        self.port = localcluster.free_port()
        self.env = {**cluster.env, "KUBETUNE_PROMETHEUS_URL": prometheus_url, "KUBETUNE_NAMESPACES": "",
                    "KUBETUNE_RATE_WINDOW": RATE_WINDOW, "KUBETUNE_QUERY_STEP": STEP,
                    "KUBETUNE_LEADER_ELECTION": "false", "KUBETUNE_METRICS_PORT": str(self.port), "KUBETUNE_LIVENESS_PORT": "0",
                    "KUBETUNE_RECOMMENDATION_WINDOW": "5m", "KUBETUNE_RECOMMENDATION_REFRESH": "10m",
                    # As the image sets it (Dockerfile); KUBETUNE_BENCH_MALLOC_ARENA_MAX="" leaves glibc's default.
                    **({"MALLOC_ARENA_MAX": arenas} if (arenas := os.environ.get("KUBETUNE_BENCH_MALLOC_ARENA_MAX", "2")) else {})}
        self.log_path = log_path
        self.trace_path = log_path.with_suffix(".tracemalloc")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env, command = self.env, OPERATOR_COMMAND
        if TRACEMALLOC:
            env = {**env, "KUBETUNE_BENCH_TRACEMALLOC": TRACEMALLOC, "KUBETUNE_BENCH_TRACE_FILE": str(self.trace_path)}
            command = TRACED_OPERATOR_COMMAND
        with open(self.log_path, "a") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def allocations(self) -> list[str]:
        """The traced operator's largest allocations now (TRACED_OPERATOR_COMMAND)."""
        self.trace_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        wait_for("the operator's allocation snapshot", self.trace_path.exists, timeout=300, every=1)
        time.sleep(1)  # written at once, but let the writer close it
        return ["tracemalloc (diagnostic run: these cycle and RSS figures are not the budget's): "
                + self.trace_path.read_text()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> dict:
        """The operator's /metrics; empty until it serves them."""
        try:
            return samples(requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text)
        except requests.ConnectionError:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            return {}

    def rss_mib(self) -> tuple[float, float]:
        return memory_kib(self.proc.pid, "VmRSS") / 1024, memory_kib(self.proc.pid, "VmHWM") / 1024

    def rss_parts(self) -> str:
        """Where the RSS is: anonymous memory (Python objects, malloc arenas) or mapped files (code)."""
        pid = self.proc.pid
        return (f"anonymous {memory_kib(pid, 'RssAnon') / 1024:.0f} MiB, files {memory_kib(pid, 'RssFile') / 1024:.0f} MiB, "
                f"{memory_kib(pid, 'Threads')} threads")


class Phase:
    """Operator and API server counters over one measuring window."""

    def __init__(self, name: str, policies: int):
        self.name, self.policies = name, policies

    def measure(self, cluster, operator: Operator, seconds: float) -> Phase:
        before, api_before = operator.metrics(), api_requests(cluster)
        start = datetime.now(timezone.utc)
        time.sleep(seconds)
        after, api_after = operator.metrics(), api_requests(cluster)
        end = datetime.now(timezone.utc)
        self.own_events = sum(start <= t <= end for t in operator_event_times(cluster))
        cycle = "kubetune_evaluation_cycle_duration_seconds"
        self.cycles = total(after, cycle + "_count") - total(before, cycle + "_count")
        self.mean_cycle = (total(after, cycle + "_sum") - total(before, cycle + "_sum")) / max(self.cycles, 1)
        buckets = sorted((float(dict(labels)["le"]), after[(n, labels)] - before.get((n, labels), 0.0))
                         for (n, labels) in after if n == cycle + "_bucket")
        self.max_cycle_bucket = next((le for le, count in buckets if count >= self.cycles), math.inf)
        self.queries = total(after, "kubetune_prometheus_queries_total") - total(before, "kubetune_prometheus_queries_total")
        query_seconds = "kubetune_prometheus_query_duration_seconds_sum"
        self.query_seconds = total(after, query_seconds) - total(before, query_seconds)
        self.evaluations = (total(after, "kubetune_policy_evaluations_total")
                            - total(before, "kubetune_policy_evaluations_total"))
        self.failures = (total(after, "kubetune_evaluation_cycle_failures_total")
                         - total(before, "kubetune_evaluation_cycle_failures_total"))
        self.api = {k: api_after[k] - api_before[k] for k in api_after}
        self.seconds = (end - start).total_seconds()
        self.rss, self.hwm = operator.rss_mib()
        self.rss_parts = operator.rss_parts()
        return self

    def report(self) -> list[str]:
        per = max(self.cycles, 1)
        # POST events counts every client's Events (the scheduler's and kwok's go on for minutes after
        # 10,000 pods start): the operator's own are counted on the Event objects instead.
        writes = {k: v for k, v in self.api.items() if k not in ("all", "POST events")}
        writes["Events posted"] = self.own_events
        operator_calls = sum(writes.values())
        lines = [f"{self.name}: {self.policies} policies, {self.cycles:.0f} cycles, {self.evaluations:.0f} evaluations, "
                 f"{self.failures:.0f} failed cycles",
                 f"  cycle time           mean {self.mean_cycle:.2f} s, every cycle <= {self.max_cycle_bucket:g} s   "
                 f"(target <= 5 s); of it asking and reading Prometheus {self.query_seconds / per:.2f} s",
                 f"  operator RSS         {self.rss:.0f} MiB (peak {self.hwm:.0f} MiB)   (target <= 200 MiB)",
                 f"  Prometheus queries   {self.queries / per:.1f} per cycle   (target: constant)",
                 f"  API calls            {operator_calls / per:.0f} per cycle by the operator "
                 f"({', '.join(f'{k} {v / per:.0f}' for k, v in writes.items() if v)}); "
                 f"all clients {self.api['all'] / per:.0f} per cycle, of which POST events {self.api['POST events'] / per:.0f}",
                 f"  evaluations          {self.evaluations / max(self.policies, 1) / (self.seconds / 60):.1f} "
                 f"per policy per minute (interval {INTERVAL} s: {60 / INTERVAL:g} if evaluated exactly on it)"]
        return lines


def condition_holds(prometheus_url: str, namespace: str, name: str) -> bool:
    """The operator's sustained-CPU query for the namespace: every pod of the workload above 80 %."""
    plan = QueryPlan(frozenset({namespace}), frozenset({("cpu", "min", SUSTAINED)}), frozenset(), False)
    query = next(q for q in cycle_queries(plan, rate_window=RATE_WINDOW, step=STEP, history="5m")
                 if q.name.startswith("cpu_min"))
    answer = requests.get(f"{prometheus_url}/api/v1/query", params={"query": query.expr}, timeout=10).json()
    values = [float(r["value"][1]) / CPU_REQUEST for r in answer["data"]["result"]
              if r["metric"].get("pod", "").startswith(name + "-")]
    return len(values) >= REPLICAS and min(values) > 0.8


def watch_template(cluster, namespace: str, name: str, changed: dict, stop: threading.Event) -> None:
    """Records the monotonic time a watch first shows the Deployment's CPU request changed."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(cluster.kubeconfig)
    apps = kubernetes.client.AppsV1Api(client)
    while not stop.is_set():
        for event in kubernetes.watch.Watch().stream(apps.list_namespaced_deployment, namespace,
                                                     field_selector=f"metadata.name={name}", timeout_seconds=5):
            cpu = event["object"].spec.template.spec.containers[0].resources.requests["cpu"]
            if cpu != "100m":
                changed.update(at=time.monotonic(), cpu=cpu)
                return


def operator_event_times(cluster) -> list[datetime]:
    """When each Event the operator posted was first seen (its firstTimestamp or eventTime)."""
    out = cluster.kubectl("get", "events", "-A", "-o", "json", check=False, timeout=120)
    if out.returncode:
        return []
    times = []
    for e in json.loads(out.stdout)["items"]:
        if (e.get("source") or {}).get("component") == "kubetune-operator" or e.get("reportingComponent") == "kubetune.io/operator":
            when = e.get("firstTimestamp") or e.get("eventTime")
            if when:
                times.append(datetime.fromisoformat(when.replace("Z", "+00:00")))
    return times


def operator_events(cluster) -> str:
    """What the Events were, so a count per cycle can be read: '<kind>/<reason> <count>', most first."""
    out = cluster.kubectl("get", "events", "-A", "-o", "json", check=False, timeout=120)
    if out.returncode:
        return "unavailable"
    counts: dict[str, int] = {}
    for e in json.loads(out.stdout)["items"]:
        if (e.get("source") or {}).get("component") == "kubetune-operator" or e.get("reportingComponent") == "kubetune.io/operator":
            key = f"{e['involvedObject']['kind']}/{e['reason']}"
            counts[key] = counts.get(key, 0) + (e.get("count") or 1)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


@pytest.mark.timeout(3600)
def test_operator_at_scale(bench_cluster, crds, prometheus, tmp_path):
    cluster = bench_cluster
    started = time.monotonic()
    pods_wanted = POLICIES * REPLICAS
    log(f"scale: {POLICIES} policies/Deployments x {REPLICAS} pods = {pods_wanted} pods on {node_count()} "
        f"kwok-bench nodes ({os.cpu_count()} CPUs here)")
    exporter = loadgen.SyntheticExporter()
    operator = Operator(cluster, prometheus.url, tmp_path / "operator.log")
    report: list[str] = []
    owners = None
    try:
        apply_list(cluster, [bench_node(i) for i in range(node_count())])
        apply_list(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{n}"}}
                             for n in range(NAMESPACES)])
        t = time.monotonic()
        apply_list(cluster, [deployment(i) for i in range(POLICIES)])
        pods = wait_for(f"{pods_wanted} Running pods", lambda: (p := running_pods(cluster)) and
                        (len(p) >= pods_wanted or log(f"{len(p)} pods Running")) and p, timeout=600, every=10)
        log(f"{len(pods)} pods Running {time.monotonic() - t:.0f} s after the Deployments were applied")
        exporter.set_pods((ns, pod, ("app",)) for ns, pod in pods)
        # Labelled as a kubelet's cAdvisor endpoint is, which the shipped rules select.
        prometheus.add_target("cadvisor-bench", f"127.0.0.1:{exporter.start()}",
                              {"job": "kubelet", "metrics_path": "/metrics/cadvisor"} if KUBE_STATE_METRICS else None)
        owners = serve_kube_state_metrics(prometheus, pods) if KUBE_STATE_METRICS else None

        operator.start()
        t = time.monotonic()
        small = max(1, POLICIES // 10)
        apply_list(cluster, [policy(i) for i in range(small)])
        # The first cycle waits for every index and the pods' listing (kopf indexing 10,000 pods took
        # over 6 min on 2 CPUs; the operator now lists pods itself, see kubetune/podwatch.py).
        cycles = lambda: total(operator.metrics(), "kubetune_evaluation_cycle_duration_seconds_count")
        wait_for("the first evaluation cycle", lambda: cycles() >= 1, timeout=600, every=0.5)
        first = time.monotonic() - t
        first_rss = operator.rss_mib()[0]
        wait_for("two evaluation cycles", lambda: cycles() >= 2, timeout=600, every=0.5)
        report.append(f"start-up: first evaluation cycle done {first:.1f} s after the operator started (RSS "
                      f"{first_rss:.0f} MiB), the second {time.monotonic() - t:.1f} s; RSS {operator.rss_mib()[0]:.0f} MiB")
        log(f"measuring {small} policies for {MEASURE:.0f} s")
        report += Phase("phase 1", small).measure(cluster, operator, MEASURE).report()

        applied = time.monotonic()
        apply_list(cluster, [policy(i) for i in range(small, POLICIES)])
        evaluations = total(operator.metrics(), "kubetune_policy_evaluations_total")
        wait_for("every policy evaluated once", lambda: total(operator.metrics(), "kubetune_policy_evaluations_total")
                 >= evaluations + POLICIES, timeout=600)
        # The cycle of the new policies' first evaluations (a status and an Event each) is a mass apply's
        # warm-up, not the steady cycle the budget is for: it ends before the window starts, and is
        # reported on its own line.
        in_progress = cycles()
        wait_for("the cycle in progress to end", lambda: cycles() > in_progress, timeout=600, every=0.2)
        report.append(f"new policies: {POLICIES - small} applied at once, all evaluated and the cycle ended "
                      f"{time.monotonic() - applied:.1f} s after the apply")
        log(f"measuring {POLICIES} policies for {MEASURE:.0f} s")
        report += Phase("phase 2", POLICIES).measure(cluster, operator, MEASURE).report()

        if TRACEMALLOC:
            report += operator.allocations()

        # Reaction, several times: workloads go to 95 % of their CPU request one after another, a little
        # more than a tenth of an interval apart, so their rules begin holding at different moments of
        # the operator's cycle (the worst case is a rule that holds just after a cycle read Prometheus).
        targets = [workload(i) for i in range(REACTIONS)]
        changed: dict = {t: {} for t in targets}
        stop = threading.Event()
        for t in targets:
            threading.Thread(target=watch_template, args=(cluster, *t, changed[t], stop), daemon=True).start()
        apart = INTERVAL / REACTIONS + 0.37
        for i, (namespace, name) in enumerate(targets):
            time.sleep(apart if i else 0)
            exporter.set_load(namespace, name, cpu_cores=0.95 * CPU_REQUEST, memory_bytes=32 * MIB)
        holds: dict = {}

        def every_rule_holds() -> bool:
            for t in targets:
                if t not in holds and condition_holds(prometheus.url, *t):
                    holds[t] = time.monotonic()
            return len(holds) == len(targets)

        wait_for("the sustained-CPU rules to hold in Prometheus", every_rule_holds, timeout=300, every=0.5)
        wait_for("the template changes", lambda: all(c.get("at") for c in changed.values()), timeout=120, every=0.2)
        stop.set()
        reactions = sorted(changed[t]["at"] - holds[t] for t in targets)
        report.append(f"reaction, {len(targets)} workloads loaded {apart:.2f} s apart: template patched "
                      f"{', '.join(f'{r:.1f}' for r in reactions)} s after the rule held (max {reactions[-1]:.1f} s; "
                      f"target: within one interval, {INTERVAL} s)")
    finally:
        if operator.proc and operator.proc.poll() is None:
            report.append(f"operator RSS at the end: {operator.rss_mib()[0]:.0f} MiB (peak {operator.rss_mib()[1]:.0f} MiB)")
        report.append(f"Events by the operator, by kind and reason: {operator_events(cluster)}")
        operator.stop()
        prometheus.remove_target("cadvisor-bench")
        if owners is not None:
            unserve_kube_state_metrics(prometheus, owners)
        exporter.stop()
        print("\n".join(["", "=== operator benchmark ===",
                         f"scale: {POLICIES} PerformancePolicies, {pods_wanted} pods, {node_count()} kwok-bench nodes, "
                         f"{NAMESPACES} namespaces; policy interval {INTERVAL} s, scrape 5 s, {os.cpu_count()} CPUs; "
                         f"kube-state-metrics owner series and the shipped rules: {'yes' if KUBE_STATE_METRICS else 'no'}",
                         *report, f"wall time {time.monotonic() - started:.0f} s", ""]))
        print(re.sub(r"(?m)^.*INFO.*\n", "", operator.log_path.read_text() if operator.log_path.exists() else "")[-2000:])
        for n in range(NAMESPACES):
            cluster.kubectl("delete", "namespace", f"bench-{n}", "--wait=false", check=False)
        cluster.kubectl("delete", "nodes", *[f"kwok-bench-{i}" for i in range(node_count())], "--wait=false",
                        check=False)
