"""The evaluation loop as a whole — gather -> gates -> upkeep/decide -> act -> report — with in-memory
fakes at the Kubernetes and Prometheus seams (tests/unit/loopfakes.py). Each row is what a user sees
afterwards: the policy's conditions and lastAction, the Events, and what was changed on the workload.
The cluster tier runs the same loop against a real API server and Prometheus."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubetune.api.performancepolicy import VerificationState
from kubetune.evaluation import Evaluator
from kubetune.kube import KubeError
from kubetune.metrics import OperatorMetrics
from kubetune.reasons import ConditionType, Reason
from kubetune.records import encode_status, parse_status
from kubetune.settings import OperatorSettings
from tests.unit.loopfakes import (
    MI,
    NOW,
    NS,
    FakeKube,
    FakePrometheus,
    cpu_batch,
    pod,
    policy,
    resources,
    spec,
    view,
)

pytestmark = pytest.mark.unit

PODS = ["web-1", "web-2"]


def evaluator(prom: FakePrometheus, kube: FakeKube, at=NOW) -> Evaluator:
    return Evaluator(OperatorSettings(), prom, kube, OperatorMetrics(), clock=lambda: at)


async def evaluate(p, prom, *, pods=None, kube=None, at=NOW, conflict_with=None, **view_kw) -> FakeKube:
    kube = kube or FakeKube()
    ev = evaluator(prom, kube, at)
    pods = pods if pods is not None else [pod(n) for n in PODS]
    await ev.evaluate(p, view(p, pods, **view_kw), await ev._fetch([p], 0.0), conflict_with)
    return kube


def status(kube: FakeKube):
    return parse_status(encode_status(kube.status))


def cond(kube: FakeKube, type_: ConditionType):
    return next(c for c in status(kube).conditions if c.type == type_.value)


def changed(kube: FakeKube) -> bool:
    return bool(kube.of("resize") or kube.of("template"))


def iso(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_action(minutes_ago: float = 11, window_minutes: float = 10, state: str = "Pending") -> dict:
    """An applied scale-up of container app from 400m/800m to 500m/1 (the pods' current values)."""
    t = NOW - timedelta(minutes=minutes_ago)
    return {"time": iso(t), "action": "IncreaseResources", "rule": "high-load", "applied": True,
            "changes": [{"container": "app", "resource": "cpu", "value": "requests", "from": "400m", "to": "500m"},
                        {"container": "app", "resource": "cpu", "value": "limits", "from": "800m", "to": "1"}],
            "evidence": ["high-load: app cpuUtilization 95%"],
            "verification": {"state": state, "message": "verifying",
                             "deadline": iso(t + timedelta(minutes=window_minutes))}}


# --- gates: the first verdict wins, nothing is changed -------------------------------------------------

GATES = [
    ("invalid-spec", dict(p=policy(None, spec_error="spec.interval: bad duration")), {},
     ConditionType.READY, "False", Reason.INVALID_SPEC),
    ("mode-off", dict(p=policy(spec(mode="Off"))), {}, ConditionType.READY, "True", Reason.MODE_OFF),
    ("target-missing", dict(p=policy()), {"workloads": {}}, ConditionType.TARGET_FOUND, "False", Reason.TARGET_NOT_FOUND),
    ("prometheus-down", dict(p=policy(), down=True), {}, ConditionType.METRICS_AVAILABLE, "False",
     Reason.PROMETHEUS_UNAVAILABLE),
    ("no-cpu-series", dict(p=policy()), {"batch": {}}, ConditionType.METRICS_AVAILABLE, "False", Reason.NO_DATA),
]


@pytest.mark.parametrize("name,given,extra,type_,expected,reason", GATES, ids=[g[0] for g in GATES])
async def test_gate_stops_with_its_condition_and_event(name, given, extra, type_, expected, reason):
    prom = FakePrometheus(batch=extra.get("batch", cpu_batch(PODS, now=0.45, min5=0.45)), down=given.get("down", False))
    kube = FakeKube()
    ev = evaluator(prom, kube)
    p = given["p"]
    v = view(p, [pod(n) for n in PODS])
    if "workloads" in extra:
        v.workloads = extra["workloads"]
    await ev.evaluate(p, v, await ev._fetch([p], 0.0))
    c = cond(kube, type_)
    assert (c.status.value, c.reason) == (expected, reason.value)
    assert kube.reasons() == [reason.value]
    assert not changed(kube)


async def test_conflicting_younger_policy_is_ignored_with_a_condition():
    old, young = policy(name="old"), policy(name="young", created="2026-11-27T11:00:00Z")
    kube = await evaluate(young, FakePrometheus(batch=cpu_batch(PODS, now=0.45, min5=0.45)), conflict_with=old)
    c = cond(kube, ConditionType.READY)
    assert (c.status.value, c.reason) == ("False", "Conflict") and "old" in c.message
    assert not changed(kube)


@pytest.mark.parametrize("metrics", [
    {"errorRate": {"query": 'sum(rate(errors{namespace="bank"}[$rate]))'}},
    {"throughput": {"query": 'sum(rate(requests{namespace="$namespace"}[$rate])) or sum(rate(requests{namespace=~".+"}[$rate]))'}},
    {"latency": {"query": 'histogram_quantile($quantile, sum by (le) (rate(db_seconds_bucket{namespace!="$namespace"}[$rate])))'}},
], ids=["errorRate-other-namespace", "throughput-or-regex", "latency-negative"])
async def test_template_reaching_another_namespace_is_refused_and_nothing_is_queried(metrics):
    body = spec(metrics=metrics, rules=[{"name": "errors", "metric": "errorRatePercent", "above": 1, "action": "Investigate"}])
    p = policy(body)
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.45, min5=0.45), scalars=[("", 0.5)],
                          ranges=[("", lambda at: ((at, 0.5),))])
    kube = FakeKube()
    ev = evaluator(prom, kube)
    batch = await ev._fetch([p], 0.0)
    asked = list(prom.asked)  # the cycle's batched cAdvisor queries, operator-written
    await ev.evaluate(p, view(p, [pod(n) for n in PODS]), batch)
    assert prom.asked == asked, "nothing of the policy's own reaches Prometheus"
    assert not any("bank" in q or 'namespace!="shop"' in q or ".+" in q for q in prom.asked)
    for type_ in (ConditionType.READY, ConditionType.METRICS_AVAILABLE):
        c = cond(kube, type_)
        assert (c.status.value, c.reason) == ("False", Reason.QUERY_NOT_CONFINED.value)
        assert "spec.metrics." in c.message and "only namespace=\"shop\" is allowed" in c.message
    assert kube.reasons() == [Reason.QUERY_NOT_CONFINED.value]
    assert not changed(kube)
    assert status(kube).signals is None or status(kube).signals.error_rate_percent is None


# --- actions ------------------------------------------------------------------------------------------


async def test_sustained_high_load_resizes_every_running_pod_after_recording_the_intent():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45))  # 90 % of 500m for 5m
    kube = await evaluate(policy(), prom, pods=[pod("web-1"), pod("web-2"), pod("web-3", phase="Pending")])
    resized = kube.of("resize")
    assert [name for name, _ in resized] == ["web-1", "web-2"]
    assert resized[0][1]["app"]["requests"]["cpu"] == "625m" and resized[0][1]["app"]["limits"]["cpu"] == "1250m"
    kinds = [k for k, _ in kube.calls]
    assert kinds.index("status") < kinds.index("resize"), "the intent is written before the change"
    intent = kube.of("status")[0]["lastAction"]
    assert intent["applied"] and intent["verification"]["state"] == "Pending", "a crash right after is finished later"
    last = status(kube).last_action
    assert last.applied and last.verification.state is VerificationState.PENDING
    assert ("Normal", "ScaledUp") in [(t, r) for t, r, _ in kube.events("Deployment")]
    assert status(kube).signals.high_load, "status says so, for the node planner's priority raise"


async def test_rollout_method_patches_the_template_not_the_pods():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45))
    kube = await evaluate(policy(spec(scaling={"method": "Rollout"})), prom)
    assert not kube.of("resize") and kube.of("template")[0]["app"]["requests"]["cpu"] == "625m"


async def test_refused_resize_falls_back_to_a_rollout_under_in_place_or_rollout():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45))
    kube = FakeKube(refuse_resize=KubeError("resize pod: forbidden", 422))
    await evaluate(policy(), prom, kube=kube)
    assert kube.of("template")
    assert "in-place resize refused" in status(kube).last_action.verification.message


async def test_failed_action_is_recorded_as_not_applied_and_degraded():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45))
    kube = FakeKube(refuse_resize=KubeError("resize pod: connection refused", 0))
    await evaluate(policy(), prom, kube=kube)
    assert not status(kube).last_action.applied
    c = cond(kube, ConditionType.DEGRADED)
    assert (c.status.value, c.reason) == ("True", "ActionFailed")


async def test_recommend_mode_records_the_recommendation_and_changes_nothing():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45))
    kube = await evaluate(policy(spec(mode="Recommend")), prom)
    assert not changed(kube)
    last = status(kube).last_action
    assert not last.applied and last.verification.state is VerificationState.SKIPPED


async def test_nothing_changed_means_no_second_status_write_and_no_second_event():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.25, min5=0.25, max15=0.3))
    kube = FakeKube()
    ev = evaluator(prom, kube)
    p = policy()
    for _ in range(2):
        await ev.evaluate(p, view(p, [pod(n) for n in PODS]), await ev._fetch([p], 0.0))
    assert len(kube.of("status")) == 1 and kube.reasons() == ["NoRuleFired"]



async def test_data_that_comes_and_goes_announces_each_reason_once_per_ten_minutes():
    # A scrape that misses now and then flips the policy NoData -> NoRuleFired -> NoData: the conditions
    # follow every flip, an Event is posted for a reason only if it was not posted in the last 10 minutes.
    data = cpu_batch(PODS, now=0.25, min5=0.25, max15=0.3)
    prom, kube, at = FakePrometheus(batch=data), FakeKube(), [NOW]
    ev = Evaluator(OperatorSettings(), prom, kube, OperatorMetrics(), clock=lambda: at[0])
    p = policy()
    for minute, batch in enumerate([data, {}, data, {}, data, {}] + [data] * 6 + [{}]):
        at[0], prom.batch = NOW + timedelta(minutes=minute), batch
        await ev.evaluate(p, view(p, [pod(n) for n in PODS]), await ev._fetch([p], 0.0))
    assert cond(kube, ConditionType.METRICS_AVAILABLE).reason == Reason.NO_DATA.value  # the last flip, minute 12
    # NoRuleFired at minute 0, NoData at 1, nothing more until NoData again at minute 12 (> 10 minutes after 1).
    assert kube.reasons() == ["NoRuleFired", "NoData", "NoData"]

# --- defect 1: a pending change keeps its verification -----------------------------------------------


async def test_at_bound_while_verifying_keeps_the_applied_change_as_last_action():
    at_max = resources(cpu="2", cpu_limit="4")
    action = pending_action(minutes_ago=2)
    action["changes"] = [{"container": "app", "resource": "cpu", "value": "requests", "from": "1600m", "to": "2"}]
    p = policy(status={"lastAction": action})
    prom = FakePrometheus(batch=cpu_batch(PODS, now=1.9, min5=1.9))  # 95 % of the 2-core ceiling
    kube = await evaluate(p, prom, pods=[pod(n, at_max) for n in PODS], template=at_max)
    last = status(kube).last_action
    assert last.applied and last.verification.state is VerificationState.PENDING
    assert last.changes[0].to == "2"
    assert cond(kube, ConditionType.READY).message.startswith("AtBound")
    assert not changed(kube)


async def test_verification_passes_after_its_window_and_is_recorded():
    p = policy(status={"lastAction": pending_action(minutes_ago=11)})
    flat = lambda at: tuple((at - 1200 + 15 * i, 0.3) for i in range(80))  # noqa: E731
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.3), ranges=[("container_cpu_usage_seconds_total", flat)])
    kube = await evaluate(p, prom)
    assert status(kube).last_action.verification.state is VerificationState.PASSED


# --- defect 6: a rollback is a rollback, a completion a completion ------------------------------------


async def test_regression_is_rolled_back_to_the_recorded_values_with_rolled_back_events():
    body = spec(metrics={"latency": {"histogram": "http_request_duration_seconds"}})
    p = policy(body, status={"lastAction": pending_action(minutes_ago=11)})

    def latency(at):  # 100 ms before the change (10 min ago), 400 ms after
        acted = at - 600
        return tuple((t, 0.1 if t < acted else 0.4) for t in range(int(at) - 1200, int(at), 15))

    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.3), ranges=[("http_request_duration_seconds_bucket", latency)])
    kube = await evaluate(p, prom)
    name, patch = kube.of("resize")[0]
    assert patch["app"]["requests"]["cpu"] == "400m" and patch["app"]["limits"]["cpu"] == "800m"
    assert status(kube).last_action.verification.state is VerificationState.ROLLED_BACK
    assert "RolledBack" in kube.reasons("PerformancePolicy") and "RolledBack" in kube.reasons("Deployment")
    assert "ScaledDown" not in kube.reasons()
    c = cond(kube, ConditionType.DEGRADED)
    assert (c.status.value, c.reason) == ("True", "RolledBack")


async def test_recorded_intent_is_completed_on_pods_that_missed_it():
    # The operator died after recording 400m -> 500m and before resizing: pods and template still say 400m.
    old = resources(cpu="400m", cpu_limit="800m")
    p = policy(status={"lastAction": pending_action(minutes_ago=1)})
    kube = await evaluate(p, FakePrometheus(batch=cpu_batch(PODS, now=0.2)), pods=[pod(n, old) for n in PODS],
                          template=old)
    assert [n for n, _ in kube.of("resize")] == PODS
    assert kube.of("resize")[0][1]["app"]["requests"]["cpu"] == "500m"
    assert "Completed" in kube.reasons("Deployment") and "ScaledUp" not in kube.reasons()


async def test_recorded_intent_is_completed_on_the_template_under_rollout():
    old = resources(cpu="400m", cpu_limit="800m")
    p = policy(spec(scaling={"method": "Rollout"}), status={"lastAction": pending_action(minutes_ago=1)})
    kube = await evaluate(p, FakePrometheus(batch=cpu_batch(PODS, now=0.2)), pods=[pod(n, old) for n in PODS],
                          template=old)
    assert kube.of("template")[0]["app"]["requests"]["cpu"] == "500m" and not kube.of("resize")
    assert "Completed" in kube.reasons("Deployment")


# --- defect 7: in-place changes survive new pods; infeasible resizes roll out ----------------------------


async def test_new_pod_from_the_unchanged_template_gets_the_verified_in_place_values():
    old = resources(cpu="400m", cpu_limit="800m")
    p = policy(status={"lastAction": pending_action(minutes_ago=30, state="Passed")})
    pods = [pod("web-1"), pod("web-2"), pod("web-3", old)]  # web-3: a restart, from the template
    kube = await evaluate(p, FakePrometheus(batch=cpu_batch(PODS + ["web-3"], now=0.2)), pods=pods, template=old)
    assert [n for n, _ in kube.of("resize")] == ["web-3"]


async def test_a_template_the_user_changed_is_left_alone():
    mine = resources(cpu="700m", cpu_limit="1400m")  # not a value kubetune replaced
    p = policy(status={"lastAction": pending_action(minutes_ago=30, state="Passed")})
    kube = await evaluate(p, FakePrometheus(batch=cpu_batch(PODS, now=0.2)), pods=[pod(n, mine) for n in PODS],
                          template=mine)
    assert not kube.of("resize")


@pytest.mark.parametrize("method,rolled_out", [("InPlaceOrRollout", True), ("InPlace", False)])
async def test_infeasible_resize_rolls_out_or_says_why_not(method, rolled_out):
    old = resources(cpu="400m", cpu_limit="800m")
    p = policy(spec(scaling={"method": method}), status={"lastAction": pending_action(minutes_ago=1)})
    pods = [pod(n, old, resize_pending="Infeasible") for n in PODS]
    kube = await evaluate(p, FakePrometheus(batch=cpu_batch(PODS, now=0.2)), pods=pods, template=old)
    assert not kube.of("resize"), "an infeasible pod is not resized again"
    if rolled_out:
        assert kube.of("template")[0]["app"]["requests"]["cpu"] == "500m"
        assert "RolledOut" in kube.reasons("Deployment")
    else:
        assert not kube.of("template")
        c = cond(kube, ConditionType.DEGRADED)
        assert (c.status.value, c.reason) == ("True", "ResizeInfeasible")


# --- defects 2 and 3: latency templates are evaluated, `for:` holds on every rule ----------------------


async def test_latency_query_template_is_evaluated_per_percentile():
    body = spec(metrics={"latency": {"query": 'histogram_quantile($quantile, sum by (le) (rate(db_seconds_bucket'
                                              '{namespace="$namespace"}[$rate])))', "percentiles": [95, 99]}},
                rules=[{"name": "slow", "metric": "latencyP99Ms", "above": 300, "action": "Investigate"}])
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2), scalars=[("histogram_quantile(0.99", 0.5),
                                                                   ("histogram_quantile(0.95", 0.2)])
    kube = await evaluate(policy(body), prom)
    signals = status(kube).signals
    assert (signals.latency_p99_ms, signals.latency_p95_ms) == (500.0, 200.0)
    assert cond(kube, ConditionType.METRICS_AVAILABLE).status.value == "True"
    assert cond(kube, ConditionType.INVESTIGATING).status.value == "True"
    assert any('namespace="shop"' in q and "[1m]" in q for q in prom.asked)


@pytest.mark.parametrize("sustained_min,fires", [(0.15, False), (0.25, True)])
async def test_for_window_holds_on_latency_rules(sustained_min, fires):
    body = spec(metrics={"latency": {"histogram": "http_request_duration_seconds"}},
                rules=[{"name": "slow", "metric": "latencyP95Ms", "above": 200, "for": "5m", "action": "Investigate"}])
    # Now: 300 ms. Over the last 5 minutes the lowest p95 was `sustained_min` seconds.
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2), scalars=[("min_over_time", sustained_min)])
    kube = await evaluate(policy(body), prom)
    assert cond(kube, ConditionType.INVESTIGATING).status.value == ("True" if fires else "False")
    assert any("min_over_time" in q and "[5m:15s]" in q for q in prom.asked)


async def test_for_window_without_samples_is_unevaluable_not_instant():
    body = spec(metrics={"errorRate": {"query": 'sum(rate(errors{namespace="$namespace"}[$rate]))'}},
                rules=[{"name": "errors", "metric": "errorRatePercent", "above": 1, "for": "5m", "action": "Investigate"}])
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2), scalars=[("min_over_time", None), ("errors", 0.5)])
    kube = await evaluate(policy(body), prom)
    assert cond(kube, ConditionType.INVESTIGATING).status.value == "False"
    c = cond(kube, ConditionType.METRICS_AVAILABLE)
    assert (c.status.value, c.reason) == ("False", "RulesUnevaluable") and "errors" in c.message


# --- defect 4: Investigate is reported even when another rule acts ---------------------------------------


async def test_investigate_hit_is_reported_with_evidence_while_another_rule_scales_up():
    body = spec(metrics={"errorRate": {"query": 'sum(rate(errors{namespace="$namespace"}[$rate]))'}})
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.47, min5=0.45), scalars=[("errors", 0.05)])
    kube = await evaluate(policy(body), prom)
    assert kube.of("resize"), "the scale-up still happens"
    c = cond(kube, ConditionType.INVESTIGATING)
    assert c.status.value == "True" and "errors" in c.message and "last change" in c.message
    investigate = [m for t, r, m in kube.events("PerformancePolicy") if r == "Investigate"]
    assert investigate and "errorRatePercent 5.0" in investigate[0]


# --- defect 5: truthful MetricsAvailable and Ready ---------------------------------------------------------


async def test_missing_container_usage_makes_metrics_unavailable_and_ready_says_evaluated():
    two = resources() + (resources(cpu="100m")[0].__class__("sidecar", {"cpu": 0.1}, {}),)
    batch = cpu_batch(PODS, now=0.2, min5=0.2, max15=0.3)  # no series for the sidecar
    kube = await evaluate(policy(), FakePrometheus(batch=batch), pods=[pod(n, two) for n in PODS], template=two)
    c = cond(kube, ConditionType.METRICS_AVAILABLE)
    assert (c.status.value, c.reason) == ("False", "RulesUnevaluable") and "sidecar" in c.message
    ready = cond(kube, ConditionType.READY)
    assert (ready.status.value, ready.reason) == ("True", "Evaluated")


async def test_unconfigured_application_metrics_are_skipped_not_missing():
    kube = await evaluate(policy(), FakePrometheus(batch=cpu_batch(PODS, now=0.2, min5=0.2, max15=0.3)))
    c = cond(kube, ConditionType.METRICS_AVAILABLE)
    assert (c.status.value, c.reason) == ("True", "Available") and "slow" in c.message and "errors" in c.message


# --- defect 8: anomalies reach a condition and one Event ----------------------------------------------------


async def test_cpu_anomaly_sets_the_condition_and_posts_one_event():
    series = tuple([0.2 + 0.005 * (i % 3) for i in range(39)] + [0.48])
    body = spec(anomalyDetection={"enabled": True})
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.48, series=series))
    kube = FakeKube()
    ev = evaluator(prom, kube)
    p = policy(body)
    await ev.evaluate(p, view(p, [pod(n) for n in PODS]), await ev._fetch([p], 0.0))
    c = cond(kube, ConditionType.ANOMALY_DETECTED)
    assert (c.status.value, c.reason) == ("True", "Anomalous") and "cpuUtilization" in c.message
    assert kube.reasons().count("Anomalous") == 1
    # Evaluated again with the condition already True: no second Event.
    p2 = policy(body, status=kube.status)
    await ev.evaluate(p2, view(p2, [pod(n) for n in PODS]), await ev._fetch([p2], 0.0))
    assert kube.reasons().count("Anomalous") == 1


async def test_memory_anomaly_is_detected_too():
    flat = tuple([0.2] * 40)
    memory = tuple([200 * MI + (i % 3) * MI for i in range(39)] + [480 * MI])
    body = spec(anomalyDetection={"enabled": True})
    batch = cpu_batch(PODS, now=0.2, series=flat)
    batch["series:memory"] = {(k[0], k[1], "app"): memory for k in batch["cpu"]}
    kube = await evaluate(policy(body), FakePrometheus(batch=batch))
    c = cond(kube, ConditionType.ANOMALY_DETECTED)
    assert c.status.value == "True" and "memory" in c.message



# --- correlation: the node's disk is a candidate -------------------------------------------------------------


async def test_latency_that_moves_with_node_disk_latency_is_not_a_resource_bottleneck():
    body = spec(metrics={"latency": {"histogram": "http_request_duration_seconds"}},
                rules=[{"name": "slow", "metric": "latencyP95Ms", "above": 200, "action": "OptimizeResources"}])

    def rising(base, slope):
        return lambda at: tuple((at - 600 + 15 * i, base + slope * i) for i in range(40))

    def flat_noise(base):
        return lambda at: tuple((at - 600 + 15 * i, base + 0.001 * ((i * 7) % 5)) for i in range(40))

    batch = cpu_batch(PODS, now=0.2)
    batch["latency:http_request_duration_seconds"] = {("shop", p, le): r for p in PODS
                                                      for le, r in (("0.1", 0.0), ("0.5", 10.0), ("+Inf", 10.0))}
    prom = FakePrometheus(batch=batch, ranges=[
        ("http_request_duration_seconds_bucket", rising(0.25, 0.01)),
        ("kubetune_node_disk_read_time_seconds_total", rising(0.005, 0.001)),
        ("container_cpu_cfs_throttled_periods_total", flat_noise(0.01)),
        ("container_memory_working_set_bytes", flat_noise(100 * MI)),
        ("pgmajfault", flat_noise(0.0))])
    kube = await evaluate(policy(body), prom)
    assert not changed(kube)
    ready = cond(kube, ConditionType.READY)
    assert ready.message.startswith("NotAResourceBottleneck"), ready.message
    assert any('node=~"node-a"' in q for q in prom.asked)
    assert "nodeDiskLatency" in " ".join(status(kube).last_action.evidence)


# --- defect 11: far from the recommendation, say so; or jump when asked -------------------------------------


def starving_batch():
    """1 core used on a 600m request, a recommendation window saying ~1.15 cores."""
    return cpu_batch(PODS, now=1.0, min5=1.0, cpu_p50=0.9, cpu_p90=1.0, cpu_peak=1.1, memory_peak=100 * MI)


async def test_rate_limited_far_from_the_recommendation_sets_converging_and_one_event():
    six = resources(cpu="600m", cpu_limit=None)
    past = [{"time": iso(NOW - timedelta(minutes=10 * i + 5)), "action": "IncreaseResources", "rule": "high-load",
             "applied": True, "changes": [], "verification": {"state": "Passed"}} for i in range(4)]
    for record, (old, new) in zip(past, [("500m", "600m"), ("400m", "500m"), ("300m", "400m"), ("200m", "300m")]):
        record["changes"] = [{"container": "app", "resource": "cpu", "value": "requests", "from": old, "to": new}]
    p = policy(status={"lastAction": past[0], "history": past[1:]})
    kube = await evaluate(p, FakePrometheus(batch=starving_batch()), pods=[pod(n, six) for n in PODS], template=six)
    assert not changed(kube)
    c = cond(kube, ConditionType.CONVERGING)
    assert (c.status.value, c.reason) == ("True", "FarFromRecommendation") and "maxChangesPerHour" in c.message
    assert kube.reasons().count("FarFromRecommendation") == 1


async def test_jump_to_recommendation_reaches_it_in_one_bounded_step():
    six = resources(cpu="600m", cpu_limit=None)
    p = policy(spec(scaling={"jumpToRecommendation": True}))
    kube = await evaluate(p, FakePrometheus(batch=starving_batch()), pods=[pod(n, six) for n in PODS], template=six)
    (_, patch), _ = kube.of("resize")
    assert patch["app"]["requests"]["cpu"] == "1150m"
    assert cond(kube, ConditionType.CONVERGING).status.value == "False"


async def test_latency_histogram_series_feed_anomaly_detection():
    body = spec(metrics={"latency": {"histogram": "http_request_duration_seconds"}}, anomalyDetection={"enabled": True})
    spike = lambda at: tuple((at - 300 + 15 * i, 0.1 + 0.001 * (i % 3) if i < 19 else 0.9) for i in range(20))  # noqa: E731
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2), ranges=[("http_request_duration_seconds_bucket", spike)])
    kube = await evaluate(policy(body), prom)
    c = cond(kube, ConditionType.ANOMALY_DETECTED)
    assert c.status.value == "True" and "latencyP95Ms" in c.message


# --- application metrics from request counters: batched, nothing asked per policy ---------------------------


async def test_request_counters_give_error_rate_and_throughput_from_the_batch_alone():
    body = spec(metrics={"errorRate": {"counter": "http_requests_total", "failed": 'code=~"5.."'},
                         "throughput": {"counter": "http_requests_total"}},
                rules=[{"name": "errors", "metric": "errorRatePercent", "above": 1, "action": "Investigate"}])
    batch = cpu_batch(PODS, now=0.2)
    batch["requests:http_requests_total"] = {("shop", p): 50.0 for p in PODS}  # 100 rps in all
    batch['requests:http_requests_total:code=~"5.."'] = {("shop", "web-1"): 3.0}  # 3 failing
    prom = FakePrometheus(batch=batch)
    kube = await evaluate(policy(body), prom)
    signals = status(kube).signals
    assert (signals.error_rate_percent, signals.throughput_rps) == (3.0, 100.0)
    assert cond(kube, ConditionType.INVESTIGATING).status.value == "True"
    per_policy = [q for q in prom.asked if 'pod=~"web-.+"' in q]
    assert not per_policy, per_policy
    assert any(q.startswith("sum by (namespace, pod) (rate(http_requests_total{code=~\"5..\",namespace=~\"shop\"}")
               for q in prom.asked)


async def test_a_new_leader_does_not_repeat_the_event_the_status_already_explains():
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.25, min5=0.25, max15=0.3))
    first = await evaluate(policy(), prom)
    assert first.reasons() == ["NoRuleFired"]
    # Another process (restart, failover) evaluates the same policy with the status the first one wrote.
    second = await evaluate(policy(status=first.status), prom)
    assert second.reasons() == []


async def test_a_sharded_replica_evaluates_only_the_namespaces_of_its_shards():
    from kubetune.records import PolicyRecord
    mine, theirs = policy(), PolicyRecord("other-team", "pp", "uid-x", 1, "2026-11-27T10:00:00Z", spec(), None, {})
    kube = FakeKube()
    ev = evaluator(FakePrometheus(batch=cpu_batch(PODS, now=0.2)), kube)
    ev.owns = lambda namespace: namespace == "shop"
    await ev.cycle(view([mine, theirs], [pod(n) for n in PODS]))
    assert list(kube.by_policy) == [("shop", "pp")]


@pytest.mark.parametrize("minutes_ago,state", [(11, VerificationState.PENDING), (25, VerificationState.PASSED)])
async def test_too_few_samples_verify_again_for_one_more_window_then_pass_saying_so(minutes_ago, state):
    body = spec(metrics={"latency": {"histogram": "http_request_duration_seconds"}})
    p = policy(body, status={"lastAction": pending_action(minutes_ago=minutes_ago)})

    def latency(at):  # 300 ms before the change, 120 ms after: clearly better
        acted = at - 600
        return tuple((t, 0.3 if t < acted else 0.12) for t in range(int(at) - 1200, int(at), 15))

    few_cpu = lambda at: ((at - 30, 0.2), (at - 15, 0.2), (at, 0.2))  # noqa: E731  (a new container)
    prom = FakePrometheus(batch=cpu_batch(PODS, now=0.2), ranges=[("http_request_duration_seconds_bucket", latency),
                                                                  ("container_cpu_usage_seconds_total", few_cpu)])
    kube = await evaluate(p, prom)
    verification = status(kube).last_action.verification
    assert verification.state is state
    if state is VerificationState.PASSED:  # every metric's verdict, the improvement included
        assert "not enough samples" in verification.message and "latencyP95Ms: 300 -> 120" in verification.message


# --- soak defect 2: a rollout must not make hysteresis forget the workload's peak ---------------------

OLD_POD, NEW_POD = "web-7c9d8f6b5-bcdfg", "web-6d4f8b9c7-hkmnp"  # the names a Deployment's controller gives
SOAK_SINE = spec(containers=[{"name": "*", "controlledResources": ["cpu"], "minAllowed": {"cpu": "100m"},
                              "maxAllowed": {"cpu": "2"}}],
                 scaling={"method": "Rollout", "stepPercent": 20, "cooldown": "10s", "maxChangesPerHour": 12},
                 rules=[{"name": "high-load", "metric": "cpuUtilization", "above": 80, "for": "20s",
                         "action": "IncreaseResources"},
                        {"name": "low-load", "metric": "cpuUtilization", "below": 20, "for": "20s",
                         "action": "DecreaseResources"}])


def quiet_batch(pod_name: str, history: dict[str, dict[str, float]]) -> dict[str, dict]:
    """`pod_name` running at 60m (12 % of 500m, under low-load's 20 % for 20 s); `history`: pod -> the
    recommendation window's cpu_p50/cpu_p90/cpu_peak, as Prometheus answers them per pod."""
    key = (NS, pod_name, "app")
    batch = {"cpu": {key: 0.06}, "memory": {key: 100 * MI}, "cpu_max_20s": {key: 0.08}, "cpu_min_20s": {key: 0.05}}
    for pod_of, figures in history.items():
        for family, value in figures.items():
            batch.setdefault(family, {})[(NS, pod_of, "app")] = value
    return batch


OLD_HISTORY = {"cpu_p50": 0.25, "cpu_p90": 0.40, "cpu_peak": 0.45}  # the sine's 90 % of 500m, an hour ago
NEW_HISTORY = {"cpu_p50": 0.06, "cpu_p90": 0.08, "cpu_peak": 0.10}  # the new pod's first minutes


@pytest.mark.parametrize("history_fetched_after_rollout", [False, True], ids=["history-kept-from-before", "history-refetched"])
async def test_a_rollout_does_not_make_hysteresis_forget_the_peak_of_the_pods_it_replaced(history_fetched_after_rollout):
    """The soak's evidence (docs/reliability.md, "Soak", defect 2): `sine` held by hysteresis at 625m by
    its 450m peak, then its rollout replaced the pod and the next evaluations stepped 625m→500m→…→256m,
    the new pod's minutes of history being all the join saw. The replaced pod's series are still in the
    recommendation window's answer; the join must read them by the workload's pod names. A pod of
    `web-api` (a longer name, not a pod of `web`) peaking at 2 cores must not count."""
    p = policy(SOAK_SINE)
    template = resources(cpu="625m", cpu_limit=None, memory="256Mi", memory_limit=None)
    prom, kube = FakePrometheus(batch=quiet_batch(OLD_POD, {OLD_POD: OLD_HISTORY})), FakeKube()
    ev = evaluator(prom, kube)
    await ev.evaluate(p, view(p, [pod(OLD_POD, template)], template=template), await ev._fetch([p], 0.0))
    assert not changed(kube) and "HeldByHysteresis" in kube.reasons(), kube.reasons()

    # The rollout: the old pod is gone from the index, a new one runs.
    prom.batch = quiet_batch(NEW_POD, {OLD_POD: OLD_HISTORY, NEW_POD: NEW_HISTORY,
                                       "web-api-5b9c8d7f4-xzvtr": {"cpu_p50": 1.8, "cpu_p90": 1.9, "cpu_peak": 2.0}})
    clock = 3600.0 if history_fetched_after_rollout else 10.0  # the history is asked every 5 minutes
    await ev.evaluate(p, view(p, [pod(NEW_POD, template)], template=template), await ev._fetch([p], clock))
    assert not changed(kube), f"decreased below what the 450m peak allows: {kube.of('template')}"
    ready = cond(kube, ConditionType.READY)
    assert ready.message.startswith("HeldByHysteresis") and "its peak 450m" in ready.message, ready.message
    # The recommendation, too, is the workload's over the window: p90 400m x 1.15, not the new pod's 92m.
    assert status(kube).containers[0].recommendation.target.cpu == "460m"
