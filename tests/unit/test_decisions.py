"""Decision tables: signals, bounds, modes, rate limits and past actions in; action, reason and
changes out. Each row is something a user would check on the policy's status."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from kubetune.api.performancepolicy import Action, ActionRecord, Metric, PerformancePolicySpec
from kubetune.decisions import (
    ContainerSignals,
    PolicyInputs,
    WorkloadSignals,
    decide,
    recommend,
)
from kubetune.reasons import Reason

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
MI = 2**20
LOW_LOAD = {"name": "low-load", "metric": "cpuUtilization", "below": 20, "for": "15m", "action": "DecreaseResources"}


def spec(**overrides) -> PerformancePolicySpec:
    body = {"targetRef": {"kind": "Deployment", "name": "web"}, "mode": "Auto",
            "containers": [{"name": "*", "minAllowed": {"cpu": "100m", "memory": "64Mi"},
                            "maxAllowed": {"cpu": "2", "memory": "4Gi"}}]}
    body.update(overrides)
    return PerformancePolicySpec.model_validate(body)


def container(cpu_util_min5=None, cpu_util_max15=None, cpu_now=None, request=1.0, limit=2.0, **kw) -> ContainerSignals:
    """CPU utilisation in percent of a 1-core request (so percent/100 = cores)."""
    sustained = {}
    if cpu_util_min5 is not None:
        sustained[("cpu", "min", "5m")] = cpu_util_min5 / 100 * request
    if cpu_util_max15 is not None:
        sustained[("cpu", "max", "15m")] = cpu_util_max15 / 100 * request
    usage = {"cpu": (cpu_now if cpu_now is not None else 0.5) * request, "memory": 200 * MI}
    return ContainerSignals("app", {"cpu": request, "memory": 512 * MI}, {"cpu": limit, "memory": 1024 * MI},
                            usage=usage, sustained=sustained, **kw)


def applied(minutes_ago: float) -> ActionRecord:
    return ActionRecord(time=NOW - timedelta(minutes=minutes_ago), action=Action.INCREASE_RESOURCES,
                        rule="high-load", applied=True,
                        changes=[{"container": "app", "resource": "cpu", "from": "800m", "to": "1"}])


def run(policy=None, c=None, signals=None, **kw):
    signals = signals or WorkloadSignals(containers=(c or container(),))
    return decide(PolicyInputs(spec=policy or spec(), signals=signals, now=NOW, **kw))


def changes_of(decision):
    return {(ch.container, ch.resource, ch.value): (round(ch.old, 3), round(ch.new, 3)) for ch in decision.changes}


CASES = [
    # id, policy, container signals, extra inputs, expected reason, expected apply, expected changes
    ("sustained-high-load-steps-up-25pct", spec(), container(cpu_util_min5=90), {}, Reason.SCALED_UP, True,
     {("app", "cpu", "requests"): (1.0, 1.25), ("app", "cpu", "limits"): (2.0, 2.5)}),
    ("short-spike-does-nothing", spec(), container(cpu_util_min5=40, cpu_now=1.5), {}, Reason.NO_RULE_FIRED, False, {}),
    ("step-capped-at-maxAllowed", spec(), container(cpu_util_min5=95, request=1.9, limit=0), {}, Reason.SCALED_UP, True,
     {("app", "cpu", "requests"): (1.9, 2.0)}),
    ("at-maxAllowed-reports-bound", spec(), container(cpu_util_min5=95, request=2.0), {}, Reason.AT_BOUND, False, {}),
    ("never-above-largest-node", spec(), container(cpu_util_min5=95, request=1.0, limit=0), {"node_capacity": {"cpu": 1.1}},
     Reason.SCALED_UP, True, {("app", "cpu", "requests"): (1.0, 1.1)}),
    ("sustained-low-load-steps-down", spec(), container(cpu_util_max15=10), {}, Reason.SCALED_DOWN, True,
     {("app", "cpu", "requests"): (1.0, 0.75), ("app", "cpu", "limits"): (2.0, 1.5)}),
    ("step-down-stops-at-minAllowed", spec(), container(cpu_util_max15=5, request=0.11, limit=0), {}, Reason.SCALED_DOWN,
     True, {("app", "cpu", "requests"): (0.11, 0.1)}),
    ("recommend-mode-reports-only", spec(mode="Recommend"), container(cpu_util_min5=90), {}, Reason.SCALED_UP, False,
     {("app", "cpu", "requests"): (1.0, 1.25), ("app", "cpu", "limits"): (2.0, 2.5)}),
    ("off-mode-does-nothing", spec(mode="Off"), container(cpu_util_min5=99), {}, Reason.MODE_OFF, False, {}),
    ("cooldown-blocks", spec(), container(cpu_util_min5=90), {"past_actions": (applied(2),)}, Reason.COOLDOWN, False,
     {("app", "cpu", "requests"): (1.0, 1.25), ("app", "cpu", "limits"): (2.0, 2.5)}),
    ("after-cooldown-acts", spec(), container(cpu_util_min5=90), {"past_actions": (applied(6),)}, Reason.SCALED_UP, True,
     {("app", "cpu", "requests"): (1.0, 1.25), ("app", "cpu", "limits"): (2.0, 2.5)}),
    ("max-changes-per-hour", spec(scaling={"maxChangesPerHour": 2, "cooldown": "1m"}), container(cpu_util_min5=90),
     {"past_actions": (applied(10), applied(20))}, Reason.RATE_LIMITED, False,
     {("app", "cpu", "requests"): (1.0, 1.25), ("app", "cpu", "limits"): (2.0, 2.5)}),
    ("hpa-on-cpu-is-a-conflict", spec(), container(cpu_util_min5=90), {"hpa_resources": frozenset({"cpu"})},
     Reason.HPA_CONFLICT, False, {}),
    ("requests-only-leaves-limits", spec(containers=[{"name": "*", "controlledValues": "RequestsOnly"}]),
     container(cpu_util_min5=90), {}, Reason.SCALED_UP, True, {("app", "cpu", "requests"): (1.0, 1.25)}),
    ("memory-not-controlled", spec(containers=[{"name": "*", "controlledResources": ["memory"]}]),
     container(cpu_util_min5=90), {}, Reason.AT_BOUND, False, {}),
    ("container-without-entry-left-alone", spec(containers=[{"name": "sidecar"}]), container(cpu_util_min5=90), {},
     Reason.NO_RULE_FIRED, False, {}),
]


@pytest.mark.parametrize("policy,c,extra,reason,apply,changes", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_decision_table(policy, c, extra, reason, apply, changes):
    decision = run(policy, c, **extra)
    assert decision.reason is reason, decision.message
    assert decision.apply is apply
    assert changes_of(decision) == changes
    if changes:
        assert decision.rule and decision.evidence, "every change carries its rule and evidence"


def test_decrease_respects_the_recommendation():
    # p90 usage 0.6 cores -> target 0.69: a 50 % step from 1 core would undershoot it. (No increase
    # rule on CPU here, so no hysteresis floor: with one, the 0.7-core peak would hold it at 0.973.)
    c = container(cpu_util_max15=15, limit=0, history={"cpu_p50": 0.5, "cpu_p90": 0.6, "cpu_peak": 0.7})
    decision = run(policy=spec(scaling={"stepPercent": 50}, rules=[LOW_LOAD]), c=c)
    assert changes_of(decision) == {("app", "cpu", "requests"): (1.0, 0.69)}


def test_decrease_stops_short_of_refiring_the_increase_rule():
    # 19 % of 1 core = 0.19 cores; the 80 % scale-up threshold with 10 % hysteresis keeps the
    # request at or above 0.19 / 0.72 = 0.264 cores.
    decision = run(policy=spec(scaling={"stepPercent": 90}), c=container(cpu_util_max15=19, limit=0))
    assert changes_of(decision) == {("app", "cpu", "requests"): (1.0, 0.264)}


@pytest.mark.parametrize("throttling,memory_ratio,faults,resource", [
    (0.3, 0.5, 0.0, "cpu"),
    (0.0, 0.95, 0.0, "memory"),
    (0.0, 0.5, 5.0, "memory"),
], ids=["throttled-cpu", "memory-near-limit", "major-faults"])
def test_slow_latency_changes_only_the_bottleneck(throttling, memory_ratio, faults, resource):
    c = container(throttling=throttling, major_faults_per_second=faults)
    c = ContainerSignals(c.name, c.requests, c.limits, usage={**c.usage, "memory": memory_ratio * 1024 * MI},
                         throttling=throttling, major_faults_per_second=faults)
    decision = run(signals=WorkloadSignals(containers=(c,), latency_ms={95: 450.0}))
    assert decision.reason is Reason.OPTIMIZED
    assert {ch.resource for ch in decision.changes} == {resource}


def test_slow_latency_without_a_bottleneck_is_reported_not_acted_on():
    decision = run(signals=WorkloadSignals(containers=(container(throttling=0.01),), latency_ms={95: 450.0}))
    assert decision.reason is Reason.NOT_A_RESOURCE_BOTTLENECK
    assert not decision.changes and not decision.apply
    assert "not a resource bottleneck" in decision.message


def test_errors_are_investigated_without_a_change():
    decision = run(signals=WorkloadSignals(containers=(container(),), error_rate_percent=4.0))
    assert decision.reason is Reason.INVESTIGATE
    assert not decision.changes
    assert "errorRatePercent 4.0 above 1" in decision.message


def test_missing_metrics_are_named_in_the_evidence():
    decision = run(c=container())  # no sustained series: the rules cannot be evaluated
    assert decision.reason is Reason.NO_RULE_FIRED
    assert any("high-load: no cpu usage" in e for e in decision.evidence)
    assert any("slow: latencyP95Ms is not available" in e for e in decision.evidence)


def test_memory_recommendation_is_bumped_after_an_oom_kill():
    c = container(history={"memory_peak": 500 * MI, "oom_kills": 1})
    rec = recommend(c, None, {})
    assert rec["memory"].target == pytest.approx(1024 * MI * 1.2)
    without_oom = recommend(container(history={"memory_peak": 500 * MI}), None, {})
    assert without_oom["memory"].target == pytest.approx(500 * MI * 1.15)


def test_recommendation_never_exceeds_the_largest_node():
    c = container(history={"cpu_p50": 6.0, "cpu_p90": 9.0, "cpu_peak": 12.0})
    rec = recommend(c, None, {"cpu": 8.0})
    assert rec["cpu"].upper == 8.0 and rec["cpu"].target == 8.0


def test_current_resources_are_what_most_running_pods_run_with():
    from kubetune.signals import current_resources
    from kubetune.workloads import ContainerResources, PodRecord

    def pod(name, cpu, phase="Running"):
        return PodRecord("ns", name, "uid", "node", phase, (ContainerResources("app", {"cpu": cpu}, {}),))

    template = (ContainerResources("app", {"cpu": 0.5}, {}),)
    pods = [pod("a", 0.6), pod("b", 0.6), pod("c", 0.5), pod("d", 0.9, phase="Pending")]
    assert current_resources(pods, template)[0].requests == {"cpu": 0.6}
    assert current_resources([], template) == template


def test_a_rolled_back_change_is_not_retried_until_its_backoff_passed():
    rolled = ActionRecord(time=NOW - timedelta(minutes=15), action=Action.INCREASE_RESOURCES, rule="high-load",
                          applied=True, verification={"state": "RolledBack", "deadline": NOW - timedelta(minutes=5)})
    blocked = run(c=container(cpu_util_min5=90), past_actions=(rolled,))
    assert blocked.reason is Reason.BACKOFF and not blocked.apply
    later = decide(PolicyInputs(spec=spec(), signals=WorkloadSignals(containers=(container(cpu_util_min5=90),)),
                                now=NOW + timedelta(minutes=10), past_actions=(rolled,)))
    assert later.reason is Reason.SCALED_UP and later.apply


def test_rules_that_cannot_be_evaluated_are_listed_apart_from_the_evidence():
    decision = run(c=container(cpu_util_min5=90))  # no latency histogram, no error-rate query
    assert decision.reason is Reason.SCALED_UP
    assert "slow: latencyP95Ms is not available" in decision.unavailable
    assert not any("not available" in e for e in decision.evidence)


@pytest.mark.parametrize("bottleneck,reason,resources", [
    (("memory", "memoryWorkingSetRatio moves with latency (rho 0.91)"), Reason.OPTIMIZED, {"memory"}),
    ((None, "latency is not a resource bottleneck"), Reason.NOT_A_RESOURCE_BOTTLENECK, set()),
], ids=["correlated-memory", "nothing-correlates"])
def test_latency_correlation_decides_over_the_instant_thresholds(bottleneck, reason, resources):
    # Throttling is high right now, but over the window latency moved with memory (or nothing).
    c = container(throttling=0.5)
    decision = decide(PolicyInputs(spec=spec(), signals=WorkloadSignals(containers=(c,), latency_ms={95: 450.0}),
                                   now=NOW, bottleneck=bottleneck))
    assert decision.reason is reason
    assert {ch.resource for ch in decision.changes} == resources
    assert bottleneck[1] in decision.evidence


# --- defect 6: AtBound vs NotAResourceBottleneck is decided structurally, not from evidence text -----


def test_no_bottleneck_in_a_container_whose_name_says_ceiling_is_not_at_bound():
    # The evidence reads "ceiling: throttling 1%, ..."; searching it for "ceiling" called this AtBound.
    c = replace(container(throttling=0.01), name="ceiling")
    decision = run(signals=WorkloadSignals(containers=(c,), latency_ms={95: 450.0}))
    assert decision.reason is Reason.NOT_A_RESOURCE_BOTTLENECK


def test_a_throttled_container_held_at_its_limit_is_at_bound_not_unexplained():
    # CPU explains the latency, but RequestsOnly cannot raise the request above the 1-core limit.
    c = container(throttling=0.5, request=1.0, limit=1.0)
    decision = run(policy=spec(containers=[{"name": "*", "controlledValues": "RequestsOnly"}]),
                   signals=WorkloadSignals(containers=(c,), latency_ms={95: 450.0}))
    assert decision.reason is Reason.AT_BOUND and not decision.changes
    assert "app cpu request held at its limit 1000m" in decision.evidence


# --- defect 3: `for` on latency, error-rate and throughput rules ---------------------------------------

SLOW_FOR_5M = {"name": "slow", "metric": "latencyP95Ms", "above": 200, "for": "5m", "action": "Investigate"}


@pytest.mark.parametrize("rule,now,sustained,fires", [
    (SLOW_FOR_5M, 450.0, {(Metric.LATENCY_P95_MS, "min", "5m"): 150.0}, False),  # a spike, not 5 minutes of it
    (SLOW_FOR_5M, 450.0, {(Metric.LATENCY_P95_MS, "min", "5m"): 260.0}, True),
    (SLOW_FOR_5M, 120.0, {(Metric.LATENCY_P95_MS, "min", "5m"): 260.0}, True),  # the window decides, not now
    ({"name": "errors", "metric": "errorRatePercent", "above": 1, "for": "2m", "action": "Investigate"},
     5.0, {(Metric.ERROR_RATE_PERCENT, "min", "2m"): 0.5}, False),
    ({"name": "idle", "metric": "throughputRps", "below": 10, "for": "10m", "action": "Investigate"},
     2.0, {(Metric.THROUGHPUT_RPS, "max", "10m"): 40.0}, False),  # "below for" reads the max
    ({"name": "idle", "metric": "throughputRps", "below": 10, "for": "10m", "action": "Investigate"},
     20.0, {(Metric.THROUGHPUT_RPS, "max", "10m"): 8.0}, True),
], ids=["latency-spike", "latency-sustained", "latency-recovered-now", "errors-spike", "throughput-dip",
        "throughput-sustained-low"])
def test_workload_rules_with_for_read_the_value_over_their_window(rule, now, sustained, fires):
    metric = Metric(rule["metric"])
    signals = WorkloadSignals(containers=(container(),), sustained=sustained,
                              latency_ms={95: now} if metric is Metric.LATENCY_P95_MS else {},
                              error_rate_percent=now if metric is Metric.ERROR_RATE_PERCENT else None,
                              throughput_rps=now if metric is Metric.THROUGHPUT_RPS else None)
    decision = run(policy=spec(rules=[rule]), signals=signals)
    assert (decision.reason is Reason.INVESTIGATE) is fires, decision.message
    if fires:
        assert f"over {rule['for']})" in decision.message


def test_a_rule_with_for_and_no_sustained_value_is_unevaluable_not_judged_on_now():
    signals = WorkloadSignals(containers=(container(),), latency_ms={95: 900.0})
    decision = run(policy=spec(rules=[SLOW_FOR_5M]), signals=signals)
    assert decision.reason is Reason.NO_RULE_FIRED
    assert decision.unavailable == ("slow: latencyP95Ms has no samples covering 5m",)


def test_workload_sustained_keys_are_what_the_rules_need():
    from kubetune.decisions import workload_sustained_keys

    policy = spec(rules=[SLOW_FOR_5M, LOW_LOAD,
                         {"name": "idle", "metric": "throughputRps", "below": 10, "for": "10m", "action": "Investigate"},
                         {"name": "errors", "metric": "errorRatePercent", "above": 1, "action": "Investigate"}])
    assert workload_sustained_keys(policy) == {(Metric.LATENCY_P95_MS, "min", "5m"),
                                               (Metric.THROUGHPUT_RPS, "max", "10m")}
