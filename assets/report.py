import time

import dagster as dg

from assets import keys
from assets.stage import markdown_table, png_markdown, stage_asset
from resources import ArtifactStorage, DuckDBCatalog
from tpt.atomic import write_json
from tpt.config import Experiment
from tpt.plots import grouped_bars, line_plot
from tpt.versioning import content_hash

# For context only: the paper's results (Wang et al., 2025) as DESIGN.md quotes them, never compared as if
# comparable. It quotes no HumanEval or MBPP figures, so those cells stay empty.
PAPER = {
    "8B 100B tok": {"gsm8k": {"vanilla": 0.192, "tpt": 0.501}, "math": {"vanilla": 0.091, "tpt": 0.218}},
    "8B 40B tok (10B raw)": {"gsm8k": {"vanilla": 0.067, "tpt": 0.305}, "math": {"vanilla": 0.048, "tpt": 0.129}},
}


def report_asset(experiment: Experiment) -> dg.AssetsDefinition:
    variants = experiment.variants
    deps = [keys.key(experiment, keys.BENCHMARKS, v) for v in variants]
    deps += [keys.key(experiment, keys.CHECKPOINT, v) for v in variants]

    @stage_asset(
        experiment,
        keys.REPORT,
        deps=deps,
        kinds={"duckdb"},
        description="Vanilla vs TPT side by side: benchmark scores, tokens seen, loss curves, read from the catalog. "
        "Rebuilt once every benchmark cell has a score and one of them changes (sensor <experiment>_report).",
        automation_condition=dg.AutomationCondition.eager(),
    )
    def report(context: dg.AssetExecutionContext, storage: ArtifactStorage, catalog: DuckDBCatalog):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        cat = catalog.open()
        scores, runs, curves = {}, {}, {}
        benchmarks = experiment.evaluation.benchmarks
        for v in variants:
            ckpt_version = plan.checkpoint(v).version
            for b in benchmarks:
                for row in cat.query(
                    "SELECT metric, value FROM scores WHERE experiment = ? AND variant = ? AND benchmark = ? "
                    "AND benchmarks_version = ? AND primary_metric",
                    [experiment.name, v, b, plan.benchmarks(v, b).version],
                ):
                    scores.setdefault(b, {"metric": row["metric"]})[v] = row["value"]
            found = cat.query(
                "SELECT tokens_seen, final_loss, steps, parameters FROM checkpoints WHERE experiment = ? "
                "AND variant = ? AND checkpoint_version = ?",
                [experiment.name, v, ckpt_version],
            )
            if not found:
                raise dg.Failure(f"no checkpoint of variant {v} in the catalog; materialize {keys.CHECKPOINT}_{v}")
            runs[v] = found[0]
            curve = cat.query(
                "SELECT tokens_seen, loss FROM loss_curve WHERE experiment = ? AND variant = ? "
                "AND checkpoint_version = ? ORDER BY step",
                [experiment.name, v, ckpt_version],
            )
            curves[v] = ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])
        missing = [b for b in benchmarks if any(v not in scores.get(b, {}) for v in variants)]
        if missing:
            raise dg.Failure(f"scores missing for {missing}; materialize those benchmark partitions first")
        table = [
            {"benchmark": b, "metric": s["metric"], **{v: s[v] for v in variants}}
            | ({"tpt - vanilla": s["tpt"] - s["vanilla"]} if {"tpt", "vanilla"} <= set(variants) else {})
            | {
                f"paper {setting} {v}": paper.get(b, {}).get(v, "")
                for setting, paper in PAPER.items()
                for v in variants
            }
            for b, s in scores.items()
        ]
        training = [{"variant": v, **runs[v]} for v in variants]
        version = content_hash("report", [plan.benchmarks(v, b).version for v in variants for b in benchmarks])
        write_json(plan.root / "report" / version / "report.json", {"scores": table, "training": training})
        score_plot = grouped_bars(
            {b: {v: s[v] for v in variants} for b, s in scores.items()},
            title=f"{experiment.name}: primary metric by benchmark",
            ylabel="score",
        )
        loss_plot = line_plot(curves, title=f"{experiment.name}: training loss", xlabel="tokens", ylabel="loss")
        context.log.info(
            "scores: "
            + "; ".join(f"{r['benchmark']}: " + ", ".join(f"{v} {r[v]:.3f}" for v in variants) for r in table)
        )
        return dg.MaterializeResult(
            metadata={
                "scores": markdown_table(table),
                "training": markdown_table(training),
                "score_comparison": png_markdown(score_plot, "scores"),
                "loss_curves": png_markdown(loss_plot, "loss curves"),
                "tokens_seen": dg.MetadataValue.json({v: runs[v]["tokens_seen"] for v in variants}),
                "real_tokens_seen_by_source": dg.MetadataValue.json(
                    {
                        v: {
                            r["source"]: r["real_tokens"]
                            for r in cat.tokens_seen(experiment.name, plan.checkpoint(v).version)
                        }
                        for v in variants
                    }
                ),
                "wall_s": round(time.perf_counter() - started, 3),
                "note": "Paper numbers (8B models; DESIGN.md quotes GSM8K and MATH only) are shown for context, "
                "not comparable here.",
            },
            data_version=dg.DataVersion(version),
        )

    return report
