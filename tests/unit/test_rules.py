"""deploy/prometheus/kubetune-rules.yaml: valid for promtool, and recording what it says it records.

`promtool test rules` runs the rules over synthetic series (cAdvisor and kube-state-metrics as the
kubelet and kube-state-metrics publish them) and compares recorded values and alerts with known
answers. promtool comes with Debian's prometheus package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "kubetune-rules.yaml"
CHART_LINK = REPO / "deploy" / "helm" / "kubetune" / "files" / "kubetune-rules.yaml"
# The strings the chart's templates/prometheusrule.yaml replaces with the release's values.
CHART_REPLACES = ['job="kube-state-metrics"', 'job="kubelet", metrics_path="/metrics/cadvisor"',
                  'namespace="kubetune"', "kubetune-operator", "kubetune-agent"]

CADVISOR = 'job="kubelet",metrics_path="/metrics/cadvisor",namespace="shop",pod="web-7d4b9-abcde"'
KSM = 'job="kube-state-metrics",namespace="shop"'
WEB_POD = 'namespace="shop",pod="web-7d4b9-abcde",container="app"'
WEB = 'namespace="shop",workload="web",workload_type="deployment"'


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    return path


def rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def test_promtool_check_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_chart_reads_this_file_and_its_replacements_exist():
    assert CHART_LINK.is_symlink() and CHART_LINK.resolve() == RULES.resolve()
    text = RULES.read_text()
    for literal in CHART_REPLACES:
        assert literal in text, literal
    groups = {g["name"] for g in rules()["groups"]}
    assert "kubetune.agent.alerts" in groups  # the chart leaves this group out without the agent


def test_hourly_and_daily_aggregates_exist_for_every_level():
    recorded = {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}
    for level in ("container", "namespace", "workload"):
        for window in ("1h", "1d"):
            assert f"kubetune:{level}_cpu_usage_cores:avg{window}" in recorded
            assert f"kubetune:{level}_cpu_usage_cores:max{window}" in recorded
            assert f"kubetune:{level}_memory_working_set_bytes:max{window}" in recorded
    alerts = {r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {"KubetuneOperatorDown", "KubetuneEvaluationFailing", "KubetuneMetricsUnavailable",
                      "KubetuneNodeAgentDown", "KubetuneNodeAgentNotReady", "KubetuneNodeCPUThrottling"}


def annotations(alert: str) -> dict:
    return next(r["annotations"] for g in rules()["groups"] for r in g["rules"] if r.get("alert") == alert)


def test_promtool_unit_tests(tmp_path):
    """A 0.5-core container of Deployment `web` with a 300 MB memory spike at 100-110 min, 0.25-core
    requests, a finished pod whose requests must not count, and two 4-core nodes."""
    series = [
        # cAdvisor: 30 CPU-seconds a minute = 0.5 cores; the pause container is left out.
        (f'container_cpu_usage_seconds_total{{{CADVISOR},container="app"}}', "0+30x300"),
        (f'container_cpu_usage_seconds_total{{{CADVISOR},container="POD"}}', "0+600x300"),
        (f'container_memory_working_set_bytes{{{CADVISOR},container="app"}}', "2e8x100 3e8x9 2e8x190"),
        # kube-state-metrics: pod -> ReplicaSet -> Deployment, requests, phases, nodes.
        (f'kube_pod_owner{{{KSM},pod="web-7d4b9-abcde",owner_kind="ReplicaSet",owner_name="web-7d4b9"}}', "1x300"),
        (f'kube_replicaset_owner{{{KSM},replicaset="web-7d4b9",owner_kind="Deployment",owner_name="web"}}', "1x300"),
        (f'kube_pod_container_resource_requests{{{KSM},pod="web-7d4b9-abcde",container="app",resource="cpu",unit="core"}}', "0.25x300"),
        (f'kube_pod_container_resource_requests{{{KSM},pod="web-7d4b9-abcde",container="app",resource="memory",unit="byte"}}', "268435456x300"),
        (f'kube_pod_status_phase{{{KSM},pod="web-7d4b9-abcde",phase="Running"}}', "1x300"),
        (f'kube_pod_container_resource_requests{{{KSM},pod="job-1",container="run",resource="cpu",unit="core"}}', "4x300"),
        (f'kube_pod_status_phase{{{KSM},pod="job-1",phase="Running"}}', "0x300"),
        (f'kube_pod_status_phase{{{KSM},pod="job-1",phase="Succeeded"}}', "1x300"),
        ('kube_node_status_allocatable{job="kube-state-metrics",node="n1",resource="cpu",unit="core"}', "4x300"),
        ('kube_node_status_allocatable{job="kube-state-metrics",node="n2",resource="cpu",unit="core"}', "4x300"),
        # The operator's scrape target is down for 10 minutes.
        ('up{namespace="kubetune",job="kubetune-operator"}', "0x20"),
    ]

    def expect(at: str, expr: str, labels: str, value: float) -> dict:
        return {"expr": expr, "eval_time": at, "exp_samples": [{"labels": f"{expr.split('{')[0]}{{{labels}}}" if labels
                                                                else expr, "value": value}]}

    checks = [
        expect("240m", "kubetune:container_cpu_usage_cores:avg1h", WEB_POD, 0.5),
        expect("240m", "kubetune:container_cpu_usage_cores:max1d", WEB_POD, 0.5),
        expect("240m", "kubetune:namespace_cpu_usage_cores:avg1h", 'namespace="shop"', 0.5),
        expect("240m", "kubetune:workload_cpu_usage_cores:avg1h", WEB, 0.5),
        expect("240m", "kubetune:workload_cpu_usage_cores:p95_1d", WEB, 0.5),
        # The spike is within the last hour at 150 min, not at 240 min; within the last day at both.
        expect("150m", "kubetune:container_memory_working_set_bytes:max1h", WEB_POD, 3e8),
        expect("240m", "kubetune:container_memory_working_set_bytes:max1h", WEB_POD, 2e8),
        expect("240m", "kubetune:container_memory_working_set_bytes:max1d", WEB_POD, 3e8),
        expect("240m", "kubetune:workload_memory_working_set_bytes:max1d", WEB, 3e8),
        expect("240m", "kubetune:namespace_memory_working_set_bytes:max1h", 'namespace="shop"', 2e8),
        # Requests of running pods only: the finished job's 4 cores do not count.
        expect("240m", "kubetune:namespace_cpu_requests_cores:max1d", 'namespace="shop"', 0.25),
        expect("240m", "kubetune:workload_cpu_requests_cores:max1h", WEB, 0.25),
        expect("240m", "kubetune:workload_memory_requests_bytes:max1d", WEB, 268435456),
        expect("240m", "kubetune:cluster_cpu_allocatable_cores:sum", "", 8),
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": checks,
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KubetuneOperatorDown", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "KubetuneOperatorDown", "exp_alerts": [
                    {"exp_labels": {"severity": "warning"},
                     "exp_annotations": annotations("KubetuneOperatorDown")}]},
            ],
        }],
    }
    path = tmp_path / "kubetune-rules.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
