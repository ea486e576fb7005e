"""Synthetic metrics for kwok pods: the load generator of the local cluster and the demo.

kwok pods run nothing, so nothing measures them. This module owns the stand-in: a Prometheus exporter
that publishes, for every pod it knows, the series the kubelet's cAdvisor would publish
(container_cpu_usage_seconds_total, container_memory_working_set_bytes, CFS periods and throttling,
major page faults, OOM events) and the application series a web service would publish
(http_request_duration_seconds histogram, http_requests_total by code), all driven by a load that
tests and the demo script set per workload, either fixed (`set_load`) or as a timed profile
(`set_profile`). Values are deterministic functions of the load and the clock, so tests assert on them.

    python deploy/local/loadgen.py --port 9400 --kubeconfig K --selector kubetune.io/demo=true \\
        --profile profile.json

profile.json is a list of {"namespace", "workload", "container"?, "repeat"?, "steps": [[seconds, {load}], ...]},
a load being any of the `Load` fields; each step starts from the previous step's values.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

log = logging.getLogger("kubetune.loadgen")

# cAdvisor's default CFS period is 100 ms: a container with a quota accrues 10 periods a second.
CFS_PERIODS_PER_SECOND = 10.0
# client_golang's and prometheus_client's default buckets, which most services keep.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Spread of the (log-normal) latency distribution: p50 is about 0.6 x p95, as in a healthy service.
LATENCY_SIGMA = 0.3
# The quantile `latency_seconds` pins: the one SLOs and kubetune's analysis read.
LATENCY_QUANTILE = 0.95

CONTAINER_LABELS = ["namespace", "pod", "container"]
POD_LABELS = ["namespace", "pod"]


class PodRecord(NamedTuple):
    """A pod the exporter publishes series for; a plain (namespace, pod, containers) tuple works too."""

    namespace: str
    pod: str
    containers: tuple[str, ...]


@dataclass(frozen=True)
class Load:
    """What a container (and, for the http_* fields, its pod) is doing. None latency: no HTTP traffic."""

    cpu_cores: float = 0.0
    memory_bytes: int = 0
    latency_seconds: float | None = None  # the p95 histogram_quantile recovers from the buckets
    error_ratio: float | None = None  # share of requests answered 500; None and no latency: no HTTP series
    rps: float = 50.0
    throttled_ratio: float = 0.0  # share of CFS periods throttled
    major_faults_per_second: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu_cores < 0 or self.memory_bytes < 0 or self.rps < 0 or self.major_faults_per_second < 0:
            raise ValueError(f"load values must not be negative: {self}")
        if self.latency_seconds is not None and self.latency_seconds <= 0:
            raise ValueError(f"latency_seconds must be positive: {self.latency_seconds}")
        for name in ("error_ratio", "throttled_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be within [0, 1]: {value}")

    @property
    def serves_http(self) -> bool:
        return self.latency_seconds is not None or self.error_ratio is not None


@dataclass(frozen=True)
class Schedule:
    """A piecewise-constant load from `start` (clock seconds): steps of (seconds, Load), the last one held
    for ever unless `repeat`. A fixed load is one endless step."""

    start: float
    steps: tuple[tuple[float, Load], ...]
    repeat: bool = False

    def __post_init__(self) -> None:
        if not self.steps or any(not seconds > 0 for seconds, _ in self.steps):
            raise ValueError("a profile needs at least one step, and every step a positive duration")
        if self.repeat and math.isinf(self.period):
            raise ValueError("a repeating profile needs finite step durations")

    @property
    def period(self) -> float:
        return sum(seconds for seconds, _ in self.steps)

    def step_at(self, t: float) -> tuple[Load, float]:
        """The load in force at `t` and the clock time its step ends."""
        elapsed = max(t - self.start, 0.0)
        cycle_start = self.start
        if self.repeat:
            cycles = math.floor(elapsed / self.period)
            cycle_start += cycles * self.period
            elapsed -= cycles * self.period
        ends = cycle_start
        for seconds, load in self.steps:
            ends += seconds
            if elapsed < ends - cycle_start:
                return load, ends
        return self.steps[-1][1], math.inf  # a finished profile holds its last step

    def segments(self, t0: float, t1: float) -> Iterator[tuple[float, Load]]:
        """(seconds, load) pieces covering [t0, t1): counters integrate each piece at its own rate."""
        t = t0
        while t < t1:
            load, ends = self.step_at(t)
            # A step end that rounds onto t (large clock values) must still make progress.
            end = min(max(ends, math.nextafter(t, math.inf)), t1)
            yield end - t, load
            t = end


IDLE = Schedule(0.0, ((math.inf, Load()),))


@functools.lru_cache(maxsize=256)
def latency_buckets(latency_seconds: float) -> tuple[tuple[float, ...], float]:
    """Cumulative share of requests at or below each bucket bound (LATENCY_BUCKETS then +Inf), and the mean.

    The distribution is log-normal (LATENCY_SIGMA) sampled at the bucket bounds, its median chosen by
    bisection so that the p95 Prometheus interpolates from these buckets (linearly within a bucket,
    as histogram_quantile does) is `latency_seconds` itself, not merely close to it: the standard
    buckets are too coarse for a centred distribution to come out right. The scrape shows whole
    requests, so over a short rate() window the p95 carries rounding: about one request in the few that
    land in its bucket (rps 50, [5s]: ~7% at 0.3 s); a higher rps makes it smaller.
    """
    # Below 0.95 x the first bound or above the last bound no bucket shape can express the target.
    target = min(max(latency_seconds, LATENCY_BUCKETS[0]), LATENCY_BUCKETS[-1])

    def shares(median: float) -> tuple[float, ...]:
        return (*(0.5 * (1 + math.erf(math.log(b / median) / (LATENCY_SIGMA * math.sqrt(2))))
                  for b in LATENCY_BUCKETS), 1.0)

    lo, hi = math.log(1e-4), math.log(1e3)  # medians far beyond either end of the buckets
    for _ in range(100):  # the interpolated p95 grows with the median: bisect on log(median)
        mid = (lo + hi) / 2
        if bucket_quantile(LATENCY_QUANTILE, shares(math.exp(mid))) < target:
            lo = mid
        else:
            hi = mid
    cumulative = shares(math.exp((lo + hi) / 2))
    # The mean of the distribution the buckets describe: uniform within each bucket, +Inf at the last bound.
    mean, below, lower = 0.0, 0.0, 0.0
    for bound, share in zip((*LATENCY_BUCKETS, LATENCY_BUCKETS[-1]), cumulative):
        mean += (share - below) * (lower + bound) / 2
        below, lower = share, bound
    return cumulative, mean


def bucket_quantile(q: float, cumulative: Sequence[float]) -> float:
    """Prometheus's histogram_quantile over LATENCY_BUCKETS + Inf cumulative counts."""
    rank = q * cumulative[-1]
    below, lower = 0.0, 0.0
    for bound, count in zip(LATENCY_BUCKETS, cumulative):
        if count >= rank:
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        below, lower = count, bound
    return LATENCY_BUCKETS[-1]  # in the +Inf bucket: Prometheus answers the highest finite bound


@dataclass
class _ContainerCounters:
    cpu_seconds: float = 0.0
    cfs_periods: float = 0.0
    cfs_throttled_periods: float = 0.0
    major_faults: float = 0.0
    oom_events: int = 0


@dataclass
class _PodState:
    """Counters since the pod appeared; like a real container's, they start at zero."""

    since: float  # the clock time up to which counters are integrated
    containers: dict[str, _ContainerCounters]
    requests_ok: float = 0.0
    requests_error: float = 0.0
    http_seen: bool = False
    buckets: list[float] | None = None  # cumulative counts; None until the pod has seen latency
    latency_sum: float = 0.0


class SyntheticExporter:
    """Publishes cAdvisor-shaped and application series for the pods it knows, from the loads it is given.

    Every method is thread-safe: Prometheus scrapes from the HTTP server's thread while tests set loads.
    `clock` gives elapsed seconds (default time.monotonic, which never steps back as wall time can).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, registry: CollectorRegistry | None = None) -> None:
        self.clock = clock
        # Its own registry, not the global one: several exporters (and tests) live in one process.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.RLock()
        self._pods: dict[tuple[str, str], _PodState] = {}
        self._schedules: dict[tuple[str, str, str | None], Schedule] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.registry.register(_Collector(self))

    # --- serving ----------------------------------------------------------------------------------

    def start(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on addr:port (0: a free port); returns the bound port."""
        self._server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._threads.append(thread)
        return int(self._server.server_port)

    def stop(self) -> None:
        """Stop serving and stop the cluster sync, if running."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    # --- pods -------------------------------------------------------------------------------------

    def set_pods(self, pods: Iterable[PodRecord | tuple[str, str, Sequence[str]]]) -> None:
        """Publish exactly these pods: new ones start with zero counters, missing ones disappear."""
        records = [PodRecord(ns, pod, tuple(containers)) for ns, pod, containers in pods]
        with self._lock:
            now = self._advance()
            wanted = {(r.namespace, r.pod): r.containers for r in records}
            for key in set(self._pods) - set(wanted):
                del self._pods[key]
            for key, containers in wanted.items():
                state = self._pods.setdefault(key, _PodState(since=now, containers={}))
                state.containers = {c: state.containers.get(c) or _ContainerCounters() for c in containers}

    def pods(self) -> list[PodRecord]:
        with self._lock:
            return [PodRecord(ns, pod, tuple(s.containers)) for (ns, pod), s in sorted(self._pods.items())]

    def sync_pods_from_cluster(self, kubeconfig: str, label_selector: str = "", *, namespace: str | None = None,
                               interval: float = 1.0) -> None:
        """Publish the Running pods matching the selector, relisted every `interval` seconds in a
        background thread so rollouts and resizes (new pods) show up and deleted pods disappear.
        The first listing happens before this returns, so a bad kubeconfig fails here."""
        import kubernetes  # here, not at the top: unit tests and set_pods users need no client

        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(kubeconfig))

        def list_pods() -> list[PodRecord]:
            if namespace:
                items = api.list_namespaced_pod(namespace, label_selector=label_selector, _request_timeout=10).items
            else:
                items = api.list_pod_for_all_namespaces(label_selector=label_selector, _request_timeout=10).items
            # Only Running pods: cAdvisor has nothing to measure before the containers start.
            return [PodRecord(p.metadata.namespace, p.metadata.name, tuple(c.name for c in p.spec.containers))
                    for p in items if p.status and p.status.phase == "Running"]

        self.set_pods(list_pods())

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.set_pods(list_pods())
                except Exception as e:  # a blip in the API server must not blank every series: keep the last set
                    log.warning("listing pods failed, keeping the last known pods: %s", e)

        thread = threading.Thread(target=loop, name="loadgen-pod-sync", daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- load -------------------------------------------------------------------------------------

    def set_load(self, namespace: str, workload: str, *, cpu_cores: float, memory_bytes: int,
                 latency_seconds: float | None = None, error_ratio: float | None = None, rps: float = 50,
                 throttled_ratio: float = 0.0, major_faults_per_second: float = 0.0,
                 container: str | None = None) -> None:
        """A fixed load, from now on, for every container of the pods named `workload-…` in `namespace`
        (only `container`, when given; it then takes precedence over the workload-wide load)."""
        load = Load(cpu_cores=cpu_cores, memory_bytes=memory_bytes, latency_seconds=latency_seconds,
                    error_ratio=error_ratio, rps=rps, throttled_ratio=throttled_ratio,
                    major_faults_per_second=major_faults_per_second)
        self._set_schedule(namespace, workload, container, lambda now: Schedule(now, ((math.inf, load),)))

    def set_profile(self, namespace: str, workload: str, steps: Sequence[tuple[float, Mapping[str, Any]]],
                    repeat: bool = False, *, container: str | None = None) -> None:
        """A timed load starting now: each (seconds, fields) step starts from the previous step's values
        (the first from `Load()`'s) and changes the fields given; the last step holds unless `repeat`."""
        loads: list[tuple[float, Load]] = []
        current = Load()
        for seconds, fields in steps:
            try:
                current = dataclasses.replace(current, **fields)
            except TypeError as e:
                raise ValueError(f"bad profile step {fields!r}: {e}") from None
            loads.append((float(seconds), current))
        self._set_schedule(namespace, workload, container, lambda now: Schedule(now, tuple(loads), repeat))

    def clear_load(self, namespace: str, workload: str, *, container: str | None = None) -> None:
        """Back to idle (zero CPU and memory, no HTTP traffic) from now on."""
        with self._lock:
            self._advance()
            self._schedules.pop((namespace, workload, container), None)

    def current_load(self, namespace: str, pod: str, container: str | None = None) -> Load:
        """The load in force now for a container (None: the pod's workload-wide load, which drives http_*)."""
        with self._lock:
            return self._schedule_for(namespace, pod, container).step_at(self.clock())[0]

    def oom_kill(self, namespace: str, pod: str, container: str) -> None:
        """Count one OOM kill for the container (container_oom_events_total)."""
        with self._lock:
            self._advance()
            self._pods[(namespace, pod)].containers[container].oom_events += 1

    def _set_schedule(self, namespace: str, workload: str, container: str | None,
                      make: Callable[[float], Schedule]) -> None:
        with self._lock:
            # Integrate the old load up to now first, so the new one counts only from now on.
            now = self._advance()
            self._schedules[(namespace, workload, container)] = make(now)

    def _schedule_for(self, namespace: str, pod: str, container: str | None) -> Schedule:
        # The longest matching workload wins, so "web-api" is not taken for "web".
        workloads = [w for ns, w, _ in self._schedules if ns == namespace and pod.startswith(w + "-")]
        if not workloads:
            return IDLE
        workload = max(workloads, key=len)
        return (self._schedules.get((namespace, workload, container))
                or self._schedules.get((namespace, workload, None)) or IDLE)

    # --- integration ------------------------------------------------------------------------------

    def _advance(self) -> float:
        """Integrate every counter up to now; returns now. Callers hold the lock."""
        now = self.clock()
        for (namespace, pod), state in self._pods.items():
            if now < state.since:
                continue
            for name, counters in state.containers.items():
                for seconds, load in self._schedule_for(namespace, pod, name).segments(state.since, now):
                    counters.cpu_seconds += load.cpu_cores * seconds
                    counters.cfs_periods += CFS_PERIODS_PER_SECOND * seconds
                    counters.cfs_throttled_periods += CFS_PERIODS_PER_SECOND * load.throttled_ratio * seconds
                    counters.major_faults += load.major_faults_per_second * seconds
            app = self._schedule_for(namespace, pod, None)
            for seconds, load in app.segments(state.since, now):
                self._serve_requests(state, load, seconds)
            # Zero requests at the current load: HTTP series appear (at 0) as soon as a load asks for them,
            # so the first increase already shows in rate().
            self._serve_requests(state, app.step_at(now)[0], 0.0)
            state.since = now
        return now

    @staticmethod
    def _serve_requests(state: _PodState, load: Load, seconds: float) -> None:
        if not load.serves_http:
            return
        state.http_seen = True
        requests = load.rps * seconds
        errors = requests * (load.error_ratio or 0.0)
        state.requests_ok += requests - errors
        state.requests_error += errors
        if load.latency_seconds is None:
            return
        # Fractional counts keep the buckets an exact function of time; the scrape shows them whole.
        cumulative, mean = latency_buckets(load.latency_seconds)
        if state.buckets is None:
            state.buckets = [0.0] * len(cumulative)
        for i, share in enumerate(cumulative):
            state.buckets[i] += requests * share
        state.latency_sum += requests * mean

    def collect(self) -> list[Metric]:
        """The metric families as of now (what a scrape returns)."""
        with self._lock:
            now = self._advance()
            cpu = CounterMetricFamily("container_cpu_usage_seconds_total",
                                      "Cumulative cpu time consumed in seconds.", labels=CONTAINER_LABELS)
            memory = GaugeMetricFamily("container_memory_working_set_bytes",
                                       "Current working set in bytes.", labels=CONTAINER_LABELS)
            periods = CounterMetricFamily("container_cpu_cfs_periods_total",
                                          "Number of elapsed enforcement period intervals.", labels=CONTAINER_LABELS)
            throttled = CounterMetricFamily("container_cpu_cfs_throttled_periods_total",
                                            "Number of throttled period intervals.", labels=CONTAINER_LABELS)
            failures = CounterMetricFamily("container_memory_failures_total",
                                           "Cumulative count of memory allocation failures.",
                                           labels=[*CONTAINER_LABELS, "failure_type", "scope"])
            ooms = CounterMetricFamily("container_oom_events_total",
                                       "Count of out of memory events observed for the container.",
                                       labels=CONTAINER_LABELS)
            latency = HistogramMetricFamily("http_request_duration_seconds", "HTTP request latency.",
                                            labels=POD_LABELS)
            requests = CounterMetricFamily("http_requests_total", "HTTP requests by status code.",
                                           labels=[*POD_LABELS, "code"])
            for (namespace, pod), state in sorted(self._pods.items()):
                for name, c in state.containers.items():
                    labels = [namespace, pod, name]
                    cpu.add_metric(labels, c.cpu_seconds)
                    memory.add_metric(labels, self._schedule_for(namespace, pod, name).step_at(now)[0].memory_bytes)
                    periods.add_metric(labels, c.cfs_periods)
                    throttled.add_metric(labels, c.cfs_throttled_periods)
                    failures.add_metric([*labels, "pgmajfault", "container"], c.major_faults)
                    ooms.add_metric(labels, c.oom_events)
                if state.http_seen:
                    requests.add_metric([namespace, pod, "200"], _whole(state.requests_ok))
                    requests.add_metric([namespace, pod, "500"], _whole(state.requests_error))
                if state.buckets is not None:
                    bounds = [floatToGoString(b) for b in (*LATENCY_BUCKETS, math.inf)]
                    # Whole counts: OpenMetrics (which Prometheus asks for first) requires integer buckets.
                    # Flooring keeps them cumulative and never decreasing.
                    latency.add_metric([namespace, pod], [(b, _whole(n)) for b, n in zip(bounds, state.buckets)],
                                       state.latency_sum)
            return [cpu, memory, periods, throttled, failures, ooms, latency, requests]


def _whole(count: float) -> int:
    # The epsilon absorbs summation error: 10 s x 100 rps must read 1000, not 999.
    return math.floor(count + 1e-6)


class _Collector:
    """The registry's view of an exporter (a custom collector: values are computed at scrape time)."""

    def __init__(self, exporter: SyntheticExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        return self._exporter.collect()


def apply_profile_file(exporter: SyntheticExporter, path: str) -> None:
    """Apply a profile.json (see the module docstring) to the exporter."""
    with open(path) as f:
        entries = json.load(f)
    for entry in entries:
        exporter.set_profile(entry["namespace"], entry["workload"], entry["steps"],
                             repeat=bool(entry.get("repeat", False)), container=entry.get("container"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--selector", default="", help="label selector of the pods to publish")
    parser.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    parser.add_argument("--profile", help="profile.json: loads per workload")
    args = parser.parse_args(argv)
    if not args.kubeconfig:
        parser.error("--kubeconfig (or KUBECONFIG) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s loadgen %(levelname)s %(message)s")
    exporter = SyntheticExporter()
    if args.profile:
        apply_profile_file(exporter, args.profile)
    exporter.sync_pods_from_cluster(args.kubeconfig, args.selector, namespace=args.namespace)
    port = exporter.start(args.port, args.addr)
    print(f"loadgen: serving {len(exporter.pods())} pods on http://{args.addr}:{port}/metrics", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    exporter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
