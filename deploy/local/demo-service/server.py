"""kubetune's demo service: an HTTP server (Python standard library only) that burns a fixed amount of
CPU per request and exposes its latency the way most instrumented services do, so a PerformancePolicy
with `metrics.latency.histogram: http_request_duration_seconds` works on it unchanged.

    GET /            burn WORK_CPU_MS milliseconds of CPU (this thread's CPU time), answer 200
    GET /?cpu_ms=N   the same with N ms (at most 5000) for this request only
    GET /metrics     Prometheus text format: http_request_duration_seconds (histogram, seconds),
                     http_requests_total{code}, process_cpu_seconds_total
    GET /healthz     200, no work, not counted

The work is measured in CPU time, not iterations, so a request costs the same CPU on any machine and
its wall time grows only when the container is short of CPU (CFS throttling, contention): at a CPU
limit of L cores and R requests per second of C seconds each, the service needs R*C cores. Requests
run on threads sharing one interpreter lock, so one pod uses at most about one core.

Environment: PORT (8080), WORK_CPU_MS (20), ERROR_PERCENT (0: the share of requests answered 500,
spread evenly, for error-rate rules). SIGTERM stops the server at once (it may run as PID 1).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Fine enough between 50 ms and 500 ms for histogram_quantile to interpolate a p95 within ~25 ms there.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45,
           0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
MAX_CPU_MS = 5000.0


class Metrics:
    """The service's counters; one lock, as requests are served on many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bucket_counts = [0] * len(BUCKETS)  # per bucket, not cumulative
        self.duration_sum = 0.0
        self.count = 0
        self.by_code = {"200": 0, "500": 0}  # both present from the start: rate() of errors is 0, not absent

    def observe(self, seconds: float, code: int) -> None:
        with self.lock:
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1
                    break
            self.duration_sum += seconds
            self.count += 1
            self.by_code[str(code)] = self.by_code.get(str(code), 0) + 1

    def exposition(self) -> str:
        with self.lock:
            counts, total, count, by_code = list(self.bucket_counts), self.duration_sum, self.count, dict(self.by_code)
        lines = ["# HELP http_request_duration_seconds Time from reading a request to writing its response.",
                 "# TYPE http_request_duration_seconds histogram"]
        cumulative = 0
        for bound, n in zip(BUCKETS, counts):
            cumulative += n
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines += [f'http_request_duration_seconds_bucket{{le="+Inf"}} {count}',
                  f"http_request_duration_seconds_sum {total!r}",
                  f"http_request_duration_seconds_count {count}",
                  "# HELP http_requests_total Requests served, by HTTP status code.",
                  "# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{code="{code}"}} {n}' for code, n in sorted(by_code.items())]
        cpu = os.times()
        lines += ["# HELP process_cpu_seconds_total User and system CPU time of this process.",
                  "# TYPE process_cpu_seconds_total counter",
                  f"process_cpu_seconds_total {cpu.user + cpu.system!r}"]
        return "\n".join(lines) + "\n"


def burn_cpu(milliseconds: float) -> int:
    """Spin until this thread has used `milliseconds` of CPU time; returns a value so it is not optimised away."""
    deadline = time.thread_time() + milliseconds / 1000.0
    x = 0
    while time.thread_time() < deadline:
        for i in range(1000):  # ~0.1 ms between clock reads
            x = (x * 31 + i) & 0xFFFFFFFF
    return x


class ErrorSchedule:
    """Answers 500 to exactly `percent`% of requests, spread evenly (request n fails when floor(n*p/100) steps)."""

    def __init__(self, percent: float) -> None:
        self.percent, self.n, self.lock = percent, 0, threading.Lock()

    def next_fails(self) -> bool:
        with self.lock:
            self.n += 1
            return math.floor(self.n * self.percent / 100) > math.floor((self.n - 1) * self.percent / 100)


def make_handler(metrics: Metrics, work_cpu_ms: float, errors: ErrorSchedule) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: load generators reuse connections
        server_version = "kubetune-demo-service"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self.reply(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
                return
            if url.path == "/healthz":
                self.reply(200, "ok\n")
                return
            started = time.perf_counter()
            try:
                cpu_ms = min(float(parse_qs(url.query).get("cpu_ms", [work_cpu_ms])[0]), MAX_CPU_MS)
            except ValueError:
                self.reply(400, "cpu_ms must be a number\n")
                return
            burn_cpu(max(cpu_ms, 0.0))
            code = 500 if errors.next_fails() else 200
            self.reply(code, f"{'failed' if code == 500 else 'ok'} after {cpu_ms:g} ms of CPU\n")
            metrics.observe(time.perf_counter() - started, code)

        def reply(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
            pass  # one line per request would cost more than the work

    return Handler


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    work_cpu_ms = float(os.environ.get("WORK_CPU_MS", "20"))
    error_percent = float(os.environ.get("ERROR_PERCENT", "0"))
    server = ThreadingHTTPServer(("", port), make_handler(Metrics(), work_cpu_ms, ErrorSchedule(error_percent)))
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # as PID 1 the default action would be to ignore it
    print(f"demo-service: listening on :{port}, {work_cpu_ms:g} ms of CPU per request, "
          f"{error_percent:g}% errors", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
