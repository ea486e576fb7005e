"""`kubetune check` as a user runs it (a process) against the real API server and Prometheus: one
line per check, exit code 1 when one fails, `-o json`. With the chart installed, its ServiceAccounts'
permissions pass (test_helm's install test runs it too)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster

CHECKS = ["prometheus", "cadvisor", "recording rules", "node agents", "webhook", "operator permissions",
          "agent permissions", "policy metrics"]


def run_check(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubetune.cli", "check", "--kubeconfig", cluster.kubeconfig, *args],
                          capture_output=True, text=True, timeout=120, env=cluster.env)


def test_check_without_an_installation_fails_with_one_line_per_check(cluster, crds, prometheus, namespace):
    done = run_check(cluster, "--prometheus-url", prometheus.url, "--namespace", namespace)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert [line[2:].split(":")[0] for line in lines] == CHECKS
    verdicts = {line[2:].split(":")[0]: line for line in lines}
    assert verdicts["prometheus"].startswith(f"✓ prometheus: answers at {prometheus.url}")
    assert verdicts["webhook"].startswith("✓")  # not installed is not a failure
    assert verdicts["operator permissions"].startswith(f"✗ operator permissions: no operator ServiceAccount in "
                                                       f"namespace {namespace} — fix: ")


def test_check_json_and_an_unreachable_prometheus(cluster, crds, namespace):
    done = run_check(cluster, "--prometheus-url", "http://127.0.0.1:1", "--namespace", namespace, "-o", "json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and [c["name"] for c in report["checks"]] == CHECKS
    prometheus = report["checks"][0]
    assert not prometheus["ok"] and "cannot connect to http://127.0.0.1:1" in prometheus["message"] and prometheus["fix"]
