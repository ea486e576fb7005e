"""The closed loop on the real node: the chart installed with the image built here (operator non-root on a
read-only root under its own ServiceAccount, the agent privileged, the webhook serving), a real service under
real load, and the operator acting on real latency by changing real cgroups.

Durations are shortened through policy fields (interval 10s, for 20s, verification window 1m) and chart
values (rateWindow 30s, queryStep 5s; see realstack.chart_values) — the same code paths as production values. rateWindow is 30 s, not
the 10 s of the kwok tier: a real kubelet's cAdvisor samples a container about every 10 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest

import httpload
import realnode
import realstack
from realstack import DemoService, container_cgroup_file, container_pids

from tests.waiting import wait_for

pytestmark = pytest.mark.realnode

NS = "kt-realnode"  # the one namespace the installed operator watches and its webhook sees


@pytest.fixture(scope="module")
def stack(cluster, crds, real_node, prometheus, tmp_path_factory):
    if not real_node.local:
        pytest.skip("the chart is installed with an image imported into the local real node")
    # The agent pod really writes this machine's kernel settings: a NodeTuningPolicy another test left
    # behind would be applied here. Refuse rather than tune the host with it.
    left = cluster.kubectl("get", "nodetuningpolicies", "-o", "name", check=False).stdout.split()
    if left:
        pytest.fail(f"NodeTuningPolicies left by other tests ({', '.join(left)}) would be applied to this machine "
                    "by the real node's agent: delete them (and find the test that leaks them)", pytrace=False)
    stack = realstack.RealStack(tmp_path_factory.mktemp("realstack"), cluster, real_node, prometheus, [NS])
    try:
        stack.start()
    except realstack.SetupError as e:
        pytest.fail(f"the chart on the real node: {e}", pytrace=False)
    print(f"real stack up: {stack.timings}")
    yield stack
    stack.stop()


@pytest.fixture
def report(cluster, stack):
    """On the way out: the operator's log and the namespace's policies, for a failure's story; then the
    workloads and policies the test named (`report.append(name)`) are removed (the stack stays)."""
    names: list[str] = []
    yield names
    print(stack.logs("operator", tail=40))
    print(cluster.kubectl("get", "performancepolicies", "-n", NS, "-o", "yaml", check=False).stdout[-3000:])
    for name in names:
        cluster.kubectl("delete", "performancepolicy,deployment", name, "-n", NS, "--wait=false", "--ignore-not-found",
                        check=False)


def get(cluster, kind: str, name: str, namespace: str = NS) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, *(["-n", namespace] if namespace else []), "-o", "json").stdout)


def find(cluster, kind: str, name: str, namespace: str = NS) -> dict:
    """The object, or {} while it does not exist."""
    done = cluster.kubectl("get", kind, name, *(["-n", namespace] if namespace else []), "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def apply_policy(cluster, name: str, target: str, **spec) -> None:
    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "PerformancePolicy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "mode": "Auto", "interval": "10s", "verification": {"window": "1m"}, **spec}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def last_action(cluster, name: str) -> dict:
    return get(cluster, "performancepolicy", name).get("status", {}).get("lastAction") or {}


def pod_cpu(pod: dict, container: str = DemoService.CONTAINER) -> dict:
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    return {"request": c["resources"]["requests"]["cpu"], "limit": c["resources"].get("limits", {}).get("cpu")}


def cpu_quota(pod: dict) -> str:
    """The CFS quota the kernel enforces on the container: v1 cpu.cfs_quota_us, or v2 cpu.max's first field."""
    try:
        return container_cgroup_file(pod, DemoService.CONTAINER, "cpu.cfs_quota_us").read_text().strip()
    except FileNotFoundError:
        return container_cgroup_file(pod, DemoService.CONTAINER, "cpu.max").read_text().split()[0]


def ms(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds * 1000:.0f} ms"


# --- the chart itself ----------------------------------------------------------------------------


def test_the_chart_runs_on_the_real_node_as_installed(cluster, stack, real_node):
    operator = stack.pods("operator")
    agent = stack.pods("agent")
    assert [p["spec"]["nodeName"] for p in operator] == [real_node.name], stack.describe_pods()
    assert [p["spec"]["nodeName"] for p in agent] == [real_node.name], "the agent runs on the real node only"
    op = operator[0]
    assert op["spec"]["serviceAccountName"] == stack.operator_deployment
    # Non-root on a read-only root filesystem, as the kernel sees it: the process's uid and a write refused.
    uid = cluster.kubectl("exec", "-n", stack.namespace, op["metadata"]["name"], "--", "python3", "-c",
                          "import os; print(os.getuid())").stdout.strip()
    assert uid == "65532"
    write = cluster.kubectl("exec", "-n", stack.namespace, op["metadata"]["name"], "--", "python3", "-c",
                            "open('/opt/kubetune/x', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    # The agent: privileged, root, on the node's network.
    pid = container_pids(agent[0], "agent")[0]
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    assert status["Uid"].split()[0] == "0"
    assert int(status["CapEff"].strip(), 16) & (1 << 21), "CAP_SYS_ADMIN: the agent runs privileged"
    # The agent reports its node under its own token (the operator created the NodeTuning under its own).
    wait_for("the real node's NodeTuning Ready (the agent reports, under its own ServiceAccount)",
             lambda: next((c for c in find(cluster, "nodetuning", real_node.name, "").get("status", {})
                           .get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"), None),
             timeout=90)


# --- (a), (d), (e): the closed loop, two services at once ------------------------------------------

# 35 ms of CPU per request at a 100m CFS quota (10 ms per 100 ms period): every request waits for at
# least two period boundaries, so none finishes in under ~215 ms. At 200m (20 ms a period) a request
# waits for one boundary at most: ~35-120 ms.
WORK_CPU_MS = 35
WARM_UP = 30  # seconds
LOAD = dict(concurrency=8, timeout=10.0)
LATENCY = {"latency": {"histogram": "http_request_duration_seconds", "percentiles": [50, 95]}}
CPU_ONLY = [{"name": "*", "controlledResources": ["cpu"], "minAllowed": {"cpu": "50m"}, "maxAllowed": {"cpu": "1"}}]


class Scenario:
    """A demo service on the real node, its load and its policy."""

    def __init__(self, cluster, prometheus, name: str, rate: float, cpu: str, **policy):
        self.cluster, self.name, self.rate = cluster, name, rate
        self.svc = DemoService(cluster, prometheus, NS, name, work_cpu_ms=WORK_CPU_MS, cpu=cpu)
        self.policy = policy
        self.load: httpload.LoadRun | None = None
        self.pod: dict = {}
        self.applied_at = 0.0
        self.quota_at_start = ""
        self.quotas: list[str] = []
        self._stop = threading.Event()
        self._watching = threading.Thread(target=self._watch_quota, daemon=True)

    def deploy(self) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(self.svc.manifest()))

    def start_load_on_ready_pod(self) -> None:
        self.pod = self.svc.wait_ready()[0]
        self.quota_at_start = cpu_quota(self.pod)
        self.quotas = [self.quota_at_start]
        self._watching.start()
        self.load = self.start_load()

    def _watch_quota(self) -> None:
        """Every CFS quota the kernel enforced on the container, in order (the tests run side by side,
        so a change may come and go before its test looks)."""
        while not self._stop.wait(0.5):
            try:
                quota = cpu_quota(self.pod)
            except (FileNotFoundError, OSError, KeyError, StopIteration):
                continue
            if quota != self.quotas[-1]:
                self.quotas.append(quota)

    def apply_policy(self) -> None:
        apply_policy(self.cluster, self.name, self.name, containers=CPU_ONLY, metrics=LATENCY, **self.policy)
        self.applied_at = time.monotonic()

    def start_load(self) -> httpload.LoadRun:
        spec = httpload.LoadSpec(self.svc.url(self.pod), rate=self.rate, duration=400, max_requests=2000, **LOAD)
        return httpload.LoadRun(spec).start()

    def cpu(self) -> dict:
        pods = self.svc.pods()
        return pod_cpu(pods[0]) if pods else {}

    def stop(self) -> None:
        self._stop.set()
        if self.load:
            self.load.stop()
        self.svc.remove()
        self.cluster.kubectl("delete", "performancepolicy", self.name, "-n", NS, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def scenarios(cluster, stack, prometheus):
    """Both closed-loop services start together and run side by side (the tier's time is the longest,
    not the sum): `checkout` starved of CPU under load (a), `catalog` nearly idle with room to spare
    (e, then d). Each test asserts on its own."""
    found = {
        "checkout": Scenario(cluster, prometheus, "checkout", rate=2.0, cpu="100m",
                             scaling={"method": "InPlace", "stepPercent": 100, "cooldown": "5m"},
                             rules=[{"name": "slow", "metric": "latencyP95Ms", "above": 200, "for": "20s",
                                     "action": "OptimizeResources"}]),
        # 1 request/s of 35 ms is 35m: 17 % of a 200m request. Half of it (100m) is the starved quota.
        "catalog": Scenario(cluster, prometheus, "catalog", rate=1.0, cpu="200m",
                            scaling={"method": "InPlace", "stepPercent": 50, "cooldown": "5m"},
                            rules=[{"name": "low-load", "metric": "cpuUtilization", "below": 20, "for": "20s",
                                    "action": "DecreaseResources"}]),
    }
    for scenario in found.values():
        scenario.deploy()
    for scenario in found.values():
        scenario.start_load_on_ready_pod()
    # Under load for a while before kubetune looks: verification compares the window before a change
    # with the window after it, and needs samples on both sides.
    time.sleep(WARM_UP)
    for scenario in found.values():
        scenario.apply_policy()
    yield found
    for scenario in found.values():
        scenario.stop()


def verification_done(cluster, name: str) -> dict | None:
    v = last_action(cluster, name).get("verification", {})
    return v if v.get("state") not in (None, "Pending") else None


def test_cpu_starved_service_is_resized_in_place_and_p95_falls(cluster, scenarios, report):
    sc = scenarios["checkout"]
    pod = sc.pod
    assert sc.quota_at_start == "10000", "100m is a 10 ms quota per 100 ms period"
    try:
        pod = wait_for("the operator to resize checkout's CPU in place (100m -> 200m)",
                       lambda: (p := sc.svc.pods()) and pod_cpu(p[0]) == {"request": "200m", "limit": "200m"} and p[0],
                       timeout=180)
    finally:
        starved = sc.load.stop()
    acted_after = time.monotonic() - sc.applied_at
    action = last_action(cluster, "checkout")
    assert action["action"] == "OptimizeResources" and action["rule"] == "slow", action
    assert any("throttl" in e for e in action["evidence"]), action["evidence"]
    assert {"container": "app", "resource": "cpu", "value": "requests", "from": "100m", "to": "200m"} in action["changes"]
    # The kernel enforces the new quota, and the container was not restarted.
    wait_for("the container's CFS quota to follow (10000 -> 20000)", lambda: sc.quotas == ["10000", "20000"], timeout=30)
    sc.load = sc.start_load()
    try:
        verified = wait_for("verification of the resize", lambda: verification_done(cluster, "checkout"), timeout=150)
        # What the rule watches, the service's own histogram in Prometheus, is back under 200 ms (the
        # status carries live figures at most once a minute).
        server_p95 = wait_for("p95 latency in status under 200 ms", lambda: (
            p if (p := get(cluster, "performancepolicy", "checkout")["status"].get("signals", {}).get("latencyP95Ms"))
            is not None and p < 200 else None), timeout=150)
    finally:
        relieved = sc.load.stop()
    print(f"\n(a) acted {acted_after:.0f} s after the policy; clients' p95 {ms(starved.percentile(95))} before "
          f"({starved.completed} requests), {ms(relieved.percentile(95))} after ({relieved.completed}); Prometheus p95 "
          f"now {server_p95} ms; evidence {action['evidence']}; verification {verified['message']}")
    # Passed (not RolledBack). Its message may say "not enough samples" for CPU: cAdvisor's first
    # samples of a new container are sparse (see the report on verification with too few samples).
    assert verified["state"] == "Passed", verified
    assert starved.percentile(95) > 0.2, f"starved p95 {ms(starved.percentile(95))} should exceed 200 ms"
    # As the clients see it (queueing in the load generator included, on a machine shared with other
    # work): clearly better; under 200 ms in quiet runs (143 and 184 ms measured), not asserted.
    assert relieved.percentile(95) < 0.8 * starved.percentile(95), (
        f"client p95 {ms(starved.percentile(95))} before, {ms(relieved.percentile(95))} after")
    assert relieved.errors == 0 and starved.errors == 0
    now = sc.svc.pods()[0]
    assert now["status"]["containerStatuses"][0]["restartCount"] == 0
    assert now["metadata"]["uid"] == sc.pod["metadata"]["uid"], "resized in place, not replaced"


def test_idle_service_steps_down_and_the_slower_result_is_rolled_back(cluster, scenarios, report):
    """(e) then (d). It ran beside (a): it is judged from the record it left (status, the quota timeline)."""
    sc = scenarios["catalog"]
    assert sc.quota_at_start == "20000"
    try:
        verified = wait_for("catalog's step down and its verification", lambda: verification_done(cluster, "catalog"),
                            timeout=240)
        action = last_action(cluster, "catalog")
        wait_for("catalog back at 200m", lambda: sc.cpu() == {"request": "200m", "limit": "200m"}, timeout=30)
        # In the kernel: 200m, then 100m (the step down), then 200m again (the rollback).
        wait_for("the CFS quota timeline 20000 -> 10000 -> 20000", lambda: sc.quotas == ["20000", "10000", "20000"],
                 timeout=30)
    finally:
        load = sc.load.stop()
    print(f"\n(d, e) {action['evidence']}: 200m -> 100m; verification {verified['state']}: {verified['message']}; "
          f"clients' p95 over the whole run {ms(load.percentile(95))}; quotas {sc.quotas}")
    # (e) Sustained idle load stepped the request down, in place.
    assert action["action"] == "DecreaseResources" and action["rule"] == "low-load", action
    assert {"container": "app", "resource": "cpu", "value": "requests", "from": "200m", "to": "100m"} in action["changes"]
    # (d) At 100m every request waits for CFS period boundaries: p95 regressed and the change was undone.
    assert verified["state"] == "RolledBack", verified
    assert re.search(r"latencyP95Ms: [0-9.]+ -> [0-9.]+", verified["message"]), verified["message"]
    pod = sc.svc.pods()[0]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert pod["metadata"]["uid"] == sc.pod["metadata"]["uid"]


# --- (b) + (c) the operator pod killed mid-cycle, then down -----------------------------------------

BUSY = "busy"


def busy_workload(cluster, name: str = BUSY) -> None:
    """A container spinning on one CPU with a 100m request and a 300m limit: 300 % utilisation."""
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {**realstack.ON_REAL_NODE, "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "app", "image": realnode.BUSYBOX_IMAGE,
                                                           "imagePullPolicy": "Never",
                                                           "command": ["/bin/sh", "-c", "while :; do :; done"],
                                                           "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                                                                         "limits": {"cpu": "300m", "memory": "16Mi"}}}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def workload_pods(cluster, name: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", NS, "-l", f"app={name}", "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def running(pods: list[dict]) -> list[dict]:
    return [p for p in pods if p["status"].get("phase") == "Running"]


def operator_ready(stack) -> dict | None:
    pods = stack.pods("operator")
    return pods[0] if len(pods) == 1 and all(s["ready"] for s in pods[0]["status"].get("containerStatuses", [])) \
        and pods[0]["status"].get("containerStatuses") else None


def test_operator_killed_mid_cycle_then_down_loses_and_repeats_nothing_and_blocks_no_pod(cluster, stack, report):
    cluster_kubectl = cluster.kubectl
    real = stack.node
    report.append(BUSY)
    real.import_image(realnode.busybox_image())
    busy_workload(cluster)
    wait_for("the busy pod Running", lambda: running(workload_pods(cluster, BUSY)), timeout=60)
    apply_policy(cluster, BUSY, BUSY,
                 containers=[{"name": "*", "controlledResources": ["cpu"], "maxAllowed": {"cpu": "2"}}],
                 scaling={"method": "InPlace", "stepPercent": 50, "cooldown": "10m"},
                 rules=[{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "20s",
                         "action": "IncreaseResources"}])
    operator = operator_ready(stack)
    assert operator, stack.describe_pods()
    pids = container_pids(operator, "operator")
    # (b) SIGKILL the operator's processes the moment its intent (lastAction, Pending) is in status:
    # between recording and changing, or just after.
    intent = wait_for("the operator's intent in the policy's status",
                      lambda: last_action(cluster, BUSY) or None, timeout=150, every=0.2)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    at_kill = pod_cpu(running(workload_pods(cluster, BUSY))[0])
    print(f"\n(b) killed the operator (pids {pids}) with intent {intent['changes']} recorded; the pod had {at_kill}")
    assert intent["verification"]["state"] == "Pending"
    restarted = wait_for("the operator container restarted and Ready",
                         lambda: (p := operator_ready(stack)) and p["status"]["containerStatuses"][0]["restartCount"] >= 1
                         and p, timeout=120)
    assert restarted["metadata"]["uid"] == operator["metadata"]["uid"]
    # Not lost: the pod gets the recorded value; not repeated: one action, 100m -> 150m, not 225m.
    wait_for("the busy pod at the recorded 150m", lambda: pod_cpu(running(workload_pods(cluster, BUSY))[0])
             == {"request": "150m", "limit": "450m"}, timeout=90)
    pod = running(workload_pods(cluster, BUSY))[0]
    wait_for("the container's quota at 450m", lambda: cpu_quota(pod) == "45000", timeout=30)
    time.sleep(25)  # the restarted leader evaluates the policy again (interval 10s) and must not step again
    status = get(cluster, "performancepolicy", BUSY)["status"]
    applied = [h for h in status.get("history", []) if h.get("action") == "IncreaseResources" and h.get("applied")]
    assert status["lastAction"]["time"] == intent["time"], "the recorded action is the one kept"
    assert len(applied) <= 1, f"one action, not repeated: {applied}"
    assert pod_cpu(running(workload_pods(cluster, BUSY))[0]) == {"request": "150m", "limit": "450m"}

    # (c) The operator down: a pod created now still starts (the webhook fails open) with the template's
    # values, and gets the recorded ones once the operator is back.
    cluster_kubectl("scale", "deployment", stack.operator_deployment, "-n", stack.namespace, "--replicas=0")
    wait_for("no operator pod", lambda: not stack.pods("operator") or None, timeout=60)
    created = time.monotonic()
    cluster_kubectl("delete", "pod", pod["metadata"]["name"], "-n", NS, "--wait=false")
    fresh = wait_for("a new busy pod Running while the operator is down",
                     lambda: [p for p in running(workload_pods(cluster, BUSY))
                              if p["metadata"]["uid"] != pod["metadata"]["uid"]], timeout=60)[0]
    took = time.monotonic() - created
    print(f"(c) a pod created with the operator down ran after {took:.1f} s with {pod_cpu(fresh)}")
    assert pod_cpu(fresh) == {"request": "100m", "limit": "300m"}, "the template's values: nothing mutated it"
    cluster_kubectl("scale", "deployment", stack.operator_deployment, "-n", stack.namespace, "--replicas=1")
    wait_for("the operator back", lambda: operator_ready(stack), timeout=120)
    wait_for("the new pod resized to the recorded 150m", lambda: pod_cpu(running(workload_pods(cluster, BUSY))[0])
             == {"request": "150m", "limit": "450m"}, timeout=120)
    assert cpu_quota(running(workload_pods(cluster, BUSY))[0]) == "45000"
    status = get(cluster, "performancepolicy", BUSY)["status"]
    assert status["lastAction"]["time"] == intent["time"], "still the one action"



# --- (f) the agent pod in Auto, on the real node ----------------------------------------------------


def node_sysctl(node, key: str) -> str:
    """A sysctl as the node's network namespace has it (net.* are per namespace; the agent, with
    hostNetwork, lives in the node's)."""
    import subprocess
    path = "/proc/sys/" + key.replace(".", "/")
    return subprocess.run(["nsenter", f"--net={node.netns}", "cat", path], capture_output=True, text=True,
                          check=True).stdout.strip()


def nice_values(pod: dict, container: str = "app") -> set[int]:
    """The nice value of every thread of the container's processes, from /proc (field 19 of stat)."""
    values = set()
    for pid in container_pids(pod, container):
        for task in os.listdir(f"/proc/{pid}/task"):
            stat = open(f"/proc/{pid}/task/{task}/stat").read()
            values.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return values


def test_the_agent_pod_applies_and_restores_a_sysctl_and_renices_a_container(cluster, stack, report):
    node = stack.node
    key = "net.core.somaxconn"
    original = node_sysctl(node, key)
    target = "1234" if original != "1234" else "2345"
    report.append("niced")
    stack.node.import_image(realnode.busybox_image())
    busy_workload(cluster, "niced")
    pod = wait_for("the niced pod Running", lambda: running(workload_pods(cluster, "niced")), timeout=60)[0]
    assert nice_values(pod) == {0}
    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuningPolicy", "metadata": {"name": "kt-realnode"},
            "spec": {"nodeSelector": {"matchLabels": {realnode.NODE_LABEL: "true"}}, "mode": "Auto",
                     "sysctls": [{"name": key, "value": target}]}}
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        apply_policy(cluster, "niced", "niced", rules=[], processTuning={"nice": -5})
        wait_for(f"{key} = {target} in the node, written by the agent pod", lambda: node_sysctl(node, key) == target,
                 timeout=90)
        wait_for("nice -5 on every thread of the container", lambda: nice_values(pod) == {-5}, timeout=90)
        tuning = get(cluster, "nodetuning", node.name, "")
        print(f"\n(f) {key} {original} -> {target}, container threads nice 0 -> -5; NodeTuning status "
              f"{json.dumps(tuning.get('status', {}).get('knobs', tuning.get('status')))[:600]}")
        # Both leave the plan: the originals come back.
        cluster.kubectl("delete", "performancepolicy", "niced", "-n", NS)
        cluster.kubectl("delete", "nodetuningpolicy", "kt-realnode")
        wait_for(f"{key} back to {original}", lambda: node_sysctl(node, key) == original, timeout=90)
        wait_for("the container's original nice back", lambda: nice_values(pod) == {0}, timeout=90)
    finally:
        cluster.kubectl("delete", "nodetuningpolicy", "kt-realnode", check=False)
        if node_sysctl(node, key) != original:
            import subprocess
            subprocess.run(["nsenter", f"--net={node.netns}", "sysctl", "-qw", f"{key}={original}"], check=False)
