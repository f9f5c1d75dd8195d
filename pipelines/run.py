"""Materialize an experiment end to end from one command: the corpus first (it registers the shard partitions),
then the whole graph over all shards in one run, so an engine starts once. Runs are recorded in the Dagster instance
of ``DAGSTER_HOME`` and show in the UI like any other.

    tpt run embedded            # or: python -m pipelines.run embedded
    tpt estimate embedded       # generation cost estimate, before a backfill
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.partitions import corpus_shards
from pipelines.definitions import build_definitions
from pipelines.experiments import experiment_path
from tpt.config import ConfigError, Experiment, load_experiment


def run_experiment(
    defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance
) -> list[dg.ExecuteInProcessResult]:
    """The corpus job, then the full graph over every registered shard; stops at the first failed run."""
    corpus = defs.resolve_job_def(f"{experiment.name}_corpus").execute_in_process(
        instance=instance, raise_on_error=False
    )
    if not corpus.success:
        return [corpus]
    shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    tags = {ASSET_PARTITION_RANGE_START_TAG: shards[0], ASSET_PARTITION_RANGE_END_TAG: shards[-1]}
    graph = defs.resolve_job_def(f"{experiment.name}_full_graph").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    return [corpus, graph]


def estimate(defs: dg.Definitions, experiment: Experiment, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(f"{experiment.name}_generation_estimate").execute_in_process(
        instance=instance, raise_on_error=False
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpt", description="Run TPT experiments through Dagster.")
    parser.add_argument("command", choices=["run", "estimate"])
    parser.add_argument("experiment", nargs="?", default="embedded", help="shipped name or path to a YAML file")
    args = parser.parse_args(argv)
    try:
        experiment = load_experiment(experiment_path(args.experiment))
    except ConfigError as exc:
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
