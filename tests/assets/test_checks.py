"""Asset checks fail loudly where they must: a contaminated corpus stops the graph before generation."""

import json

import dagster as dg

from assets.checks import experiment_checks
from assets.corpus import corpus_asset
from resources import ArtifactStorage, DuckDBCatalog
from tpt.catalog import Catalog
from tpt.config import Experiment, LocalFolder
from tpt.evaluation.data import load_docs

PARAGRAPH = "An ordinary paragraph about bread, flour, yeast and the patience that baking needs. " * 3


def _experiment(embedded: Experiment, folder, max_fraction: float) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["corpus"]["sources"] = [LocalFolder(name="web", path=str(folder)).model_dump()]
    raw["mixture"] = {}  # natural proportions of the one source
    raw["corpus"]["decontamination"] = {"benchmarks": ["gsm8k"], "max_contaminated_fraction": max_fraction}
    return Experiment.model_validate(raw)


def _run(experiment: Experiment, tmp_path) -> tuple[dg.ExecuteInProcessResult, dg.AssetCheckEvaluation]:
    checks = [c for c in experiment_checks(experiment) if c.check_key.asset_key.path[-1] == "corpus"]
    result = dg.materialize(
        [corpus_asset(experiment), *checks],
        resources={
            "storage": ArtifactStorage(root=str(tmp_path / "art")),
            "catalog": DuckDBCatalog(path=str(tmp_path / "c.duckdb")),
        },
        raise_on_error=False,
    )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if "contamination" in e.check_name]
    return result, evaluation


def _corpus(tmp_path, contaminated: int, clean: int):
    folder = tmp_path / "docs"
    folder.mkdir()
    questions = [d["question"] for d in load_docs("gsm8k").docs[:contaminated]]
    texts = [f"{PARAGRAPH} Note {i}." for i in range(clean)] + [f"{PARAGRAPH} {q}" for q in questions]
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def test_contamination_above_threshold_fails_the_blocking_check(embedded, tmp_path):
    experiment = _experiment(embedded, _corpus(tmp_path, contaminated=2, clean=6), max_fraction=0.1)
    _, evaluation = _run(experiment, tmp_path)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.startswith("2 of 8 documents dropped as contaminated")
    assert evaluation.metadata["by_benchmark"].value == {"gsm8k": 2}
    rows = Catalog(tmp_path / "c.duckdb").query("SELECT benchmark, item FROM contamination ORDER BY item")
    assert rows == [{"benchmark": "gsm8k", "item": 0}, {"benchmark": "gsm8k", "item": 1}]


def test_contamination_below_threshold_passes(embedded, tmp_path):
    experiment = _experiment(embedded, _corpus(tmp_path, contaminated=1, clean=19), max_fraction=0.1)
    result, evaluation = _run(experiment, tmp_path)
    assert result.success and evaluation.passed
    assert evaluation.metadata["dropped_documents"].value == 1
