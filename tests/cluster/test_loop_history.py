"""The loop's workload history from a real Prometheus (issue 16): eight days of cAdvisor and
kube-state-metrics series are backfilled into a Prometheus of this test's own (`promtool tsdb
create-blocks-from openmetrics`), the shipped recording rules are run over them (`promtool tsdb
create-blocks-from rules`, which evaluates the rules against that Prometheus over the past), and the
operator's `WorkloadHistory` reads the workload's history through the real owner join — across a
rollout that replaced every pod three days ago — and `predictions.analyse` judges it.

Its own Prometheus because the session's keeps one day (LocalPrometheus' retention): eight-day-old
blocks would be deleted at once. The series are generated, not scraped: no exporter can produce eight
days of past samples.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

import localcluster  # deploy/local, on sys.path via tests/conftest.py
from kubetune.analysis import detector_window
from kubetune.decisions import ContainerSignals, WorkloadSignals
from kubetune.history import WorkloadHistory
from kubetune.predictions import AnalysisCache, analyse
from kubetune.prometheus import Prometheus
from kubetune.promql import history_queries, latency_history_queries, request_history_queries, workload_cpu_series
from kubetune.settings import OperatorSettings
from tests.unit.loopfakes import spec

pytestmark = pytest.mark.cluster

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "kubetune-rules.yaml"
NS, APP = "shop", "web"
SCRAPE = 120  # seconds between generated samples (rate5m needs two in five minutes)
DAY = 86_400
MIB = 2**20


def cores(t: float) -> float:
    """Per pod: 0.1 cores, 0.2 from 09:00 to 17:00 UTC every day (a daily peak), and 0.35 in the data's
    last hour (`unusual_from`)."""
    return 0.2 if 9 * 3_600 <= t % DAY < 17 * 3_600 else 0.1


def openmetrics(start: int, end: int, rollout: int, unusual_from: int) -> str:
    """cAdvisor (CPU counter, working set) and kube-state-metrics (pod and ReplicaSet owners) of two
    pods of Deployment web; at `rollout` ReplicaSet web-old's pods are replaced by web-new's."""
    pods = {"web-old-a": ("web-old", start, rollout), "web-old-b": ("web-old", start, rollout),
            "web-new-a": ("web-new", rollout, end), "web-new-b": ("web-new", rollout, end)}
    cadvisor = 'job="kubelet",metrics_path="/metrics/cadvisor",namespace="shop",container="app"'
    ksm = 'job="kube-state-metrics",namespace="shop"'
    families: dict[str, list[str]] = {"container_cpu_usage_seconds_total": [], "container_memory_working_set_bytes": [],
                                      "kube_pod_owner": [], "kube_replicaset_owner": []}
    for pod, (rs, born, gone) in pods.items():
        used = 0.0
        for t in range(born, gone, SCRAPE):
            rate = 0.35 if t >= unusual_from else cores(t)
            used += rate * SCRAPE
            families["container_cpu_usage_seconds_total"].append(
                f'container_cpu_usage_seconds_total{{{cadvisor},pod="{pod}"}} {used:.3f} {t}')
            families["container_memory_working_set_bytes"].append(
                f'container_memory_working_set_bytes{{{cadvisor},pod="{pod}"}} {200 * MIB} {t}')
            families["kube_pod_owner"].append(
                f'kube_pod_owner{{{ksm},pod="{pod}",owner_kind="ReplicaSet",owner_name="{rs}"}} 1 {t}')
    for rs, (born, gone) in {"web-old": (start, rollout), "web-new": (rollout, end)}.items():
        families["kube_replicaset_owner"] += [
            f'kube_replicaset_owner{{{ksm},replicaset="{rs}",owner_kind="Deployment",owner_name="web"}} 1 {t}'
            for t in range(born, gone, SCRAPE)]
    lines = []
    for name, samples in families.items():
        lines.append(f"# TYPE {name} unknown")
        # A series' samples in time order, series after series (what the OpenMetrics parser expects).
        lines += sorted(samples, key=lambda line: (line.split("} ")[0], int(line.rsplit(" ", 1)[1])))
    return "\n".join(lines) + "\n# EOF\n"


def first_level_rules(path: Path) -> dict:
    """The shipped rules that read raw series only (promtool cannot backfill rules over rules): the
    container usage records and the pod -> workload owner map, exactly as written."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    keep = {"kubetune:container_cpu_usage_cores:rate5m", "kubetune:container_memory_working_set_bytes:max",
            "kubetune:pod_workload:owner"}
    rules = [r for g in groups for r in g["rules"] if r.get("record") in keep]
    assert len(rules) == 5, "the owner map has three rules (Deployment, StatefulSet, DaemonSet)"
    path.write_text(yaml.safe_dump({"groups": [{"name": "kubetune.history.backfill", "interval": "5m",
                                                "rules": rules}]}))
    return rules


class OwnPrometheus:
    """Debian's Prometheus with a retention long enough for the backfilled blocks."""

    def __init__(self, state: Path):
        self.state, self.port = state, localcluster.free_port()
        (state / "logs").mkdir(parents=True, exist_ok=True)
        (state / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}}))
        self.procs = localcluster.Processes(state, tie_to_parent=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.procs.start("prometheus", [
            localcluster.binary("prometheus"), f"--config.file={self.state / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.state / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=30d", "--log.level=warn"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.procs.check_alive("prometheus")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise localcluster.SetupError(f"Prometheus did not become ready: {self.state / 'logs'}")

    def stop(self) -> None:
        self.procs.stop_all()


def promtool(*args: str) -> None:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian's prometheus package ships it)")
    done = subprocess.run([found, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """(Prometheus URL, end of the data): eight days and three hours of generated series and the
    recording rules over them, ending at the last whole 5-minute step before now."""
    state = tmp_path_factory.mktemp("history-prometheus")
    end = int(time.time() // 300 * 300) - 300
    start = end - 8 * DAY - 3 * 3_600
    source = state / "series.om"
    source.write_text(openmetrics(start, end + SCRAPE, rollout=end - 3 * DAY, unusual_from=end - 3_600))
    promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(state / "data"))
    prom = OwnPrometheus(state)
    prom.start()
    try:
        rules = state / "rules.yaml"
        first_level_rules(rules)
        promtool("tsdb", "create-blocks-from", "rules", f"--url={prom.url}", f"--start={start}", f"--end={end}",
                 "--eval-interval=300s", f"--output-dir={state / 'recorded'}", str(rules))
        prom.stop()  # the recorded blocks are loaded at start
        for block in (state / "recorded").iterdir():
            shutil.move(str(block), state / "data" / block.name)
        prom.start()
        yield prom.url, float(end)
    finally:
        prom.stop()


def test_the_loop_reads_eight_days_per_workload_through_the_owner_join(backfilled):
    url, end = backfilled
    history = WorkloadHistory(Prometheus(OperatorSettings(prometheus_url=url)))
    stats = history.refresh([NS], end + 10)
    assert history.current(end + 10) and stats.series == 2 * math.ceil(detector_window(300) / 72)
    cpu = history.get("cpu", NS, APP, "app")
    memory = history.get("memory", NS, APP, "app")
    # The rules start recording five minutes into the data (rate5m needs them), so nearly all 2,328 steps
    # are there, the rollout three days ago included: the owner join follows the pods that ran then.
    # (one step at the rollout is missing in about one run of four: the new pods' counters are minutes
    # old, and whether rate5m has two of their samples then depends on where the evaluations fall)
    assert len(cpu) >= detector_window(300) - 2 and np.isnan(cpu).sum() <= 2, np.flatnonzero(np.isnan(cpu))
    times = end - 300 * np.arange(len(cpu))[::-1]
    # rate5m lags a change by up to its window, and the new pods' counters are young at the rollout:
    # steps within 10 minutes after either are not compared.
    settled = np.array([min((t - edge) % DAY for edge in (9 * 3_600, 17 * 3_600)) > 600
                        and not 0 <= t - (end - 3 * DAY) <= 600 for t in times])
    usual = settled & (times < end - 3_600) & ~np.isnan(cpu)
    expected = np.array([cores(t) for t in times[usual]])
    assert np.abs(cpu[usual] - expected).max() < 0.01, "mean CPU over the workload's pods, per step"
    last_hour = cpu[(times > end - 3_600 + 600) & ~np.isnan(cpu)]
    assert last_hour.size >= 8 and np.abs(last_hour - 0.35).max() < 0.01
    assert np.nanmax(memory) == pytest.approx(200 * MIB) and np.nanmin(memory) == pytest.approx(200 * MIB)
    assert len(history.get("cpu", NS, "web-old", "app")) == 0  # a ReplicaSet is not a workload

    # The loop's analysis on it: the unusual last hour is an incident against the history.
    signals = WorkloadSignals(containers=(ContainerSignals("app", {"cpu": 0.5, "memory": 512 * MIB}, {},
                                                           cpu_history=cpu, memory_history=memory),),
                              history_step_seconds=history.step)
    insights = analyse(spec(anomalyDetection={"enabled": True}), signals, 15.0, cache=AnalysisCache())
    assert [a for a in insights.anomalies if "app cpuUtilization" in a and "incident open" in a], insights.anomalies
    assert not [a for a in insights.anomalies if "memory" in a]

    # The next step (`get` answers views of arrays the refresh shifts in place: keep a copy to compare):
    # one query per family for it alone (the data end here, so it is a missing sample),
    # nothing refilled, the eight days shifted by one.
    cpu = cpu.copy()
    stats = history.refresh([NS], end + 310)
    after = history.get("cpu", NS, APP, "app")
    assert stats.queries == 2 and np.isnan(after[-1])
    kept = min(len(after) - 1, len(cpu))  # everything but the oldest step (when it was there) moved back one
    assert kept >= len(cpu) - 1 and np.array_equal(after[:-1][-kept:], cpu[-kept:], equal_nan=True)


def test_every_history_query_and_the_forecasters_hour_run_on_a_real_prometheus(backfilled):
    url, end = backfilled
    prometheus = Prometheus(OperatorSettings(prometheus_url=url))
    queries = (history_queries([NS]) + latency_history_queries("http_request_duration_seconds")([NS])
               + request_history_queries("http_requests_total", 'code=~"5.."')([NS]))
    for query in queries:  # accepted and evaluated (no bucket or request series here: empty answers)
        prometheus.range_query(query.expr, end - 3_600, end, 300)
    # The forecaster's hour per workload, through the owner join over the raw cAdvisor counter: 0.35
    # cores a pod in the data's last hour, asked as the cycle asks it (an instant subquery). Its newest
    # points are past the data's end, where rate() extrapolates from fewer samples: the median is compared.
    hour = workload_cpu_series([NS], rate_window="5m", window="1h", step="60s")
    results, _ = prometheus.fetch([hour])
    series = results[hour.name][(NS, APP, "app")]
    assert len(series) >= 30 and float(np.median(series)) == pytest.approx(0.35, abs=0.01)
