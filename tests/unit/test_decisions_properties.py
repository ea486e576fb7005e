"""Properties of `decide` over policies, signals and histories drawn by hypothesis (the `ci` profile
in tests/conftest.py is derandomised, so every run draws the same examples; a failure shrinks to a
small case and prints it).

Whatever the inputs, a decision never sets a request outside minAllowed/maxAllowed/the largest node,
never moves one by more than stepPercent unless jumpToRecommendation, never applies inside the
cooldown or beyond maxChangesPerHour, never raises a request on a decrease (nor lowers one on an
increase), and never decreases to where the observed peak comes within the hysteresis margin of the
increase rule.

One generator (`_case`) serves both hypothesis and a seeded `random.Random`: the seeded run checks
that the generator reaches every outcome, which a property over hypothesis' examples cannot say.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from kubetune.api.common import parse_duration
from kubetune.api.performancepolicy import Action, ActionRecord, PerformancePolicySpec
from kubetune.decisions import (
    HYSTERESIS,
    RESOURCE_OF_METRIC,
    ContainerSignals,
    Decision,
    PolicyInputs,
    WorkloadSignals,
    decide,
    observed_peak,
    recommend,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
MI = 2**20
CASES = 3000
UNIT = {"cpu": 0.001, "memory": float(MI)}  # what format_quantity rounds to


class SeededChoices:
    """The choices `_case` makes, from a seeded random.Random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def uniform(self, a: float, b: float) -> float:
        return self.rng.uniform(a, b)

    def choice(self, options):
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def randint(self, a: int, b: int) -> int:
        return self.rng.randint(a, b)

    def shuffled(self, items: list) -> list:
        self.rng.shuffle(items)
        return items


class DrawnChoices:
    """The same choices drawn by hypothesis, so a failing case shrinks."""

    def __init__(self, draw) -> None:
        self.draw = draw

    def uniform(self, a: float, b: float) -> float:
        return self.draw(st.floats(min(a, b), max(a, b)))

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def chance(self, p: float) -> bool:
        return self.draw(st.floats(0, 1)) < p

    def randint(self, a: int, b: int) -> int:
        return self.draw(st.integers(a, b))

    def shuffled(self, items: list) -> list:
        return self.draw(st.permutations(items))


def _quantity(resource: str, amount: float) -> str:
    return f"{round(amount * 1000)}m" if resource == "cpu" else f"{round(amount / MI)}Mi"


def _amount(rng, resource: str, low: float, high: float) -> float:
    """A value a pod could run with: whole millicores or MiB."""
    value = rng.uniform(low, high)
    return round(value, 3) if resource == "cpu" else round(value / MI) * MI


RANGES = {"cpu": (0.01, 8.0), "memory": (16 * MI, 16 * 1024 * MI)}


def _rules(rng) -> list[dict]:
    rules = []
    for metric in ("cpuUtilization", "memoryUtilization"):
        if rng.chance(0.8):
            rules.append({"name": f"{metric[:3]}-up", "metric": metric, "above": rng.choice([50, 70, 80, 95]),
                          "action": "IncreaseResources", **({"for": "5m"} if rng.chance(0.7) else {})})
        if rng.chance(0.8):
            rules.append({"name": f"{metric[:3]}-down", "metric": metric, "below": rng.choice([5, 20, 40]),
                          "action": "DecreaseResources", **({"for": "15m"} if rng.chance(0.7) else {})})
    if rng.chance(0.3):
        rules.append({"name": "slow", "metric": "latencyP95Ms", "above": 200, "action": "OptimizeResources"})
    return rng.shuffled(rules)


def _case(rng: SeededChoices | DrawnChoices) -> tuple[PolicyInputs, dict[str, tuple[float, float]]]:
    bounds, minimum, maximum = {}, {}, {}
    for resource, (lo, hi) in RANGES.items():
        low = _amount(rng, resource, lo, hi / 4) if rng.chance(0.6) else 0.0
        high = _amount(rng, resource, max(low, lo) * 1.01, hi) if rng.chance(0.6) else float("inf")
        if low:
            minimum[resource] = _quantity(resource, low)
        if high != float("inf"):
            maximum[resource] = _quantity(resource, high)
        bounds[resource] = (low, high)
    node = {}
    if rng.chance(0.3):  # the largest node, never below minAllowed
        node["cpu"] = _amount(rng, "cpu", max(bounds["cpu"][0], 0.5), 16.0)
        bounds["cpu"] = (bounds["cpu"][0], min(bounds["cpu"][1], node["cpu"]))
    spec = PerformancePolicySpec.model_validate({
        "targetRef": {"kind": "Deployment", "name": "web"},
        "mode": rng.choice(["Auto", "Auto", "Recommend"]),
        "containers": [{"name": "*", "controlledResources": rng.choice([["cpu"], ["memory"], ["cpu", "memory"]]),
                        "controlledValues": rng.choice(["RequestsAndLimits", "RequestsOnly"]),
                        **({"minAllowed": minimum} if minimum else {}), **({"maxAllowed": maximum} if maximum else {})}],
        "scaling": {"stepPercent": rng.choice([1, 10, 20, 25, 50, 100]), "cooldown": rng.choice(["30s", "1m", "5m"]),
                    "maxChangesPerHour": rng.randint(1, 8), "jumpToRecommendation": rng.chance(0.4)},
        "rules": _rules(rng),
    })
    requests, limits, usage, sustained, history = {}, {}, {}, {}, {}
    for resource, (low, high) in bounds.items():
        # Requests within the bounds: kubetune keeps them there (outside them, see the test below).
        request = _amount(rng, resource, max(low, RANGES[resource][0]), min(high, RANGES[resource][1]))
        requests[resource] = request
        if rng.chance(0.5):
            limits[resource] = _amount(rng, resource, request, request * 3)
        used = request * rng.choice([0.02, 0.1, 0.3, 0.6, 0.9, 1.2, 3.0]) * rng.uniform(0.8, 1.2)
        usage[resource] = used
        sustained[(resource, "min", "5m")] = used * rng.uniform(0.7, 1.0)
        sustained[(resource, "max", "15m")] = used * rng.uniform(1.0, 1.5)
        if rng.chance(0.6):
            if resource == "cpu":
                p50 = used * rng.uniform(0.3, 1.0)
                history.update(cpu_p50=p50, cpu_p90=p50 * rng.uniform(1.0, 2.0), cpu_peak=p50 * rng.uniform(2.0, 4.0))
            else:
                history["memory_peak"] = used * rng.uniform(1.0, 2.0)
    series = tuple(usage["cpu"] * rng.uniform(0.5, 1.5) for _ in range(rng.choice([0, 20])))
    container = ContainerSignals("app", requests, limits, usage=usage, sustained=sustained, history=history,
                                 throttling=rng.choice([None, 0.0, 0.5]), cpu_series=series)
    past = sorted((ActionRecord(time=NOW - timedelta(seconds=rng.randint(1, 90 * 60)), action=Action.INCREASE_RESOURCES,
                                rule="cpu-up", applied=rng.chance(0.8),
                                changes=[{"container": "app", "resource": "cpu", "from": "100m", "to": "125m"}])
                   for _ in range(rng.randint(0, 8))), key=lambda a: a.time, reverse=True)
    inputs = PolicyInputs(
        spec=spec, now=NOW, past_actions=tuple(past), node_capacity=node,
        signals=WorkloadSignals(containers=(container,), latency_ms={95: rng.choice([50.0, 450.0])}),
        hpa_resources=frozenset(rng.choice([(), (), ("cpu",)])),
        bottleneck=rng.choice([None, None, ("cpu", "cpu explains it"), ("memory", "memory explains it"),
                               (None, "nothing explains it")]))
    return inputs, bounds


def _request_changes(decision: Decision):
    return [ch for ch in decision.changes if ch.value == "requests"]


@pytest.fixture(scope="module")
def seeded_decisions() -> list[tuple[PolicyInputs, Decision]]:
    return [(inputs, decide(inputs)) for inputs, _ in (_case(SeededChoices(seed)) for seed in range(CASES))]


def test_the_generator_reaches_every_outcome(seeded_decisions):
    """The generator is worth something only if it reaches the interesting branches."""
    reasons = {d.reason.value for _, d in seeded_decisions}
    assert {"ScaledUp", "ScaledDown", "Cooldown", "RateLimited", "AtBound", "HeldByHysteresis", "HPAConflict",
            "NotAResourceBottleneck", "Optimized"} <= reasons, reasons
    assert sum(1 for i, d in seeded_decisions if d.apply and i.spec.scaling.jump_to_recommendation) > 20


@st.composite
def cases(draw) -> tuple[PolicyInputs, dict, Decision]:
    inputs, bounds = _case(DrawnChoices(draw))
    return inputs, bounds, decide(inputs)


@given(cases())
def test_requests_stay_within_min_max_and_the_largest_node(case):
    _, bounds, decision = case
    for ch in _request_changes(decision):
        low, high = bounds[ch.resource]
        assert low - 1e-9 <= ch.new <= high + 1e-9, f"{ch.describe()} outside [{low}, {high}]"


@given(cases())
def test_no_step_is_larger_than_stepPercent_unless_jumping_to_the_recommendation(case):
    inputs, _, decision = case
    step = inputs.spec.scaling.step_percent / 100
    c = inputs.signals.containers[0]
    for ch in _request_changes(decision):
        unit = UNIT[ch.resource]  # format_quantity rounds up by less than one unit
        rec = recommend(c, inputs.spec.containers[0], inputs.node_capacity).get(ch.resource)
        if inputs.spec.scaling.jump_to_recommendation and rec:
            # A jump goes as far as the recommendation target, never past it.
            if ch.new > ch.old:
                assert ch.new <= max(ch.old * (1 + step), rec.target) + unit, ch.describe()
            else:
                assert ch.new >= min(ch.old * (1 - step), rec.target) - 1e-9, ch.describe()
        else:
            assert abs(ch.new - ch.old) <= ch.old * step + unit + 1e-9, f"{ch.describe()} is more than {step:.0%}"


@given(cases())
def test_nothing_is_applied_inside_the_cooldown_or_beyond_the_rate_limit(case):
    inputs, _, decision = case
    applied = [a for a in inputs.past_actions if a.applied and a.changes]
    cooldown = parse_duration(inputs.spec.scaling.cooldown)
    in_cooldown = any(NOW - a.time < cooldown for a in applied)
    last_hour = sum(1 for a in applied if NOW - a.time < timedelta(hours=1))
    if in_cooldown or last_hour >= inputs.spec.scaling.max_changes_per_hour:
        assert not decision.apply, f"applied {decision.reason.value} inside cooldown/rate limit"
    if decision.apply:
        assert decision.changes and inputs.spec.mode.value == "Auto"


@given(cases())
def test_a_decrease_never_raises_and_an_increase_never_lowers_a_request(case):
    inputs, _, decision = case
    for ch in _request_changes(decision):
        if decision.action is Action.DECREASE_RESOURCES:
            assert ch.new < ch.old, f"{decision.rule} (decrease) {ch.describe()}"
        else:
            assert ch.new > ch.old, f"{decision.rule} ({decision.action}) {ch.describe()}"
    rule = next((r for r in inputs.spec.rules if r.name == decision.rule), None)
    if rule and rule.action is Action.DECREASE_RESOURCES:
        assert decision.action is Action.DECREASE_RESOURCES


@given(cases())
def test_a_decrease_keeps_the_observed_peak_below_the_increase_rule_with_hysteresis(case):
    inputs, _, decision = case
    if decision.action is not Action.DECREASE_RESOURCES:
        return
    c = inputs.signals.containers[0]
    for ch in _request_changes(decision):
        ups = [r.above for r in inputs.spec.rules if RESOURCE_OF_METRIC.get(r.metric) == ch.resource
               and r.action is Action.INCREASE_RESOURCES]
        peak = observed_peak(c, ch.resource)
        if ups and peak:
            assert peak[0] / ch.new <= HYSTERESIS * min(ups) / 100 + 1e-9, \
                f"{ch.describe()} puts the peak {peak[0]:.3f} at {100 * peak[0] / ch.new:.0f}%"


@given(request=st.one_of(st.floats(0.01, 0.19), st.floats(1.01, 4.0)).map(lambda r: round(r, 3)),
       share=st.sampled_from([0.05, 0.95]), step=st.sampled_from([10, 50, 100]), jump=st.booleans())
def test_requests_outside_the_bounds_only_move_towards_them(request, share, step, jump):
    """A request already outside minAllowed/maxAllowed (the policy was edited) is never moved further out."""
    low, high = 0.2, 1.0
    spec = PerformancePolicySpec.model_validate({
        "targetRef": {"kind": "Deployment", "name": "web"}, "mode": "Auto",
        "containers": [{"name": "*", "minAllowed": {"cpu": "200m"}, "maxAllowed": {"cpu": "1"}}],
        "scaling": {"stepPercent": step, "jumpToRecommendation": jump}})
    used = request * share
    c = ContainerSignals("app", {"cpu": request}, {}, usage={"cpu": used},
                         sustained={("cpu", "min", "5m"): used, ("cpu", "max", "15m"): used},
                         history={"cpu_p50": used, "cpu_p90": used, "cpu_peak": used})
    decision = decide(PolicyInputs(spec=spec, signals=WorkloadSignals(containers=(c,)), now=NOW))
    for ch in _request_changes(decision):
        assert (ch.new > ch.old) if ch.old < low else (ch.new < ch.old), ch.describe()
        assert min(low, ch.old) <= ch.new <= max(high, ch.old), ch.describe()
