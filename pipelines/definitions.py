"""The code location ``tpt``: every selected experiment's graph, its jobs, schedules and sensors, and the
resources, set up for the embedded default (local Ray, CPU, DuckDB file) unless the environment says otherwise."""

import dagster as dg

from pipelines.experiments import selected_experiments
from pipelines.graph import experiment_assets, experiment_checks
from pipelines.jobs import benchmarks_job, full_graph_job
from pipelines.schedules import nightly_benchmarks
from pipelines.sensors import new_corpus_files_sensor
from resources import ArtifactStorage, DuckDBCatalog, Evaluator, RayCluster, ThinkingGenerator, Trainer


def build_definitions() -> dg.Definitions:
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    for experiment in selected_experiments():
        assets += experiment_assets(experiment)
        checks += experiment_checks(experiment)
        full, evaluate = full_graph_job(experiment), benchmarks_job(experiment)
        jobs += [full, evaluate]
        schedules.append(nightly_benchmarks(evaluate))
        sensor = new_corpus_files_sensor(experiment, full)
        sensors += [sensor] if sensor else []
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={
            "storage": ArtifactStorage(),
            "catalog": DuckDBCatalog(),
            "ray_cluster": RayCluster(),
            "generator": ThinkingGenerator(),
            "trainer": Trainer(),
            "evaluator": Evaluator(),
        },
        # One process per run: the stages share one Ray connection and one DuckDB writer. Scale comes from Ray,
        # not from Dagster subprocesses.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
