"""Agent settings from the environment, and the host filesystem's root confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_agent.errors import HostPathError, SettingsError
from kubetune_agent.hostfs import HostFS
from kubetune_agent.settings import AgentSettings

pytestmark = pytest.mark.unit


def test_defaults():
    settings = AgentSettings.from_env({})
    assert (settings.host_root, settings.journal_dir, settings.collection_interval_seconds) == (
        Path("/"), Path("/run/kubetune"), 10.0)


def test_daemonset_environment(tmp_path):
    settings = AgentSettings.from_env({
        "KUBETUNE_HOST_ROOT": str(tmp_path), "NODE_NAME": "node-1",
        "KUBETUNE_COLLECTION_INTERVAL_SECONDS": "2.5", "KUBETUNE_METRICS_PORT": "9100",
        "KUBETUNE_LATENCY_TARGETS": "10.0.0.1:443, [fd00::1]:53"})
    assert settings.host_root == tmp_path and settings.node_name == "node-1"
    assert settings.latency_targets == ("10.0.0.1:443", "[fd00::1]:53")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"KUBETUNE_HOST_ROOT": "relative"}, "KUBETUNE_HOST_ROOT"),
        ({"KUBETUNE_HOST_ROOT": "/does/not/exist"}, "KUBETUNE_HOST_ROOT"),
        ({"KUBETUNE_JOURNAL_DIR": "run/kubetune"}, "KUBETUNE_JOURNAL_DIR"),
        ({"KUBETUNE_COLLECTION_INTERVAL_SECONDS": "often"}, "KUBETUNE_COLLECTION_INTERVAL_SECONDS"),
        ({"KUBETUNE_COLLECTION_INTERVAL_SECONDS": "0"}, "KUBETUNE_COLLECTION_INTERVAL_SECONDS"),
        ({"KUBETUNE_METRICS_PORT": "70000"}, "KUBETUNE_METRICS_PORT"),
        ({"KUBETUNE_LATENCY_TARGETS": "10.0.0.1"}, "KUBETUNE_LATENCY_TARGETS"),
    ],
    ids=lambda v: str(v),
)
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        AgentSettings.from_env(env)


@pytest.mark.parametrize("path", ["/etc/passwd", "../etc/passwd", "sys/../../etc", "", "sys/block/../../x"])
def test_hostfs_refuses_paths_leaving_the_root(tmp_path, path):
    with pytest.raises(HostPathError):
        HostFS(tmp_path).path(path)


def test_hostfs_refuses_symlinks_leaving_the_root(tmp_path):
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "escape").symlink_to("/etc")
    with pytest.raises(HostPathError, match="outside the host root"):
        HostFS(tmp_path).read("sys/escape/hostname")
    (tmp_path / "sys" / "inside").write_text(" 42\n")
    assert HostFS(tmp_path).read("sys/inside") == "42"
