import os
import socket
import subprocess
import sys

import pytest

from resources.ray_cluster import RayCluster, RayClusterError
from tests.resources.ray_nodes import REPO_ROOT


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


SHADOW = """raise ImportError("No module named 'transformers' (hidden on this node by the test)")\n"""


def _ensure_in_driver(address: str, env: dict, *asks: str) -> subprocess.CompletedProcess:
    """``RayCluster(address).ensure(<asks>)`` in a driver process of its own, with the cluster's token."""
    code = (
        "import sys\nfrom resources import RayCluster, ThinkingGenerator, Trainer\n"
        "from resources.ray_cluster import RayAsk, RayClusterError\n"
        f"try:\n    RayCluster(address={address!r}).ensure({', '.join(asks)})\n"
        "except RayClusterError as exc:\n    sys.exit(f'ERROR {exc}')\nprint('OK')\n"
    )
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": path, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ask", "said"),
    [
        ("RayAsk.for_generator(ThinkingGenerator(gpus_per_worker=1))", "the generator asks for 1 GPU per worker"),
        ("RayAsk.for_trainer(Trainer(launcher='ray', device='cuda'))", "the trainer asks for 1 GPU per worker"),
        ("RayAsk.for_trainer(Trainer(launcher='ray', workers=3))", "the trainer asks for 3 workers x 1 CPU"),
        (
            "RayAsk.for_generator(ThinkingGenerator(workers=1, cpus_per_worker=2))",
            "the generator asks for 2 CPU per worker",
        ),
    ],
)
def test_a_cluster_without_the_resources_asked_for_is_one_line_before_any_work(ray_nodes, ask, said):
    done = _ensure_in_driver(ray_nodes.address, ray_nodes.env, ask)
    [line] = done.stderr.strip().splitlines()[-1:]
    assert done.returncode == 1 and line.startswith(f"ERROR {said}"), done.stderr[-2000:]
    assert f"the Ray cluster at {ray_nodes.address}, 2 nodes" in line


@pytest.mark.slow
def test_the_cluster_holds_what_the_two_worker_launches_ask_for(ray_nodes):
    asks = "RayAsk.for_generator(ThinkingGenerator(workers=2, torch_threads=1))", "RayAsk.for_trainer(Trainer())"
    done = _ensure_in_driver(ray_nodes.client_address, ray_nodes.env, *asks)  # through Ray Client, too
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-2000:]


@pytest.mark.slow
def test_a_node_that_cannot_import_the_libraries_is_named_in_one_line(ray_nodes, tmp_path):
    """A third node whose workers cannot import transformers (a stand-in package that raises, first on its
    PYTHONPATH: how a node without the project's environment fails)."""
    (tmp_path / "transformers").mkdir()
    (tmp_path / "transformers" / "__init__.py").write_text(SHADOW)
    node = ray_nodes.start_node(0, {"broken_node": 1}, env={"PYTHONPATH": str(tmp_path)})
    try:
        [broken] = [n for n in ray_nodes.wait_for_nodes(3) if "broken_node" in n["resources_total"]]
        done = _ensure_in_driver(ray_nodes.address, ray_nodes.env)
        [line] = done.stderr.strip().splitlines()[-1:]
        assert done.returncode == 1, done.stderr[-2000:]
        assert f"({broken['node_id'][:12]}) cannot import transformers (No module named 'transformers'" in line
        assert line.endswith("install the project's environment on every node")
    finally:
        ray_nodes.stop_node(node)
        ray_nodes.nodes.remove(node)
        ray_nodes.wait_until_dead(broken["node_id"])
