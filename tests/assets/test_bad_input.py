"""Bad input reaches the Dagster user as one clear line, and nothing already finished is lost."""

import dagster as dg

from tests.support import outputs, resources_at, stage_asset
from tpt.config import Experiment, LocalFolder


def _with(embedded: Experiment, **changes) -> Experiment:
    """The embedded experiment with ``section__field`` changes, on its natural mixture (sources get replaced)."""
    raw = embedded.model_dump(mode="json") | {"mixture": {}}
    for path, value in changes.items():
        section, field = path.split("__")
        raw[section][field] = value
    return Experiment.model_validate(raw)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description


def test_missing_model_path_fails_in_one_line_and_keeps_the_finished_corpus(embedded, tmp_path):
    """The corpus and the thinking model in one run, as the corpus job runs them: the model fails with one line,
    and the corpus finished beside it stays materialized and is reused, not rebuilt, by the next run."""
    corpus_dir = tmp_path / "docs"
    corpus_dir.mkdir()
    (corpus_dir / "a.jsonl").write_text('{"text": "' + "A real paragraph about rivers. " * 10 + '"}\n')
    experiment = _with(
        embedded,
        corpus__sources=[LocalFolder(name="docs", path=str(corpus_dir)).model_dump()],
        generation__model={"kind": "local", "name": str(tmp_path / "no-such-model")},
    )
    resources = resources_at(tmp_path)
    corpus = stage_asset(experiment, "corpus", resources)
    with dg.DagsterInstance.ephemeral() as instance:
        failed = dg.materialize(
            [corpus, stage_asset(experiment, "thinking_model", resources, "tpt")],
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not failed.success
        message = _failure_message(failed)
        assert message.startswith("ModelNotFoundError: model folder") and "no-such-model" in message
        assert "\n" not in message
        [built] = failed.get_asset_materialization_events()
        assert built.asset_key == corpus.key and instance.get_latest_materialization_event(corpus.key)
        written = outputs(experiment, resources).of("corpus").path
        files = {p: p.stat().st_mtime_ns for p in written.iterdir()}
        assert any(p.suffix == ".parquet" for p in files)
        again = dg.materialize([corpus], resources=resources, instance=instance)
    [reused] = again.get_asset_materialization_events()
    assert reused.materialization.metadata["reused_finished_output"].value is True
    assert {p: p.stat().st_mtime_ns for p in written.iterdir()} == files  # not one file rewritten


def test_missing_corpus_folder_fails_in_one_line(embedded, tmp_path):
    experiment = _with(embedded, corpus__sources=[LocalFolder(name="x", path=str(tmp_path / "gone")).model_dump()])
    resources = resources_at(tmp_path)
    result = dg.materialize([stage_asset(experiment, "corpus", resources)], resources=resources, raise_on_error=False)
    message = _failure_message(result)
    assert message == f"SourceError: corpus folder {tmp_path / 'gone'} does not exist or is not a folder"


def test_a_corpus_shard_truncated_by_a_crash_fails_its_stage_in_one_line(embedded, tmp_path):
    """Before any engine starts: the shard's footer is missing, the run says which file, and every other file
    (the other shard, the manifest) is left as it was."""
    corpus_dir = tmp_path / "docs"
    corpus_dir.mkdir()
    texts = [f"A real paragraph about rivers and deltas, number {i}. " * 6 for i in range(4)]
    (corpus_dir / "a.jsonl").write_text("".join('{"text": "' + t + '"}\n' for t in texts))
    experiment = _with(embedded, corpus__sources=[LocalFolder(name="docs", path=str(corpus_dir)).model_dump()])
    raw = experiment.model_dump(mode="json")
    raw["corpus"] |= {"documents_per_shard": 2, "near_dedup": None}
    experiment = Experiment.model_validate(raw)
    resources = resources_at(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([stage_asset(experiment, "corpus", resources)], resources=resources, instance=instance)
        written = outputs(experiment, resources).of("corpus").path
        shard = written / "shard-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:100])
        files = {p: p.stat().st_mtime_ns for p in written.iterdir()}
        result = dg.materialize(
            [stage_asset(experiment, "thinking_trajectories", resources, "tpt")],
            partition_key="shard-00001",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    message = _failure_message(result)
    assert message.startswith("CorruptShardError: corpus shard-00001.parquet cannot be read (") and "\n" not in message
    assert {p: p.stat().st_mtime_ns for p in written.iterdir()} == files
