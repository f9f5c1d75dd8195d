from tpt.config import Experiment
from tpt.plan import ExperimentPlan

STAGES = ("corpus", "trajectories", "augmented")
VARIANT_STAGES = ("token_shards", "checkpoint")


def versions(experiment: Experiment) -> dict[str, str]:
    plan = ExperimentPlan(experiment, "/artifacts")
    out = {s: getattr(plan, s).version for s in STAGES}
    for v in experiment.variants:
        out |= {
            f"token_shards_{v}": plan.token_shards(v).version,
            f"checkpoint_{v}": plan.checkpoint(v, "base").version,
        }
        out |= {f"benchmarks_{v}_{b}": plan.benchmarks(v, "base", b).version for b in experiment.evaluation.benchmarks}
    return out


def cells(experiment: Experiment, *variants: str) -> set[str]:
    return {f"benchmarks_{v}_{b}" for v in variants for b in experiment.evaluation.benchmarks}


def changed(before: Experiment, after: Experiment) -> set[str]:
    a, b = versions(before), versions(after)
    return {k for k in a if a[k] != b[k]}


def edit(experiment: Experiment, section: str, **fields) -> Experiment:
    part = getattr(experiment, section)
    return experiment.model_copy(update={section: part.model_copy(update=fields)})


def test_prompt_change_reruns_trajectories_and_everything_below_but_not_vanilla(embedded):
    prompt = embedded.generation.prompt.model_copy(update={"version": "tpt-paper-v2"})
    after = edit(embedded, "generation", prompt=prompt)
    assert changed(embedded, after) == {
        "trajectories",
        "augmented",
        "token_shards_tpt",
        "checkpoint_tpt",
    } | cells(embedded, "tpt")


def test_operational_fields_change_nothing(embedded):
    faster = edit(edit(embedded, "generation", batch_size=64), "training", micro_batch_size=2, checkpoint_every=7)
    faster = edit(faster, "evaluation", batch_size=32)
    assert changed(embedded, faster) == set()


def test_eval_setting_changes_only_benchmarks(embedded):
    after = edit(embedded, "evaluation", limit=7)
    assert changed(embedded, after) == cells(embedded, "vanilla", "tpt")


def test_adding_a_benchmark_adds_cells_and_changes_no_finished_one(embedded):
    fewer = edit(embedded, "evaluation", benchmarks=("gsm8k", "math"))
    before, after = versions(fewer), versions(embedded)
    assert set(after) - set(before) == cells(embedded, "vanilla", "tpt") - cells(fewer, "vanilla", "tpt")
    assert {k: after[k] for k in before} == before
    old, new = ExperimentPlan(fewer, "/a"), ExperimentPlan(embedded, "/a")
    assert all(
        old.asset_code_version("benchmarks", v) == new.asset_code_version("benchmarks", v) for v in ("vanilla", "tpt")
    )
    assert new.benchmarks("tpt", "base", "gsm8k").path.name.startswith("tpt-base-gsm8k-")


def test_seq_len_changes_training_side_only(embedded):
    after = edit(embedded, "training", seq_len=512, batch_tokens=4096)
    expected = {f"{s}_{v}" for s in VARIANT_STAGES for v in ("vanilla", "tpt")} | cells(embedded, "vanilla", "tpt")
    assert changed(embedded, after) == expected


def test_paths_name_the_version_and_code_versions_follow_upstream(embedded):
    plan = ExperimentPlan(embedded, "/artifacts")
    assert plan.trajectories.path.name == plan.trajectories.version
    assert plan.checkpoint("tpt", "base").path.name == f"tpt-base-{plan.checkpoint('tpt', 'base').version}"
    corpus_edit = edit(embedded, "corpus", min_chars=10)
    other = ExperimentPlan(corpus_edit, "/artifacts")
    assert other.trajectories.version != plan.trajectories.version  # upstream changed: new output
    # and Dagster sees a new code version on every asset below the change at once, before anything reruns
    for stage, variant in [("trajectories", None), ("checkpoint", "vanilla"), ("benchmarks", "tpt"), ("report", None)]:
        assert other.asset_code_version(stage, variant) != plan.asset_code_version(stage, variant)
    evaluation_edit = ExperimentPlan(edit(embedded, "evaluation", max_gen_toks=7), "/artifacts")
    assert evaluation_edit.asset_code_version("checkpoint", "tpt") == plan.asset_code_version("checkpoint", "tpt")
    assert evaluation_edit.asset_code_version("report") != plan.asset_code_version("report")
