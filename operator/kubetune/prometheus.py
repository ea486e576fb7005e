"""The one interface to Prometheus: run instant queries, return plain keyed samples.

prometheus-api-client is synchronous; callers on the event loop use `fetch` through
`asyncio.to_thread`, so a slow Prometheus never blocks kopf's watches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from prometheus_api_client import PrometheusConnect

from kubetune.promql import PromQuery
from kubetune.settings import OperatorSettings

# Keyed by the query's labels; a float, or a tuple of floats for range (subquery) results.
Samples = dict[tuple[str, ...], float | tuple[float, ...]]


class PrometheusUnavailable(Exception):
    """Prometheus could not answer; the message says which query and why."""


def short_reason(error: Exception, url: str, timeout: float) -> str:
    """One readable clause for a failed request (urllib3's own text runs to several nested lines)."""
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS to {url} failed (a CA bundle for it: --ca-file / KUBETUNE_PROMETHEUS_CA_FILE)"
    if isinstance(error, requests.exceptions.Timeout):
        return f"{url} gave no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"cannot connect to {url} (is the URL right and Prometheus reachable from here?)"
    if isinstance(error, requests.exceptions.RequestException):
        return f"{url}: {type(error).__name__}"
    text = str(error)
    if "HTTP Status Code 401" in text or "HTTP Status Code 403" in text:
        return f"{url} refused the credentials ({text[:60]}): check the bearer token"
    return text[:200]


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
        # Headers are built per call so a rotated bearer token file is picked up.
        return PrometheusConnect(url=self.settings.prometheus_url, headers=self.settings.prometheus_headers(),
                                 disable_ssl=False, session=self._session, timeout=self.settings.prometheus_timeout)

    def fetch(self, queries: list[PromQuery]) -> tuple[dict[str, Samples], QueryStats]:
        """Run every query; raise PrometheusUnavailable on the first failure (a cycle with partial
        data would decide on half the evidence)."""
        client, results, stats = self._client(), {}, QueryStats()
        for query in queries:
            start = time.perf_counter()
            try:
                raw = client.custom_query(query.expr)
            except Exception as e:  # the client raises requests and its own errors alike
                raise PrometheusUnavailable(f"query {query.name} failed: {str(e)[:200]}") from e
            elapsed = time.perf_counter() - start
            stats.queries += 1
            stats.seconds += elapsed
            stats.per_query[query.name] = elapsed
            samples: Samples = {}
            for item in raw:
                key = tuple(item["metric"].get(label, "") for label in query.key)
                if "values" in item:  # a range (subquery): the series, oldest first
                    samples[key] = tuple(v for _, raw_value in item["values"] if not math.isnan(v := float(raw_value)))
                    continue
                value = float(item["value"][1])
                if not math.isnan(value):
                    samples[key] = value
            results[query.name] = samples
        return results, stats

    def range_query(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """The raw matrix of /api/v1/query_range: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        try:
            return self._client().custom_query_range(
                expr, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), f"{step:g}")
        except Exception as e:
            raise PrometheusUnavailable(short_reason(e, self.settings.prometheus_url,
                                                     self.settings.prometheus_timeout)) from e

    def instant_query(self, expr: str, at: float | None = None) -> list[dict]:
        """The raw vector of /api/v1/query at unix time `at` (default: now)."""
        try:
            return self._client().custom_query(expr, params={} if at is None else {"time": at})
        except Exception as e:
            raise PrometheusUnavailable(short_reason(e, self.settings.prometheus_url,
                                                     self.settings.prometheus_timeout)) from e

    def series(self, expr: str, at: float) -> tuple[tuple[float, float], ...]:
        """One range result evaluated at unix time `at`, summed over series: ((time, value), ...)."""
        try:
            raw = self._client().custom_query(expr, params={"time": at})
        except Exception as e:
            raise PrometheusUnavailable(f"query {expr[:80]!r} failed: {str(e)[:200]}") from e
        totals: dict[float, float] = {}
        for item in raw:
            for t, v in item.get("values", []):
                if not math.isnan(float(v)):
                    totals[float(t)] = totals.get(float(t), 0.0) + float(v)
        return tuple(sorted(totals.items()))

    def scalar(self, expr: str) -> float | None:
        """One value from a user's query template (error rate, throughput); None = no data."""
        try:
            raw = self._client().custom_query(expr)
        except Exception as e:
            raise PrometheusUnavailable(f"query {expr[:80]!r} failed: {str(e)[:200]}") from e
        values = [float(item["value"][1]) for item in raw if not math.isnan(float(item["value"][1]))]
        return sum(values) if values else None
