"""The report: does each TPT variant beat vanilla? Per benchmark and metric (the benchmark's own, and the gold
solution's bits per byte), each variant's value with its standard error, the paired difference from vanilla with a
95% interval and whether it excludes zero; tokens seen and loss curves beside. Read through the engines' finished
results of every checkpoint and benchmark cell of the experiment matrix (every scale and seed). An experiment with
SFT gets one comparison per stage: the pretrained (or mid-trained) models, and the same after SFT."""

from assets.stage import StageResult, StageRun, markdown_table, png_markdown
from tpt.atomic import write_json
from tpt.config import VANILLA, Experiment
from tpt.errors import InputError
from tpt.evaluation.compare import estimate, paired_difference
from tpt.evaluation.runner import BenchmarkResult, EvaluationRun
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
    variants, runs, benchmarks = experiment.variants, experiment.runs, experiment.evaluation.benchmarks
    keys = [r.key for r in runs]
    trained, curves, by_source, missing = {}, {}, {}, []
    per_item: dict[str, dict] = {SCORES: {}} | ({SFT_SCORES: {}} if experiment.sft is not None else {})
    for training_run in runs:
        key = training_run.key
        for v in variants:
            result = TrainResult.load(outputs.of("checkpoint", v, key).path)
            if result is None:
                raise IncompleteMatrixError(f"no {v} checkpoint of scale {key}; materialize checkpoint_{v} first")
            label = _label(key, v, keys)
            trained[key, v] = {"tokens_seen": result.tokens_seen, "final_loss": result.final_loss}
            trained[key, v] |= {"steps": result.steps, "parameters": result.n_params}
            curve = result.read_curve()
            curves[label] = ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])
            mixture = ResolvedMixture.finished(outputs.of("data_mixture", v, key).path)
            by_source[label] = {s.source: s.selected_tokens for s in mixture.shares} if mixture else {}
            for stage, found_items in per_item.items():
                for b in benchmarks:
                    cell = EvaluationRun.load(outputs.of(stage, v, key, b).path)
                    if cell is None:
                        missing.append(f"{stage} {v} {b}|{key}")
                        continue
                    _add_items(found_items, training_run.scale, v, cell.benchmarks[b])
    if missing:
        raise IncompleteMatrixError(f"scores missing for {missing}; materialize those benchmark partitions first")
    table = comparison_table(experiment, per_item[SCORES])
    if SFT_SCORES in per_item:  # one comparison per stage: the pretrained (or mid-trained) models, then after SFT
        sft = comparison_table(experiment, per_item[SFT_SCORES], paper=False)
        table = [{"stage": "pretrained"} | r for r in table] + [{"stage": "sft"} | r for r in sft]
    training = [{"scale": key, "variant": v, **trained[key, v]} for key in keys for v in variants]
    path = run.output.path / "report.json"  # its version names every cell and checkpoint it read
    reused = path.exists()
    write_json(path, {"scores": table, "training": training})
    scales = [s.name for s in experiment.scales]
    plots = {}
    for metric, title in ((PRIMARY, "primary metric"), (GOLD_METRIC, "gold bits per byte (lower is better)")):
        rows = [r for r in table if (r["metric"] == GOLD_METRIC) == (metric == GOLD_METRIC)]
        if rows:
            plots[metric] = grouped_bars(
                {_bar(r, scales): {v: r[v] for v in variants} for r in rows},
                errors={_bar(r, scales): {v: 1.96 * r[f"{v} ±"] for v in variants} for r in rows},
                title=f"{experiment.name}: {title} (bars: 95% item interval)",
                ylabel=metric,
            )
    loss_plot = line_plot(curves, title=f"{experiment.name}: training loss", xlabel="tokens", ylabel="loss")
    run.log("scores:\n" + text_table(table))
    figures = {
        "tokens_seen": {_label(key, v, keys): trained[key, v]["tokens_seen"] for key in keys for v in variants},
        "real_tokens_seen_by_source": by_source,
    }
    extra = {
        "scores": markdown_table(table),
        "training": markdown_table(training),
        "score_comparison": png_markdown(plots[PRIMARY], "scores"),
        **({"gold_bpb_comparison": png_markdown(plots[GOLD_METRIC], "gold bpb")} if GOLD_METRIC in plots else {}),
        "loss_curves": png_markdown(loss_plot, "loss curves"),
        "note": "Each value is the mean over items (and over seeds); ± is its standard error over items; "
        "<variant> - vanilla is the paired difference over the same items and seeds with its 95% paired bootstrap "
        "interval. Paper numbers (8B models; DESIGN.md quotes GSM8K and MATH only) are shown for context, not "
        "comparable here.",
    }
    return StageResult(reused=reused, figures=figures, extra_metadata=extra)


PRIMARY = "primary"
GOLD_METRIC = "gold_bpb"
SCORES, SFT_SCORES = "benchmark_scores", "sft_benchmark_scores"


def _add_items(per_item: dict[tuple, list], scale: str, variant: str, found: BenchmarkResult) -> None:
    """One cell's per-item values (its metric's, and the gold bits per byte) under (scale, benchmark, metric,
    variant); seeds of the same scale append to the same key."""
    per_item.setdefault((scale, found.benchmark, found.primary_metric, variant), []).append(
        {s.doc_id: s.correct for s in found.samples}
    )
    if found.gold is not None:
        per_item.setdefault((scale, found.benchmark, GOLD_METRIC, variant), []).append(
            {i.doc_id: i.bpb for i in found.gold.items}
        )


def comparison_table(
    experiment: Experiment, per_item: dict[tuple[str, str, str, str], list], *, paper: bool = True
) -> list[dict]:
    """One row per (scale, benchmark, metric): each variant's value ± its standard error (and its spread over
    seeds), each TPT variant's paired difference from vanilla with its 95% interval, and the paper's pretraining
    figures (``paper``; left out for SFT models, which they do not describe)."""
    variants = experiment.variants
    rows = []
    for scale, b, metric in dict.fromkeys(k[:3] for k in per_item):
        row: dict = {"scale": scale, "benchmark": b, "metric": metric}
        estimates = {v: estimate(per_item[scale, b, metric, v]) for v in variants}
        row |= {"items": min(e.n_items for e in estimates.values()), "seeds": len(experiment.seeds or (None,))}
        for v, found in estimates.items():
            row |= {v: found.mean, f"{v} ±": found.stderr}
            if experiment.seeds and len(experiment.seeds) > 1:
                row[f"{v} seed sd"] = found.seed_std
        if VANILLA in variants:
            for v in experiment.tpt_variants:
                diff = paired_difference(per_item[scale, b, metric, v], per_item[scale, b, metric, VANILLA])
                row |= {f"{v} - vanilla": diff.mean, f"{v} 95% CI": f"[{diff.low:+.4f}, {diff.high:+.4f}]"}
                row[f"{v} excludes 0"] = diff.excludes_zero
        is_gold = metric == GOLD_METRIC or not paper
        row |= {
            f"paper {setting} {v}": "" if is_gold else figures.get(b, {}).get(v, "")
            for setting, figures in PAPER.items()
            for v in variants
        }
        rows.append(row)
    return rows


def text_table(rows: list[dict], *, paper: bool = False) -> str:
    """The comparison as the terminal shows it: fixed-width columns, paper columns left out unless asked."""
    if not rows:
        return "(no scores)"
    columns = [c for c in dict.fromkeys(c for r in rows for c in r) if paper or not c.startswith("paper ")]
    cells = [[_text(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _bar(row: dict, scales: list[str]) -> str:
    """A bar group's name: the benchmark (at its scale), after SFT marked as such."""
    label = _label(row["scale"], row["benchmark"], scales)
    return f"{label} (SFT)" if row.get("stage") == "sft" else label


def _label(scale: str, name: str, scales: list[str]) -> str:
    """A name alone when the matrix has one scale (the common case), else ``name@scale``."""
    return name if len(scales) == 1 else f"{name}@{scale}"


STAGE = Stage(
    name="report",
    revision=2,  # 2: intervals, the continuous metric, seeds
    own=no_config,
    reads=(
        Read("benchmark_scores", every_partition=True),
        Read("checkpoint", every_partition=True),
        Read("sft_benchmark_scores", every_partition=True),  # only in experiments with sft
    ),
    job="report",
    kinds=frozenset({"python"}),
    eager=True,
    description="Each TPT variant against vanilla: per benchmark and metric (accuracy and gold bits per byte) the "
    "values with standard errors, paired differences with 95% intervals (before and after SFT where configured), "
    "tokens seen, loss curves. Rebuilt once every "
    "benchmark cell has a score and one of them changes (sensor <experiment>_report).",
    compute=report,
)
