import time
from collections import Counter

import dagster as dg
import numpy as np
import pyarrow as pa

from assets import keys
from assets.partitions import corpus_shards, run_shards, shard_backfill_policy
from assets.stage import ACCELERATOR_POOL, TRANSIENT_RETRY, finish, markdown_table, png_markdown, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, RayCluster, ThinkingGenerator
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.corpus.build import read_shard
from tpt.generation.shard_runner import SUCCESS, ShardSummary, generate_shards, read_trajectories
from tpt.plan import ExperimentPlan
from tpt.plots import histogram


def trajectories_asset(experiment: Experiment) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").asset_code_version("trajectories")
    generation = experiment.generation

    @stage_asset(
        experiment,
        keys.TRAJECTORIES,
        deps=[keys.key(experiment, keys.CORPUS), keys.key(experiment, keys.THINKING_MODEL)],
        code_version=code_version,
        kinds={"ray", generation.engine},
        partitions_def=corpus_shards(experiment),
        backfill_policy=shard_backfill_policy(experiment),
        pool=ACCELERATOR_POOL,
        retry_policy=TRANSIENT_RETRY,
        description="An expert's thinking t for every document d of a corpus shard (the paper's prompt, document "
        "cut to a token limit, generation stopped at </think>), generated on a Ray Data actor pool; resumable per "
        "document, cached per request.",
    )
    def thinking_trajectories(
        context: dg.AssetExecutionContext,
        storage: ArtifactStorage,
        catalog: DuckDBCatalog,
        ray_cluster: RayCluster,
        generator: ThinkingGenerator,
    ):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        shards = run_shards(context, plan)
        out = plan.trajectories.path
        pending = [s for s in shards if not (out / s / SUCCESS).exists()]
        if pending:
            ray_cluster.ensure()
        summaries = generate_shards(
            {s: read_shard(plan.corpus.path, s) for s in shards},
            out,
            generator.engine_spec(generation),
            generation,
            generator.placement(),
            context.log.info,
            cache_root=plan.root.parent,
        )
        table = pa.concat_tables([read_trajectories(out / s) for s in shards], promote_options="permissive")
        cat = catalog.open()
        _record(cat, experiment, plan.trajectories.version, table, summaries.values(), generator.gpus_in_use())
        figures = _figures(experiment, table, list(summaries.values()), generator.gpus_in_use())
        by_source = _lengths_by_source(table)
        extra = {
            "shards": markdown_table(
                [s.as_dict() | {"finish_reasons": str(s.finish_reasons)} for s in summaries.values()]
            ),
            "thinking_length_by_source": png_markdown(
                histogram(by_source, title="Thinking length by document domain", xlabel="thinking tokens"),
                "thinking length by source",
            ),
        }
        return finish(
            context,
            cat,
            experiment.name,
            plan.trajectories,
            wall_s=time.perf_counter() - started,
            reused=not pending,
            figures=figures,
            parents=[plan.corpus],
            extra_metadata=extra,
        )

    return thinking_trajectories


def _figures(experiment: Experiment, table: pa.Table, summaries: list[ShardSummary], gpus: int) -> dict:
    lengths = np.array(
        [
            n
            for n, r in zip(table["output_tokens"].to_pylist(), table["finish_reason"].to_pylist(), strict=True)
            if r != "error"
        ]
        or [0]
    )
    generated = [s for s in summaries if s.generated_this_run]
    rate = max((s.output_tokens_per_s for s in generated), default=0.0)  # shards of one run share the pool's rate
    return {
        "shards": [s.shard for s in summaries],
        "documents": table.num_rows,
        "generated_this_run": sum(s.generated_this_run for s in summaries),
        "cache_hits": sum(s.cache_hits for s in summaries),
        "prompt_tokens": sum(s.prompt_tokens for s in summaries),
        "output_tokens": sum(s.output_tokens for s in summaries),
        "output_tokens_per_s": rate,
        "output_tokens_per_s_per_gpu": round(rate / gpus, 3) if gpus else None,
        "finish_reasons": dict(sum((Counter(s.finish_reasons) for s in summaries), Counter())),
        "errors": sum(s.errors for s in summaries),
        "documents_cut": int(sum(table["document_cut"].to_pylist())),
        "thinking_tokens_mean": round(float(lengths.mean()), 1),
        "thinking_tokens_p50": float(np.percentile(lengths, 50)),
        "thinking_tokens_p90": float(np.percentile(lengths, 90)),
        "thinking_tokens_max": int(lengths.max()),
        "engine": table["engine"][0].as_py(),
        "prompt_version": experiment.generation.prompt.version,
        "model": experiment.generation.model.name,
    }


def _record(cat: Catalog, experiment: Experiment, version: str, table: pa.Table, summaries, gpus: int) -> None:
    columns = ["doc_id", "shard", "finish_reason", "prompt_tokens", "output_tokens", "document_cut", "engine", "error"]
    cat.upsert(
        "trajectories",
        [
            row
            | {
                "experiment": experiment.name,
                "trajectories_version": version,
                "prompt_version": experiment.generation.prompt.version,
                "model": experiment.generation.model.name,
            }
            for row in table.select(columns).to_pylist()
        ],
    )
    cat.upsert(
        "generation_shards",
        [
            {
                "experiment": experiment.name,
                "trajectories_version": version,
                "shard": s.shard,
                "documents": s.documents,
                "generated_this_run": s.generated_this_run,
                "cache_hits": s.cache_hits,
                "errors": s.errors,
                "prompt_tokens": s.prompt_tokens,
                "output_tokens": s.output_tokens,
                "output_tokens_per_s": s.output_tokens_per_s,
                "gpus": gpus,
                "wall_s": s.wall_s,
                "finish_reasons": str(s.finish_reasons),
            }
            for s in summaries
        ],
    )


def _lengths_by_source(table: pa.Table) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    rows = zip(
        table["source"].to_pylist(), table["output_tokens"].to_pylist(), table["finish_reason"].to_pylist(), strict=True
    )
    for source, n, reason in rows:
        if reason != "error":
            groups.setdefault(source, []).append(n)
    return groups
