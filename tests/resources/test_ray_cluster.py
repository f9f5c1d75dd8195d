import socket

import pytest

from resources.ray_cluster import RayCluster, RayClusterError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_a_one_line_error_before_any_work():
    cluster = RayCluster(address=f"ray://127.0.0.1:{_closed_port()}", connect_timeout_s=2)
    with pytest.raises(RayClusterError) as err:
        cluster.ensure()
    assert "did not answer within 2s" in str(err.value) and "\n" not in str(err.value)


def test_malformed_address_is_rejected():
    with pytest.raises(RayClusterError, match="not of the form"):
        RayCluster(address="ray://head-without-port").ensure()
