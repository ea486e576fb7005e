"""loadgen's synthetic exporter: counters integrate the load exactly, profiles switch on time, the latency
histogram yields the configured p95, pods come and go, and the exposition parses in both formats."""

from __future__ import annotations

import bisect
import json
import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

import loadgen

pytestmark = pytest.mark.unit

MiB = 1 << 20


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def exporter(clock) -> loadgen.SyntheticExporter:
    exporter = loadgen.SyntheticExporter(clock=clock)
    exporter.set_pods([("shop", "web-5d8f-abcde", ["app", "proxy"]), ("shop", "web-5d8f-fghij", ["app", "proxy"]),
                       ("shop", "webhook-77c-xyz", ["hook"]), ("other", "web-5d8f-abcde", ["app"])])
    return exporter


def scrape(exporter: loadgen.SyntheticExporter) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by (sample name, labels)."""
    text = generate_latest(exporter.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def cpu(exporter, pod: str = "web-5d8f-abcde", container: str = "app", namespace: str = "shop") -> float:
    return value(scrape(exporter), "container_cpu_usage_seconds_total", namespace=namespace, pod=pod,
                 container=container)


def test_cpu_counter_integrates_across_load_changes(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=0.5, memory_bytes=64 * MiB)
    clock.now += 10
    assert cpu(exporter) == pytest.approx(5.0)
    clock.now += 4
    exporter.set_load("shop", "web", cpu_cores=2.0, memory_bytes=64 * MiB)  # no scrape at the change
    clock.now += 6
    assert cpu(exporter) == pytest.approx(5.0 + 0.5 * 4 + 2.0 * 6)
    exporter.set_load("shop", "web", cpu_cores=0.0, memory_bytes=0)
    clock.now += 100
    assert cpu(exporter) == pytest.approx(19.0)  # idle: flat, never lower


def test_counter_never_decreases_over_many_scrapes(exporter, clock):
    exporter.set_profile("shop", "web", [(3, {"cpu_cores": 1.5}), (2, {"cpu_cores": 0.0}), (1, {"cpu_cores": 4})],
                         repeat=True)
    seen = []
    for _ in range(200):
        clock.now += 0.37
        seen.append(cpu(exporter))
    assert seen == sorted(seen)
    # 74 s = 12 whole 6-s cycles (8.5 core-s each) + 2 s of the first step.
    assert seen[-1] == pytest.approx(12 * 8.5 + 2 * 1.5)


def test_profile_integrates_step_boundaries_between_scrapes(exporter, clock):
    exporter.set_profile("shop", "web", [(10, {"cpu_cores": 1.0}), (10, {"cpu_cores": 3.0})])
    clock.now += 25  # one scrape, two boundaries ago
    assert cpu(exporter) == pytest.approx(10 * 1 + 10 * 3 + 5 * 3)  # the last step holds


def test_profile_steps_switch_at_the_right_times_and_carry_values_over(exporter, clock):
    start = clock.now
    exporter.set_profile("shop", "web", [(10, {"cpu_cores": 0.2, "memory_bytes": 100 * MiB}),
                                         (5, {"cpu_cores": 1.0}),
                                         (5, {"memory_bytes": 300 * MiB, "latency_seconds": 0.2})], repeat=True)

    def load_at(t: float) -> loadgen.Load:
        clock.now = start + t
        return exporter.current_load("shop", "web-5d8f-abcde", "app")

    assert load_at(0).cpu_cores == 0.2 and load_at(9.999).cpu_cores == 0.2
    assert load_at(10) == loadgen.Load(cpu_cores=1.0, memory_bytes=100 * MiB)  # memory carried over
    assert load_at(15) == loadgen.Load(cpu_cores=1.0, memory_bytes=300 * MiB, latency_seconds=0.2)
    assert load_at(20).cpu_cores == 0.2 and load_at(20).latency_seconds is None  # repeats from the top
    clock.now = start + 17
    assert value(scrape(exporter), "container_memory_working_set_bytes", namespace="shop", pod="web-5d8f-abcde",
                 container="app") == 300 * MiB


def test_finished_profile_holds_its_last_step(exporter, clock):
    exporter.set_profile("shop", "web", [(1, {"cpu_cores": 1.0}), (1, {"cpu_cores": 0.25})])
    clock.now += 3600
    assert exporter.current_load("shop", "web-5d8f-abcde").cpu_cores == 0.25


def test_load_applies_to_its_workload_only_and_container_overrides(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=1.0, memory_bytes=10)
    exporter.set_load("shop", "web", cpu_cores=0.1, memory_bytes=20, container="proxy")
    exporter.set_load("shop", "webhook", cpu_cores=3.0, memory_bytes=30)
    clock.now += 10
    samples = scrape(exporter)
    cpu_of = {(ns, pod, c): value(samples, "container_cpu_usage_seconds_total", namespace=ns, pod=pod, container=c)
              for ns, pod, cs in exporter.pods() for c in cs}
    assert cpu_of == pytest.approx({
        ("shop", "web-5d8f-abcde", "app"): 10.0, ("shop", "web-5d8f-abcde", "proxy"): 1.0,
        ("shop", "web-5d8f-fghij", "app"): 10.0, ("shop", "web-5d8f-fghij", "proxy"): 1.0,
        ("shop", "webhook-77c-xyz", "hook"): 30.0,  # the longer name wins: not taken for "web"
        ("other", "web-5d8f-abcde", "app"): 0.0,  # another namespace's "web"
    })


def test_latency_histogram_yields_the_configured_p95(exporter, clock):
    labels = {"namespace": "shop", "pod": "web-5d8f-abcde"}
    for latency in (0.007, 0.04, 0.18, 0.3, 0.9, 3.0):
        exporter.set_load("shop", "web", cpu_cores=0.1, memory_bytes=MiB, latency_seconds=latency, rps=40)
        before = scrape(exporter)
        clock.now += 500  # whole-number buckets: a long window makes the rounding negligible
        after = scrape(exporter)
        rate = {float(le): (value(after, "http_request_duration_seconds_bucket", le=le, **labels)
                            - value(before, "http_request_duration_seconds_bucket", le=le, **labels)) / 500
                for le in [loadgen.floatToGoString(b) for b in loadgen.LATENCY_BUCKETS] + ["+Inf"]}
        count = rate[math.inf]
        assert count == pytest.approx(40)
        # What histogram_quantile does: linear interpolation inside the bucket holding `latency`.
        bounds = sorted(rate)
        i = bisect.bisect_left(bounds, latency)
        lower = bounds[i - 1] if i else 0.0
        below = rate[lower] if i else 0.0
        share_at_latency = below + (rate[bounds[i]] - below) * (latency - lower) / (bounds[i] - lower)
        assert share_at_latency / count == pytest.approx(0.95, abs=2e-4), latency
        mean = (value(after, "http_request_duration_seconds_sum", **labels)
                - value(before, "http_request_duration_seconds_sum", **labels)) / (500 * count)
        assert 0.2 * latency < mean < latency  # a plausible average under the p95


def test_requests_split_by_error_ratio(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=0.1, memory_bytes=MiB, error_ratio=0.2, rps=100)
    clock.now += 10
    samples = scrape(exporter)
    pod = {"namespace": "shop", "pod": "web-5d8f-fghij"}
    assert value(samples, "http_requests_total", code="200", **pod) == pytest.approx(800)
    assert value(samples, "http_requests_total", code="500", **pod) == pytest.approx(200)
    assert not any(name.startswith("http_request_duration") for name, _ in samples)  # no latency configured
    assert not any(name == "http_requests_total" and ("pod", "webhook-77c-xyz") in labels
                   for name, labels in samples)  # no traffic set for webhook


def test_throttling_major_faults_and_oom_events(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=1, memory_bytes=MiB, throttled_ratio=0.25, major_faults_per_second=3)
    clock.now += 8
    exporter.oom_kill("shop", "web-5d8f-abcde", "app")
    exporter.oom_kill("shop", "web-5d8f-abcde", "app")
    samples = scrape(exporter)
    app = {"namespace": "shop", "pod": "web-5d8f-abcde", "container": "app"}
    assert value(samples, "container_cpu_cfs_periods_total", **app) == pytest.approx(80)
    assert value(samples, "container_cpu_cfs_throttled_periods_total", **app) == pytest.approx(20)
    assert value(samples, "container_memory_failures_total", failure_type="pgmajfault", scope="container",
                 **app) == pytest.approx(24)
    assert value(samples, "container_oom_events_total", **app) == 2
    assert value(samples, "container_oom_events_total", **{**app, "container": "proxy"}) == 0


def test_pods_come_and_go(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=1, memory_bytes=MiB)
    clock.now += 10
    exporter.set_pods([("shop", "web-5d8f-abcde", ["app", "proxy"]), ("shop", "web-6e9a-new01", ["app"])])
    clock.now += 2
    samples = scrape(exporter)
    assert {dict(labels)["pod"] for name, labels in samples if name == "container_cpu_usage_seconds_total"} == {
        "web-5d8f-abcde", "web-6e9a-new01"}
    assert cpu(exporter, "web-5d8f-abcde") == pytest.approx(12)  # kept its counters
    assert cpu(exporter, "web-6e9a-new01") == pytest.approx(2)  # new: from zero, like a new container


def test_openmetrics_exposition_parses(exporter, clock):
    """Prometheus asks for OpenMetrics first; that rendering must be valid too."""
    exporter.set_load("shop", "web", cpu_cores=1, memory_bytes=MiB, latency_seconds=0.1, error_ratio=0.01)
    clock.now += 3
    families = {f.name: f for f in parse_openmetrics(generate_openmetrics(exporter.registry).decode())}
    assert families["container_cpu_usage_seconds"].type == "counter"
    assert families["http_request_duration_seconds"].type == "histogram"


def test_no_job_or_instance_labels(exporter, clock):
    exporter.set_load("shop", "web", cpu_cores=1, memory_bytes=MiB, latency_seconds=0.1)
    clock.now += 1
    assert not any({"job", "instance"} & dict(labels).keys() for _, labels in scrape(exporter))


def test_bad_profiles_are_refused(exporter):
    with pytest.raises(ValueError, match="cpu"):
        exporter.set_profile("shop", "web", [(10, {"cpus": 1})])
    with pytest.raises(ValueError, match="duration"):
        exporter.set_profile("shop", "web", [(0, {"cpu_cores": 1})])
    with pytest.raises(ValueError, match="error_ratio"):
        exporter.set_load("shop", "web", cpu_cores=1, memory_bytes=1, error_ratio=1.5)


def test_profile_file(exporter, clock, tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps([{"namespace": "shop", "workload": "web", "repeat": True,
                                 "steps": [[30, {"cpu_cores": 0.3, "latency_seconds": 0.25}], [30, {"cpu_cores": 0.9}]]}]))
    loadgen.apply_profile_file(exporter, str(path))
    clock.now += 45
    assert exporter.current_load("shop", "web-5d8f-abcde") == loadgen.Load(cpu_cores=0.9, latency_seconds=0.25)
