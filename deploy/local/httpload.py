#!/usr/bin/env python3
"""A bounded HTTP load generator for the tests: a fixed request rate from a fixed number of keep-alive
connections, with a hard stop at a duration and at a request count, whichever comes first.

    python deploy/local/httpload.py http://10.88.0.5:8080/ --rate 20 --concurrency 4 --duration 60 --requests 2000

It is open-loop: requests are due every 1/rate seconds whether or not earlier ones have answered. A
request due while all connections are busy waits for one (its latency counts from when it was due, so a
saturated service shows its queueing instead of hiding it) unless `concurrency` requests are already
waiting, when it is skipped and counted. Targets must be loopback or private addresses (a pod address
inside the harness network): this tool never sends traffic off the machine.

From Python: `run_load(LoadSpec(...))` blocks and returns a LoadResult; `LoadRun(spec)` runs it on a
thread (`with LoadRun(spec) as run: ...; result = run.result()`, or `run.stop()` to end it early).
Prints one JSON line (the LoadResult) with --json, else a short summary.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import threading
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadSpec:
    url: str
    rate: float = 10.0  # requests per second
    concurrency: int = 4  # connections, and the most requests waiting for one
    duration: float = 10.0  # seconds; a hard stop
    max_requests: int = 1000  # a hard stop: the most requests due (sent + skipped)
    timeout: float = 10.0  # seconds per request

    def __post_init__(self) -> None:
        if not (0 < self.rate <= 10_000 and 1 <= self.concurrency <= 256 and 0 < self.duration <= 86_400
                and 1 <= self.max_requests <= 10_000_000 and self.timeout > 0):
            raise ValueError(f"out of bounds: {self}")
        target(self.url)


@dataclass
class LoadResult:
    sent: int = 0
    completed: int = 0
    skipped: int = 0  # due while every connection was busy and `concurrency` requests already waited
    errors: int = 0  # connection failures and timeouts
    by_code: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, from due time to response

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (nearest rank) of completed requests' latency in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]

    def summary(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "latencies"}
        data["elapsed"] = round(self.elapsed, 3)
        data["rate"] = round(self.completed / self.elapsed, 2) if self.elapsed else 0.0
        for p in (50, 90, 95, 99):
            value = self.percentile(p)
            data[f"p{p}_ms"] = None if value is None else round(value * 1000, 1)
        return data


def target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL whose host is a loopback or private IP address (or localhost)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://<address>[:port]/path URLs are supported: {url}")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the target must be an IP address (no name resolution): {url}") from None
    if not (address.is_loopback or address.is_private) or address.is_unspecified:
        raise ValueError(f"the target must be loopback or a private address inside the test network: {url}")
    return host, parts.port or 80, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _request(connection: list, host: str, port: int, request: bytes, timeout: float) -> int:
    """One GET on a kept-alive connection (opened when missing); returns the status code."""
    if not connection:
        connection[:] = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    reader, writer = connection
    writer.write(request)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout)
    if not status_line:
        raise ConnectionError("connection closed")
    code = int(status_line.split()[1])
    length, close = 0, False
    while (line := await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "connection" and value.strip().lower() == "close":
            close = True
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout)
    if close:
        writer.close()
        connection.clear()
    return code


async def _run(spec: LoadSpec, stop: threading.Event) -> LoadResult:
    host, port, path = target(spec.url)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kubetune-httpload\r\n\r\n".encode()
    result = LoadResult()
    queue: asyncio.Queue[float] = asyncio.Queue(maxsize=spec.concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def worker() -> None:
        connection: list = []
        while True:
            due = await queue.get()
            try:
                code = await _request(connection, host, port, request, spec.timeout)
                result.by_code[str(code)] = result.by_code.get(str(code), 0) + 1
                result.latencies.append(loop.time() - due)
                result.completed += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                result.errors += 1
                if connection:
                    connection[1].close()
                    connection.clear()
            finally:
                queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
    interval, n = 1.0 / spec.rate, 0
    while n < spec.max_requests and not stop.is_set():
        due = start + n * interval
        if due - start >= spec.duration:
            break
        await asyncio.sleep(max(0.0, due - loop.time()))
        n += 1
        try:
            queue.put_nowait(due)
            result.sent += 1
        except asyncio.QueueFull:
            result.skipped += 1
    # Let what was sent finish, but never past the duration (plus one request timeout).
    deadline = start + spec.duration + spec.timeout
    try:
        await asyncio.wait_for(queue.join(), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        pass
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    result.errors += result.sent - result.completed - result.errors  # cut off at the hard stop
    result.elapsed = loop.time() - start
    return result


def run_load(spec: LoadSpec, stop: threading.Event | None = None) -> LoadResult:
    """Send the load and return what happened; `stop` (set from another thread) ends it early."""
    return asyncio.run(_run(spec, stop or threading.Event()))


class LoadRun:
    """run_load on a background thread: a context manager that stops the load on exit."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec, self._stop, self._result = spec, threading.Event(), None
        self._thread = threading.Thread(target=self._target, name="httpload", daemon=True)

    def _target(self) -> None:
        self._result = run_load(self.spec, self._stop)

    def start(self) -> LoadRun:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        return self.result()

    def result(self, timeout: float | None = None) -> LoadResult:
        """Wait for the load to end (duration or request count) and return its result."""
        self._thread.join(self.spec.duration + self.spec.timeout + 5 if timeout is None else timeout)
        if self._result is None:
            raise TimeoutError("the load did not end")
        return self._result

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="httpload.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections (default 4)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, a hard stop (default 10)")
    parser.add_argument("--requests", type=int, default=1000,
                        help="a hard stop: the most requests due, sent or skipped (default 1000)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    try:
        spec = LoadSpec(args.url, args.rate, args.concurrency, args.duration, args.requests, args.timeout)
    except ValueError as error:
        print(f"httpload: {error}", file=sys.stderr)
        return 2
    summary = run_load(spec).summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"httpload: {summary['completed']}/{summary['sent']} answered in {summary['elapsed']:.1f} s "
              f"({summary['rate']}/s), codes {summary['by_code']}, {summary['errors']} errors, "
              f"{summary['skipped']} skipped; p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, "
              f"p99 {summary['p99_ms']} ms")
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
