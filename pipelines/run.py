"""Materialize an experiment end to end from one command: the corpus first (it registers the shard partitions),
then the graph up to the checkpoints over all shards in one run (so an engine starts once), then one run per
benchmark partition (every variant's checkpoint on that benchmark), then the report. Runs are recorded in the Dagster
instance of ``DAGSTER_HOME`` and show in the UI like any other.

    tpt run embedded            # or: python -m pipelines.run embedded
    tpt estimate embedded       # generation cost estimate, before a backfill
    tpt lineage embedded --variant tpt --benchmark gsm8k   # the inputs behind one score, as JSON
    tpt plan paper_8b --vocab-size 128256 --gpu-hours 20000 --raw-tokens 10e9 --augmented-tokens 20e9
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.partitions import corpus_shards
from pipelines.definitions import build_definitions, default_resources
from pipelines.experiments import experiment_path
from tpt.config import ConfigError, Experiment, load_experiment
from tpt.errors import InputError
from tpt.models import resolve_model
from tpt.tokenization import load_tokenizer, special_ids
from tpt.training.planner import assess, compute_optimal, gpu_hours_to_flops, thinking_split


def run_experiment(
    defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance
) -> list[dg.ExecuteInProcessResult]:
    """Corpus, full graph, each benchmark partition, report. A failed corpus or graph run stops there; a failed
    benchmark partition does not stop the others, but the report then waits for a complete matrix."""
    results: list[dg.ExecuteInProcessResult] = []

    def run(job: str, **kwargs) -> bool:
        result = defs.resolve_job_def(f"{experiment.name}_{job}").execute_in_process(
            instance=instance, raise_on_error=False, **kwargs
        )
        results.append(result)
        return result.success

    if not run("corpus"):
        return results
    shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    if not run(
        "full_graph", tags={ASSET_PARTITION_RANGE_START_TAG: shards[0], ASSET_PARTITION_RANGE_END_TAG: shards[-1]}
    ):
        return results
    scored = [run("benchmarks", partition_key=benchmark) for benchmark in experiment.evaluation.benchmarks]
    if all(scored):
        run("report")
    return results


def estimate(defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(f"{experiment.name}_generation_estimate").execute_in_process(
        instance=instance, raise_on_error=False
    )


def lineage(experiment: Experiment, variant: str, benchmark: str) -> dict:
    """The inputs behind one score of the current config, from the catalog of the default resources."""
    if variant not in experiment.variants:
        raise ConfigError(f"variant {variant!r} is not one of {list(experiment.variants)}")
    if benchmark not in experiment.evaluation.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not one of {list(experiment.evaluation.benchmarks)}")
    resources = default_resources()
    version = resources["storage"].plan(experiment).benchmarks(variant, benchmark).version
    found = resources["catalog"].open().score_inputs(experiment.name, variant, benchmark, version)
    if not found["scores"]:
        raise ConfigError(f"no score of {variant} on {benchmark} at version {version}; run the benchmarks first")
    return {"experiment": experiment.name, "variant": variant, "benchmark": benchmark, "version": version} | found


def plan(experiment: Experiment, args: argparse.Namespace) -> dict:
    """Where the experiment's training sits against the compute-optimal point, and what a budget would buy."""
    if args.vocab_size is not None:
        vocab_size = args.vocab_size
    else:
        vocab_size = special_ids(load_tokenizer(resolve_model(experiment.tokenizer, weights=False))).vocab_size
    out: dict = {"experiment": experiment.name, "vocab_size": vocab_size}
    out["config"] = assess(experiment.training, vocab_size).as_metadata()
    if args.gpu_hours is not None:
        out["budget"] = asdict(compute_optimal(gpu_hours_to_flops(args.gpu_hours, args.gpu, args.mfu)))
    if args.raw_tokens is not None:
        split = thinking_split(experiment.training.token_budget, args.raw_tokens, args.augmented_tokens or 0)
        out["tpt_split"] = asdict(split) | {"vanilla_epochs": experiment.training.token_budget / args.raw_tokens}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpt", description="Run TPT experiments through Dagster.")
    parser.add_argument("command", choices=["run", "estimate", "lineage", "plan"])
    parser.add_argument("experiment", nargs="?", default="embedded", help="shipped name or path to a YAML file")
    parser.add_argument("--variant", default="tpt", help="lineage: the variant whose score to trace")
    parser.add_argument("--benchmark", default="gsm8k", help="lineage: the benchmark whose score to trace")
    parser.add_argument("--vocab-size", type=int, help="plan: instead of loading the tokenizer")
    parser.add_argument("--gpu-hours", type=float, help="plan: a compute budget to size a model for")
    parser.add_argument("--gpu", default="h100", help="plan: the GPU of --gpu-hours")
    parser.add_argument("--mfu", type=float, default=0.4, help="plan: expected model FLOPs utilisation")
    parser.add_argument("--raw-tokens", type=float, help="plan: raw document tokens available")
    parser.add_argument("--augmented-tokens", type=float, help="plan: the same documents with thinking, in tokens")
    args = parser.parse_args(argv)
    try:
        experiment = load_experiment(experiment_path(args.experiment))
        if args.command == "lineage":
            print(json.dumps(lineage(experiment, args.variant, args.benchmark), indent=1, default=str))
            return 0
        if args.command == "plan":
            print(json.dumps(plan(experiment, args), indent=1))
            return 0
    except InputError as exc:
        print(f"tpt: {exc}", file=sys.stderr)
        return 2
    defs = build_definitions([experiment])
    with dg.DagsterInstance.get() as instance:
        if args.command == "estimate":
            results = [estimate(defs, experiment, instance)]
        else:
            results = run_experiment(defs, experiment, instance)
    failed = [r for r in results if not r.success]
    for result in failed:
        print(
            f"tpt: run {result.run_id} of {result.job_def.name} failed; see the run log in the Dagster UI",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
