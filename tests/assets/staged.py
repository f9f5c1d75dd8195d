"""A cut-down embedded experiment staged up to what the asset checks read, with no generation and no training:
the corpus materialized through Dagster, finished thinking shards and augmented shards written with the engines'
own writers (an engine stand-in's output: generation costs minutes on CPU), the vanilla token shards packed by the
real tokenizer, the vanilla mixture materialized through Dagster, and the catalog rows a training run and a
benchmark cell record. Tests copy it and corrupt one thing, then run one check through Dagster."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from assets.partitions import cell_key
from pipelines.graph import experiment_assets, experiment_checks
from pipelines.private import AssetJob, partition_range_tags
from resources import ArtifactStorage, DuckDBCatalog, Evaluator, RayCluster, ThinkingGenerator, Trainer
from tests.support import outputs
from tpt.atomic import write_json, write_parquet
from tpt.augment import augment
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.corpus.build import read_shard
from tpt.evaluation.data import TestSet
from tpt.evaluation.runner import BenchmarkResult, EvaluationRun, MetricValue
from tpt.generation.engines import engine_version
from tpt.generation.requests import request_keys
from tpt.generation.shard_runner import SUCCESS, summarize
from tpt.generation.worker import OUTPUT_SCHEMA
from tpt.models import resolve_model
from tpt.stages import Outputs
from tpt.tokenization.ray_pack import PackJob, pack_parquet, shard_out_path
from tpt.training import TrainResult
from tpt.training.loop import write_curve

DOCUMENTS_PER_SOURCE = 10  # 20 documents: one generation error is exactly the 5% the thinking check allows
SCALE = "base"
BENCHMARK = "gsm8k"
CELL = str(cell_key(SCALE, BENCHMARK))
VARIANT = "vanilla"


def cut_down(embedded: Experiment) -> Experiment:
    raw = embedded.model_dump(mode="json")
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = DOCUMENTS_PER_SOURCE
    raw["corpus"]["documents_per_shard"] = DOCUMENTS_PER_SOURCE
    return Experiment.model_validate(raw)


@dataclass(frozen=True)
class Staged:
    experiment: Experiment
    root: Path  # artifacts
    catalog_path: Path
    instance: dg.DagsterInstance  # holds the corpus run and its shard partitions

    @property
    def plan(self) -> Outputs:
        return outputs(self.experiment, self.resources())

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.catalog_path)

    def resources(self) -> dict[str, Any]:
        return {
            "storage": ArtifactStorage(root=str(self.root)),
            "catalog": DuckDBCatalog(path=str(self.catalog_path)),
            "ray_cluster": RayCluster(num_cpus=2),  # started only by a stage with work to do: none here
            "generator": ThinkingGenerator(),
            "trainer": Trainer(),
            "evaluator": Evaluator(),
        }

    def copy(self, target: Path) -> Staged:
        """Artifacts and catalog copied, so a test corrupts its own; the instance (with the shards) is shared."""
        shutil.copytree(self.root, target / "artifacts")
        shutil.copytree(self.catalog_path, target / "catalog.duckdb")  # the catalog is a folder of Parquet tables
        return replace(self, root=target / "artifacts", catalog_path=target / "catalog.duckdb")

    def definitions(self, *jobs: dg.JobDefinition | AssetJob) -> dg.Definitions:
        return dg.Definitions(
            assets=experiment_assets(self.experiment, self.resources()),
            asset_checks=experiment_checks(self.experiment),
            jobs=list(jobs),
            resources=self.resources(),
        )

    def materialize(self, asset: str, partition: str | None = None) -> dg.ExecuteInProcessResult:
        [key] = [a.key for a in experiment_assets(self.experiment, self.resources()) if a.key.path[-1] == asset]
        job = dg.define_asset_job("stage", selection=dg.AssetSelection.assets(key))
        defs = self.definitions(job)
        return defs.resolve_job_def("stage").execute_in_process(instance=self.instance, partition_key=partition)

    def evaluate(
        self, check: str, partition: str | tuple[str, str] | None = None, instance: dg.DagsterInstance | None = None
    ) -> dg.AssetCheckEvaluation:
        """Run one check (of the vanilla asset where each variant has one), and nothing else, through Dagster, as
        the UI's *Execute* on the check does; ``partition`` is one key or a (first, last) range, as a ranged run of
        the per-shard stages has."""
        named = [c for c in experiment_checks(self.experiment) if c.check_key.name == check]
        [definition] = [c for c in named if c.check_key.asset_key.path[-1].endswith(f"_{VARIANT}")] or named
        keys = list(definition.check_keys)
        job = dg.define_asset_job("check", selection=dg.AssetSelection.checks(*keys))
        # The partition goes in as the run's tag: a job of checks alone has no partitions of its own to validate.
        tags = {"dagster/partition": partition} if isinstance(partition, str) else None
        if isinstance(partition, tuple):
            tags = partition_range_tags(*partition)
        result = (
            self.definitions(job)
            .resolve_job_def("check")
            .execute_in_process(instance=instance or self.instance, tags=tags, raise_on_error=False)
        )
        evaluations = result.get_asset_check_evaluations()
        assert [e.check_name for e in evaluations] == [check], evaluations
        return evaluations[0]


def trajectory_rows(
    experiment: Experiment, shard: str, documents: pa.Table, output_tokens: list[int], errors: set[int] = frozenset()
) -> pa.Table:
    """What an engine writes for a shard (``OUTPUT_SCHEMA``): here a stand-in's thinking of the given lengths;
    the documents at the positions in ``errors`` made the engine raise."""
    ids = documents["doc_id"].to_pylist()
    engine = experiment.generation.engine
    failed = [i in errors for i in range(len(ids))]
    return pa.table(
        {
            "doc_id": ids,
            "shard": [shard] * len(ids),
            "request_key": request_keys(ids, experiment.generation, engine_version(engine)),
            "source": documents["source"].to_pylist(),
            "thinking": ["" if bad else f"Stand-in thinking about {d}." for d, bad in zip(ids, failed, strict=True)],
            "finish_reason": ["error" if bad else "stop" for bad in failed],
            "prompt_tokens": [64] * len(ids),
            "document_tokens": [48] * len(ids),
            "document_cut": [False] * len(ids),
            "output_tokens": [0 if bad else n for n, bad in zip(output_tokens, failed, strict=True)],
            "error": ["RuntimeError: stand-in engine raised" if bad else None for bad in failed],
            "engine": [engine] * len(ids),
            "batch_wall_s": [0.5] * len(ids),
            "from_cache": [False] * len(ids),
            "queued_at": [None] * len(ids),  # a stand-in's rows carry no engine timestamps
            "started_at": [None] * len(ids),
            "finished_at": [None] * len(ids),
        },
        schema=OUTPUT_SCHEMA,
    )


def write_finished_shard(shard_dir: Path, table: pa.Table) -> None:
    """One part and the shard's ``_SUCCESS.json``, as ``generate_shards`` leaves a finished shard."""
    for stale in shard_dir.glob("part-*.parquet"):
        stale.unlink()
    write_parquet(shard_dir / "part-00000.parquet", table)
    write_json(shard_dir / SUCCESS, summarize(shard_dir.name, table, table.num_rows, 0, 0, 1.0, 10.0).as_dict())


def shards(staged: Staged) -> list[str]:
    return staged.instance.get_dynamic_partitions(f"{staged.experiment.name}__corpus_shards")


def stage(embedded: Experiment, root: Path, instance: dg.DagsterInstance) -> Staged:
    staged = Staged(cut_down(embedded), root / "artifacts", root / "catalog.duckdb", instance)
    assert staged.materialize("corpus").success
    plan, experiment = staged.plan, staged.experiment
    tokenizer = str(resolve_model(experiment.tokenizer, weights=False))
    for shard in shards(staged):
        documents = read_shard(plan.of("corpus").path, shard)
        lengths = [10 * (i + 1) for i in range(documents.num_rows)]
        trajectories = trajectory_rows(experiment, shard, documents, lengths)
        write_finished_shard(plan.of("thinking_trajectories", "tpt").path / shard, trajectories)
        write_parquet(
            plan.of("augmented_documents", "tpt").path / f"{shard}.parquet",
            augment(documents, trajectories, experiment.join_separator),
        )
        job = PackJob(
            str(plan.of("corpus").path / f"{shard}.parquet"),
            str(shard_out_path(plan.of("token_shards", VARIANT).path, shard)),
        )
        pack_parquet(job, tokenizer, experiment.training.seq_len)
    assert staged.materialize(f"data_mixture_{VARIANT}", SCALE).success
    write_training(staged, [10.8, 9.1, 7.4])
    write_scores(staged, {"exact_match,strict-match": 0.25}, primary="exact_match,strict-match")
    return staged


def write_training(staged: Staged, losses: list[float]) -> None:
    """What a finished training run of the vanilla checkpoint leaves (its result and curve), written with the
    engine's own writers; the check reads it back through ``TrainResult.load``."""
    out = staged.plan.of("checkpoint", VARIANT, SCALE).path
    curve = [
        {"step": step, "loss": loss, "lr": 0.002, "grad_norm": 1.0, "tokens_seen": 4096 * step}
        for step, loss in enumerate(losses, start=1)
    ]
    TrainResult(
        steps=len(losses),
        tokens_seen=4096 * len(losses),
        epochs=1.0,
        data_passes=1.0,
        losses=losses,
        final_loss=losses[-1],
        wall_s=1.0,
        tokens_per_s=4096.0,
        n_params=1000,
        flops_per_token=6000,
        checkpoint=out / "checkpoints",
        final_model=out / "final",
        loss_curve=write_curve(out / "loss_curve.csv", curve),
        resumed_from_step=0,
        device="cpu",
    ).save(out)


def write_scores(staged: Staged, metrics: dict[str, float], primary: str) -> None:
    """What a finished benchmark cell leaves (``results.json``), written with the engine's own writer."""
    out = staged.plan.of("benchmark_scores", VARIANT, SCALE, BENCHMARK).path
    result = BenchmarkResult(
        benchmark=BENCHMARK,
        task=f"tpt_{BENCHMARK}",
        primary_metric=primary,
        primary_value=metrics.get(primary, 0.0),
        metrics={m: MetricValue(v, 0.1) for m, v in metrics.items()},
        n_samples=4,
        n_docs=4,
        num_fewshot=5,
        task_version="1",
        wall_s=1.0,
        data=TestSet(BENCHMARK, out / "data.jsonl", 4, 0, "stand-in"),
        samples=[],
    )
    EvaluationRun(out / "final", "hf", {}, "0.4.13", out / "tasks", (), {BENCHMARK: result}, 1.0).save(out)
