"""Partitions from Dagster's own command line, against a real instance on disk: the corpus registers its shard
partitions, then one command per shard materializes it, and the instance records one materialization each. (Ranges
over many partitions go through the daemon: `dagster job backfill`, or the UI; tests/pipelines/test_ui_graphql.py
launches one through GraphQL.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tpt.config import Experiment

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_partition_range_backfill_from_the_dagster_cli(embedded: Experiment, tmp_path):
    raw = embedded.model_dump(mode="json")
    raw["name"] = "cli"
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    config = tmp_path / "cli.yaml"
    config.write_text(json.dumps(raw))  # JSON is YAML
    home = tmp_path / "home"
    home.mkdir()
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "TPT_EXPERIMENTS": str(config),
        "TPT_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TPT_CATALOG": str(tmp_path / "catalog.duckdb"),
    }

    def dagster(*args: str) -> None:
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions", *args]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    dagster("--select", "cli/corpus")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        shards = instance.get_dynamic_partitions("cli__corpus_shards")
    assert shards == ["shard-00000", "shard-00001"]
    for shard in shards:
        dagster("--select", "cli/token_shards_vanilla", "--partition", shard)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        key = dg.AssetKey(["cli", "token_shards_vanilla"])
        assert instance.get_materialized_partitions(key) == set(shards)
        records = instance.fetch_materializations(key, limit=10).records
    assert sorted(r.partition_key for r in records) == shards
    assert all(r.asset_materialization.metadata["documents"].value == 4 for r in records)  # 4 documents a shard
