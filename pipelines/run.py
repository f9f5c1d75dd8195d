"""Materialize an experiment end to end from one command: the corpus first (it registers the shard partitions),
the generation cost estimate (so a full run leaves no stage never materialized), then the data stages up to the
token shards over all shards in one run (so an engine starts once), then one Dagster run per training run of the
experiment matrix (scale, or scale and seed), each followed by one run per (run, benchmark) cell, and the report.
Runs are recorded in the Dagster instance of ``DAGSTER_HOME`` and show in the UI like any other. The terminal gets
one line per Dagster run, the stages' own progress, and a summary with the report's table at the end.

    tpt run embedded            # or: python -m pipelines.run embedded (--verbose: Dagster's per-event lines too)
    tpt estimate embedded       # generation cost estimate, before a backfill
    tpt lineage embedded --variant tpt --benchmark gsm8k   # the inputs behind one score, as JSON
    tpt lineage embedded --document <doc_id>               # the scores one document stands behind
    tpt plan paper_8b --vocab-size 128256 --gpu-hours 20000 --raw-tokens 10e9 --augmented-tokens 20e9
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict

import dagster as dg

from assets.partitions import cell_key, corpus_shards
from assets.report import text_table
from assets.stage import ACCELERATOR_POOL, outputs_in
from pipelines.definitions import build_definitions, default_resources
from pipelines.experiments import experiment_path
from pipelines.private import partition_range_tags
from tpt.atomic import read_json
from tpt.config import ConfigError, Experiment, load_experiment
from tpt.errors import InputError
from tpt.models import resolve_model
from tpt.stages import Outputs
from tpt.tokenization import load_tokenizer, special_ids
from tpt.training.planner import assess, compute_optimal, gpu_hours_to_flops, thinking_split

RUN_HOST, RUN_PID = "tpt/host", "tpt/pid"


def run_experiment(
    defs: dg.Definitions,
    experiment: Experiment,
    instance: dg.DagsterInstance,
    *,
    verbose: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> list[dg.ExecuteInProcessResult]:
    """Corpus, generation estimate, data, then each training run followed by its score cells (and, where the
    experiment has SFT, its SFT run and the SFT model's cells), and the report (so the first seed's scores are in
    while the next seed trains). A failed corpus or data run
    stops there (a failed estimate does not: it only informs); a failed scale or cell does not stop the others, but
    the report then waits for a complete matrix. ``say`` gets one progress line per run; Dagster's own per-event
    lines reach the terminal only when ``verbose``."""
    results: list[dg.ExecuteInProcessResult] = []
    release_dead_runs_slots(instance)
    owner = {RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())}
    stages = 2 if experiment.sft is not None else 1  # pretrained, and SFT
    cells = len(experiment.scale_names) * len(experiment.evaluation.benchmarks) * stages
    total = 3 + bool(experiment.tpt_variants) + len(experiment.scale_names) * stages + cells
    logging = {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}}

    def run(job: str, tags: dict[str, str] | None = None, label: str = "", **kwargs) -> bool:
        started = time.perf_counter()
        result = defs.resolve_job_def(f"{experiment.name}_{job}").execute_in_process(
            instance=instance, raise_on_error=False, tags=owner | (tags or {}), run_config=logging, **kwargs
        )
        results.append(result)
        stages = run_summary(result)
        done = ", ".join(f"{n} {k}" for k, n in Counter(stages.values()).items()) or "nothing materialized"
        status = "ok" if result.success else "FAILED"
        say(f"[{len(results)}/{total}] {job}{' ' + label if label else ''}: {status} in "
            f"{time.perf_counter() - started:.0f} s ({done})")  # fmt: skip
        return result.success

    def score(scale: str, job: str) -> list[bool]:
        return [
            run(job, partition_key=cell_key(scale, benchmark), label=f"{scale} {benchmark}")
            for benchmark in experiment.evaluation.benchmarks
        ]

    if not run("corpus"):
        return results
    if experiment.tpt_variants:  # its sample lands in the request cache: the data run copies it, not regenerates it
        run("generation_estimate")
    shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    if not run("data", tags=partition_range_tags(shards[0], shards[-1]), label=f"{len(shards)} shards"):
        return results
    trained, scored = [], []
    for scale in experiment.scale_names:  # each run's scores as soon as it is trained: early runs answer early
        if not run("training", partition_key=scale, label=scale):
            continue
        trained.append(scale)
        scored += score(scale, "benchmarks")
        if experiment.sft is not None:
            tuned = run("sft", partition_key=scale, label=scale)
            scored += score(scale, "sft_benchmarks") if tuned else [False]  # no SFT: an incomplete matrix
    if len(trained) == len(experiment.scale_names) and all(scored):
        run("report")
    return results


def run_summary(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Each asset a run materialized: 'computed', or 'reused' where it found its finished output."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        reused = materialization.metadata.get("reused_finished_output")
        found[materialization.asset_key.path[-1]] = "reused" if reused is not None and reused.value else "computed"
    return found


def summary(
    experiment: Experiment, results: list[dg.ExecuteInProcessResult], outputs: Outputs, elapsed_s: float
) -> list[str]:
    """The end of ``tpt run``: what ran or was reused, where the report and artifacts are, the score table, the UI."""
    stages: dict[str, Counter] = {}
    for result in results:
        for asset, kind in run_summary(result).items():
            stages.setdefault(asset, Counter())[kind] += 1
    failed = [r for r in results if not r.success]
    lines = [f"tpt run {experiment.name}: {len(results) - len(failed)} of {len(results)} runs succeeded in "
             f"{elapsed_s:.0f} s"]  # fmt: skip
    computed = sorted(a for a, c in stages.items() if c["computed"])
    reused = sorted(a for a, c in stages.items() if not c["computed"])
    lines.append(f"  computed: {', '.join(computed) or 'nothing'}")
    lines.append(f"  reused (finished before): {', '.join(reused) or 'nothing'}")
    for result in failed:
        lines.append(f"  FAILED: run {result.run_id} of {result.job_def.name}; its log is in the Dagster UI")
    report = outputs.of("report").path / "report.json"
    lines.append(f"  artifacts: {outputs.root}")
    if report.exists():
        lines.append(f"  report: {report}")
        lines.append("")
        lines.extend(text_table(read_json(report)["scores"]).splitlines())
        lines.append("")
    home = os.environ.get("DAGSTER_HOME", "<your DAGSTER_HOME>")
    lines.append(f"  UI: DAGSTER_HOME={home} dagster dev -w workspace.yaml, then http://127.0.0.1:3000")
    return lines


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


def lineage(experiment: Experiment, variant: str, benchmark: str, scale: str | None = None, sft: bool = False) -> dict:
    """The inputs behind one score of the current config (``sft``: of the SFT model), from the catalog of the
    default resources."""
    scale = scale or experiment.scale_names[0]
    if scale not in experiment.scale_names:
        raise ConfigError(f"scale {scale!r} is not one of {experiment.scale_names}")
    if variant not in experiment.variants:
        raise ConfigError(f"variant {variant!r} is not one of {list(experiment.variants)}")
    if benchmark not in experiment.evaluation.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not one of {list(experiment.evaluation.benchmarks)}")
    resources = default_resources()
    outputs = outputs_in(experiment, resources)
    if sft and experiment.sft is None:
        raise ConfigError(f"experiment {experiment.name} has no sft section, so no SFT scores")
    stage, tables = ("sft_benchmark_scores", "sft_") if sft else ("benchmark_scores", "")
    version = outputs.of(stage, variant, scale, benchmark).version
    found = resources["catalog"].open().score_inputs(experiment.name, variant, benchmark, version, tables)
    if not found["scores"]:
        raise ConfigError(f"no score of {variant} {scale} on {benchmark} at version {version}; run the benchmarks")
    cell = {"variant": variant, "scale": scale, "benchmark": benchmark, "stage": stage, "version": version}
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
    parser.add_argument("--sft", action="store_true", help="lineage: trace the SFT model's score")
    parser.add_argument("--document", help="lineage: a doc_id; list the scores that used it instead")
    parser.add_argument("--vocab-size", type=int, help="plan: instead of loading the tokenizer")
    parser.add_argument("--gpu-hours", type=float, help="plan: a compute budget to size a model for")
    parser.add_argument("--gpu", default="h100", help="plan: the GPU of --gpu-hours")
    parser.add_argument("--mfu", type=float, default=0.4, help="plan: expected model FLOPs utilisation")
    parser.add_argument("--raw-tokens", type=float, help="plan: raw document tokens available")
    parser.add_argument("--augmented-tokens", type=float, help="plan: the same documents with thinking, in tokens")
    parser.add_argument("--verbose", action="store_true", help="run: Dagster's per-event lines in the terminal too")
    args = parser.parse_args(argv)
    try:
        experiment = load_experiment(experiment_path(args.experiment))
        if args.command == "lineage":
            found = (
                document_uses(experiment, args.document)
                if args.document
                else lineage(experiment, args.variant, args.benchmark, args.scale, args.sft)
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
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        if args.command == "estimate":
            results = [estimate(defs, experiment, instance)]
        else:
            say = functools.partial(print, flush=True)
            results = run_experiment(defs, experiment, instance, verbose=args.verbose, say=say)
            resources = default_resources()
            outputs = outputs_in(experiment, resources)
            print("\n".join(summary(experiment, results, outputs, time.perf_counter() - started)), flush=True)
    failed = [r for r in results if not r.success]
    for result in failed:
        print(
            f"tpt: run {result.run_id} of {result.job_def.name} failed; see the run log in the Dagster UI",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
