"""Bad input reaches the Dagster user as one clear line, and nothing already finished is lost."""

import dagster as dg

from tests.support import resources_at, stage_asset
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
    corpus_dir = tmp_path / "docs"
    corpus_dir.mkdir()
    (corpus_dir / "a.jsonl").write_text('{"text": "' + "A real paragraph about rivers. " * 10 + '"}\n')
    experiment = _with(
        embedded,
        corpus__sources=[LocalFolder(name="docs", path=str(corpus_dir)).model_dump()],
        generation__model={"kind": "local", "name": str(tmp_path / "no-such-model")},
    )
    resources = resources_at(tmp_path)
    done = dg.materialize([stage_asset(experiment, "corpus", resources)], resources=resources)
    assert done.success
    manifest = next((tmp_path / "art").rglob("_manifest.json"))
    failed = dg.materialize(
        [stage_asset(experiment, "thinking_model", resources)], resources=resources, raise_on_error=False
    )
    assert not failed.success
    message = _failure_message(failed)
    assert message.startswith("ModelNotFoundError: model folder") and "no-such-model" in message
    assert "\n" not in message
    assert manifest.exists()  # the finished corpus is untouched


def test_missing_corpus_folder_fails_in_one_line(embedded, tmp_path):
    experiment = _with(embedded, corpus__sources=[LocalFolder(name="x", path=str(tmp_path / "gone")).model_dump()])
    resources = resources_at(tmp_path)
    result = dg.materialize([stage_asset(experiment, "corpus", resources)], resources=resources, raise_on_error=False)
    message = _failure_message(result)
    assert message == f"SourceError: corpus folder {tmp_path / 'gone'} does not exist or is not a folder"
