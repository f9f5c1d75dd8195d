"""New data becomes exactly the work it needs: a new corpus file -> a new shard partition -> one run for it."""

import json
import os

import dagster as dg

from assets.partitions import corpus_shards, sync_shard_partitions
from pipelines.definitions import build_definitions, default_resources
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


def test_a_new_file_becomes_a_new_shard_and_only_that_shard_is_requested(embedded, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder, "a.jsonl", 0, 4)
    experiment = _experiment(embedded, folder)
    resources = resources_at(tmp_path)
    defs = build_definitions([experiment], resources)
    corpus = stage_asset(experiment, "corpus", resources)
    instance = dg.DagsterInstance.ephemeral()
    partitions = corpus_shards(experiment).name

    assert dg.materialize([corpus], resources=resources, instance=instance).success
    assert instance.get_dynamic_partitions(partitions) == ["shard-00000", "shard-00001"]
    first = _tick(defs, "watched_new_shards", instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["shard-00000", "shard-00001"]
    assert defs.resolve_sensor_def("watched_new_shards").job_name == "watched_shards"
    assert _tick(defs, "watched_new_shards", instance, first.cursor).run_requests == []  # each shard is requested once

    _write(folder, "b.jsonl", 4, 2)
    watcher = defs.resolve_sensor_def("watched_new_corpus_files")
    assert watcher.job_name == "watched_corpus"
    with dg.build_sensor_context(instance=instance, cursor=None) as context:
        assert len(watcher.evaluate_tick(context).run_requests) == 1
    assert dg.materialize([corpus], resources=resources, instance=instance).success
    assert instance.get_dynamic_partitions(partitions) == ["shard-00000", "shard-00001", "shard-00002"]
    second = _tick(defs, "watched_new_shards", instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["shard-00002"]  # only the new shard's work


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
