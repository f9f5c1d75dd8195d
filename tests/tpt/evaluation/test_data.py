from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tpt.config import EvaluationConfig
from tpt.evaluation.data import MATH_SUBJECTS, DataError, LoadedDocs, hub_datasets, load_docs, prepare_test_sets

EXPECTED = {"gsm8k": 1319, "math": 5000, "humaneval": 164, "mbpp": 500}
FIELDS = {
    "gsm8k": {"question", "answer"},
    "math": {"problem", "solution", "level", "type"},
    "humaneval": {"task_id", "prompt", "canonical_solution", "test", "entry_point"},
    "mbpp": {"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"},
}


@pytest.fixture(scope="module")
def builtin() -> dict[str, LoadedDocs]:
    return {benchmark: load_docs(benchmark) for benchmark in EXPECTED}


@pytest.mark.parametrize("benchmark", EXPECTED)
def test_builtin_test_sets_are_complete_and_in_schema(builtin: dict[str, LoadedDocs], benchmark: str) -> None:
    loaded = builtin[benchmark]
    assert len(loaded.docs) == EXPECTED[benchmark]
    assert loaded.skipped == 0
    assert all(set(doc) == FIELDS[benchmark] for doc in loaded.docs)
    assert loaded.source


def test_builtin_docs_have_usable_content(builtin: dict[str, LoadedDocs]) -> None:
    assert all("####" in doc["answer"] for doc in builtin["gsm8k"].docs)
    assert all("\\boxed" in doc["solution"] or "\\fbox" in doc["solution"] for doc in builtin["math"].docs)
    assert builtin["humaneval"].docs[0]["task_id"] == "HumanEval/0"
    mbpp = builtin["mbpp"].docs
    assert [doc["task_id"] for doc in mbpp[:2]] == [11, 12]
    assert all(len(doc["test_list"]) >= 3 for doc in mbpp)


def test_math_subjects_are_interleaved_so_a_limit_mixes_them(builtin: dict[str, LoadedDocs]) -> None:
    docs = builtin["math"].docs
    first = [doc["type"] for doc in docs[: len(MATH_SUBJECTS)]]
    assert first == sorted(first) and len(set(first)) == len(MATH_SUBJECTS)
    assert [doc["type"] for doc in docs[len(MATH_SUBJECTS) : 2 * len(MATH_SUBJECTS)]] == first
    assert len({doc["problem"] for doc in docs}) > 4900  # not one subject repeated


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_broken_lines_are_counted_skips(tmp_path: Path) -> None:
    good = json.dumps({"question": "1+1?", "answer": "2 #### 2"}).encode()
    _write_lines(
        tmp_path / "gsm8k.jsonl",
        [
            good,
            b'{"question": "no closing brace"',  # bad JSON
            b'{"question": "caf\xe9", "answer": "x"}',  # bad UTF-8
            json.dumps({"question": "only a question"}).encode(),  # missing field
            json.dumps({"question": "q", "answer": 4}).encode(),  # wrong type
            b"[1, 2]",  # not an object
            b"",  # blank lines are not records
            json.dumps({"question": "2+2?", "answer": "#### 4", "extra": True}).encode(),
        ],
    )
    loaded = load_docs("gsm8k", tmp_path)
    assert loaded.skipped == 5
    assert [doc["question"] for doc in loaded.docs] == ["1+1?", "2+2?"]
    assert loaded.docs[1] == {"question": "2+2?", "answer": "#### 4"}  # extra fields dropped


def test_user_folder_fills_optional_fields_and_interleaves_math(tmp_path: Path) -> None:
    rows = [{"problem": f"p{i}", "solution": f"$\\boxed{{{i}}}$", "type": t} for i, t in enumerate("AABBB")]
    _write_lines(tmp_path / "math.jsonl", [json.dumps(row).encode() for row in rows])
    tests = ["assert f() == 1", "assert f() != 2", "assert f() + 1 == 2"]
    mbpp = {"task_id": 7, "text": "t", "code": "def f(): return 1", "test_list": tests}
    two_tests = {**mbpp, "test_list": mbpp["test_list"][:2]}
    lines = [
        json.dumps(mbpp).encode(),
        json.dumps({**mbpp, "test_list": [1, 2, 3]}).encode(),
        json.dumps(two_tests).encode(),
    ]
    _write_lines(tmp_path / "mbpp.jsonl", lines)
    math_docs = load_docs("math", tmp_path).docs
    assert [doc["problem"] for doc in math_docs] == ["p0", "p2", "p1", "p3", "p4"]
    assert math_docs[0]["level"] == ""
    loaded = load_docs("mbpp", tmp_path)
    assert loaded.skipped == 2  # tests that are not strings; fewer than the three the prompt shows
    assert loaded.docs == [{**mbpp, "test_setup_code": "", "challenge_test_list": []}]


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_docs("humaneval", tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "humaneval.jsonl") in message and "not found" in message


def test_no_usable_line_is_a_one_line_error(tmp_path: Path) -> None:
    _write_lines(tmp_path / "gsm8k.jsonl", [b"not json", b"{}"])
    with pytest.raises(DataError, match=r"no usable gsm8k docs \(2 lines skipped\)") as info:
        load_docs("gsm8k", tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_benchmark_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown benchmark 'mmlu'"):
        load_docs("mmlu")


def test_prepare_writes_jsonl_with_counts(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [json.dumps({"question": f"q{i}", "answer": f"#### {i}"}).encode() for i in range(3)]
    _write_lines(folder / "gsm8k.jsonl", [*rows, b"broken"])
    sets = prepare_test_sets(["gsm8k", "humaneval"], tmp_path / "work", data_folder=None)
    assert sets["humaneval"].count == 164 and sets["humaneval"].path == (tmp_path / "work/data/humaneval.jsonl")
    assert sum(1 for _ in sets["humaneval"].path.open()) == 164
    user = prepare_test_sets(["gsm8k"], tmp_path / "work2", data_folder=folder)["gsm8k"]
    assert (user.count, user.skipped, user.source) == (3, 1, str(folder / "gsm8k.jsonl"))
    assert [json.loads(line)["question"] for line in user.path.read_text().splitlines()] == ["q0", "q1", "q2"]


def test_hub_datasets_are_the_ones_lm_eval_reads(embedded) -> None:
    assert hub_datasets("gsm8k") == [("openai/gsm8k", "main", "test")]
    assert hub_datasets("humaneval") == [("openai/openai_humaneval", None, "test")]
    assert hub_datasets("mbpp") == [("google-research-datasets/mbpp", "full", "test")]
    assert hub_datasets("math") == [("EleutherAI/hendrycks_math", s, "test") for s in MATH_SUBJECTS]
    assert EvaluationConfig().test_sets == "hub" and embedded.evaluation.test_sets == "packages"


def test_hub_without_access_is_a_one_line_error(tmp_path: Path) -> None:
    """In a process of its own: the hub libraries read offline mode once, when they are imported."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # nothing cached
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    code = "from tpt.evaluation.data import load_docs; load_docs('gsm8k', source='hub')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1
    assert last.startswith("tpt.evaluation.data.DataError: cannot load openai/gsm8k (main) from the Hugging Face hub (")
    assert last.endswith("without the hub set evaluation.test_sets to 'packages' or give evaluation.data_folder")
