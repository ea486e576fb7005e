"""Agent vs prometheus-node-exporter: CPU time per collection cycle and RSS, side by side.

    python -m pytest tests/bench/bench_agent.py -m bench -s

Both run as separate processes on this machine. The agent (``kubetune-agent --metrics-only``)
collects every interval on its own and is scraped once per interval; node_exporter (Debian's
build, default collectors) collects on each scrape and is scraped at the same interval. CPU time is
utime + stime from /proc/<pid>/stat between the first scrape (start-up and imports excluded) and
the last; RSS is VmRSS at the end (VmHWM, the peak, printed too). Defaults: 10 s interval,
6 cycles (about a minute). KUBETUNE_BENCH_INTERVAL and KUBETUNE_BENCH_CYCLES shorten it; a shorter
interval stays fair because both sides do one collection per interval. utime and stime count clock
ticks (10 ms), so a per-cycle figure is only as fine as 10 ms / cycles: the resolution is printed.

``test_agent_cycle_profile`` profiles the agent in-process: CPU time per collection and per render
of /metrics, then cProfile's top functions over 200 of each (where the time goes).
Prints figures; never asserts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def scrape(port: int, deadline: float = 15.0) -> int:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return len(response.read().splitlines())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_agent_against_node_exporter(tmp_path):
    if not os.path.exists(NODE_EXPORTER):
        pytest.skip(f"{NODE_EXPORTER} is not installed (apt-get install prometheus-node-exporter)")
    interval = float(os.environ.get("KUBETUNE_BENCH_INTERVAL", "10"))
    cycles = int(os.environ.get("KUBETUNE_BENCH_CYCLES", "6"))
    agent_port, exporter_port = free_port(), free_port()
    agent_cmd = [shutil.which("kubetune-agent") or str(Path(sys.executable).with_name("kubetune-agent")),
                 "--metrics-only"]
    env = {**os.environ, "KUBETUNE_METRICS_ADDRESS": "127.0.0.1", "KUBETUNE_METRICS_PORT": str(agent_port),
           "KUBETUNE_COLLECTION_INTERVAL_SECONDS": str(interval), "KUBETUNE_JOURNAL_DIR": str(tmp_path)}
    agent = subprocess.Popen(agent_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exporter = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        series = {"agent": scrape(agent_port), "node_exporter": scrape(exporter_port)}
        start = {"agent": cpu_seconds(agent.pid), "node_exporter": cpu_seconds(exporter.pid)}
        for _ in range(cycles):
            time.sleep(interval)
            scrape(agent_port)
            scrape(exporter_port)
        per_cycle = {name: (cpu_seconds(p.pid) - start[name]) / cycles
                     for name, p in (("agent", agent), ("node_exporter", exporter))}
        rss = {name: memory_kib(p.pid, "VmRSS") / 1024 for name, p in (("agent", agent), ("node_exporter", exporter))}
        peak = {name: memory_kib(p.pid, "VmHWM") / 1024 for name, p in (("agent", agent), ("node_exporter", exporter))}
    finally:
        for process in (agent, exporter):
            process.terminate()
            process.wait(timeout=10)
    print(f"\n{cycles} cycles at {interval:g} s; series per scrape: agent {series['agent']}, "
          f"node_exporter {series['node_exporter']}; CPU resolution {1000 / TICKS / cycles:.1f} ms/cycle")
    print(f"{'':15}{'CPU ms/cycle':>14}{'RSS MiB':>10}{'peak MiB':>10}")
    for name in ("agent", "node_exporter"):
        print(f"{name:15}{per_cycle[name] * 1000:>14.1f}{rss[name]:>10.1f}{peak[name]:>10.1f}")
    ratio = per_cycle["agent"] / per_cycle["node_exporter"] if per_cycle["node_exporter"] else float("nan")
    print(f"agent / node_exporter: CPU {ratio:.2f}x (target <= 1.00), RSS "
          f"{rss['agent'] / rss['node_exporter']:.2f}x; agent RSS {rss['agent']:.1f} MiB (target <= 40)")


def test_agent_cycle_profile(tmp_path):
    import cProfile
    import pstats

    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from kubetune_agent.main import build_agent
    from kubetune_agent.settings import AgentSettings

    agent, metrics = build_agent(AgentSettings(journal_dir=tmp_path))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    agent.cycle(None)
    rounds = 200
    started = time.process_time()
    for _ in range(rounds):
        agent.cycle(None)
    cycle = (time.process_time() - started) / rounds
    started = time.process_time()
    for _ in range(rounds):
        generate_latest(registry)
    render = (time.process_time() - started) / rounds
    print(f"\nin-process, {rounds} rounds: collection {cycle * 1000:.2f} ms, /metrics render {render * 1000:.2f} ms")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(rounds):
        agent.cycle(None)
        generate_latest(registry)
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(20)
