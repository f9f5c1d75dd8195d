"""One real ``dagster dev`` for the UI tests of this package, serving a cut-down copy of the embedded experiment,
and the runs those tests look at, each launched through GraphQL as the UI would launch it."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from assets.partitions import scale_partitions, score_cells
from assets.stage import asset_key
from pipelines.jobs import experiment_jobs
from pipelines.schedules import daily_corpus_discovery, nightly_benchmarks
from pipelines.sensors import new_shards_sensor
from resources import ArtifactStorage
from tests.pipelines.dagster_dev import ASSET_JOB, DagsterDev, start_dagster_dev
from tests.support import outputs, resources_at
from tpt.config import Experiment
from tpt.stages import Outputs


@dataclass(frozen=True)
class GraphNames:
    """What the UI tests drive, named by the code that names it, so a renamed job, sensor or schedule, or a new
    partitioning, is followed here and in no test."""

    group: str
    corpus_job: str
    shards_job: str
    benchmarks_job: str
    new_shards_sensor: str
    nightly_schedule: str
    discovery_schedule: str
    corpus: list[str]
    trajectories: list[str]
    vanilla_tokens: list[str]
    vanilla_mixture: list[str]
    scales: list[str]  # the partitions of the mixtures and checkpoints
    score_cells: list[str]  # the partitions of the benchmark scores: one nightly run each


def graph_names(experiment: Experiment) -> GraphNames:
    jobs = experiment_jobs(experiment)
    return GraphNames(
        group=experiment.name,
        corpus_job=jobs["corpus"].name,
        shards_job=jobs["shards"].name,
        benchmarks_job=jobs["benchmarks"].name,
        new_shards_sensor=new_shards_sensor(experiment, jobs["shards"]).name,
        nightly_schedule=nightly_benchmarks(experiment, jobs["benchmarks"]).name,
        discovery_schedule=daily_corpus_discovery(experiment, jobs["corpus"]).name,
        corpus=asset_key(experiment, "corpus").path,
        trajectories=asset_key(experiment, "thinking_trajectories", "tpt").path,
        vanilla_tokens=asset_key(experiment, "token_shards", "vanilla").path,
        vanilla_mixture=asset_key(experiment, "data_mixture", "vanilla").path,
        scales=list(scale_partitions(experiment).get_partition_keys()),
        score_cells=[str(cell) for cell in score_cells(experiment).get_partition_keys()],
    )


@pytest.fixture(scope="package")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dagster_dev").resolve()


@pytest.fixture(scope="package")
def ui_experiment(embedded: Experiment, ui_root: Path) -> Experiment:
    """The embedded experiment cut to four documents per source in shards of four: corpus and tokens in seconds."""
    raw = embedded.model_dump(mode="json")
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    (ui_root / "experiment.yaml").write_text(yaml.safe_dump(raw))
    return Experiment.model_validate(raw)


@pytest.fixture(scope="package")
def names(ui_experiment: Experiment) -> GraphNames:
    return graph_names(ui_experiment)


@pytest.fixture(scope="package")
def ui_plan(ui_experiment: Experiment, ui_root: Path) -> Outputs:
    """Where the served stages write, as the server's ``storage`` resource computes it."""
    return outputs(ui_experiment, resources_at(ui_root, storage=ArtifactStorage(root=str(ui_root / "artifacts"))))


@pytest.fixture(scope="package")
def dagster_dev(ui_experiment: Experiment, ui_root: Path) -> Iterator[DagsterDev]:
    env = {
        "TPT_EXPERIMENTS": str(ui_root / "experiment.yaml"),
        "TPT_ARTIFACT_ROOT": str(ui_root / "artifacts"),
        "TPT_CATALOG": str(ui_root / "catalog.duckdb"),
    }
    server = start_dagster_dev(ui_root / "dagster_home", env)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def corpus_run(dagster_dev: DagsterDev, names: GraphNames) -> dict:
    """The corpus job, launched as its Launchpad button does: the corpus and the thinking model."""
    return dagster_dev.wait_for_run(dagster_dev.launch_run(names.corpus_job))


@pytest.fixture(scope="package")
def vanilla_backfill(dagster_dev: DagsterDev, names: GraphNames, corpus_run: dict) -> dict:
    """A backfill of the vanilla token shards over every shard partition the corpus run registered."""
    shards = dagster_dev.partition_keys(names.vanilla_tokens)
    return dagster_dev.wait_for_backfill(dagster_dev.launch_backfill(names.vanilla_tokens, shards))


@pytest.fixture(scope="package")
def mixture_runs(dagster_dev: DagsterDev, names: GraphNames, vanilla_backfill: dict) -> list[dict]:
    """The vanilla mixture at every scale (its metadata holds a plot), one run per partition as the asset page's
    Materialize button launches one."""
    assert vanilla_backfill["status"] == "COMPLETED_SUCCESS", vanilla_backfill
    launched = [dagster_dev.launch_run(ASSET_JOB, [names.vanilla_mixture], scale) for scale in names.scales]
    return [dagster_dev.wait_for_run(run_id) for run_id in launched]
