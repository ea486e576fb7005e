"""Prometheus faults at the seam: kubetune.prometheus.Prometheus against a tiny fake Prometheus HTTP server
on loopback (stdlib http.server) answering what a broken or hostile Prometheus, or a proxy in front of
it, answers. Each fault becomes PrometheusUnavailable with a message naming the query and the cause, or
its bad samples are skipped: NaN and +/-Inf never reach a decision, and nothing else escapes to crash the
evaluation cycle (which catches PrometheusUnavailable only). Stale series need what a fake cannot give,
Prometheus' own staleness handling: those tests use the session's real Prometheus."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

import loadgen  # deploy/local, on sys.path via tests/conftest.py
from kubetune.evaluation import Evaluator
from kubetune.metrics import OperatorMetrics
from kubetune.prometheus import MAX_WORKLOAD_SERIES, Prometheus, PrometheusUnavailable
from kubetune.promql import PromQuery, memory_working_set
from kubetune.reasons import ConditionType, Reason
from kubetune.records import encode_status, parse_status
from kubetune.settings import OperatorSettings
from tests.unit.loopfakes import NOW, FakeKube, pod, policy, view
from tests.waiting import wait_for

# Each test runs in well under a second (unit), but the two of 100,000 series (about 1.5 s each: 7 MB of
# JSON), which run in the cluster tier's time although they need no cluster, and the stale series
# ones, which need the real Prometheus.
unit, heavy = pytest.mark.unit, pytest.mark.cluster

TIMEOUT = 0.2  # seconds: the query timeout the slow answer overruns


def vector(*values: str, labels: Callable[[int], dict] = lambda i: {"namespace": "shop", "pod": f"web-{i}",
                                                                     "container": "app"}) -> bytes:
    result = [{"metric": labels(i), "value": [1700000000, v]} for i, v in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def matrix(*values: str) -> bytes:
    result = [{"metric": {"namespace": "shop", "pod": "web-0", "container": "app"},
               "values": [[1700000000 + 15 * i, v] for i, v in enumerate(values)]}]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


MANY = 100_000
MANY_SERIES = vector(*(["0.5"] * MANY), labels=lambda i: {"namespace": f"ns-{i % 100}", "pod": f"p-{i}", "container": "app"})


class FakePrometheus:
    """Answers every /api/v1/query with (status, content type, body, delay) set by the test."""

    def __init__(self):
        self.answer: tuple[int, str, bytes, float] = (200, "application/json", vector(), 0.0)
        self.requests = 0  # queries received: a retry behind the caller's back shows here
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests += 1
                status, content_type, body, delay = fake.answer
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout case)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake():
    server = FakePrometheus()
    yield server
    server.close()


@pytest.fixture
def prom(fake):
    return Prometheus(OperatorSettings(prometheus_url=fake.url, prometheus_timeout=TIMEOUT))


@pytest.fixture
def patient(fake):
    """A client with a timeout far beyond what a loaded machine needs for a fast answer on loopback."""
    return Prometheus(OperatorSettings(prometheus_url=fake.url, prometheus_timeout=30))


CPU = PromQuery("cpu", "sum by (namespace, pod, container) (rate(x[1m]))")
HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"

UNAVAILABLE = [
    ("http-500", (500, "text/plain", b"internal error: query processing would load too many samples", 0.0),
     "HTTP 500: internal error: query processing would load too many samples"),
    ("http-503-html", (503, "text/html", HTML, 0.0), "HTTP 503: 502 Bad Gateway 502 Bad Gateway nginx"),
    ("html-page-with-200", (200, "text/html", HTML, 0.0), "not Prometheus JSON"),
    ("json-without-result", (200, "application/json", b'{"status": "success"}', 0.0), "not a query result"),
    ("json-of-the-wrong-shape", (200, "application/json",
                                 b'{"status": "success", "data": {"resultType": "vector", "result": [1, 2, 3]}}', 0.0),
     "the answer is not a vector"),
    ("slower-than-the-timeout", (200, "application/json", vector("0.5"), 3 * TIMEOUT), f"no answer within {TIMEOUT:g} s"),
]


@unit
@pytest.mark.parametrize("answer,why", [u[1:] for u in UNAVAILABLE], ids=[u[0] for u in UNAVAILABLE])
def test_a_broken_answer_is_prometheus_unavailable_naming_the_query_and_why(fake, prom, patient, answer, why):
    fake.answer = answer
    slow = answer[3] > 0
    client = prom if slow else patient
    calls = {"query cpu": lambda: client.fetch([CPU]), "query 'sum(errors)'": lambda: client.scalar("sum(errors)"),
             "query 'errors'": lambda: client.series("errors", 1.7e9)}
    for name, call in list(calls.items())[:2 if slow else 3]:
        fake.requests = 0
        with pytest.raises(PrometheusUnavailable) as raised:
            call()
        assert str(raised.value).startswith(f"{name} failed: ") and why in str(raised.value), str(raised.value)
        # No retry behind the caller's back (the client's default of 3 held a query for 4x the timeout):
        # counted at the server, so a loaded machine's slowness cannot decide it.
        assert fake.requests == 1


SKIPPED = [
    ("empty-result", vector(), {}, None),
    ("nan", vector("NaN", "0.25"), {("shop", "web-1", "app"): 0.25}, 0.25),
    ("plus-inf", vector("+Inf", "0.25"), {("shop", "web-1", "app"): 0.25}, 0.25),
    ("minus-inf-only", vector("-Inf"), {}, None),
    ("not-a-number", vector("fast", "0.25"), {("shop", "web-1", "app"): 0.25}, 0.25),
]


@unit
@pytest.mark.parametrize("body,samples,scalar", [s[1:] for s in SKIPPED], ids=[s[0] for s in SKIPPED])
def test_bad_samples_are_skipped_never_a_value(fake, patient, body, samples, scalar):
    fake.answer = (200, "application/json", body, 0.0)
    results, stats = patient.fetch([CPU])
    assert results == {"cpu": samples} and stats.queries == 1
    assert patient.scalar("sum(x)") == scalar


@unit
def test_nan_and_inf_points_of_a_range_are_skipped(fake, patient):
    fake.answer = (200, "application/json", matrix("0.1", "NaN", "+Inf", "0.3", "-Inf"), 0.0)
    results, _ = patient.fetch([PromQuery("series:cpu", "x[5m:15s]")])
    assert {k: v.tolist() for k, v in results["series:cpu"].items()} == {("shop", "web-0", "app"): [0.1, 0.3]}
    assert [v for _, v in patient.series("x", 1.7e9)] == [0.1, 0.3]


@unit
def test_a_scalar_result_is_read_as_one_value(fake, patient):
    # A template such as scalar(sum(...)): before, iterating [time, "value"] as series crashed the cycle.
    fake.answer = (200, "application/json",
                   b'{"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "0.02"]}}', 0.0)
    assert patient.scalar("scalar(sum(errors))") == 0.02


@heavy
def test_a_hundred_thousand_series_batch_is_read_whole(fake, patient):
    # The batched cAdvisor queries of a large cluster: read, never refused.
    fake.answer = (200, "application/json", MANY_SERIES, 0.0)
    results, _ = patient.fetch([CPU])
    assert len(results["cpu"]) == MANY


@heavy
def test_a_workload_query_of_a_hundred_thousand_series_is_refused_with_the_count(fake, patient):
    # A template without its sum() over the whole cluster: one workload's value cannot be 100,000 series.
    fake.answer = (200, "application/json", MANY_SERIES, 0.0)
    with pytest.raises(PrometheusUnavailable, match=f"{MANY} series, more than the {MAX_WORKLOAD_SERIES}"):
        patient.scalar("errors")


# --- through the evaluation loop: the real seam, a fake Kubernetes ----------------------------------

LOOP = [
    ("http-500", (500, "text/plain", b"query timed out in expression evaluation", 0.0), Reason.PROMETHEUS_UNAVAILABLE,
     "HTTP 500: query timed out"),
    ("html-page", (200, "text/html", HTML, 0.0), Reason.PROMETHEUS_UNAVAILABLE, "not Prometheus JSON"),
    ("plus-inf-everywhere", (200, "application/json", vector("+Inf", "+Inf"), 0.0), Reason.NO_DATA, "no CPU usage"),
    ("nan-everywhere", (200, "application/json", vector("NaN", "NaN"), 0.0), Reason.NO_DATA, "no CPU usage"),
]


@unit
@pytest.mark.parametrize("answer,reason,why", [c[1:] for c in LOOP], ids=[c[0] for c in LOOP])
async def test_the_cycle_survives_with_a_condition_and_changes_nothing(fake, patient, answer, reason, why):
    fake.answer = answer
    kube = FakeKube()
    p = policy()
    evaluator = Evaluator(patient.settings, patient, kube, OperatorMetrics(), clock=lambda: NOW)
    await evaluator.cycle(view(p, [pod("web-0"), pod("web-1")]))
    ready = next(c for c in parse_status(encode_status(kube.status)).conditions if c.type == ConditionType.METRICS_AVAILABLE.value)
    assert (ready.status.value, ready.reason) == ("False", reason.value) and why in ready.message, ready.message
    assert not kube.of("resize") and not kube.of("template")


# --- stale series: the real Prometheus ------------------------------------------------------------


@pytest.fixture
def stale_exporter(prometheus):
    gen = loadgen.SyntheticExporter()
    address = f"127.0.0.1:{gen.start()}"
    gen.set_pods([("stale", "web-0", ["app"]), ("stale", "web-1", ["app"])])
    gen.set_load("stale", "web", cpu_cores=0.25, memory_bytes=100 * 2**20)
    prometheus.add_target("stale-series", address)
    yield gen
    prometheus.remove_target("stale-series")
    gen.stop()


STALE_MEMORY = PromQuery("memory", memory_working_set('namespace="stale"'))


@heavy
def test_a_stale_series_reads_as_no_data_never_as_its_last_value(prometheus, stale_exporter):
    # The operator's own instant query for memory (its CPU queries are rates over a window, which run
    # out by themselves). Without Prometheus' staleness markers an instant query answers a vanished
    # series' last value for 5 minutes (the lookback); with them it is gone at the next scrape (1 s here).
    client = Prometheus(OperatorSettings(prometheus_url=prometheus.url, prometheus_timeout=30))
    memory = lambda: set(client.fetch([STALE_MEMORY])[0]["memory"])  # noqa: E731
    wait_for("both pods' memory", lambda: memory() == {("stale", "web-0", "app"), ("stale", "web-1", "app")}, timeout=60)
    # A pod deleted: its series leaves the exposition, the target stays.
    stale_exporter.set_pods([("stale", "web-0", ["app"])])
    wait_for("the deleted pod's series to read as no data", lambda: memory() == {("stale", "web-0", "app")}, timeout=60)
    # The target gone (a node or exporter removed): every series it had.
    prometheus.remove_target("stale-series")
    wait_for("the vanished target's series to read as no data", lambda: memory() == set(), timeout=60)
