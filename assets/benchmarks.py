import time

import dagster as dg

from assets import keys
from assets.stage import finish, markdown_table, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, Evaluator
from tpt.atomic import read_json
from tpt.config import Experiment
from tpt.evaluation.runner import run_benchmarks
from tpt.plan import ExperimentPlan

RESULTS_FILE = "results.json"


def benchmark_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [_benchmarks(experiment, variant) for variant in experiment.variants]


def _benchmarks(experiment: Experiment, variant: str) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").benchmarks(variant).code_version
    evaluation = experiment.evaluation

    @stage_asset(
        experiment,
        keys.BENCHMARKS,
        variant=variant,
        deps=[keys.key(experiment, keys.CHECKPOINT, variant)],
        code_version=code_version,
        kinds={"lm_eval"},
        description=f"lm-eval-harness scores of the {variant} checkpoint on {', '.join(evaluation.benchmarks)} "
        "(offline test sets; generated code runs only in the sandbox).",
    )
    def benchmark_scores(
        context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog, evaluator: Evaluator
    ):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        stage, checkpoint = plan.benchmarks(variant), plan.checkpoint(variant)
        reused = (stage.path / RESULTS_FILE).exists()
        if not reused:
            run_benchmarks(
                checkpoint.path / "final",
                evaluation.benchmarks,
                work_dir=stage.path,
                limit=evaluation.limit,
                max_gen_toks=evaluation.max_gen_toks,
                batch_size=evaluation.batch_size,
                data_folder=evaluation.data_folder,
                backend=evaluator.backend,
                device=evaluator.resolved_device(),
                sandbox_workers=evaluator.sandbox_workers,
                log=context.log.info,
            )
        run = read_json(stage.path / RESULTS_FILE)
        cat = catalog.open()
        key = {"experiment": experiment.name, "variant": variant, "benchmarks_version": stage.version}
        score_rows, sample_rows, table = [], [], []
        for name, result in run["benchmarks"].items():
            for metric, value in result["metrics"].items():
                score_rows.append(
                    key
                    | {
                        "benchmark": name,
                        "metric": metric,
                        "value": value["value"],
                        "stderr": value["stderr"],
                        "n_samples": result["n_samples"],
                        "primary_metric": metric == result["primary_metric"],
                        "task_version": str(result["task_version"]),
                    }
                )
            sample_rows += [
                key
                | {
                    "benchmark": name,
                    "doc_index": s["doc_id"],
                    "prompt": s["prompt"],
                    "generation": s["generation"],
                    "extracted": s["extracted"],
                    "target": s["target"],
                    "correct": bool(s["correct"]),
                }
                for s in result["samples"]
            ]
            table.append(
                {
                    "benchmark": name,
                    "metric": result["primary_metric"],
                    "score": result["primary_value"],
                    "samples": result["n_samples"],
                    "shots": result["num_fewshot"],
                    "task_version": result["task_version"],
                    "wall_s": result["wall_s"],
                }
            )
        cat.upsert("scores", score_rows)
        cat.upsert("eval_samples", sample_rows)
        figures = {
            "variant": variant,
            **{f"{r['benchmark']}_score": r["score"] for r in table},
            "samples_per_benchmark": evaluation.limit or "all",
            "backend": run["backend"],
            "lm_eval_version": run["lm_eval_version"],
            "sandbox_isolation": list(run["sandbox_isolation"]),
            "checkpoint": str(checkpoint.path / "final"),
        }
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
            extra_metadata={"scores": markdown_table(table)},
        )

    return benchmark_scores
