"""Asset checks fail loudly where they must: a contaminated corpus stops the graph before generation, and a
mixture order that does not fill its run's budget is flagged."""

import json

import dagster as dg
import numpy as np

from assets.checks import experiment_checks
from pipelines.graph import experiment_assets
from resources import RayCluster
from tests.support import outputs, resources_at, stage_asset
from tpt.catalog import Catalog
from tpt.config import Experiment, LocalFolder
from tpt.evaluation.data import load_docs
from tpt.tokenization.mixture import ORDER_FILE

PARAGRAPH = "An ordinary paragraph about bread, flour, yeast and the patience that baking needs. " * 3


def _experiment(embedded: Experiment, folder, max_fraction: float) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["corpus"]["sources"] = [LocalFolder(name="web", path=str(folder)).model_dump()]
    raw["mixture"] = {}  # natural proportions of the one source
    raw["corpus"]["decontamination"] = {"benchmarks": ["gsm8k"], "max_contaminated_fraction": max_fraction}
    return Experiment.model_validate(raw)


def _run(experiment: Experiment, tmp_path) -> tuple[dg.ExecuteInProcessResult, dg.AssetCheckEvaluation]:
    checks = [c for c in experiment_checks(experiment) if c.check_key.asset_key.path[-1] == "corpus"]
    resources = resources_at(tmp_path)
    result = dg.materialize(
        [stage_asset(experiment, "corpus", resources), *checks], resources=resources, raise_on_error=False
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
    rows = Catalog(tmp_path / "catalog").query("SELECT benchmark, item FROM contamination ORDER BY item")
    assert rows == [{"benchmark": "gsm8k", "item": 0}, {"benchmark": "gsm8k", "item": 1}]


def test_contamination_below_threshold_passes(embedded, tmp_path):
    experiment = _experiment(embedded, _corpus(tmp_path, contaminated=1, clean=19), max_fraction=0.1)
    result, evaluation = _run(experiment, tmp_path)
    assert result.success and evaluation.passed
    assert evaluation.metadata["dropped_documents"].value == 1


def test_a_mixture_order_that_does_not_fill_the_budget_fails_its_check(embedded, tmp_path):
    """Resolved, then cut short on disk (a truncated copy, say): the check compares it with the scale's budget."""
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = [f"{PARAGRAPH} Note {i} about rye and spelt." for i in range(8)]
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    raw = _experiment(embedded, folder, max_fraction=0.5).model_dump(mode="json")
    raw["variants"] = ["vanilla"]
    experiment = Experiment.model_validate(raw)
    resources = resources_at(tmp_path, ray_cluster=RayCluster(num_cpus=2))
    assets = {a.key.path[-1]: a for a in experiment_assets(experiment, resources)}
    [check] = [c for c in experiment_checks(experiment) if c.check_key.name == "order_fills_the_token_budget"]
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([assets["corpus"]], resources=resources, instance=instance).success
    for shard in instance.get_dynamic_partitions(f"{experiment.name}__corpus_shards"):
        shards = dg.materialize(
            [assets["token_shards_vanilla"]], partition_key=shard, resources=resources, instance=instance
        )
        assert shards.success

    def mixture_check() -> dg.AssetCheckEvaluation:
        mixture = [assets["data_mixture_vanilla"], check]
        result = dg.materialize(mixture, partition_key="base", resources=resources, instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation

    assert mixture_check().passed
    stage = outputs(experiment, resources).of("data_mixture", "vanilla", "base")
    order = np.load(stage.path / ORDER_FILE)
    with open(stage.path / ORDER_FILE, "wb") as fh:
        np.save(fh, order[: order.size // 2])
    cut = mixture_check()
    assert not cut.passed
    assert cut.metadata["sequences"].value == order.size // 2 < cut.metadata["budget_sequences"].value
