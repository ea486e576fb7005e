"""The operator's configuration: one settings class, read from the environment once at start-up.

A bad value fails start-up with the variable's name and the problem; nothing reads the environment
at import time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubetune.api.common import parse_duration

ENV_PREFIX = "KUBETUNE_"


class SettingsError(Exception):
    """A configuration value is wrong; the message names the environment variable."""


class OperatorSettings(BaseModel):
    """Every knob of the operator process. Environment variable = KUBETUNE_ + the upper-case name."""

    # The attribute docstrings become field descriptions, so `kubetune-operator --help` lists them.
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """The Prometheus HTTP API (Prometheus, Thanos Query, Mimir's Prometheus API)."""
    prometheus_bearer_token_file: Path | None = None
    """A file holding a bearer token for Prometheus (re-read on every query, so rotation works)."""
    prometheus_ca_file: Path | None = None
    """A CA bundle for an https Prometheus; unset = the system CAs."""
    prometheus_timeout: float = Field(default=10.0, gt=0)
    """Seconds before a Prometheus query is given up (the cycle then reports MetricsAvailable=False)."""
    rate_window: str = "1m"
    """The window of rate() over counters; at least 4 scrape intervals of your Prometheus."""
    query_step: str = "15s"
    """The resolution of subqueries for sustained conditions ("above 80 % for 5m")."""
    recommendation_window: str = "24h"
    """How far back usage is read for recommendations (percentiles of CPU, peak memory, OOM kills)."""
    recommendation_refresh: str = "5m"
    """How often the recommendation window's queries are re-run (they change slowly and cost the most)."""
    evaluation_concurrency: int = Field(default=8, ge=1, le=64)
    """Policies evaluated at once (their API calls and own queries overlap; each is one workload)."""
    tick: float = Field(default=5.0, gt=0)
    """The longest the loops wait between cycles: new policies are seen within it; the evaluation loop
    wakes sooner when a policy falls due (evaluation.start_by)."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = the whole cluster."""
    min_nice: int = Field(default=-10, ge=-20, le=19)
    """The lowest nice value a namespaced PerformancePolicy may ask for (the cluster admin's floor)."""
    history_limit: int = Field(default=10, ge=1, le=20)
    """How many past actions a policy's status keeps."""
    liveness_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the liveness endpoint (/healthz); 0 = off."""
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """Port of the operator's Prometheus /metrics; 0 = off."""
    leader_election: bool = True
    """Run the evaluation and node-tuning loops only in the replica holding the Lease (every replica
    keeps its indexes and serves the webhook). Off = this process always runs them (one replica)."""
    leader_election_namespace: str = ""
    """Namespace of the Lease; empty = the pod's own (POD_NAMESPACE, or the ServiceAccount's), else default."""
    leader_election_lease: str = "kubetune-operator"
    """Name of the Lease."""
    leader_election_identity: str = ""
    """This replica's name in the Lease; empty = POD_NAME (or the host name) plus a random suffix."""
    lease_duration: float = Field(default=15.0, gt=0)
    """Seconds a standby waits, with no renewal seen, before taking over."""
    renew_deadline: float = Field(default=10.0, gt=0)
    """Seconds the leader keeps leading without a successful renewal (shorter than lease_duration)."""
    retry_period: float = Field(default=2.0, gt=0)
    """Seconds between attempts to acquire or renew the Lease."""
    shards: int = Field(default=1, ge=1, le=64)
    """Shards of the namespaces, one Lease each; a replica evaluates the policies of the shards it
    holds (1 = one replica evaluates everything). See docs/scaling.md."""
    fair_share: int = Field(default=0, ge=0, le=64)
    """Shards a replica takes at once before leaving the rest to others for two lease durations
    (the chart sets ceil(shards / replicas)); 0 = no limit."""
    agent_node_selector: dict[str, str] = Field(default_factory=dict)
    """The node agent DaemonSet's nodeSelector, as key=value,key=value (the chart sets it from
    agent.nodeSelector): only nodes it selects get a NodeTuning, no agent would read one elsewhere."""
    webhook_port: int = Field(default=0, ge=0, le=65535)
    """Port of the mutating admission webhook (new pods get in-place resources); 0 = off."""
    webhook_host: str = "127.0.0.1"
    """The host the API server reaches the webhook at (a Service DNS name in the cluster)."""
    webhook_cert_file: Path | None = None
    """The webhook's serving certificate (PEM); the chart mounts it from its Secret."""
    webhook_key_file: Path | None = None
    """The webhook certificate's private key (PEM)."""

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(n.strip() for n in value.split(",") if n.strip()) if isinstance(value, str) else value

    @field_validator("agent_node_selector", mode="before")
    @classmethod
    def _key_value_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        bad = [p for p in pairs if p.count("=") != 1 or not p.split("=")[0].strip()]
        if bad:
            raise ValueError(f"expected key=value pairs separated by commas, got {', '.join(bad)}")
        return {k.strip(): v.strip() for k, v in (p.split("=") for p in pairs)}

    @field_validator("rate_window", "query_step", "recommendation_window", "recommendation_refresh")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    def duration(self, name: str) -> timedelta:
        return parse_duration(getattr(self, name))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = raw
        try:
            return cls(**values)
        except ValidationError as e:
            problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}"
                                 for err in e.errors())
            raise SettingsError(problems) from None

    def prometheus_headers(self) -> dict[str, str]:
        if not self.prometheus_bearer_token_file:
            return {}
        return {"Authorization": f"Bearer {self.prometheus_bearer_token_file.read_text().strip()}"}


def settings_help() -> str:
    """Every setting as `--help` shows it: environment variable, default, description."""
    lines = ["settings (environment variables; a bad value stops start-up naming the variable):"]
    for name, field in OperatorSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = (",".join(default) if isinstance(default, tuple) else
                 ",".join(f"{k}={v}" for k, v in default.items()) if isinstance(default, dict) else
                 "" if default is None else default)
        lines.append(f"  {ENV_PREFIX}{name.upper()} (default: {shown if shown != '' else 'unset'})")
        lines.append(f"      {' '.join((field.description or '').split())}")
    return "\n".join(lines)
