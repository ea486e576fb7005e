"""Session fixtures shared by every tier.

`cluster` is the real control plane: the cluster named by KUBECONFIG when it is set (kind on a laptop),
otherwise a local one started from the pinned binaries (deploy/local/localcluster.py) for this session.
`prometheus` is a real Prometheus (Debian's package) whose scrape targets tests add at run time.
`real_node` is one real kubelet node (containerd, runc) beside the kwok nodes (deploy/local/realnode.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "local"))

import localcluster  # noqa: E402  (a script folder, not a package)
import realnode  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles: `ci` (the default run) is derandomised with no example database, so every run
# draws the same examples and a failure reproduces; `bench` (make bench, or HYPOTHESIS_PROFILE=bench)
# draws ten times as many from fresh randomness. No deadline: the machine is shared and slow at times.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("bench", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if os.environ.get("KUBECONFIG"):
        yield localcluster.ExistingCluster(os.environ["KUBECONFIG"])
        return
    yield from started(localcluster.LocalCluster(tmp_path_factory.mktemp("kube"), nodes=3), "local cluster")


def started(part, what: str):
    """Start a local part (cluster, Prometheus, real node) for the session and stop it after, failing
    with its one-line SetupError (a generator for session fixtures to `yield from`)."""
    try:
        part.start()
    except localcluster.SetupError as e:
        pytest.fail(f"{what}: {e}", pytrace=False)
    yield part
    part.stop()


def local_prometheus(tmp_path_factory, scrape_interval: str = "1s"):
    """A LocalPrometheus for the session (a generator for session fixtures to `yield from`)."""
    prom = localcluster.LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval=scrape_interval)
    yield from started(prom, "local Prometheus")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    yield from local_prometheus(tmp_path_factory)


@pytest.fixture
def namespace(cluster):
    """A fresh namespace, ready for pods (its default ServiceAccount exists), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {name}: default ServiceAccount never appeared", pytrace=False)
        time.sleep(0.2)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(cluster):
    """kubetune's CRDs from deploy/crds, applied server-side and Established."""
    files = sorted((REPO / "deploy" / "crds").glob("*.yaml"))
    if not files:
        pytest.fail("deploy/crds holds no CRDs: run `python -m kubetune.api.crdgen`", pytrace=False)
    for f in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    names = [json.loads(cluster.kubectl("create", "--dry-run=client", "-o", "json", "-f", str(f)).stdout)["metadata"]["name"]
             for f in files]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@pytest.fixture(scope="session")
def real_node(cluster, tmp_path_factory):
    """A node whose pods really run: started for the session beside the local cluster, or, under
    KUBECONFIG, that cluster's node labelled kubetune.io/real-node=true (skipped when it has none)."""
    if isinstance(cluster, localcluster.ExistingCluster):
        names = cluster.kubectl("get", "nodes", "-l", realnode.RealNode.label, "-o",
                                "jsonpath={.items[*].metadata.name}", check=False).stdout.split()
        if not names:
            pytest.skip(f"the KUBECONFIG cluster has no node labelled {realnode.RealNode.label}")
        yield realnode.ExistingRealNode(names[0])
        return
    yield from started(realnode.RealNode(tmp_path_factory.mktemp("realnode"), cluster), "real node")
