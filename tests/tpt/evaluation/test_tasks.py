from __future__ import annotations

import json
from pathlib import Path

import pytest

from tpt.evaluation.data import prepare_test_sets
from tpt.evaluation.runner import offline_env
from tpt.evaluation.tasks import (
    TASK_NAMES,
    TASK_VERSION,
    TaskConfigError,
    fewshot_samples,
    task_config,
    upstream_config,
    write_task_dir,
)

DOCS = {
    "gsm8k": {"question": "What is 2+3?", "answer": "2+3=5\n#### 5"},
    "math": {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    "humaneval": {
        "task_id": "T/0",
        "prompt": "def one():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(f):\n    assert f() == 1\n",
        "entry_point": "one",
    },
    "mbpp": {
        "task_id": 1,
        "text": "Return one.",
        "code": "def one():\n    return 1",
        "test_list": ["assert one() == 1", "assert one() != 2", "assert one() + 1 == 2"],
    },
}


@pytest.fixture()
def small_sets(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for benchmark, doc in DOCS.items():
        (folder / f"{benchmark}.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(doc) + "\n")
    return {b: t.path for b, t in prepare_test_sets(list(DOCS), tmp_path / "work", data_folder=folder).items()}


def test_fewshot_exemplars_come_from_installed_lm_eval() -> None:
    minerva = fewshot_samples("minerva_math/utils.py")
    assert len(minerva) == 4 and all({"problem", "solution"} <= set(s) for s in minerva)
    assert "\\boxed{[2,5)}" in minerva[0]["solution"]
    mbpp = fewshot_samples("mbpp/utils.py")
    assert [s["task_id"] for s in mbpp] == [2, 3, 4] and all(s["is_fewshot"] for s in mbpp)
    gsm8k = task_config("gsm8k", Path("/x.jsonl"), max_gen_toks=7, cache_dir=Path("/c"))
    upstream = upstream_config("gsm8k/gsm8k-cot.yaml")["fewshot_config"]["samples"]
    assert gsm8k["fewshot_config"]["samples"] == upstream[:5] and len(upstream) == 8
    assert gsm8k["num_fewshot"] == 5 and gsm8k["generation_kwargs"]["max_gen_toks"] == 7


def test_code_tasks_do_not_use_lm_eval_code_eval() -> None:
    for benchmark in ("humaneval", "mbpp"):
        text = json.dumps(task_config(benchmark, Path("/x.jsonl"), max_gen_toks=7, cache_dir=Path("/c")))
        assert "utils." not in text and "pass_at" not in text and "tpt_hooks." in text


def test_task_dir_loads_in_lm_eval_task_manager(small_sets: dict[str, Path], tmp_path: Path) -> None:
    """With the built-in tasks indexed too, as ``lm_eval --include_path`` does."""
    from lm_eval.tasks import TaskManager

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tpt_stale.yaml").write_text("task: tpt_stale\n")
    task_dir = write_task_dir(small_sets, tmp_path / "tasks", max_gen_toks=33)
    assert not (task_dir.path / "tpt_stale.yaml").exists()
    with offline_env():
        manager = TaskManager(include_path=str(task_dir.path))
        tasks = manager.load(list(TASK_NAMES.values()))["tasks"]
    assert set(TASK_NAMES.values()) <= set(manager.all_tasks)
    assert "gsm8k_cot" in manager.all_tasks  # the built-ins are still there
    assert set(tasks) == set(TASK_NAMES.values())
    mbpp_shots = fewshot_samples("mbpp/utils.py")
    for benchmark, name in TASK_NAMES.items():
        task = tasks[name]
        assert len(list(task.test_docs())) == 2
        assert task.config.metadata["version"] == TASK_VERSION == task_dir.versions[benchmark]
        assert task.config.generation_kwargs["max_gen_toks"] == 33
    assert tasks["tpt_mbpp"].config.fewshot_config.samples == mbpp_shots  # survives the YAML round trip
    assert list(tasks["tpt_math"].test_docs())[0]["answer"] == "2"  # process_docs hook ran
    assert tasks["tpt_gsm8k"].doc_to_target(DOCS["gsm8k"]) == "5"


def test_unknown_benchmark_is_rejected() -> None:
    with pytest.raises(TaskConfigError, match="unknown benchmark 'mmlu'"):
        task_config("mmlu", Path("/x.jsonl"), max_gen_toks=7, cache_dir=Path("/c"))
