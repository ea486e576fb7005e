"""The evaluation loop's long series (issue 16), with the in-memory fakes of tests/unit/loopfakes.py: the
anomaly detector's eight-day baselines read through the owner join and kept between cycles, and the
forecaster's one-hour CPU series per workload. The cluster tier (tests/cluster/test_loop_history.py)
reads the same history from a real Prometheus running the recording rules."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from kubetune.analysis import detector_window
from kubetune.evaluation import Evaluator
from kubetune.history import FILL_CHUNK_STEPS
from kubetune.metrics import OperatorMetrics
from kubetune.prometheus import PrometheusUnavailable
from kubetune.reasons import ConditionType
from kubetune.records import encode_status, parse_status
from kubetune.settings import OperatorSettings
from tests.unit.loopfakes import APP, NOW, NS, FakeKube, FakePrometheus, cpu_batch, pod, policy, spec, view

pytestmark = pytest.mark.unit

PODS = ["web-1", "web-2"]
END = NOW.timestamp()  # a whole 5-minute step
DAY = 86_400
POINTS = detector_window(300)


def wiggle(t: float) -> float:
    """A deterministic +-3 % ripple, so the detector's scale is the floor's, not zero."""
    return 1 + 0.03 * ((int(t // 300) * 7) % 5 - 2)


def usual_low(t: float) -> float:
    """0.1 cores all day every day, 0.35 in the last hour: unusual."""
    return (0.35 if t > END - 3_600 else 0.1) * wiggle(t)


def daily_peak(t: float) -> float:
    """0.35 cores from 10:30 to 12:30 UTC every day, 0.1 otherwise: the last hour is the usual peak."""
    seconds = t % DAY
    return (0.35 if 10.5 * 3_600 < seconds <= 12.5 * 3_600 else 0.1) * wiggle(t)


def matrix(cpu, *, workload: str = APP):
    """A query_range answer: the CPU history family of container `app` of `workload`, from `cpu(t)`."""
    def answer(start: float, end: float, step: float) -> list[dict]:
        times = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
        return [{"metric": {"namespace": NS, "workload": workload, "container": "app"},
                 "values": [[t, str(cpu(t))] for t in times]}]
    return [("container_cpu_usage_cores:rate5m", answer)]


def evaluator(prom: FakePrometheus, kube: FakeKube, clock: list) -> Evaluator:
    return Evaluator(OperatorSettings(), prom, kube, OperatorMetrics(), clock=lambda: clock[0])


async def anomaly_condition(matrices, recent: tuple[float, ...]):
    body = spec(anomalyDetection={"enabled": True})
    prom = FakePrometheus(batch=cpu_batch(PODS, now=recent[-1], series=recent), matrices=matrices)
    kube = FakeKube()
    ev = evaluator(prom, kube, [NOW])
    p = policy(body)
    await ev.evaluate(p, view(p, [pod(n) for n in PODS]), await ev._fetch([p], 0.0))
    return next(c for c in parse_status(encode_status(kube.status)).conditions if c.type == ConditionType.ANOMALY_DETECTED.value)


def failing(start, end, step):
    raise PrometheusUnavailable("query_range timed out")


FLAT = tuple(0.35 * wiggle(300 * i) for i in range(40))  # the recent per-pod series: nothing odd in itself
JUMP = tuple([0.1 * wiggle(300 * i) for i in range(39)] + [0.35])  # odd in itself

ANOMALY_ROWS = [
    # The same recent series, judged on the history when there is one.
    ("history-unusual-hour", matrix(usual_low), FLAT, "True", "above the same time a week ago (expected 20,"),
    ("history-usual-daily-peak", matrix(daily_peak), FLAT, "False", None),
    # Without kube-state-metrics (an empty answer) or when the history query fails: the recent series.
    ("no-history-flat-recent", [], FLAT, "False", None),
    ("no-history-jump-in-recent", [], JUMP, "True", "cpuUtilization"),
    ("history-query-failed", [("rate5m", failing)], JUMP, "True", "cpuUtilization"),
]


@pytest.mark.parametrize("matrices, recent, expected, says", [r[1:] for r in ANOMALY_ROWS],
                         ids=[r[0] for r in ANOMALY_ROWS])
async def test_anomaly_is_judged_on_the_workload_history_when_there_is_one(matrices, recent, expected, says):
    c = await anomaly_condition(matrices, recent)
    assert c.status.value == expected, c.message
    if says:
        assert says in c.message and "app cpuUtilization" in c.message


async def test_history_is_fetched_once_per_step_and_only_the_new_step_after_it():
    clock = [NOW]
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.1, series=FLAT), matrices=matrix(daily_peak))
    ev = evaluator(prom, FakeKube(), clock)
    p = policy(spec(anomalyDetection={"enabled": True}))
    batch = await ev._fetch([p], 0.0)
    # The fill: both families, six hours per query, covering exactly the 2,328 steps up to the newest.
    fill = prom.range_queries[:]
    assert {q[3] for q in fill} == {300} and len(fill) == 2 * math.ceil(POINTS / FILL_CHUNK_STEPS)
    for family in ("container_cpu_usage_cores", "container_memory_working_set_bytes"):
        spans = sorted((s, e) for expr, s, e, _ in fill if family in expr)
        assert spans[0][0] == END - (POINTS - 1) * 300 and spans[-1][1] == END
        assert all(b[0] == a[1] + 300 for a, b in zip(spans, spans[1:]))
    assert all("kubetune:pod_workload:owner" in q[0] and f'namespace=~"{NS}"' in q[0] for q in fill)
    cpu = batch.histories["usage"].get("cpu", NS, APP, "app")
    assert len(cpu) == POINTS and cpu[-1] == pytest.approx(daily_peak(END))

    clock[0] = NOW + timedelta(seconds=30)  # the same step: nothing asked
    await ev._fetch([p], 30.0)
    assert prom.range_queries == fill

    clock[0] = NOW + timedelta(minutes=5, seconds=10)  # the step moved: one sample per family
    batch = await ev._fetch([p], 310.0)
    assert [(q[1], q[2]) for q in prom.range_queries[len(fill):]] == [(END + 300, END + 300)] * 2
    cpu = batch.histories["usage"].get("cpu", NS, APP, "app")
    assert len(cpu) == POINTS and cpu[-1] == pytest.approx(daily_peak(END + 300))
    assert cpu[-2] == pytest.approx(daily_peak(END))


async def test_without_kube_state_metrics_the_fill_stops_at_the_empty_newest_hours():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.1, series=FLAT))  # every range answer empty
    ev = evaluator(prom, FakeKube(), [NOW])
    p = policy(spec(anomalyDetection={"enabled": True}))
    assert "usage" in (await ev._fetch([p], 0.0)).histories  # current, and empty
    assert [(e - s) for _, s, e, _ in prom.range_queries] == [(FILL_CHUNK_STEPS - 1) * 300] * 2
    assert all(e == END for _, _, e, _ in prom.range_queries)


async def test_a_young_workload_has_only_its_own_history_and_a_gone_one_none():
    clock = [NOW]
    young = lambda t: 0.2 if t > END - 2 * DAY else math.nan  # noqa: E731  (Prometheus returns no sample)
    answer = matrix(young)[0][1]
    sparse = [("rate5m", lambda s, e, st: [{**item, "values": [v for v in item["values"] if v[1] != "nan"]}
                                           for item in answer(s, e, st)])]
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2, series=FLAT), matrices=sparse)
    ev = evaluator(prom, FakeKube(), clock)
    p = policy(spec(anomalyDetection={"enabled": True}))
    batch = await ev._fetch([p], 0.0)
    assert len(batch.histories["usage"].get("cpu", NS, APP, "app")) == 2 * DAY // 300
    assert len(batch.histories["usage"].get("cpu", NS, "other", "app")) == 0


async def test_forecaster_reads_the_workload_hour_and_predicts_the_crossing():
    # 40 % -> 76 % of the 500m request over the last hour at 15 s. The pods' own 5-minute series are
    # flat here (as after a rollout), so only the workload's hour can show the trend.
    hour = tuple(0.5 * (0.40 + 0.36 * i / 239) * wiggle(300 * i) ** 0.2 for i in range(240))
    body = spec(prediction={"enabled": True, "horizon": "15m"})
    batch = cpu_batch(PODS, now=hour[-1], series=tuple(hour[-1] * wiggle(300 * i) ** 0.2 for i in range(20)))
    batch["series:cpu:workload"] = {(NS, APP, "app"): hour}
    prom = FakePrometheus(batch=batch)
    kube = FakeKube()
    ev = evaluator(prom, kube, [NOW])
    p = policy(body)
    await ev.evaluate(p, view(p, [pod(n) for n in PODS]), await ev._fetch([p], 0.0))
    assert any("avg by (namespace, workload, container)" in q and "[1h:15s]" in q for q in prom.asked)
    last = parse_status(encode_status(kube.status)).last_action
    assert last is not None and last.rule == "high-load" and any("(predicted)" in e for e in last.evidence)
    assert kube.of("resize")


class HourTimesOut(FakePrometheus):
    """Answers everything but, once `hour_down`, the forecaster's hour (as a Prometheus does that cannot
    evaluate its subquery over 10,000 pods within the query timeout)."""

    hour_down = False

    def fetch(self, queries):
        if self.hour_down and any(q.name == "series:cpu:workload" for q in queries):
            raise PrometheusUnavailable("query series:cpu:workload failed: http://prometheus:9090 gave no answer within 10 s")
        return super().fetch(queries)


async def test_the_forecasters_hour_is_asked_once_a_minute_and_its_failure_does_not_fail_the_cycle():
    hour = tuple(0.5 * (0.40 + 0.36 * i / 239) for i in range(240))
    batch = cpu_batch(PODS, now=hour[-1], series=tuple(hour[-20:]))
    batch["series:cpu:workload"] = {(NS, APP, "app"): hour}
    prom = HourTimesOut(batch=batch)
    ev = evaluator(prom, FakeKube(), [NOW])
    p = policy(spec(prediction={"enabled": True, "horizon": "15m"}))
    hour_asked = lambda: sum("[1h:15s]" in q for q in prom.asked)
    answered = lambda batch: {k: tuple(v) for k, v in batch.results["series:cpu:workload"].items()}
    assert answered(await ev._fetch([p], 0.0)) == {(NS, APP, "app"): hour}
    assert (await ev._fetch([p], 30.0)).results["series:cpu:workload"] and hour_asked() == 1
    prom.hour_down = True
    after = await ev._fetch([p], 61.0)
    assert after.error is None and after.results["cpu"], "the cycle has its answers"
    assert answered(after) == {(NS, APP, "app"): hour}, "the last hour serves"
    prom.hour_down = False
    await ev._fetch([p], 90.0)
    assert hour_asked() == 1, "a failed hour is not asked again within the minute"
    await ev._fetch([p], 122.0)
    assert hour_asked() == 2


def workload_matrix(needle: str, value):
    """A query_range answer of a workload-level family (no container label) from `value(t)`."""
    def answer(start: float, end: float, step: float) -> list[dict]:
        times = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
        return [{"metric": {"namespace": NS, "workload": APP}, "values": [[t, str(value(t))] for t in times]}]
    return (needle, answer)


def p95_seconds(t: float) -> float:
    """100 ms every day, 400 ms in the last hour."""
    return (0.4 if t > END - 3_600 else 0.1) * wiggle(t)


async def test_latency_and_error_rate_are_judged_on_their_workload_history():
    body = spec(anomalyDetection={"enabled": True},
                metrics={"latency": {"histogram": "http_request_duration_seconds"},
                         "errorRate": {"counter": "http_requests_total", "failed": 'code=~"5.."'}})
    flat = lambda at: tuple((at - 300 + 15 * i, 0.4 * wiggle(300 * i)) for i in range(20))  # noqa: E731
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.1, series=FLAT), ranges=[("_bucket", flat)], matrices=[
        workload_matrix("http_request_duration_seconds_bucket", p95_seconds),
        # 3 % of 100 requests/s failing in the last hour, 0.1 % before
        workload_matrix('code=~"5.."', lambda t: (3.0 if t > END - 3_600 else 0.1) * wiggle(t)),
        workload_matrix("http_requests_total", lambda t: 100.0),
        *matrix(lambda t: 0.1 * wiggle(t))])
    kube = FakeKube()
    ev = evaluator(prom, kube, [NOW])
    p = policy(body)
    batch = await ev._fetch([p], 0.0)
    assert set(batch.histories) == {"usage", "latency:http_request_duration_seconds",
                                    'requests:http_requests_total:code=~"5.."'}
    latency = [q for q, *_ in prom.range_queries if "histogram_quantile(0.95, sum by (namespace, workload, le)" in q]
    assert latency and all("kubetune:pod_workload:owner" in q for q in latency)
    await ev.evaluate(p, view(p, [pod(n) for n in PODS]), batch)
    c = next(c for c in parse_status(encode_status(kube.status)).conditions if c.type == ConditionType.ANOMALY_DETECTED.value)
    # The recent latency series alone is flat at 400 ms: only its eight days say the last hour is unusual.
    assert c.status.value == "True" and "latencyP95Ms 4" in c.message and "errorRatePercent 3" in c.message, c.message
    assert "cpuUtilization" not in c.message


async def test_a_failed_history_query_is_not_asked_again_before_the_step_moves():
    clock = [NOW]
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.1, series=FLAT), matrices=[("rate5m", failing)])
    ev = evaluator(prom, FakeKube(), clock)
    p = policy(spec(anomalyDetection={"enabled": True}))
    assert (await ev._fetch([p], 0.0)).histories == {}
    asked = len(prom.range_queries)
    assert asked == 1  # the first query failed; nothing after it was asked
    clock[0] = NOW + timedelta(seconds=30)
    assert (await ev._fetch([p], 30.0)).histories == {} and len(prom.range_queries) == asked
    clock[0] = NOW + timedelta(minutes=5)
    prom.matrices = matrix(daily_peak)  # Prometheus answers again
    batch = await ev._fetch([p], 300.0)
    assert len(batch.histories["usage"].get("cpu", NS, APP, "app")) == POINTS


def test_unreadable_history_points_are_missing_samples_not_a_failed_cycle():
    from kubetune.history import WorkloadHistory
    bad = [["x", "y"], [END - 600], [END - 300, "NaN"], None, [END - 900, "+Inf"], [END, "0.25"], [END + 300, "9"]]
    prom = FakePrometheus(matrices=[("rate5m", lambda s, e, st: [
        {"metric": {"namespace": NS, "workload": APP, "container": "app"}, "values": bad}])])
    history = WorkloadHistory(prom)
    history.refresh([NS], END)
    assert history.get("cpu", NS, APP, "app").tolist() == [0.25]  # only the one readable sample in the window
