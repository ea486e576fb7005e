"""`kubetune-operator` and `kubetune-agent` parse their arguments before anything starts: `--help`
lists every setting with its environment variable, `--version` prints one line, a bad argument is one
usage error; and the agent's /healthz and /readyz follow its cycles."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from kubetune.settings import ENV_PREFIX, OperatorSettings
from kubetune_agent import main as agent_main
from kubetune_agent.settings import AgentSettings

pytestmark = pytest.mark.unit

BIN = os.path.dirname(sys.executable)


def run(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # A KUBECONFIG naming a live-looking but unreachable cluster: were anything started, it would hang
    # or fail, not print help and exit 0 within the timeout.
    environ = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig", **(env or {})}
    return subprocess.run([os.path.join(BIN, program), *args], capture_output=True, text=True, timeout=60,
                          env=environ)


def test_operator_help_lists_every_setting_and_starts_nothing():
    result = run("kubetune-operator", "--help")
    assert result.returncode == 0 and result.stderr == ""
    for name in OperatorSettings.model_fields:
        assert f"{ENV_PREFIX}{name.upper()} (default:" in result.stdout
    assert "The Prometheus HTTP API" in result.stdout  # the descriptions come along


def test_agent_help_lists_every_setting_and_starts_nothing():
    result = run("kubetune-agent", "--help")
    assert result.returncode == 0 and result.stderr == ""
    listed = {name for _, name, _ in agent_main.SETTINGS_HELP}
    assert listed == {f.name for f in dataclasses.fields(AgentSettings)}
    for env, _, _ in agent_main.SETTINGS_HELP:
        assert f"{env} (default:" in result.stdout
    assert "KUBETUNE_HEALTH_PORT" in result.stdout


@pytest.mark.parametrize("program", ["kubetune-operator", "kubetune-agent"])
def test_version_is_one_line(program):
    result = run(program, "--version")
    assert result.returncode == 0
    assert result.stdout.strip().splitlines() == [f"{program} 0.1.0"]


@pytest.mark.parametrize("program", ["kubetune-operator", "kubetune-agent"])
def test_unknown_argument_is_a_usage_error(program):
    result = run(program, "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"{program}: error: unrecognized arguments")


def test_agent_bad_health_port_names_the_variable():
    result = run("kubetune-agent", env={"KUBETUNE_HEALTH_PORT": "lots"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "KUBETUNE_HEALTH_PORT" in result.stderr.strip().splitlines()[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_ready_after_first_cycle_and_dead_when_cycles_stop():
    clock = Clock()
    heartbeat = agent_main.Heartbeat(10, clock=clock)
    assert (heartbeat.ready(), heartbeat.alive()) == (False, True)  # starting up
    cycle = heartbeat.around(lambda plan: f"report of {plan}")
    clock.now += 5
    assert cycle("plan") == "report of plan"
    assert (heartbeat.ready(), heartbeat.alive()) == (True, True)
    clock.now += 3 * 10 + 30  # exactly the grace: still alive
    assert heartbeat.alive()
    clock.now += 1
    assert not heartbeat.alive() and heartbeat.ready()


def test_health_endpoints_answer_from_the_heartbeat():
    clock = Clock()
    heartbeat = agent_main.Heartbeat(10, clock=clock)
    server = agent_main.serve_health(heartbeat, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def status(path: str) -> int:
        try:
            return urllib.request.urlopen(base + path, timeout=5).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        assert (status("/readyz"), status("/healthz"), status("/other")) == (503, 200, 404)
        heartbeat.beat()
        assert status("/readyz") == 200
        clock.now += 100
        assert status("/healthz") == 503
    finally:
        server.server_close()  # no shutdown(): the thread sleeps in select() for an hour; it is a daemon
