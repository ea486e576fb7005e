"""Tenancy: a tenant's PromQL confined to the tenant's own namespace (pure, no I/O).

A PerformancePolicy's `metrics` templates (`latency.query`, `errorRate.query`, `throughput.query`) run
with the operator's Prometheus access, which reaches every namespace. Written as they are by whoever
may create policies in a namespace, they would otherwise read other tenants' figures into this
namespace's status and Events (a confused deputy). So every template, after substitution, is parsed
and confined the way prom-label-proxy confines a tenant's query:

- every vector selector (including those inside range selectors, subqueries and function arguments,
  on both sides of `or`/`unless`/`and`) gets the matcher `namespace="<the policy's namespace>"`;
- a selector that already names a namespace keeps it only when it is exactly that matcher; any other
  namespace matcher (another namespace, a regex, `!=`, `!~`) is refused, never silently rewritten;
- what cannot be proved confined is refused: text the parser cannot read, selectors with `or`
  alternatives inside their braces (not Prometheus syntax), and any query whose rewritten form does not
  parse back to itself with every selector confined.

The query sent to Prometheus is the rewritten text, not the tenant's: Prometheus evaluates what was
checked. Series without a `namespace` label (node, cluster-wide series) are out of a tenant's reach.
`label_replace` and friends cannot widen a selector: they only relabel what it already selected.

The parser is `promql-parser` (Python bindings of GreptimeDB's Rust PromQL parser, Prometheus 2.45
syntax): newer syntax it does not know is refused, never passed through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Iterable, Iterator

import promql_parser as pq

NAMESPACE_LABEL = "namespace"
# The $rate a template is checked with before a cycle (any duration token parses alike).
CHECK_RATE_WINDOW = "1m"
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_OPS = (("=", pq.MatchOp.Equal), ("!=", pq.MatchOp.NotEqual), ("=~", pq.MatchOp.Re), ("!~", pq.MatchOp.NotRe))


def _op(op: pq.MatchOp) -> str:
    # The binding's enums compare by == but cannot be dict keys.
    return next(text for text, member in _OPS if member == op)


# The binding's walk() and transform() take time growing with the cube of a tree's depth (400 nested
# operators: half a minute), and the gate runs on the event loop; a template's size is capped first,
# with a walk of this module's own that is linear. Real templates have a dozen or two nodes.
MAX_NODES = 100
# The parser itself is slow on long chains (4,000 unary minus signs: 2 s), so tokens are counted first.
MAX_TOKENS = 400
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|[A-Za-z_:][A-Za-z0-9_:]*|[0-9][A-Za-z0-9_.]*|\S')


class QueryNotConfined(ValueError):
    """A tenant's query that cannot be confined to its namespace; the message says why."""


@dataclass(frozen=True)
class TemplateRefusal:
    """Which template of a policy was refused, and why."""

    field: str  # e.g. spec.metrics.errorRate.query
    template: str
    reason: str

    @property
    def message(self) -> str:
        return (f"{self.field} is not confined to the policy's namespace, so nothing is queried for this "
                f"policy: {self.reason} (template: {self.template[:200]})")


def confine(query: str, namespace: str) -> str:
    """`query` with `namespace="<namespace>"` forced on every selector, as one line of PromQL;
    QueryNotConfined when that cannot be done or proved."""
    confined, refusal = _remembered(query, namespace)
    if refusal is not None:
        raise QueryNotConfined(refusal)
    return confined


# About 1.7 ms a query (parse, rewrite, read back); a policy's queries are the same cycle after cycle
# while its pods stay, so they are remembered: room for a few queries (templates, percentiles) of
# thousands of policies, a few hundred bytes each.
@lru_cache(maxsize=16384)
def _remembered(query: str, namespace: str) -> tuple[str, str | None]:
    # Refusals are remembered too: a refused template is asked about every cycle until it is fixed.
    try:
        return _confine(query, namespace), None
    except QueryNotConfined as e:
        return "", str(e)


def _confine(query: str, namespace: str) -> str:
    if len(_TOKEN.findall(query)) > MAX_TOKENS:
        raise QueryNotConfined(f"more than {MAX_TOKENS} tokens: too large to check (write it as a recording "
                               "rule and query that)")
    try:
        tree = pq.parse(query)
    except Exception as e:  # the binding raises ValueError (and Rust panics as other types)
        raise QueryNotConfined(f"not PromQL this operator can check: {_short(e)}") from e
    if sum(1 for _ in nodes(tree, limit=MAX_NODES + 1)) > MAX_NODES:
        raise QueryNotConfined(f"more than {MAX_NODES} operators, functions, selectors and numbers: too "
                               "large to check (write it as a recording rule and query that)")

    def enforce(node: pq.Expr) -> pq.Expr | None:
        if isinstance(node, pq.VectorSelector):
            return _confined_selector(node, namespace)
        return None

    try:
        rewritten = pq.transform(tree, pre_visit=enforce)
        text = _one_line(rewritten.prettify())
    except QueryNotConfined:
        raise
    except Exception as e:
        raise QueryNotConfined(f"could not be rewritten: {_short(e)}") from e
    _prove(text, namespace)
    return text


def _confined_selector(node: pq.VectorSelector, namespace: str) -> pq.Expr:
    if node.matchers.or_matchers:
        raise QueryNotConfined(f"selector {_shown(node)} uses `or` between matchers, which Prometheus does not accept")
    kept = []
    for m in node.matchers.matchers:
        if m.name == NAMESPACE_LABEL:
            if m.op != pq.MatchOp.Equal or m.value != namespace:
                raise QueryNotConfined(f"selector {_shown(node)} has {NAMESPACE_LABEL}{_op(m.op)}{_quoted(m.value)}; "
                                       f"only {NAMESPACE_LABEL}=\"{namespace}\" is allowed")
            continue
        kept.append(m)
    text = _selector_text(node, kept + [pq.Matcher(pq.MatchOp.Equal, NAMESPACE_LABEL, namespace)])
    try:
        replacement = pq.parse(text)
    except Exception as e:
        raise QueryNotConfined(f"selector {_shown(node)} could not be rewritten: {_short(e)}") from e
    if not (isinstance(replacement, pq.VectorSelector) and replacement.name == node.name
            and replacement.offset == node.offset and _at(replacement) == _at(node)
            and _matcher_set(replacement.matchers.matchers) == _matcher_set(kept) | {("=", NAMESPACE_LABEL, namespace)}):
        raise QueryNotConfined(f"selector {_shown(node)} did not survive its rewriting unchanged")
    return replacement


def _selector_text(node: pq.VectorSelector, matchers: Iterable[pq.Matcher]) -> str:
    """A selector written out by hand (the binding's str() does not escape quotes; its prettify() does
    not see edits), checked by parsing it back in `_confined_selector`."""
    name = node.name or ""
    if name and not _METRIC_NAME.match(name):
        raise QueryNotConfined(f"metric name {name!r} cannot be written back")
    parts = []
    for m in matchers:
        if not _LABEL_NAME.match(m.name):
            raise QueryNotConfined(f"label name {m.name!r} cannot be written back")
        parts.append(f"{m.name}{_op(m.op)}{_quoted(m.value)}")
    text = f"{name}{{{','.join(parts)}}}"
    if node.offset is not None:
        ms = node.offset // timedelta(milliseconds=1)
        if timedelta(milliseconds=ms) != node.offset:
            raise QueryNotConfined("an offset finer than a millisecond cannot be written back")
        text += f" offset {ms}ms" if ms >= 0 else f" offset -{-ms}ms"
    if node.at is not None:
        at = node.at
        if at.type == pq.AtModifierType.Start:
            text += " @ start()"
        elif at.type == pq.AtModifierType.End:
            text += " @ end()"
        else:
            text += f" @ {at.at.timestamp():.3f}"
    return text


def _at(node: pq.VectorSelector) -> tuple | None:
    at = node.at
    if at is None:
        return None
    return (str(at.type), round(at.at.timestamp(), 3) if at.type == pq.AtModifierType.At else None)


def _matcher_set(matchers: Iterable[pq.Matcher]) -> set[tuple[str, str, str]]:
    return {(_op(m.op), m.name, m.value) for m in matchers}


def _prove(text: str, namespace: str) -> None:
    """The text sent to Prometheus, read back: it parses to itself and every selector in it carries
    exactly one namespace matcher, ours."""
    try:
        tree = pq.parse(text)
        again = _one_line(tree.prettify())
    except Exception as e:
        raise QueryNotConfined(f"the rewritten query does not parse back: {_short(e)}") from e
    if again != text:
        raise QueryNotConfined("the rewritten query does not read back as itself")
    for node in nodes(tree):
        if isinstance(node, pq.VectorSelector):
            mine = [m for m in node.matchers.matchers if m.name == NAMESPACE_LABEL]
            if (node.matchers.or_matchers or len(mine) != 1 or mine[0].op != pq.MatchOp.Equal
                    or mine[0].value != namespace):
                raise QueryNotConfined(f"selector {_shown(node)} is not confined after rewriting")


_LEAVES = (pq.VectorSelector, pq.NumberLiteral, pq.StringLiteral)


def nodes(tree: pq.Expr, limit: int | None = None) -> Iterator[pq.Expr]:
    """Every node of `tree` (depth first, linear time), at most `limit`; a node of a kind this module
    does not know is QueryNotConfined, so a newer parser cannot hide a selector from the proof."""
    stack, seen = [tree], 0
    while stack and (limit is None or seen < limit):
        node = stack.pop()
        seen += 1
        yield node
        if isinstance(node, _LEAVES):
            continue
        if isinstance(node, pq.BinaryExpr):
            stack += [node.rhs, node.lhs]
        elif isinstance(node, pq.AggregateExpr):
            stack += [node.expr] + ([node.param] if isinstance(node.param, pq.Expr) else [])
        elif isinstance(node, (pq.UnaryExpr, pq.ParenExpr, pq.SubqueryExpr)):
            stack.append(node.expr)
        elif isinstance(node, pq.MatrixSelector):
            stack.append(node.vector_selector)
        elif isinstance(node, pq.Call):
            if not all(isinstance(arg, pq.Expr) for arg in node.args):
                raise QueryNotConfined(f"an argument of {node.func.name}() this operator cannot check")
            stack += reversed(node.args)
        else:
            raise QueryNotConfined(f"a {type(node).__name__} this operator cannot check")


def _one_line(text: str) -> str:
    # prettify() breaks long queries over lines between tokens only (newlines in strings are escaped).
    return " ".join(line.strip(" ") for line in text.split("\n") if line.strip(" "))


def _quoted(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _shown(node: pq.Expr) -> str:
    try:
        return _one_line(node.prettify())[:120]
    except Exception:
        return "?"


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def substitute(template: str, *, namespace: str, workload: str, pod_regex: str, rate_window: str,
               quantile: float | None = None) -> str:
    """A template's placeholders filled in ($quantile only for latency templates)."""
    text = (template.replace("$namespace", namespace).replace("$workload", workload)
            .replace("$pods", pod_regex).replace("$rate", rate_window))
    return text.replace("$quantile", f"{quantile:g}") if quantile is not None else text


def refused_template(templates: Iterable[tuple[str, str, bool]], *, namespace: str, workload: str,
                     pod_regex: str, rate_window: str = CHECK_RATE_WINDOW) -> TemplateRefusal | None:
    """The first of a policy's (field, template, is_latency) that cannot be confined, or None.

    Checked before a cycle asks anything for the policy, with the policy's namespace, workload and pods;
    the query actually sent is confined again when it is built (`promql.policy_query`)."""
    for field, template, latency in templates:
        try:
            confine(substitute(template, namespace=namespace, workload=workload, pod_regex=pod_regex,
                               rate_window=rate_window, quantile=0.95 if latency else None), namespace)
        except QueryNotConfined as e:
            return TemplateRefusal(field, template, str(e))
    return None
