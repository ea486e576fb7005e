"""The PromQL the loop asks: constant in the number of policies, valid names, and the in-memory
histogram quantile agreeing with Prometheus' interpolation."""

from __future__ import annotations

import math

import pytest

from kubetune.promql import QueryPlan, cycle_queries, histogram_quantile, policy_query

pytestmark = pytest.mark.unit


def plan(namespaces: int) -> QueryPlan:
    return QueryPlan(frozenset(f"team-{i}" for i in range(namespaces)),
                     frozenset({("cpu", "min", "5m"), ("cpu", "max", "15m")}),
                     frozenset({"http_request_duration_seconds"}))


def test_query_count_does_not_grow_with_policies():
    few = cycle_queries(plan(1), rate_window="1m", step="15s", history="24h")
    many = cycle_queries(plan(1000), rate_window="1m", step="15s", history="24h")
    assert len(few) == len(many) == 12


def test_names_are_regex_literals_promql_accepts():
    query = cycle_queries(QueryPlan(frozenset({"team-a"})), rate_window="1m", step="15s", history="1h")[0].expr
    assert 'namespace=~"team-a"' in query  # no "\-": Prometheus refuses unknown escapes
    expr = policy_query('rate(x{pod=~"$pods"}[$rate])', namespace="n", workload="w", pods=["api-1.x"], rate_window="1m")
    assert expr == 'rate(x{namespace="n",pod=~"api-1\\\\.x"}[1m])'  # confined: tests/unit/test_tenancy.py


@pytest.mark.parametrize("q,buckets,expected", [
    (0.5, {0.1: 50, 0.2: 100, math.inf: 100}, 0.1),
    (0.95, {0.1: 50, 0.2: 100, math.inf: 100}, 0.19),
    (0.99, {0.1: 10, 0.5: 90, math.inf: 100}, 0.5),  # in the +Inf bucket: the highest finite bound
    (0.5, {0.1: 0, math.inf: 0}, None),
    (0.5, {0.1: 5}, None),  # no +Inf bucket: malformed
], ids=["median-on-bound", "interpolated", "inf-bucket", "no-requests", "no-inf"])
def test_histogram_quantile(q, buckets, expected):
    result = histogram_quantile(q, buckets)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_request_counters_are_one_query_each_whatever_the_number_of_policies():
    counters = frozenset({("http_requests_total", 'code=~"5.."'), ("http_requests_total", None)})
    few = cycle_queries(QueryPlan(frozenset({"a"}), counters=counters), rate_window="1m", step="15s", history="1h")
    many = cycle_queries(QueryPlan(frozenset(f"t-{i}" for i in range(500)), counters=counters),
                         rate_window="1m", step="15s", history="1h")
    assert len(few) == len(many)
    names = {q.name: q for q in many}
    failed = names['requests:http_requests_total:code=~"5.."']
    assert failed.key == ("namespace", "pod") and failed.expr.startswith(
        'sum by (namespace, pod) (rate(http_requests_total{code=~"5..",namespace=~"')

