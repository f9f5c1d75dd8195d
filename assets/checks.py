"""Asset checks: each stage's output is consistent with its inputs, visible in the UI beside the asset. They read
through the engines' readers (manifests, finished results, indexes), with the versions the stages write under."""

import warnings

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from assets.mixture import training_sequences
from assets.partitions import corpus_shards, scale_partitions, score_cells, split_cell
from assets.stage import SETTINGS_RESOURCES, asset_key, markdown_table, outputs_in
from tpt.atomic import read_json
from tpt.config import Experiment
from tpt.corpus.build import load_manifest, read_contamination
from tpt.evaluation.runner import EvaluationRun
from tpt.generation.shard_runner import SUCCESS
from tpt.paths import is_remote, read_schema, read_table
from tpt.stages import Outputs
from tpt.tokenization.mixture import ResolvedMixture
from tpt.tokenization.pack import index_path_for
from tpt.tokenization.ray_pack import shard_out_path
from tpt.training import TrainResult

MAX_GENERATION_ERROR_SHARE = 0.05
RESOURCES = {"storage", *SETTINGS_RESOURCES}
ID_CHECK_MEMORY = "64MB"  # the id count runs in the Dagster process: bounded, whatever the corpus size


def experiment_checks(experiment: Experiment) -> list[dg.AssetChecksDefinition]:
    checks = [_corpus_ids_unique(experiment)]
    for variant in experiment.tpt_variants:
        checks += [_every_document_has_thinking(experiment, variant), _augmented_rows_match_corpus(experiment, variant)]
    if experiment.corpus.decontamination is not None:
        checks.append(_corpus_decontaminated(experiment))
    for variant in experiment.variants:
        checks += [
            _token_documents_match(experiment, variant),
            _mixture_fills_the_budget(experiment, variant),
            _loss_decreased(experiment, variant),
            *_benchmark_checks(experiment, variant),
        ]
    return checks


def _outputs(experiment: Experiment, context: dg.AssetCheckExecutionContext) -> Outputs:
    return outputs_in(experiment, context.resources)


def _manifest(outputs: Outputs):
    corpus = outputs.of("corpus")
    return corpus, load_manifest(corpus.path, corpus.version)


def _corpus_ids_unique(experiment: Experiment) -> dg.AssetChecksDefinition:
    """Counted by DuckDB over the shards' id column: no process holds every id, and DuckDB spills past its memory."""

    @dg.asset_check(
        asset=asset_key(experiment, "corpus"), name="document_ids_unique_and_counted", required_resource_keys=RESOURCES
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        corpus, manifest = _manifest(_outputs(experiment, context))
        if manifest is None:
            return dg.AssetCheckResult(passed=False, description="corpus manifest missing")
        paths = [str(corpus.path / f"{s}.parquet") for s in manifest.shard_names]
        with duckdb.connect(config={"memory_limit": ID_CHECK_MEMORY}) as con:  # past it DuckDB spills to disk
            if is_remote(corpus.path):
                con.register_filesystem(corpus.path.fs)  # DuckDB reads the object store through fsspec
            documents, unique = con.execute(
                "SELECT count(*), count(DISTINCT doc_id) FROM read_parquet(?)", [paths]
            ).fetchone()
        return dg.AssetCheckResult(
            passed=documents == unique == manifest.n_documents,
            metadata={"documents": documents, "unique_ids": unique, "manifest": manifest.n_documents},
        )

    return check


def _corpus_decontaminated(experiment: Experiment) -> dg.AssetChecksDefinition:
    """Blocking: a corpus that was this contaminated needs a look before any thinking is generated for it."""
    limit = experiment.corpus.decontamination.max_contaminated_fraction

    @dg.asset_check(
        asset=asset_key(experiment, "corpus"),
        name="benchmark_contamination_below_threshold",
        blocking=True,
        description=f"Fails when more than {limit:.1%} of checked documents shared an n-gram with a test item.",
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        corpus, manifest = _manifest(_outputs(experiment, context))
        if manifest is None or not manifest.contamination:
            return dg.AssetCheckResult(passed=False, description="corpus manifest has no decontamination record")
        report = manifest.contamination
        fraction = report["dropped"] / max(report["checked"], 1)
        examples = read_contamination(corpus.path).slice(0, 5).to_pylist()
        return dg.AssetCheckResult(
            passed=fraction <= limit,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{report['dropped']} of {report['checked']} documents dropped as contaminated "
            f"({fraction:.2%}; limit {limit:.2%})",
            metadata={
                "checked_documents": report["checked"],
                "dropped_documents": report["dropped"],
                "contaminated_fraction": fraction,
                "by_benchmark": report["by_benchmark"],
                "ngram_words": report["ngram"],
                "test_items": report["test_items"],
                "test_items_too_short_to_check": report["test_items_too_short"],
                "examples": markdown_table(examples),
            },
        )

    return check


def _ids(path, column: str = "doc_id") -> pa.Array:
    return read_table(path, columns=[column])[column].combine_chunks()


def _every_document_has_thinking(experiment: Experiment, variant: str) -> dg.AssetChecksDefinition:
    """Per shard partition (the shards of the run): its corpus ids against its trajectories' ids and finish
    reasons, the only columns read."""

    @_partitioned_check(
        asset=asset_key(experiment, "thinking_trajectories", variant),
        name="one_trajectory_per_document",
        partitions_def=corpus_shards(experiment),
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        outputs = _outputs(experiment, context)
        corpus, thinking = outputs.of("corpus").path, outputs.of("thinking_trajectories", variant).path
        shards = list(context.partition_keys)
        unfinished = [s for s in shards if not (thinking / s / SUCCESS).exists()]
        if unfinished:
            return dg.AssetCheckResult(
                passed=False, description=f"no finished trajectories for {', '.join(unfinished)}"
            )
        rows = errors = missing = duplicated = 0
        for shard in shards:
            docs = _ids(corpus / f"{shard}.parquet")
            got = pa.concat_tables(
                read_table(p, columns=["doc_id", "finish_reason"]) for p in sorted((thinking / shard).glob("part-*"))
            )
            ids = got["doc_id"]
            rows += len(ids)
            missing += int(pc.sum(pc.invert(pc.is_in(docs, value_set=ids.combine_chunks()))).as_py() or 0)
            duplicated += len(ids) - pc.count_distinct(ids).as_py()
            errors += int(pc.sum(pc.equal(got["finish_reason"], "error")).as_py() or 0)
        error_share = errors / max(rows, 1)
        return dg.AssetCheckResult(
            passed=missing == 0 and duplicated == 0 and error_share <= MAX_GENERATION_ERROR_SHARE,
            metadata={
                "shards": len(shards),
                "documents": rows,
                "missing": missing,
                "duplicated": duplicated,
                "errors": errors,
                "error_share": error_share,
            },
        )

    return check


def _sorted(ids: pa.Array) -> pa.Array:
    return ids.take(pc.sort_indices(ids))


AUGMENTED_COLUMNS = {"doc_id", "source", "text", "has_thinking"}


def _augmented_rows_match_corpus(experiment: Experiment, variant: str) -> dg.AssetChecksDefinition:
    """Per shard partition: the augmented shard's schema and id column against the corpus shard's id column."""

    @_partitioned_check(
        asset=asset_key(experiment, "augmented_documents", variant),
        name="same_documents_as_the_corpus",
        partitions_def=corpus_shards(experiment),
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        outputs = _outputs(experiment, context)
        corpus, augmented = outputs.of("corpus").path, outputs.of("augmented_documents", variant).path
        shards = list(context.partition_keys)
        unwritten = [s for s in shards if not (augmented / f"{s}.parquet").exists()]
        if unwritten:
            return dg.AssetCheckResult(passed=False, description=f"no augmented shard for {', '.join(unwritten)}")
        mismatched, missing_columns = [], set()
        for shard in shards:
            path = augmented / f"{shard}.parquet"
            missing_columns |= AUGMENTED_COLUMNS - set(read_schema(path).names)
            if not _sorted(_ids(path)).equals(_sorted(_ids(corpus / f"{shard}.parquet"))):
                mismatched.append(shard)
        return dg.AssetCheckResult(
            passed=not mismatched and not missing_columns,
            metadata={
                "shards": len(shards),
                "mismatched_shards": mismatched,
                "missing_columns": sorted(missing_columns),
            },
        )

    return check


def _packed_indexes(outputs: Outputs, variant: str, shards: list[str]) -> dict[str, dict]:
    tokens = outputs.of("token_shards", variant).path
    paths = {s: index_path_for(shard_out_path(tokens, s)) for s in shards}
    return {s: read_json(p) for s, p in paths.items() if p.exists()}


def _mixture_fills_the_budget(experiment: Experiment, variant: str) -> dg.AssetChecksDefinition:
    """The order holds exactly the run's sequences, every id names a packed sequence, and the per-source rows add up."""

    @_partitioned_check(
        asset=asset_key(experiment, "data_mixture", variant),
        name="order_fills_the_token_budget",
        partitions_def=scale_partitions(experiment),
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        outputs = _outputs(experiment, context)
        out = outputs.of("data_mixture", variant, context.partition_key)
        mixture = ResolvedMixture.finished(out.path)
        if mixture is None:
            return dg.AssetCheckResult(passed=False, description=f"no resolved mixture in {out.path}")
        _, manifest = _manifest(outputs)
        packed = sum(i["n_sequences"] for i in _packed_indexes(outputs, variant, manifest.shard_names).values())
        expected = training_sequences(experiment, context.partition_key)
        selected = sum(share.selected_sequences for share in mixture.shares)
        in_range = bool(mixture.order.size) and int(mixture.order.min()) >= 0 and int(mixture.order.max()) < packed
        return dg.AssetCheckResult(
            passed=mixture.order.size == expected == selected and in_range,
            metadata={
                "sequences": int(mixture.order.size),
                "budget_sequences": expected,
                "selected_by_sources": selected,
                "packed_sequences": packed,
            },
        )

    return check


def _token_documents_match(experiment: Experiment, variant: str) -> dg.AssetChecksDefinition:
    """Per shard partition: the packed index's document count against the corpus manifest's (no token is read)."""

    @_partitioned_check(
        asset=asset_key(experiment, "token_shards", variant),
        name="documents_match_upstream",
        partitions_def=corpus_shards(experiment),
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        outputs = _outputs(experiment, context)
        _, manifest = _manifest(outputs)
        if manifest is None:
            return dg.AssetCheckResult(passed=False, description="corpus manifest missing")
        shards = list(context.partition_keys)
        expected = {s["name"]: s["documents"] for s in manifest.shards if s["name"] in shards}
        packed = {s: i["n_documents"] for s, i in _packed_indexes(outputs, variant, shards).items()}
        mismatched = {s: (packed.get(s), expected.get(s)) for s in shards if packed.get(s) != expected.get(s)}
        return dg.AssetCheckResult(
            passed=not mismatched,
            metadata={
                "packed_shards": len(packed),
                "shards": len(shards),
                "packed_documents": sum(packed.values()),
                "mismatched_shards": str(mismatched),
            },
        )

    return check


def _loss_decreased(experiment: Experiment, variant: str) -> dg.AssetChecksDefinition:
    @_partitioned_check(
        asset=asset_key(experiment, "checkpoint", variant),
        name="loss_decreased",
        partitions_def=scale_partitions(experiment),
        required_resource_keys=RESOURCES,
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        result = TrainResult.load(_outputs(experiment, context).of("checkpoint", variant, context.partition_key).path)
        curve = result.read_curve() if result else []
        if len(curve) < 2:
            return dg.AssetCheckResult(passed=False, description="fewer than two logged steps")
        first, last = curve[0]["loss"], curve[-1]["loss"]
        return dg.AssetCheckResult(passed=last < first, metadata={"first_loss": first, "final_loss": last})

    return check


def _benchmark_checks(experiment: Experiment, variant: str) -> list[dg.AssetChecksDefinition]:
    """Per benchmark partition, so each cell of the matrix is judged on its own."""
    asset = asset_key(experiment, "benchmark_scores", variant)
    partitions = score_cells(experiment)

    @_partitioned_check(
        asset=asset, name="scores_in_unit_range", partitions_def=partitions, required_resource_keys=RESOURCES
    )
    def in_range(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        scale, benchmark = split_cell(experiment, context.partition_key)
        found = EvaluationRun.load(_outputs(experiment, context).of("benchmark_scores", variant, scale, benchmark).path)
        result = found.benchmarks.get(benchmark) if found else None
        metrics = result.metrics if result else {}
        bad = [{"metric": m, "value": v.value} for m, v in metrics.items() if not 0.0 <= v.value <= 1.0]
        return dg.AssetCheckResult(
            passed=result is not None and result.primary_metric in metrics and not bad,
            metadata={"metrics": sorted(metrics), "out_of_range": bad},
        )

    @_partitioned_check(
        asset=asset,
        name="no_score_drop",
        partitions_def=partitions,
        description="Warns when a cell's primary score is lower than at its previous materialization.",
    )
    def no_score_drop(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[context.partition_key]), limit=2
        ).records
        scored = [(r, _metadata(r)) for r in records]
        scored = [(r, m) for r, m in scored if "score" in m]
        if len(scored) < 2:
            return dg.AssetCheckResult(passed=True, description="no earlier score of this cell to compare with")
        (_, now), (before_record, before) = scored[0], scored[1]
        drop = before["score"] - now["score"]
        return dg.AssetCheckResult(
            passed=drop <= 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "score": now["score"],
                "previous_score": before["score"],
                "drop": drop,
                "checkpoint_version": now.get("checkpoint_version", ""),
                "previous_checkpoint_version": before.get("checkpoint_version", ""),
                "previous_run_id": before_record.run_id,
            },
        )

    return [in_range, no_score_drop]


def _metadata(record: dg.EventLogRecord) -> dict:
    materialization = record.asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else {}


def _partitioned_check(**kwargs):
    """``dg.asset_check`` for a partitioned asset: partitioned checks are a preview in Dagster 1.13, used knowingly."""

    def decorate(compute) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=dg.PreviewWarning)
            return dg.asset_check(**kwargs)(compute)

    return decorate
