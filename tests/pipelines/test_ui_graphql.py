"""The graph through Dagster's own GraphQL API (the UI's API) on a real ``dagster dev``: a launched run, a backfill
the daemon carries out, a sensor the daemon ticks, and the nightly schedule's tick; each checked against the
artifacts on disk or the experiment's config."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from tests.pipelines.dagster_dev import (
    SCHEDULE,
    SCHEDULE_DRY_RUN,
    SENSOR_DRY_RUN,
    SENSOR_TICKS,
    START_SENSOR,
    metadata_values,
    selector,
    tags,
)
from tpt.atomic import read_json
from tpt.corpus.build import load_manifest
from tpt.tokenization.ray_pack import shard_out_path

pytestmark = pytest.mark.slow


def _manifest(plan):
    corpus = plan.of("corpus")
    manifest = load_manifest(corpus.path, corpus.version)
    assert manifest is not None, f"no corpus manifest under {corpus.path}"
    return manifest


def test_launched_corpus_run_records_what_the_corpus_on_disk_holds(dagster_dev, corpus_run, names, ui_plan):
    assert corpus_run["jobName"] == names.corpus_job and corpus_run["status"] == "SUCCESS"
    [event] = [m for m in corpus_run["assetMaterializations"] if m["assetKey"]["path"] == names.corpus]
    found = metadata_values(event["metadataEntries"])
    manifest = _manifest(ui_plan)
    rows = sum(pq.read_metadata(ui_plan.of("corpus").path / f"{s}.parquet").num_rows for s in manifest.shard_names)
    assert found["documents"] == manifest.n_documents == rows > 0
    assert found["shards"] == len(manifest.shards) > 1  # so the backfill below spans several partitions
    assert (found["stage_version"], found["path"]) == (ui_plan.of("corpus").version, str(ui_plan.of("corpus").path))
    assert found["partitions_added"] == manifest.shard_names
    assert dagster_dev.partition_keys(names.vanilla_tokens) == manifest.shard_names  # registered, as the UI lists


def test_backfill_over_every_shard_materializes_each_partition_once(dagster_dev, vanilla_backfill, names, ui_plan):
    manifest = _manifest(ui_plan)
    assert vanilla_backfill["status"] == "COMPLETED_SUCCESS", vanilla_backfill
    assert sorted(vanilla_backfill["partitionNames"]) == manifest.shard_names
    events = dagster_dev.materializations(names.vanilla_tokens)
    assert sorted(e["partition"] for e in events) == manifest.shard_names
    assert {e["runId"] for e in events} <= {r["runId"] for r in vanilla_backfill["runs"]}
    stage = ui_plan.of("token_shards", "vanilla")
    documents = {s["name"]: s["documents"] for s in manifest.shards}
    packed = {s: read_json(shard_out_path(stage.path, s).with_suffix(".json")) for s in manifest.shard_names}
    assert all(packed[s]["n_documents"] == documents[s] for s in documents)  # every corpus document is packed
    by_run = defaultdict(list)  # a run takes up to shards_per_run partitions; each keeps its own figures
    for event in events:
        by_run[event["runId"]].append(event)
    assert any(len(run_events) > 1 for run_events in by_run.values())  # a run did cover several shards
    for event in events:
        shard, found = event["partition"], metadata_values(event["metadataEntries"])
        assert found["stage_version"] == stage.version
        assert found["documents"] == documents[shard]
        assert found["real_tokens"] == packed[shard]["n_real_tokens"] > 0
        assert found["sequences"] == packed[shard]["n_sequences"] > 0


def _covered(run_tags: dict[str, str], registered: list[str]) -> list[str]:
    first, last = run_tags["dagster/asset_partition_range_start"], run_tags["dagster/asset_partition_range_end"]
    return registered[registered.index(first) : registered.index(last) + 1]


def test_new_shards_sensor_tick_asks_for_runs_of_shards_without_thinking(dagster_dev, corpus_run, names):
    sensor = selector(sensorName=names.new_shards_sensor)
    thought = {e["partition"] for e in dagster_dev.materializations(names.trajectories)}
    expected = sorted(set(dagster_dev.partition_keys(names.trajectories)) - thought)
    assert expected  # this server never generates thinking, so every registered shard still needs it

    tested = dagster_dev.query(SENSOR_DRY_RUN, sensor=sensor)["sensorDryRun"]  # the UI's "Test sensor" button
    requests = tested["evaluationResult"]["runRequests"]
    registered = dagster_dev.partition_keys(names.trajectories)
    assert sorted(s for r in requests for s in _covered(tags(r), registered)) == expected

    started = dagster_dev.query(START_SENSOR, sensor=sensor)["startSensor"]
    assert started["sensorState"]["status"] == "RUNNING", started

    def ticked():
        ticks = dagster_dev.query(SENSOR_TICKS, sensor=sensor)["sensorOrError"]["sensorState"]["ticks"]
        return next((t for t in ticks if t["status"] != "STARTED"), None)

    tick = dagster_dev.wait_until(ticked, f"tick of {names.new_shards_sensor} by the daemon", 120)
    assert tick["status"] == "SUCCESS", tick
    runs = tick["runs"]
    assert sorted(s for r in runs for s in _covered(tags(r), registered)) == expected
    assert len(runs) == len(requests)  # the embedded shards_per_run covers them in one range
    assert {r["jobName"] for r in runs} == {names.shards_job}
    assert {r["status"] for r in runs} == {"QUEUED"}  # held by the test instance: no generation is started


def _dry_run(dagster_dev, schedule: str, at: datetime) -> list[dict]:
    """The schedule's tick at ``at`` as the UI's "Test schedule" button evaluates it."""
    tick = dagster_dev.query(SCHEDULE_DRY_RUN, schedule=selector(scheduleName=schedule), at=at.timestamp())
    result = tick["scheduleDryRun"]["evaluationResult"]
    assert result["error"] is None, result["error"]
    return result["runRequests"]


def _job_of(dagster_dev, schedule: str) -> str:
    return dagster_dev.query(SCHEDULE, schedule=selector(scheduleName=schedule))["scheduleOrError"]["pipelineName"]


def _next_day_at(hour: int) -> datetime:
    return datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0) + timedelta(days=1)


def test_nightly_schedule_tick_asks_for_one_run_per_score_cell(dagster_dev, names):
    assert _job_of(dagster_dev, names.nightly_schedule) == names.benchmarks_job
    night = _next_day_at(2)
    requests = _dry_run(dagster_dev, names.nightly_schedule, night)
    assert [tags(r)["dagster/partition"] for r in requests] == names.score_cells
    assert {tags(r)["dagster/schedule_name"] for r in requests} == {names.nightly_schedule}
    keys = [r["runKey"] for r in requests]  # one run per cell and night, however often the tick is retried
    assert len(set(keys)) == len(keys) and all(f"{night:%Y-%m-%d}" in k for k in keys)


def test_corpus_discovery_schedule_tick_asks_for_one_corpus_run(dagster_dev, names):
    assert _job_of(dagster_dev, names.discovery_schedule) == names.corpus_job
    day = _next_day_at(1)
    [request] = _dry_run(dagster_dev, names.discovery_schedule, day)
    assert f"{day:%Y-%m-%d}" in request["runKey"] and "dagster/partition" not in tags(request)
