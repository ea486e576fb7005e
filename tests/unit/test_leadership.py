"""Leader election: the pure step table, and two electors sharing an in-memory Lease that behaves as
the API server does (resourceVersion preconditions, 409 on a lost race), on a fake clock. The cluster
tier runs two real operator processes against a real Lease (tests/cluster/test_leader_election.py)."""

from __future__ import annotations

import copy

import pytest

from kubetune.kube import KubeError
from kubetune.leadership import ElectionTiming, LeaderElector, LeaseRecord, ShardedLeadership, Step, next_step, shard_of

pytestmark = pytest.mark.unit

TIMING = ElectionTiming(lease_duration=15, renew_deadline=10, retry_period=2)


def record(holder: str) -> LeaseRecord:
    return LeaseRecord(holder, "2026-11-29T12:00:00.000000Z", 0, "1")


@pytest.mark.parametrize("lease,unchanged_for,step", [
    (None, 0, Step.CREATE),
    (record("me"), 100, Step.RENEW),
    (record("other"), 5, Step.WAIT),
    (record("other"), 14.9, Step.WAIT),
    (record("other"), 15, Step.TAKE_OVER),  # its holder stopped renewing a lease duration ago
    (record(""), 0, Step.TAKE_OVER),  # released on a clean shutdown
], ids=["no-lease", "mine", "held", "held-almost-expired", "expired", "released"])
def test_next_step(lease, unchanged_for, step):
    assert next_step(lease, "me", unchanged_for, TIMING) is step


def test_timing_must_leave_the_old_leader_time_to_stop():
    with pytest.raises(ValueError):
        ElectionTiming(lease_duration=10, renew_deadline=10, retry_period=2)


class LeaseStore:
    """One Lease as the API server keeps it."""

    def __init__(self):
        self.lease = None
        self.version = 0
        self.down = False

    def get_lease(self, namespace, name):
        if self.down:
            raise KubeError("connection refused")
        return copy.deepcopy(self.lease)

    def create_lease(self, namespace, name, spec):
        if self.lease is not None:
            raise KubeError("already exists", 409)
        self._write(dict(spec))

    def update_lease(self, namespace, name, spec, resource_version):
        if self.down:
            raise KubeError("connection refused")
        if self.lease["metadata"]["resourceVersion"] != resource_version:
            raise KubeError("the object has been modified", 409)
        self._write({**self.lease["spec"], **spec})

    def _write(self, spec):
        self.version += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": spec}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def electors(store, clock):
    return [LeaderElector(store, "kubetune", "kubetune-operator", name, TIMING, clock=clock) for name in ("a", "b")]


def rounds(clock, electors_, seconds, alive=("a", "b")):
    """Every live elector tries once per retry period for `seconds`; returns who led at each round."""
    leaders = []
    for _ in range(int(seconds / TIMING.retry_period)):
        for e in electors_:
            if e.identity in alive:
                e.try_acquire_or_renew()
        leaders.append({e.identity for e in electors_ if e.identity in alive and e.leading})
        clock.now += TIMING.retry_period
    return leaders


def test_exactly_one_leads_and_keeps_leading():
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert rounds(clock, [a, b], 60) == [{"a"}] * 30
    assert store.lease["spec"]["holderIdentity"] == "a"


def test_standby_takes_over_after_the_lease_duration_when_the_leader_dies():
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    rounds(clock, [a, b], 10)
    last_renewal = clock.now - TIMING.retry_period  # a's last round; then it dies
    history = rounds(clock, [a, b], 30, alive=("b",))
    took_over = last_renewal + TIMING.retry_period * (1 + next(i for i, who in enumerate(history) if who == {"b"}))
    assert TIMING.lease_duration <= took_over - last_renewal <= TIMING.lease_duration + 2 * TIMING.retry_period
    assert store.lease["spec"]["leaseTransitions"] == 1


def test_a_leader_that_cannot_renew_stops_before_anyone_else_can_start():
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    rounds(clock, [a, b], 10)
    store.down = True  # a cannot reach the API server; neither can b (a partition of both)
    stopped = None
    for step in range(15):
        a.try_acquire_or_renew()
        if not a.leading and stopped is None:
            stopped = step * TIMING.retry_period
        clock.now += TIMING.retry_period
    assert stopped is not None and stopped <= TIMING.renew_deadline < TIMING.lease_duration


def test_release_hands_the_lease_over_at_once():
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    rounds(clock, [a, b], 4)
    a.release()
    assert not a.leading
    b.try_acquire_or_renew()
    assert b.leading


def test_two_candidates_racing_for_an_expired_lease_one_wins():
    store, clock = LeaseStore(), Clock()
    store.lease = {"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": "gone", "renewTime": "x"}}
    store.version = 7
    a, b = electors(store, clock)
    for e in (a, b):
        e.try_acquire_or_renew()  # both see "gone" for the first time
    clock.now += TIMING.lease_duration
    seen = {e.identity: LeaseRecord.from_lease(store.get_lease("", "")) for e in (a, b)}
    assert seen["a"] == seen["b"]
    # Both read the same expired record, then both try to take it over: the resourceVersion lets one win.
    lease = store.get_lease("", "")
    for e in (a, b):
        e.kube = _StaleReads(store, lease)
        e.try_acquire_or_renew()
    assert [e.leading for e in (a, b)] == [True, False]


class _StaleReads:
    """The store, but every read returns the same earlier snapshot (both candidates read before either wrote)."""

    def __init__(self, store, snapshot):
        self.store, self.snapshot = store, snapshot

    def get_lease(self, namespace, name):
        return copy.deepcopy(self.snapshot)

    def update_lease(self, *args):
        return self.store.update_lease(*args)


# --- sharding: one Lease per shard of the namespaces -------------------------------------------------


class ShardStore:
    """Several Leases by name, each behaving like LeaseStore."""

    def __init__(self):
        self.leases: dict[str, LeaseStore] = {}

    def _one(self, name):
        return self.leases.setdefault(name, LeaseStore())

    def get_lease(self, namespace, name):
        return self._one(name).get_lease(namespace, name)

    def create_lease(self, namespace, name, spec):
        return self._one(name).create_lease(namespace, name, spec)

    def update_lease(self, namespace, name, spec, resource_version):
        return self._one(name).update_lease(namespace, name, spec, resource_version)


def test_shard_of_is_stable_and_spreads_namespaces():
    assert shard_of("team-a", 8) == shard_of("team-a", 8)  # no per-process salt, unlike hash()
    counts = [0] * 4
    for i in range(400):
        counts[shard_of(f"team-{i}", 4)] += 1
    assert min(counts) > 60, counts


def test_replicas_share_the_shards_and_take_over_those_of_a_dead_one():
    store, clock = ShardStore(), Clock()
    a, b = (ShardedLeadership(store, "kubetune", "op", name, TIMING, shards=4, fair_share=2, clock=clock)
            for name in ("a", "b"))
    for _ in range(10):
        a.try_all()
        b.try_all()
        clock.now += TIMING.retry_period
    assert len(a.owned) == 2 and len(b.owned) == 2 and not a.owned & b.owned
    assert all(a.owns(ns) != b.owns(ns) for ns in (f"team-{i}" for i in range(50)))
    assert a.leads_nodes != b.leads_nodes  # shard 0, the node planner, on exactly one of them
    for _ in range(30):  # b dies: a waits out the lease, then two lease durations over its fair share
        a.try_all()
        clock.now += TIMING.retry_period
    assert a.owned == {0, 1, 2, 3} and a.leads_nodes


def test_one_shard_is_plain_leader_election_on_the_named_lease():
    store, clock = ShardStore(), Clock()
    only = ShardedLeadership(store, "kubetune", "op", "a", TIMING, clock=clock)
    only.try_all()
    assert only.leading and only.leads_nodes and only.owns("any-namespace") and list(store.leases) == ["op"]
