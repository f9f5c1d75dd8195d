"""Mid-training then SFT through the real assets (vanilla only, so no thinking is generated): a checkpoint student
(tiny LLaMA on SmolLM2's vocabulary as training.init) continues on the vanilla mixture, its SFT checkpoint trains on
evals-registry word problems, and one score cell of the SFT model runs lm-eval with the chat template; lineage runs
from the SFT score through the SFT checkpoint to the pretraining data."""

import dagster as dg
import pytest

from assets.benchmarks import upstream_outputs
from assets.partitions import cell_key
from pipelines.experiments import experiment_path
from pipelines.graph import experiment_assets
from tests.support import outputs, resources_at
from tpt.config import Experiment, load_experiment
from tpt.evaluation.runner import EvaluationRun
from tpt.training import TrainResult

pytestmark = pytest.mark.slow


def _experiment(tiny_checkpoint) -> Experiment:
    raw = load_experiment(experiment_path("embedded_midtrain")).model_dump(mode="json")
    raw["name"], raw["variants"], raw["tokenizer"] = "midtrain_test", ["vanilla"], None
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 8
    raw["training"] |= {"init": {"kind": "local", "name": str(tiny_checkpoint)}, "token_budget": 2048}
    raw["sft"]["sources"][0]["max_samples"] = 4
    raw["evaluation"] |= {"benchmarks": ["gsm8k"], "limit": 1, "max_gen_toks": 8}
    return Experiment.model_validate(raw)


def test_mid_training_then_sft_then_chat_scores(tiny_checkpoint, tmp_path):
    experiment = _experiment(tiny_checkpoint)
    resources = resources_at(tmp_path)
    assets = {a.key.path[-1]: a for a in experiment_assets(experiment, resources)}
    instance = dg.DagsterInstance.ephemeral()

    def materialize(name: str, partition=None) -> dg.ExecuteInProcessResult:
        return dg.materialize([assets[name]], partition_key=partition, instance=instance, resources=resources)

    assert materialize("corpus").success
    for shard in instance.get_dynamic_partitions(f"{experiment.name}__corpus_shards"):
        assert materialize("token_shards_vanilla", shard).success
    assert materialize("data_mixture_vanilla", "base").success
    assert materialize("checkpoint_vanilla", "base").success
    assert materialize("sft_checkpoint_vanilla", "base").success
    assert materialize("sft_benchmark_scores_vanilla", cell_key("base", "gsm8k")).success

    plan = outputs(experiment, resources)
    mid = TrainResult.load(plan.of("checkpoint", "vanilla", "base").path)
    sft_out = plan.of("sft_checkpoint", "vanilla", "base")
    tuned = TrainResult.load(sft_out.path)
    assert mid.n_params == tuned.n_params and tuned.steps == 1
    scores = EvaluationRun.load(plan.of("sft_benchmark_scores", "vanilla", "base", "gsm8k").path)
    assert scores.benchmarks["gsm8k"].n_samples == 1 and scores.checkpoint == sft_out.path / "final"
    lineage = [o.stage for o, _ in upstream_outputs(plan, plan.of("sft_benchmark_scores", "vanilla", "base", "gsm8k"))]
    assert lineage[:2] == ["sft_checkpoint", "checkpoint"] and {"data_mixture", "token_shards", "corpus"} <= set(
        lineage
    )
    catalog = resources["catalog"].open()
    cell = plan.of("sft_benchmark_scores", "vanilla", "base", "gsm8k")
    inputs = catalog.score_inputs(experiment.name, "vanilla", "gsm8k", cell.version, tables="sft_")
    cell_result = scores.benchmarks["gsm8k"]
    assert {r["metric"] for r in inputs["scores"]} == {*cell_result.metrics, *cell_result.gold.metrics}
    assert len(inputs["samples"]) == 1
    nearest = inputs["upstream"][0]
    assert nearest["stage"] == "sft_checkpoint" and nearest["version"] == sft_out.version
    assert nearest["rows"][0]["steps"] == 1 and nearest["rows"][0]["path"] == str(sft_out.path / "final")
    assert catalog.score_inputs(experiment.name, "vanilla", "gsm8k", cell.version)["scores"] == []  # not pretrained
    curve = catalog.query("SELECT step FROM sft_loss_curve WHERE sft_checkpoint_version = ?", [sft_out.version])
    assert [r["step"] for r in curve] == [1]
