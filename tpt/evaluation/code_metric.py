"""pass@1 for HumanEval and MBPP, scored by running each program in our sandbox.

lm-eval's own code metric (``evaluate.load("code_eval")``) needs the hub and runs model code unsandboxed, so the
generated tasks use these hooks instead. With one greedy sample per problem, pass@1 is the fraction of problems whose
program (completion plus the benchmark's tests) exits cleanly.

lm-eval scores one doc at a time, which would run the programs one after another. Its filters, however, see every
response of a task at once, so the filter hooks below run all programs through the sandbox's thread pool up front
and keep the verdicts; ``*_process_results`` then reads them (running the program itself only if it was not seen).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from tpt.evaluation.sandbox import DEFAULT_LIMITS, SandboxLimits, SandboxResult, run_program, run_programs

_settings: dict[str, Any] = {"limits": DEFAULT_LIMITS, "workers": 2}
_verdicts: dict[str, SandboxResult] = {}
_lock = threading.Lock()
_MAX_CACHED = 10_000


def configure_sandbox(limits: SandboxLimits | None = None, workers: int | None = None) -> None:
    """Set the limits and pool size later scoring uses (process-wide: lm-eval calls the hooks, not us), and forget
    earlier verdicts, which may have been reached under other limits."""
    if limits is not None:
        _settings["limits"] = limits
    if workers is not None:
        _settings["workers"] = max(1, workers)
    with _lock:
        _verdicts.clear()


def humaneval_program(doc: dict[str, Any], prediction: str) -> str:
    """``prediction`` is prompt + completion (lm-eval's build_predictions); the tests call check(entry_point)."""
    return f"{prediction}\n{doc['test']}\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict[str, Any], prediction: str) -> str:
    tests = "\n".join(doc["test_list"])
    return f"{prediction}\n{doc.get('test_setup_code') or ''}\n{tests}\n"


def _key(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8", errors="surrogatepass")).hexdigest()


def cached_verdict(program: str) -> SandboxResult | None:
    with _lock:
        return _verdicts.get(_key(program))


def _remember(program: str, result: SandboxResult) -> None:
    with _lock:
        if len(_verdicts) >= _MAX_CACHED:
            _verdicts.clear()
        _verdicts[_key(program)] = result


def verdict(program: str) -> SandboxResult:
    """The sandbox's result for ``program``, run now unless a filter already ran it."""
    found = cached_verdict(program)
    if found is None:
        found = run_program(program, _settings["limits"])
        _remember(program, found)
    return found


def prerun(programs: list[str]) -> None:
    """Run the programs not yet scored, ``workers`` at a time."""
    todo = list(dict.fromkeys(p for p in programs if cached_verdict(p) is None))
    for program, result in zip(todo, run_programs(todo, _settings["limits"], _settings["workers"]), strict=True):
        _remember(program, result)


def humaneval_build_predictions(resps: list[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """lm-eval's humaneval build_predictions (prompt + completion), then every program is run once."""
    predictions = [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs, strict=True)]
    prerun([humaneval_program(doc, p) for preds, doc in zip(predictions, docs, strict=True) for p in preds])
    return predictions


def mbpp_build_predictions(resps: list[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """MBPP's generation is the whole function (the prompt ends at [BEGIN]); every program is run once."""
    predictions = [list(resp) for resp in resps]
    prerun([mbpp_program(doc, p) for preds, doc in zip(predictions, docs, strict=True) for p in preds])
    return predictions


def humaneval_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"pass@1": float(verdict(humaneval_program(doc, results[0])).passed)}


def mbpp_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"pass@1": float(verdict(mbpp_program(doc, results[0])).passed)}
