"""Jobs per experiment. The corpus comes first on its own: it registers the shard partitions that the full graph
then runs over, up to the checkpoints. The benchmark scores are partitioned by benchmark, which Dagster cannot put in
one run with the shard-partitioned stages, so they are their own job (one run per benchmark partition), and the
report, which reads every cell, comes last in a job of its own (``pipelines.run`` does all of it in order)."""

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets import keys
from tpt.config import Experiment


def _job(experiment: Experiment, suffix: str, selection: dg.AssetSelection, description: str):
    return dg.define_asset_job(
        f"{experiment.name}_{suffix}",
        selection=selection,
        tags={"experiment": experiment.name},
        description=description,
    )


def experiment_jobs(experiment: Experiment) -> dict[str, "UnresolvedAssetJobDefinition"]:
    group = dg.AssetSelection.groups(experiment.name)
    estimate = dg.AssetSelection.assets(keys.key(experiment, keys.COST_ESTIMATE))
    benchmarks = dg.AssetSelection.assets(*(keys.key(experiment, keys.BENCHMARKS, v) for v in experiment.variants))
    report = dg.AssetSelection.assets(keys.key(experiment, keys.REPORT))
    return {
        "corpus": _job(
            experiment,
            "corpus",
            dg.AssetSelection.assets(keys.key(experiment, keys.CORPUS), keys.key(experiment, keys.THINKING_MODEL)),
            "Read, clean and shard the corpus (registering one partition per shard) and fetch the thinking model.",
        ),
        "full_graph": _job(
            experiment,
            "full_graph",
            group - estimate - benchmarks - report,
            f"Everything of '{experiment.name}' from corpus to checkpoints, over the shard partitions given to the "
            "run; finished stages find their output and return at once.",
        ),
        "shards": _job(
            experiment,
            "shards",
            dg.AssetSelection.assets(
                keys.key(experiment, keys.TRAJECTORIES),
                keys.key(experiment, keys.AUGMENTED),
                *(keys.key(experiment, keys.TOKEN_SHARDS, v) for v in experiment.variants),
            ),
            "The per-shard stages (thinking, [d; t], token shards) for the shard partitions given to the run.",
        ),
        "generation_estimate": _job(
            experiment,
            "generation_estimate",
            estimate,
            "Estimate output tokens and GPU-hours of the generation from a sample, before backfilling it.",
        ),
        "benchmarks": _job(
            experiment,
            "benchmarks",
            benchmarks,
            f"Evaluate every checkpoint of '{experiment.name}' on the benchmark partition given to the run; "
            "a backfill over all partitions fills the (variant x benchmark) matrix.",
        ),
        "report": _job(
            experiment,
            "report",
            report,
            "Vanilla vs TPT side by side, from every benchmark cell's score.",
        ),
    }
