"""The only Dagster internals this project uses, each wrapped here with the reason no public API serves."""

from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

AssetJob = UnresolvedAssetJobDefinition
"""What ``dg.define_asset_job`` returns; Dagster 1.13 does not export the type, only the function."""


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover a range of partitions (one engine start for many shards), as Dagster's own
    backfills ask for it: ``execute_in_process`` takes a single ``partition_key`` and no public range argument."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def run_partition_range(tags: dict[str, str]) -> tuple[str | None, str | None]:
    """(first, last) partition of a run, from its single-partition tag or its range tags (None, None if neither)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"], tags["dagster/partition"]
    return tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
