"""A tenant's PromQL confined to its namespace (kubetune.tenancy): what is rewritten, what is refused,
and that every accepted rewrite reads back with our namespace matcher on every selector."""

from __future__ import annotations

import time

import promql_parser as pq
import pytest

from kubetune.gates import PolicyFacts, unconfined_query
from kubetune.promql import policy_query
from kubetune.reasons import Reason
from kubetune.tenancy import QueryNotConfined, _confine, confine, nodes, refused_template
from tests.unit.loopfakes import pod, policy, spec

pytestmark = pytest.mark.unit

NS = "tenant-a"

CONFINED = [
    ("no-namespace-matcher", "sum(rate(http_requests_total[1m]))",
     'sum(rate(http_requests_total{namespace="tenant-a"}[1m]))'),
    ("own-namespace-kept", 'sum(rate(errors{namespace="tenant-a",code=~"5.."}[1m]))',
     'sum(rate(errors{code=~"5..",namespace="tenant-a"}[1m]))'),
    ("any-metric-name", '{__name__=~".+"}', '{__name__=~".+",namespace="tenant-a"}'),
    ("subquery", "max_over_time(sum(rate(x[1m]))[5m:30s])",
     'max_over_time(sum(rate(x{namespace="tenant-a"}[1m]))[5m:30s])'),
    ("or-second-selector", "a or b", 'a{namespace="tenant-a"} or b{namespace="tenant-a"}'),
    ("unless-second-selector", "sum(a) unless on () b", 'sum(a{namespace="tenant-a"}) unless on () b{namespace="tenant-a"}'),
    ("label-replace-relabels-own-data-only", 'label_replace(x, "namespace", "tenant-b", "", "")',
     'label_replace(x{namespace="tenant-a"}, "namespace", "tenant-b", "", "")'),
    ("offset", "x offset 1h", 'x{namespace="tenant-a"} offset 1h'),
    ("negative-offset-and-at", "x offset -90s @ 1700000000.5", 'x{namespace="tenant-a"} @ 1700000000.500 offset -1m30s'),
    ("at-in-range", "rate(x[5m] @ end())", 'rate(x{namespace="tenant-a"}[5m] @ end())'),
    ("escaped-values-survive", 'x{path="a\\"b\\\\c\\n"}', 'x{namespace="tenant-a",path="a\\"b\\\\c\\n"}'),
    ("absent", "absent(x)", 'absent(x{namespace="tenant-a"})'),
    ("no-selector-at-all", "vector(1)", "vector(1)"),
    ("duplicate-own-matcher", 'x{namespace="tenant-a",namespace="tenant-a"}', 'x{namespace="tenant-a"}'),
]


@pytest.mark.parametrize("query,expected", [c[1:] for c in CONFINED], ids=[c[0] for c in CONFINED])
def test_every_selector_gets_the_policy_namespace(query, expected):
    confined = confine(query, NS)
    assert confined == expected
    selectors = []
    pq.walk(pq.parse(confined), lambda n: selectors.append(n) if isinstance(n, pq.VectorSelector) else None)
    for s in selectors:
        assert [(m.name, m.value) for m in s.matchers.matchers if m.name == "namespace"] == [("namespace", NS)]


REFUSED = [
    ("other-namespace", 'sum(rate(container_cpu_usage_seconds_total{namespace="tenant-b"}[1m]))', 'namespace="tenant-b"'),
    ("regex-namespace", 'x{namespace=~"tenant-a|tenant-b"}', 'namespace=~"tenant-a|tenant-b"'),
    ("regex-namespace-equal-to-own", 'x{namespace=~"tenant-a"}', "namespace=~"),
    ("negative-namespace", 'x{namespace!="tenant-a"}', "namespace!="),
    ("negative-regex-namespace", 'x{namespace!~"kube-.*"}', "namespace!~"),
    ("own-and-other", 'x{namespace="tenant-a",namespace="tenant-b"}', 'namespace="tenant-b"'),
    ("or-with-other-namespace", 'x or y{namespace="tenant-b"}', 'namespace="tenant-b"'),
    ("unless-with-other-namespace", 'x unless y{namespace="tenant-b"}', 'namespace="tenant-b"'),
    ("label-replace-over-other", 'label_replace(x{namespace="tenant-b"}, "namespace", "tenant-a", "", "")',
     'namespace="tenant-b"'),
    ("subquery-over-other", 'max_over_time(x{namespace="tenant-b"}[5m:1m])', 'namespace="tenant-b"'),
    ("offset-over-other", 'x{namespace="tenant-b"} offset 1d', 'namespace="tenant-b"'),
    ("at-over-other", 'x{namespace="tenant-b"} @ start()', 'namespace="tenant-b"'),
    ("or-inside-braces", 'x{namespace="tenant-a" or namespace="tenant-b"}', "`or` between matchers"),
    ("not-promql", "sum(x", "not PromQL"),
    ("quoted-label-name", 'x{"namespace"="tenant-b"}', 'namespace="tenant-b"'),
    ("quoted-metric-name", '{"x", namespace="tenant-b"}', 'namespace="tenant-b"'),
]


@pytest.mark.parametrize("query,why", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_what_cannot_be_confined_is_refused_with_the_reason(query, why):
    with pytest.raises(QueryNotConfined) as refused:
        confine(query, NS)
    assert why in str(refused.value)


def test_policy_query_confines_after_substitution():
    # $namespace is the policy's own: substitution cannot be used to name another one.
    expr = policy_query('sum(rate(errors{namespace="$namespace",pod=~"$pods"}[$rate]))', namespace=NS,
                        workload="web", pods=["web-1"], rate_window="2m")
    assert expr == 'sum(rate(errors{namespace="tenant-a",pod=~"web-1"}[2m]))'
    with pytest.raises(QueryNotConfined):
        policy_query('errors{namespace="tenant-b"}', namespace=NS, workload="web", pods=[], rate_window="1m")


def test_refused_template_names_the_field_and_the_template():
    refusal = refused_template([("spec.metrics.throughput.query", "sum(rate(x[$rate]))", False),
                                ("spec.metrics.errorRate.query", 'x{namespace="kube-system"}', False)],
                               namespace=NS, workload="web", pod_regex="web-1")
    assert refusal.field == "spec.metrics.errorRate.query"
    assert 'namespace="kube-system"' in refusal.message and "nothing is queried" in refusal.message


def test_gate_refuses_a_template_naming_another_namespace():
    body = spec(metrics={"throughput": {"query": 'sum(rate(requests{namespace="other"}[$rate]))'}})
    verdict = unconfined_query(PolicyFacts(policy(body), pods=(pod("web-1"),)))
    assert verdict.reason is Reason.QUERY_NOT_CONFINED
    assert "spec.metrics.throughput.query" in verdict.message
    assert unconfined_query(PolicyFacts(policy())) is None
    counters = spec(metrics={"throughput": {"counter": "http_requests_total"}})
    assert unconfined_query(PolicyFacts(policy(counters))) is None, "counters are kubetune's own selectors"


DEEP = [("binary-chain", "x+" * 1300 + "x"), ("unary-chain", "-" * 4000 + "x"), ("nested-sum", "sum(" * 800 + "x" + ")" * 800),
        ("or-chain", "x or " * 800 + "x"), ("just-over-the-cap", "x+" * 50 + "x")]


@pytest.mark.parametrize("query", [d[1] for d in DEEP], ids=[d[0] for d in DEEP])
def test_templates_too_large_to_check_are_refused_at_once(query):
    # The binding's own walk/transform of 400 nested operators takes half a minute, on the event loop.
    assert len(query) <= 4096  # the API's cap on a template
    started = time.perf_counter()
    with pytest.raises(QueryNotConfined, match="too large to check"):
        confine(query, NS)
    assert time.perf_counter() - started < 0.5


def test_the_largest_template_checked_is_quick():
    started = time.perf_counter()
    confined = _confine("-" * 98 + "x", NS)  # uncached: 100 nodes in the worst shape measured
    assert confined.endswith('x{namespace="tenant-a"}') and time.perf_counter() - started < 0.5


@pytest.mark.parametrize("query", [c[1] for c in CONFINED] + [r[1] for r in REFUSED if r[0] != "not-promql"] +
                         ["topk(scalar(count(y)), x)", "quantile(0.9, x) + on () group_left count_values(\"v\", y)"])
def test_this_modules_walk_sees_every_selector_the_binding_sees(query):
    tree = pq.parse(query)
    theirs = []
    pq.walk(tree, lambda n: theirs.append(n.prettify()) if isinstance(n, pq.VectorSelector) else None)
    ours = [n.prettify() for n in nodes(tree) if isinstance(n, pq.VectorSelector)]
    assert sorted(ours) == sorted(theirs)
