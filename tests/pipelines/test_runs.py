"""Runs that behave: accelerator steps of different runs wait for each other, bad input fails at once without
retries, and a failed step leaves one line that says what happened and what survives."""

import threading
import time
from pathlib import Path

import dagster as dg
import yaml

from assets.stage import ACCELERATOR_POOL
from pipelines.definitions import build_definitions, default_resources
from resources import ArtifactStorage, DuckDBCatalog

REPO = Path(__file__).resolve().parents[2]


def _definitions(experiment, root: Path) -> dg.Definitions:
    storage = {"storage": ArtifactStorage(root=str(root)), "catalog": DuckDBCatalog(path=str(root / "c.duckdb"))}
    return build_definitions([experiment], default_resources() | storage)


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


def _blocked(instance: dg.DagsterInstance) -> bool:
    runs = instance.get_runs()
    blocked = f"Step blocked by limit for pool {ACCELERATOR_POOL}"
    return bool(runs) and blocked in _messages(instance, runs[0].run_id)


def test_an_accelerator_step_waits_while_another_run_holds_the_device(embedded, tmp_path):
    """The project's own dagster.yaml: the pool's limit is 1, so a cell waits until the other run frees it."""
    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    job = _definitions(embedded, tmp_path).resolve_job_def("embedded_benchmarks")
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "home"), overrides=config) as instance:
        storage = instance.event_log_storage
        assert storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)  # as a run's first step does
        assert storage.get_concurrency_info(ACCELERATOR_POOL).slot_count == 1
        assert storage.claim_concurrency_slot(ACCELERATOR_POOL, "another-run", "training").is_claimed
        done: dict = {}

        def launch() -> None:
            done["result"] = job.execute_in_process(instance=instance, partition_key="gsm8k|base", raise_on_error=False)

        runner = threading.Thread(target=launch)
        runner.start()
        deadline = time.monotonic() + 120
        while not _blocked(instance) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _blocked(instance) and runner.is_alive()  # waiting on the pool, not failed
        storage.free_concurrency_slots_for_run("another-run")
        runner.join(timeout=120)
        assert not runner.is_alive()
        messages = _messages(instance, done["result"].run_id)
    # no checkpoint was trained here, so the cells then fail, each with the failure hook's one line
    hooked = [m for m in messages if m.startswith("TPT step")]
    assert len(hooked) == 2 and all(
        "EvaluationError: checkpoint" in m and "finished outputs are kept" in m for m in hooked
    )


def test_missing_upstream_work_fails_once_without_retries_despite_the_retry_policy(embedded, tmp_path):
    defs = _definitions(embedded, tmp_path)
    job = defs.resolve_job_def("embedded_shards")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("embedded__corpus_shards", ["shard-00000"])
    result = job.execute_in_process(instance=instance, partition_key="shard-00000", raise_on_error=False)
    assert not result.success
    types = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in types  # the trajectories and token shard stages do retry
    failed = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert failed == {"embedded__thinking_trajectories_tpt", "embedded__token_shards_vanilla"}
    hooked = [m for m in _messages(instance, result.run_id) if m.startswith("TPT step")]
    assert len(hooked) == 2 and all("the corpus is not built for this config" in m for m in hooked)
