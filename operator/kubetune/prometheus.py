"""The one interface to Prometheus: run instant queries, return plain keyed samples.

prometheus-api-client is synchronous; callers on the event loop use `fetch` through
`asyncio.to_thread`, so a slow Prometheus never blocks kopf's watches.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import ijson
import numpy as np
import numpy.typing as npt
import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from kubetune.promql import PromQuery
from kubetune.settings import OperatorSettings

# Keyed by the query's labels; a float, or a float64 array for range (subquery) results: 10,000 pods'
# 20-point series as tuples of Python floats held 13 MiB, as arrays 5 (issue 12's RSS budget).
Samples = dict[tuple[str, ...], float | npt.NDArray[np.float64]]


class PrometheusUnavailable(Exception):
    """Prometheus could not answer; the message says which query and why."""


# A workload-level query (a metrics template, a verification or correlation series) answers one series,
# or one per pod; more is a template missing its sum(), and summing it would be slow and meaningless.
MAX_WORKLOAD_SERIES = 1000


def finite(raw_value: object) -> float | None:
    """A sample's value; None for NaN, +/-Inf and what is not a number, none of which may reach a decision."""
    try:
        value = float(raw_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def short_reason(error: Exception, url: str, timeout: float) -> str:
    """One readable clause for a failed request (urllib3's own text runs to several nested lines)."""
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS to {url} failed (a CA bundle for it: --ca-file / KUBETUNE_PROMETHEUS_CA_FILE)"
    if isinstance(error, requests.exceptions.Timeout):
        return f"{url} gave no answer within {timeout:g} s"
    # Without client retries urllib3 raises its own connection errors, which requests does not wrap.
    if isinstance(error, (requests.exceptions.ConnectionError, urllib3.exceptions.NewConnectionError,
                          urllib3.exceptions.MaxRetryError)):
        return f"cannot connect to {url} (is the URL right and Prometheus reachable from here?)"
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return f"{url} gave no answer within {timeout:g} s"
    if isinstance(error, ValueError):  # requests' JSONDecodeError too: a 200 that is not JSON
        return f"{url} answered with something that is not Prometheus JSON (an HTML page from a proxy?)"
    if isinstance(error, requests.exceptions.RequestException):
        return f"{url}: {type(error).__name__}"
    if isinstance(error, (KeyError, TypeError, IndexError)):
        return f"{url} answered JSON that is not a query result (no data.result)"
    text = str(error)
    if "HTTP Status Code 401" in text or "HTTP Status Code 403" in text:
        return f"{url} refused the credentials ({text[:60]}): check the bearer token"
    if found := re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.S):  # the client's: status and raw body
        return http_reason(url, found.group(1), found.group(2).removeprefix("b").strip("'\""))
    if isinstance(error, ijson.JSONError):
        return f"{url} answered with something that is not Prometheus JSON (an HTML page from a proxy?)"
    return text[:200]


def http_reason(url: str, status: int | str, body: str) -> str:
    """An HTTP error answer in one clause: its status and the body's text without markup."""
    text = re.sub(r"<[^>]*>|\\[nrt]", " ", body)
    return f"{url} answered HTTP {status}: {' '.join(text.split())[:160]}"


class _Captured:
    """A response body as ijson reads it, keeping its first bytes: an answer in which ijson found no
    series is parsed whole again, to tell "no series" from "no query result at all"."""

    LIMIT = 64 * 1024  # an answer without series is far smaller

    def __init__(self, raw):
        self.raw, self.head = raw, bytearray()

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        if len(self.head) < self.LIMIT:
            self.head += chunk[: self.LIMIT - len(self.head)]
        return chunk


@dataclass
class QueryStats:
    queries: int = 0
    seconds: float = 0.0
    per_query: dict[str, float] = field(default_factory=dict)


class Prometheus:
    def __init__(self, settings: OperatorSettings):
        self.settings = settings
        session = requests.Session()
        if settings.prometheus_ca_file:
            session.verify = str(settings.prometheus_ca_file)
        self._session = session

    def _client(self) -> PrometheusConnect:
        # Headers are built per call so a rotated bearer token file is picked up. No retries: the client's
        # default (3, with backoff, on timeouts and 5xx) held a query for 4x the timeout plus 6 s and
        # reported a slow Prometheus as "cannot connect"; the loop's next cycle is the retry.
        return PrometheusConnect(url=self.settings.prometheus_url, headers=self.settings.prometheus_headers(),
                                 disable_ssl=False, session=self._session, timeout=self.settings.prometheus_timeout,
                                 retry=Retry(total=0, connect=False, read=False, raise_on_status=False))

    def _result(self, client: PrometheusConnect, name: str, expr: str, params: dict | None = None,
                max_series: int | None = None) -> list[dict]:
        """One instant query's result as a list of series ({"metric", "value" | "values"}); every failure,
        and an answer of a shape this module does not read, is PrometheusUnavailable naming the query."""
        try:
            raw = client.custom_query(expr, params=params or {})
        except Exception as e:  # the client raises requests' errors, its own, and JSON/KeyError alike
            raise PrometheusUnavailable(f"query {name} failed: "
                                        f"{short_reason(e, self.settings.prometheus_url, self.settings.prometheus_timeout)}") from e
        if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
            raw = [{"metric": {}, "value": raw}]  # a scalar result: [time, "value"]
        if not isinstance(raw, list) or not all(isinstance(item, dict) and isinstance(item.get("metric"), dict)
                                                and ("value" in item or "values" in item) for item in raw):
            raise PrometheusUnavailable(f"query {name} failed: the answer is not a vector, matrix or scalar")
        if max_series is not None and len(raw) > max_series:
            raise PrometheusUnavailable(f"query {name} failed: {len(raw)} series, more than the {max_series} a "
                                        "workload-level query may return (a template missing its sum()?)")
        return raw

    def _series(self, name: str, path: str, params: dict) -> Iterator[dict]:
        """The series of a vector or matrix answer of /api/v1/`path`, one at a time as the body is read
        (ijson): at 10,000 pods a range family is 6 MB of JSON and was 41 MiB as Python objects at once,
        most of the operator's peak memory; streamed, only the samples kept stay. Failures as _result's."""
        url, timeout = self.settings.prometheus_url, self.settings.prometheus_timeout
        try:
            with self._session.get(f"{url.rstrip('/')}/api/v1/{path}", params=params,
                                   headers=self.settings.prometheus_headers(), timeout=timeout, stream=True) as answer:
                if answer.status_code != 200:
                    raise PrometheusUnavailable(f"query {name} failed: "
                                                f"{http_reason(url, answer.status_code, answer.text)}")
                answer.raw.decode_content = True  # gzip, as requests asked for it
                body, found = _Captured(answer.raw), 0
                for item in ijson.items(body, "data.result.item", use_float=True):
                    if not (isinstance(item, dict) and isinstance(item.get("metric"), dict)
                            and ("value" in item or "values" in item)):
                        raise PrometheusUnavailable(f"query {name} failed: the answer is not a vector or matrix")
                    found += 1
                    yield item
                if not found:
                    json.loads(bytes(body.head))["data"]["result"]  # no series, or no result (KeyError)?
        except PrometheusUnavailable:
            raise
        except Exception as e:  # requests', urllib3's and ijson's errors, and a body that is not a result
            raise PrometheusUnavailable(f"query {name} failed: {short_reason(e, url, timeout)}") from e

    def fetch(self, queries: list[PromQuery]) -> tuple[dict[str, Samples], QueryStats]:
        """Run every query; raise PrometheusUnavailable on the first failure (a cycle with partial
        data would decide on half the evidence). NaN, +/-Inf and unreadable samples are skipped.
        A series' key is one tuple shared by every family that has it (10,000 pods' names once)."""
        results, stats, keys = {}, QueryStats(), {}
        for query in queries:
            start = time.perf_counter()
            samples: Samples = {}
            for item in self._series(query.name, "query", {"query": query.expr}):
                key = tuple(str(item["metric"].get(label, "")) for label in query.key)
                key = keys.setdefault(key, key)
                if "values" in item:  # a range (subquery): the series, oldest first
                    samples[key] = np.array([v for v in (finite(_value(p)) for p in item["values"]) if v is not None],
                                            dtype=np.float64)
                    continue
                value = finite(_value(item["value"]))
                if value is not None:
                    samples[key] = value
            elapsed = time.perf_counter() - start
            stats.queries += 1
            stats.seconds += elapsed
            stats.per_query[query.name] = elapsed
            results[query.name] = samples
        return results, stats

    def range_series(self, expr: str, start: float, end: float, step: float) -> Iterator[dict]:
        """The matrix of /api/v1/query_range, one series ({"metric", "values": [[t, "v"], ...]}) at a
        time as the answer is read: a history fill's chunk is never whole in memory."""
        return self._series(f"range {expr[:80]!r}", "query_range",
                            {"query": expr, "start": start, "end": end, "step": f"{step:g}"})

    def range_query(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """The raw matrix of /api/v1/query_range: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        return list(self.range_series(expr, start, end, step))

    def instant_query(self, expr: str, at: float | None = None) -> list[dict]:
        """The raw vector of /api/v1/query at unix time `at` (default: now)."""
        try:
            return self._client().custom_query(expr, params={} if at is None else {"time": at})
        except Exception as e:
            raise PrometheusUnavailable(short_reason(e, self.settings.prometheus_url,
                                                     self.settings.prometheus_timeout)) from e

    def rule_groups(self) -> list[str]:
        """The names of the rule groups Prometheus has loaded (/api/v1/rules)."""
        url = f"{self.settings.prometheus_url.rstrip('/')}/api/v1/rules"
        try:
            response = self._session.get(url, headers=self.settings.prometheus_headers(),
                                         timeout=self.settings.prometheus_timeout)
            response.raise_for_status()
            return [group["name"] for group in response.json()["data"]["groups"]]
        except Exception as e:
            raise PrometheusUnavailable(short_reason(e, self.settings.prometheus_url,
                                                     self.settings.prometheus_timeout)) from e

    def series(self, expr: str, at: float) -> tuple[tuple[float, float], ...]:
        """One range result evaluated at unix time `at`, summed over series: ((time, value), ...);
        NaN, +/-Inf and unreadable samples are skipped."""
        raw = self._result(self._client(), repr(expr[:80]), expr, {"time": at}, MAX_WORKLOAD_SERIES)
        totals: dict[float, float] = {}
        for item in raw:
            for point in item.get("values", []):
                t, v = finite(_time(point)), finite(_value(point))
                if t is not None and v is not None:
                    totals[t] = totals.get(t, 0.0) + v
        return tuple(sorted(totals.items()))

    def scalar(self, expr: str) -> float | None:
        """One value from a user's query template (error rate, throughput), summed over its series;
        None = no data (NaN, +/-Inf and unreadable samples are no data)."""
        raw = self._result(self._client(), repr(expr[:80]), expr, None, MAX_WORKLOAD_SERIES)
        values = [v for item in raw if "value" in item and (v := finite(_value(item["value"]))) is not None]
        return sum(values) if values else None


def _value(point: object) -> object:
    """The value of a [time, "value"] pair, or None when the pair is malformed."""
    return point[1] if isinstance(point, (list, tuple)) and len(point) == 2 else None


def _time(point: object) -> object:
    return point[0] if isinstance(point, (list, tuple)) and len(point) == 2 else None
