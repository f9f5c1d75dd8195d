"""Sensors that turn new data into exactly the work it needs: new corpus files -> a corpus run (which appends
shards and registers their partitions) -> runs of the per-shard stages, ``shards_per_run`` shards each, for the shards
without finished output or a run in flight, nothing else; a new checkpoint -> its own benchmark cells; and new
benchmark scores -> the report, once the matrix is complete."""

import hashlib
from pathlib import Path

import dagster as dg

from assets import registry
from assets.partitions import cell_key, corpus_shards
from assets.stage import SETTINGS_RESOURCES, asset_key, outputs_in
from pipelines.private import AssetJob, partition_range_tags, run_partition_range
from tpt.config import Experiment, LocalFolder
from tpt.corpus.sources import LOCAL_PATTERNS
from tpt.evaluation.runner import EvaluationRun
from tpt.stages import variants_of


def corpus_fingerprint(folders: list[Path]) -> str:
    """Changes when a corpus file appears, disappears or changes size or time; cheap (stat only, no reads)."""
    digest = hashlib.sha256()
    for folder in folders:
        files = sorted({p for pattern in LOCAL_PATTERNS for p in folder.rglob(pattern)}) if folder.is_dir() else []
        for path in files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def new_corpus_files_sensor(experiment: Experiment, corpus_job: AssetJob) -> dg.SensorDefinition | None:
    """Runs the corpus job when the local corpus folders change; the cursor is the folders' fingerprint, so a
    restarted daemon neither misses a change nor repeats a run for one it already saw."""
    folders = [Path(s.path).expanduser() for s in experiment.corpus.sources if isinstance(s, LocalFolder)]
    if not folders:
        return None

    @dg.sensor(
        name=f"{experiment.name}_new_corpus_files",
        job=corpus_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Watches {', '.join(map(str, folders))} and appends new files to the corpus as new shards.",
    )
    def watch(context: dg.SensorEvaluationContext):
        fingerprint = corpus_fingerprint(folders)
        if fingerprint == context.cursor:
            return dg.SkipReason("no new or changed corpus files")
        context.update_cursor(fingerprint)
        return dg.RunRequest(run_key=fingerprint, tags={"experiment": experiment.name, "trigger": "corpus_files"})

    return watch


def new_shards_sensor(experiment: Experiment, shards_job: AssetJob) -> dg.SensorDefinition:
    """Runs of the per-shard stages for every shard partition that has neither finished output (a materialization
    of every per-shard asset) nor a run in flight, in runs of ``corpus.shards_per_run`` consecutive shards (one
    engine start per run). Nothing is remembered in a cursor: a shard whose run failed is asked for again on the
    next tick, and a shard whose run is queued or running is not asked for twice."""
    partitions = corpus_shards(experiment)
    per_run = experiment.corpus.shards_per_run
    shard_assets = [
        asset_key(experiment, spec.name, variant)
        for spec in registry.STAGES
        if spec.partitioning == "shards"
        for variant in variants_of(experiment, spec)
    ]

    @dg.sensor(
        name=f"{experiment.name}_new_shards",
        job=shards_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Generates, augments and packs each corpus shard without finished output, "
        f"{per_run} shards per run; a failed shard is asked for again.",
    )
    def new_shards(context: dg.SensorEvaluationContext):
        registered = context.instance.get_dynamic_partitions(partitions.name)
        done = set.intersection(*(set(context.instance.get_materialized_partitions(k)) for k in shard_assets))
        in_flight = shards_in_flight(context.instance, shards_job.name, registered)
        todo = [s for s in registered if s not in done and s not in in_flight]
        if not todo:
            return dg.SkipReason("no shard without finished output or a run in flight")
        return [
            dg.RunRequest(tags={"trigger": "new_shard"} | partition_range_tags(run[0], run[-1]))
            for run in consecutive_runs(todo, registered, per_run)
        ]

    return new_shards


IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def shards_in_flight(instance: dg.DagsterInstance, job_name: str, registered: list[str]) -> set[str]:
    """The shards that a queued or running run of the job covers, whether it asked for one or a range."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT))
    position = {s: i for i, s in enumerate(registered)}
    covered: set[str] = set()
    for run in runs:
        first, last = run_partition_range(run.tags)
        if first in position and last in position:
            covered.update(registered[position[first] : position[last] + 1])
    return covered


def consecutive_runs(todo: list[str], registered: list[str], per_run: int) -> list[list[str]]:
    """``todo`` cut into runs of at most ``per_run`` shards, each a range of consecutive registered partitions (a
    run covers a partition range, so a shard finished in between ends one run and starts the next)."""
    position = {s: i for i, s in enumerate(registered)}
    runs: list[list[str]] = []
    for shard in todo:
        last = runs[-1] if runs else None
        if last and len(last) < per_run and position[shard] == position[last[-1]] + 1:
            last.append(shard)
        else:
            runs.append([shard])
    return runs


def new_checkpoints_sensor(experiment: Experiment, benchmarks_job: AssetJob) -> dg.SensorDefinition:
    """A new checkpoint materialization asks for the benchmark cells of its variant and scale that have no finished
    score under the current versions, one run each, selecting only that variant's scores. The cursor is the newest
    materialization event seen, so a restarted daemon neither misses a checkpoint nor asks twice for one."""
    [cells] = [spec for spec in registry.STAGES if spec.partitioning == "cells" and spec.enabled is None]
    [checkpoint] = [r.stage for r in cells.reads]
    checkpoints = {asset_key(experiment, checkpoint, v): v for v in experiment.variants}

    @dg.sensor(
        name=f"{experiment.name}_new_checkpoints",
        job=benchmarks_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Evaluates each new checkpoint on every benchmark it has no score for.",
        required_resource_keys={"storage", *SETTINGS_RESOURCES},
    )
    def new_checkpoints(context: dg.SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        outputs = outputs_in(experiment, context.resources)
        newest, latest = after, {}
        for key, variant in checkpoints.items():
            found = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000, ascending=True
            ).records
            for record in found:  # a checkpoint materialized twice since the last tick asks once
                newest = max(newest or 0, record.storage_id)
                latest[variant, record.partition_key] = record.storage_id
        requests = [
            dg.RunRequest(
                run_key=f"{variant}:{scale}:{benchmark}:{storage_id}",
                partition_key=cell_key(scale, benchmark),
                asset_selection=[asset_key(experiment, cells.name, variant)],
                tags={"experiment": experiment.name, "variant": variant, "trigger": "new_checkpoint"},
            )
            for (variant, scale), storage_id in latest.items()
            for benchmark in experiment.evaluation.benchmarks
            if EvaluationRun.load(outputs.of(cells.name, variant, scale, benchmark).path) is None
        ]
        if newest is not None:
            context.update_cursor(str(newest))
        return requests or dg.SkipReason("no new checkpoint without scores")

    return new_checkpoints


def report_sensor(experiment: Experiment) -> dg.AutomationConditionSensorDefinition:
    """Rebuilds the report once every benchmark cell has a score and any of them changed (the report's automation
    condition), e.g. after the nightly runs. Off until turned on, like every sensor here."""
    return dg.AutomationConditionSensorDefinition(
        f"{experiment.name}_report",
        target=dg.AssetSelection.assets(*(asset_key(experiment, s.name) for s in registry.STAGES if s.eager)),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Rebuild the report when the benchmark matrix is complete and a cell changed.",
    )
