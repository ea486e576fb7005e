"""The agent's /metrics: a custom prometheus_client Collector over the latest ``NodeSample``.

Scrapes never touch the host: they render the sample the collection loop took last, so a scrape
costs only formatting. Nothing is registered globally; ``serve_metrics`` uses its own registry and
a single-threaded HTTP server that sleeps in select() until a scrape arrives: prometheus_client's
own server wakes twice a second to poll for shutdown (about half of the agent's idle CPU when
profiled) and starts a thread per scrape.
Names follow Prometheus conventions: ``kubetune_node_`` prefix, base units (seconds, bytes,
ratios), ``_total`` on counters (added by CounterMetricFamily).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .collectors import NodeSample, NodeSummary

PREFIX = "kubetune_node_"

# (name, help, attribute) per metric family; per-device families are labelled with ``device``.
DISK_COUNTERS = (
    ("disk_reads_completed", "Reads completed.", "reads"),
    ("disk_writes_completed", "Writes completed.", "writes"),
    ("disk_read_bytes", "Bytes read.", "read_bytes"),
    ("disk_written_bytes", "Bytes written.", "written_bytes"),
    ("disk_read_time_seconds", "Seconds spent reading; / reads = read latency.", "read_seconds"),
    ("disk_write_time_seconds", "Seconds spent writing; / writes = write latency.", "write_seconds"),
    ("disk_io_time_seconds", "Seconds the device was busy.", "io_seconds"),
    ("disk_io_time_weighted_seconds", "I/O seconds weighted by I/Os in flight; rate = average "
     "queue depth.", "weighted_io_seconds"),
)
NETWORK_COUNTERS = (
    ("network_receive_bytes", "Bytes received.", "receive_bytes"),
    ("network_transmit_bytes", "Bytes sent.", "transmit_bytes"),
    ("network_receive_packets", "Packets received.", "receive_packets"),
    ("network_transmit_packets", "Packets sent.", "transmit_packets"),
    ("network_receive_errors", "Receive errors.", "receive_errors"),
    ("network_transmit_errors", "Transmit errors.", "transmit_errors"),
    ("network_receive_drop", "Received packets dropped.", "receive_drops"),
    ("network_transmit_drop", "Sent packets dropped.", "transmit_drops"),
)


class NodeMetrics(Collector):
    """Renders the latest sample (and summary) handed to ``update``."""

    def __init__(self) -> None:
        self.sample: NodeSample | None = None
        self.summary: NodeSummary | None = None

    def update(self, sample: NodeSample, summary: NodeSummary | None) -> None:
        self.sample, self.summary = sample, summary

    def collect(self) -> Iterator[Metric]:
        sample = self.sample
        if sample is None:
            return
        cpu, memory = sample.cpu, sample.memory
        seconds = CounterMetricFamily(PREFIX + "cpu_seconds", "CPU seconds per mode, all CPUs.",
                                      labels=["mode"])
        for mode, value in cpu.seconds.items():
            seconds.add_metric([mode], value)
        yield seconds
        yield _gauge("load1", "1-minute load average.", cpu.load1)
        yield _gauge("load5", "5-minute load average.", cpu.load5)
        yield _gauge("load15", "15-minute load average.", cpu.load15)
        yield _counter("context_switches", "Context switches.", cpu.context_switches)
        yield _counter("interrupts", "Interrupts serviced.", cpu.interrupts)
        yield _counter("soft_interrupts", "Software interrupts serviced.", cpu.soft_interrupts)
        yield _gauge("memory_total_bytes", "Physical memory.", memory.total_bytes)
        yield _gauge("memory_available_bytes", "Memory available without swapping.",
                     memory.available_bytes)
        yield _gauge("memory_used_ratio", "Used share of memory (0..1).", memory.used_percent / 100)
        yield _gauge("memory_cached_bytes", "Page cache.", memory.cached_bytes)
        yield _gauge("memory_buffers_bytes", "Block device buffers.", memory.buffers_bytes)
        yield _gauge("swap_total_bytes", "Swap space.", memory.swap_total_bytes)
        yield _gauge("swap_used_bytes", "Swap in use.", memory.swap_used_bytes)
        yield _counter("swap_in_bytes", "Bytes swapped in.", memory.swap_in_bytes)
        yield _counter("swap_out_bytes", "Bytes swapped out.", memory.swap_out_bytes)
        yield _counter("page_faults", "Page faults, minor and major (pgfault).", memory.page_faults)
        yield _counter("major_page_faults", "Major page faults (pgmajfault).",
                       memory.major_page_faults)
        yield from _per_device(DISK_COUNTERS, sample.disks)
        in_flight = GaugeMetricFamily(PREFIX + "disk_io_now", "I/Os in flight.", labels=["device"])
        for disk in sample.disks:
            in_flight.add_metric([disk.device], disk.io_in_progress)
        yield in_flight
        yield from _per_device(NETWORK_COUNTERS, sample.networks)
        speed = GaugeMetricFamily(PREFIX + "network_speed_bytes", "Link speed, bytes per second "
                                  "(links whose driver reports one).", labels=["device"])
        for net in sample.networks:
            if net.speed_mbps:
                speed.add_metric([net.device], net.speed_mbps * 125_000)
        yield speed
        tcp = sample.tcp
        sockets = GaugeMetricFamily(PREFIX + "tcp_sockets", "TCP sockets by state (IPv4 and IPv6 "
                                    "for time_wait and orphaned; established from CurrEstab).",
                                    labels=["state"])
        for state, count in (("established", tcp.established), ("time_wait", tcp.time_wait),
                             ("orphaned", tcp.orphaned)):
            sockets.add_metric([state], count)
        yield sockets
        yield _gauge("tcp_sockets_in_use", "TCP sockets in use (IPv4 and IPv6).", tcp.in_use)
        yield _counter("tcp_received_segments", "TCP segments received.", tcp.received_segments)
        yield _counter("tcp_retransmitted_segments", "TCP segments retransmitted.",
                       tcp.retransmitted_segments)
        if sample.tcp_connect_seconds:
            connect = GaugeMetricFamily(PREFIX + "tcp_connect_seconds", "TCP connect time to a "
                                        "latency target (network latency).", labels=["target"])
            success = GaugeMetricFamily(PREFIX + "tcp_connect_success", "1 if the last connect to "
                                        "the target succeeded.", labels=["target"])
            for target, value in sample.tcp_connect_seconds.items():
                success.add_metric([target], 0 if value is None else 1)
                if value is not None:
                    connect.add_metric([target], value)
            yield connect
            yield success
        if sample.thermal_throttle_events is not None:
            yield _counter("thermal_throttle_events", "CPU thermal throttling events (core and "
                           "package).", sample.thermal_throttle_events)
        if self.summary is not None:
            yield _gauge("cpu_utilization_ratio", "Busy share of CPU time over the last "
                         "collection interval (0..1).", self.summary.cpu_utilization_percent / 100)
            if self.summary.network_bandwidth_percent is not None:
                yield _gauge("network_bandwidth_utilization_ratio", "Busier direction of the busiest "
                             "link over the last collection interval, share of its speed (0..1).",
                             self.summary.network_bandwidth_percent / 100)
        yield GaugeMetricFamily("kubetune_agent_collection_cpu_seconds", "CPU seconds the agent "
                                "spent on the last collection.", value=sample.collection_seconds)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _per_device(families: tuple[tuple[str, str, str], ...], samples: tuple) -> Iterator[Metric]:
    for name, documentation, attribute in families:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=["device"])
        for item in samples:
            family.add_metric([item.device], getattr(item, attribute))
        yield family


Route = Callable[[], tuple[int, str, bytes]]  # () -> (HTTP status, content type, body)


def serve_http(address: str, port: int, routes: Mapping[str, Route], name: str) -> HTTPServer:
    """A single-threaded HTTP server for ``routes`` (path -> handler) on a daemon thread. No shutdown
    is ever asked for (the thread dies with the process), so select() may sleep an hour between
    requests instead of waking every 0.5 s to check."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that stalls mid-request cannot hold the (single) server thread longer

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            status, content_type, body = route()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # a line per scrape or probe would be the loudest thing in the agent's log

    server_class = type("Server", (HTTPServer,), {"address_family": socket.AF_INET6}) \
        if ":" in address else HTTPServer
    server = server_class((address, port), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 3600}, daemon=True, name=name).start()
    return server


def serve_metrics(metrics: NodeMetrics, address: str, port: int) -> HTTPServer:
    """Serve ``metrics`` on http://address:port/metrics from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)

    def render() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    return serve_http(address, port, {"/metrics": render, "/": render}, "metrics")
