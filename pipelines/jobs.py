"""Jobs per experiment, one per partitioning, since a Dagster run covers partitions of one kind. Each stage names
its job in its declaration; the data job is the corpus job's stages and the per-shard ones, from corpus to token
shards. ``pipelines.run`` runs them in order: corpus, estimate, data, training per scale, one run per cell, report."""

import dagster as dg

from assets import registry
from assets.stage import asset_key
from pipelines.hooks import explain_failure
from pipelines.private import AssetJob
from tpt.config import Experiment
from tpt.stages import variants_of

DESCRIPTIONS = {
    "corpus": "Read, clean and shard the corpus (registering one partition per shard) and fetch the thinking model.",
    "generation_estimate": "Estimate output tokens and GPU-hours of the generation from a sample, before backfilling "
    "it.",
    "data": "Everything from corpus to token shards, over the shard partitions given to the run; finished stages find "
    "their output and return at once.",
    "shards": "The per-shard stages (thinking, [d; t], token shards) for the shard partitions given to the run.",
    "training": "Resolve each variant's data mixture and pretrain it, at the scale (model size x token budget) given "
    "to the run; a backfill over all scales trains the whole experiment matrix.",
    "benchmarks": "Evaluate each variant's checkpoint on the (scale, benchmark) cell given to the run; a backfill over "
    "all cells fills the (variant x scale x benchmark) matrix.",
    "sft": "Fine-tune each variant's checkpoint on the chat data (assistant tokens only), at the scale given to the "
    "run.",
    "sft_benchmarks": "Evaluate each variant's SFT checkpoint on the (scale, benchmark) cell given to the run, "
    "prompts through its chat template.",
    "report": "Vanilla vs TPT side by side, from every benchmark cell's score.",
}
COMPOSED = {"data": ("corpus", "shards")}


def job_assets(experiment: Experiment, job: str) -> list[dg.AssetKey]:
    names = COMPOSED.get(job, (job,))
    return [
        asset_key(experiment, spec.name, variant)
        for spec in registry.STAGES
        if spec.job in names
        for variant in variants_of(experiment, spec)
    ]


def experiment_jobs(experiment: Experiment) -> dict[str, AssetJob]:
    return {
        job: dg.define_asset_job(
            f"{experiment.name}_{job}",
            selection=dg.AssetSelection.assets(*job_assets(experiment, job)),
            tags={"experiment": experiment.name},
            description=description,
            hooks={explain_failure},
        )
        for job, description in DESCRIPTIONS.items()
        if job_assets(experiment, job)  # an experiment without SFT has no sft job
    }
