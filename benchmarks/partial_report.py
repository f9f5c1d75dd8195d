"""The report's comparison table over the cells of an experiment that have finished so far: for a long run (the CPU
ablation) still in progress, or stopped, every (scale, benchmark, metric) whose cells exist for every variant at the
same seeds, compared exactly as the report asset compares them (``assets.report.comparison_table``).

    DAGSTER_HOME=... TPT_ARTIFACT_ROOT=... PYTHONPATH=$PWD python benchmarks/partial_report.py cpu_ablation
"""

from __future__ import annotations

import argparse

from assets.report import GOLD_METRIC, comparison_table, text_table
from assets.stage import outputs_in
from pipelines.definitions import default_resources
from pipelines.experiments import experiment_path
from tpt.config import load_experiment
from tpt.evaluation.runner import EvaluationRun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    args = parser.parse_args()
    experiment = load_experiment(experiment_path(args.experiment))
    resources = default_resources()
    outputs = outputs_in(experiment, resources)
    found: dict[tuple, dict[str, list]] = {}  # (scale, benchmark, metric) -> variant -> [{item: value} per seed]
    for run in experiment.runs:
        for benchmark in experiment.evaluation.benchmarks:
            cells = {
                v: EvaluationRun.load(outputs.of("benchmark_scores", v, run.key, benchmark).path)
                for v in experiment.variants
            }
            if any(c is None for c in cells.values()):
                continue  # a seed counts only where every variant has it
            for v, cell in cells.items():
                result = cell.benchmarks[benchmark]
                per = {(run.scale, benchmark, result.primary_metric): {s.doc_id: s.correct for s in result.samples}}
                if result.gold is not None:
                    per[(run.scale, benchmark, GOLD_METRIC)] = {i.doc_id: i.bpb for i in result.gold.items}
                for key, values in per.items():
                    found.setdefault(key, {}).setdefault(v, []).append(values)
    per_item = {(*key, v): runs for key, by_variant in found.items() for v, runs in by_variant.items()}
    seeds = {key: len(next(iter(by_variant.values()))) for key, by_variant in found.items()}
    print(f"finished seeds per (scale, benchmark, metric): {seeds}")
    rows = comparison_table(experiment, per_item)
    for row in rows:
        row["seeds"] = seeds[row["scale"], row["benchmark"], row["metric"]]
    print(text_table(rows))


if __name__ == "__main__":
    main()
