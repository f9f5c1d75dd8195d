"""Scheduled reruns, off until a user turns them on in the UI: both spend compute. Reruns are cheap where nothing
changed, since every stage finds its finished output by version and returns at once."""

import dagster as dg

from assets.partitions import score_cells
from pipelines.private import AssetJob
from tpt.config import Experiment


def nightly_benchmarks(experiment: Experiment, job: AssetJob) -> dg.ScheduleDefinition:
    """One run per (scale, benchmark) cell every night, e.g. after the evaluation settings or lm-eval changed."""
    cells = score_cells(experiment)

    @dg.schedule(
        name=f"{job.name}_nightly",
        job=job,
        cron_schedule="0 2 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-run the benchmark matrix every night at 02:00, one run per (scale, benchmark) cell.",
    )
    def nightly(context: dg.ScheduleEvaluationContext):
        night = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return [
            dg.RunRequest(
                run_key=f"{night}:{cell}",
                partition_key=cell,
                tags={"experiment": experiment.name, "trigger": "nightly"},
            )
            for cell in cells.get_partition_keys()
        ]

    return nightly


def daily_corpus_discovery(experiment: Experiment, job: AssetJob) -> dg.ScheduleDefinition:
    """Re-reads the corpus sources every day at 01:00, before the nightly evaluation: new documents become new
    shards (and partitions), which the new-shards sensor then turns into their own generation runs."""

    @dg.schedule(
        name=f"{experiment.name}_corpus_discovery_daily",
        job=job,
        cron_schedule="0 1 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Look for new corpus documents every day at 01:00 and register them as shard partitions.",
    )
    def discovery(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"corpus:{day}", tags={"experiment": experiment.name, "trigger": "daily"})

    return discovery
