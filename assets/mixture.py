import time

import dagster as dg

from assets import keys
from assets.partitions import scale_partitions
from assets.stage import finish, markdown_table, png_markdown, stage_asset
from resources import ArtifactStorage, DuckDBCatalog
from tpt.config import Experiment
from tpt.corpus.build import load_manifest
from tpt.plan import ExperimentPlan
from tpt.plots import grouped_bars
from tpt.tokenization import PackedShards
from tpt.tokenization.mixture import ResolvedMixture, resolve_mixture
from tpt.tokenization.ray_pack import shard_out_path


def all_token_shards(plan: ExperimentPlan, variant: str) -> PackedShards:
    """Every corpus shard's tokens, in corpus order; a mixture is drawn only when the backfill is complete."""
    manifest = load_manifest(plan.corpus.path, plan.corpus.version)
    if manifest is None:
        raise dg.Failure("the corpus is not built for this config; materialize the corpus asset first")
    paths = [shard_out_path(plan.token_shards(variant).path, s) for s in manifest.shard_names]
    missing = [p.stem for p in paths if not p.with_suffix(".json").exists()]
    if missing:
        raise dg.Failure(
            f"{len(missing)} of {len(paths)} shards are not packed yet ({missing[:5]}); backfill "
            f"{keys.TOKEN_SHARDS}_{variant} over all corpus shards first"
        )
    return PackedShards(paths)


def mixture_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [_mixture(experiment, variant) for variant in experiment.variants]


def _mixture(experiment: Experiment, variant: str) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").asset_code_version("mixture", variant)
    weights = experiment.mixture.sources
    described = ", ".join(f"{s.name} {s.weight:g}" for s in weights) if weights else "natural proportions"

    @stage_asset(
        experiment,
        keys.MIXTURE,
        variant=variant,
        deps=[  # a mixture draws from every packed shard
            dg.AssetDep(keys.key(experiment, keys.TOKEN_SHARDS, variant), partition_mapping=dg.AllPartitionMapping())
        ],
        code_version=code_version,
        kinds={"numpy", "duckdb"},
        partitions_def=scale_partitions(experiment),
        description=f"The exact, seeded list of {variant} sequences one training run reads ({described}), one "
        "partition per scale of the experiment matrix; per-source token accounting in the catalog's `mixture` table.",
    )
    def data_mixture(context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog):
        started = time.perf_counter()
        scale = context.partition_key
        plan = storage.plan(experiment)
        stage = plan.mixture(variant, scale)
        reused = ResolvedMixture.exists(stage.path)
        if not reused:
            sequences = plan.training_sequences(scale)
            shards = all_token_shards(plan, variant)
            resolve_mixture(shards.sequences_by_source(), sequences, experiment.mixture).save(stage.path)
        mixture = ResolvedMixture.load(stage.path)
        rows = [s.as_row() for s in mixture.shares]
        cat = catalog.open()
        cat.upsert(
            "mixture",
            [{"experiment": experiment.name, "variant": variant, "mixture_version": stage.version} | r for r in rows],
        )
        selected = sum(r["selected_tokens"] for r in rows)
        figures = {
            "variant": variant,
            "scale": scale,
            "sequences": int(mixture.order.size),
            "selected_real_tokens": selected,
            "most_repeated_source_epochs": round(max(r["epochs"] for r in rows), 3),
            "share_of_real_tokens": {r["source"]: round(r["selected_tokens"] / max(selected, 1), 4) for r in rows},
        }
        plot = grouped_bars(
            {r["source"]: {"packed": r["available_tokens"], "in the mixture": r["selected_tokens"]} for r in rows},
            title=f"{experiment.name} {variant} {scale}: real tokens per source",
            ylabel="tokens",
        )
        return finish(
            context,
            cat,
            experiment.name,
            stage,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            parents=[plan.token_shards(variant)],
            variant=variant,
            content_version=mixture.fingerprint,
            extra_metadata={
                "sources": markdown_table(rows),
                "tokens_per_source": png_markdown(plot, "tokens per source"),
            },
        )

    return data_mixture
