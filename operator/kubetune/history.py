"""The anomaly detector's long baselines: eight days of each workload's history at 5-minute steps —
CPU and memory from the recording rules, p95 latency and request rates from a histogram or counter —
read through the recorded owner map (`promql.history_queries` and friends), one range query per family
for all the cycle's namespaces.

The answer changes only when the 5-minute step's end moves, so it is kept between cycles, keyed by
that time: each move fetches only the steps since the last one (one sample per series, normally) and
shifts the arrays in place; a namespace seen for the first time is filled six hours per query, newest
first (at 1,000 workloads a day's answer is 9 MiB of JSON and ~100 MiB parsed into Python lists; eight
days in one answer would be near a GiB). Losing the cache (a restart) costs one fill. Samples are
float32 with NaN for a missing step: 2,328 x 4 bytes = 9.1 KiB per series, where Python tuples of
floats would take ~75 KiB.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from kubetune.analysis import detector_window
from kubetune.prometheus import PrometheusUnavailable, finite
from kubetune.promql import WORKLOAD_KEY, PromQuery, history_queries

log = logging.getLogger(__name__)

HISTORY_STEP_SECONDS = 300.0
# Six hours of samples per range query while filling: bounds the parsed answer (see the module doc).
FILL_CHUNK_STEPS = 72


class RangeQueries(Protocol):
    def range_series(self, expr: str, start: float, end: float, step: float) -> Iterable[dict]: ...


@dataclass
class RefreshStats:
    """What one refresh asked of Prometheus: queries, series and samples returned."""

    queries: int = 0
    series: int = 0
    samples: int = 0


class WorkloadHistory:
    """`get(family, namespace, workload, container)` -> the family's samples, oldest first, ending at
    `end` (the newest whole step); leading steps before the workload existed are left out."""

    def __init__(self, prometheus: RangeQueries, step: float = HISTORY_STEP_SECONDS,
                 queries: Callable[[Iterable[str]], list[PromQuery]] = history_queries):
        """`queries`: the range queries for a set of namespaces (default: CPU and memory per container;
        `promql.latency_history_queries` and `request_history_queries` give workload-level families)."""
        self.prometheus, self.step, self.queries = prometheus, step, queries
        self.points = detector_window(step)
        self.end = -math.inf  # the step end the arrays reach; -inf: nothing held
        self.namespaces: frozenset[str] = frozenset()
        self.series: dict[tuple[str, str, str, str], np.ndarray] = {}
        self.warned_empty = False
        self.failed_end = -math.inf  # the step whose queries failed: not asked again within it

    def step_end(self, now: float) -> float:
        return math.floor(now / self.step) * self.step

    def refresh(self, namespaces: Iterable[str], now: float) -> RefreshStats:
        """Bring the arrays to the step ending at or before `now` for `namespaces` (others are dropped).
        PrometheusUnavailable leaves the cache as it was, and `current(now)` False; the queries are then
        not asked again before the step moves (a fill too heavy for Prometheus must not be repeated every
        cycle)."""
        wanted, end = frozenset(namespaces), self.step_end(now)
        stats = RefreshStats()
        if (end == self.end and wanted <= self.namespaces) or end == self.failed_end:
            return stats
        try:
            return self._refresh(wanted, end, stats)
        except PrometheusUnavailable:
            self.failed_end = end
            raise

    def _refresh(self, wanted: frozenset[str], end: float, stats: RefreshStats) -> RefreshStats:
        steps = round((end - self.end) / self.step) if math.isfinite(self.end) else self.points
        kept = self.namespaces & wanted if steps < self.points else frozenset()
        new = wanted - kept
        # Every query before any array changes: a failure half-way leaves the cache as it was. The fill
        # is written into arrays of its own series by series as the answers are read, so no chunk's
        # answer is ever whole in memory.
        recent = list(self._ask(kept, end - (steps - 1) * self.step, end, stats)) if kept and steps > 0 else []
        fresh: dict[tuple[str, str, str, str], np.ndarray] = {}
        start = end - (self.points - 1) * self.step
        # Newest chunk first: when it holds no series, no workload of these namespaces ran in the last
        # hours and none has a history worth fetching (without kube-state-metrics: 2 queries, not 66).
        for last in range(self.points - 1, -1 if new else self.points - 1, -FILL_CHUNK_STEPS):
            before = stats.series
            first = max(0, last - FILL_CHUNK_STEPS + 1)
            self._write(fresh, self._ask(new, start + first * self.step, start + last * self.step, stats), end)
            if stats.series == before:
                break
        for key, array in self.series.items():
            if key[1] not in kept:
                continue
            if steps > 0:
                array[:-steps] = array[steps:]
                array[-steps:] = np.nan
            fresh[key] = array
        self._write(fresh, recent, end)
        # A workload gone for eight days holds nothing any more.
        fresh = {k: v for k, v in fresh.items() if not np.isnan(v).all()}
        self.series, self.end, self.namespaces = fresh, end, wanted
        if not fresh and wanted and not self.warned_empty:
            self.warned_empty = True
            log.warning("no workload history (%s is empty: is kube-state-metrics scraped and are the kubetune "
                        "recording rules loaded?): anomalies are judged on the recent series alone, without "
                        "daily or weekly baselines", "kubetune:pod_workload:owner")
        return stats

    def _ask(self, namespaces: frozenset[str], start: float, end: float,
             stats: RefreshStats) -> Iterator[tuple[str, dict]]:
        """Every series of the families over `start`..`end`, one at a time as Prometheus' answers are read."""
        for query in self.queries(namespaces):
            stats.queries += 1
            family = _family(query)
            for item in self.prometheus.range_series(query.expr, start, end, self.step):
                stats.series += 1
                stats.samples += len(item.get("values", ()))
                yield family, item

    def _write(self, into: dict[tuple[str, str, str, str], np.ndarray], answers: Iterable[tuple[str, dict]],
               end: float) -> None:
        first = end - (self.points - 1) * self.step
        for family, item in answers:
            labels = item.get("metric", {})
            key = (family, *(str(labels.get(label, "")) for label in WORKLOAD_KEY))
            array = into.get(key)
            for point in item.get("values", ()):
                pair = point if isinstance(point, (list, tuple)) and len(point) == 2 else (None, None)
                t, v = finite(pair[0]), finite(pair[1])
                index = round((t - first) / self.step) if t is not None else -1
                if v is None or not 0 <= index < self.points:
                    continue  # NaN, +/-Inf, a malformed pair or a time outside the window: no sample
                if array is None:
                    array = into[key] = np.full(self.points, np.nan, dtype=np.float32)
                array[index] = v

    def current(self, now: float) -> bool:
        return self.end == self.step_end(now)

    def get(self, family: str, namespace: str, workload: str, container: str = "") -> np.ndarray:
        array = self.series.get((family, namespace, workload, container))
        # A view, no copy: valid until the next refresh shifts the arrays (the loop refreshes between
        # cycles, never while policies are evaluated).
        return _EMPTY if array is None else _from_first_sample(array)

    def share(self, part: str, whole: str, namespace: str, workload: str) -> np.ndarray:
        """`part` / `whole` of a workload per step (e.g. failed / all requests): 0 where `whole` is 0 or
        `part` has no sample (no requests, or none failed), NaN where `whole` has none."""
        total = self.series.get((whole, namespace, workload, ""))
        if total is None:
            return _EMPTY
        found = self.series.get((part, namespace, workload, ""))
        failed = np.zeros_like(total) if found is None else np.nan_to_num(found, nan=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, failed / total, np.where(np.isnan(total), np.nan, 0.0)).astype(np.float32)
        return _from_first_sample(ratio)

    def nbytes(self) -> int:
        """The arrays' bytes (what grows with workloads; the dict and keys add ~0.3 KiB per series)."""
        return sum(a.nbytes for a in self.series.values())


_EMPTY = np.empty(0, dtype=np.float32)


def _from_first_sample(array: np.ndarray) -> np.ndarray:
    """`array` without its leading steps from before the workload's first sample."""
    valid = np.flatnonzero(~np.isnan(array))
    return array[valid[0]:] if valid.size else _EMPTY


def _family(query: PromQuery) -> str:
    return query.name.removeprefix("history:")

