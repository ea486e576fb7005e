"""Bench-tier fixtures: the shared `cluster` and `prometheus`, tuned for thousands of objects.

- `prometheus` scrapes every 5 s (not 1 s): one scrape of 10,000 synthetic pods takes the Python
  exporter more than a second.
- `bench_cluster` is `cluster` with kube-controller-manager restarted at a higher client rate
  (its default, 20 requests/s, makes 10,000 ReplicaSet pods take over eight minutes). A cluster
  named by KUBECONFIG is used as it is.
"""

from __future__ import annotations

import pytest

import localcluster  # deploy/local, on sys.path via tests/conftest.py


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    prom = localcluster.LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval="5s")
    try:
        prom.start()
    except localcluster.SetupError as e:
        pytest.fail(f"local Prometheus: {e}", pytrace=False)
    yield prom
    prom.stop()


@pytest.fixture(scope="session")
def bench_cluster(cluster):
    if isinstance(cluster, localcluster.LocalCluster):
        pki = cluster.state_dir / "pki"
        cluster.procs.stop("kube-controller-manager")
        cluster.procs.start("kube-controller-manager", [
            localcluster.binary("kube-controller-manager"), "--kubeconfig", cluster.kubeconfig,
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(localcluster.free_port()),
            "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
            "--use-service-account-credentials=false", "--kube-api-qps=1000", "--kube-api-burst=2000",
            "--concurrent-replicaset-syncs=20", "--concurrent-deployment-syncs=20"])
    return cluster
