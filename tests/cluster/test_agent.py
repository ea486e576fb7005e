"""The node agent against a real API server: `kubetune-agent` as a process serving the kwok node
kwok-node-1, with this machine as its host (host root `/`).

Recommend mode writes nothing to this machine, so that test only reads /proc/sys; the Auto test
writes vm.swappiness (root only) and puts the original back in a `finally` whatever happened. With the
operator beside it, the operator creates the node's NodeTuning (no policy: the monitoring-only plan)
and marks it AgentNotReporting once the agent stops. A breach investigation names a pod bound to the
node, whose memory a real process holds in a kubelet-shaped cgroup on this machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

import localcluster  # deploy/local, on sys.path via tests/conftest.py
from tests.cluster.test_nodetuning import operator  # noqa: F401  (the fixture: kubetune-operator as a process)
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

NODE = "kwok-node-1"
SWAPPINESS = Path("/proc/sys/vm/swappiness")
VFS_CACHE_PRESSURE = Path("/proc/sys/vm/vfs_cache_pressure")
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
DIRTY_RATIO = Path("/proc/sys/vm/dirty_ratio")
DIRTY_BACKGROUND_RATIO = Path("/proc/sys/vm/dirty_background_ratio")
POLICY = "NodeTuningPolicy/cluster-test"
# metav1.Condition's own validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
# metav1.Time is RFC 3339 in UTC; Go's parser also takes fractional seconds, which the agent writes.
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Agent:
    """`kubetune-agent` as a process, configured as the DaemonSet configures it (host root `/` here)."""

    def __init__(self, cluster, journal_dir: Path, log_path: Path):
        self.metrics_port = localcluster.free_port()
        self.env = {**cluster.env, "NODE_NAME": NODE, "KUBETUNE_HOST_ROOT": "/",
                    "KUBETUNE_JOURNAL_DIR": str(journal_dir), "KUBETUNE_COLLECTION_INTERVAL_SECONDS": "1",
                    "KUBETUNE_METRICS_ADDRESS": "127.0.0.1", "KUBETUNE_METRICS_PORT": str(self.metrics_port)}
        self.journal = journal_dir / "journal.json"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "kubetune_agent.main"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def node_tuning(mode: str, knobs: dict[str, str], **spec) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "NodeTuning", "metadata": {"name": NODE},
            "spec": {"mode": mode, "knobs": [{"key": k, "value": v, "policy": POLICY, "reason": "cluster test"}
                                             for k, v in knobs.items()], **spec}}


def apply(cluster, body: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def get_nt(cluster) -> dict:
    return json.loads(cluster.kubectl("get", "nodetuning", NODE, "-o", "json").stdout)


def nt_if_any(cluster) -> dict:
    """The NodeTuning, or {} while there is none (the operator has not created it yet)."""
    done = cluster.kubectl("get", "nodetuning", NODE, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def knob(obj: dict, key: str) -> dict:
    return next((k for k in obj.get("status", {}).get("knobs", []) if k["key"] == key), {})


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def observed(cluster) -> dict | None:
    """The NodeTuning once its status is for its current generation, else None."""
    obj = get_nt(cluster)
    status = obj.get("status") or {}
    return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None


def node_events(cluster, reason: str, kind: str = "Node") -> list[dict]:
    out = cluster.kubectl("get", "events", "-n", "default", "-o", "json", "--field-selector",
                          f"involvedObject.kind={kind},involvedObject.name={NODE},reason={reason}").stdout
    return json.loads(out)["items"]


def timestamp(value: str) -> datetime:
    assert RFC3339.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def status_writes(cluster, seconds: int) -> int:
    """How many times the NodeTuning changes during ``seconds`` (a watch from now)."""
    out = cluster.kubectl("get", "nodetuning", NODE, "--watch-only", "--output-watch-events", "-o", "json",
                          f"--request-timeout={seconds}s", check=False, timeout=seconds + 30).stdout
    return out.count('"type":"MODIFIED"') + out.count('"type": "MODIFIED"')


def read(path: Path) -> str:
    return path.read_text().strip()


def other_value(path: Path, candidates: tuple[str, ...]) -> str:
    """A valid value that differs from the live one, so the knob has something to plan."""
    return next(v for v in candidates if v != read(path))


@pytest.fixture
def agent(cluster, crds, tmp_path):
    if cluster.kubectl("get", "node", NODE, check=False).returncode:
        pytest.skip(f"node {NODE} is not in this cluster (the local cluster makes it)")
    cluster.kubectl("delete", "nodetuning", NODE, "--ignore-not-found", "--wait=true")
    runner = Agent(cluster, tmp_path / "journal", tmp_path / "agent.log")
    runner.start()
    try:
        yield runner
    finally:
        # A deleted NodeTuning is an empty plan: the agent puts journaled originals back.
        cluster.kubectl("delete", "nodetuning", NODE, "--ignore-not-found", "--wait=true", check=False)
        if runner.alive() and runner.journal.exists():
            try:
                wait_for("the agent to empty its journal", lambda: not json.loads(runner.journal.read_text())["knobs"],
                         timeout=15)
            except BaseException:  # noqa: BLE001  (restore is the test's own finally; report the log)
                pass
        runner.stop()
        print(runner.log()[-4000:])


def assert_condition_shape(cond: dict, generation: int) -> None:
    assert set(cond) <= {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}, cond
    assert CONDITION_TYPE.match(cond["type"]) and len(cond["type"]) <= 316, cond
    assert cond["status"] in ("True", "False", "Unknown"), cond
    assert CONDITION_REASON.match(cond["reason"]) and len(cond["reason"]) <= 1024, cond
    assert isinstance(cond.get("message", ""), str) and len(cond.get("message", "")) <= 32768, cond
    timestamp(cond["lastTransitionTime"])
    assert cond["observedGeneration"] == generation, cond


def test_recommend_mode_reports_the_plan_and_writes_nothing(cluster, agent):
    before = {p: read(p) for p in (SWAPPINESS, VFS_CACHE_PRESSURE, SOMAXCONN, DIRTY_RATIO, DIRTY_BACKGROUND_RATIO)}
    plan = {"vm.swappiness": other_value(SWAPPINESS, ("10", "11")),
            "vm.vfs_cache_pressure": other_value(VFS_CACHE_PRESSURE, ("50", "51")),
            "sysctl.net.core.somaxconn": other_value(SOMAXCONN, ("2048", "2049"))}
    started = datetime.now(UTC)
    apply(cluster, node_tuning("Recommend", plan))

    obj = wait_for("status for the first generation", lambda: (o := observed(cluster))
                   and all(knob(o, k) for k in plan) and o, timeout=60)
    generation = obj["metadata"]["generation"]
    status = obj["status"]
    for key, value in plan.items():
        entry = knob(obj, key)
        assert entry["state"] == "Planned", entry
        assert entry["desired"] == value, entry
        assert entry["current"] == before[{"vm.swappiness": SWAPPINESS, "vm.vfs_cache_pressure": VFS_CACHE_PRESSURE,
                                           "sysctl.net.core.somaxconn": SOMAXCONN}[key]], entry
    applied, degraded = condition(obj, "Applied"), condition(obj, "Degraded")
    assert applied and degraded, status.get("conditions")
    for cond in status["conditions"]:
        assert_condition_shape(cond, generation)
    assert applied["status"] == "False" and applied["reason"] == "Recommend", applied
    heartbeat = timestamp(status["heartbeatTime"])
    assert abs(datetime.now(UTC) - heartbeat) < timedelta(seconds=30), status["heartbeatTime"]

    # The metrics summary needs two samples (rates); it comes on a later cycle.
    metrics = wait_for("a metrics summary in status",
                       lambda: get_nt(cluster).get("status", {}).get("metrics", {}).get("memoryPercent") is not None
                       and get_nt(cluster)["status"]["metrics"], timeout=30)
    assert 0 <= metrics["memoryPercent"] <= 100 and metrics.get("load1", 0) >= 0, metrics
    assert "kubetune_node_load1" in agent.metrics()
    # The heartbeat moves every interval.
    wait_for("a newer heartbeat", lambda: get_nt(cluster)["status"]["heartbeatTime"] != status["heartbeatTime"],
             timeout=15)

    # Its own status patch comes back through the watch as MODIFIED; that is no reason for another
    # cycle: about one status write per interval (1 s), not a loop (it was ~140 a second).
    writes = status_writes(cluster, seconds=5)
    assert 1 <= writes <= 15, f"{writes} status writes in 5 s at a 1 s interval"

    # A plan change is a new generation; the agent picks it up.
    plan["vm.swappiness"] = other_value(SWAPPINESS, ("20", "21"))
    apply(cluster, node_tuning("Recommend", plan))
    obj = wait_for("status for the new generation", lambda: (o := observed(cluster))
                   and o["metadata"]["generation"] > generation and o, timeout=30)
    assert knob(obj, "vm.swappiness")["desired"] == plan["vm.swappiness"]
    assert knob(obj, "vm.swappiness")["state"] == "Planned"
    assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in obj["status"]["conditions"])

    # Degraded: a memory threshold below what this machine uses is crossed at once; the transition is
    # a Warning Event on the Node.
    apply(cluster, node_tuning("Recommend", plan, thresholds={"memory": {"warningPercent": 0.5, "criticalPercent": 1}}))
    obj = wait_for("Degraded=True", lambda: (o := get_nt(cluster)) and condition(o, "Degraded").get("status") == "True"
                   and o, timeout=30)
    assert condition(obj, "Degraded")["reason"] == "ThresholdExceeded", condition(obj, "Degraded")
    assert "memory_used_percent" in condition(obj, "Degraded")["message"]
    events = wait_for("a ThresholdExceeded Event on the Node", lambda: node_events(cluster, "ThresholdExceeded"),
                      timeout=15)
    event = events[-1]
    assert event["type"] == "Warning" and event["source"]["component"] == "kubetune-agent", event
    # The Node's reference as kubelet makes it (uid = node name): `kubectl describe node` finds it.
    assert event["involvedObject"] == {"kind": "Node", "name": NODE, "apiVersion": "v1", "uid": NODE}, \
        event["involvedObject"]
    assert event["message"].startswith("Degraded: ")
    # The same story on the NodeTuning, for `kubectl describe nt`.
    on_nt = wait_for("the Degraded Event on the NodeTuning",
                     lambda: node_events(cluster, "ThresholdExceeded", kind="NodeTuning"), timeout=15)[-1]
    assert on_nt["involvedObject"]["uid"] == obj["metadata"]["uid"], on_nt["involvedObject"]
    assert "ThresholdExceeded" in cluster.kubectl("describe", "nodetuning", NODE).stdout
    # A critical level newly breached is investigated; no pod cgroup here names no pod.
    investigated = wait_for("an Investigate Event", lambda: node_events(cluster, "Investigate"), timeout=15)[-1]
    assert investigated["type"] == "Warning" and "memory_used_percent" in investigated["message"], investigated

    # The warning level (0.5 %) is crossed too: the Warning condition, and one Warning Event naming
    # the metric, value, level and sustained period for the transition, not one per cycle.
    warning = condition(get_nt(cluster), "Warning")
    assert (warning["status"], warning["reason"]) == ("True", "ThresholdWarning"), warning
    assert_condition_shape(warning, get_nt(cluster)["metadata"]["generation"])

    def warning_events() -> list[dict]:
        return [e for e in node_events(cluster, "ThresholdWarning") if "warning level 0.5 " in e["message"]
                and timestamp(e["firstTimestamp"]) >= started - timedelta(seconds=1)]

    warned = wait_for("a ThresholdWarning Event on the Node", warning_events, timeout=15)
    assert warned[0]["type"] == "Warning" and warned[0]["source"]["component"] == "kubetune-agent", warned[0]
    assert re.match(r"^Warning: memory_used_percent [\d.]+ > warning level 0.5 for \d+s \(sustained period 0s\)$",
                    warned[0]["message"]), warned[0]["message"]
    wait_for("a few more cycles", lambda: status_writes(cluster, seconds=3) >= 2, timeout=15)
    assert len(warning_events()) == 1, [e["message"] for e in warning_events()]

    # Adaptive caching in Recommend: the dirty ratios are planned within their ranges (the middle,
    # or the minimum under memory pressure), background below dirty; nothing is written.
    adaptive = {"memory": {"dirtyRatio": {"min": 11, "max": 37}, "dirtyBackgroundRatio": {"min": 3, "max": 9}}}
    apply(cluster, node_tuning("Recommend", plan, adaptive=adaptive))
    obj = wait_for("the adaptive dirty ratios planned", lambda: (o := get_nt(cluster))
                   and knob(o, "vm.dirty_ratio") and knob(o, "vm.dirty_background_ratio") and o, timeout=30)
    dirty, background = knob(obj, "vm.dirty_ratio"), knob(obj, "vm.dirty_background_ratio")
    assert (dirty["desired"], background["desired"]) in (("24", "6"), ("11", "3")), (dirty, background)
    assert dirty["state"] == background["state"] == "Planned", (dirty, background)
    assert dirty["current"] == before[DIRTY_RATIO], dirty

    # Recommend never wrote to this machine.
    assert {p: read(p) for p in before} == before
    assert agent.alive(), agent.log()[-3000:]


def test_auto_mode_applies_and_restores_swappiness(cluster, agent):
    if os.geteuid() != 0:
        pytest.skip("Auto mode writes /proc/sys/vm/swappiness and needs root")
    original = read(SWAPPINESS)
    target = "13" if original != "13" else "17"
    try:
        apply(cluster, node_tuning("Auto", {"vm.swappiness": target}))
        obj = wait_for("vm.swappiness Applied", lambda: (o := observed(cluster))
                       and knob(o, "vm.swappiness").get("state") == "Applied" and o, timeout=60)
        entry = knob(obj, "vm.swappiness")
        assert entry["current"] == target and entry["desired"] == target, entry
        assert entry["original"] == original, entry
        assert read(SWAPPINESS) == target
        assert condition(obj, "Applied")["status"] == "True", condition(obj, "Applied")
        journal = json.loads(agent.journal.read_text())
        assert journal["knobs"]["vm.swappiness"]["original"] == {"proc/sys/vm/swappiness": original}

        # The knob leaves the plan: its exact original comes back and leaves the journal.
        generation = obj["metadata"]["generation"]
        apply(cluster, node_tuning("Auto", {}))
        wait_for("the original swappiness back", lambda: read(SWAPPINESS) == original, timeout=30)
        obj = wait_for("status for the plan without the knob", lambda: (o := observed(cluster))
                       and o["metadata"]["generation"] > generation and o, timeout=30)
        assert read(SWAPPINESS) == original
        assert "vm.swappiness" not in json.loads(agent.journal.read_text())["knobs"]
        assert knob(obj, "vm.swappiness").get("state") in (None, "Restored"), knob(obj, "vm.swappiness")
        assert agent.alive(), agent.log()[-3000:]
    finally:
        agent.stop()  # nothing writes it after this
        if read(SWAPPINESS) != original:
            SWAPPINESS.write_text(original)
        assert read(SWAPPINESS) == original


def test_the_operator_creates_every_nodes_tuning_and_sees_a_stopped_agent(cluster, agent, operator):
    """No NodeTuningPolicy: the operator's monitoring-only plan, the agent's conditions, the default
    latency probe to the API server, an unknown link speed said so; then the agent stops."""
    obj = wait_for("the agent reporting on the operator's NodeTuning",
                   lambda: (o := nt_if_any(cluster)) and condition(o, "Ready").get("status") == "True"
                   and o.get("status", {}).get("metrics") and o, timeout=90)
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubetune"
    assert not obj["spec"].get("knobs") and obj["spec"]["mode"] == "Auto"
    status = obj["status"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Applied", "Degraded", "Warning"}
    assert condition(obj, "Ready")["reason"] == "AgentReporting" and status["reportingIntervalSeconds"] == 1
    # The latency probe's default target is the API server the agent talks to (loopback here).
    latency = wait_for("a network latency figure", lambda: get_nt(cluster)["status"]["metrics"].get("networkLatencyMs"),
                       timeout=15)
    assert 0 < latency < 1000, latency
    assert "kubetune_node_tcp_connect_seconds{target=" in agent.metrics()
    # This machine's eth0 reports no link speed: the bandwidth level is not evaluated, and says why.
    if "networkBandwidthPercent" not in get_nt(cluster)["status"]["metrics"]:
        assert "network_bandwidth_percent: link speed unknown for" in condition(get_nt(cluster), "Warning")["message"]

    agent.stop()
    stale = wait_for("Ready=False AgentNotReporting", lambda: (c := condition(get_nt(cluster), "Ready"))
                     .get("reason") == "AgentNotReporting" and c, timeout=30)
    assert stale["status"] == "False" and "last heartbeat" in stale["message"], stale
    event = wait_for("an AgentNotReporting Event on the NodeTuning",
                     lambda: node_events(cluster, "AgentNotReporting", kind="NodeTuning"), timeout=15)[-1]
    assert event["type"] == "Warning" and event["source"]["component"] == "kubetune-operator", event
    printed = cluster.kubectl("get", "nt", NODE).stdout.splitlines()
    assert printed[0].split()[:2] == ["NAME", "READY"] and printed[1].split()[1] == "False", printed

    agent.start()
    wait_for("Ready=True again", lambda: condition(get_nt(cluster), "Ready").get("status") == "True", timeout=30)
    assert "AgentReporting" in cluster.kubectl("describe", "nodetuning", NODE).stdout


MEMORY_CGROUP = Path("/sys/fs/cgroup/memory")


def test_a_critical_breach_names_the_top_pod_on_the_node(cluster, agent, namespace):
    if os.geteuid() != 0 or not (MEMORY_CGROUP / "memory.stat").exists():
        pytest.skip("needs root and a cgroup v1 memory hierarchy for a kubelet-shaped pod cgroup")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "memory-hog", "namespace": namespace},
           "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox"}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    uid = json.loads(cluster.kubectl("get", "pod", "memory-hog", "-n", namespace, "-o", "json").stdout)["metadata"]["uid"]
    made: list[Path] = []
    hog = subprocess.Popen([sys.executable, "-c", "import time\nx = bytearray(b'\\x01') * (300 << 20)\n"
                            "print('ready', flush=True)\ntime.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        for part in ("kubepods", "kubepods/burstable", f"kubepods/burstable/pod{uid}"):
            if not (MEMORY_CGROUP / part).exists():
                (MEMORY_CGROUP / part).mkdir()
                made.append(MEMORY_CGROUP / part)
        (MEMORY_CGROUP / f"kubepods/burstable/pod{uid}" / "cgroup.procs").write_text(str(hog.pid))
        assert hog.stdout.readline().strip() == "ready"
        started = datetime.now(UTC) - timedelta(seconds=1)
        apply(cluster, node_tuning("Recommend", {}, thresholds={"memory": {"warningPercent": 0.5, "criticalPercent": 1}},
                                   adaptive={"memory": {"swappiness": {"min": 10, "max": 60}}}))

        def investigations(kind: str) -> list[dict]:
            return [e for e in node_events(cluster, "Investigate", kind=kind)
                    if timestamp(e["firstTimestamp"]) >= started]

        event = wait_for("an Investigate Event on the Node", lambda: investigations("Node"), timeout=60)[0]
        assert event["type"] == "Warning", event
        assert f"top pods by memory: {namespace}/memory-hog " in event["message"], event["message"]
        assert "adaptive response planned, nothing written (mode Recommend): vm.swappiness" in event["message"]
        on_nt = wait_for("the Investigate Event on the NodeTuning", lambda: investigations("NodeTuning"), timeout=15)[0]
        assert on_nt["message"] == event["message"]
        assert knob(get_nt(cluster), "vm.swappiness")["state"] == "Planned"
    finally:
        hog.kill()
        hog.wait()
        for path in reversed(made):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
