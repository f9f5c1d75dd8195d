"""The retries the README promises for the Ray stages: twice, with exponential back-off, through Dagster."""

import dagster as dg
import pyarrow as pa
import pytest

from assets import registry, stage
from assets.registry import outputs_for
from assets.stage import TRANSIENT_RETRY, StageResult, stage_assets
from pipelines.definitions import default_resources
from pipelines.graph import experiment_assets
from tests.support import resources_at
from tpt.errors import InputError
from tpt.stages import Stage, no_config

RAY_STAGES = {
    "thinking_trajectories_tpt",
    "token_shards_vanilla",
    "token_shards_tpt",
    "checkpoint_vanilla",
    "checkpoint_tpt",
}


def test_the_ray_stages_retry_twice_with_exponential_back_off(embedded):
    policies = {a.key.path[-1]: a.op.retry_policy for a in experiment_assets(embedded, default_resources())}
    assert {name for name, policy in policies.items() if policy} == RAY_STAGES
    expected = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)
    assert {policies[name] for name in RAY_STAGES} == {expected}
    assert [expected.calculate_delay(attempt) for attempt in (1, 2)] == [30, 90]  # seconds before each retry


def _flaky_stage(embedded, failures: int, error: type[Exception], monkeypatch):
    """A stand-in stage declared as the real ones are (``retried=True``), whose first ``failures`` attempts raise
    ``error``. Its policy is the Ray stages' without the waiting (30 s, then 90 s)."""
    attempts = []
    monkeypatch.setattr(stage, "TRANSIENT_RETRY", TRANSIENT_RETRY._replace(delay=0))

    def flaky(run) -> StageResult:
        attempts.append(run.context.retry_number)
        if len(attempts) <= failures:
            raise error("worker lost" if error is ConnectionError else "bad config")
        return StageResult(reused=False, figures={}, record=False)

    spec = Stage(name="flaky", revision=1, own=no_config, retried=True, description="stand-in", compute=flaky)
    monkeypatch.setattr(registry, "STAGES", (*registry.STAGES, spec))
    [asset] = stage_assets(embedded, spec, outputs_for(embedded, "/unused", {}))
    return asset, attempts


def _events(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType) -> int:
    return sum(e.event_type == kind for e in result.all_events)


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (3, False)], ids=["recovers", "gives-up"])
def test_a_transient_failure_is_retried_twice_then_the_step_fails(
    embedded, failures: int, succeeds: bool, monkeypatch, tmp_path
):
    asset, attempts = _flaky_stage(embedded, failures, ConnectionError, monkeypatch)
    result = dg.materialize([asset], resources=resources_at(tmp_path), raise_on_error=False)
    assert result.success is succeeds
    assert attempts == [0, 1, 2]
    assert _events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == 2
    assert _events(result, dg.DagsterEventType.STEP_FAILURE) == (0 if succeeds else 1)


def test_bad_input_is_not_retried(embedded, monkeypatch, tmp_path):
    asset, attempts = _flaky_stage(embedded, 1, InputError, monkeypatch)
    result = dg.materialize([asset], resources=resources_at(tmp_path), raise_on_error=False)
    assert not result.success and attempts == [0]
    assert _events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == 0


def test_catalog_rows_are_written_in_bounded_batches() -> None:
    """A merge's memory follows its delta's size: one run's rows go to the catalog ROW_BATCH at a time, whether
    the stage returns one table, an iterator of tables or a list of dicts."""
    n = 2 * stage.ROW_BATCH + 7
    table = pa.table({"doc_id": [f"d{i}" for i in range(n)]})
    sizes = [t.num_rows for t in stage._row_batches(table)]
    assert sizes == [stage.ROW_BATCH, stage.ROW_BATCH, 7]
    assert [t.num_rows for t in stage._row_batches(iter([table, table.slice(0, 3)]))] == [*sizes, 3]
    assert pa.concat_tables(stage._row_batches(table)).equals(table)  # every row, in order, once
    assert list(stage._row_batches([{"a": 1}, {"a": 2}])) == [[{"a": 1}, {"a": 2}]]
