"""The one interface to Prometheus: run instant queries, return plain keyed samples.

prometheus-api-client is synchronous; callers on the event loop use `fetch` through
`asyncio.to_thread`, so a slow Prometheus never blocks kopf's watches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import requests
from prometheus_api_client import PrometheusConnect

from kubetune.promql import PromQuery
from kubetune.settings import OperatorSettings

Samples = dict[tuple[str, ...], float]


class PrometheusUnavailable(Exception):
    """Prometheus could not answer; the message says which query and why."""


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
                value = float(item["value"][1])
                if math.isnan(value):
                    continue
                samples[tuple(item["metric"].get(label, "") for label in query.key)] = value
            results[query.name] = samples
        return results, stats

    def scalar(self, expr: str) -> float | None:
        """One value from a user's query template (error rate, throughput); None = no data."""
        try:
            raw = self._client().custom_query(expr)
        except Exception as e:
            raise PrometheusUnavailable(f"query {expr[:80]!r} failed: {str(e)[:200]}") from e
        values = [float(item["value"][1]) for item in raw if not math.isnan(float(item["value"][1]))]
        return sum(values) if values else None
