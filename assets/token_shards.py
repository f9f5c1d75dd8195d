import time
from pathlib import Path

import dagster as dg

from assets import keys
from assets.partitions import corpus_shards, run_shards, shard_backfill_policy
from assets.stage import TRANSIENT_RETRY, finish, markdown_table, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, RayCluster
from tpt.config import Experiment
from tpt.models import resolve_model
from tpt.plan import ExperimentPlan
from tpt.tokenization.ray_pack import PackJob, pack_on_ray, shard_out_path

INDEX_COLUMNS = ("n_documents", "n_sequences", "n_real_tokens", "n_padding_tokens", "packing_efficiency")


def token_shard_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [_token_shards(experiment, variant) for variant in experiment.variants]


def _token_shards(experiment: Experiment, variant: str) -> dg.AssetsDefinition:
    """Vanilla packs the documents alone; TPT packs the augmented [d; t] texts of the same documents."""
    code_version = ExperimentPlan(experiment, ".").asset_code_version("token_shards", variant)
    upstream = keys.AUGMENTED if variant == "tpt" else keys.CORPUS

    @stage_asset(
        experiment,
        keys.TOKEN_SHARDS,
        variant=variant,
        deps=[keys.key(experiment, upstream)],
        code_version=code_version,
        kinds={"ray", "numpy"},
        partitions_def=corpus_shards(experiment),
        backfill_policy=shard_backfill_policy(experiment),
        retry_policy=TRANSIENT_RETRY,
        description=f"The {variant} variant tokenized with the student's tokenizer and packed to seq_len, each "
        "source on its own, one memory-mapped token file per corpus shard (Ray task each).",
    )
    def token_shards(
        context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog, ray_cluster: RayCluster
    ):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        stage, source = plan.token_shards(variant), (plan.augmented if variant == "tpt" else plan.corpus)
        shards = run_shards(context, plan)
        jobs = [PackJob(str(source.path / f"{s}.parquet"), str(shard_out_path(stage.path, s))) for s in shards]
        missing = [j.source_parquet for j in jobs if not Path(j.source_parquet).exists()]
        if missing:
            raise dg.Failure(f"{len(missing)} input shards are missing (first: {missing[0]}); materialize {upstream}")
        if any(not shard_out_path(stage.path, s).with_suffix(".json").exists() for s in shards):
            ray_cluster.ensure()
        tokenizer_dir = str(resolve_model(experiment.tokenizer, weights=False))
        pack_started = time.perf_counter()
        indexes, packed_now = pack_on_ray(jobs, tokenizer_dir, experiment.training.seq_len, context.log.info)
        pack_wall = time.perf_counter() - pack_started
        tokens_now = sum(i["n_real_tokens"] for i in indexes if "wall_s" in i)  # only fresh results carry timings
        rows = [
            {"shard": shard, **{c: index[c] for c in INDEX_COLUMNS}}
            for shard, index in zip(shards, indexes, strict=True)
        ]
        catalog_rows = [
            {
                "experiment": experiment.name,
                "variant": variant,
                "tokens_version": stage.version,
                "shard": r["shard"],
                "documents": r["n_documents"],
                "sequences": r["n_sequences"],
                "real_tokens": r["n_real_tokens"],
                "padding_tokens": r["n_padding_tokens"],
                "packing_efficiency": r["packing_efficiency"],
            }
            for r in rows
        ]
        source_rows = [
            {
                "experiment": experiment.name,
                "variant": variant,
                "tokens_version": stage.version,
                "shard": shard,
                "source": span["name"],
                "documents": span["n_documents"],
                "sequences": span["n_sequences"],
                "real_tokens": span["n_real_tokens"],
            }
            for shard, index in zip(shards, indexes, strict=True)
            for span in index["sources"]
        ]
        cat = catalog.open()
        cat.upsert("token_shards", catalog_rows)
        cat.upsert("token_sources", source_rows)
        real = sum(r["n_real_tokens"] for r in rows)
        total = sum(r["n_real_tokens"] + r["n_padding_tokens"] for r in rows)
        figures = {
            "variant": variant,
            "documents": sum(r["n_documents"] for r in rows),
            "sequences": sum(r["n_sequences"] for r in rows),
            "real_tokens": real,
            "padding_tokens": total - real,
            "packing_efficiency": round(real / total, 4),
            "seq_len": experiment.training.seq_len,
            "shards_packed_this_run": packed_now,
            "tokens_per_s_this_run": round(tokens_now / pack_wall, 1) if packed_now else 0.0,
            "real_tokens_by_source": _by_source(source_rows),
        }
        return finish(
            context,
            cat,
            experiment.name,
            stage,
            wall_s=time.perf_counter() - started,
            reused=packed_now == 0,
            figures=figures,
            parents=[source],
            variant=variant,
            extra_metadata={"shards": markdown_table(rows)},
        )

    return token_shards


def _by_source(rows: list[dict]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["source"]] = totals.get(row["source"], 0) + row["real_tokens"]
    return totals
