import subprocess
import sys
from datetime import datetime

import dagster as dg
import pytest

from pipelines.definitions import build_definitions

STAGES = {
    "thinking_model": set(),
    "corpus": set(),
    "generation_cost_estimate": {"corpus", "thinking_model"},
    "thinking_trajectories": {"corpus", "thinking_model"},
    "augmented_documents": {"corpus", "thinking_trajectories"},
    "token_shards_vanilla": {"corpus"},
    "token_shards_tpt": {"augmented_documents"},
    "data_mixture_vanilla": {"token_shards_vanilla"},
    "data_mixture_tpt": {"token_shards_tpt"},
    "checkpoint_vanilla": {"data_mixture_vanilla"},
    "checkpoint_tpt": {"data_mixture_tpt"},
    "benchmark_scores_vanilla": {"checkpoint_vanilla"},
    "benchmark_scores_tpt": {"checkpoint_tpt"},
    "report": {"benchmark_scores_vanilla", "benchmark_scores_tpt", "checkpoint_vanilla", "checkpoint_tpt"},
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
        f"embedded_{j}" for j in ("corpus", "full_graph", "shards", "generation_estimate", "benchmarks", "report")
    }
    assert [s.name for s in defs.schedules] == ["embedded_benchmarks_nightly"]
    assert [s.name for s in defs.sensors] == ["embedded_new_shards", "embedded_report"]
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {"document_ids_unique_and_counted", "one_trajectory_per_document", "loss_decreased"} <= checks


def test_benchmarks_are_partitioned_by_benchmark_and_run_apart_from_the_graph(embedded):
    defs = build_definitions([embedded])
    graph = defs.resolve_asset_graph()
    benchmarks = list(embedded.evaluation.benchmarks)
    for variant in embedded.variants:
        node = graph.get(dg.AssetKey(["embedded", f"benchmark_scores_{variant}"]))
        assert node.partitions_def.get_partition_keys() == benchmarks
    checks = {(c.asset_key.path[-1], c.name) for c in graph.asset_check_keys}
    assert {("benchmark_scores_tpt", "no_score_drop"), ("benchmark_scores_tpt", "scores_in_unit_range")} <= checks

    def selected(job: str) -> set[str]:
        return {k.path[-1] for k in defs.resolve_job_def(f"embedded_{job}").asset_layer.selected_asset_keys}

    assert selected("benchmarks") == {"benchmark_scores_vanilla", "benchmark_scores_tpt"}
    assert selected("report") == {"report"}
    assert not selected("full_graph") & {"benchmark_scores_vanilla", "benchmark_scores_tpt", "report"}
    assert {"corpus", "checkpoint_vanilla", "checkpoint_tpt"} <= selected("full_graph")


def test_nightly_schedule_asks_for_one_run_per_benchmark(embedded):
    defs = build_definitions([embedded])
    schedule = defs.resolve_schedule_def("embedded_benchmarks_nightly")
    night = datetime(2026, 11, 23, 2)
    with dg.build_schedule_context(scheduled_execution_time=night, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == list(embedded.evaluation.benchmarks)
    assert len({r.run_key for r in requests}) == len(requests) and all("2026-11-23" in r.run_key for r in requests)


def test_report_waits_for_the_whole_benchmark_matrix(embedded):
    defs = build_definitions([embedded])
    instance = dg.DagsterInstance.ephemeral()
    report = dg.AssetKey(["embedded", "report"])

    def materialized(name: str, partition: str | None = None) -> None:
        event = dg.AssetMaterialization(dg.AssetKey(["embedded", name]), partition=partition)
        instance.report_runless_asset_event(event)

    *first, last = embedded.evaluation.benchmarks
    for variant in embedded.variants:
        materialized(f"checkpoint_{variant}")
        for benchmark in first:
            materialized(f"benchmark_scores_{variant}", benchmark)
    incomplete = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert incomplete.get_num_requested(report) == 0
    for variant in embedded.variants:
        materialized(f"benchmark_scores_{variant}", last)
    complete = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=incomplete.cursor)
    assert complete.get_num_requested(report) == 1


def test_paper_experiment_loads_beside_the_default(monkeypatch):
    monkeypatch.setenv("TPT_EXPERIMENTS", "embedded,paper_8b")
    defs = build_definitions()
    assert _graph(defs, "paper_8b") == STAGES
    graph = defs.resolve_asset_graph()
    paper, small = (graph.get(dg.AssetKey([e, "thinking_trajectories"])).code_version for e in ("paper_8b", "embedded"))
    assert paper != small


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
