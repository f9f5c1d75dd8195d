import time

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets import keys
from assets.partitions import corpus_shards, run_shards, shard_backfill_policy
from assets.stage import finish, stage_asset
from resources import ArtifactStorage, DuckDBCatalog
from tpt.atomic import write_parquet
from tpt.augment import augment
from tpt.config import Experiment
from tpt.corpus.build import read_shard
from tpt.generation.shard_runner import SUCCESS, read_trajectories
from tpt.plan import ExperimentPlan


def augmented_asset(experiment: Experiment) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").asset_code_version("augmented")

    @stage_asset(
        experiment,
        keys.AUGMENTED,
        deps=[keys.key(experiment, keys.CORPUS), keys.key(experiment, keys.TRAJECTORIES)],
        code_version=code_version,
        kinds={"python", "parquet"},
        partitions_def=corpus_shards(experiment),
        backfill_policy=shard_backfill_policy(experiment),
        description="x = [d; t]: every document followed by its thinking, one parquet shard per corpus shard.",
    )
    def augmented_documents(context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        documents = with_thinking = chars = 0
        reused = True
        for shard in run_shards(context, plan):
            target = plan.augmented.path / f"{shard}.parquet"
            if not (plan.trajectories.path / shard / SUCCESS).exists():
                raise dg.Failure(f"{shard} has no finished trajectories; materialize {keys.TRAJECTORIES} for it first")
            trajectories = read_trajectories(plan.trajectories.path / shard)
            if target.exists():
                table = pq.read_table(target)
            else:
                reused = False
                table = augment(read_shard(plan.corpus.path, shard), trajectories, experiment.join_separator)
                write_parquet(target, table)
            documents += table.num_rows
            with_thinking += int(pc.sum(table["has_thinking"]).as_py() or 0)
            chars += int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0)
        context.log.info(f"augmented {documents} documents, {with_thinking} with thinking")
        figures = {
            "documents": documents,
            "documents_with_thinking": with_thinking,
            "documents_without_thinking": documents - with_thinking,
            "characters": chars,
        }
        return finish(
            context,
            catalog.open(),
            experiment.name,
            plan.augmented,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            parents=[plan.corpus, plan.trajectories],
        )

    return augmented_documents
