"""The node agent's settings: one frozen class, read from the environment once, at start-up.

Nothing here reads the environment at import time; ``AgentSettings.from_env()`` is called by
``main()`` and fails naming the variable that is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SettingsError

# Environment variable names, one place.
ENV_HOST_ROOT = "KUBETUNE_HOST_ROOT"
ENV_JOURNAL_DIR = "KUBETUNE_JOURNAL_DIR"
ENV_INTERVAL = "KUBETUNE_COLLECTION_INTERVAL_SECONDS"
ENV_METRICS_ADDRESS = "KUBETUNE_METRICS_ADDRESS"
ENV_METRICS_PORT = "KUBETUNE_METRICS_PORT"
ENV_LATENCY_TARGETS = "KUBETUNE_LATENCY_TARGETS"
ENV_NODE_NAME = "NODE_NAME"


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent is configured with.

    host_root: where the host's /proc and /sys are seen: ``/`` on a host or in tests on this
        machine, ``/host`` in the DaemonSet (hostPath mounts of /proc and /sys).
    journal_dir: on-host directory of the originals journal; a hostPath under /run so a reboot
        (which resets the kernel's values anyway) clears it.
    collection_interval_seconds: how often metrics are sampled and the plan is reconciled.
    latency_targets: ``host:port`` pairs whose TCP connect time is the network latency metric.
    node_name: the Node (and NodeTuning) this agent serves; required only by the watch loop.
    """

    host_root: Path = Path("/")
    journal_dir: Path = Path("/run/kubetune")
    collection_interval_seconds: float = 10.0
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9610
    latency_targets: tuple[str, ...] = field(default_factory=tuple)
    node_name: str = ""

    def __post_init__(self) -> None:
        if not self.host_root.is_absolute() or not self.host_root.is_dir():
            raise SettingsError(f"{ENV_HOST_ROOT}: {self.host_root} is not an absolute directory")
        if not self.journal_dir.is_absolute():
            raise SettingsError(f"{ENV_JOURNAL_DIR}: {self.journal_dir} is not an absolute path")
        if not 0.1 <= self.collection_interval_seconds <= 3600:
            raise SettingsError(
                f"{ENV_INTERVAL}: {self.collection_interval_seconds} is outside 0.1..3600 seconds"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"{ENV_METRICS_PORT}: {self.metrics_port} is outside 0..65535")
        for target in self.latency_targets:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"{ENV_LATENCY_TARGETS}: {target!r} is not host:port")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        """Build settings from ``env`` (default: ``os.environ``); missing variables keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if ENV_HOST_ROOT in env:
            values["host_root"] = Path(env[ENV_HOST_ROOT])
        if ENV_JOURNAL_DIR in env:
            values["journal_dir"] = Path(env[ENV_JOURNAL_DIR])
        if ENV_INTERVAL in env:
            values["collection_interval_seconds"] = _number(env, ENV_INTERVAL, float)
        if ENV_METRICS_ADDRESS in env:
            values["metrics_address"] = env[ENV_METRICS_ADDRESS]
        if ENV_METRICS_PORT in env:
            values["metrics_port"] = _number(env, ENV_METRICS_PORT, int)
        if env.get(ENV_LATENCY_TARGETS, "").strip():
            values["latency_targets"] = tuple(
                t.strip() for t in env[ENV_LATENCY_TARGETS].split(",") if t.strip()
            )
        if ENV_NODE_NAME in env:
            values["node_name"] = env[ENV_NODE_NAME]
        return cls(**values)  # type: ignore[arg-type]


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(env[name])
    except ValueError:
        raise SettingsError(f"{name}: {env[name]!r} is not a {kind.__name__}") from None
