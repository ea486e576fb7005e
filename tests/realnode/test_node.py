"""The real node as a user meets it: a pod runs, answers `kubectl exec` and `kubectl logs`, is reachable at
its pod IP, reaches the API server, is resized in place down to its real cgroup files without a restart,
and its CPU usage reaches Prometheus from the kubelet's cAdvisor endpoint."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import requests
from prometheus_api_client import PrometheusConnect

import realnode
from tests.waiting import wait_for

pytestmark = pytest.mark.realnode

CONTAINER = "main"


@pytest.fixture(scope="module")
def busybox(real_node) -> str:
    """The busybox image on the real node (imported here; on a KUBECONFIG cluster it must be there already)."""
    if real_node.local:
        real_node.import_image(realnode.busybox_image())
    return realnode.BUSYBOX_IMAGE


def pod_manifest(name: str, namespace: str, image: str, script: str, resources: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeSelector": {realnode.NODE_LABEL: "true"},
            "tolerations": [{"key": realnode.NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": CONTAINER, "image": image, "imagePullPolicy": "Never",
                            "command": ["/bin/sh", "-c", script], "resources": resources or {}}],
        },
    }


def run_pod(cluster, manifest: dict) -> dict:
    """Create the pod, wait until it is Ready, return it."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    waited = cluster.kubectl("wait", "--for=condition=Ready", "--timeout=90s", f"pod/{name}", "-n", namespace,
                             check=False, timeout=100)
    pod = get_pod(cluster, name, namespace)
    assert waited.returncode == 0, f"pod {name} not Ready: {json.dumps(pod.get('status'))[:1500]}"
    return pod


def get_pod(cluster, name: str, namespace: str) -> dict:
    return json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)


def exec_in(cluster, pod: dict, *command: str) -> str:
    meta = pod["metadata"]
    return cluster.kubectl("exec", meta["name"], "-n", meta["namespace"], "-c", CONTAINER, "--", *command).stdout


def test_pod_runs_and_answers_logs_and_exec(cluster, namespace, real_node, busybox):
    pod = run_pod(cluster, pod_manifest("hello", namespace, busybox, "echo hello from the real node; exec sleep 3600"))

    assert pod["spec"]["nodeName"] == real_node.name
    logs = cluster.kubectl("logs", "hello", "-n", namespace).stdout
    assert "hello from the real node" in logs
    assert exec_in(cluster, pod, "sh", "-c", "echo $((6 * 7))").strip() == "42"


def test_pod_ip_is_reachable_from_the_host_and_pods_reach_the_api_server(cluster, namespace, real_node, busybox):
    if not real_node.local:
        pytest.skip("pod IPs of a KUBECONFIG cluster are not routed to this machine")
    script = "mkdir -p /tmp/www && echo served by a real pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    pod = run_pod(cluster, pod_manifest("web", namespace, busybox, script))
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(real_node.pod_cidr)

    answer = wait_for(f"an answer from {pod_ip}:8080", lambda: _get(f"http://{pod_ip}:8080/"), timeout=20)
    assert answer.text.strip() == "served by a real pod"
    # The `kubernetes` Service address reaches the API server's TLS port: a plain-HTTP request gets
    # Go's "HTTP request to an HTTPS server" answer, which proves the path without credentials.
    reply = cluster.kubectl("exec", "web", "-n", namespace, "--", "sh", "-c",
                            "wget -q -O - http://10.96.0.1:443/ 2>&1; true").stdout
    assert "400" in reply or "HTTPS server" in reply, reply


def _get(url: str):
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return response if response.ok else None


BEFORE = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
AFTER = {"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
# cgroup v1 files and the values the kubelet writes: shares = milliCPU * 1024 / 1000, quota per 100 ms period.
V1_FILES = {"cpu.shares": ("cpu", {"before": "102", "after": "204"}),
            "cpu.cfs_quota_us": ("cpu", {"before": "50000", "after": "100000"}),
            "memory.limit_in_bytes": ("memory", {"before": str(64 << 20), "after": str(128 << 20)})}
# cgroup v2: weight = 1 + (shares - 2) * 9999 / 262142, max = "quota period", memory.max in bytes.
V2_FILES = {"cpu.weight": {"before": "4", "after": "8"}, "cpu.max": {"before": "50000 100000", "after": "100000 100000"},
            "memory.max": {"before": str(64 << 20), "after": str(128 << 20)}}


def container_cgroup_values(cluster, pod: dict) -> dict[str, str]:
    """The container's own CPU and memory cgroup files, read inside it (runc mounts its cgroup there)."""
    script = ("if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cd /sys/fs/cgroup && for f in cpu.weight cpu.max "
              "memory.max; do echo $f=$(cat $f); done; else for f in cpu/cpu.shares cpu/cpu.cfs_quota_us "
              "memory/memory.limit_in_bytes; do echo ${f#*/}=$(cat /sys/fs/cgroup/$f); done; fi")
    lines = exec_in(cluster, pod, "sh", "-c", script).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def expected_values(observed: dict[str, str], phase: str) -> dict[str, str]:
    if "cpu.shares" in observed:
        return {name: values[phase] for name, (_, values) in V1_FILES.items()}
    return {name: values[phase] for name, values in V2_FILES.items()}


def host_cgroup_values(pod: dict) -> dict[str, str]:
    """The same files seen from the host, under the real node's cgroup root (cgroup v1 only)."""
    uid = pod["metadata"]["uid"]
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    values = {}
    for name, (controller, _) in V1_FILES.items():
        found = list(Path("/sys/fs/cgroup", controller, realnode.CGROUP_ROOT).glob(f"kubepods/*/pod{uid}/{container_id}/{name}"))
        assert len(found) == 1, f"{name} of container {container_id}: found {found}"
        values[name] = found[0].read_text().strip()
    return values


def test_in_place_resize_changes_the_real_cgroup_without_a_restart(cluster, namespace, real_node, busybox):
    pod = run_pod(cluster, pod_manifest("resized", namespace, busybox, "exec sleep 3600", BEFORE))
    before = container_cgroup_values(cluster, pod)
    assert before == expected_values(before, "before")

    patch = {"spec": {"containers": [{"name": CONTAINER, "resources": AFTER}]}}
    cluster.kubectl("patch", "pod", "resized", "-n", namespace, "--subresource", "resize", "--type", "strategic",
                    "-p", json.dumps(patch))

    after = expected_values(before, "after")
    wait_for(f"the container's cgroup files to reach {after}",
             lambda: container_cgroup_values(cluster, pod) == after, timeout=30)
    status = wait_for("the pod status to report the new resources", lambda: _resized_status(cluster, namespace),
                      timeout=30)
    assert status["restartCount"] == 0
    assert status["containerID"] == pod["status"]["containerStatuses"][0]["containerID"]
    if real_node.local and "cpu.shares" in before:
        assert host_cgroup_values(pod) == after


def _resized_status(cluster, namespace: str) -> dict | None:
    status = get_pod(cluster, "resized", namespace)["status"]["containerStatuses"][0]
    reported = status.get("resources", {})
    return status if reported.get("limits", {}).get("memory") == "128Mi" and reported.get("limits", {}).get("cpu") == "1" else None


def test_prometheus_gets_container_cpu_from_the_kubelet(cluster, namespace, real_node, busybox, prometheus):
    if not real_node.local:
        pytest.skip("the local Prometheus cannot reach a KUBECONFIG cluster's kubelet")
    for job in real_node.scrape_configs():
        prometheus.add_scrape_config(job)
    run_pod(cluster, pod_manifest("busy", namespace, busybox, "while true; do :; done",
                                  {"requests": {"cpu": "50m"}, "limits": {"cpu": "200m"}}))
    prom = PrometheusConnect(url=prometheus.url)
    # cAdvisor samples every ~10 s (its own timestamps): a rate needs a window holding two samples.
    query = f'rate(container_cpu_usage_seconds_total{{namespace="{namespace}", pod="busy", container="{CONTAINER}"}}[1m])'

    def cpu_rate():
        result = prom.custom_query(query)
        return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) > 0 else None

    rate = wait_for(f"data for {query}", cpu_rate, timeout=90)
    assert 0 < rate <= 0.3  # limited to 200m: the quota holds a busy loop near 0.2 cores
    def kubelet_endpoints_up():
        up = {s["metric"]["metrics_path"]: s["value"][1] for s in prom.custom_query('up{job="kubelet"}')}
        return up == {"/metrics": "1", "/metrics/cadvisor": "1"}

    wait_for("both kubelet endpoints up", kubelet_endpoints_up, timeout=30)


def test_a_missing_binary_is_a_one_line_setup_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path))
    with pytest.raises(realnode.SetupError, match=r"^kubelet v\S+ is not built: run `deploy/local/build-binaries.sh`"):
        realnode.node_binary("kubelet")
