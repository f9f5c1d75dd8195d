"""Jobs per experiment, one per partitioning, since a Dagster run covers partitions of one kind. The corpus comes
first on its own: it registers the shard partitions that the data job then runs over, up to the token shards. The
training job trains every variant at one scale of the experiment matrix; the benchmark job evaluates one
(scale, benchmark) cell; the report, which reads every cell, comes last (``pipelines.run`` does all of it in order)."""

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets import keys
from pipelines.hooks import explain_failure
from tpt.config import Experiment


def _job(experiment: Experiment, suffix: str, selection: dg.AssetSelection, description: str):
    return dg.define_asset_job(
        f"{experiment.name}_{suffix}",
        selection=selection,
        tags={"experiment": experiment.name},
        description=description,
        hooks={explain_failure},
    )


def experiment_jobs(experiment: Experiment) -> dict[str, "UnresolvedAssetJobDefinition"]:
    group = dg.AssetSelection.groups(experiment.name)
    estimate = dg.AssetSelection.assets(keys.key(experiment, keys.COST_ESTIMATE))
    benchmarks = dg.AssetSelection.assets(*(keys.key(experiment, keys.BENCHMARKS, v) for v in experiment.variants))
    report = dg.AssetSelection.assets(keys.key(experiment, keys.REPORT))
    training = dg.AssetSelection.assets(
        *(keys.key(experiment, stage, v) for stage in (keys.MIXTURE, keys.CHECKPOINT) for v in experiment.variants)
    )
    return {
        "corpus": _job(
            experiment,
            "corpus",
            dg.AssetSelection.assets(keys.key(experiment, keys.CORPUS), keys.key(experiment, keys.THINKING_MODEL)),
            "Read, clean and shard the corpus (registering one partition per shard) and fetch the thinking model.",
        ),
        "data": _job(
            experiment,
            "data",
            group - estimate - training - benchmarks - report,
            f"Everything of '{experiment.name}' from corpus to token shards, over the shard partitions given to the "
            "run; finished stages find their output and return at once.",
        ),
        "training": _job(
            experiment,
            "training",
            training,
            "Resolve each variant's data mixture and pretrain it, at the scale (model size x token budget) given to "
            "the run; a backfill over all scales trains the whole experiment matrix.",
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
            f"Evaluate each variant's checkpoint of '{experiment.name}' on the (scale, benchmark) cell given to the "
            "run; a backfill over all cells fills the (variant x scale x benchmark) matrix.",
        ),
        "report": _job(
            experiment,
            "report",
            report,
            "Vanilla vs TPT side by side, from every benchmark cell's score.",
        ),
    }
