"""The partitions that match the work.

- Corpus shards, dynamic: the corpus asset registers them, the per-shard stages are backfilled over them, and a new
  shard asks for only its own work.
- Training runs, static from the config's experiment matrix: one per scale (model size x token budget), or one per
  scale and seed (``<scale>-seed<N>``) when the experiment lists seeds, so the mixture and checkpoint assets have one
  partition per training run. The seed joins the key rather than adding a dimension: Dagster's multi-partitions have
  at most two, and the score cells already use both.
- Training run x benchmark, multi-partitioned: each variant's scores are one asset whose cells are one checkpoint on one
  benchmark, so a new benchmark or a new checkpoint computes only its own cells.

Variants are separate assets rather than a partition dimension: their lineage differs (TPT reads the thinking,
vanilla does not), and only separate assets let Dagster show a changed prompt as stale for TPT alone."""

import dagster as dg
import pyarrow as pa

from tpt.config import Experiment
from tpt.corpus.build import load_manifest
from tpt.errors import InputError
from tpt.paths import read_metadata
from tpt.stages import Outputs


class UnknownShardsError(InputError, RuntimeError):
    pass


class CorruptShardError(InputError, RuntimeError):
    """A corpus shard file that is truncated or otherwise unreadable (a crash, a partial copy)."""


def corpus_shards(experiment: Experiment) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{experiment.name}__corpus_shards")


SCALE = "scale"
BENCHMARK = "benchmark"


def scale_partitions(experiment: Experiment) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(experiment.scale_names)


def benchmark_partitions(experiment: Experiment) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(experiment.evaluation.benchmarks))


def score_cells(experiment: Experiment) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {SCALE: scale_partitions(experiment), BENCHMARK: benchmark_partitions(experiment)}
    )


def cell_key(scale: str, benchmark: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({SCALE: scale, BENCHMARK: benchmark})


def split_cell(experiment: Experiment, partition_key: str) -> tuple[str, str]:
    """(scale, benchmark) of a score cell, whether Dagster hands the key over parsed or as its string."""
    cell = score_cells(experiment).get_partition_key_from_str(partition_key).keys_by_dimension
    return cell[SCALE], cell[BENCHMARK]


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


def check_shards(outputs: Outputs, shards: list[str]) -> list[str]:
    """The corpus shards a run covers, checked against the corpus they partition: one line if it is not built for
    this config or no longer holds them."""
    corpus = outputs.of("corpus")
    manifest = load_manifest(corpus.path, corpus.version)
    if manifest is None:
        raise UnknownShardsError("the corpus is not built for this config; materialize the corpus asset first")
    unknown = [s for s in shards if s not in manifest.shard_names]
    if unknown:
        raise UnknownShardsError(f"shards {unknown} are not in the current corpus; rematerialize the corpus asset")
    for shard in shards:  # the footer only: a file a crash cut short has none
        try:
            read_metadata(corpus.path / f"{shard}.parquet")
        except (OSError, pa.ArrowException) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise CorruptShardError(
                f"corpus {shard}.parquet cannot be read ({first}); restore it or rebuild the corpus "
                "(every other shard's finished work is kept)"
            ) from None
    return shards
