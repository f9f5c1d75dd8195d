"""Materialize an experiment end to end from one command: the corpus first (it registers the shard partitions),
the generation cost estimate (so a full run leaves no stage never materialized), then the data stages up to the
token shards over all shards in one run (so an engine starts once), then one training
run per scale of the experiment matrix, one run per (scale, benchmark) cell, and the report. Runs are recorded in the
Dagster instance of ``DAGSTER_HOME`` and show in the UI like any other.

    tpt run embedded            # or: python -m pipelines.run embedded
    tpt estimate embedded       # generation cost estimate, before a backfill
    tpt lineage embedded --variant tpt --benchmark gsm8k   # the inputs behind one score, as JSON
    tpt lineage embedded --document <doc_id>               # the scores one document stands behind
    tpt plan paper_8b --vocab-size 128256 --gpu-hours 20000 --raw-tokens 10e9 --augmented-tokens 20e9
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import asdict

import dagster as dg

from assets.partitions import cell_key, corpus_shards
from assets.registry import outputs_for
from assets.stage import ACCELERATOR_POOL, settings_of
from pipelines.definitions import build_definitions, default_resources
from pipelines.experiments import experiment_path
from pipelines.private import partition_range_tags
from tpt.config import ConfigError, Experiment, load_experiment
from tpt.errors import InputError
from tpt.models import resolve_model
from tpt.tokenization import load_tokenizer, special_ids
from tpt.training.planner import assess, compute_optimal, gpu_hours_to_flops, thinking_split

RUN_HOST, RUN_PID = "tpt/host", "tpt/pid"


def run_experiment(
    defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance
) -> list[dg.ExecuteInProcessResult]:
    """Corpus, generation estimate, data, each scale's training, each score cell, report. A failed corpus or data run
    stops there (a failed estimate does not: it only informs); a failed scale or cell does not stop the others, but
    the report then waits for a complete matrix."""
    results: list[dg.ExecuteInProcessResult] = []
    release_dead_runs_slots(instance)
    owner = {RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())}

    def run(job: str, tags: dict[str, str] | None = None, **kwargs) -> bool:
        result = defs.resolve_job_def(f"{experiment.name}_{job}").execute_in_process(
            instance=instance, raise_on_error=False, tags=owner | (tags or {}), **kwargs
        )
        results.append(result)
        return result.success

    if not run("corpus"):
        return results
    run("generation_estimate")  # its sample lands in the request cache: the data run copies it, not regenerates it
    shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    if not run("data", tags=partition_range_tags(shards[0], shards[-1])):
        return results
    trained = [scale for scale in experiment.scale_names if run("training", partition_key=scale)]
    tuned = [scale for scale in trained if experiment.sft is not None and run("sft", partition_key=scale)]
    scored = [
        run("benchmarks", partition_key=cell_key(scale, benchmark))
        for scale in trained
        for benchmark in experiment.evaluation.benchmarks
    ]
    scored += [
        run("sft_benchmarks", partition_key=cell_key(scale, benchmark))
        for scale in tuned
        for benchmark in experiment.evaluation.benchmarks
    ]
    if len(trained) == len(experiment.scales) and all(scored):
        run("report")
    return results


def release_dead_runs_slots(instance: dg.DagsterInstance) -> list[str]:
    """Free the accelerator pool's slots held by runs of this command whose process is gone (killed with -9, say):
    nothing else would free them without a daemon, and the next run's steps would wait for them forever. The runs
    are marked failed. Runs of other processes, or of other hosts, are left alone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    released = []
    for claim in storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots:
        run = instance.get_run_by_id(claim.run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(claim.run_id)
            released.append(claim.run_id)
        elif run.tags.get(RUN_HOST) == socket.gethostname() and not _alive(int(run.tags.get(RUN_PID, "0"))):
            instance.report_run_failed(run, f"its process {run.tags[RUN_PID]} died; tpt run freed its pool slot")
            storage.free_concurrency_slots_for_run(claim.run_id)
            released.append(claim.run_id)
    return released


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def estimate(defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(f"{experiment.name}_generation_estimate").execute_in_process(
        instance=instance, raise_on_error=False
    )


def lineage(experiment: Experiment, variant: str, benchmark: str, scale: str | None = None) -> dict:
    """The inputs behind one score of the current config, from the catalog of the default resources."""
    scale = scale or experiment.scale_names[0]
    if scale not in experiment.scale_names:
        raise ConfigError(f"scale {scale!r} is not one of {experiment.scale_names}")
    if variant not in experiment.variants:
        raise ConfigError(f"variant {variant!r} is not one of {list(experiment.variants)}")
    if benchmark not in experiment.evaluation.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not one of {list(experiment.evaluation.benchmarks)}")
    resources = default_resources()
    outputs = outputs_for(experiment, resources["storage"].root, settings_of(resources))
    version = outputs.of("benchmark_scores", variant, scale, benchmark).version
    found = resources["catalog"].open().score_inputs(experiment.name, variant, benchmark, version)
    if not found["scores"]:
        raise ConfigError(f"no score of {variant} {scale} on {benchmark} at version {version}; run the benchmarks")
    cell = {"variant": variant, "scale": scale, "benchmark": benchmark, "version": version}
    return {"experiment": experiment.name} | cell | found


def document_uses(experiment: Experiment, doc_id: str) -> dict:
    """Every trajectory, token shard, checkpoint and score that one document stands behind, from the catalog."""
    found = default_resources()["catalog"].open().document_uses(experiment.name, doc_id)
    if not found["documents"]:
        raise ConfigError(f"document {doc_id!r} is not in the catalog of {experiment.name}")
    return {"experiment": experiment.name, "doc_id": doc_id} | found


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
    parser.add_argument("--scale", help="lineage: the scale whose score to trace (default: the first)")
    parser.add_argument("--document", help="lineage: a doc_id; list the scores that used it instead")
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
            found = (
                document_uses(experiment, args.document)
                if args.document
                else lineage(experiment, args.variant, args.benchmark, args.scale)
            )
            print(json.dumps(found, indent=1, default=str))
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
