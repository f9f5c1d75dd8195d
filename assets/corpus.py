"""The corpus: documents from the configured sources, cleaned, deduplicated, decontaminated and written as parquet
shards (each a partition of the per-shard stages); and its manifest, whose version names the shard set."""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from assets.partitions import sync_shard_partitions
from assets.stage import ROW_BATCH, StageResult, StageRun, markdown_table
from tpt.config import Experiment
from tpt.corpus.build import build_corpus, load_manifest, read_contamination
from tpt.errors import InputError
from tpt.paths import parquet_file
from tpt.stages import Instance, Outputs, Read, Stage
from tpt.versioning import versioned_fields


class CorpusMissingError(InputError, RuntimeError):
    pass


def _own(experiment: Experiment, instance: Instance) -> dict:
    own = {"corpus": versioned_fields(experiment.corpus)}
    if experiment.corpus.decontamination is not None:  # the test sets it checks against are an input
        own["test_sets"] = [experiment.evaluation.data_folder, experiment.evaluation.test_sets]
    return own


def corpus(run: StageRun) -> StageResult:
    out, config = run.output, run.experiment.corpus
    before = load_manifest(out.path, out.version)
    on_ray = config.build_on_ray or bool(run.resources.ray_cluster.address)  # a cluster builds on its workers
    manifest, reused = build_corpus(
        config,
        out.path,
        out.version,
        test_data_folder=run.experiment.evaluation.data_folder,
        test_sets=run.experiment.evaluation.test_sets,
        on_ray=on_ray,
        log=run.log,
        before_tasks=run.resources.ray_cluster.ensure if on_ray else lambda: None,
    )
    added = [s for s in manifest.shard_names if before is None or s not in before.shard_names]
    run.log(f"corpus: {manifest.n_documents} documents in {len(manifest.shards)} shards, {len(added)} new")
    partitions = sync_shard_partitions(run.context.instance, run.experiment, manifest.shard_names)
    skipped = {name: s["counts"] for name, s in manifest.sources.items()}
    figures = {
        "documents": manifest.n_documents,
        "shards": len(manifest.shards),
        "shards_added": len(added),
        "characters": sum(s["chars"] for s in manifest.shards),
        "skips_by_source_and_reason": skipped,
        "skipped_total": sum(sum(c.values()) for c in skipped.values()),
        "contaminated_dropped": manifest.contamination.get("dropped", 0),
        "contaminated_by_benchmark": manifest.contamination.get("by_benchmark", {}),
        **partitions,
    }
    rows = {"documents": _document_rows(run.experiment.name, out.version, out.path, added)}
    if not reused:
        rows["contamination"] = [
            {"experiment": run.experiment.name, "corpus_version": out.version} | r
            for r in read_contamination(out.path).to_pylist()
        ]
    per_source = [{"source": n, "accepted": s["accepted"], **s["counts"]} for n, s in manifest.sources.items()]
    return StageResult(reused, figures, rows, extra_metadata={"sources": markdown_table(per_source)})


def _document_rows(experiment: str, version: str, folder, shards: list[str]) -> Iterator[pa.Table]:
    """One catalog row per new document, built column-wise in Arrow a record batch at a time (the text is only
    measured; nothing per document is held beyond one batch)."""
    for shard in shards:
        parquet = parquet_file(folder / f"{shard}.parquet")
        for batch in parquet.iter_batches(batch_size=ROW_BATCH, columns=["doc_id", "source", "text"]):
            n = batch.num_rows
            yield pa.table(
                {
                    "experiment": pa.array([experiment] * n, pa.string()),
                    "corpus_version": pa.array([version] * n, pa.string()),
                    "shard": pa.array([shard] * n, pa.string()),
                    "doc_id": batch.column("doc_id"),
                    "source": batch.column("source"),
                    "n_chars": pc.utf8_length(batch.column("text")),
                }
            )


def shard_set(outputs: Outputs) -> list[tuple[str, str]]:
    """The corpus's shards and their content hashes, read from its manifest (empty before the corpus is built)."""
    out = outputs.of("corpus")
    manifest = load_manifest(out.path, out.version)
    return manifest.shard_set if manifest is not None else []


def corpus_manifest(run: StageRun) -> StageResult:
    out = run.input("corpus")
    manifest = load_manifest(out.path, out.version)
    if manifest is None:
        raise CorpusMissingError("the corpus is not built for this config; materialize the corpus asset first")
    figures = {"shards": len(manifest.shards), "documents": manifest.n_documents, "corpus_version": out.version}
    return StageResult(reused=True, figures=figures)


STAGE = Stage(
    name="corpus",
    revision=4,  # 4: built by tasks per file, id bucket and shard (ids by prefix in _ids/, hub revisions pinned)
    own=_own,
    resources=("ray_cluster",),
    job="corpus",
    kinds=frozenset({"python", "parquet"}),
    description="Documents from the configured sources: cleaned, length-filtered, exactly (and optionally near-) "
    "deduplicated, decontaminated against the benchmarks' test sets, with content-hash ids, written as parquet "
    "shards; each shard becomes a partition of the per-shard stages. Appending keeps this version (and the finished "
    "per-shard work); the manifest's version names the shard set.",
    compute=corpus,
)

MANIFEST_STAGE = Stage(
    name="corpus_manifest",
    revision=1,
    own=lambda experiment, instance: {},
    reads=(Read("corpus"),),
    content=shard_set,
    job="corpus",
    kinds=frozenset({"json"}),
    description="The corpus's shards and their content hashes. Its version (and data version) names exactly that "
    "set, so every stage that reads all shards (mixtures, checkpoints, scores, the report) depends on it and goes "
    "stale when the corpus grows, while the per-shard stages of the old shards stay fresh.",
    compute=corpus_manifest,
)
