from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.partitions import benchmark_partitions
from tpt.config import Experiment


def nightly_benchmarks(experiment: Experiment, job: "UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    """One run per benchmark partition, every night. Off until a user turns it on in the UI: it spends compute.
    Cells whose checkpoint and settings are unchanged find their finished results and return at once."""
    partitions = benchmark_partitions(experiment)

    @dg.schedule(
        name=f"{job.name}_nightly",
        job=job,
        cron_schedule="0 2 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-run the benchmark matrix every night at 02:00, one run per benchmark.",
    )
    def nightly(context: dg.ScheduleEvaluationContext):
        night = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return [
            dg.RunRequest(run_key=f"{night}:{benchmark}", partition_key=benchmark, tags={"trigger": "nightly"})
            for benchmark in partitions.get_partition_keys()
        ]

    return nightly
