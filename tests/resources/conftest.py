"""One real two-node Ray cluster for the tests of this package that need one, stopped at the end whatever
happens, and checked to leave no process behind."""

from collections.abc import Iterator

import pytest

from tests.resources.ray_nodes import RayNodes, start_cluster, stop_cluster

NODES = {"head_node": 1, "worker_node": 1}  # 2 cores: one CPU per node, each with its own custom resource


@pytest.fixture(scope="session")
def ray_nodes() -> Iterator[RayNodes]:
    cluster = start_cluster(NODES)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        assert cluster.leftover() == [], "Ray processes of the test cluster outlived it"
