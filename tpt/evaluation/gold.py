"""The continuous metric: bits per byte (and log-probability) of a benchmark item's gold solution under the model,
after the same few-shot prompt as the generative task. One lm-eval ``loglikelihood`` request per item, so hundreds
of items cost about what a handful of generations do, and the number moves long before accuracy leaves zero
(DataDecide, arXiv 2504.11393; OLMES' "gold BPB" requests).

The gold solution is written in the style of the benchmark's few-shot exemplars, so the model is scored on the
continuation the prompt asks for: GSM8K's worked answer with the calculator annotations (``<<48/2=24>>``) removed
and ``The answer is N.`` at the end (gsm8k-cot's exemplars), MATH's reference solution (minerva's), HumanEval's
canonical solution, MBPP's reference code. The functions here are the ones the generated lm-eval task names with
``!function``, so ``lm_eval --include_path`` computes exactly the same numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

DELIMITERS = {"gsm8k": " ", "math": " ", "humaneval": "", "mbpp": ""}
"""lm-eval's ``target_delimiter`` per task: code continues the prompt's own indentation, with nothing between."""
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def gsm8k_gold(doc: dict[str, Any]) -> str:
    if "target" in doc:  # a gsm8k-cot exemplar
        return doc["target"]
    reasoning, _, answer = doc["answer"].rpartition("####")
    steps = " ".join(line.strip() for line in _CALCULATOR.sub("", reasoning).splitlines() if line.strip())
    answer = answer.strip()
    if not answer:
        return ""
    return f"{steps} The answer is {answer}." if steps else f"The answer is {answer}."


def math_gold(doc: dict[str, Any]) -> str:
    return doc["solution"]


def humaneval_gold(doc: dict[str, Any]) -> str:
    return doc.get("canonical_solution", "")


def mbpp_gold(doc: dict[str, Any]) -> str:
    return f"{doc['code']}\n[DONE]" if doc.get("is_fewshot") else doc["code"]


GOLD: dict[str, Callable[[dict[str, Any]], str]] = {
    "gsm8k": gsm8k_gold,
    "math": math_gold,
    "humaneval": humaneval_gold,
    "mbpp": mbpp_gold,
}


def has_gold(benchmark: str, doc: dict[str, Any]) -> bool:
    """An item without a gold solution (a user's HumanEval copy without canonical solutions) cannot be scored: the
    task leaves it out and the runner counts it as a skip."""
    return bool(GOLD[benchmark](doc).strip())


def bits_per_byte(logprob: float, continuation: str) -> float:
    """-log2 p(continuation) per UTF-8 byte of the continuation as scored (the delimiter included)."""
    return -logprob / (math.log(2) * max(1, len(continuation.encode("utf-8"))))


def _hooks(benchmark: str) -> tuple[Callable, Callable, Callable]:
    gold, delimiter = GOLD[benchmark], DELIMITERS[benchmark]

    def process_docs(dataset: Any) -> Any:
        return dataset.filter(lambda doc: has_gold(benchmark, doc))

    def process_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
        logprob, _greedy = results[0]
        return {"bpb": bits_per_byte(logprob, delimiter + gold(doc)), "logprob": float(logprob)}

    return gold, process_docs, process_results


gsm8k_gold_target, gsm8k_gold_docs, gsm8k_gold_results = _hooks("gsm8k")
math_gold_target, math_gold_docs, math_gold_results = _hooks("math")
humaneval_gold_target, humaneval_gold_docs, humaneval_gold_results = _hooks("humaneval")
mbpp_gold_target, mbpp_gold_docs, mbpp_gold_results = _hooks("mbpp")
