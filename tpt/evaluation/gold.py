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

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpt.atomic import write_atomic

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
    """An item without a gold solution (a user's HumanEval copy without canonical solutions) cannot be scored."""
    return bool(GOLD[benchmark](doc).strip())


def gold_file(test_set: Path) -> Path:
    """Where the runner writes the items the continuous metric scores (``select_items``); its task reads them."""
    return test_set.with_name(f"{test_set.stem}_gold.jsonl")


@dataclass(frozen=True)
class Selection:
    kept: int
    no_gold: int  # items without a gold solution
    too_long: int  # gold continuations longer than the model's context


TOKEN_MARGIN = 8  # lm-eval splits context and continuation after encoding both together: a token or two may move


def select_items(
    benchmark: str, test_set: Path, count_tokens: Callable[[str], int], max_tokens: int, limit: int | None
) -> Selection:
    """Write the first ``limit`` scoreable items of ``test_set`` to ``gold_file(test_set)``: an item without a gold
    solution, or whose continuation does not fit the model's context, is a counted skip (lm-eval would stop the
    whole run on the latter). Done before lm-eval runs, so its task, and the lm_eval command line, read the very
    same items."""
    kept, no_gold, too_long = [], 0, 0
    for line in test_set.read_text(encoding="utf-8").splitlines():
        if limit is not None and len(kept) >= limit:
            break
        if not line.strip():
            continue
        doc = json.loads(line)
        if not has_gold(benchmark, doc):
            no_gold += 1
        elif count_tokens(DELIMITERS[benchmark] + GOLD[benchmark](doc)) > max_tokens - TOKEN_MARGIN:
            too_long += 1
        else:
            kept.append(line + "\n")
    write_atomic(gold_file(test_set), lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"))
    return Selection(len(kept), no_gold, too_long)


def bits_per_byte(logprob: float, continuation: str) -> float:
    """-log2 p(continuation) per UTF-8 byte of the continuation as scored (the delimiter included)."""
    return -logprob / (math.log(2) * max(1, len(continuation.encode("utf-8"))))


def _hooks(benchmark: str) -> tuple[Callable, Callable]:
    gold, delimiter = GOLD[benchmark], DELIMITERS[benchmark]

    def process_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
        logprob, _greedy = results[0]
        return {"bpb": bits_per_byte(logprob, delimiter + gold(doc)), "logprob": float(logprob)}

    return gold, process_results


gsm8k_gold_target, gsm8k_gold_results = _hooks("gsm8k")
math_gold_target, math_gold_results = _hooks("math")
humaneval_gold_target, humaneval_gold_results = _hooks("humaneval")
mbpp_gold_target, mbpp_gold_results = _hooks("mbpp")
