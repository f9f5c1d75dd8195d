"""MATH scoring with math_verify, as lm-eval's minerva_math ``process_results`` computes its ``math_verify`` metric.

Minerva's other metric, ``exact_match`` (its own answer normaliser plus a sympy ``parse_latex`` equivalence check), is
left out: that code lives in lm-eval's ``minerva_math/utils.py``, which refuses to import unless the antlr4 runtime
is 4.11, while math_verify and Dagster here need 4.13. The paper reports MATH checked with math_verify, so that is
the metric we keep.
"""

from __future__ import annotations

import threading
from typing import Any

from math_verify import parse, verify


def _timeout() -> int | None:
    """math_verify's default 5 s timeouts use SIGALRM, which only works on the main thread; elsewhere none."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_verify_score(solution: str, generation: str) -> int:
    """1 if ``generation`` states the same answer as the reference ``solution``: verify(gold=parse(solution),
    target=parse(generation)), as lm-eval does. A parser failure scores 0 rather than stopping the run."""
    seconds = _timeout()
    try:
        gold = parse(solution, parsing_timeout=seconds)
        target = parse(generation, parsing_timeout=seconds)
        return int(bool(verify(gold=gold, target=target, timeout_seconds=seconds)))
    except Exception:
        return 0


def extracted_answer(generation: str) -> str:
    """The answer math_verify reads out of a generation (for per-sample records), '' if none."""
    try:
        parsed = parse(generation, parsing_timeout=_timeout())
    except Exception:
        return ""
    return str(parsed[-1]) if parsed else ""


def boxed_answer(solution: str) -> str:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed x``) in a MATH solution; '' if none."""
    start = max(solution.rfind("\\boxed"), solution.rfind("\\fbox"))
    if start < 0:
        return ""
    rest = solution[start:]
    if rest.startswith("\\boxed "):
        return rest[len("\\boxed ") :].split("$")[0].strip()
    opening = rest.find("{")
    if opening < 0:
        return ""
    depth = 0
    for i in range(opening, len(rest)):
        depth += {"{": 1, "}": -1}.get(rest[i], 0)
        if depth == 0:
            return rest[opening + 1 : i]
    return ""


def math_process_docs(dataset: Any) -> Any:
    """Adds ``answer`` (the boxed final answer), the target lm-eval's minerva YAML shows for a test doc."""
    return dataset.map(lambda doc: {"answer": boxed_answer(doc["solution"])})


def math_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, int]:
    return {"math_verify": math_verify_score(doc["solution"], results[0])}
