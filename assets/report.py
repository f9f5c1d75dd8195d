"""The report: vanilla vs TPT side by side (scores, tokens seen, loss curves), read through the engines' finished
results of every checkpoint and benchmark cell of the experiment matrix."""

from assets.stage import StageResult, StageRun, markdown_table, png_markdown
from tpt.atomic import write_json
from tpt.errors import InputError
from tpt.evaluation.runner import EvaluationRun
from tpt.plots import grouped_bars, line_plot
from tpt.stages import Read, Stage, no_config
from tpt.tokenization.mixture import ResolvedMixture
from tpt.training import TrainResult

# For context only: the paper's results (Wang et al., 2025) as DESIGN.md quotes them, never compared as if
# comparable. It quotes no HumanEval or MBPP figures, so those cells stay empty.
PAPER = {
    "8B 100B tok": {"gsm8k": {"vanilla": 0.192, "tpt": 0.501}, "math": {"vanilla": 0.091, "tpt": 0.218}},
    "8B 40B tok (10B raw)": {"gsm8k": {"vanilla": 0.067, "tpt": 0.305}, "math": {"vanilla": 0.048, "tpt": 0.129}},
}


class IncompleteMatrixError(InputError, RuntimeError):
    pass


def report(run: StageRun) -> StageResult:
    experiment, outputs = run.experiment, run.outputs
    variants, scales, benchmarks = experiment.variants, experiment.scale_names, experiment.evaluation.benchmarks
    scores, trained, curves, by_source, missing = {}, {}, {}, {}, []
    for scale in scales:
        for v in variants:
            result = TrainResult.load(outputs.of("checkpoint", v, scale).path)
            if result is None:
                raise IncompleteMatrixError(f"no {v} checkpoint of scale {scale}; materialize checkpoint_{v} first")
            label = _label(scale, v, scales)
            trained[scale, v] = {"tokens_seen": result.tokens_seen, "final_loss": result.final_loss}
            trained[scale, v] |= {"steps": result.steps, "parameters": result.n_params}
            curve = result.read_curve()
            curves[label] = ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])
            mixture = ResolvedMixture.finished(outputs.of("data_mixture", v, scale).path)
            by_source[label] = {s.source: s.selected_tokens for s in mixture.shares} if mixture else {}
            for b in benchmarks:
                cell = EvaluationRun.load(outputs.of("benchmark_scores", v, scale, b).path)
                if cell is None:
                    missing.append(f"{v} {b}|{scale}")
                    continue
                found = cell.benchmarks[b]
                scores.setdefault((scale, b), {"metric": found.primary_metric})[v] = found.primary_value
    if missing:
        raise IncompleteMatrixError(f"scores missing for {missing}; materialize those benchmark partitions first")
    table = [
        {"scale": scale, "benchmark": b, "metric": s["metric"], **{v: s[v] for v in variants}}
        | ({"tpt - vanilla": s["tpt"] - s["vanilla"]} if {"tpt", "vanilla"} <= set(variants) else {})
        | {f"paper {setting} {v}": paper.get(b, {}).get(v, "") for setting, paper in PAPER.items() for v in variants}
        for (scale, b), s in scores.items()
    ]
    training = [{"scale": scale, "variant": v, **trained[scale, v]} for scale in scales for v in variants]
    sft_table = _sft_scores(run) if experiment.sft is not None else []
    path = run.output.path / "report.json"  # its version names every cell and checkpoint it read
    reused = path.exists()
    write_json(path, {"scores": table, "training": training} | ({"sft_scores": sft_table} if sft_table else {}))
    score_plot = grouped_bars(
        {_label(scale, b, scales): {v: s[v] for v in variants} for (scale, b), s in scores.items()},
        title=f"{experiment.name}: primary metric by benchmark",
        ylabel="score",
    )
    loss_plot = line_plot(curves, title=f"{experiment.name}: training loss", xlabel="tokens", ylabel="loss")
    run.log(
        "scores: "
        + "; ".join(
            f"{_label(r['scale'], r['benchmark'], scales)}: " + ", ".join(f"{v} {r[v]:.3f}" for v in variants)
            for r in table
        )
    )
    figures = {
        "tokens_seen": {
            _label(scale, v, scales): trained[scale, v]["tokens_seen"] for scale in scales for v in variants
        },
        "real_tokens_seen_by_source": by_source,
    }
    extra = {
        "scores": markdown_table(table),
        "training": markdown_table(training),
        "score_comparison": png_markdown(score_plot, "scores"),
        "loss_curves": png_markdown(loss_plot, "loss curves"),
        **({"sft_scores": markdown_table(sft_table)} if sft_table else {}),
        "note": "Paper numbers (8B models; DESIGN.md quotes GSM8K and MATH only) are shown for context, not "
        "comparable here.",
    }
    return StageResult(reused=reused, figures=figures, extra_metadata=extra)


def _sft_scores(run: StageRun) -> list[dict]:
    """Vanilla vs TPT after SFT, beside the pretrained (or mid-trained) score of the same cell."""
    experiment, outputs, variants = run.experiment, run.outputs, run.experiment.variants
    rows, missing = [], []
    for scale in experiment.scale_names:
        for b in experiment.evaluation.benchmarks:
            row: dict = {"scale": scale, "benchmark": b}
            for v in variants:
                before = EvaluationRun.load(outputs.of("benchmark_scores", v, scale, b).path)
                after = EvaluationRun.load(outputs.of("sft_benchmark_scores", v, scale, b).path)
                if after is None:
                    missing.append(f"{v} {b}|{scale}")
                    continue
                row["metric"] = after.benchmarks[b].primary_metric
                row[f"{v} before SFT"] = before.benchmarks[b].primary_value if before else None
                row[f"{v} after SFT"] = after.benchmarks[b].primary_value
            rows.append(row)
    if missing:
        raise IncompleteMatrixError(f"SFT scores missing for {missing}; materialize those sft_benchmark_scores first")
    return rows


def _label(scale: str, name: str, scales: list[str]) -> str:
    """A name alone when the matrix has one scale (the common case), else ``name@scale``."""
    return name if len(scales) == 1 else f"{name}@{scale}"


STAGE = Stage(
    name="report",
    revision=1,
    own=no_config,
    reads=(
        Read("benchmark_scores", every_partition=True),
        Read("checkpoint", every_partition=True),
        Read("sft_benchmark_scores", every_partition=True),  # only in experiments with sft
    ),
    job="report",
    kinds=frozenset({"python"}),
    eager=True,
    description="Vanilla vs TPT side by side: benchmark scores (before and after SFT where configured), tokens "
    "seen, loss curves. Rebuilt once every "
    "benchmark cell has a score and one of them changes (sensor <experiment>_report).",
    compute=report,
)
