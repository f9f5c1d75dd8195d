"""New data becomes exactly the work it needs: a new corpus file -> new shard partitions -> runs of shards_per_run."""

import json
import os

import dagster as dg

from assets import registry
from assets.partitions import corpus_shards, sync_shard_partitions
from assets.stage import asset_key
from pipelines.definitions import build_definitions, default_resources
from pipelines.private import partition_range_tags, run_partition_range
from tests.support import resources_at, stage_asset
from tpt.config import Experiment

TEXT = "A paragraph about the water cycle, long enough to be kept by the length filter, number {}."


def _experiment(embedded: Experiment, folder) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "watched"
    raw["corpus"] |= {
        "sources": [{"kind": "local", "name": "inbox", "path": str(folder)}],
        "min_chars": 20,
        "documents_per_shard": 2,
        "shards_per_run": 2,
        "near_dedup": None,  # the test documents differ by a number only: near-duplicates by design
    }
    raw["mixture"] = {}  # natural proportions of the one source
    return Experiment.model_validate(raw)


def _write(folder, name: str, start: int, n: int) -> None:
    (folder / name).write_text("".join(json.dumps({"text": TEXT.format(i)}) + "\n" for i in range(start, start + n)))


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.resolve_sensor_def(name)
    with (
        dg.partition_loading_context(dynamic_partitions_store=instance),  # as the daemon threads it
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context,
    ):
        return sensor.evaluate_tick(context)


def _covered(request: dg.RunRequest, registered: list[str]) -> list[str]:
    first, last = run_partition_range(request.tags)
    return registered[registered.index(first) : registered.index(last) + 1]


def test_a_new_file_becomes_new_shards_requested_in_runs_of_shards_per_run(embedded, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder, "a.jsonl", 0, 6)
    experiment = _experiment(embedded, folder)
    resources = resources_at(tmp_path)
    defs = build_definitions([experiment], resources)
    corpus = stage_asset(experiment, "corpus", resources)
    instance = dg.DagsterInstance.ephemeral()
    partitions = corpus_shards(experiment).name

    assert dg.materialize([corpus], resources=resources, instance=instance).success
    registered = instance.get_dynamic_partitions(partitions)
    assert registered == ["shard-00000", "shard-00001", "shard-00002"]
    first = _tick(defs, "watched_new_shards", instance, None)
    assert defs.resolve_sensor_def("watched_new_shards").job_name == "watched_shards"
    # shards_per_run is 2: one run for the first two shards (one engine start), one for the third
    assert [_covered(r, registered) for r in first.run_requests] == [registered[:2], registered[2:]]
    assert all(r.partition_key is None for r in first.run_requests)  # ranges, not one run per shard

    _write(folder, "b.jsonl", 6, 2)
    watcher = defs.resolve_sensor_def("watched_new_corpus_files")
    assert watcher.job_name == "watched_corpus"
    with dg.build_sensor_context(instance=instance, cursor=None) as context:
        assert len(watcher.evaluate_tick(context).run_requests) == 1
    assert dg.materialize([corpus], resources=resources, instance=instance).success
    registered = instance.get_dynamic_partitions(partitions)
    assert registered[-1] == "shard-00003"
    second = _tick(defs, "watched_new_shards", instance, first.cursor)
    assert [_covered(r, registered) for r in second.run_requests] == [registered[:2], registered[2:]]


def _add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, first: str, last: str) -> None:
    tags = {"trigger": "new_shard"} | partition_range_tags(first, last)
    instance.add_run(dg.DagsterRun(job_name="watched_shards", status=status, tags=tags))


def test_shards_without_output_are_asked_for_again_and_shards_in_flight_are_not(embedded, tmp_path):
    """A failed run does not make its shards finished, so the next tick asks for them again; a queued or running
    run's shards are left to it; a shard whose per-shard stages all materialized is never asked for."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder, "a.jsonl", 0, 10)
    experiment = _experiment(embedded, folder)
    resources = resources_at(tmp_path)
    defs = build_definitions([experiment], resources)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        [stage_asset(experiment, "corpus", resources)], resources=resources, instance=instance
    ).success
    registered = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    assert len(registered) == 5

    _add_run(instance, dg.DagsterRunStatus.FAILURE, registered[0], registered[1])  # failed: not in flight
    _add_run(instance, dg.DagsterRunStatus.STARTED, registered[2], registered[3])  # running
    for key in new_shards_sensor_assets(experiment):  # shard 4 finished every per-shard stage
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=registered[4]))
    tick = _tick(defs, "watched_new_shards", instance, None)
    assert [_covered(r, registered) for r in tick.run_requests] == [registered[:2]]
    again = _tick(defs, "watched_new_shards", instance, tick.cursor)  # the request above was never launched
    assert [_covered(r, registered) for r in again.run_requests] == [registered[:2]]

    _add_run(instance, dg.DagsterRunStatus.STARTING, registered[0], registered[1])  # its retry, starting
    quiet = _tick(defs, "watched_new_shards", instance, again.cursor)
    assert quiet.run_requests == [] and quiet.skip_message == "no shard without finished output or a run in flight"


def new_shards_sensor_assets(experiment: Experiment) -> list[dg.AssetKey]:
    return [
        asset_key(experiment, spec.name, variant)
        for spec in registry.STAGES
        if spec.partitioning == "shards"
        for variant in (experiment.variants if spec.per_variant else [None])
    ]


def test_partitions_follow_the_corpus_when_it_shrinks(embedded):
    instance = dg.DagsterInstance.ephemeral()
    assert sync_shard_partitions(instance, embedded, ["shard-00000", "shard-00001", "shard-00002"])[
        "partitions_added"
    ] == ["shard-00000", "shard-00001", "shard-00002"]
    change = sync_shard_partitions(instance, embedded, ["shard-00000"])
    assert change == {"partitions_added": [], "partitions_removed": ["shard-00001", "shard-00002"]}
    assert instance.get_dynamic_partitions(corpus_shards(embedded).name) == ["shard-00000"]


def test_a_changed_corpus_file_starts_one_corpus_run_and_an_unchanged_folder_none(embedded, tmp_path):
    """Not only new files: a file rewritten in place (other size, or same size and a new time) asks for one run."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder, "a.jsonl", 0, 4)
    defs = build_definitions([_experiment(embedded, folder)], default_resources())
    instance = dg.DagsterInstance.ephemeral()
    name = "watched_new_corpus_files"
    first = _tick(defs, name, instance, None)
    assert len(first.run_requests) == 1 and first.run_requests[0].tags["trigger"] == "corpus_files"
    unchanged = _tick(defs, name, instance, first.cursor)
    assert unchanged.run_requests == [] and unchanged.skip_message == "no new or changed corpus files"

    _write(folder, "a.jsonl", 0, 5)  # the same file, one document more
    grown = _tick(defs, name, instance, first.cursor)
    assert len(grown.run_requests) == 1 and grown.cursor != first.cursor
    assert grown.run_requests[0].run_key != first.run_requests[0].run_key
    assert _tick(defs, name, instance, grown.cursor).run_requests == []

    path = folder / "a.jsonl"
    stat = path.stat()
    path.write_text(path.read_text().replace("number 0.", "number 9."))  # same size, new content and time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == stat.st_size
    edited = _tick(defs, name, instance, grown.cursor)
    assert len(edited.run_requests) == 1 and edited.cursor not in (first.cursor, grown.cursor)
