"""Thinking-length telemetry, as the trajectories asset reports it, checked against lengths worked out by hand: a
finished shard (an engine stand-in's output, written as the engine writes it) materialized through Dagster."""

import base64

import pytest

from tests.assets.staged import Staged, trajectory_rows, write_finished_shard
from tpt.corpus.build import read_shard

SHARD = "shard-00000"


def test_thinking_lengths_are_reported_without_the_failed_documents(world: Staged) -> None:
    documents = read_shard(world.plan.of("corpus").path, SHARD)
    assert documents.num_rows == 10
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    rows = trajectory_rows(world.experiment, SHARD, documents, lengths, errors={9})  # the 100-token one failed
    write_finished_shard(world.plan.of("thinking_trajectories", "tpt").path / SHARD, rows)

    result = world.materialize("thinking_trajectories_tpt", SHARD)
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["reused_finished_output"] is True  # nothing generated: the shard was finished
    assert (metadata["documents"], metadata["errors"]) == (10, 1)
    assert metadata["finish_reasons"] == {"stop": 9, "error": 1}
    assert metadata["output_tokens"] == 450  # 10 + 20 + ... + 90
    # over the nine that finished, 10..90: mean and median 50; p90 at rank 0.9 * 8 = 7.2, 80 + 0.2 * 10 = 82
    assert metadata["thinking_tokens_mean"] == 50.0 and metadata["thinking_tokens_p50"] == 50.0
    assert metadata["thinking_tokens_p90"] == pytest.approx(82.0)
    assert metadata["thinking_tokens_max"] == 90
    plot = metadata["thinking_length_by_source"]
    assert base64.b64decode(plot.split("base64,")[1].rstrip(")"))[:8] == b"\x89PNG\r\n\x1a\n"

    catalog = world.catalog
    version = world.plan.of("thinking_trajectories", "tpt").version
    [shard] = catalog.query(
        "SELECT documents, errors, output_tokens, finish_reasons FROM generation_shards "
        "WHERE experiment = ? AND thinking_trajectories_version = ? AND shard = ?",
        [world.experiment.name, version, SHARD],
    )
    assert (shard["documents"], shard["errors"], shard["output_tokens"]) == (10, 1, 450)
    per_document = catalog.query(
        "SELECT output_tokens, finish_reason, error FROM trajectories "
        "WHERE experiment = ? AND thinking_trajectories_version = ? AND shard = ? ORDER BY output_tokens",
        [world.experiment.name, version, SHARD],
    )
    assert [r["output_tokens"] for r in per_document] == [0, *lengths[:9]]
    assert per_document[0]["finish_reason"] == "error" and per_document[0]["error"].startswith("RuntimeError")
