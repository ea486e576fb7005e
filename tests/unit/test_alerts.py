"""Every alert of deploy/prometheus/kubetune-rules.yaml reads metrics something exports and links a
runbook section that exists; every kubetune metric the Grafana dashboard plots is exported too.

The operator's metrics come from the registry `kubetune-operator` serves (`OperatorMetrics`); the
agent's from a real collection on this machine rendered by the exporter the agent serves, so a
renamed or never-exported metric fails here instead of leaving an alert silent."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from kubetune.metrics import OperatorMetrics
from kubetune_agent.main import build_agent
from kubetune_agent.settings import AgentSettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "kubetune-rules.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
DASHBOARD = REPO / "deploy" / "helm" / "kubetune" / "files" / "kubetune-dashboard.json"
RUNBOOK_BASE = "https://github.com/kubetune/kubetune/blob/main/docs/runbooks.md#"
# Metrics an alert may read that kubetune does not export: Prometheus' own and kube-state-metrics'.
EXTERNAL = {"up", "kube_daemonset_status_number_ready", "kube_daemonset_status_desired_number_scheduled"}
PROMQL_WORDS = {"absent", "sum", "rate", "max", "by", "min", "increase", "job", "namespace", "daemonset", "node"}


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", without_labels))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]", n)}


def exposition_names(text: str) -> set[str]:
    """Sample names, and the families declared by `# TYPE` (a labelled counter shows samples only once
    a label set is used, e.g. kubetune_decisions_total after the first decision)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return names | {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    names = exposition_names(generate_latest(OperatorMetrics().registry).decode())
    # A latency target (a closed local port answers at once) so the TCP connect families are rendered.
    agent, metrics = build_agent(AgentSettings(host_root=Path("/"), journal_dir=tmp_path_factory.mktemp("journal"),
                                               latency_targets=("127.0.0.1:1",)))
    for _ in range(2):  # real collections, as the metrics-only loop makes them; rates need two
        agent.cycle(None)
    # Thermal counters exist only on some CPUs (x86 thermal_throttle): render a sample that has them.
    metrics.sample = dataclasses.replace(metrics.sample, thermal_throttle_events=metrics.sample.thermal_throttle_events or 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return names | exposition_names(generate_latest(registry).decode())


def test_metric_names_are_read_from_expressions():
    assert metric_names('sum(rate(kubetune_x_total{namespace="a"}[15m])) > 0') == {"kubetune_x_total"}
    assert metric_names('absent(up{job=~".*op.*"} == 1)') == {"up"}


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_reads_exported_metrics(alert, exported):
    missing = metric_names(alert["expr"]) - exported - EXTERNAL
    assert not missing, f"{alert['alert']} reads metrics nothing exports: {sorted(missing)}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_links_its_runbook(alert):
    url = alert["annotations"]["runbook_url"]
    assert url == RUNBOOK_BASE + alert["alert"].lower()
    assert f"\n## {alert['alert']}\n" in RUNBOOKS.read_text()


def test_every_dashboard_metric_is_exported(exported):
    import json

    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    # kubetune_* only: recording rules (kubetune:…) come from the rules file, `up` from Prometheus.
    used = {name for e in exprs for name in re.findall(r"\b(kubetune_[a-z0-9_]+)", e)}
    assert used and not used - exported, sorted(used - exported)
