from __future__ import annotations

from pathlib import Path

import pytest

from tpt.evaluation import code_metric
from tpt.evaluation.data import load_docs
from tpt.evaluation.math_metric import (
    boxed_answer,
    extracted_answer,
    math_process_results,
    math_verify_score,
)
from tpt.evaluation.sandbox import DEFAULT_LIMITS, SandboxLimits
from tpt.evaluation.tasks import task_config

HALF = "Multiply both sides by $\\frac{1}{4}$, so $x = \\boxed{\\frac{1}{2}}$."


@pytest.mark.parametrize(
    "generation",
    [
        "0.5",
        "1/2",
        "\\frac{1}{2}",
        "The answer is $\\boxed{\\frac12}$.",
        "Final Answer: The final answer is $0.5$. I hope it is correct.",
    ],
)
def test_equivalent_answers_count(generation: str) -> None:
    assert math_verify_score(HALF, generation) == 1


@pytest.mark.parametrize("generation", ["\\frac{1}{3}", "0.25", "2", "no answer at all", ""])
def test_wrong_answers_do_not_count(generation: str) -> None:
    assert math_verify_score(HALF, generation) == 0


def test_math_process_results_and_extraction() -> None:
    doc = {"problem": "What is 1/2?", "solution": HALF}
    assert math_process_results(doc, ["So the result is $\\boxed{0.5}$."]) == {"math_verify": 1}
    assert math_process_results(doc, ["So the result is $\\boxed{5}$."]) == {"math_verify": 0}
    assert extracted_answer("so $x = \\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        (HALF, "\\frac{1}{2}"),
        ("nested $\\boxed{\\sqrt{\\frac{a}{b}}}$ done", "\\sqrt{\\frac{a}{b}}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("spaced $\\boxed 7$", "7"),
        ("old style \\fbox{3}", "3"),
        ("no box here", ""),
    ],
)
def test_boxed_answer(solution: str, answer: str) -> None:
    assert boxed_answer(solution) == answer


def _gsm8k_filters(tmp_path: Path) -> dict[str, list[object]]:
    """lm-eval's own regex filters, built from the filter_list of our generated gsm8k task."""
    from lm_eval.filters import get_filter

    config = task_config("gsm8k", tmp_path / "gsm8k.jsonl", max_gen_toks=8, cache_dir=tmp_path)
    return {
        entry["name"]: [
            get_filter(step["function"])(**{k: v for k, v in step.items() if k != "function"})
            for step in entry["filter"]
        ]
        for entry in config["filter_list"]
    }


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("Natalia sold 48/2 = 24 clips in May. 48+24 = 72. The answer is 72.", "72", "72."),
        ("She pays $1,234 in total. The answer is 1,234.", "1,234", "1,234."),
        ("It gets colder by 3 degrees. The answer is -3.", "-3", "-3."),
        ("I think 5 apples, or maybe 18", "[invalid]", "18"),
        ("No number here.", "[invalid]", "[invalid]"),
    ],
)
def test_gsm8k_strict_and_flexible_extraction(tmp_path: Path, text: str, strict: str, flexible: str) -> None:
    extracted = {}
    for name, steps in _gsm8k_filters(tmp_path).items():
        resps: list = [[text]]
        for step in steps:
            resps = list(step.apply(resps, [{}]))
        extracted[name] = resps[0]
    assert extracted == {"strict-match": strict, "flexible-extract": flexible}


def test_gsm8k_exact_match_ignores_commas_and_dollars(tmp_path: Path) -> None:
    from lm_eval.api.registry import get_metric

    config = task_config("gsm8k", tmp_path / "gsm8k.jsonl", max_gen_toks=8, cache_dir=tmp_path)
    options = {
        k: v for k, v in config["metric_list"][0].items() if k not in {"metric", "aggregation", "higher_is_better"}
    }
    exact_match = get_metric("exact_match")
    assert exact_match(references=["1234"], predictions=["$1,234"], **options)["exact_match"] == 1.0
    assert exact_match(references=["72"], predictions=["72."], **options)["exact_match"] == 1.0  # flexible's dot
    assert exact_match(references=["1234"], predictions=["1,235"], **options)["exact_match"] == 0.0


def test_canonical_code_solutions_pass_and_wrong_ones_fail() -> None:
    """The same hooks lm-eval calls: filter (runs the batch in the sandbox), then process_results per doc."""
    humaneval = load_docs("humaneval").docs[:4]
    mbpp = load_docs("mbpp").docs[:4]
    right = humaneval_right = [[doc["canonical_solution"]] for doc in humaneval]
    wrong = [["    return None\n"] for _ in humaneval]
    for resps in (right, wrong):
        predictions = code_metric.humaneval_build_predictions(resps, humaneval)
        assert predictions[0][0].startswith(humaneval[0]["prompt"])
        scores = [
            code_metric.humaneval_process_results(doc, [p[0]]) for doc, p in zip(humaneval, predictions, strict=True)
        ]
        expected = 1.0 if resps is humaneval_right else 0.0
        assert scores == [{"pass@1": expected}] * 4
    mbpp_right = code_metric.mbpp_build_predictions([[doc["code"]] for doc in mbpp], mbpp)
    assert [code_metric.mbpp_process_results(doc, p) for doc, p in zip(mbpp, mbpp_right, strict=True)] == [
        {"pass@1": 1.0}
    ] * 4
    program = code_metric.mbpp_program(mbpp[0], "def remove_Occ(s, ch):\n    return s\n")
    assert code_metric.verdict(program).reason == "failed"
    assert code_metric.cached_verdict(code_metric.mbpp_program(mbpp[0], mbpp[0]["code"])).passed


@pytest.fixture()
def fast_sandbox():
    code_metric.configure_sandbox(SandboxLimits(timeout_s=2, memory_mb=256), workers=2)
    yield
    code_metric.configure_sandbox(DEFAULT_LIMITS, workers=2)


def test_hostile_completions_score_zero_and_the_rest_are_still_scored(fast_sandbox, tmp_path) -> None:
    """Through the hooks lm-eval calls, as completions of one HumanEval problem: each hostile one is contained and
    fails, and the correct completion after them still passes."""
    outside = tmp_path / "canary.txt"
    outside.write_text("still here")
    doc = load_docs("humaneval").docs[0]
    body = "    import os, socket\n"
    hostile = {
        "fork bomb": body + "    while True:\n        os.fork()\n",
        "infinite loop": body + "    while True:\n        pass\n",
        "memory hog": body + "    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n",
        "deletes outside": body + f"    os.remove({str(outside)!r})\n    return False\n",
        "socket": body + "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n    return False\n",
    }
    completions = [*hostile.values(), doc["canonical_solution"]]
    docs = [doc] * len(completions)
    predictions = code_metric.humaneval_build_predictions([[c] for c in completions], docs)
    scores = [code_metric.humaneval_process_results(d, p)["pass@1"] for d, p in zip(docs, predictions, strict=True)]
    assert scores == [0.0] * len(hostile) + [1.0]
    programs = [code_metric.humaneval_program(doc, p[0]) for p in predictions]
    reasons = {name: code_metric.verdict(program).reason for name, program in zip(hostile, programs, strict=False)}
    assert reasons["infinite loop"] == "timeout" and reasons["memory hog"] == "memory"
    assert outside.read_text() == "still here"
