"""Jobs per experiment. The corpus comes first on its own: it registers the shard partitions that the full graph
then runs over (``pipelines.run`` does both in order; the UI's "materialize all" launches the same as a backfill)."""

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
    benchmarks = [keys.key(experiment, keys.BENCHMARKS, v) for v in experiment.variants]
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
            group - estimate,
            f"Everything of '{experiment.name}' from corpus to report, over the shard partitions given to the run; "
            "finished stages find their output and return at once.",
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
            dg.AssetSelection.assets(*benchmarks, keys.key(experiment, keys.REPORT)),
            f"Evaluate the checkpoints of '{experiment.name}' and rebuild its report (the nightly rerun).",
        ),
    }
