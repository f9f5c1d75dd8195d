from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def nightly_benchmarks(job: "UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    """Off until a user turns it on in the UI: a nightly rerun spends compute, so it is opt-in."""
    return dg.ScheduleDefinition(
        name=f"{job.name}_nightly",
        job=job,
        cron_schedule="0 2 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-run the benchmark matrix every night at 02:00.",
    )
