"""The experiment matrix beyond one TPT variant and one run: several TPT variants, each its own branch with its own
thinking and staleness, vanilla one branch; seeds as training runs whose versions name the seed; and bad matrices
refused in one line."""

import json

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.experiments import experiment_path
from tests.assets.test_versions import SETTINGS, versions
from tpt.config import ConfigError, Experiment, load_experiment

SHORT = {"sampling": {"max_thinking_tokens": 32}}


def two_thinkers(embedded: Experiment, **changes) -> Experiment:
    raw = embedded.model_dump(mode="json") | {"variants": ["vanilla", "tpt", "tpt_short"]}
    return Experiment.model_validate(raw | {"variant_generation": {"tpt_short": SHORT}} | changes)


def test_each_tpt_variant_is_its_own_branch_from_its_thinking_model_down(embedded):
    experiment = two_thinkers(embedded)
    graph = build_definitions([experiment]).resolve_asset_graph()
    parents = {k.path[-1]: {p.path[-1] for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["thinking_trajectories_tpt_short"] == {"corpus", "thinking_model_tpt_short"}
    assert parents["token_shards_tpt_short"] == {"augmented_documents_tpt_short"}
    assert parents["token_shards_vanilla"] == {"corpus"}
    assert "thinking_trajectories_vanilla" not in parents and "thinking_model" not in parents
    found = versions(experiment)
    assert found["thinking_trajectories_tpt"] == versions(embedded)["thinking_trajectories_tpt"]  # unchanged branch
    assert found["thinking_trajectories_tpt_short"] != found["thinking_trajectories_tpt"]
    assert experiment.generation_for("tpt_short").sampling.max_thinking_tokens == 32
    assert experiment.generation_for("tpt_short").sampling.temperature == embedded.generation.sampling.temperature


def test_a_change_to_one_variants_generation_makes_only_its_branch_stale(embedded):
    before = versions(two_thinkers(embedded))
    after = versions(
        two_thinkers(embedded, variant_generation={"tpt_short": {"sampling": {"max_thinking_tokens": 16}}})
    )
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(k.startswith(("report",)) or "tpt_short" in k for k in changed)
    assert {"thinking_trajectories_tpt_short", "checkpoint_tpt_short_base"} <= changed


def test_seeds_are_training_runs_whose_versions_name_the_seed(embedded):
    seeded = Experiment.model_validate(embedded.model_dump(mode="json") | {"seeds": [0, 1, 2]})
    assert seeded.run_names == ["base-seed0", "base-seed1", "base-seed2"]
    assert [seeded.training_for(r).seed for r in seeded.run_names] == [0, 1, 2]
    assert [seeded.mixture_for(r).seed for r in seeded.run_names] == [0, 1, 2]
    found = versions(seeded, SETTINGS)
    checkpoints = {found[f"checkpoint_tpt_base_seed{s}"] for s in range(3)}
    mixtures = {found[f"data_mixture_vanilla_base_seed{s}"] for s in range(3)}
    assert len(checkpoints) == len(mixtures) == 3
    assert found["token_shards_tpt"] == versions(embedded)["token_shards_tpt"]  # tokens do not depend on a seed
    keys = build_definitions([seeded]).resolve_asset_graph().get(dg.AssetKey(["embedded", "checkpoint_tpt"]))
    assert keys.partitions_def.get_partition_keys() == seeded.run_names


def test_seeds_reach_sft_too():
    """Each seeded run fine-tunes with its own seed (its SFT data order), named in the SFT stage's own config."""
    from assets.sft import _own as sft_own
    from tpt.stages import Instance

    midtrain = load_experiment(experiment_path("embedded_midtrain"))
    seeded = Experiment.model_validate(midtrain.model_dump(mode="json") | {"seeds": [3, 4]})
    assert [seeded.sft_for(r).seed for r in seeded.run_names] == [3, 4]
    assert midtrain.sft_for("base") == midtrain.sft  # no seeds: the config as written
    owns = [sft_own(seeded, Instance("tpt", r))["sft"] for r in seeded.run_names]
    assert [o["seed"] for o in owns] == [3, 4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": [0, 1, 0]}, "seeds must be a non-empty list without repeats, got [0, 1, 0]"),
        ({"variants": ["vanilla", "tpt", "tpt"]}, "variants must be a non-empty list of unique names"),
        (
            {"variants": ["vanilla", "tpt", "tpt_same"], "variant_generation": {"tpt_same": {"batch_size": 2}}},
            "variants 'tpt' and 'tpt_same' have the same generation settings",
        ),
        ({"variant_generation": {"vanilla": SHORT}}, "variant_generation names ['vanilla'], which are not TPT"),
    ],
)
def test_a_bad_matrix_is_refused_in_one_line(embedded, tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(embedded.model_dump(mode="json") | change))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_thinking_model_ablation_loads_with_one_branch_per_thinker():
    experiment = load_experiment(experiment_path("paper_thinker_ablation"))
    assert experiment.tpt_variants == ["tpt_r1_1p5b", "tpt_r1_7b"]
    models = [experiment.generation_for(v).model.name for v in experiment.tpt_variants]
    assert models == ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"]
    keys = {k.path[-1] for k in build_definitions([experiment]).resolve_asset_graph().get_all_asset_keys()}
    assert {"thinking_trajectories_tpt_r1_1p5b", "thinking_trajectories_tpt_r1_7b", "checkpoint_vanilla"} <= keys
