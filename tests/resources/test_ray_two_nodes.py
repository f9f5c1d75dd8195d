"""The move to a cluster, rehearsed on one machine: a real two-node Ray cluster (``ray start --head`` and
``ray start --address``, one CPU and one custom resource each, token auth on), the experiment's corpus, data and
training jobs run through Dagster by a driver that joins it by address, against the same jobs on a local Ray.
Work must land on both nodes, results must equal the local run's, and the cluster must be gone afterwards."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from resources import ArtifactStorage
from tests.resources.conftest import NODES
from tests.resources.ray_nodes import REPO_ROOT, RayNodes
from tests.support import outputs, resources_at
from tpt.atomic import read_json
from tpt.config import Experiment
from tpt.generation.shard_runner import read_trajectories
from tpt.stages import Outputs
from tpt.tokenization.ray_pack import shard_out_path
from tpt.training import TrainResult

pytestmark = pytest.mark.slow

SHIPPED = "runtime_resources/py_modules_files/"  # where a node unpacks the runtime env's py_modules
TOLERANCE = 1e-4  # the training tests' bound for a Ray launch against another launch of the same loop


def small(embedded: Experiment) -> Experiment:
    """Two shards of four documents, a dozen thinking tokens, four training steps of a one-layer model."""
    raw = embedded.model_dump(mode="json")
    raw["name"] = "cluster"
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    raw["generation"]["sampling"]["max_thinking_tokens"] = 12
    raw["generation"] |= {"max_document_tokens": 64, "batch_size": 4}
    raw["training"] |= {
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64},
        "seq_len": 128,
        "batch_tokens": 512,
        "token_budget": 2048,
        "warmup_steps": 1,
        "micro_batch_size": 2,
        "checkpoint_every": 2,
    }
    raw["scales"] = [{"name": "base"}]
    return Experiment.model_validate(raw)


@pytest.fixture(scope="module")
def experiment(embedded: Experiment, tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, Path]:
    path = tmp_path_factory.mktemp("cluster_experiment") / "cluster.yaml"
    config = small(embedded)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config, path


def drive(experiment_file: Path, root: Path, cluster: RayNodes | None, address: str = "", *assets: str) -> dict:
    """The driver process (``tests/resources/cluster_driver.py``) with the cluster's token in its environment."""
    command = [sys.executable, "-m", "tests.resources.cluster_driver", str(experiment_file), str(root)]
    if cluster:  # a driver on the cluster lists placement through the head's state API
        command += ["--address", address or cluster.address]
        command += [] if address else ["--dashboard", cluster.dashboard]
    command += ["--assets", *assets] if assets else []
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(cluster.env if cluster else {})}
    # Ray Data starts an actor pool's actors without waiting for them, so on a loaded machine the first one can finish
    # eight documents before the second (on the other node) is up; the placement test wants both to exist.
    full_env["RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S"] = "600"
    full_env.pop("TPT_RAY_ADDRESS", None)
    done = subprocess.run(command, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = read_json(root / "outcome.json")
    failed = {job: run["failures"] for job, run in outcome["runs"].items() if not run["success"]}
    assert not failed, failed
    return outcome


@pytest.fixture(scope="module")
def local_run(experiment, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("local_ray")
    drive(experiment[1], root, None)
    return root


@pytest.fixture(scope="module")
def cluster_run(experiment, ray_nodes, local_run, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ray_cluster")
    return root, drive(experiment[1], root, ray_nodes)


def _plan(experiment: Experiment, root: Path) -> Outputs:
    """Where the driver's stages wrote (its resources' output settings are the defaults: cpu, hf)."""
    return outputs(experiment, resources_at(root, storage=ArtifactStorage(root=str(root / "artifacts"))))


def _trajectories(plan: Outputs) -> list[dict]:
    folder = plan.of("thinking_trajectories", "tpt").path
    shards = sorted(p.name for p in folder.iterdir() if p.is_dir())
    rows = [row for s in shards for row in read_trajectories(folder / s).to_pylist()]
    timing = {"batch_wall_s", "queued_at", "started_at", "finished_at"}  # when, not what: differs run to run
    return sorted(({k: v for k, v in r.items() if k not in timing} for r in rows), key=lambda r: r["doc_id"])


def _loss_curve(plan: Outputs, variant: str) -> list[float]:
    return [row["loss"] for row in TrainResult.load(plan.of("checkpoint", variant, "base").path).read_curve()]


def test_tasks_and_actors_ran_on_both_nodes(cluster_run, ray_nodes):
    _, outcome = cluster_run
    nodes = outcome["nodes"]  # alive when the driver finished
    assert nodes == {n["node_id"]: n["resources_total"] for n in ray_nodes.state("nodes") if n["state"] == "ALIVE"}
    kind = {node: next(k for k in NODES if k in resources) for node, resources in nodes.items()}
    assert sorted(kind.values()) == sorted(NODES)

    def placed(rows, name_key, part):
        return {kind[r["node_id"]] for r in rows if part in r[name_key] and r["node_id"] in kind}

    tasks, actors = outcome["tasks"], outcome["actors"]
    assert placed(tasks, "name", "pack_parquet") == set(NODES), tasks  # tokenization tasks
    assert placed(actors, "class_name", "MapWorker") == set(NODES), actors  # the generator's actor pool
    assert placed(actors, "class_name", "RayTrainWorker") == set(NODES), actors  # the two Ray Train workers
    # A driver on the cluster hands its own sys.path to its workers, so on this one machine they may import the
    # driver's very files; on a node without them, the runtime env's copy (the ray:// test below sees that one).
    driver_tpt = str(REPO_ROOT / "tpt" / "__init__.py")
    shipped = {node: found["tpt"] for node, found in outcome["libraries"].items()}
    assert set(shipped) == set(nodes)
    assert all(path == driver_tpt or SHIPPED in path for path in shipped.values()), shipped


def test_cluster_results_equal_the_local_ray_run(cluster_run, local_run, experiment):
    config = experiment[0]
    here, there = _plan(config, local_run), _plan(config, cluster_run[0])
    local, joined = _trajectories(here), _trajectories(there)
    assert len(local) == 8 and not any(r["from_cache"] for r in local + joined)
    assert joined == local  # same thinking, byte for byte, under the same seeds
    for variant in config.variants:
        shards = sorted(p.stem for p in here.of("token_shards", variant).path.glob("*.bin"))
        assert len(shards) == 2
        for shard in shards:
            ours, theirs = (shard_out_path(p.of("token_shards", variant).path, shard) for p in (here, there))
            assert theirs.read_bytes() == ours.read_bytes()  # token counts and the tokens themselves
            assert (
                read_json(theirs.with_suffix(".json"))["n_real_tokens"]
                == read_json(ours.with_suffix(".json"))["n_real_tokens"]
            )
        a, b = _loss_curve(here, variant), _loss_curve(there, variant)
        assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b, strict=True)) < TOLERANCE


def test_ray_client_address_runs_the_token_shards_the_same(cluster_run, experiment, ray_nodes, tmp_path):
    """``ray://`` (Ray Client): the node check and the tokenization tasks; the same packed tokens."""
    config = experiment[0]
    tokens = "/".join([config.name, "token_shards_vanilla"])
    outcome = drive(experiment[1], tmp_path, ray_nodes, ray_nodes.client_address, tokens)
    assert set(outcome["libraries"]) == {n["node_id"] for n in ray_nodes.state("nodes") if n["state"] == "ALIVE"}
    # the Ray Client server is the driver here: every node imports tpt from the copy the runtime env shipped
    assert all(SHIPPED in found["tpt"] for found in outcome["libraries"].values()), outcome["libraries"]
    here, there = _plan(config, cluster_run[0]), _plan(config, tmp_path)
    for shard in sorted(p.stem for p in here.of("token_shards", "vanilla").path.glob("*.bin")):
        ours, theirs = (shard_out_path(p.of("token_shards", "vanilla").path, shard) for p in (here, there))
        assert theirs.read_bytes() == ours.read_bytes()
    assert pq.read_metadata(next(there.of("corpus").path.glob("*.parquet"))).num_rows > 0
