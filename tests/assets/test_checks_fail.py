"""Every asset check, seen failing: each test runs one check through Dagster on a private copy of a staged
cut-down experiment, sees it pass, corrupts the one thing the check guards (the cheapest corruption that should
trip it), and sees it fail with the figures that say why. A check that always passed would fail these tests."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.checks import MAX_GENERATION_ERROR_SHARE
from assets.stage import asset_key
from pipelines.graph import experiment_checks
from tests.assets.staged import (
    BENCHMARK,
    CELL,
    SCALE,
    VARIANT,
    Staged,
    trajectory_rows,
    write_finished_shard,
    write_scores,
    write_training,
)
from tpt.atomic import read_json, write_json, write_parquet
from tpt.corpus.build import MANIFEST, load_manifest, read_shard
from tpt.generation.shard_runner import SUCCESS, read_trajectories
from tpt.models import resolve_model
from tpt.tokenization.mixture import ResolvedMixture
from tpt.tokenization.ray_pack import shard_out_path

pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning")

SHARD = "shard-00000"


def _value(evaluation: dg.AssetCheckEvaluation, name: str):
    return evaluation.metadata[name].value


def _documents(world: Staged) -> int:
    return load_manifest(world.plan.of("corpus").path, world.plan.of("corpus").version).n_documents


def test_staged_experiment_passes_every_check(staged: Staged) -> None:
    """The baseline every corruption below departs from: each of the nine checks passes on the staged data."""
    partitions = {"order_fills_the_token_budget": SCALE, "loss_decreased": SCALE}
    partitions |= {"scores_in_unit_range": CELL, "no_score_drop": CELL}
    partitions |= dict.fromkeys(["one_trajectory_per_document", "same_documents_as_the_corpus"], SHARD)
    partitions |= {"documents_match_upstream": SHARD}
    names = {c.check_key.name for c in experiment_checks(staged.experiment)}
    assert len(names) == 9
    for name in sorted(names):
        evaluation = staged.evaluate(name, partitions.get(name))
        assert evaluation.passed, (name, evaluation.description, evaluation.metadata)


# document_ids_unique_and_counted


def test_document_ids_unique_and_counted_fails_on_a_duplicated_document(world: Staged) -> None:
    corpus = world.plan.of("corpus").path
    shard = read_shard(corpus, SHARD)
    write_parquet(corpus / f"{SHARD}.parquet", pa.concat_tables([shard, shard.slice(0, 1)]))
    evaluation = world.evaluate("document_ids_unique_and_counted")
    n = _documents(world)
    assert not evaluation.passed
    assert (_value(evaluation, "documents"), _value(evaluation, "unique_ids"), _value(evaluation, "manifest")) == (
        n + 1,
        n,
        n,
    )


def test_document_ids_unique_and_counted_fails_when_a_shard_lost_a_document(world: Staged) -> None:
    corpus = world.plan.of("corpus").path
    shard = read_shard(corpus, SHARD)
    write_parquet(corpus / f"{SHARD}.parquet", shard.slice(0, shard.num_rows - 1))
    evaluation = world.evaluate("document_ids_unique_and_counted")
    n = _documents(world)
    assert not evaluation.passed
    assert (_value(evaluation, "documents"), _value(evaluation, "manifest")) == (n - 1, n)


# benchmark_contamination_below_threshold (the real contaminated corpus: tests/assets/test_checks.py)


def test_contamination_check_fails_on_a_manifest_without_its_decontamination_record(world: Staged) -> None:
    path = world.plan.of("corpus").path / MANIFEST
    write_json(path, read_json(path) | {"contamination": {}})
    evaluation = world.evaluate("benchmark_contamination_below_threshold")
    assert not evaluation.passed
    assert evaluation.description == "corpus manifest has no decontamination record"


def test_contamination_over_the_limit_blocks_the_corpus_run(world: Staged) -> None:
    """A record over the limit fails the check with ERROR severity, and since the check blocks, the corpus run
    itself fails (so nothing downstream of it starts)."""
    path = world.plan.of("corpus").path / MANIFEST
    manifest = read_json(path)
    record = manifest["contamination"]
    limit = world.experiment.corpus.decontamination.max_contaminated_fraction
    dropped = int(record["checked"] * limit) + 1  # one document over the limit
    write_json(path, manifest | {"contamination": record | {"dropped": dropped}})
    corpus = asset_key(world.experiment, "corpus")
    job = dg.define_asset_job("corpus_with_checks", selection=dg.AssetSelection.assets(corpus))
    result = (
        world.definitions(job)
        .resolve_job_def("corpus_with_checks")
        .execute_in_process(instance=world.instance, raise_on_error=False)
    )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if "contamination" in e.check_name]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.startswith(f"{dropped} of {record['checked']} documents dropped as contaminated")
    assert not result.success


# one_trajectory_per_document, with its generation-error share rule


def _rewrite_thinking(world: Staged, table: pa.Table, shard: str = SHARD) -> None:
    write_finished_shard(world.plan.of("thinking_trajectories", "tpt").path / shard, table)


def _thinking(world: Staged, shard: str = SHARD) -> pa.Table:
    return read_trajectories(world.plan.of("thinking_trajectories", "tpt").path / shard)


def test_one_trajectory_per_document_fails_on_a_missing_document(world: Staged) -> None:
    table = _thinking(world)
    _rewrite_thinking(world, table.slice(1))
    evaluation = world.evaluate("one_trajectory_per_document", SHARD)
    assert not evaluation.passed
    assert (_value(evaluation, "missing"), _value(evaluation, "duplicated")) == (1, 0)


def test_one_trajectory_per_document_fails_on_a_duplicated_document(world: Staged) -> None:
    table = _thinking(world)
    _rewrite_thinking(world, pa.concat_tables([table, table.slice(2, 1)]))
    evaluation = world.evaluate("one_trajectory_per_document", SHARD)
    assert not evaluation.passed
    assert (_value(evaluation, "missing"), _value(evaluation, "duplicated")) == (0, 1)


@pytest.mark.parametrize(("errors", "passes"), [(1, True), (2, False)], ids=["at-the-limit", "over-the-limit"])
def test_one_trajectory_per_document_allows_generation_errors_up_to_five_percent(
    world: Staged, errors: int, passes: bool
) -> None:
    """Judged over the shards of a run (here a range of both shards, 20 documents): one error is a share of
    exactly 5% (allowed), two are 10% (not)."""
    assert MAX_GENERATION_ERROR_SHARE == 0.05
    documents = read_shard(world.plan.of("corpus").path, SHARD)
    lengths = _thinking(world)["output_tokens"].to_pylist()
    _rewrite_thinking(world, trajectory_rows(world.experiment, SHARD, documents, lengths, set(range(errors))))
    evaluation = world.evaluate("one_trajectory_per_document", (SHARD, "shard-00001"))
    total = _documents(world)
    assert (_value(evaluation, "shards"), _value(evaluation, "documents")) == (2, total)
    assert _value(evaluation, "errors") == errors
    assert _value(evaluation, "error_share") == pytest.approx(errors / total)
    assert evaluation.passed is passes
    assert (_value(evaluation, "missing"), _value(evaluation, "duplicated")) == (0, 0)


def test_one_trajectory_per_document_fails_on_a_shard_still_to_be_generated(world: Staged) -> None:
    """A shard without ``_SUCCESS.json`` is not finished: its partial rows are not judged, its partition fails
    with the reason, and a finished shard beside it still passes on its own."""
    shard = "shard-00001"
    path = world.plan.of("thinking_trajectories", "tpt").path / shard
    write_parquet(path / "part-00000.parquet", _thinking(world, shard).slice(0, 3))
    (path / SUCCESS).unlink()
    evaluation = world.evaluate("one_trajectory_per_document", shard)
    assert not evaluation.passed
    assert evaluation.description == f"no finished trajectories for {shard}"
    assert world.evaluate("one_trajectory_per_document", SHARD).passed


# same_documents_as_the_corpus


def test_same_documents_as_the_corpus_fails_on_a_lost_row(world: Staged) -> None:
    path = world.plan.of("augmented_documents", "tpt").path / f"{SHARD}.parquet"
    augmented = pq.read_table(path)
    write_parquet(path, augmented.slice(0, augmented.num_rows - 1))
    evaluation = world.evaluate("same_documents_as_the_corpus", SHARD)
    assert not evaluation.passed
    assert _value(evaluation, "mismatched_shards") == [SHARD]


def test_same_documents_as_the_corpus_fails_on_a_missing_column(world: Staged) -> None:
    path = world.plan.of("augmented_documents", "tpt").path / f"{SHARD}.parquet"
    write_parquet(path, pq.read_table(path).drop_columns(["has_thinking"]))
    evaluation = world.evaluate("same_documents_as_the_corpus", SHARD)
    assert not evaluation.passed
    assert (_value(evaluation, "missing_columns"), _value(evaluation, "mismatched_shards")) == (["has_thinking"], [])


# documents_match_upstream


def test_documents_match_upstream_fails_on_a_shard_packed_from_fewer_documents(world: Staged) -> None:
    """The shard's tokens repacked (by the real packer) from all but one of its corpus documents."""
    from tpt.tokenization.pack import tokenize_and_pack

    documents = read_shard(world.plan.of("corpus").path, SHARD)
    kept = documents.slice(1)
    out = shard_out_path(world.plan.of("token_shards", VARIANT).path, SHARD)
    tokenizer = resolve_model(world.experiment.tokenizer, weights=False)
    seq_len = world.experiment.training.seq_len
    tokenize_and_pack(kept["text"].to_pylist(), tokenizer, seq_len, out, sources=kept["source"].to_pylist())
    evaluation = world.evaluate("documents_match_upstream", SHARD)
    assert not evaluation.passed
    assert _value(evaluation, "mismatched_shards") == str({SHARD: (documents.num_rows - 1, documents.num_rows)})
    assert _value(evaluation, "packed_documents") == documents.num_rows - 1


def test_documents_match_upstream_fails_when_nothing_is_packed(world: Staged) -> None:
    for index in world.plan.of("token_shards", VARIANT).path.glob("shard-*.json"):
        index.unlink()
    evaluation = world.evaluate("documents_match_upstream", SHARD)
    assert not evaluation.passed
    assert _value(evaluation, "packed_shards") == 0
    assert _value(evaluation, "mismatched_shards") == str({SHARD: (None, _documents(world) // 2)})


# order_fills_the_token_budget (an order cut short: tests/assets/test_checks.py)


def test_order_fills_the_token_budget_fails_on_an_id_past_the_packed_sequences(world: Staged) -> None:
    folder = world.plan.of("data_mixture", VARIANT, SCALE).path
    mixture = ResolvedMixture.load(folder)
    clean = world.evaluate("order_fills_the_token_budget", SCALE)
    assert clean.passed
    packed = _value(clean, "packed_sequences")
    order = mixture.order.copy()
    order[0] = packed  # one past the last sequence id
    ResolvedMixture(order, mixture.shares).save(folder)
    evaluation = world.evaluate("order_fills_the_token_budget", SCALE)
    assert not evaluation.passed
    assert _value(evaluation, "sequences") == _value(evaluation, "budget_sequences") == order.size


def test_order_fills_the_token_budget_fails_when_the_sources_do_not_add_up(world: Staged) -> None:
    folder = world.plan.of("data_mixture", VARIANT, SCALE).path
    mixture = ResolvedMixture.load(folder)
    first, *rest = mixture.shares
    shares = [type(first)(**(first.as_row() | {"selected_sequences": first.selected_sequences + 1})), *rest]
    ResolvedMixture(mixture.order, shares).save(folder)
    evaluation = world.evaluate("order_fills_the_token_budget", SCALE)
    assert not evaluation.passed
    assert _value(evaluation, "selected_by_sources") == _value(evaluation, "budget_sequences") + 1


# loss_decreased


def test_loss_decreased_fails_on_a_loss_that_rose(world: Staged) -> None:
    write_training(world, [10.8, 9.1, 7.4, 11.0])
    evaluation = world.evaluate("loss_decreased", SCALE)
    assert not evaluation.passed
    assert (_value(evaluation, "first_loss"), _value(evaluation, "final_loss")) == (10.8, 11.0)


def test_loss_decreased_fails_with_fewer_than_two_steps(world: Staged) -> None:
    write_training(world, [10.8])
    evaluation = world.evaluate("loss_decreased", SCALE)
    assert not evaluation.passed
    assert evaluation.description == "fewer than two logged steps"


# scores_in_unit_range


def test_scores_in_unit_range_fails_on_a_score_above_one(world: Staged) -> None:
    metrics = {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 1.5}
    write_scores(world, metrics, primary="exact_match,strict-match")
    evaluation = world.evaluate("scores_in_unit_range", CELL)
    assert not evaluation.passed
    [bad] = _value(evaluation, "out_of_range")
    assert (bad["metric"], bad["value"]) == ("exact_match,flexible-extract", 1.5)


def test_scores_in_unit_range_fails_without_a_primary_metric(world: Staged) -> None:
    write_scores(world, {"exact_match,strict-match": 0.25}, primary="exact_match,flexible-extract")
    evaluation = world.evaluate("scores_in_unit_range", CELL)
    assert not evaluation.passed
    assert (_value(evaluation, "metrics"), _value(evaluation, "out_of_range")) == (["exact_match,strict-match"], [])


# no_score_drop


def _report_scores(instance: dg.DagsterInstance, world: Staged, *scores: float) -> None:
    """Materializations of the cell as the benchmark asset records them (its ``score`` metadata), reported to
    the instance instead of computed (an lm-eval run each would cost a minute)."""
    key = asset_key(world.experiment, "benchmark_scores", VARIANT)
    for i, score in enumerate(scores):
        metadata = {"score": score, "checkpoint_version": f"checkpoint-{i}", "benchmark": BENCHMARK}
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=CELL, metadata=metadata))


def test_no_score_drop_warns_when_a_cell_scores_lower_than_before(world: Staged) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        _report_scores(instance, world, 0.5)
        first = world.evaluate("no_score_drop", CELL, instance)
        assert first.passed and first.description == "no earlier score of this cell to compare with"
        _report_scores(instance, world, 0.75)
        assert world.evaluate("no_score_drop", CELL, instance).passed  # a rise is no drop
        _report_scores(instance, world, 0.25)
        evaluation = world.evaluate("no_score_drop", CELL, instance)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert (_value(evaluation, "score"), _value(evaluation, "previous_score")) == (0.25, 0.75)
    assert _value(evaluation, "drop") == pytest.approx(0.5)
    assert _value(evaluation, "previous_checkpoint_version") == "checkpoint-0"


FAILING_CASES = {
    "document_ids_unique_and_counted": [
        test_document_ids_unique_and_counted_fails_on_a_duplicated_document,
        test_document_ids_unique_and_counted_fails_when_a_shard_lost_a_document,
    ],
    "benchmark_contamination_below_threshold": [
        test_contamination_check_fails_on_a_manifest_without_its_decontamination_record,
        test_contamination_over_the_limit_blocks_the_corpus_run,
    ],
    "one_trajectory_per_document": [
        test_one_trajectory_per_document_fails_on_a_missing_document,
        test_one_trajectory_per_document_fails_on_a_duplicated_document,
        test_one_trajectory_per_document_allows_generation_errors_up_to_five_percent,
        test_one_trajectory_per_document_fails_on_a_shard_still_to_be_generated,
    ],
    "same_documents_as_the_corpus": [
        test_same_documents_as_the_corpus_fails_on_a_lost_row,
        test_same_documents_as_the_corpus_fails_on_a_missing_column,
    ],
    "documents_match_upstream": [
        test_documents_match_upstream_fails_on_a_shard_packed_from_fewer_documents,
        test_documents_match_upstream_fails_when_nothing_is_packed,
    ],
    "order_fills_the_token_budget": [
        test_order_fills_the_token_budget_fails_on_an_id_past_the_packed_sequences,
        test_order_fills_the_token_budget_fails_when_the_sources_do_not_add_up,
    ],
    "loss_decreased": [
        test_loss_decreased_fails_on_a_loss_that_rose,
        test_loss_decreased_fails_with_fewer_than_two_steps,
    ],
    "scores_in_unit_range": [
        test_scores_in_unit_range_fails_on_a_score_above_one,
        test_scores_in_unit_range_fails_without_a_primary_metric,
    ],
    "no_score_drop": [test_no_score_drop_warns_when_a_cell_scores_lower_than_before],
}


def test_every_check_of_the_graph_has_a_failing_case_here(embedded) -> None:
    """A new check without a failing case in this file fails here."""
    assert set(FAILING_CASES) == {c.check_key.name for c in experiment_checks(embedded)}
