"""The code location ``tpt``: every selected experiment's graph, its jobs, schedules and sensors, and the
resources, set up for the embedded default (local Ray, CPU, DuckDB file) unless the environment says otherwise."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pipelines.experiments import selected_experiments
from pipelines.graph import experiment_assets, experiment_checks
from pipelines.jobs import experiment_jobs
from pipelines.schedules import daily_corpus_discovery, nightly_benchmarks
from pipelines.sensors import new_checkpoints_sensor, new_corpus_files_sensor, new_shards_sensor, report_sensor
from resources import ArtifactStorage, DuckDBCatalog, Evaluator, RayCluster, ThinkingGenerator, Trainer
from tpt.config import Experiment


def default_resources() -> dict[str, Any]:
    return {
        "storage": ArtifactStorage(),
        "catalog": DuckDBCatalog(),
        "ray_cluster": RayCluster(),
        "generator": ThinkingGenerator(),
        "trainer": Trainer(),
        "evaluator": Evaluator(),
    }


def build_definitions(
    experiments: Sequence[Experiment] | None = None, resources: Mapping[str, Any] | None = None
) -> dg.Definitions:
    resources = dict(resources) if resources is not None else default_resources()
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    for experiment in selected_experiments() if experiments is None else experiments:
        assets += experiment_assets(experiment, resources)
        checks += experiment_checks(experiment)
        by_name = experiment_jobs(experiment)
        jobs += list(by_name.values())
        schedules += [
            nightly_benchmarks(experiment, by_name["benchmarks"]),
            daily_corpus_discovery(experiment, by_name["corpus"]),
        ]
        watcher = new_corpus_files_sensor(experiment, by_name["corpus"])
        sensors += [watcher] if watcher else []
        sensors += [
            new_shards_sensor(experiment, by_name["shards"]),
            new_checkpoints_sensor(experiment, by_name["benchmarks"]),
            report_sensor(experiment),
        ]
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
        # One process per run: the stages share one Ray connection and one DuckDB writer. Scale comes from Ray,
        # not from Dagster subprocesses.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
