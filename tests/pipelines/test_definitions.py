import subprocess
import sys
from datetime import datetime

import dagster as dg
import pytest

from assets.mixture import training_sequences
from assets.partitions import cell_key
from assets.stage import ACCELERATOR_POOL
from pipelines.definitions import build_definitions, default_resources
from tests.support import outputs
from tpt.config import Experiment

MANIFEST = "corpus_manifest"  # every stage that reads all shards depends on the shard set directly
STAGES = {
    "thinking_model_tpt": set(),
    "corpus": set(),
    MANIFEST: {"corpus"},
    "generation_cost_estimate_tpt": {"corpus", "thinking_model_tpt", MANIFEST},
    "thinking_trajectories_tpt": {"corpus", "thinking_model_tpt"},
    "augmented_documents_tpt": {"corpus", "thinking_trajectories_tpt"},
    "token_shards_vanilla": {"corpus"},
    "token_shards_tpt": {"augmented_documents_tpt"},
    "data_mixture_vanilla": {"token_shards_vanilla", MANIFEST},
    "data_mixture_tpt": {"token_shards_tpt", MANIFEST},
    "checkpoint_vanilla": {"data_mixture_vanilla", "token_shards_vanilla", MANIFEST},
    "checkpoint_tpt": {"data_mixture_tpt", "token_shards_tpt", MANIFEST},
    "benchmark_scores_vanilla": {"checkpoint_vanilla", MANIFEST},
    "benchmark_scores_tpt": {"checkpoint_tpt", MANIFEST},
    "report": {"benchmark_scores_vanilla", "benchmark_scores_tpt", "checkpoint_vanilla", "checkpoint_tpt", MANIFEST},
}


def _graph(defs: dg.Definitions, prefix: str) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        if key.path[0] == prefix:
            out[key.path[-1]] = {p.path[-1] for p in graph.get(key).parent_keys}
    return out


def test_embedded_graph_has_every_stage_with_its_dependencies():
    defs = build_definitions()
    assert _graph(defs, "embedded") == STAGES
    assert {j.name for j in defs.jobs} == {
        f"embedded_{j}" for j in ("corpus", "data", "training", "shards", "generation_estimate", "benchmarks", "report")
    }
    assert [s.name for s in defs.schedules] == ["embedded_benchmarks_nightly", "embedded_corpus_discovery_daily"]
    assert [s.name for s in defs.sensors] == ["embedded_new_shards", "embedded_new_checkpoints", "embedded_report"]
    checks = {(c.asset_key.path[-1], c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    checked = {asset for asset, _ in checks}
    unchecked = {"thinking_model_tpt", MANIFEST, "generation_cost_estimate_tpt", "report"}
    assert checked == set(STAGES) - unchecked  # data stages
    assert {("augmented_documents_tpt", "same_documents_as_the_corpus"), ("checkpoint_tpt", "loss_decreased")} <= checks
    assert ("data_mixture_vanilla", "order_fills_the_token_budget") in checks


def with_scales(embedded: Experiment, *scales: dict) -> Experiment:
    return Experiment.model_validate(embedded.model_dump(mode="json") | {"scales": list(scales)})


def test_the_experiment_matrix_partitions_training_and_scores(embedded):
    """Two scales: each variant's mixture and checkpoint get one partition per scale, its scores one per
    (scale, benchmark) cell, and a cell depends on exactly its own scale's checkpoint."""
    budget = 2 * embedded.training.token_budget
    experiment = with_scales(embedded, {"name": "small"}, {"name": "large", "token_budget": budget})
    defs = build_definitions([experiment])
    graph = defs.resolve_asset_graph()
    benchmarks = list(experiment.evaluation.benchmarks)
    for variant in experiment.variants:
        for stage in ("data_mixture", "checkpoint"):
            node = graph.get(dg.AssetKey(["embedded", f"{stage}_{variant}"]))
            assert node.partitions_def.get_partition_keys() == ["small", "large"]
        node = graph.get(dg.AssetKey(["embedded", f"benchmark_scores_{variant}"]))
        cells = node.partitions_def.get_partition_keys()
        assert sorted(cells) == sorted(str(cell_key(s, b)) for s in ("small", "large") for b in benchmarks)
        upstream = graph.get_parent_partition_keys_for_child(
            cell_key("large", "gsm8k"), dg.AssetKey(["embedded", f"checkpoint_{variant}"]), node.key
        )
        assert set(upstream.partitions_subset.get_partition_keys()) == {"large"}
    plan = outputs(experiment, default_resources())
    assert training_sequences(experiment, "large") == 2 * training_sequences(experiment, "small")
    assert plan.of("checkpoint", "tpt", "small").version != plan.of("checkpoint", "tpt", "large").version
    same_budget = with_scales(
        embedded, {"name": "a"}, {"name": "b", "model": {**embedded.training.model.model_dump(), "hidden_size": 64}}
    )
    other = outputs(same_budget, default_resources())
    assert other.of("data_mixture", "tpt", "a").path == other.of("data_mixture", "tpt", "b").path  # one for both
    assert other.of("checkpoint", "tpt", "a").version != other.of("checkpoint", "tpt", "b").version


def test_bad_scales_fail_loading_with_one_line(embedded):
    with pytest.raises(ValueError, match="unique names"):
        with_scales(embedded, {"name": "a"}, {"name": "a"})
    with pytest.raises(ValueError, match="scale 'tiny': .*smaller than one batch"):
        with_scales(embedded, {"name": "tiny", "token_budget": 100})


def test_benchmarks_are_partitioned_by_cell_and_run_apart_from_the_graph(embedded):
    defs = build_definitions([embedded])
    graph = defs.resolve_asset_graph()
    benchmarks = list(embedded.evaluation.benchmarks)
    for variant in embedded.variants:
        node = graph.get(dg.AssetKey(["embedded", f"benchmark_scores_{variant}"]))
        assert sorted(node.partitions_def.get_partition_keys()) == sorted(f"{b}|base" for b in benchmarks)
    checks = {(c.asset_key.path[-1], c.name) for c in graph.asset_check_keys}
    assert {("benchmark_scores_tpt", "no_score_drop"), ("benchmark_scores_tpt", "scores_in_unit_range")} <= checks

    def selected(job: str) -> set[str]:
        return {k.path[-1] for k in defs.resolve_job_def(f"embedded_{job}").asset_layer.selected_asset_keys}

    assert selected("benchmarks") == {"benchmark_scores_vanilla", "benchmark_scores_tpt"}
    assert selected("report") == {"report"}
    assert selected("training") == {"data_mixture_vanilla", "data_mixture_tpt", "checkpoint_vanilla", "checkpoint_tpt"}
    assert {"corpus", "token_shards_vanilla", "token_shards_tpt"} <= selected("data")
    assert not selected("data") & (selected("training") | selected("benchmarks") | {"report"})


def test_schedules_ask_for_every_cell_nightly_and_the_corpus_daily(embedded):
    defs = build_definitions([embedded])
    night = datetime(2026, 11, 23, 2)

    def tick(name: str) -> list[dg.RunRequest]:
        schedule = defs.resolve_schedule_def(name)
        repository = defs.get_repository_def()
        with dg.build_schedule_context(scheduled_execution_time=night, repository_def=repository) as context:
            return schedule.evaluate_tick(context).run_requests

    requests = tick("embedded_benchmarks_nightly")
    assert sorted(r.partition_key for r in requests) == sorted(f"{b}|base" for b in embedded.evaluation.benchmarks)
    assert len({r.run_key for r in requests}) == len(requests) and all("2026-11-23" in r.run_key for r in requests)
    [discovery] = tick("embedded_corpus_discovery_daily")
    assert discovery.run_key == "corpus:2026-11-23" and discovery.tags["trigger"] == "daily"
    assert defs.resolve_schedule_def("embedded_corpus_discovery_daily").job_name == "embedded_corpus"


def test_accelerator_stages_share_one_pool_and_ray_stages_retry(embedded):
    graph = build_definitions([embedded]).resolve_asset_graph()

    def node(name: str):
        return graph.get(dg.AssetKey(["embedded", name]))

    on_device = {"thinking_trajectories_tpt", "generation_cost_estimate_tpt", "checkpoint_tpt", "benchmark_scores_tpt"}
    assert {n for n in STAGES if node(n).pools == {ACCELERATOR_POOL}} == on_device | {
        "checkpoint_vanilla",
        "benchmark_scores_vanilla",
    }
    retried = {n for n in STAGES if graph.assets_def_for_key(node(n).key).op.retry_policy}
    assert retried == {
        "thinking_trajectories_tpt",
        "token_shards_vanilla",
        "token_shards_tpt",
        "checkpoint_vanilla",
        "checkpoint_tpt",
    }
    assert node("checkpoint_tpt").tags.items() >= {"experiment": "embedded", "variant": "tpt"}.items()


def test_report_waits_for_the_whole_benchmark_matrix(embedded):
    defs = build_definitions([embedded])
    instance = dg.DagsterInstance.ephemeral()
    report = dg.AssetKey(["embedded", "report"])

    def materialized(name: str, partition: str | None = None) -> None:
        event = dg.AssetMaterialization(dg.AssetKey(["embedded", name]), partition=partition)
        instance.report_runless_asset_event(event)

    *first, last = embedded.evaluation.benchmarks
    for variant in embedded.variants:
        materialized(f"checkpoint_{variant}", "base")
        for benchmark in first:
            materialized(f"benchmark_scores_{variant}", cell_key("base", benchmark))
    incomplete = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert incomplete.get_num_requested(report) == 0
    for variant in embedded.variants:
        materialized(f"benchmark_scores_{variant}", cell_key("base", last))
    complete = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=incomplete.cursor)
    assert complete.get_num_requested(report) == 1


def test_paper_experiment_loads_beside_the_default(monkeypatch):
    monkeypatch.setenv("TPT_EXPERIMENTS", "embedded,paper_8b")
    defs = build_definitions()
    assert _graph(defs, "paper_8b") == STAGES
    graph = defs.resolve_asset_graph()
    key = "thinking_trajectories_tpt"
    paper, small = (graph.get(dg.AssetKey([e, key])).code_version for e in ("paper_8b", "embedded"))
    assert paper != small


def test_midtrain_experiments_load_with_sft_after_each_checkpoint(monkeypatch):
    monkeypatch.setenv("TPT_EXPERIMENTS", "embedded,embedded_midtrain,paper_midtrain,paper_constrained")
    defs = build_definitions()
    sft = {f"sft_checkpoint_{v}": {f"checkpoint_{v}", MANIFEST} for v in ("vanilla", "tpt")}
    sft |= {f"sft_benchmark_scores_{v}": {f"sft_checkpoint_{v}", MANIFEST} for v in ("vanilla", "tpt")}
    report = {"report": STAGES["report"] | {"sft_benchmark_scores_vanilla", "sft_benchmark_scores_tpt"}}
    for name in ("embedded_midtrain", "paper_midtrain"):
        assert _graph(defs, name) == STAGES | sft | report
    assert _graph(defs, "paper_constrained") == STAGES and _graph(defs, "embedded") == STAGES
    jobs = {j.name for j in defs.jobs}
    assert "embedded_midtrain_sft" in jobs and "embedded_sft" not in jobs
    selected = defs.resolve_job_def("embedded_midtrain_sft").asset_layer.selected_asset_keys
    assert {k.path[-1] for k in selected} == {"sft_checkpoint_vanilla", "sft_checkpoint_tpt"}
    scored = defs.resolve_job_def("embedded_midtrain_sft_benchmarks").asset_layer.selected_asset_keys
    assert {k.path[-1] for k in scored} == {"sft_benchmark_scores_vanilla", "sft_benchmark_scores_tpt"}


def test_sensor_exists_for_experiments_with_local_corpus_folders(monkeypatch, tmp_path, embedded):
    import yaml

    raw = embedded.model_dump(mode="json")
    raw["name"] = "local_corpus"
    raw["corpus"]["sources"] = [{"kind": "local", "name": "mine", "path": str(tmp_path)}]
    raw["mixture"] = {"sources": [{"name": "mine", "weight": 1.0}]}
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("TPT_EXPERIMENTS", str(path))
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("local_corpus_new_corpus_files")
    with dg.build_sensor_context(cursor=None) as context:
        first = sensor.evaluate_tick(context)
    assert len(first.run_requests) == 1 and first.cursor
    with dg.build_sensor_context(cursor=first.cursor) as context:
        assert sensor.evaluate_tick(context).run_requests == []  # nothing new: no repeated run
    (tmp_path / "new.jsonl").write_text('{"text": "fresh"}\n')
    with dg.build_sensor_context(cursor=first.cursor) as context:
        third = sensor.evaluate_tick(context)
    assert len(third.run_requests) == 1 and third.cursor != first.cursor


def test_a_bad_experiment_name_in_the_environment_fails_loading_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("TPT_EXPERIMENTS", str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="experiment file not found"):
        build_definitions()


@pytest.mark.slow
def test_dagster_cli_validates_the_workspace():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stdout + result.stderr


def test_a_new_stage_is_one_declaration(embedded, monkeypatch):
    """A stage added to the registry alone gets its asset, dependencies, partitions, code version, job and lineage
    from its declaration; nothing else is edited."""
    from assets import registry
    from assets.stage import StageResult
    from tpt.stages import Read, Stage, no_config

    summary = Stage(
        name="token_summary",
        revision=1,
        own=no_config,
        reads=(Read("token_shards", every_partition=True),),
        per_variant=True,
        job="report",
        description="Tokens per shard of the {variant} variant.",
        compute=lambda run: StageResult(reused=False, figures={}),
    )
    monkeypatch.setattr(registry, "STAGES", (*registry.STAGES, summary))
    defs = build_definitions([embedded])
    graph = _graph(defs, "embedded")
    assert graph["token_summary_tpt"] == {"token_shards_tpt"} and graph["token_summary_vanilla"] == {
        "token_shards_vanilla"
    }
    job = defs.resolve_job_def("embedded_report").asset_layer.selected_asset_keys
    assert {k.path[-1] for k in job} == {"report", "token_summary_vanilla", "token_summary_tpt"}
    plan = outputs(embedded, default_resources())
    output = plan.of("token_summary", "tpt")
    assert [(p.stage, p.version) for p in plan.parents("token_summary", output.instance)] == [
        ("token_shards", plan.of("token_shards", "tpt").version)
    ]
    node = defs.resolve_asset_graph().get(dg.AssetKey(["embedded", "token_summary_tpt"]))
    assert node.code_version == plan.code_version("token_summary", "tpt") and node.description.endswith("tpt variant.")
    edited = embedded.model_copy(update={"tokenizer": embedded.tokenizer.model_copy(update={"revision": "x"})})
    assert outputs(edited, default_resources()).code_version("token_summary", "tpt") != node.code_version
