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
from tests.conftest import local_prometheus


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    yield from local_prometheus(tmp_path_factory, scrape_interval="5s")


@pytest.fixture(scope="session")
def bench_cluster(cluster):
    if isinstance(cluster, localcluster.LocalCluster):
        cluster.start_controller_manager("--kube-api-qps=1000", "--kube-api-burst=2000",
                                         "--concurrent-replicaset-syncs=20", "--concurrent-deployment-syncs=20")
    return cluster
