"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics, so that of several
operator replicas only one runs the evaluation and node-tuning loops. Every replica keeps its indexes
warm and serves the admission webhook; the standby takes over within the lease duration.

As in client-go's leaderelection: a candidate takes the Lease only when the record has not changed for
`lease_duration` as measured on its own clock (so clock skew between nodes does not matter, only skew
rate); the holder renews every `retry_period` and stops leading when it could not renew for
`renew_deadline`, which is shorter than `lease_duration`, so the old leader has stopped before a new one
can start. Updates carry the resourceVersion: of two candidates racing for an expired Lease, the API
server lets exactly one win. Like client-go, this is not fencing: an action already in flight when a
leader stalls can still land; kubetune's actions are idempotent and recorded before they are made,
which is what makes that harmless.

Why not the Python client's `kubernetes.leaderelection`: it locks a ConfigMap (no Lease lock), runs in
threads, and stops electing once leadership is lost; the operator needs to rejoin the election.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Mapping

from kubetune.kube import Kube, KubeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionTiming:
    lease_duration: float = 15.0  # a candidate waits this long without a change before taking over
    renew_deadline: float = 10.0  # the leader stops leading after failing to renew for this long
    retry_period: float = 2.0  # how often candidates try and the leader renews

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says, as read from the API server."""

    holder: str
    renew_time: str  # as written; compared for change only, never against our clock
    transitions: int
    resource_version: str

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(spec.get("holderIdentity") or "", str(spec.get("renewTime") or ""),
                   int(spec.get("leaseTransitions") or 0), lease["metadata"].get("resourceVersion", ""))


class Step(str, Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours
    TAKE_OVER = "take-over"  # free, or its holder stopped renewing
    WAIT = "wait"  # someone else holds it


def next_step(record: LeaseRecord | None, identity: str, unchanged_for: float, timing: ElectionTiming) -> Step:
    """What a candidate does with the Lease it just read. `unchanged_for`: seconds, on our clock, since
    the record last changed (its renewTime moves on every renewal)."""
    if record is None:
        return Step.CREATE
    if record.holder == identity:
        return Step.RENEW
    if not record.holder or unchanged_for >= timing.lease_duration:
        return Step.TAKE_OVER
    return Step.WAIT


_UNREAD = object()


def _micro_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, timing: ElectionTiming = ElectionTiming(),
                 clock: Callable[[], float] = time.monotonic, on_change: Callable[[bool], None] = lambda leading: None,
                 may_acquire: Callable[[float], bool] = lambda free_for: True):
        """`may_acquire(free_for)`: whether to create or take over a Lease that has been free (or
        unrenewed) for `free_for` seconds; sharding uses it to spread shards over replicas."""
        self.kube, self.namespace, self.name, self.identity, self.timing = kube, namespace, name, identity, timing
        self.clock, self.on_change, self.may_acquire = clock, on_change, may_acquire
        self._seen: LeaseRecord | None | object = _UNREAD  # the first read always counts as a change
        self._seen_at = float("-inf")
        self._renewed_at = float("-inf")
        self._was_leading = False

    @property
    def leading(self) -> bool:
        """True while the Lease is ours and was renewed within the renew deadline."""
        return self.clock() - self._renewed_at < self.timing.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease and create, renew, take over or wait. Returns whether we lead."""
        now = self.clock()
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
        except KubeError as e:
            log.warning("leader election: reading Lease %s/%s failed: %s", self.namespace, self.name, e)
            return self._settle()
        record = LeaseRecord.from_lease(lease) if lease else None
        if record != self._seen:
            self._seen, self._seen_at = record, now
        step = next_step(record, self.identity, now - self._seen_at, self.timing)
        if step in (Step.CREATE, Step.TAKE_OVER) and not self.may_acquire(now - self._seen_at):
            step = Step.WAIT
        if step is not Step.WAIT:
            spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.timing.lease_duration),
                    "renewTime": _micro_time()}
            if step is not Step.RENEW:
                spec |= {"acquireTime": spec["renewTime"],
                         "leaseTransitions": (record.transitions + 1) if record else 0}
            try:
                if step is Step.CREATE:
                    self.kube.create_lease(self.namespace, self.name, spec)
                else:
                    self.kube.update_lease(self.namespace, self.name, spec, record.resource_version)
                self._renewed_at = now
            except KubeError as e:  # 409: another candidate won the race, or the holder renewed
                if e.status != 409:
                    log.warning("leader election: %s of Lease %s/%s failed: %s", step.value, self.namespace,
                                self.name, e)
        return self._settle()

    def _settle(self) -> bool:
        leading = self.leading
        if leading != self._was_leading:
            self._was_leading = leading
            log.info("leader election: %s Lease %s/%s as %s", "acquired" if leading else "lost", self.namespace,
                     self.name, self.identity)
            self.on_change(leading)
        return leading

    def release(self) -> None:
        """On a clean shutdown: hand the Lease back at once instead of making the next leader wait."""
        if not self.leading:
            return
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            record = LeaseRecord.from_lease(lease) if lease else None
            if record and record.holder == self.identity:
                self.kube.update_lease(self.namespace, self.name, {"holderIdentity": "", "leaseDurationSeconds": 1,
                                                                   "renewTime": _micro_time()}, record.resource_version)
        except KubeError as e:
            log.warning("leader election: releasing Lease %s/%s failed: %s", self.namespace, self.name, e)
        self._renewed_at = float("-inf")
        self._settle()

def shard_of(namespace: str, shards: int) -> int:
    """A namespace's shard: FNV-1a of its name, stable across processes and versions (Python's own
    hash() is salted per process)."""
    h = 0x811C9DC5
    for byte in namespace.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % shards


class ShardedLeadership:
    """One Lease per shard of the namespaces; a replica evaluates the policies of the shards it holds.
    With one shard this is plain leader election on one Lease named `name`.

    Spreading: a replica holding `fair_share` shards (the chart sets ceil(shards / replicas)) takes a
    free shard only once it has stayed free for two lease durations — long enough for a replica below
    its share to take it, short enough that the shards of a replica that died are always picked up."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, timing: ElectionTiming = ElectionTiming(),
                 *, shards: int = 1, fair_share: int = 0, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[int], None] = lambda held: None):
        self.shards, self.fair_share, self.timing, self.on_change = shards, fair_share, timing, on_change
        names = [name] if shards == 1 else [f"{name}-shard-{i}" for i in range(shards)]
        self.electors = [LeaderElector(kube, namespace, lease, identity, timing, clock, may_acquire=self._may_acquire)
                         for lease in names]
        # Replicas start their round at different shards, so they do not all race for the same ones.
        self._first = shard_of(identity, shards)
        self._held = 0

    def _may_acquire(self, free_for: float) -> bool:
        held = sum(e.leading for e in self.electors)
        return not self.fair_share or held < self.fair_share or free_for >= 2 * self.timing.lease_duration

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(i for i, e in enumerate(self.electors) if e.leading)

    @property
    def leading(self) -> bool:
        """Whether this replica holds any shard (its evaluation loop runs)."""
        return bool(self.owned)

    @property
    def leads_nodes(self) -> bool:
        """Node tuning is cluster-wide work for one replica: the holder of shard 0."""
        return self.electors[0].leading

    def owns(self, namespace: str) -> bool:
        return shard_of(namespace, self.shards) in self.owned

    def try_all(self) -> frozenset[int]:
        order = self.electors[self._first:] + self.electors[:self._first]
        for elector in order:
            elector.try_acquire_or_renew()
        owned = self.owned
        if len(owned) != self._held:
            self._held = len(owned)
            self.on_change(self._held)
        return owned

    def release(self) -> None:
        for elector in self.electors:
            elector.release()

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.try_all)
            # Jitter keeps candidates that started together from colliding every round.
            await asyncio.sleep(self.timing.retry_period * random.uniform(0.8, 1.0))


class AlwaysLeading:
    """Leader election switched off (one replica): the loops always run, over every namespace."""

    leading = True
    leads_nodes = True

    @staticmethod
    def owns(namespace: str) -> bool:
        return True
