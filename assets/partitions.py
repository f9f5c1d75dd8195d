"""Corpus shards as dynamic partitions: the corpus asset registers them, the per-shard stages are backfilled over
them, and a new shard asks for only its own work. Benchmarks as static partitions: each variant's scores are one
asset with one partition per benchmark, so the (variant x benchmark) matrix is filled cell by cell."""

import dagster as dg

from tpt.config import Experiment
from tpt.corpus.build import load_manifest
from tpt.plan import ExperimentPlan


def corpus_shards(experiment: Experiment) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{experiment.name}__corpus_shards")


def benchmark_partitions(experiment: Experiment) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(experiment.evaluation.benchmarks))


def shard_backfill_policy(experiment: Experiment) -> dg.BackfillPolicy:
    """Several shards per run, so an engine's start-up is paid once per run, not once per shard."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=experiment.corpus.shards_per_run)


def sync_shard_partitions(instance: dg.DagsterInstance, experiment: Experiment, shards: list[str]) -> dict:
    """Make the registered partitions equal the corpus's shards; returns what changed."""
    name = corpus_shards(experiment).name
    existing = set(instance.get_dynamic_partitions(name))
    added = [s for s in shards if s not in existing]
    removed = sorted(existing - set(shards))
    if added:
        instance.add_dynamic_partitions(name, added)
    for shard in removed:
        instance.delete_dynamic_partition(name, shard)
    return {"partitions_added": added, "partitions_removed": removed}


def run_shards(context: dg.AssetExecutionContext, plan: ExperimentPlan) -> list[str]:
    """The corpus shards this run covers (one, a backfill batch, or a whole range), checked against the corpus."""
    manifest = load_manifest(plan.corpus.path, plan.corpus.version)
    if manifest is None:
        raise dg.Failure("the corpus is not built for this config; materialize the corpus asset first")
    shards = list(context.partition_keys)
    unknown = [s for s in shards if s not in manifest.shard_names]
    if unknown:
        raise dg.Failure(f"shards {unknown} are not in the current corpus; rematerialize the corpus asset")
    return shards
