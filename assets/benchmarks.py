"""Benchmark scores, one asset per variant partitioned by (scale x benchmark): each cell is one lm-eval run of one
checkpoint on one benchmark, so a new benchmark or a new checkpoint computes only its own cells."""

from assets.stage import StageResult, StageRun, markdown_table, ui_link
from tpt.catalog.schema import TABLES
from tpt.config import Experiment
from tpt.evaluation.runner import EvaluationRun, run_benchmarks
from tpt.stages import Instance, Output, Outputs, Read, Stage
from tpt.versioning import content_hash, versioned_fields


def _own(experiment: Experiment, instance: Instance) -> dict:
    """The evaluation settings every cell shares, and the cell's benchmark; not the list of benchmarks, so adding
    one leaves the finished cells of the others as they are."""
    evaluation = versioned_fields(experiment.evaluation)
    del evaluation["benchmarks"]
    return {"variant": instance.variant, "benchmark": instance.benchmark, "evaluation": evaluation}


def benchmark_scores(run: StageRun) -> StageResult:
    return scores_of(run, "checkpoint")


def scores_of(run: StageRun, checkpoint_stage: str, *, chat: bool = False, tables: str = "") -> StageResult:
    """One cell of ``checkpoint_stage``'s scores; ``chat``: prompts through the model's chat template (SFT);
    ``tables``: the prefix of the catalog tables its rows go to (``sft_``: ``sft_scores``, ``sft_eval_samples``)."""
    out, benchmark, checkpoint = run.output, run.instance.benchmark, run.input(checkpoint_stage)
    evaluation, evaluator = run.experiment.evaluation, run.resources.evaluator
    finished = EvaluationRun.load(out.path)
    if finished is None:
        finished = run_benchmarks(
            checkpoint.path / "final",
            [benchmark],
            work_dir=out.path,
            limit=evaluation.limit,
            max_gen_toks=evaluation.max_gen_toks,
            batch_size=evaluation.batch_size,
            data_folder=evaluation.data_folder,
            test_set_source=evaluation.test_sets,
            backend=evaluator.backend,
            device=evaluator.resolved_device(),
            sandbox_workers=evaluator.sandbox_workers,
            gold=evaluation.gold,
            gold_limit=evaluation.gold_limit,
            log=run.log,
            apply_chat_template=chat,
        )
        reused = False
    else:
        reused = True
    result = finished.benchmarks[benchmark]
    gold = result.gold
    score_table, sample_table = f"{tables}scores", f"{tables}eval_samples"
    key = {"experiment": run.experiment.name, "variant": run.instance.variant, TABLES[score_table].version: out.version}
    key |= {"benchmark": benchmark}
    scores = [
        key
        | {"scale": run.instance.scale, "metric": metric, "value": v.value, "stderr": v.stderr}
        | {"n_samples": result.n_samples, "primary_metric": metric == result.primary_metric}
        | {"task_version": str(result.task_version)}
        for metric, v in result.metrics.items()
    ] + [
        key
        | {"scale": run.instance.scale, "metric": metric, "value": v.value, "stderr": v.stderr}
        | {"n_samples": gold.n_items, "primary_metric": False, "task_version": str(gold.task_version)}
        for metric, v in (gold.metrics.items() if gold else [])
    ]
    samples = [
        key
        | {"doc_index": s.doc_id, "prompt": s.prompt, "generation": s.generation, "extracted": s.extracted}
        | {"target": s.target, "correct": bool(s.correct)}
        for s in result.samples
    ]
    figures = {
        "variant": run.instance.variant,
        "scale": run.instance.scale,
        "benchmark": benchmark,
        "task": result.task,
        "metric": result.primary_metric,
        "score": result.primary_value,
        "samples": result.n_samples,
        "test_set_docs": result.n_docs,
        "test_set_source": result.data.source,
        "test_set_lines_skipped": result.data.skipped,
        **(
            {
                "gold_bpb": gold.bpb.value,
                "gold_bpb_stderr": gold.bpb.stderr,
                "gold_items": gold.n_items,
                "gold_items_without_gold_skipped": gold.skipped_no_gold,
                "gold_s_per_item": round(gold.wall_s / max(1, gold.n_items), 4),
            }
            if gold
            else {}
        ),
        "shots": result.num_fewshot,
        "task_version": str(result.task_version),
        "backend": finished.backend,
        "lm_eval_version": finished.lm_eval_version,
        "sandbox_isolation": list(finished.sandbox_isolation),
        "checkpoint": str(checkpoint.path / "final"),
        "checkpoint_version": checkpoint.version,
    }
    metrics = [
        {"metric": m, "value": v.value, "stderr": v.stderr}
        for m, v in [*result.metrics.items(), *(gold.metrics.items() if gold else [])]
    ]
    lineage = [
        {"stage": f"[{o.stage}{'_' + o.variant if o.variant else ''}]({ui_link(run.experiment, o)})"}
        | {"version": o.version, "depth": depth}
        for o, depth in upstream_outputs(run.outputs, out)
    ]
    command = f"tpt lineage {run.experiment.name} --variant {run.instance.variant} --scale {run.instance.scale} "
    command += "--sft " if tables else ""
    return StageResult(
        reused,
        figures,
        rows={score_table: scores, sample_table: samples},
        content_version=content_hash(
            "scores",
            {m: (v.value, v.stderr) for m, v in result.metrics.items()},
            [s.generation for s in result.samples],
            [(i.doc_id, i.bpb) for i in gold.items] if gold else None,
        ),
        extra_metadata={
            "metrics": markdown_table(metrics),
            "lineage": markdown_table(lineage),
            "lineage_command": command + f"--benchmark {benchmark}",
        },
    )


def upstream_outputs(outputs: Outputs, output: Output) -> list[tuple[Output, int]]:
    """Every output behind ``output`` with its distance, nearest first, each once (from the declarations)."""
    seen: dict[tuple[str, str], None] = {}
    found, frontier, depth = [], [output], 0
    while frontier:
        depth += 1
        parents = [p for o in frontier for p in outputs.parents(o.stage, o.instance)]
        frontier = []
        for parent in parents:
            if (parent.stage, parent.version) not in seen:
                seen[parent.stage, parent.version] = None
                found.append((parent, depth))
                frontier.append(parent)
    return found


STAGE = Stage(
    name="benchmark_scores",
    posix=True,
    revision=2,  # 2: the continuous metric (gold bits per byte)
    own=_own,
    reads=(Read("checkpoint"),),
    partitioning="cells",
    per_variant=True,
    settings=("evaluator",),
    job="benchmarks",
    kinds=frozenset({"lm_eval"}),
    accelerator=True,
    description="lm-eval-harness score of each {variant} checkpoint, one partition per (scale, benchmark): the "
    "benchmark's own metric and the gold solution's bits per byte after the few-shot prompt (offline test sets; "
    "generated code runs only in the sandbox).",
    compute=benchmark_scores,
)
