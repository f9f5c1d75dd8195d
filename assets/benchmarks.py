"""Benchmark scores, one asset per variant partitioned by (scale x benchmark): each cell is one lm-eval run of one
checkpoint on one benchmark, so a new benchmark or a new checkpoint computes only its own cells."""

import time
import warnings

import dagster as dg

from assets import keys
from assets.partitions import SCALE, score_cells, split_cell
from assets.stage import ACCELERATOR_POOL, finish, markdown_table, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, Evaluator
from tpt.atomic import read_json
from tpt.config import Experiment
from tpt.evaluation.runner import run_benchmarks
from tpt.plan import ExperimentPlan
from tpt.versioning import content_hash

RESULTS_FILE = "results.json"


def benchmark_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [_benchmarks(experiment, variant) for variant in experiment.variants]


def _benchmarks(experiment: Experiment, variant: str) -> dg.AssetsDefinition:
    evaluation = experiment.evaluation
    with warnings.catch_warnings():  # beta in Dagster 1.13; the one mapping from a cell to its checkpoint
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        by_scale = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCALE)

    @stage_asset(
        experiment,
        keys.BENCHMARKS,
        variant=variant,
        deps=[dg.AssetDep(keys.key(experiment, keys.CHECKPOINT, variant), partition_mapping=by_scale)],
        code_version=ExperimentPlan(experiment, ".").asset_code_version("benchmarks", variant),
        kinds={"lm_eval"},
        partitions_def=score_cells(experiment),
        pool=ACCELERATOR_POOL,
        description=f"lm-eval-harness score of each {variant} checkpoint, one partition per (scale, benchmark) "
        "(offline test sets; generated code runs only in the sandbox).",
    )
    def benchmark_scores(
        context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog, evaluator: Evaluator
    ):
        started = time.perf_counter()
        scale, benchmark = split_cell(experiment, context.partition_key)
        plan = storage.plan(experiment)
        stage, checkpoint = plan.benchmarks(variant, scale, benchmark), plan.checkpoint(variant, scale)
        reused = (stage.path / RESULTS_FILE).exists()
        if not reused:
            run_benchmarks(
                checkpoint.path / "final",
                [benchmark],
                work_dir=stage.path,
                limit=evaluation.limit,
                max_gen_toks=evaluation.max_gen_toks,
                batch_size=evaluation.batch_size,
                data_folder=evaluation.data_folder,
                test_set_source=evaluation.test_sets,
                backend=evaluator.backend,
                device=evaluator.resolved_device(),
                sandbox_workers=evaluator.sandbox_workers,
                log=context.log.info,
            )
        run = read_json(stage.path / RESULTS_FILE)
        result = run["benchmarks"][benchmark]
        key = {
            "experiment": experiment.name,
            "variant": variant,
            "benchmarks_version": stage.version,
            "benchmark": benchmark,
        }
        scored = {"scale": scale}
        cat = catalog.open()
        cat.upsert(
            "scores",
            [
                key
                | scored
                | {
                    "metric": metric,
                    "value": value["value"],
                    "stderr": value["stderr"],
                    "n_samples": result["n_samples"],
                    "primary_metric": metric == result["primary_metric"],
                    "task_version": str(result["task_version"]),
                }
                for metric, value in result["metrics"].items()
            ],
        )
        cat.upsert(
            "eval_samples",
            [
                key
                | {
                    "doc_index": s["doc_id"],
                    "prompt": s["prompt"],
                    "generation": s["generation"],
                    "extracted": s["extracted"],
                    "target": s["target"],
                    "correct": bool(s["correct"]),
                }
                for s in result["samples"]
            ],
        )
        figures = {
            "variant": variant,
            "scale": scale,
            "benchmark": benchmark,
            "task": result["task"],
            "metric": result["primary_metric"],
            "score": result["primary_value"],
            "samples": result["n_samples"],
            "test_set_docs": result["n_docs"],
            "test_set_source": result["data"]["source"],
            "test_set_lines_skipped": result["data"]["skipped"],
            "shots": result["num_fewshot"],
            "task_version": str(result["task_version"]),
            "backend": run["backend"],
            "lm_eval_version": run["lm_eval_version"],
            "sandbox_isolation": list(run["sandbox_isolation"]),
            "checkpoint": str(checkpoint.path / "final"),
            "checkpoint_version": checkpoint.version,
        }
        upstream = [{"stage": "checkpoint", "version": checkpoint.version, "depth": 0}]
        upstream += cat.lineage(experiment.name, "checkpoint", checkpoint.version)
        lineage = [
            {"stage": f"[{r['stage']}]({keys.ui_link(experiment, r['stage'], variant)})", "version": r["version"]}
            for r in upstream
        ]
        all_metrics = [
            {"metric": metric, "value": value["value"], "stderr": value["stderr"]}
            for metric, value in result["metrics"].items()
        ]
        return finish(
            context,
            cat,
            experiment.name,
            stage,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            parents=[checkpoint],
            variant=variant,
            content_version=content_hash("scores", result["metrics"], result["samples"]),
            extra_metadata={
                "metrics": markdown_table(all_metrics),
                "lineage": markdown_table(lineage),
                "lineage_command": f"tpt lineage {experiment.name} --variant {variant} --scale {scale} "
                f"--benchmark {benchmark}",
            },
        )

    return benchmark_scores
