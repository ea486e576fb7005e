"""``kubetune-agent``: the node agent process. Kubernetes wiring only; the work is in ``agent``.

Every interval (and as soon as the NodeTuning changes) it samples the host, reconciles the plan of
the NodeTuning named ``NODE_NAME`` and writes that object's status; condition changes, each warning
level crossed or cleared and each critical breach's investigation become Events on the Node and on
the NodeTuning. Without a NodeTuning (the operator has not created it yet, or is not installed) the
default thresholds are still watched and reported as Node Events. The network latency probe's
default target is the API server endpoint this process talks to. RBAC: get/list/watch nodetunings,
patch nodetunings/status, create events, get and list pods (container names to container IDs for
process tuning; pod UIDs to names in an investigation; without them a whole pod is tuned and a UID
is named).

    kubetune-agent                 # in the DaemonSet
    kubetune-agent --metrics-only  # collect and serve /metrics, no Kubernetes, no writes
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from kubetune.kube import MERGE, ApiError, Gone, KubeError, event_body, load_api_client, send

from .agent import CycleReport, NodeAgent
from .collectors import NodeCollector, block_devices
from .errors import AgentError, SettingsError
from .executor import KnobExecutor
from .exporter import NodeMetrics, serve_http, serve_metrics
from .hostfs import HostFS
from .journal import Journal
from .podusage import PodUsageReader
from .process import ProcessTuner, normalise_container_id
from .settings import AgentSettings

log = logging.getLogger("kubetune_agent")


def build_agent(settings: AgentSettings) -> tuple[NodeAgent, NodeMetrics]:
    fs = HostFS(settings.host_root)
    # lock=True: one agent process per node acts on the journal; a second one (a rolling update)
    # stands by until the first exits. Taken at the first cycle with a plan (never by --metrics-only).
    journal = Journal(settings.journal_dir, lock=True)
    metrics = NodeMetrics()
    agent = NodeAgent(NodeCollector(fs, settings.latency_targets), KnobExecutor(fs, journal),
                      ProcessTuner(fs, journal), metrics, PodUsageReader(fs))
    return agent, metrics


def run_metrics_only(settings: AgentSettings, agent: NodeAgent) -> None:
    while True:
        started = time.monotonic()
        agent.cycle(None)
        time.sleep(max(0.0, settings.collection_interval_seconds - (time.monotonic() - started)))


def api_endpoint(url: str) -> str | None:
    """``host:port`` of an API server URL (``https://10.96.0.1:443`` -> ``10.96.0.1:443``)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _plan_version(obj: dict | None) -> tuple[str, int] | None:
    """Which plan an object holds: its UID and spec generation (status writes leave both alone)."""
    if obj is None:
        return None
    meta = obj.get("metadata", {})
    return meta.get("uid", ""), meta.get("generation", 0)


class NodeTuningWatch:
    """Watches one NodeTuning, applies it each interval, writes its status and Node Events."""

    def __init__(self, settings: AgentSettings, agent: NodeAgent) -> None:
        from kubetune import constants

        self.settings, self.agent = settings, agent
        self.api = load_api_client()
        self.path = f"/apis/{constants.GROUP}/{constants.VERSION}/{constants.NODE_TUNING.plural}"
        self.api_version = constants.API_VERSION
        self.obj: dict | None = None
        self.known = False  # whether the API server has told us the object's state yet
        self.standby: str | None = None  # why this process only samples (another holds the journal)
        if not agent.collector.latency_targets:
            # The default latency probe: the API endpoint this agent already depends on, so it
            # exists on every cluster and every node must reach it.
            endpoint = api_endpoint(self.api.server)
            agent.collector.latency_targets = (endpoint,) if endpoint else ()
        log.info("network latency targets: %s", ", ".join(agent.collector.latency_targets) or "none")

    def _send(self, what: str, method: str, path: str, body: dict | None = None, **kwargs) -> Any:
        return send(self.api, what, method, path, body, **kwargs)

    def run(self) -> None:
        name = self.settings.node_name
        interval = max(1, int(self.settings.collection_interval_seconds))
        while True:
            try:
                self.refresh()
                self.tick()
                # The watch's server-side timeout is the collection interval: each return is a tick.
                events = self.api.watch(self.path, {"fieldSelector": f"metadata.name={name}", "timeoutSeconds": interval},
                                        timeout=(30, interval + 30))
                with closing(events):  # its connection, also when a tick raises mid-watch
                    for event in events:
                        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                            continue
                        before = _plan_version(self.obj)
                        self.obj = None if event["type"] == "DELETED" else event["object"]
                        self.known = True
                        # Only a new plan (or a created or deleted object) is worth a cycle now: our own
                        # status patch comes back as MODIFIED too, and reacting to it would loop.
                        if _plan_version(self.obj) != before:
                            self.tick()
            except (KubeError, ApiError, Gone, requests.RequestException) as error:
                log.warning("API server: %s; sampling only until it answers", error)
                self.known = False
                self.agent.cycle(None)
                time.sleep(self.settings.collection_interval_seconds)

    def refresh(self) -> None:
        try:
            self.obj = self._send(f"get NodeTuning {self.settings.node_name}", "GET",
                                  f"{self.path}/{self.settings.node_name}")
        except KubeError as error:
            if error.status != 404:
                raise
            self.obj = None  # no NodeTuning: the plan is empty, journaled originals go back
        self.known = True

    def tick(self) -> None:
        from . import contract

        if not self.known:
            self.agent.cycle(None)
            return
        plan = contract.plan_from_node_tuning(self.obj, self.container_ids()) if self.obj else \
            contract.default_plan()
        report = self.agent.cycle(plan)
        if report.standby:
            # The other agent process writes the status; a second writer would make it flap.
            if report.standby != self.standby:
                log.info("%s", report.standby)
            self.standby = report.standby
            return
        if self.standby:
            log.info("journal lock taken: this agent now tunes the node")
            self.standby = None
        if self.obj is not None:
            self.write_status(report)
        else:
            # No NodeTuning to write to: the default thresholds still speak on the Node.
            for event in self.events(report):
                self.post_event(event.reason, event.message, event.warning, nodetuning=False)

    def container_ids(self) -> dict[tuple[str, str], str]:
        ids = {}
        for entry in (self.obj or {}).get("spec", {}).get("processes", []):
            try:
                pod = self._send(f"get pod {entry['namespace']}/{entry['podName']}", "GET",
                                 f"/api/v1/namespaces/{entry['namespace']}/pods/{entry['podName']}")
            except KubeError:
                continue
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status.get("containerID") and status.get("name") == entry["containerName"]:
                    ids[(entry["podUID"], status["name"])] = normalise_container_id(status["containerID"])
        return ids

    def write_status(self, report: CycleReport) -> None:
        from kubetune.api import NodeTuning

        from . import contract

        current = NodeTuning.model_validate(self.obj)
        status = contract.status_from_report(report, current.generation, current.status,
                                             block_devices(self.agent.collector.fs), datetime.now(UTC),
                                             self.settings.collection_interval_seconds)
        # Before the patch: the cycle's transitions are not seen again if the patch fails.
        for event in self.events(report):
            self.post_event(event.reason, event.message, event.warning)
        self._send(f"patch status of NodeTuning {self.settings.node_name}", "PATCH",
                   f"{self.path}/{self.settings.node_name}/status", {"status": status.to_dict()}, content_type=MERGE)
        before = {c.type: c.status for c in (current.status.conditions if current.status else ())}
        for condition in status.conditions:
            # Warning has an Event per threshold transition above, naming the metric.
            if condition.type != contract.WARNING and before.get(condition.type) != condition.status:
                self.post_event(condition.reason, f"{condition.type}: {condition.message}",
                                warning=condition.type == "Degraded" and condition.status.value == "True")

    def events(self, report: CycleReport) -> list:
        from . import contract

        warnings = [contract.ThresholdEvent(e.reason, f"{contract.WARNING}: {e.message}", e.warning)
                    for e in contract.threshold_events(report)]
        names = self.pod_names() if report.investigations else {}
        return warnings + contract.investigation_events(report, names)

    def pod_names(self) -> dict[str, str]:
        """Pod UID -> namespace/name for the pods on this node (to name them in an investigation)."""
        try:
            pods = self._send(f"list pods on {self.settings.node_name}", "GET", "/api/v1/pods",
                              params={"fieldSelector": f"spec.nodeName={self.settings.node_name}"})["items"]
        except KubeError as error:
            log.warning("pods on %s not listed (%s): the investigation names pod UIDs", self.settings.node_name, error)
            return {}
        return {p["metadata"]["uid"]: f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods}

    def post_event(self, reason: str, message: str, warning: bool, nodetuning: bool = True) -> None:
        """The Event on the Node and (when it exists) on the NodeTuning, so both `kubectl describe
        node` and `kubectl describe nt` tell the story."""
        node = self.settings.node_name
        log.info("event %s on %s: %s", reason, node, message)
        targets = [{"kind": "Node", "name": node, "apiVersion": "v1", "uid": node}]
        meta = (self.obj or {}).get("metadata", {})
        if nodetuning and meta.get("uid"):
            targets.append({"kind": "NodeTuning", "name": node, "uid": meta["uid"], "apiVersion": self.api_version})
        now = datetime.now(UTC)
        for involved in targets:
            body = event_body(involved, "Warning" if warning else "Normal", reason, message, component="kubetune-agent",
                              host=node, name_prefix=f"{node}.kubetune-", now=now)
            try:
                self._send(f"post Event {reason}", "POST", "/api/v1/namespaces/default/events", body)
            except KubeError as error:
                log.warning("event on %s %s not recorded: %s", involved["kind"], node, error)


# Every setting, as `--help` lists it: (environment variable, AgentSettings field, what it is).
SETTINGS_HELP = (
    ("KUBETUNE_HOST_ROOT", "host_root", "where the host's /proc and /sys are seen (/host in the DaemonSet)"),
    ("KUBETUNE_JOURNAL_DIR", "journal_dir", "on-host journal of original values (a hostPath under /run)"),
    ("KUBETUNE_COLLECTION_INTERVAL_SECONDS", "collection_interval_seconds",
     "seconds between samples and reconciliations (0.1..3600)"),
    ("KUBETUNE_METRICS_ADDRESS", "metrics_address", "address of /metrics"),
    ("KUBETUNE_METRICS_PORT", "metrics_port", "port of /metrics"),
    ("KUBETUNE_LATENCY_TARGETS", "latency_targets",
     "comma-separated host:port pairs whose TCP connect time is the latency metric; unset = the API server"),
    ("NODE_NAME", "node_name", "the Node and NodeTuning this agent serves (required unless --metrics-only)"),
)
ENV_HEALTH_PORT = "KUBETUNE_HEALTH_PORT"
# Off unless asked for (the chart sets 9611): several agents on one machine (tests, the demo) must not collide.
DEFAULT_HEALTH_PORT = 0


def settings_help() -> str:
    defaults = AgentSettings.__dataclass_fields__
    lines = ["settings (environment variables; a bad value stops start-up naming the variable):"]
    for env, name, text in SETTINGS_HELP:
        field_ = defaults[name]
        default = field_.default_factory() if callable(field_.default_factory) else field_.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        lines += [f"  {env} (default: {shown or 'unset'})", f"      {text}"]
    lines += [f"  {ENV_HEALTH_PORT} (default: {DEFAULT_HEALTH_PORT})",
              "      port of /healthz and /readyz (the same as --health-port; 0 = off; the chart sets 9611)"]
    return "\n".join(lines)


class Heartbeat:
    """When the agent last finished a cycle. Ready after the first; alive while cycles keep coming
    (a loop stuck for three intervals plus a grace is restarted by the liveness probe)."""

    def __init__(self, interval_seconds: float, clock=time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.last: float | None = None
        self.stale_after = 3 * interval_seconds + 30

    def beat(self) -> None:
        self.last = self.clock()

    def ready(self) -> bool:
        return self.last is not None

    def alive(self) -> bool:
        return self.clock() - (self.started if self.last is None else self.last) <= self.stale_after

    def around(self, cycle):
        def beating(*args, **kwargs):
            report = cycle(*args, **kwargs)
            self.beat()
            return report
        return beating


def serve_health(heartbeat: Heartbeat, address: str, port: int):
    """/healthz (liveness) and /readyz (readiness) from a daemon thread: 200 or 503."""

    def answer(check) -> tuple[int, str, bytes]:
        ok = check()
        return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"no cycle finished in time\n"

    return serve_http(address, port, {"/healthz": lambda: answer(heartbeat.alive),
                                      "/readyz": lambda: answer(heartbeat.ready)}, "health")


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port 0..65535 ({ENV_HEALTH_PORT} or --health-port)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    import os

    from kubetune import __version__  # one distribution, one version

    parser = argparse.ArgumentParser(
        prog="kubetune-agent", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=settings_help(),
        description="The kubetune node agent: samples the host, applies the NodeTuning named NODE_NAME within "
                    "its allow-listed knobs (originals journaled) and reports in its status and on /metrics.")
    parser.add_argument("--version", action="version", version=f"kubetune-agent {__version__}")
    parser.add_argument("--metrics-only", action="store_true",
                        help="collect and serve /metrics only: no Kubernetes, no host writes")
    # A string default goes through `type` too, so a bad KUBETUNE_HEALTH_PORT is a usage error naming it.
    parser.add_argument("--health-port", type=_port, metavar="PORT",
                        default=os.environ.get(ENV_HEALTH_PORT, str(DEFAULT_HEALTH_PORT)),
                        help=f"port of /healthz and /readyz (default {DEFAULT_HEALTH_PORT}, {ENV_HEALTH_PORT}; 0 = off)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Parsed before anything else: `--help` must never touch the host or a cluster.
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = AgentSettings.from_env()
        if not args.metrics_only and not settings.node_name:
            raise SettingsError("NODE_NAME: required (the Node and NodeTuning this agent serves)")
        psutil.PROCFS_PATH = str(settings.host_root / "proc")  # the host's /proc (hostPID)
        agent, metrics = build_agent(settings)
        serve_metrics(metrics, settings.metrics_address, settings.metrics_port)
        heartbeat = Heartbeat(settings.collection_interval_seconds)
        # Every loop (watch or metrics-only) calls agent.cycle: wrapping it here beats for all of them.
        agent.cycle = heartbeat.around(agent.cycle)  # type: ignore[method-assign]
        if args.health_port:
            serve_health(heartbeat, settings.metrics_address, args.health_port)
    except AgentError as error:
        print(f"kubetune-agent: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a port already taken
        print(f"kubetune-agent: cannot listen: {error}", file=sys.stderr)
        return 2
    log.info("kubetune-agent: host root %s, journal %s, every %ss, metrics on :%s, health on :%s",
             settings.host_root, settings.journal_dir, settings.collection_interval_seconds,
             settings.metrics_port, args.health_port)
    if args.metrics_only:
        run_metrics_only(settings, agent)
    else:
        NodeTuningWatch(settings, agent).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
