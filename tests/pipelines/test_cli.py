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


def _dg(tmp_path: Path, *args: str, experiments: str = "embedded") -> subprocess.CompletedProcess:
    """The ``dg`` CLI the README lists, on this project (``[tool.dg]`` in pyproject.toml), in its own process."""
    home = tmp_path / "dg_home"
    home.mkdir(exist_ok=True)
    env = os.environ | {"DAGSTER_HOME": str(home), "TPT_EXPERIMENTS": experiments, "PYTHONPATH": str(REPO)}
    command = [str(Path(sys.executable).with_name("dg")), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_loads_the_code_location_and_fails_on_a_bad_experiment(tmp_path):
    done = _dg(tmp_path, "check", "defs")
    assert done.returncode == 0 and "All definitions loaded successfully." in done.stdout + done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not Valid\n")
    refused = _dg(tmp_path, "check", "defs", experiments=str(bad))
    assert refused.returncode != 0 and str(bad) in refused.stdout + refused.stderr


def test_dg_list_defs_shows_the_experiments_graph(embedded: Experiment, tmp_path):
    from pipelines.definitions import default_resources
    from pipelines.graph import experiment_assets, experiment_checks
    from pipelines.jobs import experiment_jobs

    done = _dg(tmp_path, "list", "defs", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {
        a.key.to_user_string() for a in experiment_assets(embedded, default_resources())
    }
    checks = {f"{c.check_key.asset_key.to_user_string()}:{c.check_key.name}" for c in experiment_checks(embedded)}
    assert {c["key"] for c in listed["asset_checks"]} == checks and len(checks) == 14
    assert {j["name"] for j in listed["jobs"]} == {j.name for j in experiment_jobs(embedded).values()}
    assert {s["name"] for s in listed["sensors"]} == {
        "embedded_new_shards",
        "embedded_new_checkpoints",
        "embedded_report",
    }
    assert {s["name"]: s["cron_schedule"] for s in listed["schedules"]} == {
        "embedded_benchmarks_nightly": "0 2 * * *",
        "embedded_corpus_discovery_daily": "0 1 * * *",
    }
    assert {r["name"] for r in listed["resources"]} == {
        "storage",
        "catalog",
        "ray_cluster",
        "generator",
        "trainer",
        "evaluator",
    }
