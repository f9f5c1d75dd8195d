"""The benchmark asset, one (variant x benchmark) cell per partition, against lm-eval itself: the same checkpoint and
the same task configs run through the ``lm_eval`` command line give the same scores and the same generations, and
the same gold bits per byte item by item. And bad input to a cell: one clear line, or a counted skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from assets.checks import experiment_checks
from pipelines.definitions import default_resources
from resources import ArtifactStorage, DuckDBCatalog, Evaluator
from tests.support import outputs, stage_asset
from tpt.atomic import read_json
from tpt.catalog import Catalog
from tpt.config import ConfigError, Experiment, load_experiment
from tpt.evaluation.runner import RESULTS_FILE, EvaluationRun

BENCHMARKS = ("gsm8k", "math", "humaneval", "mbpp")
REPO = Path(__file__).resolve().parents[2]


def cell_experiment(embedded: Experiment, **evaluation) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "cells"
    # batch size 1: lm-eval batches requests of all tasks of one call together, our cells one task each; with one
    # request per batch the padding, and so the arithmetic, is the same on both sides
    raw["evaluation"] |= {"benchmarks": list(BENCHMARKS), "limit": 2, "max_gen_toks": 12, "batch_size": 1}
    raw["evaluation"] |= {"gold_limit": 2} | evaluation
    return Experiment.model_validate(raw)


def place_checkpoint(experiment: Experiment, root: Path, variant: str, checkpoint: Path) -> None:
    """The tiny checkpoint where the checkpoint stage would have written it."""
    final = outputs(experiment, resources(root)).of("checkpoint", variant, "base").path / "final"
    final.parent.mkdir(parents=True)
    final.symlink_to(checkpoint, target_is_directory=True)


def cell_assets(experiment: Experiment, variant: str) -> list:
    asset = stage_asset(experiment, "benchmark_scores", default_resources(), variant)
    checks = [c for c in experiment_checks(experiment) if {k.asset_key for k in c.check_keys} == {asset.key}]
    return [asset, *checks]


def resources(root: Path) -> dict:
    return default_resources() | {
        "storage": ArtifactStorage(root=str(root)),
        "catalog": DuckDBCatalog(path=str(root / "catalog.duckdb")),
        "evaluator": Evaluator(device="cpu"),
    }


@pytest.fixture(scope="module")
def cells(embedded: Experiment, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    experiment = cell_experiment(embedded)
    root = tmp_path_factory.mktemp("cells")
    place_checkpoint(experiment, root, "vanilla", tiny_checkpoint)
    assets = cell_assets(experiment, "vanilla")
    instance = dg.DagsterInstance.ephemeral()
    # an earlier materialization of the gsm8k cell with a perfect score (say, from an earlier checkpoint)
    earlier = dg.AssetMaterialization(
        assets[0].key, partition="gsm8k|base", metadata={"score": 1.0, "checkpoint_version": "earlier"}
    )
    instance.report_runless_asset_event(earlier)
    first = {
        b: dg.materialize(assets, partition_key=f"{b}|base", instance=instance, resources=resources(root))
        for b in BENCHMARKS
    }
    again = dg.materialize(assets, partition_key="gsm8k|base", instance=instance, resources=resources(root))
    return SimpleNamespace(experiment=experiment, root=root, first=first, again=again)


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _lm_eval_cli(task_root: Path, model_args: dict, out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """``lm_eval run`` in its own process on the task configs our cells wrote; its results and logged samples."""
    tasks = [f"tpt_{b}{kind}" for b in BENCHMARKS for kind in ("", "_gold")]
    command = [
        sys.executable, "-m", "lm_eval", "run",
        "--model", "hf",
        "--model_args", ",".join(f"{k}={v}" for k, v in model_args.items()),
        "--tasks", ",".join(tasks),
        "--include_path", str(task_root),
        "--limit", "2",
        "--batch_size", "1",
        "--device", "cpu",
        "--output_path", str(out),
        "--log_samples",
        "--confirm_run_unsafe_code",
    ]  # fmt: skip
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),  # the tasks' hooks
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {
        task: [json.loads(line) for line in next(out.rglob(f"samples_{task}_2*.jsonl")).read_text().splitlines()]
        for task in tasks
    }
    return results, samples


@pytest.mark.slow
def test_scores_and_generations_equal_lm_eval_run_directly(cells, tiny_checkpoint, tmp_path):
    plan = outputs(cells.experiment, resources(cells.root))
    catalog = Catalog(cells.root / "catalog.duckdb")
    model_args = read_json(plan.of("benchmark_scores", "vanilla", "base", "gsm8k").path / RESULTS_FILE)["model_args"]
    assert Path(model_args["pretrained"]) == tiny_checkpoint.resolve()
    theirs, their_samples = _lm_eval_cli(plan.root / "benchmark_scores", model_args, tmp_path / "lm_eval")
    for benchmark in BENCHMARKS:
        task, version = f"tpt_{benchmark}", plan.of("benchmark_scores", "vanilla", "base", benchmark).version
        cell = ["vanilla", benchmark, version]
        where = "WHERE variant = ? AND benchmark = ? AND benchmark_scores_version = ?"
        ours = {r["metric"]: r["value"] for r in catalog.query(f"SELECT metric, value FROM scores {where}", cell)}
        reported, gold = theirs["results"][task], theirs["results"][f"{task}_gold"]
        expected = {k: v for r in (reported, gold) for k, v in r.items() if "," in k and "_stderr," not in k}
        print(f"{task}: ours {ours} lm_eval {expected}")
        assert ours == expected, task
        assert {"bpb,none", "logprob,none"} <= set(ours)
        finished = EvaluationRun.load(plan.of("benchmark_scores", "vanilla", "base", benchmark).path)
        items = [(i.doc_id, i.bpb, i.logprob) for i in finished.benchmarks[benchmark].gold.items]
        their_items = sorted((s["doc_id"], s["bpb"], s["logprob"]) for s in their_samples[f"{task}_gold"])
        assert items == their_items and len(items) == 2, task
        meta = _metadata(cells.first[benchmark])
        assert meta["score"] == reported[meta["metric"]]
        assert str(theirs["versions"][task]) == meta["task_version"]
        assert theirs["n-samples"][task]["effective"] == 2
        primary_metric, primary_filter = meta["metric"].split(",")
        logged = sorted((s for s in their_samples[task] if s["filter"] == primary_filter), key=lambda s: s["doc_id"])
        rows = catalog.query(f"SELECT doc_index, prompt, generation, correct FROM eval_samples {where}", cell)
        assert sorted((r["doc_index"], r["prompt"], r["generation"], float(r["correct"])) for r in rows) == [
            (s["doc_id"], s["arguments"]["gen_args_0"]["arg_0"], s["resps"][0][0], float(s[primary_metric]))
            for s in logged
        ], task


@pytest.mark.slow
def test_each_partition_is_one_cell_with_its_own_version_and_lineage(cells):
    plan = outputs(cells.experiment, resources(cells.root))
    catalog = Catalog(cells.root / "catalog.duckdb")
    for benchmark, result in cells.first.items():
        meta = _metadata(result)
        assert meta["benchmark"] == benchmark and meta["samples"] == 2 and meta["reused_finished_output"] is False
        assert meta["stage_version"] == plan.of("benchmark_scores", "vanilla", "base", benchmark).version
        assert meta["test_set_lines_skipped"] == 0 and meta["backend"] == "hf"
        assert _checks(result)["scores_in_unit_range"].passed
        behind = catalog.lineage("cells", "benchmark_scores", meta["stage_version"])
        assert [(r["stage"], r["version"]) for r in behind][0] == (
            "checkpoint",
            plan.of("checkpoint", "vanilla", "base").version,
        )
    assert len({_metadata(r)["stage_version"] for r in cells.first.values()}) == len(BENCHMARKS)
    assert _metadata(cells.again)["reused_finished_output"] is True


@pytest.mark.slow
def test_score_drop_against_the_previous_materialization_of_the_cell_is_flagged(cells):
    score = _metadata(cells.first["gsm8k"])["score"]
    flagged = _checks(cells.first["gsm8k"])["no_score_drop"]
    assert flagged.passed is (score >= 1.0)
    assert flagged.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in flagged.metadata.items()}
    assert meta["previous_score"] == 1.0 and meta["score"] == score
    assert meta["previous_checkpoint_version"] == "earlier"
    for benchmark in ("math", "humaneval", "mbpp"):  # first materialization of the cell: nothing to compare with
        assert _checks(cells.first[benchmark])["no_score_drop"].passed
    rerun = _checks(cells.again)["no_score_drop"]  # same checkpoint, same score as the run before it
    assert rerun.passed and {k: v.value for k, v in rerun.metadata.items()}["previous_score"] == score


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description


def test_a_missing_checkpoint_fails_the_cell_in_one_line(embedded, tmp_path):
    experiment = cell_experiment(embedded)
    result = dg.materialize(
        cell_assets(experiment, "tpt"), partition_key="gsm8k|base", resources=resources(tmp_path), raise_on_error=False
    )
    final = outputs(experiment, resources(tmp_path)).of("checkpoint", "tpt", "base").path / "final"
    assert _failure(result) == f"EvaluationError: checkpoint {final} does not exist"


def test_an_unknown_benchmark_is_refused_in_one_line(embedded, tmp_path):
    raw = cell_experiment(embedded).model_dump(mode="json")
    raw["evaluation"]["benchmarks"] = ["gsm8k", "gsm8k_typo"]
    path = tmp_path / "typo.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: evaluation.benchmarks.1: Input should be 'gsm8k'")
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_broken_lines_of_a_user_test_set_are_counted_skips(embedded, tiny_checkpoint, tmp_path):
    folder = tmp_path / "tests"
    folder.mkdir()
    good = [
        json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
        for i in range(3)
    ]
    (folder / "gsm8k.jsonl").write_text("\n".join([good[0], '{"question": "cut off', *good[1:]]) + "\n")
    experiment = cell_experiment(embedded, benchmarks=["gsm8k"], data_folder=str(folder))
    place_checkpoint(experiment, tmp_path / "art", "vanilla", tiny_checkpoint)
    result = dg.materialize(
        cell_assets(experiment, "vanilla"), partition_key="gsm8k|base", resources=resources(tmp_path / "art")
    )
    meta = _metadata(result)
    assert (meta["test_set_docs"], meta["test_set_lines_skipped"], meta["samples"]) == (3, 1, 2)
    assert meta["test_set_source"] == str(folder / "gsm8k.jsonl")
