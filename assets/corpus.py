import time

import dagster as dg

from assets import keys
from assets.partitions import sync_shard_partitions
from assets.stage import finish, markdown_table, stage_asset
from resources import ArtifactStorage, DuckDBCatalog
from tpt.config import Experiment
from tpt.corpus.build import build_corpus, read_contamination, read_shard
from tpt.plan import ExperimentPlan


def corpus_asset(experiment: Experiment) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").asset_code_version("corpus")

    @stage_asset(
        experiment,
        keys.CORPUS,
        code_version=code_version,
        kinds={"python", "parquet"},
        description="Documents from the configured sources: cleaned, length-filtered, exactly (and optionally "
        "near-) deduplicated, decontaminated against the benchmarks' test sets, with content-hash ids, written as "
        "parquet shards; each shard becomes a partition of the per-shard stages.",
    )
    def corpus(context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog):
        started = time.perf_counter()
        plan = storage.plan(experiment).corpus
        manifest, reused = build_corpus(
            experiment.corpus,
            plan.path,
            plan.version,
            test_data_folder=experiment.evaluation.data_folder,
            test_sets=experiment.evaluation.test_sets,
        )
        context.log.info(
            f"corpus: {manifest.n_documents} documents in {len(manifest.shards)} shards"
            + (" (finished earlier, reused)" if reused else "")
        )
        partitions = sync_shard_partitions(context.instance, experiment, manifest.shard_names)
        cat = catalog.open()
        if not reused:
            rows = [
                {
                    "experiment": experiment.name,
                    "corpus_version": plan.version,
                    "doc_id": row["doc_id"],
                    "source": row["source"],
                    "shard": shard,
                    "n_chars": len(row["text"]),
                }
                for shard in manifest.shard_names
                for row in read_shard(plan.path, shard).to_pylist()
            ]
            cat.upsert("documents", rows)
            contaminated = read_contamination(plan.path).to_pylist()
            cat.upsert(
                "contamination",
                [{"experiment": experiment.name, "corpus_version": plan.version} | r for r in contaminated],
            )
        skipped = {name: s["counts"] for name, s in manifest.sources.items()}
        figures = {
            "documents": manifest.n_documents,
            "shards": len(manifest.shards),
            "characters": sum(s["chars"] for s in manifest.shards),
            "skips_by_source_and_reason": skipped,
            "skipped_total": sum(sum(c.values()) for c in skipped.values()),
            "contaminated_dropped": manifest.contamination.get("dropped", 0),
            "contaminated_by_benchmark": manifest.contamination.get("by_benchmark", {}),
            **partitions,
        }
        per_source = [{"source": n, "accepted": s["accepted"], **s["counts"]} for n, s in manifest.sources.items()]
        return finish(
            context,
            cat,
            experiment.name,
            plan,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            extra_metadata={"sources": markdown_table(per_source)},
        )

    return corpus
